"""The wall's edge forces (docs/model-format.md 5.2, smoothflow_torch.edge_force).

Oracles: finite differences of the flow's Cartesian energy for the measured edge force; the
PyTorch reference for the C core's energies and forces in the wall zone (both sides, bonds and
angles), and finite differences of the core's energy for its forces there; the shipped smooth
flow's restoring force along each coordinate through the zone, which without edge forces falls to
a few per cent of its value at the zone's edge (the defect the term removes).
"""
import copy
import os

import numpy as np
import pytest
import torch

from smoothflow_core import CoreModel
from smoothflow_torch import model_to_bytes
from smoothflow_torch.edge_force import edge_forces, edge_gradients, set_edge_forces
from smoothflow_torch.export import load_model, validate_config
from smoothflow_torch.flow import wall_clamp
from smoothflow_torch.testing import core_force_error, random_flow, random_u

from flow_comparison import assert_core_matches_torch

torch.set_num_threads(1)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WALL = {"policy": "wall", "margin": 0.03, "wall_constant": 400.0}


def _flow(seed=2, **kw):
    return random_flow(n_atoms=6, n_layers=3, n_components=3, hidden=(12,), seed=seed, support=dict(WALL), **kw)


def _energy_at(flow, u):
    return flow.energy(flow.to_cartesian(u)).detach()


def test_edge_gradient_is_the_flows_derivative_at_the_edge():
    flow = _flow()
    u = random_u(flow, 3, seed=4)
    lo, hi = edge_gradients(flow, flow.to_cartesian(u))
    m, h = flow.margin, 1e-6
    for d in range(flow.n_interval):
        for edge, g in ((2 * m, lo), (1 - 2 * m, hi)):
            up, dn = u.clone(), u.clone()
            up[:, d], dn[:, d] = edge + h, edge - h
            fd = (_energy_at(flow, up) - _energy_at(flow, dn)) / (2 * h)
            np.testing.assert_allclose(g[:, d].numpy(), fd.numpy(), rtol=1e-5, atol=1e-4 * float(fd.abs().max()))


def test_edge_forces_are_the_median_restoring_force_and_never_negative():
    flow = _flow(seed=3)
    x = flow.to_cartesian(random_u(flow, 7, seed=1))
    lo, hi = edge_gradients(flow, x)
    lower, upper = edge_forces(flow, x.numpy())
    np.testing.assert_allclose(lower, np.maximum(0, np.median(-lo.numpy(), axis=0)), rtol=1e-12)
    np.testing.assert_allclose(upper, np.maximum(0, np.median(hi.numpy(), axis=0)), rtol=1e-12)
    assert lower.shape == upper.shape == (flow.n_interval,)


def _zone_configurations(flow):
    """Configurations with one bond or angle in the wall zone each: below the join (lower
    face) and above it (upper), at two depths; angles stop short of collinear."""
    base = random_u(flow, 1, seed=6)[0]
    m, N = flow.margin, flow.n_atoms
    out = []
    for d in range(flow.n_interval):
        depths = (0.5 * m, -0.5 * m) if d < N - 1 else (0.5 * m, 0.2 * m)
        for u_d in depths + tuple(1 - v for v in depths):
            u = base.clone()
            u[d] = u_d
            out.append(u)
    return flow.to_cartesian(torch.stack(out)).detach()


def test_core_matches_torch_in_the_zone_with_edge_forces():
    flow = _flow(seed=5)
    g = torch.Generator().manual_seed(9)
    lower = 50 + 500 * torch.rand(flow.n_interval, generator=g, dtype=torch.float64)
    upper = 50 + 500 * torch.rand(flow.n_interval, generator=g, dtype=torch.float64)
    flow.set_support(**WALL, edge_force_lower=lower, edge_force_upper=upper)
    bare = copy.deepcopy(flow)
    bare.set_support(**WALL)
    x = _zone_configurations(flow)
    e_core = assert_core_matches_torch(flow, x, energy_rtol=1e-10, force_rel=1e-8)
    # the term is there: every configuration's energy exceeds the plain wall's
    assert (e_core - bare.energy(x).detach().numpy() > 1e-3).all()


