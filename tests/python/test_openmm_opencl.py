"""The OpenCL platform's SmoothFlow kernel (platforms/common, platforms/opencl), run for real on
the first OpenCL device (PoCL on the CPU here and in CI) against the Reference platform: random
models of every transform kind in both layer directions and the shipped alanine-dipeptide flows,
1, 7 and 300 molecules, periodic and not, in double, mixed and single precision; forces against
finite differences of the device's own energy; the wall zone and its count; a serialized System;
atoms reordered by OpenMM under a periodic nonbonded force; errors that name the force and the
System particles as on Reference; NVE energy conservation in mixed precision against Reference's.

Tolerances (docs/gpu-platforms.md), relative to max(1, |E|) and to max(1, the largest force
component): double 1e-9; single and mixed, whose flow runs in float, 5e-5 on the energy and 5e-4
on the forces (measured on PoCL: up to 1.5e-5 and 1.7e-4 on the steep random models, 1.1e-7 and
5.4e-6 on the shipped flows).

PoCL compiles a program in seconds, so the Contexts are made once per module and reused; PoCL
caches compiled programs on disk, and Systems of one model shape share a program."""
import os
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import unit

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / 'models' / 'alanine_dipeptide'
KJ, KJ_NM = unit.kilojoule_per_mole, unit.kilojoule_per_mole / unit.nanometer
TOLERANCE = {'double': (1e-9, 1e-9), 'mixed': (5e-5, 5e-4), 'single': (5e-5, 5e-4)}


def _pluginPath(sf):
    """The OpenCL kernel library: $SMOOTHFLOW_OPENCL_PLUGIN (ctest sets it), the package's folder,
    or the build tree's lib/ beside python/."""
    candidates = [os.environ.get('SMOOTHFLOW_OPENCL_PLUGIN'),
                  os.path.join(sf.pluginDirectory(), 'libSmoothFlowPluginOpenCL.so'),
                  os.path.join(sf.pluginDirectory(), '..', '..', 'lib', 'libSmoothFlowPluginOpenCL.so')]
    for path in candidates:
        if path and os.path.exists(path):
            return os.path.abspath(path)
    return None


@pytest.fixture(scope='module')
def opencl(sf):
    try:
        platform = openmm.Platform.getPlatformByName('OpenCL')
    except Exception:
        pytest.skip('OpenMM has no OpenCL platform here')
    path = _pluginPath(sf)
    if path is None:
        if os.environ.get('SMOOTHFLOW_OPENCL_PLUGIN') is not None or os.environ.get('SMOOTHFLOW_REQUIRE_OPENCL'):
            raise AssertionError('the OpenCL kernel library libSmoothFlowPluginOpenCL.so was not found')
        pytest.skip('this build has no OpenCL kernel library (libSmoothFlowPluginOpenCL.so)')
    openmm.Platform.loadPluginLibrary(path)
    return platform


def _system(sf, path, numMolecules, numAtoms, box=None):
    system = openmm.System()
    for _ in range(numMolecules * numAtoms):
        system.addParticle(12.0)
    force = sf.SmoothFlowForce(str(path))
    for m in range(numMolecules):
        force.addMolecule(list(range(m * numAtoms, (m + 1) * numAtoms)))
    if box is not None:
        system.setDefaultPeriodicBoxVectors(*box)
        force.setUsesPeriodicBoundaryConditions(True)
    system.addForce(force)
    return system


def _context(system, platform, precision=None):
    props = {'Precision': precision} if precision else {}
    return openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform), props)


def _evaluate(context, positions):
    context.setPositions(np.asarray(positions).reshape(-1, 3))
    state = context.getState(getEnergy=True, getForces=True)
    return state.getPotentialEnergy().value_in_unit(KJ), np.asarray(state.getForces(asNumpy=True).value_in_unit(KJ_NM))


def _compare(system, positions, precisions=('double',)):
    reference = _evaluate(_context(system, 'Reference'), positions)
    for precision in precisions:
        found = _evaluate(_context(system, 'OpenCL', precision), positions)
        _assert_close(reference, found, *TOLERANCE[precision], what=precision)
    return reference


