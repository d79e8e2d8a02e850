"""The C core against the PyTorch reference of the same flow (double precision).

Random models of several shapes (interval and circle dims, K = 1..8, both layer
directions, several depths and activations) are exported by the trainer's exporter and
loaded by the C core through its binding (wrappers/python).  Energies must
agree to 1e-10 relative and forces to 1e-8 (relative to the largest force).
"""
import numpy as np
import pytest
import torch

from flow_comparison import assert_log_density_matches
from smoothflow_core import CoreError, CoreModel, smooth_forward, smooth_inverse
from smoothflow_torch import SmoothConstants, model_to_bytes, smooth_parameters
from smoothflow_torch import smooth_forward as torch_smooth_forward
from smoothflow_torch import smooth_inverse as torch_smooth_inverse
from smoothflow_torch.testing import random_flow, random_positions

torch.set_num_threads(1)

SHAPES = [
    # n_atoms, n_layers, K, hidden, activation, directions
    (4, 1, 1, (), "silu", "generative"),
    (5, 2, 2, (8,), "tanh", "density"),
    (6, 3, 3, (16, 16), "softplus", "mixed"),
    (7, 4, 4, (12, 12), "silu", "mixed"),
    (8, 4, 5, (16,), "tanh", "generative"),
    (9, 6, 6, (16, 16), "silu", "mixed"),
    (6, 2, 7, (10, 10, 10), "softplus", "density"),
    (10, 8, 8, (24, 24), "silu", "mixed"),
]


def _pair(shape, seed, **kwargs):
    n_atoms, n_layers, K, hidden, activation, directions = shape
    flow = random_flow(n_atoms=n_atoms, n_layers=n_layers, n_components=K, hidden=hidden,
                       activation=activation, directions=directions, seed=seed,
                       energy_offset=0.25 * seed, **kwargs)
    return flow, CoreModel.from_bytes(model_to_bytes(flow), max_batch=8)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"N{s[0]}-L{s[1]}-K{s[2]}-{s[4]}-{s[5]}")
def test_energy_and_forces_match_torch(shape):
    flow, core = _pair(shape, seed=shape[0] * 10 + shape[2])
    x = random_positions(flow, 6, seed=3)
    e_torch, f_torch = flow.energy_and_forces(x)
    e_core, f_core = core.evaluate(x.numpy())
    e_torch, f_torch = e_torch.detach().numpy(), f_torch.detach().numpy()
    rel = np.abs(e_core - e_torch) / np.maximum(1.0, np.abs(e_torch))
    assert rel.max() < 1e-10, (e_core, e_torch)
    fscale = np.abs(f_torch).max()
    assert np.abs(f_core - f_torch).max() / fscale < 1e-8


def test_internal_coordinates_match_torch():
    flow, core = _pair(SHAPES[5], seed=4)
    x = random_positions(flow, 1, seed=9)[0]
    u_torch = flow.internal_coordinates(x[None])[0].numpy()
    np.testing.assert_allclose(core.internal_coordinates(x.numpy()), u_torch, rtol=0, atol=1e-13)


def test_log_density_and_gradient_match_torch():
    flow, core = _pair(SHAPES[3], seed=2)
    assert_log_density_matches(flow, core)


def test_wall_policy_matches_torch():
    """Under the wall policy, configurations beyond the bounds agree too."""
    flow, core = _pair(SHAPES[3], seed=5, support={"policy": "wall", "margin": 0.02, "wall_constant": 500.0})
    x = random_positions(flow, 4, seed=1, rigid=False).clone()
    # Stretch the bond of Z-matrix row 1 by different factors, into and past the wall zone.
    a, j = int(flow.zmatrix[1][0]), int(flow.zmatrix[1][1])
    for i, factor in enumerate([1.0, 1.3, 1.6, 2.5]):
        x[i, a] = x[i, j] + factor * (x[i, a] - x[i, j])
    e_torch, f_torch = flow.energy_and_forces(x)
    e_core, f_core = core.evaluate(x.numpy())
    np.testing.assert_allclose(e_core, e_torch.detach().numpy(), rtol=1e-10)
    f_torch = f_torch.detach().numpy()
    assert np.abs(f_core - f_torch).max() / np.abs(f_torch).max() < 1e-8


