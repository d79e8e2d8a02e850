"""The GPU platforms' two ways of evaluating the flow (docs/gpu-platforms.md, "Two paths"): the
fused path (every stage of a molecule in one launch, the conditioners' products as loops) and
the batched path (each stage one launch over all molecules, the products by the platform's BLAS:
CLBlast on OpenCL, cuBLAS on CUDA), chosen by SMOOTHFLOW_DEVICE_PATH = auto | fused | batched.

Run on each GPU platform found as test_device_platforms.py finds them (OpenCL on PoCL here and in
CI; CUDA where there is a GPU), each against the Reference platform: random
models of every transform kind in both layer directions, the shipped smooth flow, periodic and
not, double and float; the automatic choice's timed trial, which evaluates both paths without
committing their forces or wall counts; MD that applies the batched path's forces step after
step; the variable's own errors; bad input named as on Reference. Tolerances as in
test_device_platforms.py: double 1e-9 relative, single and mixed 5e-5 (energy) and 5e-4 (forces)."""
import os
import re
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import unit
from test_device_platforms import GPU_PLATFORMS, REQUIRED, _box, _evaluate, _system, _unavailable

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / 'models' / 'alanine_dipeptide'
KJ, KJ_NM = unit.kilojoule_per_mole, unit.kilojoule_per_mole / unit.nanometer
TOLERANCE = {'double': (1e-9, 1e-9), 'mixed': (5e-5, 5e-4), 'single': (5e-5, 5e-4)}
MIN_BATCHED_MOLECULES = 16  # kMinBatchedMolecules of CommonSmoothFlowKernels.h


@pytest.fixture(params=GPU_PLATFORMS)
def platform(request, sf):
    """Each GPU platform whose SmoothFlow kernel library loads and which has a device (found as in
    test_device_platforms.py); skipped with the reason otherwise, or failed where required."""
    name = request.param
    why = _unavailable(name)
    if why is None:
        system = openmm.System()
        system.addParticle(1.0)
        try:
            openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(name))
        except Exception as e:
            why = f'the {name} platform has no usable device: {e}'
    if why:
        if name in REQUIRED:
            raise AssertionError(why)
        pytest.skip(why)
    return name


@pytest.fixture
def devicePath(monkeypatch):
    """devicePath(value): SMOOTHFLOW_DEVICE_PATH for the Contexts created after the call."""
    return lambda value: monkeypatch.setenv('SMOOTHFLOW_DEVICE_PATH', value)


def _context(system, platform, precision=None):
    props = {'Precision': precision} if precision else {}
    return openmm.Context(system, openmm.VerletIntegrator(0.0005), openmm.Platform.getPlatformByName(platform), props)


def _assert_close(reference, found, precision, what=''):
    (er, fr), (e, f) = reference, found
    rtolEnergy, rtolForce = TOLERANCE[precision]
    assert abs(e - er) <= rtolEnergy * max(1.0, abs(er)), (what, e, er)
    error = np.abs(f - fr).max() / max(1.0, np.abs(fr).max())
    assert error <= rtolForce, (what, error)


def _random_model(sftorch, tmp_path, transform, directions, seed=3, prior=None, hidden=(12,)):
    flow = sftorch.testing.random_flow(n_atoms=7, n_layers=4, n_components=3, hidden=hidden,
                                       directions=directions, transform=transform, seed=seed, prior=prior,
                                       support={'policy': 'wall', 'margin': 0.02, 'wall_constant': 500.0})
    path = tmp_path / f'{transform}-{directions}-{len(hidden)}.safetensors'
    sftorch.export_model(flow, path)
    return flow, path


@pytest.mark.parametrize('transform', ['smooth', 'spline', 'affine'])
@pytest.mark.parametrize('directions', ['generative', 'density'])
def test_batched_path_matches_reference(sf, sftorch, platform, devicePath, tmp_path, transform, directions):
    """Two hidden layers, so the reverse pass goes through both gradient buffers (ga, gb) and an
    activation's derivative between products: 1, 7 and 40 molecules in double. In float, the
    one-hidden-layer model of test_device_platforms.py (the two-layer one's energy cancels too
    much for float: 2e-4 relative on both paths alike)."""
    flow, path = _random_model(sftorch, tmp_path, transform, directions, hidden=(12, 9))
    x = sftorch.testing.random_positions(flow, 40, seed=5, margin=0.05).numpy()
    devicePath('batched')
    for n in (1, 7, 40):
        system, _ = _system(sf, path, n, 7)
        _assert_close(_evaluate(_context(system, 'Reference'), x[:n]),
                      _evaluate(_context(system, platform, 'double'), x[:n]), 'double', n)
    flow, path = _random_model(sftorch, tmp_path, transform, directions)
    x = sftorch.testing.random_positions(flow, 7, seed=5, margin=0.05).numpy()
    system, _ = _system(sf, path, 7, 7)
    _assert_close(_evaluate(_context(system, 'Reference'), x),
                  _evaluate(_context(system, platform, 'single'), x), 'single')
    periodic = x[:7] + np.random.default_rng(1).integers(-2, 3, size=(7, 7, 3)) * 1.1
    system, _ = _system(sf, path, 7, 7, box=_box(1.1))
    _assert_close(_evaluate(_context(system, 'Reference'), periodic),
                  _evaluate(_context(system, platform, 'double'), periodic), 'double', 'periodic')


