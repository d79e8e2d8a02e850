"""Random and preset flows, Z-matrices and configurations for tests and examples."""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Union

import numpy as np
import torch

from . import zmatrix as zm
from .flow import SmoothFlow

__all__ = ["random_zmatrix", "chain_zmatrix", "random_flow", "randomize_weights",
           "random_u", "random_positions", "random_rotation", "chain_flow", "unchecked_model_bytes"]


def random_zmatrix(n_atoms: int, seed: int = 0) -> np.ndarray:
    """A valid, chemically shaped Z-matrix over a random tree of ``n_atoms`` atoms.

    Atoms are placed breadth-first along a random tree whose vertices have at most four
    neighbours; each row ``[a, j, k, l]`` uses a's parent j, j's parent (or another
    placed neighbour) k, and k's parent (or another placed atom) l. The model atom order
    is a random permutation of the placement order.

    Parameters
    ----------
    n_atoms : int
        N >= 3.
    seed : int

    Returns
    -------
    numpy.ndarray
        ``(N, 4)`` int64.
    """
    if n_atoms < 3:
        raise ValueError("n_atoms must be >= 3")
    rng = np.random.default_rng(seed)
    label = rng.permutation(n_atoms)          # placement position -> model atom index
    parent = [-1] * n_atoms
    degree = [0] * n_atoms
    for p in range(1, n_atoms):
        cands = [q for q in range(p) if degree[q] < 4] or list(range(p))
        # prefer recent atoms a little, to make chains as well as branches
        wts = np.array([1.0 + q for q in cands])
        q = int(rng.choice(cands, p=wts / wts.sum()))
        parent[p] = q
        degree[p] += 1
        degree[q] += 1
    # breadth-first placement order of the tree rooted at 0
    order, children = [0], {q: [p for p in range(n_atoms) if parent[p] == q]
                            for q in range(n_atoms)}
    i = 0
    while i < len(order):
        order.extend(children[order[i]])
        i += 1
    rows = []
    placed: List[int] = []
    for r, p in enumerate(order):
        if r == 0:
            row = [p, -1, -1, -1]
        elif r == 1:
            row = [p, parent[p], -1, -1]
        else:
            j = parent[p]
            used = {p, j}
            ks = ([parent[j]] if parent[j] >= 0 else []) + \
                 [q for q in placed if parent[q] == j] + placed
            k = next(q for q in ks if q not in used)
            if r == 2:
                row = [p, j, k, -1]
            else:
                used.add(k)
                ls = ([parent[k]] if parent[k] >= 0 else []) + \
                     [q for q in placed if parent[q] in (k, j)] + placed
                l = next(q for q in ls if q not in used)
                row = [p, j, k, l]
        rows.append(row)
        placed.append(p)
    Z = np.array([[label[v] if v >= 0 else -1 for v in row] for row in rows], dtype=np.int64)
    return zm.validate_zmatrix(Z)


def chain_zmatrix(n_atoms: int) -> np.ndarray:
    """The Z-matrix of a linear chain 0-1-2-...: row i is ``[i, i-1, i-2, i-3]``."""
    return zm.validate_zmatrix([[i] + [i - d if i - d >= 0 and d <= i else -1
                                       for d in (1, 2, 3)] for i in range(n_atoms)])


def _per_layer(value, n_layers: int, what: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) != n_layers:
            raise ValueError(f"{what} must have one entry per layer ({n_layers}), got {len(value)}")
        return list(value)
    return [value] * n_layers


