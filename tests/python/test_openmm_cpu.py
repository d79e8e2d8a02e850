"""The CPU platform's SmoothFlow kernel (platforms/cpu) against the Reference platform's:
random models of every transform kind and direction and the shipped alanine-dipeptide flows,
1, 7 and 300 molecules, 1 and 2 threads, to 1e-12 relative; results that depend on the thread
count only; errors that name the right System particles from any thread's chunk; and a
System that also holds the force field (ML/MM style) gives the sum of the two."""
import os
from pathlib import Path

import numpy as np
import openmm
import pytest
from openmm import unit

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / 'models' / 'alanine_dipeptide'
KJ, KJ_NM = unit.kilojoule_per_mole, unit.kilojoule_per_mole / unit.nanometer


@pytest.fixture(scope='module')
def cpu(sf):
    try:
        platform = openmm.Platform.getPlatformByName('CPU')
    except Exception:
        pytest.skip('OpenMM has no CPU platform here')
    assert os.path.exists(os.path.join(sf.pluginDirectory(), 'libSmoothFlowPluginCPU.so')), \
        'the package has no CPU kernel library'
    return platform


def _system(sf, path, numMolecules, numAtoms, masses=12.0):
    system = openmm.System()
    for _ in range(numMolecules * numAtoms):
        system.addParticle(masses)
    force = sf.SmoothFlowForce(str(path))
    for m in range(numMolecules):
        force.addMolecule(list(range(m * numAtoms, (m + 1) * numAtoms)))
    system.addForce(force)
    return system


def _evaluate(system, platform, positions, threads=None):
    props = {'Threads': str(threads)} if threads else {}
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName(platform),
                             props)
    if threads:
        assert context.getPlatform().getPropertyValue(context, 'Threads') == str(threads)
    context.setPositions(np.asarray(positions).reshape(-1, 3))
    state = context.getState(getEnergy=True, getForces=True)
    e = state.getPotentialEnergy().value_in_unit(KJ)
    f = state.getForces(asNumpy=True).value_in_unit(KJ_NM)
    del context
    return e, np.asarray(f)


def _assert_close(reference, found, rtol=1e-12):
    (er, fr), (e, f) = reference, found
    assert abs(e - er) <= rtol * max(1.0, abs(er)), (e, er)
    assert np.abs(f - fr).max() <= rtol * max(1.0, np.abs(fr).max()), np.abs(f - fr).max()


def _random_model(sftorch, tmp_path, transform, directions, seed):
    flow = sftorch.testing.random_flow(n_atoms=7, n_layers=4, n_components=3, hidden=(12,),
                                       directions=directions, transform=transform, seed=seed,
                                       support={'policy': 'wall', 'margin': 0.02, 'wall_constant': 500.0})
    path = tmp_path / f'{transform}-{directions}.safetensors'
    sftorch.export_model(flow, path)
    return flow, path


@pytest.mark.parametrize('transform', ['smooth', 'spline', 'affine'])
@pytest.mark.parametrize('directions', ['generative', 'density', 'mixed'])
def test_random_models_match_reference(sf, sftorch, cpu, tmp_path, transform, directions):
    flow, path = _random_model(sftorch, tmp_path, transform, directions, seed=3)
    x = sftorch.testing.random_positions(flow, 300, seed=5, margin=0.05).numpy()
    for numMolecules in (1, 7, 300):
        system = _system(sf, path, numMolecules, 7)
        reference = _evaluate(system, 'Reference', x[:numMolecules])
        for threads in (1, 2):
            _assert_close(reference, _evaluate(system, 'CPU', x[:numMolecules], threads))


@pytest.mark.parametrize('kind', ['smooth', 'spline', 'affine'])
def test_shipped_flows_match_reference(sf, cpu, kind):
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions
    x = x[np.arange(300) % len(x)]
    for numMolecules in (1, 7, 300):
        system = _system(sf, SHIPPED / f'{kind}.safetensors', numMolecules, 22)
        reference = _evaluate(system, 'Reference', x[:numMolecules])
        for threads in (1, 2):
            _assert_close(reference, _evaluate(system, 'CPU', x[:numMolecules], threads))


