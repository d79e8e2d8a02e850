"""Equivalent atoms named as in the model keep their names (issue 21, part 1).

The flow is only approximately symmetric under a methyl's rotations: at most held-out frames
some cyclic relabelling of the hydrogens has a flow energy up to 4 kJ/mol below the labelling the
model was trained with.  Where a Topology uses the model's own names (the shipped flows carry
OpenMM's, as PDBFile gives them), those names are the trained labelling and decide; the positions
only check it (a labelling of the wrong handedness, hundreds of kT higher, is reported).  Under
another naming convention (Amber's, old PDB names) the positions decide, as before.

The starts are those of the energy-conservation study (studies/alanine_dipeptide/
energy_conservation.py, start_frames: held-out frames 0, 50, 100, 150 of the shipped reference).
"""
import itertools
import os
import warnings

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit
import pytest

from test_mapping_conventions import METHYLS, MODEL, rawTopology

HERE = os.path.dirname(os.path.abspath(__file__))
REFERENCE = os.path.join(HERE, '..', '..', 'data', 'alanine_dipeptide', 'obc.reference.npz')
IDENTITY = list(range(22))


@pytest.fixture(scope='module')
def T(sf):
    from openmmsmoothflow import topology
    return topology


@pytest.fixture(scope='module')
def starts():
    """The four starts of the main job (start_frames(test, 4)), in model atom order (nm)."""
    with np.load(REFERENCE) as d:
        test = d['positions'].astype(np.float64)
    return [test[k * (len(test) // 4)] for k in range(4)]


def modelNamedTopologies():
    """Topologies whose atoms carry the model's (OpenMM's) names: the mapping fixture in OpenMM
    names, and a PDBFile of the Amber-named file (PDBFile renames to OpenMM's names)."""
    return [('openmm fixture', rawTopology('openmm')),
            ('pdbfile', app.PDBFile(os.path.join(HERE, '..', 'data', 'mapping', 'ala2_amber.pdb')).topology)]


def methylRelabellings():
    """Every labelling that permutes the hydrogens within the methyls, but the identity."""
    for perms in itertools.product(*(itertools.permutations(m) for m in METHYLS)):
        order = list(IDENTITY)
        for group, perm in zip(METHYLS, perms):
            for a, b in zip(group, perm):
                order[a] = b
        if order != IDENTITY:
            yield order


def systemOf(topology):
    system = openmm.System()
    for atom in topology.atoms():
        system.addParticle(atom.element.mass)
    return system


def energyOf(system, x):
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(x)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


def test_model_names_decide_where_a_relabelled_methyl_is_lower(sf, T, starts):
    """At every start of the main job a cyclic relabelling of the methyls' hydrogens has a lower
    flow energy than the model's own labelling (by 0.4-3.9 kJ/mol; the most at start 3).  A
    Topology named as the model still maps by its names (the identity here), through
    mapModelToTopology, addSmoothFlowForce and openmm-ml's MLPotential, and the check passes."""
    force = sf.SmoothFlowForce(MODEL)
    evaluator = T._Evaluator(T._Model(force))
    gaps = []
    for x in starts:
        named = evaluator.energy(x)
        lowest, best = min((evaluator.energy(x[o]), o) for o in methylRelabellings())
        gaps.append(named - lowest)
        # the relabelling that is lower keeps the model's handedness: an even permutation of each methyl
        assert all(sorted(best[a] for a in m) == list(m) for m in METHYLS)
    assert min(gaps) > 0.2 and max(gaps) > 1.5, gaps  # measured: 0.44, 0.66, 1.66, 3.85 kJ/mol

    for label, topology in modelNamedTopologies():
        for k, x in enumerate(starts):
            with warnings.catch_warnings():
                warnings.simplefilter('error')  # a right labelling is not warned about
                assert sf.mapModelToTopology(force, topology, positions=x) == [IDENTITY], (label, k)
                system = systemOf(topology)
                added = sf.addSmoothFlowForce(system, topology, MODEL, positions=x)
            assert list(added.getMoleculeParticles(0)) == IDENTITY, (label, k)
            assert energyOf(system, x) == pytest.approx(evaluator.energy(x), rel=1e-12, abs=1e-9)


def test_mlpotential_follows_the_model_names(sf, T, starts):
    """openmm-ml's MLPotential('smoothflow') maps through the same helper."""
    openmmml = pytest.importorskip('openmmml')
    MLPotential = openmmml.MLPotential
    if 'smoothflow' not in MLPotential._implFactories:
        from openmmsmoothflow.mlpotential import SmoothFlowPotentialImplFactory
        MLPotential.registerImplFactory('smoothflow', SmoothFlowPotentialImplFactory())
    x = starts[2]
    force = sf.SmoothFlowForce(MODEL)
    evaluator = T._Evaluator(T._Model(force))
    system = MLPotential('smoothflow', modelPath=MODEL).createSystem(rawTopology('openmm'), positions=x)
    flows = [sf.SmoothFlowForce.cast(f) for f in system.getForces() if sf.SmoothFlowForce.isinstance(f)]
    assert [list(f.getMoleculeParticles(0)) for f in flows] == [IDENTITY]
    assert energyOf(system, x) == pytest.approx(evaluator.energy(x), rel=1e-12, abs=1e-9)


@pytest.mark.parametrize('convention', ['pdbv2', 'amber'])
def test_other_naming_conventions_are_decided_by_positions(sf, T, starts, convention):
    """Names that are not the model's (old PDB names 1HH3/1HB; Amber's HH31/HH32/HH33 for the ACE
    and NME methyls, as AmberPrmtopFile or tleap give them) leave those methyls to the positions:
    the mapping is the lowest labelling, here not the identity.  A methyl whose Amber names are
    the model's (ALA HB1-3) keeps them."""
    force = sf.SmoothFlowForce(MODEL)
    evaluator = T._Evaluator(T._Model(force))
    topology = rawTopology(convention)
    free = METHYLS[1:] if convention == 'amber' else METHYLS  # amber: ACE and NME
    candidates = [o for o in [IDENTITY] + list(methylRelabellings())
                  if all(o[a] == a for m in METHYLS if m not in free for a in m)]
    chosen = []
    for k, x in enumerate(starts):
        lowest = min(candidates, key=lambda o: evaluator.energy(x[o]))
        chosen.append(sf.mapModelToTopology(force, topology, positions=x)[0])
        assert chosen[-1] == lowest, (convention, k)
    assert any(molecule != IDENTITY for molecule in chosen)  # the positions chose a relabelling


def test_wrong_named_labelling_is_reported(sf, T, starts):
    """The model's names on the wrong atoms (HB2 and HB3 exchanged, and NME's H1 and H2: the
    handedness of two methyls reversed): the names are kept, and the positions' check says which
    atoms to swap, as an error or a warning (addSmoothFlowForce) or a warning (mapModelToTopology).
    A rotation of the names (ACE's hydrogens renamed cyclically) keeps the handedness and passes."""
    x = starts[2]
    force = sf.SmoothFlowForce(MODEL)
    kT = force.getKT()
    evaluator = T._Evaluator(T._Model(force))
    topology = rawTopology('openmm')
    for atom in topology.atoms():
        atom.name = {('ALA', 'HB2'): 'HB3', ('ALA', 'HB3'): 'HB2', ('NME', 'H1'): 'H2',
                     ('NME', 'H2'): 'H1'}.get((atom.residue.name, atom.name), atom.name)
    swapped = {12: 13, 13: 12, 19: 20, 20: 19}
    byNames = [swapped.get(a, a) for a in IDENTITY]
    assert evaluator.energy(x[byNames]) - evaluator.energy(x) > 20 * kT
    # any odd permutation of a methyl restores its handedness: the check proposes one swap
    pattern = (r"(?s)handedness opposite.*swap particle 1[123] \(HB[123] ALA 2\) and particle 1[123] "
               r"\(HB[123] ALA 2\).*handedness opposite.*swap particle (19|20|21) \(H[123] NME 3\) and "
               r"particle (19|20|21) \(H[123] NME 3\)")
    system = systemOf(topology)
    with pytest.raises(T.SmoothFlowConfigurationError, match=pattern) as info:
        sf.addSmoothFlowForce(system, topology, MODEL, positions=x)
    assert system.getNumForces() == 0
    assert [p['kind'] for p in info.value.problems] == ['equivalent atoms'] * 2
    with pytest.warns(UserWarning, match=pattern):
        added = sf.addSmoothFlowForce(system, topology, MODEL, positions=x, onProblem='warn')
    assert list(added.getMoleculeParticles(0)) == byNames  # the names, as given
    with pytest.warns(UserWarning, match=pattern):
        assert sf.mapModelToTopology(force, topology, positions=x) == [byNames]
    # a cyclic renaming of ACE's methyl hydrogens: the names are followed, nothing is reported
    rotated = rawTopology('openmm')
    for atom in rotated.atoms():
        atom.name = {('ACE', 'H1'): 'H2', ('ACE', 'H2'): 'H3',
                     ('ACE', 'H3'): 'H1'}.get((atom.residue.name, atom.name), atom.name)
    with warnings.catch_warnings():
        warnings.simplefilter('error')
        [molecule] = sf.mapModelToTopology(force, rotated, positions=x)
        sf.addSmoothFlowForce(systemOf(rotated), rotated, MODEL, positions=x)
    assert [list(rotated.atoms())[molecule[a]].name for a in METHYLS[1]] == ['H1', 'H2', 'H3']
    assert abs(evaluator.energy(x[molecule]) - evaluator.energy(x)) < 3 * kT
