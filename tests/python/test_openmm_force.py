"""SmoothFlowForce in OpenMM Contexts: energies and forces against PyTorch,
the Python interface (OpenMM interoperability, casts, getters), several
molecules, force groups, periodic boxes and the wall count."""
import os
import pathlib
import subprocess
import sys

import numpy as np
import openmm
import pytest

PLATFORMS = ['Reference', 'CPU']


def assertForcesClose(expected, found, rtol=1e-8):
    """Forces agree to rtol relative to the largest force (components near zero are not special)."""
    expected, found = np.asarray(expected), np.asarray(found)
    scale = max(1.0, np.abs(expected).max())
    assert np.abs(found - expected).max() <= rtol * scale, np.abs(found - expected).max() / scale


@pytest.mark.parametrize('platform', PLATFORMS)
@pytest.mark.parametrize('model', ['tiny', 'wall', 'von_mises'])
def test_fixture_energies_match_pytorch(sf, fixtures, makeContext, evaluate, model, platform):
    ref = fixtures[model]
    context = makeContext(sf.SmoothFlowForce(ref['path']), ref['n_atoms'], platform)
    for x, energy, forces in zip(ref['positions'], ref['energies'], ref['forces']):
        e, f = evaluate(context, x)
        assert e == pytest.approx(energy, rel=1e-10)
        assertForcesClose(forces, f)


@pytest.mark.parametrize('platform', PLATFORMS)
def test_random_exported_model_matches_pytorch(sf, sftorch, tmp_path, makeContext, evaluate, platform):
    flow = sftorch.testing.random_flow(n_atoms=7, n_layers=3, n_components=3, hidden=(10,),
                                       directions='mixed', seed=17)
    path = tmp_path / 'random.safetensors'
    sftorch.export_model(flow, path)
    x = sftorch.testing.random_positions(flow, 3, seed=4, margin=0.1)
    energies, forces = flow.energy_and_forces(x)
    energies, forces = energies.detach().numpy(), forces.detach().numpy()

    # One molecule at a time...
    context = makeContext(sf.SmoothFlowForce(path), 7, platform)
    for b in range(3):
        e, f = evaluate(context, x[b].numpy())
        assert e == pytest.approx(energies[b], rel=1e-10)
        assertForcesClose(forces[b], f)

    # ...and the three as one batch, interleaved with the particles reversed.
    force = sf.SmoothFlowForce.createFromBytes(path.read_bytes())
    positions = np.zeros((21, 3))
    for b in range(3):
        particles = [20 - (3 * a + b) for a in range(7)]
        force.addMolecule(particles)
        positions[particles] = x[b].numpy() + 2.0 * b
    context = makeContext(force, 21, platform)
    e, f = evaluate(context, positions)
    assert e == pytest.approx(energies.sum(), rel=1e-10)
    for b in range(3):
        assertForcesClose(forces[b], f[force.getMoleculeParticles(b), :])


def test_is_an_openmm_force_and_casts_back(sf, fixtures):
    force = sf.SmoothFlowForce(fixtures['tiny']['path'])
    assert isinstance(force, openmm.Force)
    system = openmm.System()
    system.addForce(openmm.HarmonicBondForce())
    assert system.addForce(force) == 1
    generic = system.getForce(1)
    assert sf.SmoothFlowForce.isinstance(generic)
    assert not sf.SmoothFlowForce.isinstance(system.getForce(0))
    back = sf.SmoothFlowForce.cast(generic)
    assert isinstance(back, sf.SmoothFlowForce)
    assert back.getNumModelAtoms() == 6
    with pytest.raises(openmm.OpenMMException, match='HarmonicBondForce, not a SmoothFlowForce'):
        sf.SmoothFlowForce.cast(system.getForce(0))


