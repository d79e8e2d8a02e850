"""The clean-room reader tests/independent_reader/smoothflow_reader.py against the C core.

The reader was written from docs/model-format.md, docs/flow-math.md and the config schema
alone; here it must reproduce the C core (through its Python binding, used as a black box)
on the shipped alanine dipeptide models, the test fixtures, and variants of them written to
a temporary directory (generative directions for the spline and affine kinds and a large
smooth generative model, other activations, the uniform prior, an energy offset, F32 tensors),
which exercise the paths no shipped file covers.

Tolerances:
- energy: |U_reader - U_core| <= 1e-9 max(|U_core|, 1 kJ/mol). Observed: ~1e-15 relative
  (both evaluate the same formulas in double; BLAS summation order and the few equivalent
  forms of docs/model-format.md section 8 differ by rounding only).
- forces: the reader's forces are central finite differences of its own energy (five-point
  stencil, steps 1e-5, 1e-6, 1e-7 nm, per component the best-agreeing adjacent pair: see
  SmoothFlowModel.energy_forces). Their error is truncation + energy rounding / step, observed
  <= 1e-9 relative to the largest force for the smooth and spline models and <= ~3e-7 for the
  affine model (its energy has ~1e-8 kJ/mol rounding noise near the faces of the logit
  support). We require max |F_reader - F_core| <= 1e-5 max |F_core| per configuration: ~30x
  margin over the worst observed error, and still ~1e4 times smaller than any error a wrong
  formula (a missing Jacobian term, a wrong branch, a wrong sign) produces.
"""

import importlib.util
import json
import math
import pathlib
import struct

import numpy as np
import pytest

smoothflow_core = pytest.importorskip("smoothflow_core")
CoreModel = smoothflow_core.CoreModel

ROOT = pathlib.Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "independent_smoothflow_reader", ROOT / "tests" / "independent_reader" / "smoothflow_reader.py")
sfr = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sfr)

ALA = ROOT / "models" / "alanine_dipeptide"
DATA = ROOT / "tests" / "data"
MODELS = {
    "ala_smooth": ALA / "smooth.safetensors",
    "ala_spline": ALA / "spline.safetensors",
    "ala_affine": ALA / "affine.safetensors",
    "tiny": DATA / "tiny.safetensors",
    "wall": DATA / "wall.safetensors",
}

E_REL = 1e-9
F_REL = 1e-5


# ------------------------------------------------------------------------------------------
# Geometry from the model's own Z-matrix
# ------------------------------------------------------------------------------------------

def place(model, bond_u, angles, torsions):
    """Cartesian positions (N, 3) nm whose internal coordinates (docs section 3) are
    bond_lo + (bond_hi - bond_lo) bond_u, angles (rad) and torsions (rad, IUPAC sign)."""
    N = model.n_atoms
    pos = np.zeros((N, 3))
    lo, hi = model.bond_lo, model.bond_hi
    for r in range(1, N):
        a, j, k, l = model.rows[r]
        b = lo[r - 1] + (hi[r - 1] - lo[r - 1]) * bond_u[r - 1]
        if r == 1:
            pos[a] = pos[j] + np.array([b, 0.0, 0.0])
            continue
        th = angles[r - 2]
        if r == 2:
            e = pos[k] - pos[j]
            e /= np.linalg.norm(e)
            p = np.cross([0.0, 0.0, 1.0], e)
            p /= np.linalg.norm(p)
            pos[a] = pos[j] + b * (np.cos(th) * e + np.sin(th) * p)
            continue
        ph = torsions[r - 3]
        A, Bp, C = pos[l], pos[k], pos[j]
        bc = C - Bp
        bc /= np.linalg.norm(bc)
        n = np.cross(Bp - A, bc)
        n /= np.linalg.norm(n)
        m = np.cross(n, bc)
        pos[a] = C + (-b * np.cos(th)) * bc + (b * np.sin(th) * np.cos(ph)) * m \
            + (b * np.sin(th) * np.sin(ph)) * n
    return pos


def interior_configs(model, rng, count):
    """Bonds near the middle of [bond_lo, bond_hi], angles around 110 degrees, torsions
    spread over the circle (evenly spaced plus a random offset), small perturbations."""
    N = model.n_atoms
    out = []
    for c in range(count):
        bond_u = 0.5 + rng.uniform(-0.15, 0.15, N - 1)
        angles = np.deg2rad(110.0 + rng.uniform(-8.0, 8.0, N - 2))
        torsions = (np.linspace(-math.pi, math.pi, N - 3, endpoint=False)
                    + 2 * math.pi * (c + rng.uniform(0, 1)) / count + rng.normal(0, 0.05, N - 3))
        torsions = (torsions + math.pi) % (2 * math.pi) - math.pi
        out.append((bond_u, angles, torsions))
    return out


