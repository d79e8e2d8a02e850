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

from smoothflow_torch.pipeline.weights import joint_states

MOLAR_GAS_CONSTANT = 0.00831446261815324   # kJ/mol/K, as OpenMM


def dihedral(x, idx):
    """IUPAC dihedral (radians) of atoms idx over frames x (n, N, 3)."""
    b1, b2, b3 = x[:, idx[1]] - x[:, idx[0]], x[:, idx[2]] - x[:, idx[1]], x[:, idx[3]] - x[:, idx[2]]
    n1, n2 = np.cross(b1, b2), np.cross(b2, b3)
    y = np.linalg.norm(b2, axis=-1) * np.einsum("ij,ij->i", b1, n2)
    return np.arctan2(y, np.einsum("ij,ij->i", n1, n2))


def weights_of(bias, kT):
    """Boltzmann weights exp(V/kT) of frames sampled with the bias energy V added (largest 1)."""
    return np.exp((bias - bias.max()) / kT)


def joint_populations(up, chain, weights):
    """Reweighted populations of each joint state of the boolean columns ``up`` (frames x k):
    {pattern (tuple of bools): (sampled fraction, reweighted population, standard error over
    chains or nan with one chain)}; the weights are normalized within each chain."""
    with np.errstate(divide="ignore"):
        return joint_states(up, np.log(np.asarray(weights, float)), chain)


def conditional_population(up, chain, weights, i):
    """P(column i | every other column False) reweighted: its mean over the groups ``chain``
    (chains, or blocks of them) that hold such frames, the standard error, and how many did."""
    up, chain, weights = np.asarray(up, bool), np.asarray(chain), np.asarray(weights, float)
    others = ~np.delete(up, i, axis=1).any(axis=1)
    values = []
    for c in np.unique(chain):
        m = (chain == c) & others
        if weights[m].sum() > 0:
            values.append(weights[m] @ up[m, i] / weights[m].sum())
    values = np.array(values)
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return float(values.mean()), float(se), len(values)


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
    total, ups, chains, weights = 0, [], [], []
    for f in files:
        with np.load(f) as d:
            x, bias = d["positions"].astype(float), d["bias"].astype(float)
        if not len(x):
            continue
        total += len(x)
        w = weights_of(bias, kT)
        up_all = np.stack([dihedral(x, t["atoms"]) > 0 for t in phis], axis=1)
        ups.append(up_all), chains.append(np.full(len(x), int(f.stem[5:]))), weights.append(w)
        cols = []
        for k, t in enumerate(phis):
            up = up_all[:, k]
            entries = int(np.sum(np.diff(up.astype(int)) == 1))
            cols.append(f"{100 * up.mean():8.2f} % / {100 * np.average(up, weights=w):6.2f} % / {entries:5d}")
        print(f"{f.stem[5:]:>5s} {len(x):7d} {len(x) * settings['interval_ps'] / 1000:5.1f}  "
              f"{w.sum() ** 2 / (w ** 2).sum() / len(w):8.2f}  " + "  ".join(f"{c:>30s}" for c in cols))
    print(f"all: {total} frames, {total * settings['interval_ps'] / 1000:.1f} ns")
    if not total:
        return
    up, chain, w = np.concatenate(ups), np.concatenate(chains), np.concatenate(weights)
    names = [t["name"][4:] for t in phis]
    print("\nphi > 0 of each residue given phi < 0 for the others (reweighted, +- standard error over chains):")
    for k, name in enumerate(names):
        mean, se, _ = conditional_population(up, chain, w, k)
        print(f"  {name}: {100 * mean:6.2f} % +- {100 * se:.2f} %")
    print("\njoint alpha_L states (phi > 0 at once): sampled / reweighted +- standard error over chains")
    for pattern, (sampled, pop, se) in joint_populations(up, chain, w).items():
        label = " + ".join(n for n, u in zip(names, pattern) if u) or "none"
        print(f"  {label:>20s}: {100 * sampled:6.2f} % / {100 * pop:7.3f} % +- {100 * se:.3f} %")


if __name__ == "__main__":
    main(*sys.argv[1:])
