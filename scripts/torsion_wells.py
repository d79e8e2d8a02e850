#!/usr/bin/env python3
"""How deep are a flow's wells along the torsions that must stay near one value? For alanine
dipeptide's impropers and H-N-C-O torsions: the median over reference frames of the energy rise
(kT) when one torsion is turned by 0.05, 0.1, 0.25 and 0.5 of a turn, for each model and for the
force field (ff99SB-ILDN/OBC of the study project runs/alanine_dipeptide); docs/reliability.md
section 5. Not run by the tests.

    python scripts/torsion_wells.py models/alanine_dipeptide/smooth.safetensors [MODEL ...] [--frames 20]
"""
import argparse
import os

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Z-matrix rows whose torsion must stay near one value: in studies/alanine_dipeptide/zmatrix.txt
#: the impropers N-C-CH3-O (ACE) and O-C-CA-N (ALA) and H-N-C-O (ALA, NME); in the H-N-C-C rows
#: (runs/alanine_dipeptide_hnca) rows 11 and 12 are H-N-C-CH3 and H-N-C-CA
ROWS = (3, 7, 11, 12)
TURNS = (0.05, 0.1, 0.25, 0.5)


def main(argv=None):
    from smoothflow_torch.export import load_model
    from smoothflow_torch.openmm_bridge import OpenMMEnergy
    from smoothflow_torch.pipeline.project import Project
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--frames", type=int, default=20, help="first reference frames used (default %(default)s)")
    ap.add_argument("--rows", type=int, nargs="+", default=list(ROWS), help="Z-matrix rows (default %(default)s)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    ref = np.load(os.path.join(ROOT, "data", "alanine_dipeptide", "obc.reference.npz"))["positions"][:a.frames]
    ref = torch.tensor(ref.astype(float))
    bridge = OpenMMEnergy(Project(os.path.join(ROOT, "runs", "alanine_dipeptide")).system())
    ff = lambda x: bridge.evaluate(np.asarray(x))[0]       # kJ/mol per frame

    print("| torsion | model | rise in kT at " + " / ".join(f"{t:g}" for t in TURNS) + " of a turn | force field |")
    print("|---|---|---|---|")
    for m in a.models:
        flow = load_model(m)
        with torch.no_grad():
            u, e0 = flow.internal_coordinates(ref), flow.energy(ref).numpy()
        for row in a.rows:
            d = flow.n_interval + row - 3
            z = flow.zmatrix[row].tolist()
            name = "-".join(flow.atoms[i]["name"] for i in z) + f" ({flow.atoms[z[0]]['residue']}, row {row})" \
                if flow.atoms else f"row {row}"
            rise, rise_ff = [], []
            for turn in TURNS:
                v = u.clone()
                v[:, d] = torch.remainder(v[:, d] + turn, 1.0)
                with torch.no_grad():
                    x = flow.to_cartesian(v)
                    e = flow.energy(x).numpy()
                rise.append(np.median(e - e0) / flow.kT)
                rise_ff.append(np.median(ff(x.numpy()) - ff(ref.numpy())) / flow.kT)
            print(f"| {name} | {os.path.relpath(m, ROOT)} | " + " / ".join(f"{r:.1f}" for r in rise) + " | "
                  + " / ".join(f"{r:.0f}" for r in rise_ff) + " |", flush=True)


if __name__ == "__main__":
    main()
