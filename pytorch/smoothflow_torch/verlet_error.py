"""The energy error of velocity Verlet on the flow's potential: measured, and as a training bound.

Why this quantity: the main job judges a flow by how well velocity Verlet conserves energy on it,
and hot runs fail by steady heating where the flow's stiffest modes change frequency as the
molecule moves (``docs/reliability.md`` section 5). The stiffness bound looks at one frame's
Hessian at a time and cannot see that variation; the change of total energy over a few velocity
Verlet steps from thermal velocities sees it directly, because it is what the integrator gets
wrong. It is differentiable through the steps (the forces are autograd gradients, so the loss
needs second derivatives of the flow, as force matching does).

- :func:`verlet_energy_change`: E_tot(after ``steps`` steps) - E_tot(before), per frame, for given
  positions and velocities (kJ/mol; nm, ps, dalton: OpenMM's units).
- :func:`thermal_velocities`: Maxwell-Boltzmann velocities at a temperature.
- :func:`verlet_bound`: the trainer's loss, ``mean(relu(|dE| / limit - 1)^2)`` over thermal
  velocities at ``temperature``.
- :func:`openmm_verlet_energy_change`: the same steps run by OpenMM (a ``CustomIntegrator``
  written as velocity Verlet) on any System, e.g. the force field, to set the limit from the
  force field's own error at the same frames and velocities, or the exported flow as an oracle.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

#: Boltzmann's constant, kJ/mol/K (OpenMM's value: MOLAR_GAS_CONSTANT_R / 1000).
KB = 0.0083144626181532

__all__ = ["KB", "thermal_velocities", "verlet_energy_change", "verlet_bound", "velocity_verlet_integrator",
           "openmm_verlet_energy_change"]


def thermal_velocities(masses: torch.Tensor, temperature: float, batch: int,
                       generator: Optional[torch.Generator] = None, dtype=torch.float64) -> torch.Tensor:
    """``(batch, N, 3)`` velocities (nm/ps) drawn from the Maxwell-Boltzmann distribution at
    ``temperature`` (K) for atoms of ``masses`` (dalton). The centre of mass is not removed:
    the flow's energy is translation invariant, so its momentum is conserved and costs nothing."""
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"the temperature must be finite and > 0 K, got {temperature}")
    m = masses.to(dtype)
    sigma = torch.sqrt(KB * temperature / m)[None, :, None]
    return sigma * torch.randn((batch, m.numel(), 3), generator=generator, dtype=dtype)


def _energy_and_forces(flow, x: torch.Tensor, create_graph: bool):
    energy = flow.energy(x)
    (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=create_graph)
    return energy, -grad