def test_outside_support_is_an_error_in_both():
    flow, core = _pair(SHAPES[2], seed=6)
    x = random_positions(flow, 1, seed=2, rigid=False).clone()
    a, j = int(flow.zmatrix[1][0]), int(flow.zmatrix[1][1])
    x[0, a] = x[0, j] + 4.0 * (x[0, a] - x[0, j])
    with pytest.raises(CoreError, match="outside the flow's support") as info:
        core.evaluate(x.numpy())
    assert info.value.molecule == 0 and info.value.atoms == (a, j)
    with pytest.raises(ValueError):
        flow.energy(x)


@pytest.mark.parametrize("circular", [False, True])
def test_transform_matches_torch(circular):
    """The one-dimensional smooth transform, both ways: the core's T and T' equal PyTorch's,
    and the core's inverse T^-1(y) equals PyTorch's on a grid of y (the ends included) and
    recovers x from T(x)."""
    gen = torch.Generator().manual_seed(11)
    flag = torch.tensor([circular])
    for K in range(1, 9):
        raw = torch.randn(4 * K + 2, generator=gen, dtype=torch.float64) * 2.0
        params = smooth_parameters(raw[None], K, SmoothConstants(0.01, 0.1, 0.99, 1))
        for x in [0.0, 1e-9, 0.1, 0.37, 0.5, 0.93, 1 - 1e-9]:
            y_c, dy_c, _ = smooth_forward(raw.numpy(), x, circular)
            y_t, dy_t = torch_smooth_forward(torch.tensor([x], dtype=torch.float64), params, flag, 1)
            assert abs(y_c - y_t.item()) < 1e-13
            assert abs(dy_c - dy_t.item()) < 1e-11 * max(1.0, dy_c)
            # T^-1(T(x)) = x: one rounding of y moves x by ulp(y) / T'.
            x_back, it = smooth_inverse(raw.numpy(), y_c, circular)
            assert it >= 0
            gap = abs(x_back - x)
            if circular:
                gap = min(gap, 1 - gap)  # x = 0 and x = 1 are one point of the circle
            assert gap <= 1e-13 + 4e-16 / dy_c, (K, x, x_back)
        for y in [0.0, 1e-12, 0.05, 0.3, 0.5, 0.71, 0.98, 1 - 1e-12, 1.0]:
            x_c, it = smooth_inverse(raw.numpy(), y, circular)
            assert it >= 0 and 0.0 <= x_c <= 1.0, (K, y, x_c)
            x_t, dF = torch_smooth_inverse(torch.tensor([y], dtype=torch.float64), params, flag, 1)
            gap = abs(x_c - x_t.item())
            if circular:
                gap = min(gap, 1 - gap)
            # Both solve F(x) = y to an ulp of y: apart by at most a few ulp(y) / F'.
            assert gap <= 1e-13 + 1e-15 / dF.item(), (K, y, x_c, x_t.item())


def test_files_written_by_the_safetensors_library_load_in_the_c_core(tmp_path):
    """The format is plain safetensors: a file the `safetensors` library writes from numpy
    arrays (float32 here, which the core widens) loads in the C core and gives the energy
    of the same flow."""
    from safetensors import safe_open
    from safetensors.numpy import save_file

    flow, _ = _pair(SHAPES[2], seed=8)
    exported = tmp_path / "exported.safetensors"
    exported.write_bytes(model_to_bytes(flow))
    with safe_open(str(exported), framework="numpy") as f:
        metadata = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}
    rewritten = tmp_path / "rewritten.safetensors"
    save_file({k: v.astype(np.float32) for k, v in tensors.items()}, str(rewritten), metadata=metadata)
    core32 = CoreModel.from_file(rewritten)
    core64 = CoreModel.from_file(exported)
    x = random_positions(flow, 2, seed=4).numpy()
    e32, _ = core32.evaluate(x)
    e64, _ = core64.evaluate(x)
    e_torch = flow.energy(torch.from_numpy(x)).detach().numpy()
    np.testing.assert_allclose(e64, e_torch, rtol=1e-10)
    # float32 weights change the flow slightly; the energy stays close.
    np.testing.assert_allclose(e32, e_torch, rtol=1e-3, atol=0.05)


