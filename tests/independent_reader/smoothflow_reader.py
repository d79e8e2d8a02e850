"""An independent, clean-room reader of SmoothFlow model files (format version 1).

Written from docs/model-format.md, docs/flow-math.md and
pytorch/smoothflow_torch/model_config.schema.json ALONE (no other file of the project was
read). Standard library and numpy only.

    model = SmoothFlowModel.from_file("model.safetensors")
    U = model.energy(positions)                    # (N, 3) nm -> float kJ/mol; (B, N, 3) -> (B,)
    U, F = model.energy_forces(positions)          # forces by central finite differences

Everything is vectorized over a batch of configurations, so the finite-difference forces of
one configuration are a single batched energy call (4 * 3N displaced copies for the default
fourth-order stencil).

Section references (MF = docs/model-format.md, FM = docs/flow-math.md) mark where each rule
comes from.
"""

from __future__ import annotations

import json
import math
import struct

import numpy as np

__all__ = ["SmoothFlowModel", "ModelFormatError", "ConfigurationRefused", "R_GAS", "load"]

R_GAS = 0.00831446261815324  # kJ/mol/K (MF 2)
PI = math.pi                 # 3.141592653589793 (MF 3)
TWO_PI = 2.0 * math.pi       # "its double"
EPS = 2.0 ** -52             # FM 5
READER_FORMAT_VERSION = 1
MAX_HEADER = 100_000_000     # "a header longer than 100 MB" (MF 1); taken as 10^8 bytes


class ModelFormatError(ValueError):
    """The file is not a valid format-version-1 model."""


class ConfigurationRefused(ValueError):
    """A configuration the docs say must be refused (degenerate geometry, out of support...)."""


# --------------------------------------------------------------------------------------------
# Scalar helpers (MF 4)
# --------------------------------------------------------------------------------------------

def _sigmoid(x):
    """sigmoid(x) = 1/(1+e^-x) for x >= 0, e^x/(1+e^x) for x < 0 (MF 4)."""
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softplus(x):
    """Exact softplus: max(x, 0) + log1p(e^-|x|) (MF 4)."""
    x = np.asarray(x, dtype=np.float64)
    return np.maximum(x, 0.0) + np.log1p(np.exp(-np.abs(x)))


def _activation(name):
    if name == "tanh":
        return np.tanh
    if name == "silu":
        return lambda x: x * _sigmoid(x)
    if name == "softplus":
        return _softplus
    raise ModelFormatError(f"unknown activation {name!r}")


def _softmax(x):
    """exp(x_k - max x) / sum (MF 8), along the last axis."""
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _wrap(a):
    """wrap(a) = a - floor(a), evaluated exactly as written (MF 5.3)."""
    return a - np.floor(a)


def _phi_normal(x):
    """Phi(x) = erfc(-x / sqrt 2) / 2 (MF 5.4)."""
    return math.erfc(-x / math.sqrt(2.0)) / 2.0


def _log_sigma_prime(w):
    """log sigma'(w) = -|w| - 2 log1p(e^-|w|) (MF 7.2)."""
    a = np.abs(w)
    return -a - 2.0 * np.log1p(np.exp(-a))


# --------------------------------------------------------------------------------------------
# Container (MF 1)
# --------------------------------------------------------------------------------------------

def _strict_json(text, what):
    """Parse one RFC 8259 JSON value: no duplicate keys, no NaN/Infinity, finite numbers."""

    def no_dupes(pairs):
        obj = {}
        for k, v in pairs:
            if k in obj:
                raise ModelFormatError(f"{what}: duplicate key {k!r}")
            obj[k] = v
        return obj

    def bad_constant(name):
        raise ModelFormatError(f"{what}: non-finite literal {name}")

    def parse_float(s):
        v = float(s)
        if not math.isfinite(v):
            raise ModelFormatError(f"{what}: number {s} is not a finite double")
        return v

    try:
        return json.loads(text, object_pairs_hook=no_dupes, parse_constant=bad_constant,
                          parse_float=parse_float)
    except ModelFormatError:
        raise
    except (ValueError, RecursionError) as exc:
        raise ModelFormatError(f"{what}: invalid JSON ({exc})") from None


def _check_no_nul(obj, what):
    if isinstance(obj, str):
        if "\x00" in obj:
            raise ModelFormatError(f"{what}: string holds NUL")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_no_nul(k, what)
            _check_no_nul(v, what)
    elif isinstance(obj, list):
        for v in obj:
            _check_no_nul(v, what)


