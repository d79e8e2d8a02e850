"""results/evaluation.md and its plots from evaluated flows (evaluate.py computes the numbers).

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
FREE_ENERGY_FLOWS_PER_ROW = 3  # flows per row of free_energy_phi_psi.png (two panels each)


def plots(results, reference_phi_psi, out: Path, bins: int):
    """free_energy_phi_psi.png and ramachandran.png in ``out``."""
    import matplotlib.pyplot as plt
    for name, figure in (("free_energy_phi_psi.png", _free_energy_figure(results, reference_phi_psi, bins)),
                         ("ramachandran.png", _ramachandran_figure(results, reference_phi_psi, bins))):
        figure.savefig(out / name, dpi=120)
        plt.close(figure)


def _free_energy_figure(results, reference_phi_psi, bins: int):
    """One pair of panels (phi, psi) per flow, each against the reference MD: with a dozen
    flows on one axis the curves cannot be told apart."""
    edges = np.linspace(-np.pi, np.pi, bins + 1)
    centers = np.degrees(0.5 * (edges[1:] + edges[:-1]))
    ref_phi, ref_psi, ref_w = reference_phi_psi
    reference = [metrics.free_energy_profile(v, edges, weights=ref_w, kT=KT) for v in (ref_phi, ref_psi)]
    fig, axes = _panel_grid(2 * len(results), 2 * FREE_ENERGY_FLOWS_PER_ROW, 3.5, 2.7)
    for i, r in enumerate(results):
        phi, psi, w = r["_angles"]
        for j, (angle, vals) in enumerate((("phi", phi), ("psi", psi))):
            ax = axes[2 * i + j]
            ax.plot(centers, reference[j], "k-", lw=2, label="ff99SB-ILDN MD (reweighted)")
            ax.plot(centers, metrics.free_energy_profile(vals, edges, kT=KT), "C0--", label="flow samples")
            ax.plot(centers, metrics.free_energy_profile(vals, edges, weights=w, kT=KT), "C1:", lw=2,
                    label="flow samples reweighted")
            ax.set_title(f"{r['label']}: {angle}", fontsize=9)
            ax.set_xlabel(f"{angle} (degrees)")
            ax.set_ylabel("free energy (kJ/mol)")
            ax.set_xlim(-180, 180)
            ax.set_ylim(0, 40)
    axes[0].legend(fontsize=7, loc="upper center")
    fig.tight_layout()
    return fig


def _ramachandran_figure(results, reference_phi_psi, bins: int):
    """The reference MD's histogram, then one panel per flow (its unweighted samples)."""
    from . import plots
    ref_phi, ref_psi, ref_w = reference_phi_psi
    panels = [("ff99SB-ILDN MD (reweighted)", ref_phi, ref_psi, ref_w)] + [
        (f"{r['label']} flow", *r["_angles"][:2], None) for r in results]
    fig, axes = _panel_grid(len(panels), RAMACHANDRAN_COLUMNS, 4, 4)
    for ax, (title, phi, psi, w) in zip(axes, panels):
        plots.ramachandran_panel(ax, phi, psi, title, weights=w, bins=bins)
    fig.tight_layout()
    return fig


