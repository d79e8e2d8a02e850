"""LJ13: importance weights of the free-form flow against the true LJ13 potential (issue 24's
statistics for the shipped LJ13 flow; docs/free-form-flows.md section 9).

Samples are drawn from the density the MD potential is, p_f(x) = p_Z(f(x)) |det J_V(x)|, exactly
(``smoothflow_torch.particles.sampling``: x = f^-1(z) from the decoder's start, Newton on V), and
weighed w = exp(-u(x)) / p_f(x), u the true LJ13 energy in kT. Per seed a set of ``--samples``;
reported: ESS/n pooled over all sets and per set, PSIS's Pareto k-hat, the largest weights with
their energies, the samples the inversion could not place (Newton not converged, det J_V <= 0:
weight zero) and, with ``--decoder-density``, the same for the decoder's own samples g(z).

    python studies/lj13_free_form/lj13_weights.py [--seeds 1 2 3 4] [--samples 2500]
        [--model models/lj13/free_form.safetensors] [--decoder ...decoder.safetensors]
        [--decoder-density] [--work runs/lj13_weights] [--out studies/lj13_free_form/results]

Each finished set is kept in WORK/seed_<s>_<n>.npz, so an interrupted run resumes; OUT receives
importance_weights.json and importance_weights.md (machine, date and commit with the numbers).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "models" / "lj13" / "free_form.safetensors"
DEFAULT_DECODER = ROOT / "models" / "lj13" / "free_form.decoder.safetensors"
DEFAULT_OUT = ROOT / "studies" / "lj13_free_form" / "results"
DEFAULT_WORK = ROOT / "runs" / "lj13_weights"
#: equivariant flow matching's LJ13 ESS (Klein, Kraemer, Noe 2023, Table 1, as transcribed in
#: docs/particle-systems.md section 7): other data and training budgets, a yardstick only
LITERATURE_ESS = {"equivariant CNF, likelihood training": 0.3978, "OT flow matching": 0.5436,
                  "equivariant OT flow matching": 0.5798}
KEYS = ("log_w_exact", "u_exact", "log_q_exact", "converged", "det_sign", "iterations", "residual",
        "log_w_decoder", "u_decoder")


def draw_set(f, g, seed: int, n: int, work: Path, decoder_density: bool, chunk: int) -> dict:
    """One set of ``n`` samples for ``seed`` (from WORK when it was drawn before)."""
    import torch
    from tqdm import tqdm
    from smoothflow_torch.particles.sampling import draw
    from smoothflow_torch import provenance
    from smoothflow_torch.particles.systems import lj13_energy

    path = work / f"seed_{seed}_{n}{'_dec' if decoder_density else ''}.npz"
    if path.exists():
        with np.load(path) as d:
            return {k: d[k] for k in d.files}
    torch.set_num_threads(1)
    t0 = time.time()
    with tqdm(total=n, desc=f"seed {seed}", unit="sample", file=sys.stderr) as bar:
        res = draw(f, g, n, seed, energy=lj13_energy, chunk=chunk, decoder_density=decoder_density,
                   progress=bar.update)
    res = {k: v for k, v in res.items() if k in KEYS}
    # a resumed run reports when, where and how long each set was drawn, not the cache's read time
    res["seconds"] = np.float64(time.time() - t0)
    res["drawn"] = np.array(json.dumps(provenance.machine(ROOT, {"torch": torch.__version__})))
    work.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **res)
    tmp.replace(path)
    return res


def _k_hat(log_w):
    """PSIS k-hat, or None for a set too small for the tail fit."""
    from smoothflow_torch.pipeline.weights import pareto_k_hat
    try:
        return pareto_k_hat(log_w)
    except ValueError:
        return None


def statistics(sets: list, key: str = "log_w_exact", count: int = 5) -> dict:
    """Pooled and per-set ESS/n, k-hat and the heaviest samples of the sets' ``key`` weights."""
    from smoothflow_torch.pipeline.weights import largest_weights, pooled_ess

    lw = [s[key] for s in sets]
    pooled = np.concatenate(lw)
    ess = pooled_ess(lw)
    idx, w = largest_weights(pooled, count)
    u_key = "u_exact" if key == "log_w_exact" else "u_decoder"
    u = np.concatenate([s[u_key] for s in sets])
    finite = np.isfinite(pooled)
    return {"pooled_ess": ess["pooled"], "per_set": ess["per_set"], "per_set_mean": ess["mean"],
            "per_set_std": ess["std"], "n_total": ess["n_total"], "k_hat": _k_hat(pooled),
            "k_hat_per_set": [_k_hat(x) for x in lw],
            "zero_weight_fraction": float(1.0 - finite.mean()),
            "largest": [{"index": int(i), "weight_over_mean": float(v * len(pooled)), "u_kt": float(u[i])}
                        for i, v in zip(idx, w)],
            "mean_u_kt": float(np.mean(u[finite & np.isfinite(u)]))}


