"""docs/results.md and its plots from evaluated flows (evaluate.py computes the numbers).

Kept apart from evaluate.py so that a change to the report's layout does not invalidate the
evaluation cache, whose key covers the code that computes the numbers.
"""
from pathlib import Path

import numpy as np

from . import metrics
from .forcefield import KT
from .repo_paths import repo_relative

PAPER = {"smooth": "42 %", "spline": "38 %", "affine": "< 1 %"}
RAMACHANDRAN_COLUMNS = 5  # panels per row of ramachandran.png


def plots(results, reference_phi_psi, out: Path, bins: int):
    """free_energy_phi_psi.png and ramachandran.png in ``out``."""
    from . import plots
    import matplotlib.pyplot as plt
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    centers = np.degrees(0.5 * (edges[1:] + edges[:-1]))
    ref_phi, ref_psi, ref_w = reference_phi_psi
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, name, ref, idx in ((axes[0], "phi", ref_phi, 0), (axes[1], "psi", ref_psi, 1)):
        ax.plot(centers, metrics.free_energy_profile(ref, edges, weights=ref_w, kT=KT), "k-", lw=2,
                label="ff99SB-ILDN MD (reweighted)")
        for r in results:
            phi, psi, w = r["_angles"]
            vals = phi if idx == 0 else psi
            ax.plot(centers, metrics.free_energy_profile(vals, edges, kT=KT), "--", label=f"{r['label']} flow")
            ax.plot(centers, metrics.free_energy_profile(vals, edges, weights=w, kT=KT), ":",
                    label=f"{r['label']} reweighted")
        ax.set_xlabel(f"{name} (degrees)")
        ax.set_ylabel("free energy (kJ/mol)")
        ax.set_ylim(0, 40)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "free_energy_phi_psi.png", dpi=120)
    plt.close(fig)
    panels = [("ff99SB-ILDN MD (reweighted)", ref_phi, ref_psi, ref_w)] + [
        (f"{r['label']} flow", *r["_angles"][:2], None) for r in results]
    cols = min(len(panels), RAMACHANDRAN_COLUMNS)
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 4 * rows), squeeze=False)
    for ax, (title, phi, psi, w) in zip(axes.flat, panels):
        plots.ramachandran_panel(ax, phi, psi, title, weights=w, bins=bins)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "ramachandran.png", dpi=120)
    plt.close(fig)


def _percent_number(v: float) -> str:
    """A fraction as a percentage number: 3 significant digits, 2 below 1 %."""
    return f"{100 * v:.3g}" if v >= 0.01 else f"{100 * v:.2g}"


def write_report(results, meta, out: Path, report: Path):
    """The markdown report: one table row per flow, the paper's numbers beside them."""
    lines = ["# Alanine dipeptide: flows against Amber ff99SB-ILDN", "",
             f"Evaluated {meta['date']} at commit {meta['commit']} on {meta['machine']}; "
             f"{meta['samples']} flow samples per model; held-out frames: {meta['test_frames']} "
             f"(setting {meta['setting']})." + (f" {meta['note']}" if meta.get("note") else ""), "",
             "| flow | NLL held-out (nats) | force RMSE (kJ/mol/nm) | ESS/n (95 % bootstrap) | paper ESS/n "
             "| KL phi/psi (flow) | KL phi/psi (reweighted) | phi > 0 (flow / reweighted / MD) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        lo, hi = r["sampling_efficiency_95"]
        lines.append(f"| {r['label']} | {r['nll_nats']:.2f} | {r['force_rmse_kj_mol_nm']:.1f} | "
                     f"{_percent_number(r['sampling_efficiency'])} % ({_percent_number(lo)}-{_percent_number(hi)} %) | "
                     f"{PAPER.get(r['transform'], '-')} | "
                     f"{r['kl_phi_psi_flow']:.3f} | {r['kl_phi_psi_reweighted']:.3f} | "
                     f"{100 * r['phi_positive_fraction_flow']:.1f} % / "
                     f"{100 * r['phi_positive_fraction_reweighted']:.1f} % / "
                     f"{100 * meta['reference_phi_positive']:.1f} % |")
    lines += ["", "The flow potential's shape along single bonds and angles (the rest held at held-out frames): "
              "the shallowest well, i.e. the energy a coordinate needs to leave it (docs/design.md, \"Well depth\"; "
              "a harmonic bond needs about 100 kJ/mol or more for 2 fs, docs/bounded_wells/report.md), and the "
              "curvature relative to ff99SB-ILDN (1 is right; below 1 the flow's conditional density is too wide).", "",
              "| flow | shallowest bond well (kJ/mol) | shallowest angle well (kJ/mol) | median well (kJ/mol) "
              "| shallowest | stiffness bonds / ff | stiffness angles / ff |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['well_depth_bonds_kj_mol']:.0f} | {r['well_depth_angles_kj_mol']:.0f} | "
                     f"{r['well_depth_median_kj_mol']:.0f} | {r['shallowest_well']} | "
                     f"{r['stiffness_ratio_bonds']:.2f} | {r['stiffness_ratio_angles']:.2f} |")
    rel = lambda p: repo_relative(p, base=report.parent)
    lines += ["", f"![free energy along phi and psi]({rel(out / 'free_energy_phi_psi.png')})", "",
              f"![Ramachandran plots]({rel(out / 'ramachandran.png')})", ""]
    report.write_text("\n".join(lines) + "\n")
