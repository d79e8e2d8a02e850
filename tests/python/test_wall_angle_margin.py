"""The angles' own wall margin, support.angle_margin (docs/model-format.md 5.2).

Oracles: the clamp's formula evaluated here in numpy with each dimension's margin (the angle
zone of angle_margin, the bond zone of margin) for what the flow sees; the PyTorch reference for
the C core's energies and forces with angles in the angle zone only; finite differences of the
core's energy for its forces there; the plugin's wall count, which must count an angle between
2 margin and 2 angle_margin and must not without the key.
"""
import copy

import numpy as np
import pytest
import torch

from smoothflow_core import CoreModel
from smoothflow_torch import model_to_bytes
from smoothflow_torch.export import load_model_bytes, validate_config
from smoothflow_torch.testing import core_force_error, random_flow, random_u

from flow_comparison import assert_core_matches_torch

torch.set_num_threads(1)
WALL = {"policy": "wall", "margin": 0.03, "wall_constant": 400.0}
ANGLE_MARGIN = 0.09     # angle zone: u < 0.18 or u > 0.82 (bonds: u < 0.06 or u > 0.94)


def _flow(seed=2, angle_margin=ANGLE_MARGIN):
    flow = random_flow(n_atoms=6, n_layers=3, n_components=3, hidden=(12,), seed=seed, support=dict(WALL))
    n = flow.n_interval
    flow.set_support(**WALL, edge_force_lower=[150.0 + 10 * d for d in range(n)],
                     edge_force_upper=[250.0 - 10 * d for d in range(n)], angle_margin=angle_margin)
    return flow


def _angle_zone_u(flow):
    """One configuration per angle and face, that angle at 0.13 or 0.87: inside the zone of
    angle_margin 0.09, outside that of margin 0.03."""
    base = random_u(flow, 1, seed=6, angle_range=(0.3, 0.7))[0]
    out = []
    for d in range(flow.n_atoms - 1, flow.n_interval):
        for u_d in (0.13, 0.87):
            u = base.clone()
            u[d] = u_d
            out.append(u)
    return torch.stack(out)


def _clamp(u, m):
    low = 2 * m + m * np.tanh((u - 2 * m) / m)
    high = 1 - (2 * m + m * np.tanh((1 - u - 2 * m) / m))
    return np.where(u < 2 * m, low, np.where(u > 1 - 2 * m, high, u))


def test_the_flow_sees_each_kind_clamped_by_its_own_margin():
    flow = _flow()
    u = _angle_zone_u(flow)
    u[:, 0] = 0.045           # a bond in its zone as well
    terms = flow.reduced_terms(flow.to_cartesian(u))
    seen = terms["u_flow"].detach().numpy()
    u = terms["u"].detach().numpy()
    nb, ni = flow.n_atoms - 1, flow.n_interval
    np.testing.assert_allclose(seen[:, :nb], _clamp(u[:, :nb], WALL["margin"]), rtol=0, atol=1e-14)
    np.testing.assert_allclose(seen[:, nb:ni], _clamp(u[:, nb:ni], ANGLE_MARGIN), rtol=0, atol=1e-14)
    # every angle placed at 0.13 / 0.87 is clamped: it would not be with the bonds' margin
    moved = np.abs(seen[:, nb:ni] - u[:, nb:ni]) > 1e-6
    assert moved.sum() >= len(u)


def test_core_matches_torch_with_angles_in_their_zone():
    flow = _flow(seed=5)
    x = flow.to_cartesian(_angle_zone_u(flow)).detach()
    e_core = assert_core_matches_torch(flow, x, energy_rtol=1e-10, force_rel=1e-8)
    # the key matters: with the bonds' margin for the angles the energies differ
    same = copy.deepcopy(flow)
    same.set_support(**WALL, edge_force_lower=flow.edge_force_lower, edge_force_upper=flow.edge_force_upper)
    assert (np.abs(e_core - same.energy(x).detach().numpy()) > 1e-3).all()


def test_core_forces_in_the_angle_zone_are_the_gradient_of_its_energy():
    flow = _flow(seed=7)
    x = flow.to_cartesian(_angle_zone_u(flow)).detach().numpy()[::2]
    core = CoreModel.from_bytes(model_to_bytes(flow), max_batch=1)
    assert core_force_error(core, x, h=1e-6) < 1e-5
    core.close()


def test_the_key_round_trips_and_is_absent_when_equal_to_margin():
    flow = _flow()
    data = model_to_bytes(flow)
    again = load_model_bytes(data)
    assert again.angle_margin == ANGLE_MARGIN and again.margin == WALL["margin"]
    assert validate_config(flow.config())["support"]["angle_margin"] == ANGLE_MARGIN
    plain = _flow(angle_margin=None)
    assert plain.angle_margin == plain.margin
    assert "angle_margin" not in plain.config()["support"]   # older files read and write as before
    with pytest.raises(ValueError, match="angle_margin"):
        flow.set_support(**WALL, angle_margin=0.25)
    with pytest.raises(ValueError, match="angle_margin"):
        flow.set_support(**WALL, angle_margin=0.0)


def test_the_plugin_counts_angles_by_their_own_margin(tmp_path):
    """The wall count (docs/model-format.md 5.2) of the Reference platform: one angle per
    configuration at 0.13 or 0.87 is in the zone of angle_margin 0.09 only."""
    openmm = pytest.importorskip("openmm")
    import openmmsmoothflow as sf

    def count(flow, x):
        path = tmp_path / "m.safetensors"
        path.write_bytes(model_to_bytes(flow))
        system = openmm.System()
        for _ in range(flow.n_atoms):
            system.addParticle(12.0)
        force = sf.SmoothFlowForce(str(path))
        system.addForce(force)
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
        context.setPositions(x)
        context.getState(getEnergy=True)
        return force.getWallCount(context)

    flow = _flow()
    u = _angle_zone_u(flow)
    for ui in u[:2]:
        x = flow.to_cartesian(ui[None]).detach().numpy()[0]
        assert count(flow, x) == 1
        assert count(_flow(angle_margin=None), x) == 0


def test_the_pipeline_refuses_training_angles_inside_the_angle_zone():
    """A training angle in the zone would be learnt clamped: the pipeline names it and the largest
    angle_margin that would do."""
    from smoothflow_torch.pipeline.model import check_angles_outside_wall

    flow = _flow()
    x = flow.to_cartesian(random_u(flow, 5, seed=3, angle_range=(0.25, 0.75))).detach().numpy()
    check_angles_outside_wall(flow, x)                     # zone below 0.18 / above 0.82: none there
    x[0] = flow.to_cartesian(_angle_zone_u(flow)[:1]).detach().numpy()[0]   # one angle at 0.13 (23.4 degrees)
    with pytest.raises(ValueError, match=r"angle .* reaches 23\.4-.* degrees .*support.angle_margin = 0\.09 .*at most 0\.065"):
        check_angles_outside_wall(flow, x)
    flow.set_support("error")
    check_angles_outside_wall(flow, x)                     # no wall, no zone
