"""Make the Z-matrix builder's test fixtures (run once; the outputs are checked in).

    python tests/data/zmatrix/make_fixtures.py

- dipeptides.pdb: one capped dipeptide ACE-X-NME per chain for each of the 20 standard amino
  acids and the histidine variants HID, HIE, HIP, in OpenMM's standard names.  The heavy atoms
  come from villin (openmm/app/data/test.pdb, shipped with OpenMM): residue X with the
  neighbouring residues' C, O, CA (the ACE cap) and N, CA (the NME cap).  Villin has no CYS, ILE
  or TYR: they are made from SER (OG -> SG), VAL (CD1 added anti to CA) and PHE (OH added on
  CZ).  Hydrogens from Modeller.addHydrogens (Amber14), then a short minimization with
  ff14SB in vacuum, so the geometry is a chemical one.
- pentapeptide.pdb: villin's ASN-LEU-PRO-LEU-TRP, capped the same way (a proline inside).
- tripeptide.pdb: villin's GLY-MET-THR with free, charged termini (no caps).
- phenylethanol.pdb: (S)-1-phenylethanol (a ring, a stereocentre, a methyl and a hydroxyl
  rotor), from ideal bond lengths and angles, with CONECT records; not a peptide.
"""
import io
import os
import random

import numpy as np
import openmm
import openmm.app as app
import openmm.unit as unit

HERE = os.path.dirname(os.path.abspath(__file__))
VILLIN = os.path.join(os.path.dirname(app.__file__), 'data', 'test.pdb')

#: residue made -> (villin residue it is made from, histidine variant)
RESIDUES = {
    'ALA': 'ALA', 'ARG': 'ARG', 'ASN': 'ASN', 'ASP': 'ASP', 'CYS': 'SER', 'GLN': 'GLN', 'GLU': 'GLU',
    'GLY': 'GLY', 'HID': 'HIS', 'HIE': 'HIS', 'HIP': 'HIS', 'ILE': 'VAL', 'LEU': 'LEU', 'LYS': 'LYS',
    'MET': 'MET', 'PHE': 'PHE', 'PRO': 'PRO', 'SER': 'SER', 'THR': 'THR', 'TRP': 'TRP', 'TYR': 'PHE',
    'VAL': 'VAL',
}


def unitVector(v):
    return v / np.linalg.norm(v)


def villinResidues():
    pdb = app.PDBFile(VILLIN)
    x = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    residues = [r for r in pdb.topology.residues() if r.name not in ('HOH', 'Cl', 'CL', 'NA', 'Na')]
    heavy = []
    for r in residues:
        heavy.append((r.name, {a.name: np.array(x[a.index]) for a in r.atoms()
                               if a.element is not None and a.element.symbol != 'H'}))
    return heavy


def cappedHeavyAtoms(residues, first, last, mutate=None):
    """[(residue name, [(atom name, element, xyz)])] of ACE-residues[first..last]-NME."""
    prev, nxt = residues[first - 1][1], residues[last + 1][1]
    out = [('ACE', [('CH3', 'C', prev['CA']), ('C', 'C', prev['C']), ('O', 'O', prev['O'])])]
    for i in range(first, last + 1):
        name, atoms = residues[i]
        atoms = [(n, n[0], xyz) for n, xyz in atoms.items() if n != 'OXT']
        if mutate is not None:
            name, atoms = mutate(dict((n, xyz) for n, _, xyz in atoms))
        out.append((name, atoms))
    out.append(('NME', [('N', 'N', nxt['N']), ('C', 'C', nxt['CA'])]))
    return out


def mutation(target):
    def make(atoms):
        if target == 'CYS':     # from SER
            atoms['SG'] = atoms['CB'] + 0.181 * unitVector(atoms.pop('OG') - atoms['CB'])
        elif target == 'ILE':   # from VAL: CD1 on CG1, anti to CA
            atoms['CD1'] = atoms['CG1'] + 0.153 * unitVector(atoms['CB'] - atoms['CA'])
        elif target == 'TYR':   # from PHE: OH on CZ, away from the ring's centre
            ring = np.mean([atoms[n] for n in ('CG', 'CD1', 'CD2', 'CE1', 'CE2', 'CZ')], axis=0)
            atoms['OH'] = atoms['CZ'] + 0.136 * unitVector(atoms['CZ'] - ring)
        name = {'HID': 'HIS', 'HIE': 'HIS', 'HIP': 'HIS'}.get(target, target)
        return name, [(n, 'S' if n == 'SG' else n[0], xyz) for n, xyz in atoms.items()]
    return make


def modeller(molecules):
    """One chain per molecule: (topology, positions) from [(residue name, atoms)] lists."""
    topology = app.Topology()
    positions = []
    for residues in molecules:
        chain = topology.addChain()
        for name, atoms in residues:
            residue = topology.addResidue(name, chain)
            for atomName, element, xyz in atoms:
                topology.addAtom(atomName, app.element.get_by_symbol(element), residue)
                positions.append(openmm.Vec3(*xyz))
    topology.createStandardBonds()
    return app.Modeller(topology, positions * unit.nanometer)


