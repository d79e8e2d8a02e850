"""Make the demo model the main job runs until the alanine-dipeptide flow ships.

An 8-atom carbon chain ("MOL", atoms C1..C8) with a smooth flow of 4 coupling layers
(K = 4, conditioners 2 x 16 SiLU) and mild random weights, written by the trainer's
exporter with the `wall` support policy so MD never stops at the support's edge.
It is not trained: it demonstrates the machinery (export -> SmoothFlowForce -> MD), not
chemistry.  Writes models/demo/chain8.safetensors and chain8.pdb (a configuration
at the flow's median, u = 0.5 in every coordinate but the torsions).

Usage: python scripts/make_demo_model.py   (needs torch; the main job does not)
"""
from pathlib import Path
import sys

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "pytorch"))

from smoothflow_torch import export_model  # noqa: E402
from smoothflow_torch.testing import chain_flow  # noqa: E402


def main():
    out = ROOT / "models" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    flow = chain_flow(n_atoms=8, seed=2024, n_layers=4, n_components=4, hidden=(16, 16),
                      weight_scale=0.3, steep=False,
                      support={"policy": "wall", "margin": 0.02, "wall_constant": 2000.0})
    export_model(flow, out / "chain8.safetensors",
                 extra_metadata={"training": "untrained demo flow (scripts/make_demo_model.py, seed 2024)"})
    # A start inside the support: mid bonds, 110-degree angles, a zigzag of torsions.
    N = flow.n_atoms
    u = torch.cat([torch.full((N - 1,), 0.5), torch.full((N - 2,), 110.0 / 180.0),
                   torch.tensor([(180.0 + 180.0 * (-1) ** i) / 360.0 * 0.8 + 0.1 for i in range(N - 3)])])
    x = flow.to_cartesian(u[None].to(flow.dtype))[0].detach().numpy()
    import openmm.app as app
    import openmm.unit as unit
    top = app.Topology()
    chain = top.addChain()
    res = top.addResidue("MOL", chain)
    for i in range(N):
        top.addAtom(f"C{i + 1}", app.element.carbon, res)
    with open(out / "chain8.pdb", "w") as f:
        app.PDBFile.writeFile(top, x * 10.0 * unit.angstrom, f)
    print(f"wrote {out / 'chain8.safetensors'} and {out / 'chain8.pdb'}")


if __name__ == "__main__":
    main()