def test_core_forces_in_the_zone_are_the_gradient_of_its_energy():
    flow = _flow(seed=7)
    flow.set_support(**WALL, edge_force_lower=[300.0] * flow.n_interval, edge_force_upper=[200.0] * flow.n_interval)
    x = _zone_configurations(flow)[::3].numpy()
    core = CoreModel.from_bytes(model_to_bytes(flow), max_batch=1)
    # the zone near a collinear angle is steep: the truncation error goes as h^2, so h = 1e-7 nm;
    # measured: at most 5e-5 of the largest force (a force of 1.7e5 kJ/mol/nm); 1e-6 nm gives 5e-3
    assert core_force_error(core, x, h=1e-7) < 1e-4
    core.close()


def test_set_support_refuses_bad_edge_forces():
    flow = _flow()
    n = flow.n_interval
    with pytest.raises(ValueError, match="both"):
        flow.set_support(**WALL, edge_force_lower=[1.0] * n)
    with pytest.raises(ValueError, match="only under the wall"):
        flow.set_support("error", edge_force_lower=[1.0] * n, edge_force_upper=[1.0] * n)
    with pytest.raises(ValueError, match=f"{n} values"):
        flow.set_support(**WALL, edge_force_lower=[1.0] * (n - 1), edge_force_upper=[1.0] * (n - 1))
    with pytest.raises(ValueError, match=r"\[0, 1e12\]"):
        flow.set_support(**WALL, edge_force_lower=[-1.0] * n, edge_force_upper=[1.0] * n)
    flow.set_support(**WALL, edge_force_lower=[1.0] * n, edge_force_upper=[2.0] * n)
    cfg = flow.config()
    assert validate_config(cfg)["support"]["edge_force_upper"] == [2.0] * n
    # a round trip through the file keeps them
    from smoothflow_torch.export import load_model_bytes
    again = load_model_bytes(model_to_bytes(flow))
    assert again.edge_force_lower.tolist() == [1.0] * n and again.edge_force_upper.tolist() == [2.0] * n


@pytest.fixture(scope="module")
def shipped():
    flow = load_model(os.path.join(ROOT, "models", "alanine_dipeptide", "smooth.safetensors"))
    with torch.no_grad():
        u = flow.sample_u(8, generator=torch.Generator().manual_seed(1))[0]
    bare = copy.deepcopy(flow)
    bare.set_support("wall", flow.margin, flow.wall_constant, angle_margin=flow.angle_margin)
    walled = copy.deepcopy(bare)
    set_edge_forces(walled, flow.to_cartesian(u).detach().numpy())
    return bare, walled, u


@pytest.mark.parametrize("d", [0, 4, 9, 14, 20, 24, 30, 38])
def test_restoring_force_holds_through_the_zone(shipped, d):
    """Along coordinate d from the zone's edge outwards, the shipped flow's restoring force with
    edge forces never falls below the smaller of g and the flow's own restoring force at the point
    it sees (f'(c) c' + g (1 - c') + the harmonic term: the construction's promise); without them
    it falls below 15 % of g on both faces (bonds, margin 0.01) or 30 % on at least one face
    (angles, margin 0.1: the harmonic term grows sooner in the wider zone, and over the quarter
    margin tested one face can hold on its own: the shipped flow's angle 30 keeps 71 % of g at
    its upper face)."""
    bare, walled, u = shipped
    bond = d < walled.n_atoms - 1
    m = walled.margin if bond else walled.angle_margin     # the shipped angles' zone: 0.1
    bare_min = []
    for side, sign in (("lower", -1.0), ("upper", 1.0)):
        end = -m if bond else 0.25 * m
        us = torch.linspace(2 * m, end, 121, dtype=torch.float64)
        us = us if side == "lower" else 1 - us
        v = u[0].repeat(len(us), 1)
        v[:, d] = us
        x = walled.to_cartesian(v).detach()
        g = float((walled.edge_force_lower if side == "lower" else walled.edge_force_upper)[d])
        assert g > 0
        restoring = {}
        for name, flow in (("bare", bare), ("walled", walled)):
            dE_du = np.gradient(flow.energy(x).detach().numpy(), us.numpy())
            # towards the inside: -dE/du at the lower face, +dE/du at the upper one
            restoring[name] = sign * dE_du
        # the flow's own restoring force at the clamped point c(u) it sees
        seen = v.clone()
        seen[:, d] = wall_clamp(us, m)
        seen.requires_grad_(True)
        (grad,) = torch.autograd.grad(walled.energy_of_u(seen).sum(), seen)
        own = sign * grad[:, d].numpy()
        floor = np.minimum(g, own)
        assert (restoring["walled"] >= floor - 0.02 * g).all(), (side, (restoring["walled"] - floor).min(), g)
        assert restoring["walled"].min() > 0.3 * g, (side, restoring["walled"].min(), g)
        bare_min.append(restoring["bare"].min() / g)
    assert (max(bare_min) if bond else min(bare_min)) < (0.15 if bond else 0.3), bare_min