def test_core_torsion_sign_agrees_with_mdtraj():
    """The C core's torsions (IUPAC sign) equal mdtraj.compute_dihedrals on a non-planar
    configuration: u = (phi + pi) / (2 pi) for every torsion row of the Z-matrix."""
    import mdtraj

    flow, core = _pair(SHAPES[4], seed=12)
    x = random_positions(flow, 1, seed=5)[0].numpy()
    N = flow.n_atoms
    rows = np.array([[int(v) for v in flow.zmatrix[r]] for r in range(3, N)])
    top = mdtraj.Topology()
    residue = top.add_residue("MOL", top.add_chain())
    for i in range(N):
        top.add_atom(f"C{i}", mdtraj.element.carbon, residue)
    phi = mdtraj.compute_dihedrals(mdtraj.Trajectory(x[None], top), rows)[0]
    assert np.ptp(phi) > 1.0, "the configuration must be far from planar"
    u = core.internal_coordinates(x)[2 * N - 3:]
    # mdtraj computes in float32
    np.testing.assert_allclose(np.angle(np.exp(1j * (2 * np.pi * u - np.pi - phi))), 0, atol=1e-5)


def test_deep_well_constants_match_torch_and_invert():
    """The stage-2 alanine constants (c_max = 0.99999: F' down to 1e-5, studies/alanine_dipeptide/design-notes.md): the C
    core still equals PyTorch, and the bracketed Newton inverse still recovers x where F' is
    tiny (raw c~ = 12 pushes c to c_max)."""
    deep = {"s_min": 0.01, "alpha_min": 0.1, "c_max": 0.99999, "beta": 1}
    flow, core = _pair((7, 4, 4, (12, 12), "silu", "mixed"), seed=5, smooth=deep)
    x = random_positions(flow, 6, seed=4)
    e_torch, f_torch = flow.energy_and_forces(x)
    e_core, f_core = core.evaluate(x.numpy())
    np.testing.assert_allclose(e_core, e_torch.detach().numpy(), rtol=1e-10, atol=1e-9)
    f_torch = f_torch.detach().numpy()
    assert np.abs(f_core - f_torch).max() / np.abs(f_torch).max() < 1e-8
    gen = torch.Generator().manual_seed(12)
    constants = (0.01, 0.1, 0.99999, 1)
    for K in (1, 4, 8):
        raw = torch.randn(4 * K + 2, generator=gen, dtype=torch.float64) * 2.0
        raw[4 * K] = 12.0                      # c~: c = c_max * sigmoid(12)
        for xv in [0.0, 1e-7, 0.02, 0.37, 0.5, 0.97, 1 - 1e-7]:
            y, dy, _ = smooth_forward(raw.numpy(), xv, False, constants)
            assert dy >= 1e-5 * (1 - 1e-6)
            if xv == 0.0:   # every window lies inside (0, 1): F'(0) = 1 - c
                assert dy == pytest.approx(1 - 0.99999 / (1 + np.exp(-12.0)), rel=1e-9)
            x_back, it = smooth_inverse(raw.numpy(), y, False, constants)
            assert it >= 0
            # |dx| <= |dy| / F'  and y is exact to ~1 ulp: allow 1e-9 where F' ~ 1e-5
            assert abs(x_back - xv) < 1e-12 + 1e-15 / max(dy, 1e-300) * 10