@pytest.mark.parametrize('precision', ['double', 'mixed'])
def test_batched_path_shipped_smooth_flow(sf, platform, devicePath, precision):
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions[:24]
    system, _ = _system(sf, SHIPPED / 'smooth.safetensors', 24, 22)
    reference = _evaluate(_context(system, 'Reference'), x)
    devicePath('batched')
    _assert_close(reference, _evaluate(_context(system, platform, precision), x), precision)


def test_automatic_choice_trial_commits_nothing(sf, sftorch, platform, devicePath, tmp_path, capfd):
    """At the first force evaluation `auto` times both paths on the current positions. Those trial
    runs must add neither forces nor wall counts: with positions in the wall zone the device's
    forces and wall count must still equal Reference's after the trial (a trial that committed
    would add its forces and counts six times over)."""
    flow, path = _random_model(sftorch, tmp_path, 'smooth', 'mixed', seed=8, prior='truncated_normal')
    n = MIN_BATCHED_MOLECULES
    x = sftorch.testing.random_positions(flow, n, seed=4, margin=0.005).numpy()
    system, force = _system(sf, path, n, 7)
    context = _context(system, 'Reference')
    reference = _evaluate(context, x)
    referenceWalls = force.getWallCount(context)
    assert referenceWalls > 0, 'the positions do not reach the wall zone: the test would not test the counts'
    devicePath('auto')
    os.environ['SMOOTHFLOW_VERBOSE'] = '1'
    try:
        context = _context(system, platform, 'double')
        found = _evaluate(context, x)
    finally:
        del os.environ['SMOOTHFLOW_VERBOSE']
    report = capfd.readouterr().err
    blas = 'CLBlast' if platform == 'OpenCL' else r'cuBLAS[ \d]*'
    match = re.search(rf'SmoothFlowForce on {platform}, {n} molecules: fused ([\d.e+-]+) ms, batched \({blas}\) '
                      r'([\d.e+-]+) ms per evaluation with forces: (fused|batched)', report)
    assert match, report
    fused, batched, chosen = float(match[1]), float(match[2]), match[3]
    assert chosen == ('batched' if batched < fused else 'fused')
    _assert_close(reference, found, 'double')
    assert force.getWallCount(context) == referenceWalls


def test_below_the_threshold_auto_takes_no_trial(sf, platform, devicePath, capfd):
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions[:2]
    system, _ = _system(sf, SHIPPED / 'smooth.safetensors', 2, 22)
    devicePath('auto')
    os.environ['SMOOTHFLOW_VERBOSE'] = '1'
    try:
        _evaluate(_context(system, platform, 'double'), x)
    finally:
        del os.environ['SMOOTHFLOW_VERBOSE']
    assert f'SmoothFlowForce on {platform}' not in capfd.readouterr().err


def test_batched_md_follows_the_fused_trajectory(sf, platform, devicePath):
    """Velocity Verlet for 40 steps (the batched path's forces applied at every step) from the
    same state: the two paths' trajectories agree to rounding in double."""
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions[:20]
    system, _ = _system(sf, SHIPPED / 'smooth.safetensors', 20, 22)
    for i in range(system.getNumParticles()):
        system.setParticleMass(i, 12.0)
    final = {}
    for choice in ('fused', 'batched'):
        devicePath(choice)
        context = _context(system, platform, 'double')
        context.setPositions(x.reshape(-1, 3))
        context.setVelocitiesToTemperature(300, 7)
        context.getIntegrator().step(40)
        state = context.getState(getPositions=True, getEnergy=True)
        final[choice] = (np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)),
                         state.getPotentialEnergy().value_in_unit(KJ))
    moved = np.abs(final['fused'][0] - x.reshape(-1, 3)).max()
    assert moved > 1e-3, 'the atoms did not move: the test would not test the forces'
    assert np.abs(final['batched'][0] - final['fused'][0]).max() < 1e-9
    assert abs(final['batched'][1] - final['fused'][1]) < 1e-9 * abs(final['fused'][1])


def test_path_variable_is_checked(sf, platform, devicePath):
    from alanine_dipeptide import data
    system, _ = _system(sf, SHIPPED / 'smooth.safetensors', 1, 22)
    devicePath('fastest')
    with pytest.raises(openmm.OpenMMException, match="SMOOTHFLOW_DEVICE_PATH is 'fastest'; it must be auto, fused or batched"):
        _context(system, platform, 'double')
    devicePath('fused')
    _evaluate(_context(system, platform, 'double'), data.load_reference('obc').test.positions[:1])


def test_batched_path_names_bad_input_as_reference_does(sf, platform, devicePath):
    """A NaN position in molecule 5 of 20: the same message as on Reference (the molecule, its
    model atoms and System particles), and the Context goes on once the positions are fixed."""
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions[:20].copy()
    system, _ = _system(sf, SHIPPED / 'smooth.safetensors', 20, 22)
    bad = x.copy()
    bad[5, 3, 1] = np.nan
    with pytest.raises(openmm.OpenMMException) as expected:
        _evaluate(_context(system, 'Reference'), bad)
    devicePath('batched')
    context = _context(system, platform, 'double')
    with pytest.raises(openmm.OpenMMException) as found:
        _evaluate(context, bad)
    assert str(found.value) == str(expected.value)
    assert 'molecule 5' in str(found.value) and 'System particle 113' in str(found.value)
    _assert_close(_evaluate(_context(system, 'Reference'), x), _evaluate(context, x), 'double')
