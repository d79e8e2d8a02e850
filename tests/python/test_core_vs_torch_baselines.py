"""The C core against the PyTorch reference for the baseline transforms (double precision).

Random spline, affine and mixed-kind flows (docs/model-format.md section 7) of several
shapes and both layer directions are exported by the trainer's exporter and loaded by the
C core through its binding (wrappers/python).  Energies must agree to 1e-10
relative and forces to 1e-8 (relative to the largest force), as for the smooth transform
(test_core_vs_torch.py).  The one-dimensional transforms are compared directly too,
through the core's public sf_spline_* / sf_affine_* functions (the binding's
spline_* / affine_*).
"""
import json
import math

import numpy as np
import pytest
import torch

from flow_comparison import assert_log_density_matches
import smoothflow_core as core
from smoothflow_core import CoreError, CoreModel
from smoothflow_torch import (AffineConstants, SplineConstants, affine_forward, affine_inverse,
                              affine_parameters, model_to_bytes, spline_forward, spline_inverse,
                              spline_parameters)
from smoothflow_torch.testing import random_flow, random_positions

torch.set_num_threads(1)

SF_ERR_SUPPORT = 9  # sf_status in core/include/smoothflow.h

MIXED = ("smooth", "spline", "affine")

SHAPES = [
    # n_atoms, n_layers, K, hidden, activation, directions, transform
    (4, 1, 1, (), "silu", "generative", "spline"),
    (5, 2, 3, (8,), "tanh", "density", "spline"),
    (6, 3, 2, (16, 16), "softplus", "mixed", "spline"),
    (7, 4, 5, (12, 12), "silu", "generative", "spline"),
    (9, 6, 8, (16, 16), "tanh", "mixed", "spline"),
    (4, 1, 1, (), "tanh", "generative", "affine"),
    (5, 2, 1, (8,), "silu", "density", "affine"),
    (7, 4, 1, (12, 12), "softplus", "mixed", "affine"),
    (9, 6, 1, (16, 16), "silu", "generative", "affine"),
    (6, 3, 4, (16,), "silu", "mixed", MIXED),
    (8, 6, 6, (16, 16), "tanh", "generative", MIXED * 2),
    (10, 6, 7, (24, 24), "softplus", "density", ("spline", "affine") * 3),
    (10, 8, 8, (24, 24), "silu", "mixed", ("affine", "spline", "smooth", "spline") * 2),
]


def _name(shape):
    n, L, K, _, act, directions, transform = shape
    kinds = transform if isinstance(transform, str) else "+".join(dict.fromkeys(transform))
    return f"N{n}-L{L}-K{K}-{act}-{directions}-{kinds}"


def _pair(shape, seed, **kwargs):
    n_atoms, n_layers, K, hidden, activation, directions, transform = shape
    if not isinstance(transform, str):
        transform = list(transform)
    flow = random_flow(n_atoms=n_atoms, n_layers=n_layers, n_components=K, hidden=hidden,
                       activation=activation, directions=directions, seed=seed,
                       energy_offset=0.25 * seed, transform=transform, **kwargs)
    return flow, CoreModel.from_bytes(model_to_bytes(flow), max_batch=8)


def _compare(flow, core, x):
    e_torch, f_torch = flow.energy_and_forces(x)
    e_core, f_core = core.evaluate(x.numpy())
    e_torch, f_torch = e_torch.detach().numpy(), f_torch.detach().numpy()
    assert np.all(np.isfinite(e_torch)) and np.all(np.isfinite(f_torch))
    e_rel = (np.abs(e_core - e_torch) / np.maximum(1.0, np.abs(e_torch))).max()
    f_rel = np.abs(f_core - f_torch).max() / np.abs(f_torch).max()
    return e_rel, f_rel


@pytest.mark.parametrize("shape", SHAPES, ids=_name)
def test_energy_and_forces_match_torch(shape):
    flow, core = _pair(shape, seed=shape[0] * 10 + shape[2])
    e_rel, f_rel = _compare(flow, core, random_positions(flow, 6, seed=3))
    assert e_rel < 1e-10, e_rel
    assert f_rel < 1e-8, f_rel


@pytest.mark.parametrize("transform", ["spline", "affine"])
def test_non_default_constants_match_torch(transform):
    """The config's spline / affine constants are read, not assumed."""
    constants = {"spline": {"min_bin_width": 0.02, "min_bin_height": 0.05, "min_derivative": 0.1},
                 "affine": {"scale_max": 1.5}}
    flow, core = _pair((7, 4, 6, (12,), "silu", "mixed", transform), seed=21,
                       **{transform: constants[transform]})
    assert json.loads(core.config_json)[transform] == pytest.approx(constants[transform])
    e_rel, f_rel = _compare(flow, core, random_positions(flow, 4, seed=8))
    assert e_rel < 1e-10 and f_rel < 1e-8, (e_rel, f_rel)


