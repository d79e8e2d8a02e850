"""Compare data sets of one molecule made under different phi biases (README.md, "The ALA2 check").

Every set estimates the same unbiased distribution, so two things must agree between them:
1. each residue's alpha_L (phi > 0) given the other residues' phi < 0, reweighted; its standard
   error here is over blocks of ``--block-ns`` (default 5 ns) of every chain, because a few long
   chains' scatter understates it;
2. given the phi of ``--given`` in a bin, the fraction of frames whose other residues all have
   beta psi (psi outside -120..50 degrees), at the others' phi < 0: a bias on the given phi alone
   cannot change this, so an unbiased chain and a set biased on that phi must agree bin by bin.

    python studies/alanine_tetrapeptide/compare_data_sets.py PROJECT [PROJECT ...] [--given phi:ALA2]
"""
import argparse
import json
from pathlib import Path

import numpy as np

from data_check import MOLAR_GAS_CONSTANT, conditional_population, dihedral, weights_of

HELIX_PSI = (-120.0, 50.0)            # degrees: alpha_R-like psi; outside it, beta/PPII
GIVEN_BINS = (-180, -140, -115, -90, -70, -50, 0)


def chains(project: Path):
    """[(angles in degrees by torsion name, bias energies)] of each chain file of ``project``."""
    meta = json.loads((project / "project.json").read_text())
    out = []
    for f in sorted((project / "data").glob("chain*.npz"), key=lambda f: int(f.stem[5:])):
        with np.load(f) as d:
            x, bias = d["positions"].astype(float), d["bias"].astype(float)
        if len(x):
            out.append(({t["name"]: np.degrees(dihedral(x, t["atoms"])) for t in meta["torsions"]}, bias))
    return out, MOLAR_GAS_CONSTANT * meta["temperature"]


def block_conditional(sets, kT, residue: str, others, frames_per_block: int):
    """P(phi of ``residue`` > 0 | the ``others``' phi < 0): mean, standard error over blocks of
    about ``frames_per_block`` frames of every chain, and the number of blocks that count."""
    up, block, w, labels = [], [], [], 0
    for angles, bias in sets:
        up.append(np.stack([angles[f"phi:{r}"] > 0 for r in [residue, *others]], axis=1))
        parts = np.array_split(np.arange(len(bias)), max(1, len(bias) // frames_per_block))
        block.append(np.concatenate([np.full(len(part), labels + k) for k, part in enumerate(parts)]))
        labels += len(parts)
        w.append(weights_of(bias, kT))
    return conditional_population(np.concatenate(up), np.concatenate(block), np.concatenate(w), 0)


def beta_neighbours_given(sets, kT, given: str, others):
    """Per bin of the ``given`` phi: (fraction of the others all at beta psi, frames in the bin)."""
    per_set = []
    for angles, bias in sets:
        rest = np.all([angles[f"phi:{o}"] < 0 for o in others], axis=0)
        beta = np.all([(angles[f"psi:{o}"] <= HELIX_PSI[0]) | (angles[f"psi:{o}"] >= HELIX_PSI[1])
                       for o in others], axis=0)
        per_set.append((weights_of(bias, kT), rest, beta, angles[given]))
    rows = []
    for lo, hi in zip(GIVEN_BINS[:-1], GIVEN_BINS[1:]):
        num = den = 0.0
        count = 0
        for w, rest, beta, value in per_set:
            m = rest & (value >= lo) & (value < hi)
            num, den, count = num + w[m] @ beta[m], den + w[m].sum(), count + int(m.sum())
        rows.append((num / den if den > 0 else float("nan"), count))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("projects", nargs="+", type=Path)
    p.add_argument("--given", default="phi:ALA2", help="the phi whose bins part the second table")
    p.add_argument("--block-ns", type=float, default=5.0)
    a = p.parse_args(argv)
    loaded = {}
    for project in a.projects:
        settings = json.loads((project / "data" / "settings.json").read_text())
        sets, kT = chains(project)
        loaded[project] = (sets, kT, max(1, int(round(a.block_ns * 1000 / settings["interval_ps"]))))
    residues = sorted({n[4:] for sets, _, _ in loaded.values() for n in sets[0][0] if n.startswith("phi:")})
    print(f"alpha_L given the others' phi < 0 (+- standard error over {a.block_ns:g}-ns blocks):")
    for project, (sets, kT, block) in loaded.items():
        cells = []
        for r in residues:
            mean, se, n = block_conditional(sets, kT, r, [o for o in residues if o != r], block)
            cells.append(f"{r} {100 * mean:.2f} +- {100 * se:.2f} %")
        print(f"  {str(project):45s} " + "   ".join(cells) + f"   ({n} blocks)")
    others = [r for r in residues if f"phi:{r}" != a.given]
    print(f"\nfraction with {' and '.join(others)} at beta psi, at their phi < 0, given {a.given} in a bin "
          f"(frames in the bin):")
    print(f"  {'':45s} " + " ".join(f"{lo:>5d}..{hi:<5d}" for lo, hi in zip(GIVEN_BINS[:-1], GIVEN_BINS[1:])))
    for project, (sets, kT, _) in loaded.items():
        rows = beta_neighbours_given(sets, kT, a.given, others)
        print(f"  {str(project):45s} " + " ".join(f"{v:.3f}({n:>4d})" for v, n in rows))


if __name__ == "__main__":
    main()