def report(result: dict) -> str:
    m = result["machine"]
    ex = result["exact"]
    lines = [
        "# LJ13: importance weights of the free-form flow against the true potential", "",
        f"Reported {m['date']} at commit {m['commit']} on {m['cpu']} ({m['cores']} cores); model "
        f"`{result['model']}`, {len(result['seeds'])} sets of {result['samples_per_set']} samples "
        f"drawn in {result['seconds']:.0f} s of one core in all ("
        + "; ".join(f"seed {d['seed']}: {d['seconds']:.0f} s, {d['date'][:16]}, commit {d['commit']}, "
                    f"load {d['load_average'][0] if d.get('load_average') else '?'}"
                    for d in result["sets_drawn"])
        + "). `studies/lj13_free_form/lj13_weights.py`.", "",
        "Samples of the density the MD potential is (p_f, exact: x = f^-1(z) by the decoder's "
        "start and Newton's method), weighed against exp(-u) of the true LJ13 energy. A sample "
        "the inversion cannot place (Newton not converged, det J_V <= 0) has weight zero and "
        "is counted. k-hat < 0.5 good, 0.5-0.7 usable, >= 0.7 unreliable.", "",
        "| sampler | samples | pooled ESS/n | per set: mean +- sd (min-max) | k-hat pooled (largest per set) | largest weight / mean | zero weight |",
        "|---|---|---|---|---|---|---|"]
    rows = [("p_f, exact (the potential's density)", ex)]
    if result.get("decoder"):
        rows.append(("g(z), the decoder's density", result["decoder"]))
    for name, s in rows:
        per = s["per_set"]
        ks = [k for k in s["k_hat_per_set"] if k is not None]
        k_text = (f"{s['k_hat']:.2f}" if s["k_hat"] is not None else "(too few)") + \
            (f" ({max(ks):.2f})" if ks else "")
        lines.append(f"| {name} | {s['n_total']} | {100 * s['pooled_ess']:.1f} % | "
                     f"{100 * s['per_set_mean']:.1f} +- {100 * s['per_set_std']:.1f} % "
                     f"({100 * min(per):.1f}-{100 * max(per):.1f} %) | {k_text} | {s['largest'][0]['weight_over_mean']:.0f} | "
                     f"{100 * s['zero_weight_fraction']:.2f} % |")
    inv = result["inversion"]
    lines += ["", f"Inversion: {100 * inv['converged_fraction']:.2f} % converged to max |f(x) - z| <= "
              f"{inv['tol']:g} ({100 * inv['decoder_only_fraction']:.1f} % by the decoder's iteration "
              f"alone, the rest in {inv['newton_steps_mean']:.1f} Newton steps on average); det J_V < 0 at "
              f"{100 * inv['negative_det_fraction']:.2f} % of the converged samples.", "",
              "Heaviest samples (pooled; u the true energy in kT):", "",
              "| rank | weight / mean | u (kT) |", "|---|---|---|"]
    lines += [f"| {i + 1} | {r['weight_over_mean']:.1f} | {r['u_kt']:.2f} |" for i, r in enumerate(ex["largest"])]
    lines += ["", "Beside the literature's LJ13 ESS (Klein et al. 2023, other data and budgets; "
              "`docs/particle-systems.md` section 7): "
              + "; ".join(f"{k} {100 * v:.1f} %" for k, v in LITERATURE_ESS.items()) + ".", ""]
    return "\n".join(lines)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(DEFAULT_MODEL))
    ap.add_argument("--decoder", default=str(DEFAULT_DECODER))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--samples", type=int, default=2500, help="samples per seed (default 2500)")
    ap.add_argument("--chunk", type=int, default=250)
    ap.add_argument("--decoder-density", action="store_true",
                    help="also weigh the decoder's samples g(z) (its Jacobian: twice the cost)")
    ap.add_argument("--work", default=str(DEFAULT_WORK))
    ap.add_argument("--out", default=str(DEFAULT_OUT))
    args = ap.parse_args(argv)
    if args.samples < 1:
        ap.error("--samples must be at least 1")

    import torch
    from smoothflow_torch import provenance
    from smoothflow_torch.particles.export import load_free_form
    from smoothflow_torch.particles.sampling import load_decoder

    f = load_free_form(args.model)
    g = load_decoder(args.decoder, encoder_file=args.model)
    sets = [draw_set(f, g, s, args.samples, Path(args.work), args.decoder_density, args.chunk)
            for s in args.seeds]
    seconds = float(sum(s["seconds"] for s in sets))
    drawn = [json.loads(str(s["drawn"])) for s in sets]
    conv = np.concatenate([s["converged"] for s in sets])
    sign = np.concatenate([s["det_sign"] for s in sets])
    iters = np.concatenate([s["iterations"] for s in sets])
    result = {
        "model": str(Path(args.model).resolve().relative_to(ROOT)) if Path(args.model).resolve().is_relative_to(ROOT) else args.model,
        "seeds": args.seeds, "samples_per_set": args.samples, "seconds": seconds,
        "exact": statistics(sets),
        "decoder": statistics(sets, "log_w_decoder") if args.decoder_density else None,
        "inversion": {"tol": 1e-9, "converged_fraction": float(conv.mean()),
                      "decoder_only_fraction": float((conv & (iters == 0)).mean()),
                      "newton_steps_mean": float(iters[iters > 0].mean()) if (iters > 0).any() else 0.0,
                      "negative_det_fraction": float((sign[conv] < 0).mean()) if conv.any() else 0.0},
        "literature_ess": LITERATURE_ESS,
        "machine": provenance.machine(ROOT, {"torch": torch.__version__}),
        "sets_drawn": [{"seed": seed, "seconds": float(st["seconds"]), "date": d["date"],
                        "commit": d["commit"], "load_average": d.get("load_average")}
                       for seed, st, d in zip(args.seeds, sets, drawn)],
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "importance_weights.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "importance_weights.md").write_text(report(result))
    print(report(result))
    return result


if __name__ == "__main__":
    main()
