"""Write the alanine-dipeptide structures of the atom-mapping tests, one per naming convention.

    python tests/data/mapping/make_fixtures.py      (from the repository root; needs the study package)

Positions: the study's standard geometry (studies/alanine_dipeptide/molecule.py, phi -80, psi 150),
the same in every file; only the names differ.  The naming conventions:

- ala2_amber.pdb:  Amber/tleap (ACE HH31 CH3, NME CH3 HH31): the names of the shipped models' training data
  but for NME's carbon, which the model calls C
- ala2_openmm.pdb: OpenMM's standard names, what PDBFile produces from any of these files
  (ACE H1 H2 H3, NME C H1 H2 H3)
- ala2_pdbv2.pdb:  old PDB (version 2) names with the digit in front (1HH3, 1HB, ...)
"""
import os

import openmm.app as app
import openmm.unit as unit

from alanine_dipeptide import molecule

HERE = os.path.dirname(os.path.abspath(__file__))

# (residue, model name) -> name in each convention; names not listed are the same everywhere
CONVENTIONS = {
    'amber': {('NME', 'C'): 'CH3'},
    'openmm': {('ACE', 'HH31'): 'H1', ('ACE', 'HH32'): 'H2', ('ACE', 'HH33'): 'H3',
               ('NME', 'HH31'): 'H1', ('NME', 'HH32'): 'H2', ('NME', 'HH33'): 'H3'},
    'pdbv2': {('ACE', 'HH31'): '1HH3', ('ACE', 'HH32'): '2HH3', ('ACE', 'HH33'): '3HH3',
              ('ALA', 'HB1'): '1HB', ('ALA', 'HB2'): '2HB', ('ALA', 'HB3'): '3HB',
              ('NME', 'C'): 'CH3', ('NME', 'HH31'): '1HH3', ('NME', 'HH32'): '2HH3', ('NME', 'HH33'): '3HH3'},
}


def main():
    positions = molecule.standard_positions() * 10 * unit.angstrom
    for convention, names in CONVENTIONS.items():
        topology = molecule.topology()
        for atom in topology.atoms():
            atom.name = names.get((atom.residue.name, atom.name), atom.name)
        with open(os.path.join(HERE, f'ala2_{convention}.pdb'), 'w') as f:
            app.PDBFile.writeFile(topology, positions, f)


if __name__ == '__main__':
    main()
