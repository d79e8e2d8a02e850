"""How far the tetrapeptide's data got, and how well each residue's alpha_L (phi > 0) is sampled.

Reads the chains' own files (``data/chain<c>.npz``), so it works while ``simulate`` is still
running (they are replaced atomically at each checkpoint). The pipeline's ``data/summary.json``
reports phi > 0 only for the bias torsion; the plan (README.md, "Data") needs it for every
residue: ALA2 and ALA4 are unbiased, and if they have too few visits their alpha_L populations
are not determined by the data.

    python studies/alanine_tetrapeptide/data_check.py [PROJECT]      # default runs/alanine_tetrapeptide
"""
import json
import sys
from pathlib import Path

import numpy as np

MOLAR_GAS_CONSTANT = 0.00831446261815324   # kJ/mol/K, as OpenMM


def dihedral(x, idx):
    """IUPAC dihedral (radians) of atoms idx over frames x (n, N, 3)."""
    b1, b2, b3 = x[:, idx[1]] - x[:, idx[0]], x[:, idx[2]] - x[:, idx[1]], x[:, idx[3]] - x[:, idx[2]]
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.einsum("ij,ij->i", b1, n2)
    return np.arctan2(y, np.einsum("ij,ij->i", n1, n2))


def main(project=Path("runs/alanine_tetrapeptide")):
    project = Path(project)
    meta = json.loads((project / "project.json").read_text())
    settings = json.loads((project / "data" / "settings.json").read_text())
    kT = MOLAR_GAS_CONSTANT * meta["temperature"]
    phis = [t for t in meta["torsions"] if t["name"].startswith("phi:")]
    files = sorted((project / "data").glob("chain*.npz"), key=lambda f: int(f.stem[5:]))
    biased = [settings['bias']] if isinstance(settings['bias'], dict) else (settings['bias'] or [])
    print(f"bias: {' + '.join(b['name'] for b in biased) or 'none'}; a frame every "
          f"{settings['interval_ps']} ps")
    header = "chain  frames    ns  Kish ESS  " + "  ".join(f"{t['name']:>30s}" for t in phis)
    print(header + "\n" + " " * 32 + "  ".join(f"{'sampled / reweighted / entries':>30s}" for _ in phis))
    total = 0
    for f in files:
        with np.load(f) as d:
            x, bias = d["positions"].astype(float), d["bias"].astype(float)
        if not len(x):
            continue
        total += len(x)
        w = np.exp((bias - bias.max()) / kT)
        cols = []
        for t in phis:
            up = dihedral(x, t["atoms"]) > 0
            entries = int(np.sum(np.diff(up.astype(int)) == 1))
            cols.append(f"{100 * up.mean():8.2f} % / {100 * np.average(up, weights=w):6.2f} % / {entries:5d}")
        print(f"{f.stem[5:]:>5s} {len(x):7d} {len(x) * settings['interval_ps'] / 1000:5.1f}  "
              f"{w.sum() ** 2 / (w ** 2).sum() / len(w):8.2f}  " + "  ".join(f"{c:>30s}" for c in cols))
    print(f"all: {total} frames, {total * settings['interval_ps'] / 1000:.1f} ns")


if __name__ == "__main__":
    main(*sys.argv[1:])