def _read_container(data: bytes):
    if len(data) < 8:
        raise ModelFormatError("file shorter than the 8-byte header length")
    (n,) = struct.unpack("<Q", data[:8])
    if n > MAX_HEADER:
        raise ModelFormatError("header longer than 100 MB")
    if n > len(data) - 8:
        raise ModelFormatError("header length larger than the file")
    try:
        text = data[8:8 + n].decode("utf-8")
    except UnicodeDecodeError:
        raise ModelFormatError("header is not UTF-8") from None
    header = _strict_json(text, "header")
    if not isinstance(header, dict):
        raise ModelFormatError("header is not a JSON object")
    _check_no_nul(header, "header")
    buf = memoryview(data)[8 + n:]
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelFormatError("__metadata__ missing or not an object of strings")
    tensors = {}
    ranges = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise ModelFormatError(f"tensor {name!r}: bad header entry")
        dtype = info["dtype"]
        if dtype == "F64":
            npdt, size = "<f8", 8
        elif dtype == "F32":
            npdt, size = "<f4", 4
        else:
            raise ModelFormatError(f"tensor {name!r}: dtype {dtype!r} not accepted")
        shape = info["shape"]
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool)
                                                  and s >= 0 for s in shape):
            raise ModelFormatError(f"tensor {name!r}: bad shape")
        off = info["data_offsets"]
        if (not isinstance(off, list) or len(off) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in off)):
            raise ModelFormatError(f"tensor {name!r}: bad data_offsets")
        begin, end = off
        count = int(np.prod(shape)) if shape else 1
        if begin < 0 or end < begin or end - begin != count * size:
            raise ModelFormatError(f"tensor {name!r}: size does not match shape and dtype")
        if end > len(buf):
            raise ModelFormatError(f"tensor {name!r}: data range outside the buffer")
        ranges.append((begin, end, name))
        arr = np.frombuffer(buf[begin:end], dtype=npdt).astype(np.float64).reshape(shape)
        if not np.all(np.isfinite(arr)):
            raise ModelFormatError(f"tensor {name!r}: non-finite value")
        tensors[name] = arr
    ranges.sort()
    reach, reach_name = 0, None  # furthest end of the non-empty ranges seen so far
    for b1, e1, n1 in ranges:
        if e1 == b1:
            continue  # a zero-length range overlaps nothing (assumption: see report)
        if b1 < reach:
            raise ModelFormatError(f"tensors {reach_name!r} and {n1!r} overlap")
        if e1 > reach:
            reach, reach_name = e1, n1
    return meta, tensors


# --------------------------------------------------------------------------------------------
# Configuration (MF 2, schema)
# --------------------------------------------------------------------------------------------

def _is_int(v):
    # "Integers may be written with a zero fraction (4.0 is the integer 4)" (schema)
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return True
    return isinstance(v, float) and math.isfinite(v) and v == int(v)


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _req(cond, msg):
    if not cond:
        raise ModelFormatError("config: " + msg)


def _log_i0e(k):
    """log(exp(-k) I0(k)) = log of the mean of exp(k (cos 2 pi u - 1)) over the circle (MF 5.4), by
    the periodic trapezoid rule: 8192 nodes resolve the peak of width 1 / (2 pi sqrt k) for every
    k <= 1e4, where the rule converges faster than any power of the spacing."""
    u = np.arange(8192) / 8192.0
    return math.log(float(np.mean(np.exp(k * (np.cos(TWO_PI * u) - 1.0)))))


def _keys(obj, allowed, required, where):
    _req(isinstance(obj, dict), f"{where} must be an object")
    extra = set(obj) - set(allowed)
    _req(not extra, f"{where}: unknown key(s) {sorted(extra)}")
    missing = set(required) - set(obj)
    _req(not missing, f"{where}: missing key(s) {sorted(missing)}")