def test_getters(sf, fixtures):
    ref = fixtures['tiny']
    force = sf.SmoothFlowForce(pathlib.Path(ref['path']))  # os.PathLike works too
    assert force.getNumModelAtoms() == 6
    assert force.getTemperature() == ref['temperature']
    assert force.getKT() == pytest.approx(ref['kT'], rel=1e-15)
    assert force.getKT() == pytest.approx(0.00831446261815324 * 300.0, rel=1e-15)
    assert force.getSupportPolicy() == sf.SmoothFlowForce.SupportError
    assert force.hasModelAtomInfo()
    names = [(force.getModelAtomName(a), force.getModelAtomResidueName(a), force.getModelAtomResidueIndex(a))
             for a in range(6)]
    assert names == [('C1', 'ACE', 0), ('O1', 'ACE', 0), ('CH3', 'ACE', 0),
                     ('N', 'NME', 1), ('H', 'NME', 1), ('C', 'NME', 1)]
    assert '"zmatrix"' in force.getModelConfig()
    data = pathlib.Path(ref['path']).read_bytes()
    assert force.getModelBytes() == data
    for wrapped in (bytearray(data), memoryview(data)):
        assert sf.SmoothFlowForce.createFromBytes(wrapped).getModelBytes() == data
    assert force.getNumMolecules() == 0
    assert not force.usesPeriodicBoundaryConditions()
    force.setUsesPeriodicBoundaryConditions(True)
    assert force.usesPeriodicBoundaryConditions()
    assert force.addMolecule([5, 4, 3, 2, 1, 0]) == 0
    assert force.addMolecule(range(6, 12)) == 1
    assert force.getMoleculeParticles(1) == (6, 7, 8, 9, 10, 11)
    force.setMoleculeParticles(1, [12, 13, 14, 15, 16, 17])
    assert force.getMoleculeParticles(1) == (12, 13, 14, 15, 16, 17)
    force.setParticles([0, 1, 2, 3, 4, 5])
    assert force.getNumMolecules() == 1

    wall = sf.SmoothFlowForce(fixtures['wall']['path'])
    assert wall.getSupportPolicy() == sf.SmoothFlowForce.SupportWall
    assert not wall.hasModelAtomInfo()
    assert wall.getModelAtomName(0) == ''


def test_force_groups(sf, fixtures, makeContext, evaluate):
    ref = fixtures['tiny']
    force = sf.SmoothFlowForce(ref['path'])
    force.setForceGroup(4)
    context = makeContext(force, 6)
    e, _ = evaluate(context, ref['positions'][0], groups={4})
    assert e == pytest.approx(ref['energies'][0], rel=1e-10)
    e, f = evaluate(context, ref['positions'][0], groups={0, 1})
    assert e == 0.0 and not f.any()


def test_periodic_translation_by_box_vectors(sf, fixtures, makeContext, evaluate):
    ref = fixtures['tiny']
    force = sf.SmoothFlowForce(ref['path'])
    force.setUsesPeriodicBoundaryConditions(True)
    box = [openmm.Vec3(2.2, 0, 0), openmm.Vec3(0.3, 2.4, 0), openmm.Vec3(-0.4, 0.6, 2.5)]
    context = makeContext(force, 6, box=box)
    x = np.array(ref['positions'][2])
    e0, f0 = evaluate(context, x)
    assert e0 == pytest.approx(ref['energies'][2], rel=1e-10)
    for shift in ([2.2, 0, 0], [0.3 - 0.4, 2.4 + 0.6, 2.5], [-0.6, -4.8, 0]):
        e, f = evaluate(context, x + shift)
        assert e == pytest.approx(e0, rel=1e-10)
        assertForcesClose(f0, f)


# Coordinates to put in the wall zone (u < 2 margin or u > 1 - 2 margin; bonds and
# angles only) and how many of them are in it.  The wall fixture has 8 atoms
# (bonds 0..6, angles 7..12) and margin 0.05: the zone is u < 0.1 or u > 0.9.
WALL_CASES = [
    ({0: 0.05}, 1),
    ({0: 0.05, 3: 0.97, 5: 0.02}, 3),
    ({1: 1.3, 2: -0.2}, 2),                   # beyond the support
    ({2: 0.095, 4: 0.105, 6: 0.5}, 1),        # just inside and just outside the zone
    ({7: 0.95, 9: 0.06}, 2),                  # two angles
    ({0: 1.2, 8: 0.93, 10: 0.5}, 2),          # a bond and an angle
]