def _panel_grid(n_panels: int, per_row: int, width: float, height: float):
    """A figure with ``n_panels`` axes of width x height inches, ``per_row`` to a row; the
    grid's spare axes are hidden, and the n_panels in use come back in reading order."""
    import matplotlib.pyplot as plt
    cols = min(n_panels, per_row)
    rows = -(-n_panels // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)
    for ax in axes.flat[n_panels:]:
        ax.axis("off")
    return fig, list(axes.flat[:n_panels])


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
              "a harmonic bond needs about 100 kJ/mol or more for 2 fs, bounded_wells/report.md), and the "
              "curvature relative to ff99SB-ILDN (1 is right; below 1 the flow's conditional density is too wide).", "",
              "| flow | shallowest bond well (kJ/mol) | shallowest angle well (kJ/mol) | median well (kJ/mol) "
              "| shallowest | stiffness bonds / ff | stiffness angles / ff |", "|---|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['well_depth_bonds_kj_mol']:.0f} | {r['well_depth_angles_kj_mol']:.0f} | "
                     f"{r['well_depth_median_kj_mol']:.0f} | {r['shallowest_well']} | "
                     f"{r['stiffness_ratio_bonds']:.2f} | {r['stiffness_ratio_angles']:.2f} |")
    if any("pooled" in r for r in results):
        lines += ["", weights_report([r for r in results if "pooled" in r], meta, heading="##")]
    rel = lambda p: repo_relative(p, base=report.parent)
    lines += ["", f"![free energy along phi and psi]({rel(out / 'free_energy_phi_psi.png')})", "",
              f"![Ramachandran plots]({rel(out / 'ramachandran.png')})", ""]
    report.write_text("\n".join(lines) + "\n")


def _k_hat(k: float) -> str:
    return "no tail" if k == float("-inf") else f"{k:.2f}"


def weights_report(results, meta, heading: str = "#") -> str:
    """Markdown tables of the pooled importance-weight statistics (evaluate.pooled_weight_statistics)
    of each result's "pooled" entry: one row per flow, then the heaviest samples of each flow."""
    seeds = meta.get("seeds", [])
    lines = [f"{heading} Importance weights pooled over independent sample sets", "",
             f"Evaluated {meta['date']} at commit {meta['commit']} on {meta['machine']}; {len(seeds)} sets of "
             f"{meta['samples']} flow samples per model (seeds {', '.join(map(str, seeds))}), setting "
             f"{meta['setting']}; weights against ff99SB-ILDN." + (f" {meta['note']}" if meta.get("note") else ""),
             "", "Pooled ESS/n self-normalizes over the union of the sets; the per-set values show how much one "
             "set can vary.  k-hat is PSIS's Pareto tail shape of the pooled weights (< 0.5 good, 0.5-0.7 "
             "usable, >= 0.7 the estimate is unreliable); per set, its largest.  The phi > 0 interval is the "
             "delta-method 95 % interval of the self-normalized estimate (trustworthy only with k-hat < 0.7).", "",
             "| flow | samples | pooled ESS/n | per-set ESS/n: mean +- sd (min-max) | k-hat pooled (largest per set) "
             "| largest weight / mean | phi > 0 reweighted (95 %) | phi > 0 per set (min-max) | phi > 0 MD |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        p = r["pooled"]
        e, f = p["ess"], p["fraction"]
        lo, hi = f["interval"]
        lines.append(
            f"| {r['label']} | {e['n_total']} | {_percent_number(e['pooled'])} % | "
            f"{_percent_number(e['mean'])} +- {_percent_number(e['std'])} % "
            f"({_percent_number(e['min'])}-{_percent_number(e['max'])} %) | "
            f"{_k_hat(p['k_hat'])} ({_k_hat(max(p['k_hat_per_set']))}) | {p['largest'][0]['relative_to_mean']:.0f} | "
            f"{100 * f['estimate']:.2f} % ({100 * lo:.2f}-{100 * hi:.2f} %) | "
            f"{100 * min(p['fraction_per_set']):.2f}-{100 * max(p['fraction_per_set']):.2f} % | "
            f"{100 * p['reference_phi_positive']:.2f} % |")
    lines += ["", "The heaviest samples of each flow (pooled normalized weight; phi/psi in degrees; "
              "ff99SB-ILDN energy): where the flow under-covers the target.", "",
              "| flow | rank | seed | sample | weight / mean | normalized weight | phi | psi | energy (kJ/mol) |",
              "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        for rank, t in enumerate(r["pooled"]["largest"], 1):
            lines.append(f"| {r['label']} | {rank} | {t['seed']} | {t['index']} | {t['relative_to_mean']:.1f} | "
                         f"{t['weight']:.3g} | {t['phi_deg']:.0f} | {t['psi_deg']:.0f} | {t['energy_kj_mol']:.1f} |")
    return "\n".join(lines)
