"""SmoothFlowForce.setWeightPrecision on the OpenMM platforms: the float32 weights of the C
core (docs/c-core.md, "Weight precision") reach the Reference and CPU kernels.  The oracle is
the core's own float32 evaluation through its binding (itself tested against the PyTorch
flow with rounded weights in test_weight_precision.py): equal to 1e-12 on one and on 5
molecules; a Context made before the switch keeps the weights it was made with until
reinitialized; the default is float64; a bad value is refused."""
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import unit

from smoothflow_core import CoreModel
from smoothflow_torch import load_model
from smoothflow_torch.testing import random_positions

MODEL = Path(__file__).resolve().parents[2] / 'models' / 'alanine_dipeptide' / 'smooth.safetensors'
KJ, KJ_NM = unit.kilojoule_per_mole, unit.kilojoule_per_mole / unit.nanometer


def _context(sf, n, platform, precision=None):
    system = openmm.System()
    for _ in range(22 * n):
        system.addParticle(12.0)
    force = sf.SmoothFlowForce(str(MODEL))
    for m in range(n):
        force.addMolecule(list(range(22 * m, 22 * (m + 1))))
    if precision is not None:
        force.setWeightPrecision(precision)
    system.addForce(force)
    props = {'Threads': '2'} if platform == 'CPU' else {}
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform),
                             props)
    return context, force


def _evaluate(context, x):
    context.setPositions(x.reshape(-1, 3))
    state = context.getState(getEnergy=True, getForces=True)
    return state.getPotentialEnergy().value_in_unit(KJ), state.getForces(asNumpy=True).value_in_unit(KJ_NM)


@pytest.mark.parametrize('platform', ['Reference', 'CPU'])
@pytest.mark.parametrize('n', [1, 5])
def test_float32_force_equals_the_core(sf, platform, n):
    x = random_positions(load_model(MODEL), n, seed=31).numpy()
    core = CoreModel.from_file(MODEL, max_batch=n)
    core.weight_precision = 'float32'
    e_core, f_core = core.evaluate(x)
    context, force = _context(sf, n, platform, sf.SmoothFlowForce.WeightsFloat32)
    assert force.getWeightPrecision() == sf.SmoothFlowForce.WeightsFloat32
    e, f = _evaluate(context, x)
    assert abs(e - e_core.sum()) <= 1e-12 * abs(e_core.sum())
    assert np.abs(f - f_core.reshape(-1, 3)).max() <= 1e-11 * np.abs(f_core).max()
    core.weight_precision = 'float64'
    _, f64 = core.evaluate(x)
    # not the stored weights' forces: they differ by far more than the tolerance above
    assert np.abs(f - f64.reshape(-1, 3)).max() > 1e-9 * np.abs(f64).max()


def test_default_and_reinitialize(sf):
    x = random_positions(load_model(MODEL), 1, seed=4).numpy()
    core = CoreModel.from_file(MODEL)
    e64, _ = core.evaluate(x[0])
    context, force = _context(sf, 1, 'Reference')
    assert force.getWeightPrecision() == sf.SmoothFlowForce.WeightsFloat64
    assert _evaluate(context, x)[0] == pytest.approx(e64, rel=1e-13)
    force.setWeightPrecision(sf.SmoothFlowForce.WeightsFloat32)
    assert _evaluate(context, x)[0] == pytest.approx(e64, rel=1e-13)  # this Context keeps its weights
    context.reinitialize()
    core.weight_precision = 'float32'
    e32, _ = core.evaluate(x[0])
    assert _evaluate(context, x)[0] == pytest.approx(e32, rel=1e-13)
    assert e32 != e64


def test_unknown_precision_is_refused(sf):
    force = sf.SmoothFlowForce(str(MODEL))
    with pytest.raises((openmm.OpenMMException, TypeError, ValueError), match='weight precision 5|WeightPrecision'):
        force.setWeightPrecision(5)
    assert force.getWeightPrecision() == sf.SmoothFlowForce.WeightsFloat64