def _split_layers(D: int, n_layers: int, rng, n_components, hidden, activation, directions,
                  transform="smooth"):
    if directions is None or directions == "generative":
        directions = ["generative"] * n_layers
    elif directions == "density":
        directions = ["density"] * n_layers
    elif directions == "mixed":
        directions = ["generative" if i % 2 == 0 else "density" for i in range(n_layers)]
    directions = list(directions)
    if len(directions) != n_layers:
        raise ValueError("directions must have one entry per layer")
    Ks = _per_layer(n_components, n_layers, "n_components")
    kinds = _per_layer(transform, n_layers, "transform")
    layers = []
    A = None
    for i in range(n_layers):
        if i % 2 == 0:
            perm = rng.permutation(D)
            n_t = max(1, D // 2)
            A, Bc = sorted(perm[:n_t].tolist()), sorted(perm[n_t:].tolist())
            t, c = A, Bc
        else:
            t, c = Bc, A
        if not t:
            t, c = c, t
        layers.append({"transform": kinds[i], "direction": directions[i],
                       "transformed": list(t), "conditioning": list(c),
                       "n_components": int(Ks[i]), "hidden": list(hidden),
                       "activation": activation})
    return layers


def randomize_weights(flow: SmoothFlow, seed: int = 0, weight_scale: float = 1.0,
                      steep: bool = True) -> SmoothFlow:
    """Give every conditioner random, non-zero weights (in place).

    Hidden maps get N(0, weight_scale^2 / fan_in) weights and N(0, weight_scale^2 / 4)
    biases; the last map gets N(0, weight_scale^2 / fan_in) weights and biases that
    place each raw parameter in a range where the transform is far from the identity
    (with ``steep=False`` all biases are N(0, weight_scale^2 / 4)):

    - smooth: s~ in [-3, 1] (narrow windows), a~ in [-1, 3] (sharp ramps), c~ in [0, 3]
      (a strong non-linear part), w~, b~, t~ ~ N(0, 1);
    - spline: w~, h~ ~ N(0, 1) (uneven bins), d~ ~ N(0, 1) (knot slopes from about 0.1
      to 3), t~ ~ N(0, 1);
    - affine: the last map's weights are halved and s~, t~ ~ N(0, 1/4), so that stacked
      layers keep typical points well away from the faces, where u in [0, 1] loses the
      precision of the logit.

    Parameters
    ----------
    flow : SmoothFlow
    seed : int
    weight_scale : float
    steep : bool

    Returns
    -------
    SmoothFlow
        ``flow`` itself.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in flow.layers:
            net = layer.net
            K = layer.n_components
            kind = layer.transform
            P = layer.transformer.params_per_dim
            for m, lin in enumerate(net):
                fan_in = max(lin.in_features, 1)
                lin.weight.copy_(torch.randn(lin.weight.shape, generator=g, dtype=lin.weight.dtype)
                                 * weight_scale / math.sqrt(fan_in))
                lin.bias.copy_(torch.randn(lin.bias.shape, generator=g, dtype=lin.bias.dtype)
                               * weight_scale * 0.5)
            if not steep:
                continue
            last = net[-1]
            n_t = len(layer.transformed)
            bias = torch.empty(n_t, P, dtype=last.bias.dtype)
            rnd = lambda *s: torch.rand(*s, generator=g, dtype=bias.dtype)
            nrm = lambda *s: torch.randn(*s, generator=g, dtype=bias.dtype)
            if kind == "smooth":
                bias[:, 0:2 * K] = nrm(n_t, 2 * K)
                bias[:, 2 * K:3 * K] = -3.0 + 4.0 * rnd(n_t, K)
                bias[:, 3 * K:4 * K] = -1.0 + 4.0 * rnd(n_t, K)
                bias[:, 4 * K] = 3.0 * rnd(n_t)
                bias[:, 4 * K + 1] = nrm(n_t)
            elif kind == "spline":
                bias[:] = nrm(n_t, P)
            else:
                last.weight.mul_(0.5)
                bias[:] = 0.5 * nrm(n_t, P)
            last.bias.copy_(bias.reshape(-1))
    return flow


def random_flow(n_atoms: int = 6, zmatrix=None, n_layers: int = 4,
                n_components: Union[int, Sequence[int]] = 4, hidden: Sequence[int] = (16, 16),
                activation: str = "silu", directions=None, seed: int = 0,
                weight_scale: float = 1.0, steep: bool = True, temperature: float = 300.0,
                energy_offset: float = 0.0, support: Optional[dict] = None,
                smooth: Optional[dict] = None, atoms=None, bond_lo=None, bond_hi=None,
                dtype: torch.dtype = torch.float64,
                transform: Union[str, Sequence[str]] = "smooth",
                spline: Optional[dict] = None, affine: Optional[dict] = None,
                prior=None) -> SmoothFlow:
    """A flow with random non-zero weights, for tests.

    Parameters
    ----------
    n_atoms : int
        N (ignored when ``zmatrix`` is given).
    zmatrix : array_like, optional
        Default: :func:`random_zmatrix` (n_atoms, seed).
    n_layers : int
        Layers alternate between a random half of the dimensions and its complement.
    n_components : int or sequence of int
        K, or one K per layer (ignored by affine layers).
    hidden : sequence of int
    activation : str
    directions : None, "generative", "density", "mixed" or a list
        Layer directions (default all generative; "mixed" alternates).
    transform : str or sequence of str
        ``smooth`` (default), ``spline`` or ``affine`` for every layer, or one per layer.
    seed : int
    weight_scale : float
        See :func:`randomize_weights`.
    steep : bool
        Bias the last layers towards narrow windows and sharp ramps.
    temperature, energy_offset, support, smooth, atoms, spline, affine
        Passed to :class:`SmoothFlow`.
    prior : None, "uniform", "truncated_normal", "von_mises" or dict
        ``"truncated_normal"``: random means in [0.3, 0.7] and sigmas in [0.05, 0.3] per bond
        and angle; ``"von_mises"``: the same, and von Mises torsions with random means in
        [0, 1) and kappas in [0.5, 50]; a dict is passed on as it is.
    bond_lo, bond_hi : array_like, optional
        Default: lo uniform in [0.09, 0.15] nm, hi = lo + [0.04, 0.1] nm.
    dtype : torch.dtype

    Returns
    -------
    SmoothFlow
    """
    rng = np.random.default_rng(seed)
    Z = random_zmatrix(n_atoms, seed) if zmatrix is None else zm.validate_zmatrix(zmatrix)
    N = Z.shape[0]
    D = 3 * N - 6
    if bond_lo is None:
        bond_lo = rng.uniform(0.09, 0.15, N - 1)
    if bond_hi is None:
        bond_hi = np.asarray(bond_lo) + rng.uniform(0.04, 0.1, N - 1)
    layers = _split_layers(D, n_layers, rng, n_components, hidden, activation, directions,
                           transform)
    if prior in ("truncated_normal", "von_mises"):
        circular = prior == "von_mises"
        prior = {"kind": "truncated_normal", "mean": rng.uniform(0.3, 0.7, 2 * N - 3).tolist(),
                 "sigma": rng.uniform(0.05, 0.3, 2 * N - 3).tolist()}
        if circular:
            prior.update(torsion_mean=rng.uniform(0, 1, N - 3).tolist(),
                         torsion_kappa=np.exp(rng.uniform(np.log(0.5), np.log(50), N - 3)).tolist())
    flow = SmoothFlow(Z, bond_lo, bond_hi, layers, temperature=temperature,
                      energy_offset=energy_offset, atoms=atoms, smooth=smooth,
                      support=support, dtype=dtype, spline=spline, affine=affine,
                      prior=prior or "uniform")
    return randomize_weights(flow, seed=seed + 1, weight_scale=weight_scale, steep=steep)


def random_u(flow: SmoothFlow, n: int, seed: int = 0, margin: float = 0.05,
             angle_range=(0.15, 0.85)) -> torch.Tensor:
    """Points u ``(n, D)`` inside the support, away from its boundary.

    Bonds uniform in [margin, 1 - margin], angles uniform in ``angle_range`` (units of pi),
    torsions uniform on [0, 1).
    """
    g = torch.Generator().manual_seed(seed)
    N = flow.n_atoms
    rand = lambda k: torch.rand(n, k, generator=g, dtype=flow.dtype)
    ub = margin + (1 - 2 * margin) * rand(N - 1)
    ua = angle_range[0] + (angle_range[1] - angle_range[0]) * rand(N - 2)
    ut = rand(N - 3)
    return torch.cat([ub, ua, ut], dim=-1)


def random_rotation(n: int, generator: Optional[torch.Generator] = None,
                    dtype=torch.float64) -> torch.Tensor:
    """``n`` random proper rotation matrices (QR of Gaussian matrices)."""
    A = torch.randn(n, 3, 3, generator=generator, dtype=dtype)
    Q, R = torch.linalg.qr(A)
    Q = Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)
    det = torch.linalg.det(Q)
    Q[:, :, 0] = Q[:, :, 0] * det.unsqueeze(-1)
    return Q


def random_positions(flow: SmoothFlow, n: int, seed: int = 0, margin: float = 0.05,
                     rigid: bool = True) -> torch.Tensor:
    """Configurations ``(n, N, 3)`` inside the flow's support (see :func:`random_u`).

    With ``rigid``, each is randomly rotated and translated (by up to 1 nm).
    """
    u = random_u(flow, n, seed, margin)
    x = flow.to_cartesian(u)
    if rigid:
        g = torch.Generator().manual_seed(seed + 7919)
        R = random_rotation(n, g, flow.dtype)
        shift = torch.rand(n, 1, 3, generator=g, dtype=flow.dtype)
        x = x @ R.transpose(-1, -2) + shift
    return x.detach()


def chain_flow(n_atoms: int = 6, seed: int = 0, n_layers: int = 4, n_components: int = 4,
               hidden: Sequence[int] = (16, 16), activation: str = "silu",
               directions=None, **kwargs) -> SmoothFlow:
    """A deterministic small test molecule: an ``n_atoms`` carbon chain with random weights.

    Z-matrix :func:`chain_zmatrix`, bonds in [0.13, 0.18] nm, atoms ``C1..Cn`` of one
    residue ``MOL``, weights from :func:`random_flow` with the given seed.
    """
    atoms = [{"name": f"C{i + 1}", "residue": "MOL", "residue_index": 0, "element": "C"}
             for i in range(n_atoms)]
    return random_flow(zmatrix=chain_zmatrix(n_atoms), n_layers=n_layers,
                       n_components=n_components, hidden=hidden, activation=activation,
                       directions=directions, seed=seed, atoms=atoms,
                       bond_lo=[0.13] * (n_atoms - 1), bond_hi=[0.18] * (n_atoms - 1),
                       **kwargs)


def mixed_element_flow(seed: int = 3, elements: Sequence[str] = ("C", "H", "N", "O", "H", "C")) -> SmoothFlow:
    """A small random flow whose atoms carry different elements (so different masses: what the
    stiffness and velocity Verlet bounds weigh by), with a wall support: 3 layers of 3
    components, hidden (12,)."""
    atoms = [{"name": f"{e}{i}", "element": e, "residue": "MOL", "residue_index": 0} for i, e in enumerate(elements)]
    return random_flow(n_atoms=len(elements), n_layers=3, n_components=3, hidden=(12,), seed=seed, atoms=atoms,
                       support={"policy": "wall", "margin": 0.02, "wall_constant": 500.0})


def unchecked_model_bytes(config: dict, tensors: dict, metadata: Optional[dict] = None) -> bytes:
    """A model file written without the exporter's validation, for bad-input tests: the
    format's metadata around ``config``, ``metadata`` entries replacing or adding keys, and the
    tensors (numpy arrays or torch tensors) as they are."""
    import json

    from safetensors.numpy import save

    from .export import FORMAT, FORMAT_VERSION
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "config": json.dumps(config)}
    meta.update(metadata or {})
    arrays = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
              for k, v in tensors.items()}
    return save({k: np.ascontiguousarray(v) for k, v in arrays.items()}, metadata=meta)


def finite_difference_forces(energy, x: np.ndarray, h: float) -> np.ndarray:
    """-dE/dx of one configuration x ``(N, 3)`` by central differences of ``energy(x) -> float``:
    the outside oracle for forces (truncation error ~ h^2, rounding ~ eps |E| / h)."""
    x = np.asarray(x, dtype=np.float64)
    forces = np.zeros_like(x)
    for a in range(x.shape[0]):
        for c in range(3):
            xp, xm = x.copy(), x.copy()
            xp[a, c] += h
            xm[a, c] -= h
            forces[a, c] = -(energy(xp) - energy(xm)) / (2 * h)
    return forces


def core_force_error(core, x: np.ndarray, h: float) -> float:
    """The largest |F - F_fd| of a C-core model (``smoothflow_core.CoreModel``) at each configuration of
    ``x`` ``(B, N, 3)``, relative to max(1, the largest finite-difference force component) there;
    the worst over the configurations."""
    worst = 0.0
    for xi in np.asarray(x, dtype=np.float64):
        _, f = core.evaluate(xi[None])
        fd = finite_difference_forces(lambda y: core.evaluate(y[None])[0][0], xi, h)
        worst = max(worst, float(np.abs(f[0] - fd).max()) / max(1.0, float(np.abs(fd).max())))
    return worst
