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
"""
import numpy as np

ZMATRIX = np.array([
    [1, -1, -1, -1],    # CH3 (ACE) at the origin
    [4, 1, -1, -1],     # C (ACE)
    [5, 4, 1, -1],      # O (ACE)
    [6, 4, 1, 5],       # N (ALA)      improper N-C-CH3-O
    [8, 6, 4, 1],       # CA           omega(ACE) CA-N-C-CH3
    [14, 8, 6, 4],      # C (ALA)      phi
    [16, 14, 8, 6],     # N (NME)      psi
    [15, 14, 8, 16],    # O (ALA)      improper O-C-CA-N
    [18, 16, 14, 8],    # C (NME)      omega(NME)
    [10, 8, 6, 14],     # CB           chirality
    [9, 8, 6, 14],      # HA           chirality
    [7, 6, 4, 5],       # H (ALA)      H-N-C-O
    [17, 16, 14, 15],   # H (NME)      H-N-C-O
    [0, 1, 4, 5],       # HH31 (ACE)   methyl rotor
    [2, 1, 4, 0],       # HH32 (ACE)
    [3, 1, 4, 0],       # HH33 (ACE)
    [11, 10, 8, 6],     # HB1          methyl rotor
    [12, 10, 8, 11],    # HB2
    [13, 10, 8, 11],    # HB3
    [19, 18, 16, 14],   # HH31 (NME)   methyl rotor
    [20, 18, 16, 19],   # HH32 (NME)
    [21, 18, 16, 19],   # HH33 (NME)
], dtype=np.int64)

#: flow dimension of phi and psi (torsions start at 2N - 3 = 41; row r has torsion dim 41 + r - 3)
PHI_DIM = 41 + 5 - 3
PSI_DIM = 41 + 6 - 3
