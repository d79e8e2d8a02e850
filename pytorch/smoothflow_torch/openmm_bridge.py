"""OpenMM as a differentiable target energy for training (reverse KL).

:class:`OpenMMEnergy` evaluates an ``openmm.System``'s potential energy and forces for a batch
of configurations ``(B, N, 3)`` (nm, float64) on one OpenMM Context (the Reference platform by
default, double precision), and returns the reduced energy ``u = E / kT`` as a torch tensor
whose gradient with respect to the positions is ``-F / kT``. The gradient comes from OpenMM's
forces (exact, analytic), not from finite differences; the function is differentiable once
(the forces' own derivatives are not available), which is all that the reparameterized reverse
KL ``mean(u(x(theta)) + log q(x(theta)))`` needs.

Robustness (samples of an untrained flow clash):

- **Non-finite results.** When OpenMM raises for a configuration (e.g. NaN positions) or
  returns a non-finite energy or any non-finite force, that configuration gets ``u = +inf``
  (zero density under the target) and a zero gradient. :func:`smoothflow_torch.training.reverse_kl`
  leaves such samples out of its mean and counts them.
- **High energies (optional).** With ``high_energy`` set (in kT, on the absolute reduced
  energy), energies above it continue logarithmically, the "linlog cut" of bgflow's
  ``LinLogCutEnergy``:

      u' = u                              for u <= u_high
      u' = u_high + log(1 + u - u_high)   for u >  u_high,   du'/du = 1 / (1 + u - u_high)

  C1 at the join, monotone, and a clash of 1e10 kT contributes about u_high + 23 with a
  gradient 1e10 times smaller, so one bad sample cannot dominate a batch's gradient. The cut
  changes the target only where u > u_high; put u_high far above the energies of the
  Boltzmann ensemble (for alanine dipeptide the data's maximum plus hundreds of kT).

Units: positions nm, energies kJ/mol, forces kJ/mol/nm, kT = R T kJ/mol.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch

from .flow import MOLAR_GAS_CONSTANT

__all__ = ["OpenMMEnergy", "OpenMMEnergyFunction", "linlog_cut"]


def linlog_cut(u: np.ndarray, high: Optional[float]) -> Tuple[np.ndarray, np.ndarray]:
    """The linlog cut of reduced energies (module docstring).

    Parameters
    ----------
    u : numpy.ndarray
        Reduced energies (finite or not).
    high : float or None
        u_high; None: no cut.

    Returns
    -------
    u_cut : numpy.ndarray
    slope : numpy.ndarray
        du_cut/du (1 below the cut).
    """
    u = np.asarray(u, dtype=np.float64)
    if high is None:
        return u.copy(), np.ones_like(u)
    excess = np.where(u > high, u - high, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        cut = np.where(u > high, high + np.log1p(excess), u)
        slope = np.where(u > high, 1.0 / (1.0 + excess), 1.0)
    return cut, slope


class OpenMMEnergyFunction(torch.autograd.Function):
    """``u = E(x) / kT`` by OpenMM with ``du/dx = -F(x) / kT`` (once differentiable).

    ``OpenMMEnergyFunction.apply(positions, bridge, cut)``; use :meth:`OpenMMEnergy.reduced_energy`.
    """

    @staticmethod
    def forward(ctx, positions: torch.Tensor, bridge: "OpenMMEnergy", cut: bool):
        x = positions.detach().to("cpu", torch.float64).numpy()
        energies, forces, ok = bridge.evaluate(x)
        kT = bridge.kT
        u = np.where(ok, energies / kT, np.inf)
        grad = np.where(ok[:, None, None], -forces / kT, 0.0)
        if cut and bridge.high_energy is not None:
            u_fin = np.where(ok, u, 0.0)
            u_cut, slope = linlog_cut(u_fin, bridge.high_energy)
            u = np.where(ok, u_cut, np.inf)
            grad = grad * slope[:, None, None]
        bridge.last_n_invalid = int((~ok).sum())
        bridge.last_n_cut = (int((ok & (energies / kT > bridge.high_energy)).sum())
                             if (cut and bridge.high_energy is not None) else 0)
        g = torch.from_numpy(grad).to(dtype=positions.dtype, device=positions.device)
        ctx.save_for_backward(g)
        return torch.from_numpy(u).to(dtype=positions.dtype, device=positions.device)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        (g,) = ctx.saved_tensors
        # Entries with u = +inf have g = 0; a masked loss passes grad_output = 0 for them.
        return grad_output[:, None, None] * g, None, None


class OpenMMEnergy:
    """An OpenMM System as a batched, differentiable reduced energy for training.

    Parameters
    ----------
    system : openmm.System
        The target (e.g. ff99SB-ILDN + OBC for alanine dipeptide). Particle order must be the
        flow's model atom order. The object keeps a reference so the Context never outlives it.
    temperature : float
        Kelvin; kT = R T.
    platform : str
        OpenMM platform name (``Reference``: double precision, deterministic, single thread,
        and for a 22-atom molecule as fast as any).
    platform_properties : dict, optional
    high_energy : float, optional
        u_high of the linlog cut in kT (module docstring); None: no cut.
    groups : int or set
        Force groups to evaluate (OpenMM's ``getState(groups=...)``; -1: all).

    Attributes
    ----------
    last_n_invalid, last_n_cut : int
        Of the last batch: configurations with non-finite results (u = +inf), and
        configurations above the cut.
    """

    def __init__(self, system, temperature: float = 300.0, platform: str = "Reference",
                 platform_properties: Optional[dict] = None, high_energy: Optional[float] = None,
                 groups=-1):
        import openmm

        self.system = system
        self.temperature = float(temperature)
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"temperature must be > 0 K, got {temperature}")
        self.high_energy = None if high_energy is None else float(high_energy)
        self.groups = groups
        self.n_atoms = system.getNumParticles()
        self._integrator = openmm.VerletIntegrator(0.001)
        plat = openmm.Platform.getPlatformByName(platform)
        self.context = openmm.Context(system, self._integrator, plat, dict(platform_properties or {}))
        self.platform = platform
        self.last_n_invalid = 0
        self.last_n_cut = 0

    @property
    def kT(self) -> float:
        """R T in kJ/mol."""
        return MOLAR_GAS_CONSTANT * self.temperature

    def evaluate(self, positions) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Raw energies and forces (no cut).

        Parameters
        ----------
        positions : array_like
            ``(B, N, 3)`` or ``(N, 3)`` nm.

        Returns
        -------
        energies : numpy.ndarray
            ``(B,)`` kJ/mol (NaN where not ``ok``).
        forces : numpy.ndarray
            ``(B, N, 3)`` kJ/mol/nm (0 where not ``ok``).
        ok : numpy.ndarray
            ``(B,)`` bool: OpenMM returned a finite energy and finite forces.
        """
        import openmm
        from openmm import unit

        x = np.asarray(positions, dtype=np.float64)
        if x.ndim == 2:
            x = x[None]
        if x.ndim != 3 or x.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"positions must have shape (B, {self.n_atoms}, 3), got {x.shape}")
        B = x.shape[0]
        energies = np.full(B, np.nan)
        forces = np.zeros((B, self.n_atoms, 3))
        ok = np.zeros(B, dtype=bool)
        e_unit = unit.kilojoule_per_mole
        f_unit = unit.kilojoule_per_mole / unit.nanometer
        for b in range(B):
            if not np.isfinite(x[b]).all():
                continue
            try:
                self.context.setPositions(x[b])
                state = self.context.getState(getEnergy=True, getForces=True, groups=self.groups)
                e = state.getPotentialEnergy().value_in_unit(e_unit)
                f = state.getForces(asNumpy=True).value_in_unit(f_unit)
            except (openmm.OpenMMException, ValueError, OverflowError):
                continue
            f = np.asarray(f, dtype=np.float64)
            if math.isfinite(e) and np.isfinite(f).all():
                energies[b] = e
                forces[b] = f
                ok[b] = True
        return energies, forces, ok

    def reduced_energy(self, positions: torch.Tensor, cut: bool = True) -> torch.Tensor:
        """u = E / kT, ``(B,)``, differentiable in ``positions`` (gradient -F / kT).

        Non-finite results give +inf with zero gradient; with ``cut`` and ``high_energy``
        set, the linlog cut is applied (module docstring).
        """
        x = positions if isinstance(positions, torch.Tensor) else torch.as_tensor(
            np.asarray(positions, dtype=np.float64))
        if x.dim() == 2:
            x = x.unsqueeze(0)
        return OpenMMEnergyFunction.apply(x, self, bool(cut))

    __call__ = reduced_energy

    def energy(self, positions: torch.Tensor, cut: bool = False) -> torch.Tensor:
        """E in kJ/mol, ``(B,)``, differentiable (gradient -F); no cut by default."""
        return self.kT * self.reduced_energy(positions, cut=cut)
