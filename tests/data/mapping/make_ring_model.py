"""Write ring.safetensors: a random-weight flow for methylcyclopropane (C4H8, 12 atoms), the
atom-mapping tests' molecule with a ring.  Its Z-matrix's bond tree leaves out the ring bond
C2-C3, which the model file cannot record: the mapping must find the tree inside the ring.

    python tests/data/mapping/make_ring_model.py      (needs smoothflow_torch; deterministic)

Also writes ring_positions.txt: a configuration inside the flow's support (nm, model order).
"""
import os

import numpy as np
from smoothflow_torch import export_model, testing

HERE = os.path.dirname(os.path.abspath(__file__))

#: (name, element) in model order, all in residue MCP
ATOMS = [('C1', 'C'), ('C2', 'C'), ('C3', 'C'), ('C4', 'C'), ('H1', 'H'), ('H21', 'H'), ('H22', 'H'),
         ('H31', 'H'), ('H32', 'H'), ('H41', 'H'), ('H42', 'H'), ('H43', 'H')]
ZMATRIX = [[0, -1, -1, -1], [1, 0, -1, -1], [2, 0, 1, -1], [3, 0, 1, 2], [4, 0, 1, 2],
           [5, 1, 0, 2], [6, 1, 0, 5], [7, 2, 0, 1], [8, 2, 0, 7],
           [9, 3, 0, 1], [10, 3, 0, 9], [11, 3, 0, 9]]
#: the molecule's bonds: the tree's and the ring closure C2-C3
BONDS = [(row[0], row[1]) for row in ZMATRIX[1:]] + [(1, 2)]


def main():
    atoms = [{'name': n, 'residue': 'MCP', 'residue_index': 0, 'element': e} for n, e in ATOMS]
    flow = testing.random_flow(zmatrix=ZMATRIX, n_layers=2, n_components=3, hidden=(8,), seed=7,
                               atoms=atoms, support={'policy': 'wall', 'margin': 0.02, 'wall_constant': 500.0})
    path = os.path.join(HERE, 'ring.safetensors')
    export_model(flow, path)
    os.chmod(path, 0o644)
    x = testing.random_positions(flow, 1, seed=8, margin=0.1)[0].detach().numpy()
    np.savetxt(os.path.join(HERE, 'ring_positions.txt'), x, fmt='%.17g',
               header='methylcyclopropane (ring.safetensors): positions in nm, model atom order')


if __name__ == '__main__':
    main()