def _assert_close(reference, found, rtolEnergy, rtolForce, what=''):
    (er, fr), (e, f) = reference, found
    assert abs(e - er) <= rtolEnergy * max(1.0, abs(er)), (what, e, er, abs(e - er) / max(1.0, abs(er)))
    error = np.abs(f - fr).max() / max(1.0, np.abs(fr).max())
    assert error <= rtolForce, (what, error)


def _random_model(sftorch, tmp_path, transform, directions, seed=3, prior=None):
    flow = sftorch.testing.random_flow(n_atoms=7, n_layers=4, n_components=3, hidden=(12,),
                                       directions=directions, transform=transform, seed=seed, prior=prior,
                                       support={'policy': 'wall', 'margin': 0.02, 'wall_constant': 500.0})
    path = tmp_path / f'{transform}-{directions}.safetensors'
    sftorch.export_model(flow, path)
    return flow, path


def _box(size):
    return [openmm.Vec3(size, 0, 0), openmm.Vec3(0, size, 0), openmm.Vec3(0, 0, size)]


@pytest.mark.parametrize('transform', ['smooth', 'spline', 'affine'])
@pytest.mark.parametrize('directions', ['generative', 'density'])
def test_random_models_match_reference(sf, sftorch, opencl, tmp_path, transform, directions):
    flow, path = _random_model(sftorch, tmp_path, transform, directions)
    x = sftorch.testing.random_positions(flow, 300, seed=5, margin=0.05).numpy()
    for numMolecules in (1, 7, 300):
        _compare(_system(sf, path, numMolecules, 7), x[:numMolecules],
                 ('double', 'mixed', 'single') if numMolecules == 7 else ('double',))
    # Periodic: every molecule's atoms spread over images of a 1.1 nm box.
    periodic = x[:7] + np.random.default_rng(1).integers(-2, 3, size=(7, 7, 3)) * 1.1
    _compare(_system(sf, path, 7, 7, box=_box(1.1)), periodic)


def test_truncated_normal_prior_and_wall_zone(sf, sftorch, opencl, tmp_path):
    """Positions inside the wall zone (u within 2 margins of the support's edge), with a
    truncated-normal prior: the same energies, forces and wall counts as Reference."""
    flow, path = _random_model(sftorch, tmp_path, 'smooth', 'mixed', seed=8, prior='truncated_normal')
    x = sftorch.testing.random_positions(flow, 7, seed=4, margin=0.005).numpy()
    system = _system(sf, path, 7, 7)
    force = sf.SmoothFlowForce(str(path))  # the same model and molecules, held as a SmoothFlowForce
    for m in range(7):
        force.addMolecule(list(range(7 * m, 7 * m + 7)))
    system.removeForce(0)
    system.addForce(force)
    counts = []
    for platform, precision in (('Reference', None), ('OpenCL', 'double')):
        context = _context(system, platform, precision)
        result = _evaluate(context, x)
        counts.append(force.getWallCount(context))
        if platform == 'Reference':
            reference = result
        else:
            _assert_close(reference, result, *TOLERANCE['double'])
    assert counts[0] > 0, 'the positions do not reach the wall zone: the test would not test it'
    assert counts[1] == counts[0]


@pytest.mark.parametrize('kind', ['smooth', 'spline', 'affine'])
def test_shipped_flows_match_reference(sf, opencl, kind):
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions
    x = x[np.arange(300) % len(x)]
    for numMolecules in (1, 7, 300):
        _compare(_system(sf, SHIPPED / f'{kind}.safetensors', numMolecules, 22), x[:numMolecules],
                 ('double', 'mixed', 'single') if numMolecules == 7 else ('double',))
    # Periodic, each molecule shifted by whole boxes: minimum-image displacements on the device.
    shifted = x[:7] + np.arange(7)[:, None, None] * np.array([3.0, -3.0, 6.0])
    _compare(_system(sf, SHIPPED / f'{kind}.safetensors', 7, 22, box=_box(3.0)), shifted)