@pytest.mark.parametrize("transform", ["spline", "affine", "mixed"])
def test_log_density_and_gradient_match_torch(transform):
    kinds = list(MIXED) * 2 if transform == "mixed" else transform
    flow, core = _pair((7, 6, 5, (12, 12), "silu", "mixed", kinds), seed=2)
    assert_log_density_matches(flow, core)


def test_batch_equals_single_calls():
    """A batch gives each molecule's single-call energy and forces.  The batch runs the
    conditioners as matrix-matrix products, which may sum in another order (blocking,
    threads): equal to rounding, 1e-12 relative, not bit for bit.  And each molecule's
    own energy, not a neighbour's: the five differ by far more than that."""
    flow, core = _pair(SHAPES[-1], seed=4)
    x = random_positions(flow, 5, seed=6).numpy()
    e, f = core.evaluate(x)
    assert np.min(np.abs(np.diff(np.sort(e)))) > 1e-6 * np.abs(e).max()
    for b in range(5):
        e1, f1 = core.evaluate(x[b])
        assert abs(e1 - e[b]) <= 1e-12 * max(1.0, abs(e1))
        assert np.abs(f1 - f[b]).max() <= 1e-12 * max(1.0, np.abs(f1).max())


def test_affine_face_is_outside_the_support_in_both():
    """u exactly 0 or 1 on a dimension an affine layer transforms: the core refuses with
    SF_ERR_SUPPORT naming the dimension; the trainer gives no finite density."""
    flow, core = _pair((6, 2, 1, (8,), "silu", "density", "affine"), seed=5)
    last = flow.layers[-1]  # the first layer of the density pass
    d = int(last.transformed[0])
    D = 3 * flow.n_atoms - 6
    for face in (0.0, 1.0):
        u = np.full(D, 0.5)
        u[d] = face
        with pytest.raises(CoreError, match=f"dimension {d}.*affine") as info:
            core.log_density(u)
        assert info.value.code == SF_ERR_SUPPORT
        lp = flow.log_prob_u(torch.from_numpy(u)[None])[0].item()
        assert not math.isfinite(lp) or lp < -1e300


# ------------------------------------------------- one-dimensional transforms

@pytest.mark.parametrize("circular", [False, True])
def test_spline_transform_matches_torch(circular):
    constants = SplineConstants(1e-3, 2e-3, 1e-3)
    c = (1e-3, 2e-3, 1e-3)
    gen = torch.Generator().manual_seed(13)
    for K in range(1, 9):
        raw = torch.randn(3 * K + 2, generator=gen, dtype=torch.float64) * 1.5
        params = spline_parameters(raw[None], K, constants, torch.tensor([circular]))
        raw_np = raw.numpy()
        for x in [0.0, 1e-9, 0.1, 0.37, 0.5, 0.93, 1 - 1e-9, 1.0]:
            y, dy, _ = core.spline_forward(raw_np, x, circular, c)
            y_t, logd_t = spline_forward(torch.tensor([x], dtype=torch.float64), params,
                                         torch.tensor([circular]))
            dist = abs(y - y_t.item())
            assert min(dist, 1 - dist) < 1e-13, (K, x)
            assert abs(math.log(dy) - logd_t.item()) < 1e-11, (K, x)
            xb = core.spline_inverse(raw_np, y, circular, c)
            x_t, _ = spline_inverse(torch.tensor([y], dtype=torch.float64), params,
                                    torch.tensor([circular]))
            dist = abs(xb - x_t.item())
            assert min(dist, 1 - dist) < 1e-12 * max(1.0, 1 / dy), (K, x)


def test_affine_transform_matches_torch():
    gen = torch.Generator().manual_seed(17)
    for _ in range(20):
        raw = torch.randn(2, generator=gen, dtype=torch.float64) * 2.0
        s, t = affine_parameters(raw, AffineConstants(3.0))
        raw_np = raw.numpy()
        for x in [1e-12, 1e-3, 0.2, 0.5, 0.77, 1 - 1e-6]:
            y, dy, _ = core.affine_forward(raw_np, x, 3.0)
            y_t, logd_t = affine_forward(torch.tensor(x, dtype=torch.float64), s, t)
            assert abs(y - y_t.item()) <= 1e-15 + 1e-13 * y_t.item()
            assert abs(math.log(dy) - logd_t.item()) < 1e-11
            if 0 < y < 1:
                xb = core.affine_inverse(raw_np, y, 3.0)
                x_t, _ = affine_inverse(torch.tensor(y, dtype=torch.float64), s, t)
                assert abs(xb - x_t.item()) <= 1e-13 * x_t.item() * (1 - x_t.item()) * 40
        for face in (0.0, 1.0):
            with pytest.raises(ValueError, match="outside the affine transform's support"):
                core.affine_forward(raw_np, face, 3.0)