def _with_u(flow, x0, chosen):
    """x0 with the chosen coordinates set to the given u (built by the PyTorch
    reference's own internal coordinates), checked to have moved only those."""
    import torch

    u = flow.internal_coordinates(torch.as_tensor(x0, dtype=torch.float64)[None])[0].clone()
    for d, value in chosen.items():
        u[d] = value
    x = flow.to_cartesian(u[None])[0]
    back = flow.internal_coordinates(x[None])[0]
    gap = (back - u).abs()
    n = flow.n_atoms
    gap[2 * n - 3:] = torch.minimum(gap[2 * n - 3:], 1 - gap[2 * n - 3:])  # torsions live on the circle
    assert gap.max() < 1e-9
    return x.numpy()


def test_wall_count(sf, sftorch, fixtures, makeContext, evaluate):
    """Each evaluation adds exactly the number of bonds and angles in the wall zone."""
    ref = fixtures['wall']
    flow = sftorch.load_model(ref['path'])
    assert flow.support_policy == 'wall' and flow.margin == 0.05
    force = sf.SmoothFlowForce(ref['path'])
    context = makeContext(force, ref['n_atoms'])
    assert force.getWallCount(context) == 0
    evaluate(context, ref['positions'][0])  # every u in [0.1, 0.9]
    assert force.getWallCount(context) == 0
    total = 0
    for chosen, in_zone in WALL_CASES:
        evaluate(context, _with_u(flow, ref['positions'][0], chosen))
        total += in_zone
        assert force.getWallCount(context) == total, chosen


def test_wall_count_is_zero_under_the_error_policy(sf, sftorch, fixtures, makeContext, evaluate):
    """The error policy clamps nothing and counts nothing, even at u where a wall would act."""
    ref = fixtures['tiny']
    flow = sftorch.load_model(ref['path'])
    force = sf.SmoothFlowForce(ref['path'])
    context = makeContext(force, ref['n_atoms'])
    for chosen in ({0: 0.005}, {1: 0.995, 5: 0.01}):
        evaluate(context, _with_u(flow, ref['positions'][0], chosen))
        assert force.getWallCount(context) == 0


def test_integrator_moves_atoms_by_the_force(sf, fixtures):
    """An integrator drives the kernel: from rest, one leapfrog Verlet step moves each atom by
    dt^2 F / m with F the force PyTorch computed (the wall fixture's configuration 3, in the
    wall zone)."""
    ref = fixtures['wall']
    mass, dt = 12.0, 0.0002
    system = openmm.System()
    for _ in range(ref['n_atoms']):
        system.addParticle(mass)
    system.addForce(sf.SmoothFlowForce(ref['path']))
    integrator = openmm.VerletIntegrator(dt)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName('Reference'))
    x0 = np.array(ref['positions'][3])
    context.setPositions(x0)
    context.setVelocities(np.zeros_like(x0))
    integrator.step(1)
    state = context.getState(getPositions=True)
    moved = state.getPositions(asNumpy=True).value_in_unit(openmm.unit.nanometer) - x0
    expected = dt * dt * np.array(ref['forces'][3]) / mass
    np.testing.assert_allclose(moved, expected, rtol=1e-6, atol=1e-12)


def test_plugin_does_not_import_torch(sf, fixtures):
    packageParent = os.path.dirname(os.path.dirname(sf.__file__))
    code = ('import sys, numpy, openmm, openmmsmoothflow, openmmsmoothflow.topology\n'
            f'force = openmmsmoothflow.SmoothFlowForce({fixtures["tiny"]["path"]!r})\n'
            'system = openmm.System()\n'
            'for i in range(6): system.addParticle(1.0)\n'
            'system.addForce(force)\n'
            'context = openmm.Context(system, openmm.VerletIntegrator(0.001))\n'
            'assert "torch" not in sys.modules, "torch was imported"\n')
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([packageParent, os.environ.get('PYTHONPATH', '')]))
    subprocess.run([sys.executable, '-c', code], check=True, env=env)
