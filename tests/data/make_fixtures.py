#!/usr/bin/env python
"""Write the OpenMM plugin's test fixtures into tests/data/.

For each small model: the model file (exported by smoothflow_torch) and the
energies and forces PyTorch computes for a few configurations, as

  <name>.safetensors      the model
  <name>.reference.txt    for the C++ tests (plain numbers, see below)
  reference.json          all models, for the Python tests

The fixtures are deterministic (fixed seeds).  Rerun after a change to the model
format or to smoothflow_torch's energy:

  python tests/data/make_fixtures.py

<name>.reference.txt: '#' lines are comments; then "N B" (atoms, configurations);
then per configuration a line with the energy (kJ/mol) and N lines
"x y z fx fy fz" (nm, kJ/mol/nm), atoms in model order.
"""
import json
import os

import numpy as np
import torch
from smoothflow_torch import export_model, testing

HERE = os.path.dirname(os.path.abspath(__file__))


def tiny_flow():
    """6 atoms in two named residues, 2 layers (one generative, one density), K=3, error policy."""
    names = [('C1', 'ACE', 0), ('O1', 'ACE', 0), ('CH3', 'ACE', 0),
             ('N', 'NME', 1), ('H', 'NME', 1), ('C', 'NME', 1)]
    atoms = [{'name': n, 'residue': r, 'residue_index': i, 'element': n[0]} for n, r, i in names]
    return testing.random_flow(n_atoms=6, n_layers=2, n_components=3, hidden=(8,),
                               directions='mixed', seed=3, atoms=atoms)


def wall_flow():
    """8 atoms without atom names, 4 layers, K=3, wall policy with edge forces (13 interval dims)
    and an angle margin of its own (0.07 against the bonds' 0.05)."""
    return testing.random_flow(n_atoms=8, n_layers=4, n_components=3, hidden=(12,),
                               directions='mixed', seed=5,
                               support={'policy': 'wall', 'margin': 0.05, 'angle_margin': 0.07,
                                        'wall_constant': 500.0,
                                        'edge_force_lower': [200.0 + 40.0 * d for d in range(13)],
                                        'edge_force_upper': [150.0 + 30.0 * d for d in range(13)]})


def von_mises_flow():
    """7 atoms, 3 layers, K=3, error policy, a truncated-normal prior with von Mises torsions
    (docs/model-format.md 5.4; its reading is what the allocation-failure test drives)."""
    return testing.random_flow(n_atoms=7, n_layers=3, n_components=3, hidden=(8,), directions='mixed', seed=6,
                               prior='von_mises')


def wall_configurations(flow):
    """Inside the support, in the wall zone (bond 0 below, angle 8 above, angle 10 in the angles'
    zone only: 0.12 < 2 x 0.07 but > 2 x 0.05), and beyond it (bond 0 at u = 1.3)."""
    inside = testing.random_positions(flow, 3, seed=21, margin=0.1)
    u = testing.random_u(flow, 3, seed=22, margin=0.1)
    u[0, 0] = 0.03   # in the wall zone (u < 2m)
    u[1, 0] = 1.3    # outside the support entirely
    u[2, 8] = 0.96   # an angle in the upper wall zone (u > 1 - 2m)
    u[2, 10] = 0.12  # an angle in the zone of angle_margin, not of margin
    edge = flow.to_cartesian(u).detach()
    return torch.cat([inside, edge + 0.5])


def write_reference_txt(path, name, positions, energies, forces):
    B, N, _ = positions.shape
    with open(path, 'w') as f:
        f.write(f'# {name}: energies and forces computed by smoothflow_torch (make_fixtures.py)\n')
        f.write(f'{N} {B}\n')
        for b in range(B):
            f.write(f'{energies[b]:.17g}\n')
            for i in range(N):
                f.write(' '.join(f'{v:.17g}' for v in list(positions[b, i]) + list(forces[b, i])) + '\n')


def main():
    torch.manual_seed(0)
    models = {
        'tiny': (tiny_flow(), lambda flow: testing.random_positions(flow, 4, seed=11, margin=0.1)),
        'wall': (wall_flow(), wall_configurations),
        'von_mises': (von_mises_flow(), lambda flow: testing.random_positions(flow, 3, seed=12, margin=0.1)),
    }
    reference = {}
    for name, (flow, configurations) in models.items():
        export_model(flow, os.path.join(HERE, f'{name}.safetensors'))
        os.chmod(os.path.join(HERE, f'{name}.safetensors'), 0o644)  # mkstemp made it private
        x = configurations(flow).to(torch.float64)
        energies, forces = flow.energy_and_forces(x)
        positions, energies, forces = x.numpy(), energies.detach().numpy(), forces.detach().numpy()
        write_reference_txt(os.path.join(HERE, f'{name}.reference.txt'), name, positions, energies, forces)
        reference[name] = {
            'model': f'{name}.safetensors',
            'n_atoms': int(flow.n_atoms),
            'temperature': float(flow.temperature),
            'kT': float(flow.kT),
            'support_policy': flow.support_policy,
            'positions': positions.tolist(),
            'energies': energies.tolist(),
            'forces': forces.tolist(),
        }
        print(f'{name}: {flow.n_atoms} atoms, {len(flow.layers)} layers, energies {np.round(energies, 3)}')
    with open(os.path.join(HERE, 'reference.json'), 'w') as f:
        json.dump(reference, f, indent=1)
        f.write('\n')


if __name__ == '__main__':
    main()