def _validate_config(cfg):
    _keys(cfg, ["n_atoms", "temperature", "energy_offset", "zmatrix", "atoms", "prior", "smooth",
                "spline", "affine", "support", "layers"],
          ["n_atoms", "temperature", "zmatrix", "layers"], "top level")
    n = cfg["n_atoms"]
    _req(_is_int(n) and 3 <= n <= 1_000_000, "n_atoms must be an integer in 3..1000000")
    n = int(n)
    D = 3 * n - 6
    _req(_is_num(cfg["temperature"]) and cfg["temperature"] > 0, "temperature must be > 0")
    _req(_is_num(cfg.get("energy_offset", 0.0)), "energy_offset must be a number")
    # zmatrix
    zm = cfg["zmatrix"]
    _req(isinstance(zm, list) and len(zm) == n, "zmatrix must have n_atoms rows")
    placed = set()
    rows = []
    for r, row in enumerate(zm):
        _req(isinstance(row, list) and len(row) == 4 and all(_is_int(a) for a in row),
             f"zmatrix row {r} must be 4 integers")
        row = [int(a) for a in row]
        nref = min(r, 3)
        _req(all(a == -1 for a in row[1 + nref:]), f"zmatrix row {r}: expected -1 padding")
        refs = row[1:1 + nref]
        _req(0 <= row[0] < n and all(0 <= a < n for a in refs), f"zmatrix row {r}: atom index")
        _req(row[0] not in placed, f"zmatrix row {r}: atom {row[0]} placed twice")
        _req(all(a in placed for a in refs), f"zmatrix row {r}: reference not yet placed")
        _req(len(set(row[:1 + nref])) == 1 + nref, f"zmatrix row {r}: atoms not distinct")
        placed.add(row[0])
        rows.append(row)
    # atoms
    if "atoms" in cfg:
        atoms = cfg["atoms"]
        _req(isinstance(atoms, list) and len(atoms) == n, "atoms must have n_atoms entries")
        for a in atoms:
            _keys(a, ["name", "residue", "residue_index", "element"],
                  ["name", "residue", "residue_index", "element"], "atoms entry")
            _req(isinstance(a["name"], str) and isinstance(a["residue"], str)
                 and isinstance(a["element"], str), "atoms entry: strings")
            _req(_is_int(a["residue_index"]) and 0 <= a["residue_index"] <= 999_999,
                 "atoms entry: residue_index")
    # prior
    prior = cfg.get("prior", "uniform")
    if prior == "uniform":
        prior = None
    else:
        _keys(prior, ["kind", "mean", "sigma", "torsion_mean", "torsion_kappa"], ["kind", "mean", "sigma"], "prior")
        _req(prior["kind"] == "truncated_normal", f"unknown prior {prior['kind']!r}")
        for key, lo, hi, open_ in (("mean", 0.0, 1.0, True), ("sigma", 1e-4, 10.0, False)):
            vals = prior[key]
            _req(isinstance(vals, list) and len(vals) == 2 * n - 3,
                 f"prior {key} must have 2 n_atoms - 3 entries")
            for v in vals:
                _req(_is_num(v), f"prior {key}: numbers")
                _req((lo < v < hi) if open_ else (lo <= v <= hi), f"prior {key}: range")
        _req(("torsion_mean" in prior) == ("torsion_kappa" in prior), "prior: torsion_mean and torsion_kappa together")
        for key, hi in (("torsion_mean", 1.0), ("torsion_kappa", 1e4)):
            if key in prior:
                vals = prior[key]
                _req(isinstance(vals, list) and len(vals) == n - 3, f"prior {key} must have n_atoms - 3 entries")
                for v in vals:
                    _req(_is_num(v), f"prior {key}: numbers")
                    _req(0.0 <= v < hi if key == "torsion_mean" else 0.0 <= v <= hi, f"prior {key}: range")
    # sections
    smooth = cfg.get("smooth")
    if smooth is not None:
        _keys(smooth, ["s_min", "alpha_min", "c_max", "beta"], ["s_min", "alpha_min", "c_max",
                                                                "beta"], "smooth")
        _req(_is_num(smooth["s_min"]) and 0 < smooth["s_min"] < 1, "smooth.s_min")
        _req(_is_num(smooth["alpha_min"]) and smooth["alpha_min"] > 0, "smooth.alpha_min")
        _req(_is_num(smooth["c_max"]) and 0 < smooth["c_max"] < 1, "smooth.c_max")
        _req(_is_int(smooth["beta"]) and 1 <= smooth["beta"] <= 8, "smooth.beta")
    spline = cfg.get("spline", {})
    _keys(spline, ["min_bin_width", "min_bin_height", "min_derivative"], [], "spline")
    spline = {"min_bin_width": 0.001, "min_bin_height": 0.001, "min_derivative": 0.001, **spline}
    for k in ("min_bin_width", "min_bin_height"):
        _req(_is_num(spline[k]) and 0 < spline[k] < 1, f"spline.{k}")
    _req(_is_num(spline["min_derivative"]) and spline["min_derivative"] > 0,
         "spline.min_derivative")
    affine = cfg.get("affine", {})
    _keys(affine, ["scale_max"], [], "affine")
    affine = {"scale_max": 3.0, **affine}
    _req(_is_num(affine["scale_max"]) and affine["scale_max"] > 0, "affine.scale_max")
    support = cfg.get("support", {})
    _keys(support, ["policy", "margin", "angle_margin", "wall_constant", "edge_force_lower",
                    "edge_force_upper"], [], "support")
    support = {"policy": "error", "margin": 0.01, "wall_constant": 1000.0, **support}
    _req(isinstance(support["policy"], str) and support["policy"] in ("error", "wall"),
         f"support.policy {support['policy']!r}")
    _req(_is_num(support["margin"]) and 0 < support["margin"] < 0.25, "support.margin")
    # MF 5.2: the angles' margin, margin when absent
    support.setdefault("angle_margin", support["margin"])
    _req(_is_num(support["angle_margin"]) and 0 < support["angle_margin"] < 0.25, "support.angle_margin")
    _req(_is_num(support["wall_constant"]) and support["wall_constant"] >= 0,
         "support.wall_constant")
    # MF 2 and 5.2: both edge-force lists or neither, 2N - 3 numbers >= 0 each, only under "wall"
    edges = [k for k in ("edge_force_lower", "edge_force_upper") if k in support]
    if edges:
        _req(len(edges) == 2, "support: edge_force_lower and edge_force_upper come together")
        _req(support["policy"] == "wall", "support: edge forces only under the wall policy")
        for k in edges:
            vals = support[k]
            _req(isinstance(vals, list) and len(vals) == 2 * n - 3
                 and all(_is_num(x) and 0 <= x <= 1e12 for x in vals), f"support.{k}")
    # layers
    layers = cfg["layers"]
    _req(isinstance(layers, list) and len(layers) >= 1, "layers: at least one")
    for i, lay in enumerate(layers):
        where = f"layer {i}"
        _keys(lay, ["transform", "direction", "transformed", "conditioning", "n_components",
                    "hidden", "activation"],
              ["transform", "direction", "transformed", "conditioning", "hidden", "activation"],
              where)
        _req(lay["transform"] in ("smooth", "spline", "affine"),
             f"{where}: unknown transform {lay['transform']!r}")
        _req(lay["direction"] in ("generative", "density"), f"{where}: direction")
        for key in ("transformed", "conditioning"):
            dims = lay[key]
            _req(isinstance(dims, list) and all(_is_int(d) and 0 <= d < D for d in dims),
                 f"{where}: {key} entries must lie in 0..D-1")
            _req(len(set(int(d) for d in dims)) == len(dims), f"{where}: {key} repeats")
        _req(len(lay["transformed"]) >= 1, f"{where}: transformed is empty")
        _req(not (set(map(int, lay["transformed"])) & set(map(int, lay["conditioning"]))),
             f"{where}: transformed and conditioning overlap")
        if "n_components" in lay:
            _req(_is_int(lay["n_components"]) and 1 <= lay["n_components"] <= 64,
                 f"{where}: n_components in 1..64")
        else:
            _req(lay["transform"] == "affine", f"{where}: n_components required")
        _req(isinstance(lay["hidden"], list)
             and all(_is_int(h) and 1 <= h <= 1_048_576 for h in lay["hidden"]),
             f"{where}: hidden widths")
        _req(lay["activation"] in ("tanh", "silu", "softplus"), f"{where}: activation")
        if lay["transform"] == "smooth":
            _req(smooth is not None, "a smooth layer needs the smooth section")
        if lay["transform"] == "spline":
            K = int(lay["n_components"])
            _req(K * spline["min_bin_width"] < 1 and K * spline["min_bin_height"] < 1,
                 f"{where}: K * min_bin_width and K * min_bin_height must be < 1")
    return n, rows, prior, smooth, spline, affine, support


