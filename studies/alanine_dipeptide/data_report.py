"""A picture and numbers of a generated data set: is the phi-biased, reweighted MD right?

Plots (one PNG): the static bias V(phi); the free energy along phi from the biased frames
reweighted, per chain (their spread is the sampling error) and pooled, with an unbiased data
set beside it when one is given (e.g. the first 2 x 50 ns of plain MD); and the biased and
reweighted Ramachandran histograms.  Prints a markdown table of the phi > 0 population per
chain.  Everything comes from data.load (weights included) and the shipped bias table.

Usage (from studies/): python -m alanine_dipeptide.data_report [--setting obc]
       [--unbiased ../data/alanine_dipeptide/obc.unbiased.npz] [--out alanine_dipeptide/results/evaluation/data_obc.png]
"""
import argparse
import json
from pathlib import Path

import numpy as np

from . import data, forcefield, metrics, phi_bias, plots

KT = forcefield.KT


def phi_profiles(phi, weights, chain, edges):
    """Pooled and per-chain weighted free energies along phi (kJ/mol, min 0)."""
    pooled = metrics.free_energy_profile(phi, edges, weights=weights, kT=KT)
    per_chain = [metrics.free_energy_profile(phi[chain == c], edges, weights=weights[chain == c], kT=KT)
                 for c in np.unique(chain)]
    return pooled, per_chain


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--setting", default="obc")
    ap.add_argument("--unbiased", help="an unbiased data file (.npz of the same layout) to compare with")
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "results" / "evaluation" / "data_obc.png"))
    args = ap.parse_args()
    import matplotlib.pyplot as plt

    frames = data.load(args.setting, "all")
    with np.load(data.path(args.setting)) as d:
        chain = d["chain"].astype(int)
    phi, psi = data.backbone_dihedrals(frames.positions)
    w = frames.weights
    edges = np.linspace(-np.pi, np.pi, 73)
    centers = np.degrees(0.5 * (edges[1:] + edges[:-1]))
    pooled, per_chain = phi_profiles(phi, w, chain, edges)

    fig, axes = plt.subplots(1, 4, figsize=(18, 4))
    bias = phi_bias.load(args.setting, data.DATA_DIR)
    if bias is not None:
        grid = np.degrees(np.linspace(-np.pi, np.pi, phi_bias.GRID))
        axes[0].plot(grid, bias[0], "C3-")
        axes[0].set_title(f"static bias V(phi), metadynamics gamma = {bias[1]['bias_factor']:g}", fontsize=9)
    axes[0].set_xlabel("phi (degrees)")
    axes[0].set_ylabel("V (kJ/mol)")
    for c, f in enumerate(per_chain):
        axes[1].plot(centers, f, "-", color="0.7", lw=0.8, label="single chains" if c == 0 else None)
    axes[1].plot(centers, pooled, "k-", lw=2, label=f"biased MD reweighted ({len(per_chain)} chains)")
    if args.unbiased:
        with np.load(args.unbiased) as d:
            x_u = d["positions"].astype(np.float64)
        phi_u = data.backbone_dihedrals(x_u)[0]
        axes[1].plot(centers, metrics.free_energy_profile(phi_u, edges, kT=KT), "C0--", lw=1.5,
                     label=f"plain MD ({len(phi_u)} frames)")
    axes[1].set_ylim(0, 45)
    axes[1].set_xlabel("phi (degrees)")
    axes[1].set_ylabel("free energy (kJ/mol)")
    axes[1].legend(fontsize=7)
    axes[1].set_title(f"free energy along phi, ff99SB-ILDN ({args.setting}) 300 K", fontsize=9)
    plots.ramachandran_panel(axes[2], phi, psi, "frames as sampled (biased)")
    plots.ramachandran_panel(axes[3], phi, psi, "frames reweighted to 300 K", weights=w)
    fig.tight_layout()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)

    summary = json.loads((data.DATA_DIR / f"{args.setting}.json").read_text())
    rows = ["| chain | frames | phi > 0 as sampled | phi > 0 reweighted |", "|---|---|---|---|"]
    for c in np.unique(chain):
        m = chain == c
        rows.append(f"| {c} | {m.sum()} | {100 * np.mean(phi[m] > 0):.1f} % | "
                    f"{100 * np.average(phi[m] > 0, weights=w[m]):.2f} % |")
    rows.append(f"| all | {len(phi)} | {100 * np.mean(phi > 0):.1f} % | "
                f"{100 * summary['phi_positive_fraction']:.2f} % +- "
                f"{100 * summary['phi_positive_fraction_stderr']:.2f} % |")
    print("\n".join(rows))
    print(f"\nKish effective sample size of the weights: {100 * summary['weights_kish_ess_fraction']:.1f} % "
          f"of the frames; plot: {out}")


if __name__ == "__main__":
    main()