def wall_configs(model, rng, count):
    """Configurations in the wall zone: many bonds near or past the edges of
    [bond_lo, bond_hi] (u in the zone [0, 2m) or (1 - 2m, 1] and a little beyond), one
    angle in its zone, the rest interior."""
    N = model.n_atoms
    m = model.margin
    out = []
    for bond_u, angles, torsions in interior_configs(model, rng, count):
        pick = rng.choice(N - 1, size=max(2, (N - 1) // 2), replace=False)
        for i, d in enumerate(pick):
            depth = rng.uniform(-1.0, 1.9) * m  # -m..1.9m: past the face, in the zone
            bond_u[d] = depth if i % 2 == 0 else 1.0 - depth
        ang = rng.integers(0, N - 2)
        # an angle in the upper zone: theta / pi in (1 - 2m, 1 - 0.3 m)
        angles[ang] = math.pi * (1.0 - rng.uniform(0.5, 1.9) * m)
        out.append((bond_u, angles, torsions))
    return out


def build(model, specs):
    pos = np.array([place(model, *s) for s in specs])
    # the placement reproduces the requested internal coordinates (section 3 formulas)
    q = model.internal_coordinates(pos)
    for (bond_u, angles, torsions), qq in zip(specs, q):
        want = np.concatenate([model.bond_lo + (model.bond_hi - model.bond_lo) * bond_u,
                               angles, torsions])
        assert np.allclose(qq, want, rtol=0, atol=1e-9)
    return pos


# ------------------------------------------------------------------------------------------
# Comparison
# ------------------------------------------------------------------------------------------

def compare(path, pos, expect_wall_zone=None):
    reader = sfr.SmoothFlowModel.from_file(path)
    core = CoreModel.from_file(str(path), max_batch=len(pos))
    e_core, f_core = core.evaluate(np.ascontiguousarray(pos, dtype=np.float64))
    e_core = np.asarray(e_core, dtype=np.float64).reshape(len(pos))
    f_core = np.asarray(f_core, dtype=np.float64).reshape(pos.shape)
    e_read, f_read = reader.energy_forces(pos)
    assert np.all(np.isfinite(e_core)) and np.all(np.isfinite(e_read))
    de = np.abs(e_read - e_core)
    assert np.all(de <= E_REL * np.maximum(np.abs(e_core), 1.0)), (e_read, e_core, de)
    fscale = np.abs(f_core).max(axis=(1, 2))
    df = np.abs(f_read - f_core).max(axis=(1, 2))
    assert np.all(df <= F_REL * fscale), (df / fscale)
    if expect_wall_zone is not None:
        u = reader.normalize(reader.internal_coordinates(pos))[:, :reader.n_interval]
        m = reader.margin
        in_zone = np.any((u < 2 * m) | (u > 1 - 2 * m), axis=1)
        assert np.all(in_zone == expect_wall_zone)
    return np.max(de / np.maximum(np.abs(e_core), 1.0)), np.max(df / fscale)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_interior(name):
    path = MODELS[name]
    reader = sfr.SmoothFlowModel.from_file(path)
    rng = np.random.default_rng(sum(map(ord, name)))
    n = 4 if name in ("tiny", "wall") else 3
    pos = build(reader, interior_configs(reader, rng, n))
    compare(path, pos, expect_wall_zone=False)


@pytest.mark.parametrize("name", [n for n in sorted(MODELS) if n != "tiny"])
def test_wall_zone(name):
    path = MODELS[name]
    reader = sfr.SmoothFlowModel.from_file(path)
    assert reader.policy == "wall"
    rng = np.random.default_rng(1000 + sum(map(ord, name)))
    pos = build(reader, wall_configs(reader, rng, 3))
    compare(path, pos, expect_wall_zone=True)


def test_error_policy_refusal():
    path = MODELS["tiny"]
    reader = sfr.SmoothFlowModel.from_file(path)
    assert reader.policy == "error"
    rng = np.random.default_rng(5)
    (bond_u, angles, torsions), = interior_configs(reader, rng, 1)
    bond_u[1] = 1.02  # past bond_hi
    pos = build(reader, [(bond_u, angles, torsions)])
    with pytest.raises(sfr.ConfigurationRefused):
        reader.energy(pos)
    core = CoreModel.from_file(str(path), max_batch=1)
    with pytest.raises(Exception):
        core.evaluate(pos)


# ------------------------------------------------------------------------------------------
# Variants: same weights, other config choices, written to tmp_path with a minimal writer
# ------------------------------------------------------------------------------------------

def _read_raw(path):
    data = pathlib.Path(path).read_bytes()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__")
    buf = data[8 + n:]
    tensors = {}
    for name, info in header.items():
        b, e = info["data_offsets"]
        dt = {"F64": "<f8", "F32": "<f4"}[info["dtype"]]
        tensors[name] = np.frombuffer(buf[b:e], dtype=dt).reshape(info["shape"])
    return meta, tensors


def _write_raw(path, meta, tensors, f32=()):
    header = {"__metadata__": meta}
    chunks = []
    off = 0
    for name in sorted(tensors):
        arr = np.ascontiguousarray(tensors[name], dtype="<f4" if name in f32 else "<f8")
        raw = arr.tobytes()
        header[name] = {"dtype": "F32" if name in f32 else "F64", "shape": list(arr.shape),
                        "data_offsets": [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    text = json.dumps(header).encode("utf-8")
    text += b" " * (-len(text) % 8)
    pathlib.Path(path).write_bytes(struct.pack("<Q", len(text)) + text + b"".join(chunks))


def _variant(tmp_path, src, tag, edit, f32=()):
    meta, tensors = _read_raw(src)
    cfg = json.loads(meta["config"])
    edit(cfg)
    meta = dict(meta, config=json.dumps(cfg))
    out = tmp_path / f"{tag}.safetensors"
    _write_raw(out, meta, tensors, f32=f32)
    return out


def _all_layers(**kv):
    def edit(cfg):
        for lay in cfg["layers"]:
            lay.update(kv)
    return edit


VARIANTS = {
    # root-finding inverse (FM 5) through a large trained smooth model, tanh conditioners
    "smooth_generative_tanh": ("ala_smooth", _all_layers(direction="generative",
                                                         activation="tanh"), ()),
    # analytic spline inverse (MF 7.1), softplus conditioners, uniform prior, energy offset
    "spline_generative_softplus": ("ala_spline", lambda cfg: (
        _all_layers(direction="generative", activation="softplus")(cfg),
        cfg.update(prior="uniform", energy_offset=-12.5)), ()),
    # affine inverse (MF 7.2), alternating directions
    "affine_alternating": ("ala_affine", lambda cfg: [
        lay.update(direction="generative") for i, lay in enumerate(cfg["layers"])
        if i % 2 == 0], ()),
    # von Mises torsions in the prior (MF 5.4): kappa 0 to 1e4 over the shipped smooth flow's 19
    # torsions, means spread over the circle
    "smooth_von_mises_torsions": ("ala_smooth", lambda cfg: cfg["prior"].update(
        torsion_mean=[(0.37 * t) % 1.0 for t in range(cfg["n_atoms"] - 3)],
        torsion_kappa=[[0.0, 0.3, 4.0, 60.0, 1e4][t % 5] for t in range(cfg["n_atoms"] - 3)]), ()),
    # F32 tensors widened on load (MF 1), mixed directions, no support section (= error)
    "wall_f32_error": ("wall", lambda cfg: (cfg.pop("support"), [
        lay.update(direction="density") for lay in cfg["layers"]]),
        ("layers.0.net.0.weight", "layers.1.net.1.bias", "bond_lo")),
}


@pytest.mark.parametrize("tag", sorted(VARIANTS))
def test_variant(tmp_path, tag):
    src, edit, f32 = VARIANTS[tag]
    path = _variant(tmp_path, MODELS[src], tag, edit, f32)
    reader = sfr.SmoothFlowModel.from_file(path)
    rng = np.random.default_rng(77 + sum(map(ord, tag)))
    specs = interior_configs(reader, rng, 2)
    if reader.policy == "wall":
        specs += wall_configs(reader, rng, 1)
    pos = build(reader, specs)
    compare(path, pos)


# ------------------------------------------------------------------------------------------
# Reader-only checks of rules the core binding does not expose here
# ------------------------------------------------------------------------------------------

def test_reader_periodic_box_and_invariance():
    """Minimum image (MF 3): shifting single atoms by lattice vectors, or the whole molecule,
    leaves U unchanged; rigid rotation too."""
    reader = sfr.SmoothFlowModel.from_file(MODELS["ala_smooth"])
    rng = np.random.default_rng(3)
    pos = build(reader, interior_configs(reader, rng, 1))[0]
    box = np.array([[2.0, 0.0, 0.0], [0.3, 1.9, 0.0], [-0.4, 0.5, 2.1]])
    e0 = reader.energy(pos)
    assert reader.energy(pos, box) == pytest.approx(e0, rel=1e-12)
    shifted = pos + rng.integers(-2, 3, size=(len(pos), 3)) @ box
    assert reader.energy(shifted, box) == pytest.approx(e0, rel=1e-12)
    th = 0.7
    rot = np.array([[math.cos(th), -math.sin(th), 0], [math.sin(th), math.cos(th), 0], [0, 0, 1]])
    assert reader.energy(pos @ rot.T + 5.0) == pytest.approx(e0, rel=1e-12)


def test_reader_refuses_bad_files(tmp_path):
    meta, tensors = _read_raw(MODELS["tiny"])
    cases = {
        "newer": dict(meta, format_version="2"),
        "format": dict(meta, format="other"),
        "unknown_key": dict(meta, config=json.dumps(dict(json.loads(meta["config"]), x=1))),
        "dup_key": dict(meta, config=meta["config"][:-1] + ', "n_atoms": 6}'),
    }
    for tag, m in cases.items():
        p = tmp_path / f"{tag}.safetensors"
        _write_raw(p, m, tensors)
        with pytest.raises(sfr.ModelFormatError):
            sfr.SmoothFlowModel.from_file(p)
    extra = dict(tensors, stray=np.zeros(2))
    p = tmp_path / "stray.safetensors"
    _write_raw(p, meta, extra)
    with pytest.raises(sfr.ModelFormatError):
        sfr.SmoothFlowModel.from_file(p)