@pytest.mark.parametrize('precision', ['double', 'mixed'])
def test_forces_are_the_energy_gradient(sf, opencl, precision):
    """Five-point central differences of the device's energy against the device's forces, on the
    shipped smooth flow (C-infinity; the random test models are too steep for differences, and
    the spline is only C1).  Measured: 2.6e-7 (double, h = 1e-4 nm) and 2.2e-3 (mixed, h = 1e-3
    nm, float energies) of the largest force component."""
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions[0]
    context = _context(_system(sf, SHIPPED / 'smooth.safetensors', 1, 22), 'OpenCL', precision)
    _, forces = _evaluate(context, x)
    h = 1e-4 if precision == 'double' else 1e-3

    def energy(atom, c, shift):
        moved = x.copy()
        moved[atom, c] += shift
        return _evaluate(context, moved)[0]

    worst = 0.0
    for atom in range(22):
        for c in range(3):
            derivative = (8 * (energy(atom, c, h) - energy(atom, c, -h))
                          - (energy(atom, c, 2 * h) - energy(atom, c, -2 * h))) / (12 * h)
            worst = max(worst, abs(-derivative - forces[atom, c]))
    scale = max(1.0, np.abs(forces).max())
    assert worst <= (1e-6 if precision == 'double' else 1e-2) * scale, (worst, scale)


def test_float32_weights_match_reference(sf, opencl):
    """SmoothFlowForce.setWeightPrecision(WeightsFloat32): the device applies the same rounded
    weights as the core.  Rounding moves the shipped flow's energy by only ~1e-10 relative, below
    the double tolerance, so the device must match Reference's rounded-weight results 100 times
    closer than those differ from the stored weights' (a device ignoring the option fails)."""
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions[:7]
    system = _system(sf, SHIPPED / 'smooth.safetensors', 7, 22)
    stored = _evaluate(_context(system, 'Reference'), x)
    force = sf.SmoothFlowForce(str(SHIPPED / 'smooth.safetensors'))
    for m in range(7):
        force.addMolecule(list(range(22 * m, 22 * m + 22)))
    force.setWeightPrecision(sf.SmoothFlowForce.WeightsFloat32)
    system.removeForce(0)
    system.addForce(force)
    rounded = _evaluate(_context(system, 'Reference'), x)
    found = _evaluate(_context(system, 'OpenCL', 'double'), x)
    assert abs(found[0] - rounded[0]) <= 0.01 * abs(rounded[0] - stored[0])
    assert np.abs(found[1] - rounded[1]).max() <= 0.01 * np.abs(rounded[1] - stored[1]).max()


def test_serialized_system_gives_the_same_results(sf, opencl):
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions[:7]
    system = _system(sf, SHIPPED / 'smooth.safetensors', 7, 22)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    _assert_close(_evaluate(_context(system, 'OpenCL', 'double'), x), _evaluate(_context(copy, 'OpenCL', 'double'), x),
                  1e-12, 1e-12)


def test_reordered_atoms_in_a_periodic_nonbonded_system(sf, opencl):
    """An ML/MM-like System: 7 flow molecules among argon-like particles under a periodic
    cutoff force, for which OpenMM reorders its atom arrays; after a few steps the flow's
    energy and forces (its own force group) still match Reference at the same positions."""
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions[:7]
    rng = np.random.default_rng(3)
    size = 4.0
    molecules = x - x.mean(axis=1, keepdims=True) + rng.uniform(0.5, size - 0.5, size=(7, 1, 3))
    solvent = rng.uniform(0, size, size=(200, 3))
    positions = np.concatenate([molecules.reshape(-1, 3), solvent])
    system = _system(sf, SHIPPED / 'smooth.safetensors', 7, 22, box=_box(size))
    for _ in range(200):
        system.addParticle(40.0)
    nonbonded = openmm.NonbondedForce()
    nonbonded.setNonbondedMethod(openmm.NonbondedForce.CutoffPeriodic)
    nonbonded.setCutoffDistance(1.0)
    for _ in range(system.getNumParticles()):
        nonbonded.addParticle(0.0, 0.1, 0.001)
    nonbonded.setForceGroup(1)
    system.addForce(nonbonded)
    context = _context(system, 'OpenCL', 'double')
    context.setPositions(positions)
    context.getIntegrator().setStepSize(0.0002)
    context.getIntegrator().step(20)
    moved = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    found = context.getState(getEnergy=True, getForces=True, groups={0})
    reference = _context(system, 'Reference')
    reference.setPositions(moved)
    expected = reference.getState(getEnergy=True, getForces=True, groups={0})
    _assert_close((expected.getPotentialEnergy().value_in_unit(KJ), expected.getForces(asNumpy=True).value_in_unit(KJ_NM)),
                  (found.getPotentialEnergy().value_in_unit(KJ), found.getForces(asNumpy=True).value_in_unit(KJ_NM)),
                  1e-9, 1e-9)


