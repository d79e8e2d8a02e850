"""Make the pipeline test's molecule (run once; the output is checked in).

    python tests/data/pipeline/make_fixture.py

ace_ser_nhe.pdb: N-acetyl-L-serine amide, ACE-SER-NHE (20 atoms), a capped serine with an
amide (NH2) C-terminal cap instead of N-methyl: phi and psi, a hydroxyl rotor, a methyl rotor
and two equivalent amide hydrogens, and a molecule used nowhere else in the repository.  The
heavy atoms of ACE and SER and the NHE nitrogen come from the serine dipeptide of
tests/data/zmatrix/dipeptides.pdb (chain of SER; its NME carbon is dropped and the cap renamed
NHE); the hydrogens are added by Modeller (OpenMM's hydrogens.xml has no NHE: its two amide
hydrogens are defined here, with amber99sbildn's names HN1, HN2), then the structure is minimized with amber99sbildn + OBC, the pipeline's default force
field, so the file is a chemical geometry in OpenMM's standard names with CONECT-free standard
residues.
"""
import os
import tempfile

import openmm
import openmm.app as app
import openmm.unit as unit

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, '..', 'zmatrix', 'dipeptides.pdb')


def main():
    pdb = app.PDBFile(SOURCE)
    chain = next(c for c in pdb.topology.chains() if any(r.name == 'SER' for r in c.residues()))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    keep = set(a.index for a in chain.atoms())
    nme = [r for r in chain.residues() if r.name == 'NME'][0]
    drop = [a for a in modeller.topology.atoms()
            if a.index not in keep or a.element.symbol == 'H' or (a.residue.index == nme.index and a.name != 'N')]
    modeller.delete(drop)
    for residue in modeller.topology.residues():
        if residue.name == 'NME':
            residue.name = 'NHE'
    forcefield = app.ForceField('amber99sbildn.xml', 'amber99_obc.xml')
    with tempfile.NamedTemporaryFile('w', suffix='.xml', delete=False) as f:
        f.write('<Residues><Residue name="NHE"><H name="HN1" parent="N"/><H name="HN2" parent="N"/></Residue>'
                '</Residues>')
    app.Modeller.loadHydrogenDefinitions(f.name)
    os.unlink(f.name)
    modeller.addHydrogens(forcefield, platform=openmm.Platform.getPlatformByName('Reference'))
    system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff, constraints=None)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName('Reference'))
    context.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(context, 1.0, 2000)
    x = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    positions = (x - x.mean(0)) * unit.nanometer      # centred: the source chain sits 34 nm out
    with open(os.path.join(HERE, 'ace_ser_nhe.pdb'), 'w') as f:
        app.PDBFile.writeFile(modeller.topology, positions, f)
    print(f'{modeller.topology.getNumAtoms()} atoms:', ' '.join(f'{a.residue.name}:{a.name}' for a in modeller.topology.atoms()))


if __name__ == '__main__':
    main()