def protonateAndMinimize(model, variants):
    forcefield = app.ForceField('amber14-all.xml')
    random.seed(2021)     # addHydrogens starts the hydrogens at random positions
    model.addHydrogens(forcefield, variants=variants, platform=openmm.Platform.getPlatformByName('Reference'))
    system = forcefield.createSystem(model.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(model.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 2000)
    return context.getState(getPositions=True).getPositions()


def writePdb(name, topology, positions):
    text = io.StringIO()
    app.PDBFile.writeFile(topology, positions, text, keepIds=False)
    with open(os.path.join(HERE, name), 'w') as f:
        # without OpenMM's dated REMARK, so that remaking the fixtures changes nothing
        f.writelines(line for line in text.getvalue().splitlines(True) if not line.startswith('REMARK   1 CREATED'))


def dipeptides():
    residues = villinResidues()
    names = [n for n, _ in residues]
    combined = None
    for m, (target, source) in enumerate(RESIDUES.items()):
        # each molecule on its own (villin neighbours share atoms), then side by side, 2 nm apart
        i = next(i for i in range(1, len(residues) - 1) if names[i] == source)
        model = modeller([cappedHeavyAtoms(residues, i, i, mutation(target))])
        x = protonateAndMinimize(model, [None, target if target.startswith('HI') else None, None])
        x = x.value_in_unit(unit.nanometer)
        centre = np.mean([[p.x, p.y, p.z] for p in x], axis=0)
        x = [openmm.Vec3(*(np.array([p.x, p.y, p.z]) - centre + [2.0 * m, 0.0, 0.0])) for p in x] * unit.nanometer
        if combined is None:
            combined = app.Modeller(model.topology, x)
        else:
            combined.add(model.topology, x)
    writePdb('dipeptides.pdb', combined.topology, combined.positions)


def pentapeptide():
    residues = villinResidues()
    names = [n for n, _ in residues]
    first = next(i for i in range(len(names)) if names[i:i + 5] == ['ASN', 'LEU', 'PRO', 'LEU', 'TRP'])
    model = modeller([cappedHeavyAtoms(residues, first, first + 4)])
    x = protonateAndMinimize(model, None)    # adds the hydrogens to model.topology
    writePdb('pentapeptide.pdb', model.topology, x)


def tripeptide():
    """Villin's GLY-MET-THR without caps: charged termini NH3+ and COO- (OXT added in the
    carboxyl plane, away from O and CA)."""
    residues = villinResidues()
    names = [n for n, _ in residues]
    first = next(i for i in range(len(names)) if names[i:i + 3] == ['GLY', 'MET', 'THR'])
    molecule = []
    for i in range(first, first + 3):
        name, atoms = residues[i]
        atoms = dict(atoms)
        if i == first + 2:
            atoms['OXT'] = atoms['C'] + 0.125 * unitVector(unitVector(atoms['C'] - atoms['O'])
                                                          + unitVector(atoms['C'] - atoms['CA']))
        molecule.append((name, [(n, n[0], xyz) for n, xyz in atoms.items()]))
    model = modeller([molecule])
    x = protonateAndMinimize(model, None)
    writePdb('tripeptide.pdb', model.topology, x)


def tetrahedral(centre, axis, reference, lengths, start):
    """Positions of the three other substituents of a tetrahedral centre whose fourth bond
    points along -axis, turned by start degrees about axis from the reference direction."""
    axis = unitVector(axis)
    e1 = unitVector(reference - np.dot(reference, axis) * axis)
    e2 = np.cross(axis, e1)
    out = []
    for length, turn in zip(lengths, (0.0, 120.0, 240.0)):
        t = np.radians(start + turn)
        out.append(centre + length * (axis / 3.0 + np.sqrt(8.0 / 9.0) * (np.cos(t) * e1 + np.sin(t) * e2)))
    return out


def phenylethanol():
    z = np.array([0.0, 0.0, 1.0])
    ring = [0.139 * np.array([np.cos(np.radians(60 * i)), np.sin(np.radians(60 * i)), 0.0]) for i in range(6)]
    atoms = [('C%d' % (i + 1), 'C', ring[i]) for i in range(6)]
    atoms += [('H%d' % (i + 1), 'H', ring[i] + 0.108 * unitVector(ring[i])) for i in range(1, 6)]
    c7 = ring[0] + 0.151 * unitVector(ring[0])
    o, c8, h7 = tetrahedral(c7, c7 - ring[0], z, (0.143, 0.153, 0.109), 0.0)
    atoms += [('C7', 'C', c7), ('O', 'O', o), ('C8', 'C', c8), ('H7', 'H', h7)]
    hs = tetrahedral(c8, c8 - c7, np.cross(c8 - c7, z), (0.109,) * 3, 30.0)
    atoms += [('H8%d' % (i + 1), 'H', h) for i, h in enumerate(hs)]
    atoms += [('HO', 'H', tetrahedral(o, o - c7, c8 - c7, (0.096,) * 3, 75.0)[0])]
    topology = app.Topology()
    residue = topology.addResidue('PEO', topology.addChain())
    index = {}
    for name, element, _ in atoms:
        index[name] = topology.addAtom(name, app.element.get_by_symbol(element), residue)
    bonds = [('C%d' % (i + 1), 'C%d' % ((i + 1) % 6 + 1)) for i in range(6)]
    bonds += [('C%d' % (i + 1), 'H%d' % (i + 1)) for i in range(1, 6)]
    bonds += [('C1', 'C7'), ('C7', 'O'), ('C7', 'C8'), ('C7', 'H7'), ('O', 'HO')]
    bonds += [('C8', 'H8%d' % i) for i in (1, 2, 3)]
    for a, b in bonds:
        topology.addBond(index[a], index[b])
    writePdb('phenylethanol.pdb', topology, [openmm.Vec3(*x) for _, _, x in atoms] * unit.nanometer)


if __name__ == '__main__':
    dipeptides()
    pentapeptide()
    tripeptide()
    phenylethanol()