@pytest.mark.parametrize('precision', ['double', 'single'])
def test_nan_positions_name_the_force_and_particles(sf, opencl, precision):
    """The message is the Reference platform's (the C core evaluates the failing molecule again),
    with the molecule and System particles of a later molecule, and the context recovers."""
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions[:3].copy()
    system = _system(sf, SHIPPED / 'smooth.safetensors', 3, 22)
    context = _context(system, 'OpenCL', precision)
    good = _evaluate(context, x)
    bad = x.copy()
    bad[2, 5, 1] = np.nan
    with pytest.raises(openmm.OpenMMException,
                       match=r'SmoothFlowForce: evaluation failed: molecule 2: position of model atom 5 is not '
                             r'finite.*\[System particle 49\]'):
        _evaluate(context, bad)
    again = _evaluate(context, x)
    assert again[0] == good[0] and np.array_equal(again[1], good[1])


def test_forces_only_failure_is_reported_at_the_next_energy(sf, opencl):
    """A step that asks for forces only reads nothing back from the device: a failure there is
    kept and reported by the next evaluation that asks for the energy, then cleared."""
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions[:2].copy()
    context = _context(_system(sf, SHIPPED / 'smooth.safetensors', 2, 22), 'OpenCL', 'double')
    good = _evaluate(context, x)
    bad = x.copy()
    bad[1, 0, 0] = np.inf
    context.setPositions(bad.reshape(-1, 3))
    context.getState(getForces=True)
    context.setPositions(x.reshape(-1, 3))
    with pytest.raises(openmm.OpenMMException,
                       match=r'molecule 1: the double-precision device kernel found a position that is not finite '
                             r'in this evaluation or a forces-only one.*\[System particles 22, 23, .*, 43\]'):
        context.getState(getEnergy=True)
    assert _evaluate(context, x)[0] == good[0]


@pytest.mark.parametrize('dt', [0.5, 1.0])
def test_nve_energy_conservation_in_mixed_precision(sf, opencl, dt):
    """NVE velocity Verlet with the shipped smooth flow as the only force, 0.5 ps from the same
    positions and velocities: the fluctuation ratio std(E_total) / std(E_kinetic) on OpenCL in
    mixed precision is within 1.2x of the Reference platform's (measured 0.94 to 1.01x over
    several starts at 0.5 and 1 fs)."""
    from alanine_dipeptide import data, energy_conservation as ec
    system = ec.flow_system(ec.MODELS / 'smooth.safetensors')
    start = data.load_reference('obc').test.positions[0]
    velocities, ratios = None, {}
    for platform, precision in (('Reference', None), ('OpenCL', 'mixed')):
        context = _context(system, platform, precision)
        integrator = context.getIntegrator()
        integrator.setStepSize(dt * unit.femtoseconds)
        context.setPositions(start)
        if velocities is None:
            context.setVelocitiesToTemperature(300 * unit.kelvin, 100)
            velocities = context.getState(getVelocities=True).getVelocities()
        else:
            context.setVelocities(velocities)
        steps, every, rows = int(round(500 / dt)), 5, []
        for i in range(0, steps + 1, every):
            if i:
                integrator.step(every)
            state = context.getState(getEnergy=True)
            rows.append((state.getPotentialEnergy().value_in_unit(KJ), state.getKineticEnergy().value_in_unit(KJ)))
        energies = np.array(rows)
        ratios[platform] = np.std(energies.sum(axis=1)) / np.std(energies[:, 1])
    assert 0 < ratios['OpenCL'] <= 1.2 * ratios['Reference'], ratios


def test_outside_the_support_names_the_bond(sf, opencl):
    """A bond far outside the support: under the shipped flow's wall policy its energy is finite;
    a model with the error policy fails as on Reference."""
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions[:1].copy()
    system = _system(sf, SHIPPED / 'smooth.safetensors', 1, 22)
    reference = _evaluate(_context(system, 'Reference'), x)
    stretched = x.copy()
    stretched[0, 1] += np.array([0.08, 0.0, 0.0])
    _compare(system, stretched)
    assert np.isfinite(reference[0])