# --------------------------------------------------------------------------------------------
# One-dimensional transforms. Arrays: x (M,), parameters (M, K) or (M,).
# --------------------------------------------------------------------------------------------

class _Smooth:
    """The smooth mixture transform F (FM 4) with parameters of M independent dimensions."""

    def __init__(self, raw, K, consts):
        s_min, alpha_min, c_max, beta = (float(consts["s_min"]), float(consts["alpha_min"]),
                                         float(consts["c_max"]), int(consts["beta"]))
        self.w = _softmax(raw[:, 0:K])
        self.b = _sigmoid(raw[:, K:2 * K])
        self.s = s_min + (1.0 - s_min) * _sigmoid(raw[:, 2 * K:3 * K])
        self.alpha = alpha_min + _softplus(raw[:, 3 * K:4 * K])
        self.c = c_max * _sigmoid(raw[:, 4 * K])
        self.t = raw[:, 4 * K + 1]
        self.beta = beta
        self.left = self.b * (1.0 - self.s)  # window start b_k (1 - s_k)

    def _pow(self, inv, p):
        """inv**p as a product of 1/h (FM 4: 'Negative powers are products of 1/h')."""
        out = inv
        for _ in range(p - 1):
            out = out * inv
        return out

    def F(self, x, idx=None):
        """F(x), F'(x) for the dimensions idx (all when None)."""
        if idx is None:
            w, s, left, alpha, c = self.w, self.s, self.left, self.alpha, self.c
        else:
            w, s, left, alpha, c = (self.w[idx], self.s[idx], self.left[idx], self.alpha[idx],
                                    self.c[idx])
        beta = self.beta
        h = (x[:, None] - left) / s
        inside = (h > 0.0) & (h < 1.0)
        hh = np.where(inside, h, 0.5)
        ih = 1.0 / hh
        ij = 1.0 / (1.0 - hh)
        ihb = self._pow(ih, beta)
        ijb = self._pow(ij, beta)
        L = alpha * (ijb - ihb)
        Lp = alpha * beta * (ijb * ij + ihb * ih)
        e = np.exp(-np.abs(L))
        sig = np.where(L >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        dsig = e / ((1.0 + e) * (1.0 + e)) * Lp
        sat = np.abs(L) > 700.0
        sig = np.where(sat, np.where(L > 0, 1.0, 0.0), sig)
        dsig = np.where(sat, 0.0, dsig)
        sig = np.where(inside, sig, np.where(h >= 1.0, 1.0, 0.0))
        dsig = np.where(inside, dsig, 0.0)
        Fx = (1.0 - c) * x + c * np.sum(w * sig, axis=1)
        dF = (1.0 - c) + c * np.sum(w * dsig / s, axis=1)
        return Fx, dF

    def inverse(self, y):
        """Root of F(x) = y by the bracketed Newton iteration of FM 5; returns x, F'(x)."""
        M = y.shape[0]
        x = np.where(y <= 0.0, 0.0, np.where(y >= 1.0, 1.0, y))
        active = (y > 0.0) & (y < 1.0)
        lo = np.zeros(M)
        hi = np.ones(M)
        step = np.ones(M)
        prev = np.ones(M)
        for _ in range(100):
            idx = np.nonzero(active)[0]
            if idx.size == 0:
                break
            xa, ya = x[idx], y[idx]
            Fx, dF = self.F(xa, idx)
            r = Fx - ya
            lo_a = np.where(r > 0, lo[idx], xa)
            hi_a = np.where(r > 0, xa, hi[idx])
            done_exact = r == 0
            n = r / dF
            newton_end = (np.abs(n) <= EPS * xa) & ~done_exact
            xn = xa - n
            bisect = ~((xn > lo_a) & (xn < hi_a)) | (np.abs(2.0 * r) > np.abs(prev[idx] * dF))
            new_prev = step[idx]
            new_step = np.where(bisect, (hi_a - lo_a) / 2.0, n)
            x_new = np.where(bisect, lo_a + new_step, xn)
            moved = np.abs(x_new - xa)
            stop = (moved <= 2.0 * EPS * x_new) | (hi_a - lo_a <= 2.0 * EPS * hi_a)
            # write back
            finished_here = done_exact | newton_end
            x_out = np.where(done_exact, xa, np.where(newton_end, xa - n, x_new))
            x[idx] = x_out
            lo[idx], hi[idx] = lo_a, hi_a
            prev[idx] = np.where(finished_here, prev[idx], new_prev)
            step[idx] = np.where(finished_here, step[idx], new_step)
            active[idx] = ~(finished_here | stop)
        else:
            if np.any(active):
                raise ConfigurationRefused("smooth inverse did not converge (SF_ERR_NUMERIC)")
        _, dF = self.F(x)
        return x, dF


class _Spline:
    """Rational-quadratic spline (MF 7.1) for M dimensions; circ (M,) marks circular ones."""

    def __init__(self, raw, K, consts, circ):
        mw, mh, md = (float(consts["min_bin_width"]), float(consts["min_bin_height"]),
                      float(consts["min_derivative"]))
        M = raw.shape[0]
        Wf = mw + (1.0 - K * mw) * _softmax(raw[:, 0:K])
        Hf = mh + (1.0 - K * mh) * _softmax(raw[:, K:2 * K])
        xk = np.zeros((M, K + 1))
        yk = np.zeros((M, K + 1))
        xk[:, 1:] = np.cumsum(Wf, axis=1)
        yk[:, 1:] = np.cumsum(Hf, axis=1)
        xk[:, K] = 1.0
        yk[:, K] = 1.0
        self.xk, self.yk = xk, yk
        # C core's road (MF 8): widths and heights as knot differences.
        self.W = xk[:, 1:] - xk[:, :-1]
        self.H = yk[:, 1:] - yk[:, :-1]
        delta = md + _softplus(raw[:, 2 * K:3 * K + 1])
        delta[circ, K] = delta[circ, 0]
        self.delta = delta
        self.t = raw[:, 3 * K + 1]
        self.K = K

    def _bin(self, knots, v):
        # bin k with knots_k <= v < knots_{k+1}, clamped to 0..K-1
        return np.sum(v[:, None] >= knots[:, 1:self.K], axis=1)

    def _gather(self, k):
        rows = np.arange(k.shape[0])
        return (self.xk[rows, k], self.yk[rows, k], self.W[rows, k], self.H[rows, k],
                self.delta[rows, k], self.delta[rows, k + 1])

    def S(self, x):
        k = self._bin(self.xk, x)
        xk, yk, W, H, d0, d1 = self._gather(k)
        xi = (x - xk) / W
        sk = H / W
        om = xi * (1.0 - xi)
        den = sk + (d0 + d1 - 2.0 * sk) * om
        Sx = yk + H * (sk * xi * xi + d0 * om) / den
        dS = sk * sk * (d1 * xi * xi + 2.0 * sk * om + d0 * (1.0 - xi) * (1.0 - xi)) / (den * den)
        return Sx, dS

    def inverse(self, y):
        k = self._bin(self.yk, y)
        xk, yk, W, H, d0, d1 = self._gather(k)
        sk = H / W
        dy = y - yk
        c2 = d0 + d1 - 2.0 * sk
        a = H * (sk - d0) + dy * c2
        b = H * d0 - dy * c2
        c = -sk * dy
        disc = np.maximum(b * b - 4.0 * a * c, 0.0)
        denom = -b - np.sqrt(disc)
        with np.errstate(divide="ignore", invalid="ignore"):
            xi = np.where(c == 0.0, 0.0, 2.0 * c / np.where(c == 0.0, 1.0, denom))
        x = np.clip(xk + xi * W, 0.0, 1.0)
        # log-determinant: -log S'(x), S' evaluated at x in y's bin (continuous at the knots)
        xi2 = (x - xk) / W
        om = xi2 * (1.0 - xi2)
        den = sk + c2 * om
        dS = sk * sk * (d1 * xi2 * xi2 + 2.0 * sk * om + d0 * (1.0 - xi2) * (1.0 - xi2)) / (
            den * den)
        return x, dS


def _affine(raw, scale_max, inp, generative):
    """RealNVP in logit space (MF 7.2). Returns out, log-determinant."""
    if np.any(~((inp > 0.0) & (inp < 1.0))):
        raise ConfigurationRefused("affine step: input outside the open interval (0, 1) "
                                   "(SF_ERR_SUPPORT)")
    s = scale_max * np.tanh(raw[:, 0] / scale_max)
    t = raw[:, 1]
    logit = np.log(inp) - np.log1p(-inp)
    if not generative:
        v = logit
        z = np.exp(s) * v + t
        out = _sigmoid(z)
        ld = s + _log_sigma_prime(z) - _log_sigma_prime(v)
    else:
        z = logit
        v = (z - t) * np.exp(-s)
        out = _sigmoid(v)
        ld = -(s + _log_sigma_prime(z) - _log_sigma_prime(v))
    return out, ld


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------

class SmoothFlowModel:
    def __init__(self, meta, tensors):
        if meta.get("format") != "openmm-smoothflow":
            raise ModelFormatError("metadata format is not 'openmm-smoothflow'")
        ver = meta.get("format_version")
        if not isinstance(ver, str) or not ver.isdigit() or not ver.isascii():
            raise ModelFormatError("format_version must be a decimal integer string")
        if int(ver) > READER_FORMAT_VERSION:
            raise ModelFormatError(f"format_version {int(ver)} is newer than this reader's "
                                   f"{READER_FORMAT_VERSION}")
        if "config" not in meta:
            raise ModelFormatError("metadata has no config")
        cfg = _strict_json(meta["config"], "config")
        self.config = cfg
        (n, rows, prior, smooth, spline, affine, support) = _validate_config(cfg)
        self.n_atoms = N = n
        self.D = D = 3 * N - 6
        self.rows = np.array(rows, dtype=np.int64)
        self.kT = R_GAS * float(cfg["temperature"])
        self.U0 = float(cfg.get("energy_offset", 0.0))
        self.smooth_consts = smooth
        self.spline_consts = spline
        self.scale_max = float(affine["scale_max"])
        self.policy = support["policy"]
        self.margin = float(support["margin"])
        self.angle_margin = float(support["angle_margin"])
        self.wall_k = float(support["wall_constant"])
        ni = 2 * N - 3
        self.edge_lo = np.array(support.get("edge_force_lower", [0.0] * ni), dtype=np.float64)
        self.edge_hi = np.array(support.get("edge_force_upper", [0.0] * ni), dtype=np.float64)
        # tensors
        expected = {"bond_lo": (N - 1,), "bond_hi": (N - 1,)}
        self.layers = []
        for li, lay in enumerate(cfg["layers"]):
            kind = lay["transform"]
            K = int(lay["n_components"]) if "n_components" in lay else 0
            P = {"smooth": 4 * K + 2, "spline": 3 * K + 2, "affine": 2}[kind]
            trans = np.array([int(d) for d in lay["transformed"]], dtype=np.int64)
            cond = np.array([int(d) for d in lay["conditioning"]], dtype=np.int64)
            n_circ = int(np.sum(cond >= 2 * N - 3))
            width = len(cond) + n_circ
            widths = [width] + [int(h) for h in lay["hidden"]] + [len(trans) * P]
            for m in range(len(widths) - 1):
                expected[f"layers.{li}.net.{m}.weight"] = (widths[m + 1], widths[m])
                expected[f"layers.{li}.net.{m}.bias"] = (widths[m + 1],)
            self.layers.append({
                "kind": kind, "generative": lay["direction"] == "generative", "K": K, "P": P,
                "trans": trans, "cond": cond, "act": _activation(lay["activation"]),
                "nmaps": len(widths) - 1,
                "circ": trans >= 2 * N - 3,
                "cond_circ": cond >= 2 * N - 3,
            })
        missing = set(expected) - set(tensors)
        extra = set(tensors) - set(expected)
        if missing or extra:
            raise ModelFormatError(f"tensor set mismatch: missing {sorted(missing)}, "
                                   f"unexpected {sorted(extra)}")
        for name, shape in expected.items():
            if tuple(tensors[name].shape) != shape:
                raise ModelFormatError(f"tensor {name!r} has shape {tensors[name].shape}, "
                                       f"expected {shape}")
        self.bond_lo = tensors["bond_lo"].copy()
        self.bond_hi = tensors["bond_hi"].copy()
        if np.any(self.bond_lo < 0) or np.any(self.bond_hi <= self.bond_lo):
            raise ModelFormatError("bond bounds must satisfy 0 <= bond_lo < bond_hi")
        for li, lay in enumerate(self.layers):
            lay["W"] = [tensors[f"layers.{li}.net.{m}.weight"] for m in range(lay["nmaps"])]
            lay["b"] = [tensors[f"layers.{li}.net.{m}.bias"] for m in range(lay["nmaps"])]
        # normalization (MF 3)
        self.offset = np.concatenate([self.bond_lo, np.zeros(N - 2), np.full(N - 3, -PI)])
        self.scale = np.concatenate([self.bond_hi - self.bond_lo, np.full(N - 2, PI),
                                     np.full(N - 3, TWO_PI)])
        self.n_interval = 2 * N - 3
        self.log_scale_sum = (float(np.sum(np.log(self.bond_hi - self.bond_lo)))
                              + (N - 2) * math.log(PI) + (N - 3) * math.log(TWO_PI))
        # prior (MF 5.4)
        if prior is None:
            self.prior = None
        else:
            mu = np.array(prior["mean"], dtype=np.float64)
            sd = np.array(prior["sigma"], dtype=np.float64)
            const = 0.0
            for m_, s_ in zip(mu, sd):
                const += math.log(s_ * math.sqrt(2.0 * PI)
                                  * (_phi_normal((1.0 - m_) / s_) - _phi_normal(-m_ / s_)))
            tmu = np.array(prior.get("torsion_mean", []), dtype=np.float64)
            tka = np.array(prior.get("torsion_kappa", []), dtype=np.float64)
            for k_ in tka:
                const += _log_i0e(k_)
            self.prior = (mu, sd, const, tmu, tka)

    # ---------------------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path):
        with open(path, "rb") as f:
            data = f.read()
        return cls.from_bytes(data)

    @classmethod
    def from_bytes(cls, data):
        meta, tensors = _read_container(data)
        return cls(meta, tensors)

    # ---------------------------------------------------------------------------------------
    def internal_coordinates(self, pos, box=None):
        """q (B, D) from positions (B, N, 3) in nm (MF 3); refuses degenerate geometry."""
        pos = np.asarray(pos, dtype=np.float64)
        if not np.all(np.isfinite(pos)):
            raise ConfigurationRefused("non-finite positions")
        rows = self.rows
        N = self.n_atoms

        def disp(i, j):  # r_i - r_j for arrays of atom indices, minimum image when boxed
            d = pos[:, i, :] - pos[:, j, :]
            if box is not None:
                a, b, c = box
                d = d - c * np.floor(d[..., 2:3] / c[2] + 0.5)
                d = d - b * np.floor(d[..., 1:2] / b[1] + 0.5)
                d = d - a * np.floor(d[..., 0:1] / a[0] + 0.5)
            return d

        # bonds: rows 1..N-1
        ra, rj = rows[1:, 0], rows[1:, 1]
        v = disp(ra, rj)
        bond = np.sqrt(np.sum(v * v, axis=-1))
        if np.any(bond == 0.0):
            raise ConfigurationRefused("zero bond")
        # angles: rows 2..N-1
        ra, rj, rk = rows[2:, 0], rows[2:, 1], rows[2:, 2]
        v1 = disp(ra, rj)
        v2 = disp(rk, rj)
        cr = np.cross(v1, v2)
        cr2 = np.sum(cr * cr, axis=-1)
        if np.any(cr2 <= 1e-24 * np.sum(v1 * v1, axis=-1) * np.sum(v2 * v2, axis=-1)):
            raise ConfigurationRefused("collinear angle")
        theta = np.arctan2(np.sqrt(cr2), np.sum(v1 * v2, axis=-1))
        # torsions: rows 3..N-1
        if N > 3:
            ra, rj, rk, rl = rows[3:, 0], rows[3:, 1], rows[3:, 2], rows[3:, 3]
            b1 = disp(rj, ra)
            b2 = disp(rk, rj)
            b3 = disp(rl, rk)
            n1 = np.cross(b1, b2)
            n2 = np.cross(b2, b3)
            s11 = np.sum(b1 * b1, -1)
            s22 = np.sum(b2 * b2, -1)
            s33 = np.sum(b3 * b3, -1)
            if (np.any(np.sum(n1 * n1, -1) <= 1e-24 * s11 * s22)
                    or np.any(np.sum(n2 * n2, -1) <= 1e-24 * s22 * s33)):
                raise ConfigurationRefused("undefined torsion (collinear atoms)")
            phi = np.arctan2(np.sqrt(s22) * np.sum(b1 * n2, -1), np.sum(n1 * n2, -1))
        else:
            phi = np.zeros((pos.shape[0], 0))
        return np.concatenate([bond, theta, phi], axis=1)

    def normalize(self, q):
        """u (B, D) with the torsion tie (MF 3, 5.1)."""
        u = (q - self.offset) / self.scale
        tors = u[:, self.n_interval:]
        tors[tors == 1.0] = 0.0
        return u

    def clamp(self, u):
        """v, E_wall for the support policy (MF 5.2)."""
        ni = self.n_interval
        if self.policy == "error":
            ub = u[:, :self.n_atoms - 1]
            if np.any((ub < 0.0) | (ub > 1.0)):
                raise ConfigurationRefused("bond outside [bond_lo, bond_hi]")
            return u.copy(), np.zeros(u.shape[0])
        # bonds take margin, angles angle_margin
        m = np.where(np.arange(ni) < self.n_atoms - 1, self.margin, self.angle_margin)
        x = u[:, :ni]
        low = x < 2.0 * m
        high = x > 1.0 - 2.0 * m
        c_low = 2.0 * m + m * np.tanh((x - 2.0 * m) / m)
        c_high = 1.0 - (2.0 * m + m * np.tanh((1.0 - x - 2.0 * m) / m))
        c = np.where(low, c_low, np.where(high, c_high, x))
        v = u.copy()
        v[:, :ni] = c
        dw = x - c
        g = np.where(x < 0.5, self.edge_lo, self.edge_hi)
        e_wall = np.sum((self.wall_k / 2.0) * dw * dw + g * np.abs(dw), axis=1)
        return v, e_wall

    def _conditioner(self, lay, y):
        cond = lay["cond"]
        feats = []
        for j, d in enumerate(cond):
            yd = y[:, d]
            if lay["cond_circ"][j]:
                ang = TWO_PI * yd
                feats.append(np.cos(ang))
                feats.append(np.sin(ang))
            else:
                feats.append(2.0 * yd - 1.0)
        a = np.stack(feats, axis=1) if feats else np.zeros((y.shape[0], 0))
        for m in range(lay["nmaps"]):
            a = a @ lay["W"][m].T + lay["b"][m]
            if m < lay["nmaps"] - 1:
                a = lay["act"](a)
        return a

    def log_density(self, v):
        """log p_U(v) (MF 5.3, 5.4) for v (B, D)."""
        B = v.shape[0]
        state = v.copy()
        logdet = np.zeros(B)
        for lay in reversed(self.layers):
            y = state
            x = y.copy()
            raw = self._conditioner(lay, y)
            T = len(lay["trans"])
            P = lay["P"]
            raw = raw.reshape(B * T, P)
            inp = y[:, lay["trans"]].reshape(B * T)
            circ = np.broadcast_to(lay["circ"], (B, T)).reshape(B * T)
            kind, gen = lay["kind"], lay["generative"]
            if kind == "affine":
                out, ld = _affine(raw, self.scale_max, inp, gen)
            else:
                if kind == "smooth":
                    tr = _Smooth(raw, lay["K"], self.smooth_consts)
                    fwd, inv = tr.F, tr.inverse
                else:
                    tr = _Spline(raw, lay["K"], self.spline_consts, circ)
                    fwd, inv = tr.S, tr.inverse
                t = np.where(circ, tr.t, 0.0)
                if not gen:
                    Fx, dF = fwd(inp)
                    out = np.where(circ, _wrap(Fx + t), Fx)
                    ld = np.log(dF)
                else:
                    yin = np.where(circ, _wrap(inp - t), inp)
                    out, dF = inv(yin)
                    ld = -np.log(dF)
            x[:, lay["trans"]] = out.reshape(B, T)
            logdet += ld.reshape(B, T).sum(axis=1)
            state = x
        z = state
        if self.prior is None:
            logp = np.zeros(B)
        else:
            mu, sd, const, tmu, tka = self.prior
            zi = z[:, :self.n_interval]
            logp = -np.sum((zi - mu) ** 2 / (2.0 * sd * sd), axis=1) - const
            if len(tka):    # von Mises torsions (MF 5.4)
                zt = z[:, self.n_interval:]
                logp = logp + np.sum(tka * (np.cos(TWO_PI * (zt - tmu)) - 1.0), axis=1)
        return logp + logdet

    def energy(self, positions, box=None):
        """U in kJ/mol (MF 5.5) for positions (N, 3) or (B, N, 3) in nm.

        box: None or a (3, 3) array of OpenMM reduced triclinic box vectors (rows a, b, c), nm.
        """
        pos = np.asarray(positions, dtype=np.float64)
        single = pos.ndim == 2
        if single:
            pos = pos[None]
        if pos.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"positions must be (B, {self.n_atoms}, 3)")
        if box is not None:
            box = np.asarray(box, dtype=np.float64)
        q = self.internal_coordinates(pos, box)
        u = self.normalize(q)
        v, e_wall = self.clamp(u)
        N = self.n_atoms
        qp = self.offset + self.scale * v  # q' = offset + scale v (MF 5.5)
        log_j = (np.sum(2.0 * np.log(qp[:, :N - 1]), axis=1)
                 + np.sum(np.log(np.sin(qp[:, N - 1:2 * N - 3])), axis=1))
        logp = self.log_density(v)
        U = self.kT * (self.log_scale_sum + log_j - logp) + self.U0 + e_wall
        return float(U[0]) if single else U

    def energy_forces(self, positions, box=None, step="auto", order=4):
        """U and F = -dU/dx by central finite differences of energy().

        order=4 (default): the five-point central stencil
            dU/dx ~ (-U(x+2h) + 8 U(x+h) - 8 U(x-h) + U(x-2h)) / (12 h), error O(h^4);
        order=2: (U(x+h) - U(x-h)) / (2 h), error O(h^2).
        Each Cartesian coordinate (nm) is displaced separately.

        step: a float h in nm, or "auto" (default): the stencil is evaluated at the steps
        h = 1e-5, 1e-6 and 1e-7 nm and, for every force component separately, the estimate of
        the adjacent pair of steps that agree best is kept (the smaller step of that pair).
        A fixed step cannot serve every model: the shipped fixtures have features ~1e-4 nm
        wide (truncation error needs h <= 1e-7), a spline flow's forces jump at its knots
        (a stencil straddling one mixes both sides: small h), while an affine flow near the
        faces of its support has energy rounding noise ~1e-8 kJ/mol (noise / h needs h >= 1e-5).
        """
        pos = np.asarray(positions, dtype=np.float64)
        single = pos.ndim == 2
        if single:
            pos = pos[None]
        if order == 4:
            shifts, coefs, denom = (2.0, 1.0, -1.0, -2.0), (-1.0, 8.0, -8.0, 1.0), 12.0
        elif order == 2:
            shifts, coefs, denom = (1.0, -1.0), (1.0, -1.0), 2.0
        else:
            raise ValueError("order must be 2 or 4")
        steps = (1e-5, 1e-6, 1e-7) if step == "auto" else (float(step),)
        B, N, _ = pos.shape
        S, H = len(shifts), len(steps)
        U = self.energy(pos, box)
        forces = np.empty((B, N, 3))
        eye = np.eye(N * 3).reshape(N * 3, N, 3)
        for bi in range(B):
            disp = np.empty((H, S, N * 3, N, 3))
            for hi, h in enumerate(steps):
                for si, sh in enumerate(shifts):
                    disp[hi, si] = pos[bi][None] + (sh * h) * eye
            E = self.energy(disp.reshape(-1, N, 3), box).reshape(H, S, N * 3)
            est = np.stack([sum(c * E[hi, si] for si, c in enumerate(coefs)) / (denom * h)
                            for hi, h in enumerate(steps)])  # (H, 3N) dU/dx
            if H == 1:
                grad = est[0]
            else:
                diffs = np.abs(np.diff(est, axis=0))  # (H-1, 3N)
                best = np.argmin(diffs, axis=0)
                grad = est[best + 1, np.arange(N * 3)]
            forces[bi] = -grad.reshape(N, 3)
        if single:
            return float(U[0]), forces[0]
        return U, forces


def load(path):
    return SmoothFlowModel.from_file(path)
