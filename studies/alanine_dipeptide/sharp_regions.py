"""Where is a flow potential too sharp for the integrator? The diagnostic behind
docs/design.md ("Ramp sharpness").

An NVE run that heats under a flow potential usually crosses a small region where the flow's
energy bends much more sharply than the force field's.  This script finds it:

1. re-runs one NVE run of the main job (same start frame, same velocity seed) through the
   plugin on the Reference platform, recording every step;
2. lists the largest single-step jumps of the total energy;
3. at the biggest jump, finds the internal coordinate along which the flow energy has the
   largest curvature (second differences in u, the normalized coordinate) at points along
   that step;
4. scans the energy along that coordinate (the others fixed) and splits it by coupling layer,
   so the layer (and the transform) that makes the feature is named.

Usage (from studies/): python -m alanine_dipeptide.sharp_regions MODEL [--dt-fs 2] [--start 0]
       [--ps 10] [--out report.md]
"""
import argparse
from pathlib import Path

import numpy as np
import torch
from smoothflow_torch import load_model

from . import data, energy_conservation


def trace_nve(model: Path, dt_fs: float, ps: float, start: int, n_starts: int = 4,
              platform: str = "Reference"):
    """One main-job NVE run (its start ``start`` of ``n_starts``, and its seed), every step:
    total energies ``(steps,)`` kJ/mol and positions ``(steps, N, 3)`` nm."""
    import openmm
    import openmm.unit as unit
    ec = energy_conservation
    integrator = openmm.VerletIntegrator(dt_fs * unit.femtoseconds)
    context = ec.thermalized_context(ec.flow_system(model), integrator,
                                     ec.start_frames(data.load_reference("obc").test, n_starts)[start],
                                     ec.NVE_SEED + start, platform)
    energies, positions = [], []
    for _ in range(int(round(ps * 1000 / dt_fs))):
        integrator.step(1)
        s = context.getState(getEnergy=True, getPositions=True)
        e = (s.getPotentialEnergy() + s.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)
        energies.append(e)
        positions.append(s.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
        if not np.isfinite(e):
            break
    return np.array(energies), np.array(positions)


def largest_jumps(energies: np.ndarray, n: int = 8):
    """The ``n`` largest single-step changes of ``energies``: ``[(step, change)]``, where the
    change is ``energies[step] - energies[step - 1]``."""
    d = np.diff(energies)
    order = np.argsort(-np.abs(d))[:n]
    return [(int(i) + 1, float(d[i])) for i in order]


def coordinate_curvatures(energy, u: np.ndarray, h: float = 1e-4) -> np.ndarray:
    """Second differences ``(E(u + h e_d) - 2 E(u) + E(u - h e_d)) / h^2`` for every d."""
    e0 = energy(u)
    out = np.empty(len(u))
    for d in range(len(u)):
        up, um = u.copy(), u.copy()
        up[d] += h
        um[d] -= h
        out[d] = (energy(up) - 2.0 * e0 + energy(um)) / h ** 2
    return out


def flow_energy_u(flow):
    """``u -> -kT log p_U(u)`` in kJ/mol (the flow's part of the energy, without the
    internal-coordinate Jacobian, which a torsion does not change)."""
    def energy(u):
        with torch.no_grad():
            return float(-flow.kT * flow.log_prob_u(torch.as_tensor(u)[None])[0])
    return energy


def sharpest_along_step(flow, xa: np.ndarray, xb: np.ndarray, points: int = 11):
    """Over ``points`` points of the straight path from ``xa`` to ``xb``: the coordinate with
    the largest |d2E/du2|. Returns ``(dim, curvature kJ/mol, t, u at that point)``."""
    energy = flow_energy_u(flow)
    best = (None, 0.0, 0.0, None)
    for t in np.linspace(0.0, 1.0, points):
        x = torch.as_tensor(xa + t * (xb - xa))[None]
        u = flow.internal_coordinates(x)[0].detach().numpy().copy()
        c = np.abs(coordinate_curvatures(energy, u))
        d = int(np.argmax(c))
        if c[d] > best[1]:
            best = (d, float(c[d]), float(t), u)
    return best


def layer_scan(flow, u: np.ndarray, dim: int, lo: float, hi: float, n: int = 41) -> dict:
    """The flow energy (kJ/mol) along coordinate ``dim`` from ``lo`` to ``hi`` with the others
    at ``u``, and its split: ``layers[i]`` = -kT x the log-determinant of the i-th layer in
    the density direction (data side first), ``prior`` = -kT log p_Z."""
    vals = torch.linspace(lo, hi, n, dtype=torch.float64)
    h = torch.as_tensor(u).repeat(n, 1)
    h[:, dim] = vals
    parts = []
    with torch.no_grad():
        for layer in reversed(flow.layers):
            h, logdet = layer(h, inverse=True)
            parts.append(-flow.kT * logdet)
        prior = -flow.kT * flow.log_prior(h)
    layers = torch.stack(parts).numpy()
    return {"values": vals.numpy(), "total": layers.sum(0) + prior.numpy(), "layers": layers,
            "prior": prior.numpy()}


def _range_and_step(e: np.ndarray):
    return float(e.max() - e.min()), float(np.abs(np.diff(e)).max())


def report(model: Path, dt_fs: float, start: int, ps: float, energies, positions, flow) -> str:
    lines = [f"# Sharp regions: {model}", "",
             f"NVE at {dt_fs} fs from start {start} (the main job's start and seed), {len(energies)} steps "
             f"of {ps} ps. Total energy: first tenth {energies[:len(energies) // 10].mean():.2f}, last tenth "
             f"{energies[-(len(energies) // 10):].mean():.2f} kJ/mol.", "",
             "Largest single-step jumps of the total energy (step: kJ/mol): " +
             ", ".join(f"{s}: {d:+.2f}" for s, d in largest_jumps(energies)), ""]
    step = largest_jumps(energies, 1)[0][0]
    a, b = max(step - 2, 0), min(step, len(positions) - 1)
    dim, curv, t, u = sharpest_along_step(flow, positions[a], positions[b])
    lines += [f"Along steps {a} -> {b} the flow energy bends most along {flow.describe_dimension(dim)}: "
              f"d2E/du2 = {curv:.3g} kJ/mol (at t = {t:.1f} of the path, u = {u[dim]:.4f}).", ""]
    scan = layer_scan(flow, u, dim, u[dim] - 0.02, u[dim] + 0.02)
    rng, jump = _range_and_step(scan["total"])
    lines += [f"Energy along that coordinate over u +- 0.02 ({0.04 * 360:.0f} degrees for a torsion): range "
              f"{rng:.2f} kJ/mol, largest change between neighbouring points (du = 0.001) {jump:.2f} kJ/mol.", "",
              "| layer (density direction) | transformed | energy range (kJ/mol) | largest change per du = 0.001 |",
              "|---|---|---|---|"]
    for i, (layer, e) in enumerate(zip(reversed(flow.layers), scan["layers"])):
        r, j = _range_and_step(e)
        t_dims = layer.transformed
        lines.append(f"| {i} ({layer.transform}) | {t_dims[:4]}{' ...' if len(t_dims) > 4 else ''} | {r:.2f} | {j:.2f} |")
    r, j = _range_and_step(scan["prior"])
    lines.append(f"| prior | | {r:.2f} | {j:.2f} |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--dt-fs", type=float, default=2.0)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--ps", type=float, default=10.0)
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    torch.set_num_threads(1)
    model = Path(args.model)
    energies, positions = trace_nve(model, args.dt_fs, args.ps, args.start)
    text = report(model, args.dt_fs, args.start, args.ps, energies, positions, load_model(model))
    if args.out:
        Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
