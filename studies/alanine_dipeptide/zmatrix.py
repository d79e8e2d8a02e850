"""The Z-matrix of alanine dipeptide: torsions through heavy atoms, hydrogens off their heavy atoms.

Rows [a, j, k, l] in placement order (docs/model-format.md section 3): atom a placed by its
bond to j, the angle a-j-k and the torsion a-j-k-l.  Choices, and why:

- The backbone is placed first, along the chain CH3(ACE) -> C -> N -> CA -> C -> N -> C(NME),
  so that phi (row 5: C-CA-N-C(ACE)) and psi (row 6: N(NME)-C-CA-N) are single torsions of the
  Z-matrix, exactly the dihedrals C(ACE)-N-CA-C and N-CA-C-N(NME) (a dihedral read backwards
  is the same angle).
- The carbonyl O atoms are placed by improper torsions O-C-CA-N and N-C-CH3-O (about 180
  degrees, the sp2 planarity) rather than through the backbone torsions, so that they stay
  rigid when phi and psi move.
- CB and HA are placed on CA by torsions against the N-CA-C frame (X-CA-N-C, about -120 and
  +120 degrees): they fix the chirality of CA and do not move with phi.
- Each methyl has one proper torsion for its rotation (HH31-CH3-C-O, HB1-CB-CA-N,
  HH31-C-N-C) and places its other two hydrogens at about +-120 degrees from the first
  (X-C-C-H1), so one dimension carries the rotor and two nearly constant ones its geometry.
- Amide hydrogens are anti to the carbonyl O of the same peptide bond (H-N-C-O, about 180).

The rows are in ``zmatrix.txt`` beside this file, the form the pipeline's ``prepare --zmatrix``
takes (the study's project is made from it: README.md, "The study as a pipeline project").
"""
from pathlib import Path

import numpy as np

#: the rows, one per line, with the atom each places (also what `smoothflow prepare --zmatrix` reads)
ZMATRIX_FILE = Path(__file__).resolve().with_name("zmatrix.txt")
#: the same rows with the amide hydrogens placed by H-N-C-CH3 and H-N-C-CA (no torsion on an
#: implied angle; the shipped flows' project since 2026-12-03, docs/reliability.md section 5)
AMIDE_H_ON_HEAVY_ATOMS_FILE = ZMATRIX_FILE.with_name("zmatrix_amide_h_on_heavy_atoms.txt")


def read(path=ZMATRIX_FILE) -> np.ndarray:
    """The (22, 4) rows of a Z-matrix text file: four integers per line, ``#`` starts a comment."""
    rows = [[int(v) for v in line.split("#")[0].split()] for line in Path(path).read_text().splitlines()]
    return np.array([r for r in rows if r], dtype=np.int64)


ZMATRIX = read()

#: flow dimension of phi and psi (torsions start at 2N - 3 = 41; row r has torsion dim 41 + r - 3)
PHI_DIM = 41 + 5 - 3
PSI_DIM = 41 + 6 - 3