def verlet_energy_change(flow, positions: torch.Tensor, velocities: torch.Tensor, masses: torch.Tensor,
                         dt_fs: float, steps: int = 1, create_graph: bool = True) -> torch.Tensor:
    """``(B,)``: total energy after ``steps`` velocity Verlet steps of ``dt_fs`` on the flow's
    potential minus the total energy before (kJ/mol), from ``positions`` ``(B, N, 3)`` (nm) and
    ``velocities`` (nm/ps). With ``create_graph`` the result is differentiable in the flow's
    parameters (each step's forces keep their graph)."""
    if not (dt_fs > 0 and math.isfinite(dt_fs)):
        raise ValueError(f"dt_fs must be finite and > 0 fs, got {dt_fs}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    dt = dt_fs * 1e-3                                     # ps
    m = masses.to(positions.dtype)[None, :, None]
    with torch.enable_grad():
        x = positions.detach().requires_grad_(True)
        v = velocities.detach().to(positions.dtype)
        e0, f = _energy_and_forces(flow, x, True)
        k0 = 0.5 * (m * v * v).flatten(1).sum(dim=1)
        energy = e0
        for _ in range(steps):
            v = v + (0.5 * dt) * f / m
            x = x + dt * v
            energy, f = _energy_and_forces(flow, x, True)
            v = v + (0.5 * dt) * f / m
        k1 = 0.5 * (m * v * v).flatten(1).sum(dim=1)
        change = (energy + k1) - (e0 + k0)
    return change if create_graph else change.detach()


def verlet_bound(flow, positions: torch.Tensor, masses: torch.Tensor, dt_fs: float, temperature: float,
                 limit: float, steps: int = 1, generator: Optional[torch.Generator] = None,
                 return_info: bool = False):
    """The velocity Verlet bound: mean over the frames of ``relu(|dE| / limit - 1)^2``, dE the
    total-energy change of ``steps`` steps of ``dt_fs`` from ``positions`` with thermal
    velocities at ``temperature`` (:func:`verlet_energy_change`); ``limit`` in kJ/mol (set it
    from the force field's own error at the same frames, :func:`openmm_verlet_energy_change`).
    Frames whose change is not finite are left out (counted in the info). ``return_info`` adds
    ``{"max": largest |dE|, "rms": RMS dE, "mean": mean dE, "n_over": frames over the limit,
    "n_invalid": non-finite frames}``."""
    if not (limit > 0 and math.isfinite(limit)):
        raise ValueError(f"the velocity Verlet bound needs a finite limit > 0 kJ/mol, got {limit}")
    v = thermal_velocities(masses, temperature, positions.shape[0], generator, positions.dtype)
    de = verlet_energy_change(flow, positions, v, masses, dt_fs, steps)
    ok = torch.isfinite(de)
    safe = torch.where(ok, de, torch.zeros_like(de))
    per_frame = torch.relu(safe.abs() / limit - 1) ** 2
    n_ok = int(ok.sum())
    loss = per_frame.sum() / max(n_ok, 1)
    if not return_info:
        return loss
    d = safe.detach()[ok]
    info = {"max": float(d.abs().max()) if n_ok else float("nan"),
            "rms": float(d.pow(2).mean().sqrt()) if n_ok else float("nan"),
            "mean": float(d.mean()) if n_ok else float("nan"),
            "n_over": int((d.abs() > limit).sum()), "n_invalid": int(len(de) - n_ok)}
    return loss, info


def velocity_verlet_integrator(dt_fs: float):
    """An OpenMM ``CustomIntegrator`` taking velocity Verlet steps of ``dt_fs`` (half kick, drift,
    force, half kick): its velocities are on-step, unlike ``VerletIntegrator``'s leapfrog ones."""
    import openmm
    integrator = openmm.CustomIntegrator(dt_fs * 1e-3)
    integrator.addComputePerDof("v", "v + 0.5*dt*f/m")
    integrator.addComputePerDof("x", "x + dt*v")
    integrator.addComputePerDof("v", "v + 0.5*dt*f/m")
    return integrator


def openmm_verlet_energy_change(system, positions: np.ndarray, velocities: np.ndarray, dt_fs: float,
                                steps: int = 1, platform: str = "Reference",
                                platform_properties: Optional[dict] = None) -> np.ndarray:
    """:func:`verlet_energy_change` run by OpenMM: ``steps`` velocity Verlet steps of ``dt_fs``
    (a ``CustomIntegrator``: half kick, drift, force, half kick) from each frame of ``positions``
    ``(B, N, 3)`` (nm) with ``velocities`` (nm/ps) on ``system``; returns ``(B,)`` kJ/mol. The
    System must have no constraints and no virtual sites (the steps do not apply them)."""
    import openmm
    from openmm import unit

    if system.getNumConstraints():
        raise ValueError(f"the System has {system.getNumConstraints()} constraints; these steps apply none")
    positions = np.asarray(positions, dtype=float)
    velocities = np.asarray(velocities, dtype=float)
    if positions.shape != velocities.shape or positions.ndim != 3 or positions.shape[1] != system.getNumParticles():
        raise ValueError(f"positions {positions.shape} and velocities {velocities.shape} must both be "
                         f"(B, {system.getNumParticles()}, 3)")
    integrator = velocity_verlet_integrator(dt_fs)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName(platform),
                             dict(platform_properties or {}))
    out = np.empty(len(positions))
    for b in range(len(positions)):
        context.setPositions(positions[b])
        context.setVelocities(velocities[b])
        before = context.getState(getEnergy=True)
        integrator.step(steps)
        after = context.getState(getEnergy=True)
        total = lambda s: (s.getPotentialEnergy() + s.getKineticEnergy()).value_in_unit(unit.kilojoule_per_mole)
        out[b] = total(after) - total(before)
    return out