def test_results_depend_on_the_thread_count_only(sf, sftorch, cpu, tmp_path):
    """Each thread's blocks are fixed by the thread count: the same count gives bit-identical
    energies and forces, run after run and step after step."""
    flow, path = _random_model(sftorch, tmp_path, 'smooth', 'mixed', seed=11)
    x = sftorch.testing.random_positions(flow, 31, seed=2).numpy()
    system = _system(sf, path, 31, 7)
    for threads in (1, 2):
        first = _evaluate(system, 'CPU', x, threads)
        for _ in range(3):
            again = _evaluate(system, 'CPU', x, threads)
            assert again[0] == first[0] and np.array_equal(again[1], first[1])


def test_concurrent_blas_calls_give_identical_results(sf, cpu):
    """Two threads call BLAS at the same moment on every step. With a BLAS that is not safe for
    that (Debian's serial OpenBLAS), some of 200 evaluations of 7 shipped-flow molecules came out
    different (4 distinct energies in 300 runs); every one must be bit-identical."""
    from alanine_dipeptide import data
    x = data.load_reference('obc').test.positions[:7]
    system = _system(sf, SHIPPED / 'smooth.safetensors', 7, 22)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('CPU'),
                             {'Threads': '2'})
    context.setPositions(x.reshape(-1, 3))
    energies, forces = set(), set()
    for _ in range(200):
        state = context.getState(getEnergy=True, getForces=True)
        energies.add(state.getPotentialEnergy().value_in_unit(KJ))
        forces.add(np.asarray(state.getForces(asNumpy=True).value_in_unit(KJ_NM)).tobytes())
    assert len(energies) == 1 and len(forces) == 1, sorted(energies)


@pytest.mark.parametrize('threads', [1, 2])
def test_an_error_in_any_chunk_names_its_system_particles(sf, sftorch, cpu, tmp_path, threads):
    """The last of 150 molecules (in the third 64-molecule block of one thread's chunk, or the
    second block of the second thread's) leaves the support under the error policy: the message
    names that molecule and its System particles."""
    flow = sftorch.testing.random_flow(n_atoms=7, n_layers=2, seed=4)
    path = tmp_path / 'error.safetensors'
    sftorch.export_model(flow, path)
    x = sftorch.testing.random_positions(flow, 150, seed=6).numpy()
    a, j = int(flow.zmatrix[1][0]), int(flow.zmatrix[1][1])
    x[149, a] = x[149, j] + 5.0 * (x[149, a] - x[149, j])  # bond of Z-matrix row 1, five times as long
    system = _system(sf, path, 150, 7)
    with pytest.raises(openmm.OpenMMException, match=r'molecule 149: bond 0 .*\[System particles (\d+), (\d+)\]') as e:
        _evaluate(system, 'CPU', x, threads)
    import re
    found = sorted(int(p) for p in re.search(r'System particles (\d+), (\d+)', str(e.value)).groups())
    assert found == sorted([149 * 7 + a, 149 * 7 + j])


def test_ml_mm_system_is_the_sum_of_its_forces(sf, cpu):
    """ff99SB-ILDN (OBC) and the shipped smooth flow in one System on the CPU platform: the
    energy and forces are those of the force field alone plus those of the flow alone."""
    from alanine_dipeptide import data, forcefield
    x = data.load_reference('obc').test.positions[:3]
    ff = forcefield.system('obc')
    flow = sf.SmoothFlowForce(str(SHIPPED / 'smooth.safetensors'))
    flow.addMolecule(list(range(22)))
    both = forcefield.system('obc')
    flow.setForceGroup(30)
    both.addForce(flow)
    for frame in x:
        ff_e, ff_f = _evaluate(ff, 'CPU', frame, threads=2)
        flow_only = _system(sf, SHIPPED / 'smooth.safetensors', 1, 22)
        fl_e, fl_f = _evaluate(flow_only, 'CPU', frame, threads=2)
        e, f = _evaluate(both, 'CPU', frame, threads=2)
        assert e == pytest.approx(ff_e + fl_e, rel=1e-6)  # the force field's CPU sums are single precision
        assert np.abs(f - (ff_f + fl_f)).max() <= 1e-4 * np.abs(ff_f + fl_f).max()