def test_command_line_adds_edge_forces_and_refuses_bad_input(tmp_path, capsys):
    from smoothflow_torch.edge_force import main
    from smoothflow_torch.export import export_model, read_model_bytes, read_model_file
    flow = _flow(seed=4)
    model = tmp_path / "m.safetensors"
    export_model(flow, model, extra_metadata={"training": "{}"})
    x = flow.to_cartesian(random_u(flow, 5, seed=2)).detach().numpy()
    np.savez(tmp_path / "frames.npz", positions=x, other=x[:, :3])
    assert main([str(model), str(tmp_path / "frames.npz"), "--out", str(tmp_path / "e.safetensors")]) == 0
    config, metadata, _ = read_model_bytes(read_model_file(tmp_path / "e.safetensors"))
    lower, upper = edge_forces(flow, x)
    assert config["support"]["edge_force_lower"] == pytest.approx(lower.tolist(), rel=1e-12)
    assert config["support"]["edge_force_upper"] == pytest.approx(upper.tolist(), rel=1e-12)
    assert metadata["training"] == "{}" and '"frames": 5' in metadata["edge_forces"]
    # --angle-margin moves the angles' edges first: their forces are measured there
    assert main([str(model), str(tmp_path / "frames.npz"), "--angle-margin", "0.08",
                 "--out", str(tmp_path / "a.safetensors")]) == 0
    config, _, _ = read_model_bytes(read_model_file(tmp_path / "a.safetensors"))
    moved = copy.deepcopy(flow)
    moved.set_support(**WALL, angle_margin=0.08)
    lower, upper = edge_forces(moved, x)
    assert config["support"]["angle_margin"] == 0.08
    assert config["support"]["edge_force_lower"] == pytest.approx(lower.tolist(), rel=1e-12)
    assert config["support"]["edge_force_upper"] == pytest.approx(upper.tolist(), rel=1e-12)
    # measured at the moved edges: the angles' raw gradients differ there, the bonds' do not
    n_bonds = flow.n_atoms - 1
    for a, b in zip(edge_gradients(moved, x), edge_gradients(flow, x)):
        assert torch.equal(a[:, :n_bonds], b[:, :n_bonds])
        assert (a[:, n_bonds:] - b[:, n_bonds:]).abs().max() > 1.0
    # wrong atoms, a missing array, the error policy: a clear message, no file written
    for argv, needle in (([str(tmp_path / "frames.npz"), "--key", "other"], "model atom order"),
                         ([str(tmp_path / "frames.npz"), "--key", "nope"], "has no array 'nope'")):
        with pytest.raises(SystemExit):
            main([str(model)] + argv + ["--out", str(tmp_path / "bad.safetensors")])
        assert needle in capsys.readouterr().err
    flow.set_support("error")
    export_model(flow, tmp_path / "error.safetensors")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "error.safetensors"), str(tmp_path / "frames.npz")])
    assert "only under the wall policy" in capsys.readouterr().err
    assert not (tmp_path / "bad.safetensors").exists()
