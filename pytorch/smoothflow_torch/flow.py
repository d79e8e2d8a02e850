"""The SmoothFlow model: a coupling flow over a molecule's internal coordinates."""

from __future__ import annotations

import math
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from . import priors
from . import zmatrix as zm
from .coupling import CouplingLayer
from .transforms import TRANSFORMS, AffineConstants, SmoothConstants, SplineConstants

__all__ = ["MOLAR_GAS_CONSTANT", "SUPPORT_POLICIES", "SmoothFlow", "wall_clamp"]

#: R in kJ/mol/K; kT = R T.
MOLAR_GAS_CONSTANT = 0.00831446261815324
#: Policies for configurations outside the flow's support (``docs/model-format.md`` 5.2).
SUPPORT_POLICIES = ("error", "wall")
_ATOM_KEYS = ("name", "residue", "residue_index", "element")


def wall_clamp(u: torch.Tensor, margin: float) -> torch.Tensor:
    """The smooth clamp c(u) of the ``wall`` policy (``docs/model-format.md`` 5.2).

    ``c(u) = u`` on [2m, 1 - 2m], ``m + m (1 + tanh((u - 2m) / m))`` below,
    ``1 - c(1 - u)`` above. C2 at the joins; c maps the real line into (m, 1 - m).

    Parameters
    ----------
    u : torch.Tensor
    margin : float or torch.Tensor
        m, in (0, 0.25); a tensor broadcast against u gives each dimension its own (the bonds'
        ``margin`` and the angles' ``angle_margin``: :meth:`SmoothFlow.wall_margins`).

    Returns
    -------
    torch.Tensor
    """
    m = margin if isinstance(margin, torch.Tensor) else float(margin)
    # the C core's order of operations (docs/model-format.md 5.2), so both count the
    # same coordinates as clamped (c(u) != u) even where u - c(u) is a rounding error
    low = 2.0 * m + m * torch.tanh((u - 2.0 * m) / m)
    high = 1.0 - (2.0 * m + m * torch.tanh((1.0 - u - 2.0 * m) / m))
    return torch.where(u < 2.0 * m, low, torch.where(u > 1.0 - 2.0 * m, high, u))


def wall_energy(u: torch.Tensor, clamped: torch.Tensor, wall_constant: float,
                edge_lower: Optional[torch.Tensor] = None, edge_upper: Optional[torch.Tensor] = None
                ) -> torch.Tensor:
    """The ``wall`` policy's energy, summed over the last axis (``docs/model-format.md`` 5.2):
    k/2 (u - c)^2 + g |u - c|, g the edge force of u's side (the lower face's below 1/2),
    0 without edge forces. kJ/mol."""
    t = u - clamped
    # the C core's order: 0.5 k t t, then + g |t| (docs/model-format.md 5.2)
    e = 0.5 * wall_constant * t * t
    if edge_lower is not None:
        e = e + torch.where(u < 0.5, edge_lower, edge_upper) * t.abs()
    return e.sum(-1)


class SmoothFlow(nn.Module):
    """A normalizing flow over internal coordinates, usable as an MD potential.

    The flow maps the latent z (uniform on the unit cube/torus) to the normalized
    internal coordinates u by its coupling layers in generative order (layer 0 acts
    first on z). The energy of Cartesian positions r is (``docs/model-format.md`` 5)

        U(r) = -kT [ log p_U(u) - sum_d log(scale_d) - log J(q) ] + U0.

    The module's ``state_dict`` holds exactly the model file's tensors (``bond_lo``,
    ``bond_hi``, ``layers.{l}.net.{m}.weight`` / ``.bias``).

    Parameters
    ----------
    zmatrix : array_like
        ``(N, 4)`` rows ``[a, j, k, l]`` of model atom indices in placement order.
    bond_lo, bond_hi : array_like
        ``(N-1,)`` bond bounds in nm, in dimension (row) order; ``bond_hi > bond_lo``.
    layers : sequence of dict
        Layer configurations as in the model file: ``transformed``, ``conditioning``
        (default: all other dimensions), ``n_components`` (default 8), ``hidden``
        (default [64, 64]), ``activation`` (default ``silu``), ``direction`` (default
        ``generative``), ``transform`` (``smooth`` (default), ``spline`` or ``affine``).
    temperature : float
        Kelvin; kT = R T.
    energy_offset : float
        U0, kJ/mol.
    atoms : sequence of dict, optional
        N entries with ``name``, ``residue``, ``residue_index``, ``element``.
    smooth : SmoothConstants or dict, optional
        Constants of the smooth transform (defaults 0.01, 0.1, 0.99, 1).
    spline : SplineConstants or dict, optional
        Constants of the spline transform (min_bin_width, min_bin_height, min_derivative;
        defaults 1e-3 each). Keyword only.
    affine : AffineConstants or dict, optional
        Constants of the affine transform (scale_max, default 3). Keyword only.
    support : dict, optional
        ``policy`` (``error`` or ``wall``), ``margin`` (0.01), ``wall_constant`` (1000),
        optionally ``edge_force_lower`` and ``edge_force_upper``, and ``angle_margin``
        (the angles' margin, default ``margin``) (:meth:`set_support`).
    prior : str or dict
        ``"uniform"``, or ``{"kind": "truncated_normal", "mean": [...], "sigma": [...]}`` with
        one mean and sigma per bond and angle, optionally with ``"torsion_mean"`` and
        ``"torsion_kappa"`` (von Mises torsions; :mod:`smoothflow_torch.priors`).
    zero_init : bool
        Zero the conditioners' last linear maps (a new flow whose transforms do not
        depend on the conditioning inputs).
    dtype : torch.dtype
    """

    def __init__(self, zmatrix, bond_lo, bond_hi, layers: Sequence[dict],
                 temperature: float = 300.0, energy_offset: float = 0.0,
                 atoms: Optional[Sequence[dict]] = None,
                 smooth: Union[SmoothConstants, dict, None] = None,
                 support: Optional[dict] = None, prior: Union[str, dict] = "uniform",
                 zero_init: bool = True, dtype: torch.dtype = torch.float64, *,
                 spline: Union[SplineConstants, dict, None] = None,
                 affine: Union[AffineConstants, dict, None] = None):
        super().__init__()
        Z = zm.validate_zmatrix(zmatrix)
        N = Z.shape[0]
        self.n_atoms = N
        self.n_dims = 3 * N - 6
        self.zmatrix = Z
        lo = torch.as_tensor(np.asarray(bond_lo, dtype=np.float64), dtype=dtype).reshape(-1)
        hi = torch.as_tensor(np.asarray(bond_hi, dtype=np.float64), dtype=dtype).reshape(-1)
        if lo.shape != (N - 1,) or hi.shape != (N - 1,):
            raise ValueError(f"bond_lo and bond_hi need shape ({N - 1},), got "
                             f"{tuple(lo.shape)} and {tuple(hi.shape)}")
        if not (torch.isfinite(lo).all() and torch.isfinite(hi).all()):
            raise ValueError("bond_lo and bond_hi must be finite")
        bad = torch.nonzero(~(hi > lo)).flatten().tolist()
        if bad:
            d = bad[0]
            raise ValueError(f"bond_hi must exceed bond_lo: dimension {d} (bond "
                             f"{Z[d + 1, 0]}-{Z[d + 1, 1]}) has [{lo[d].item()}, "
                             f"{hi[d].item()}]")
        self.register_buffer("bond_lo", lo)
        self.register_buffer("bond_hi", hi)

        temperature = float(temperature)
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(f"temperature must be > 0 K, got {temperature}")
        self.temperature = temperature
        self.energy_offset = float(energy_offset)
        if not math.isfinite(self.energy_offset):
            raise ValueError("energy_offset must be finite")
        self.set_prior(prior, dtype)
        self.atoms = self._check_atoms(atoms, N)
        self.smooth = self._constants(smooth, SmoothConstants)
        self.spline = self._constants(spline, SplineConstants)
        self.affine = self._constants(affine, AffineConstants)
        constants = {"smooth": self.smooth, "spline": self.spline, "affine": self.affine}
        self.set_support(**(support or {}))

        circular = [False] * (2 * N - 3) + [True] * (N - 3)
        self.circular = circular
        mods = []
        for i, spec in enumerate(layers):
            spec = dict(spec)
            transform = spec.pop("transform", "smooth")
            if transform not in TRANSFORMS:
                raise ValueError(f"layer {i}: unknown transform {transform!r} (expected one "
                                 f"of {TRANSFORMS})")
            transformed = spec.pop("transformed")
            conditioning = spec.pop("conditioning", None)
            if conditioning is None:
                conditioning = [d for d in range(self.n_dims) if d not in set(transformed)]
            try:
                mods.append(CouplingLayer(
                    transformed, conditioning, circular,
                    n_components=spec.pop("n_components", 8),
                    hidden=spec.pop("hidden", (64, 64)),
                    activation=spec.pop("activation", "silu"),
                    direction=spec.pop("direction", "generative"),
                    constants=constants[transform], zero_init=zero_init, dtype=dtype,
                    transform=transform))
            except ValueError as e:
                raise ValueError(f"layer {i}: {e}") from None
            if spec:
                raise ValueError(f"layer {i}: unknown fields {sorted(spec)}")
        self.layers = nn.ModuleList(mods)

    # ------------------------------------------------------------ metadata
    @staticmethod
    def _constants(value, cls):
        if value is None:
            return cls()
        if isinstance(value, dict):
            return cls(**value)
        if not isinstance(value, cls):
            raise ValueError(f"expected {cls.__name__} or a dict, got {type(value).__name__}")
        return value

    @property
    def transforms_used(self) -> list:
        """The transform kinds of the layers, each once, in the order of TRANSFORMS."""
        # no set comprehension: TorchScript compiles properties and rejects SetComp
        return [k for k in TRANSFORMS if any([layer.transform == k for layer in self.layers])]

    @staticmethod
    def _check_atoms(atoms, N):
        if atoms is None:
            return None
        atoms = [dict(a) for a in atoms]
        if len(atoms) != N:
            raise ValueError(f"atoms has {len(atoms)} entries, expected n_atoms = {N}")
        for i, a in enumerate(atoms):
            missing = [k for k in _ATOM_KEYS if k not in a]
            if missing:
                raise ValueError(f"atoms[{i}] lacks {missing}")
            for k in ("name", "residue", "element"):
                if not isinstance(a[k], str):
                    raise ValueError(f"atoms[{i}].{k} must be a string")
            ri = a["residue_index"]
            if isinstance(ri, bool) or not isinstance(ri, int) or ri < 0:
                raise ValueError(f"atoms[{i}].residue_index must be an integer >= 0")
        return atoms

    def set_support(self, policy: str = "error", margin: float = 0.01,
                    wall_constant: float = 1000.0, edge_force_lower=None, edge_force_upper=None,
                    angle_margin: Optional[float] = None) -> None:
        """Set the policy for configurations outside the support.

        Parameters
        ----------
        policy : str
            ``error``: raise ValueError naming the coordinate. ``wall``: smooth clamp of
            the interval coordinates plus a harmonic wall (``docs/model-format.md`` 5.2).
        margin : float
            m in (0, 0.25).
        wall_constant : float
            k >= 0, kJ/mol.
        edge_force_lower, edge_force_upper : sequence of float, optional
            The wall's linear term per interval dimension (2N - 3 each, >= 0, kJ/mol per
            unit of u): the flow's restoring force at the lower and upper edge of the wall
            zone (:func:`smoothflow_torch.edge_force.edge_forces`). Both or neither; only
            under ``wall``.
        angle_margin : float, optional
            The angles' m in (0, 0.25) (default: ``margin``, which then holds for bonds only).
            The angle zone starts 2 m pi from collinear; there the Cartesian derivatives of the
            torsions through the angle grow as 1/sin(theta), so a small margin makes the wall
            stiff (``docs/model-format.md`` 5.2).
        """
        if policy not in SUPPORT_POLICIES:
            raise ValueError(f"support policy must be one of {SUPPORT_POLICIES}, got {policy!r}")
        margin = float(margin)
        wall_constant = float(wall_constant)
        if not (0.0 < margin < 0.25):
            raise ValueError(f"support margin must lie in (0, 0.25), got {margin}")
        angle_margin = margin if angle_margin is None else float(angle_margin)
        if not (0.0 < angle_margin < 0.25):
            raise ValueError(f"support angle_margin must lie in (0, 0.25), got {angle_margin}")
        if not (wall_constant >= 0.0 and math.isfinite(wall_constant)):
            raise ValueError(f"support wall_constant must be >= 0, got {wall_constant}")
        if (edge_force_lower is None) != (edge_force_upper is None):
            raise ValueError("give both edge_force_lower and edge_force_upper, or neither")
        edges = None
        if edge_force_lower is not None:
            if policy != "wall":
                raise ValueError("edge forces act only under the wall policy, not under 'error'")
            edges = [torch.as_tensor(e, dtype=self.bond_lo.dtype).detach().clone().reshape(-1)
                     for e in (edge_force_lower, edge_force_upper)]
            for name, e in zip(("edge_force_lower", "edge_force_upper"), edges):
                if e.numel() != self.n_interval:
                    raise ValueError(f"{name} needs 2 n_atoms - 3 = {self.n_interval} values, got {e.numel()}")
                if not bool(((e >= 0) & (e <= 1e12)).all()):
                    raise ValueError(f"{name} values must lie in [0, 1e12] kJ/mol per unit of u")
        self.support_policy = policy
        self.margin = margin
        self.angle_margin = angle_margin
        self.wall_constant = wall_constant
        # not in the state_dict: the model file holds them in the config's support section
        self.register_buffer("edge_force_lower", None if edges is None else edges[0], persistent=False)
        self.register_buffer("edge_force_upper", None if edges is None else edges[1], persistent=False)

    def wall_margins(self) -> torch.Tensor:
        """The wall's margin of each interval dimension, (2N - 3,): ``margin`` for the bonds,
        ``angle_margin`` for the angles."""
        m = torch.full((self.n_interval,), self.margin, dtype=self.dtype, device=self.bond_lo.device)
        m[self.n_atoms - 1:] = self.angle_margin
        return m

    @property
    def kT(self) -> float:
        """R T in kJ/mol."""
        return MOLAR_GAS_CONSTANT * self.temperature

    @property
    def dtype(self) -> torch.dtype:
        return self.bond_lo.dtype

    @property
    def n_interval(self) -> int:
        """Number of interval dimensions (bonds and angles), 2N - 3."""
        return 2 * self.n_atoms - 3

    def set_prior(self, prior, dtype=None) -> None:
        """Replace the latent prior (checked; the format of the ``prior`` argument). A resumed
        training sets the checkpoint's prior with this: a data-fitted prior refitted on another
        CPU can differ in the last bits (BLAS sums)."""
        N = self.n_atoms
        dtype = dtype if dtype is not None else self.bond_lo.dtype
        self.prior = priors.check_prior(prior, 2 * N - 3, N - 3)
        normal = self.prior != "uniform"
        circular = normal and "torsion_mean" in self.prior
        for name, key, present in (("torsion_mean", "torsion_mean", circular), ("torsion_kappa", "torsion_kappa", circular),
                                   ("prior_mean", "mean", normal), ("prior_sigma", "sigma", normal)):
            self.register_buffer(name, torch.tensor(self.prior[key] if present else [], dtype=dtype,
                                                    device=self.bond_lo.device), persistent=False)

    def config(self) -> dict:
        """The model file's ``config`` object (``docs/model-format.md`` section 2)."""
        cfg = {
            "n_atoms": self.n_atoms,
            "temperature": self.temperature,
            "energy_offset": self.energy_offset,
            "zmatrix": self.zmatrix.tolist(),
        }
        if self.atoms is not None:
            cfg["atoms"] = [{k: a[k] for k in _ATOM_KEYS} for a in self.atoms]
        cfg["prior"] = self.prior
        # the constants of the kinds the layers use (docs/model-format.md section 2)
        for kind in self.transforms_used:
            cfg[kind] = getattr(self, kind).to_dict()
        cfg["support"] = {"policy": self.support_policy, "margin": self.margin,
                          "wall_constant": self.wall_constant}
        if self.angle_margin != self.margin:  # absent: the angles take margin (older files)
            cfg["support"]["angle_margin"] = self.angle_margin
        if self.edge_force_lower is not None:
            cfg["support"]["edge_force_lower"] = self.edge_force_lower.tolist()
            cfg["support"]["edge_force_upper"] = self.edge_force_upper.tolist()
        cfg["layers"] = [layer.config() for layer in self.layers]
        return cfg

    def describe_dimension(self, d: int) -> str:
        """Human-readable name of dimension d, e.g. ``bond 3-1 (Z-matrix row 2)``."""
        N = self.n_atoms
        if d < N - 1:
            r = d + 1
            a, j = self.zmatrix[r, :2]
            return f"bond {a}-{j} (Z-matrix row {r}, dimension {d})"
        if d < 2 * N - 3:
            r = d - N + 3
            a, j, k = self.zmatrix[r, :3]
            return f"angle {a}-{j}-{k} (Z-matrix row {r}, dimension {d})"
        r = d - 2 * N + 6
        a, j, k, l = self.zmatrix[r]
        return f"torsion {a}-{j}-{k}-{l} (Z-matrix row {r}, dimension {d})"

    # ------------------------------------------------------------ the flow
    def forward(self, x: torch.Tensor, inverse: bool = False
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run the flow (bgflow convention).

        Parameters
        ----------
        x : torch.Tensor
            ``(B, D)``: z when ``inverse=False`` (generative pass z -> u), u when
            ``inverse=True`` (density pass u -> z).
        inverse : bool

        Returns
        -------
        y : torch.Tensor
            ``(B, D)``: u, or z.
        dlogp : torch.Tensor
            ``(B,)``: log |det du/dz|, or log |det dz/du|.
        """
        dlogp = x.new_zeros(x.shape[0])
        layers = reversed(self.layers) if inverse else self.layers
        for layer in layers:
            x, ld = layer(x, inverse=inverse)
            dlogp = dlogp + ld
        return x, dlogp

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p_Z(z) ``(B,)``: 0 for the uniform prior on the unit cube/torus; the truncated
        normal prior's log density over the interval dims, plus the torsions' von Mises
        densities where the prior has them (else torsions are uniform)."""
        if self.prior == "uniform":
            return z.new_zeros(z.shape[0])
        logp = priors.truncated_normal_log_prob(z[:, :self.n_interval], self.prior_mean, self.prior_sigma)
        if self.torsion_mean.numel():
            logp = logp + priors.von_mises_log_prob(z[:, self.n_interval:], self.torsion_mean, self.torsion_kappa)
        return logp

    def log_prob_u(self, u: torch.Tensor) -> torch.Tensor:
        """log p_U(u) of points ``(B, D)`` of the unit cube/torus, shape ``(B,)``."""
        z, dlogp = self.forward(u, inverse=True)
        return self.log_prior(z) + dlogp

    def sample_u(self, n: int, generator: Optional[torch.Generator] = None
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Draw u from the flow: returns ``(u, log p_U(u))``, differentiable in the weights."""
        z = torch.rand(n, self.n_dims, generator=generator, dtype=self.dtype,
                       device=self.bond_lo.device)
        if self.prior != "uniform":
            torsions = z[:, self.n_interval:]
            if self.torsion_mean.numel():
                torsions = priors.von_mises_sample(n, self.torsion_mean, self.torsion_kappa, generator)
            z = torch.cat([priors.truncated_normal_sample(n, self.prior_mean, self.prior_sigma, generator),
                           torsions], dim=1)
        u, dlogp = self.forward(z)
        return u, self.log_prior(z) - dlogp

    # ------------------------------------------------------------ coordinates
    def _as_positions(self, positions) -> torch.Tensor:
        if isinstance(positions, torch.Tensor):
            x = positions if positions.dtype == self.dtype else positions.to(self.dtype)
        else:   # lists and arrays straight to the flow's precision (not via float32)
            x = torch.as_tensor(np.asarray(positions, dtype=np.float64), dtype=self.dtype,
                                device=self.bond_lo.device)
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() != 3 or x.shape[1:] != (self.n_atoms, 3):
            raise ValueError(f"positions must have shape (B, {self.n_atoms}, 3), "
                             f"got {tuple(x.shape)}")
        return x

    def internal(self, positions, box=None
                 ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Bonds, angles, torsions of ``positions`` (see :func:`zmatrix.internal_coordinates`)."""
        x = self._as_positions(positions)
        return zm.internal_coordinates(x, self.zmatrix, box)

    def internal_coordinates(self, positions, box=None) -> torch.Tensor:
        """Normalized internal coordinates u, ``(B, D)`` (not checked against the support)."""
        b, a, t = self.internal(positions, box)
        return zm.normalize(b, a, t, self.bond_lo, self.bond_hi)

    def to_cartesian(self, u: torch.Tensor) -> torch.Tensor:
        """Cartesian positions ``(B, N, 3)`` (canonical frame) from u ``(B, D)``."""
        b, a, t = zm.denormalize(u, self.bond_lo, self.bond_hi)
        return zm.cartesian(b, a, t, self.zmatrix)

    def log_scale(self) -> torch.Tensor:
        """sum_d log(scale_d)."""
        if torch.jit.is_tracing():
            # A trace records bond_lo.shape as int64 tensors, and zm.log_scale's
            # (N - 2) log pi would then promote to float32 (the default dtype): the same
            # sum with the atom count as a Python int.
            N = self.n_atoms
            return (torch.log(self.bond_hi - self.bond_lo).sum(-1)
                    + ((N - 2) * math.log(math.pi) + (N - 3) * math.log(2.0 * math.pi)))
        return zm.log_scale(self.bond_lo, self.bond_hi)

    # ------------------------------------------------------------ energy
    def energy_of_u(self, v: torch.Tensor) -> torch.Tensor:
        """The energy (kJ/mol, no wall term) at the point v ``(B, D)`` the flow sees:
        -kT [log p_U(v) - sum log scale - log J(q(v))] + U0, differentiable in v."""
        bonds, angles, _ = zm.denormalize(v, self.bond_lo, self.bond_hi)
        return -self.kT * (self.log_prob_u(v) - self.log_scale() - zm.log_jacobian(bonds, angles)) + self.energy_offset

    def _check_geometry(self, x, bonds, angles, box=None):
        if box is not None:
            b = torch.as_tensor(box, dtype=x.dtype).reshape(-1, 3, 3)
            if not bool(torch.isfinite(b).all()) or not bool(
                    ((b[:, 0, 0] > 0) & (b[:, 1, 1] > 0) & (b[:, 2, 2] > 0)).all()):
                raise ValueError("periodic box vectors are not finite and positive")
        if not bool(torch.isfinite(x).all()):
            bad = torch.nonzero(~torch.isfinite(x))[0].tolist()
            raise ValueError(f"configuration {bad[0]}: non-finite position of atom {bad[1]}")
        zero_bond = bonds <= 0
        if bool(zero_bond.any()):
            i, d = torch.nonzero(zero_bond)[0].tolist()
            raise ValueError(f"configuration {i}: degenerate geometry, "
                             f"{self.describe_dimension(d)} has zero length")
        flat = zm.degenerate_angles(x, self.zmatrix, box)
        if bool(flat.any()):
            i, d = torch.nonzero(flat)[0].tolist()
            raise ValueError(f"configuration {i}: degenerate geometry, "
                             f"{self.describe_dimension(self.n_atoms - 1 + d)} = "
                             f"{angles[i, d].item()} rad (collinear atoms)")
        bad = zm.degenerate_torsions(x, self.zmatrix, box)
        if bool(bad.any()):
            i, d = torch.nonzero(bad)[0].tolist()
            raise ValueError(f"configuration {i}: degenerate geometry, "
                             f"{self.describe_dimension(2 * self.n_atoms - 3 + d)} is "
                             f"undefined (three of its atoms are collinear)")

    def _check_support(self, u, bonds):
        ui = u[:, :self.n_interval]
        out = (ui < 0) | (ui > 1)
        if bool(out.any()):
            i, d = torch.nonzero(out)[0].tolist()
            if d < self.n_atoms - 1:
                raise ValueError(
                    f"configuration {i}: {self.describe_dimension(d)} = "
                    f"{bonds[i, d].item():.10g} nm is outside the flow's support "
                    f"[{self.bond_lo[d].item():.10g}, {self.bond_hi[d].item():.10g}] nm "
                    f"(support policy 'error')")
            raise ValueError(f"configuration {i}: {self.describe_dimension(d)} has "
                             f"u = {ui[i, d].item():.10g} outside [0, 1] "
                             f"(support policy 'error')")

    def wall_dims(self, positions, box=None) -> torch.Tensor:
        """Per configuration, the interval coordinates the wall's clamp moves (c(u) != u, as
        the C core counts them: inside the zone u < 2m or u > 1 - 2m, less the points so close
        to its edge that the clamp leaves them unchanged)."""
        with torch.no_grad():
            u = self.internal_coordinates(positions, box)[:, :self.n_interval]
            return (wall_clamp(u, self.wall_margins()) != u).sum(-1)

    def reduced_terms(self, positions, box=None) -> dict:
        """The pieces of the energy, for inspection and training.

        Returns
        -------
        dict
            ``u`` (normalized coordinates), ``u_flow`` (what the flow sees: u, or the
            clamped u under the wall policy), ``log_prob_u``, ``log_jacobian``,
            ``log_scale``, ``wall`` (kJ/mol), all differentiable.
        """
        x = self._as_positions(positions)
        bonds, angles, torsions = zm.internal_coordinates(x, self.zmatrix, box)
        # The checks only raise; their Python branches on tensor values cannot be traced
        # (smoothflow_torch.torchscript), so a traced energy does not validate its input.
        checked = not torch.jit.is_tracing()
        if checked:
            self._check_geometry(x, bonds, angles, box)
        u = zm.normalize(bonds, angles, torsions, self.bond_lo, self.bond_hi)
        nI = self.n_interval
        if self.support_policy == "error":
            if checked:
                self._check_support(u.detach(), bonds.detach())
            u_flow = u
            wall = u.new_zeros(u.shape[0])
            log_jacobian = zm.log_jacobian(bonds, angles)
        else:
            ui = u[:, :nI]
            ci = wall_clamp(ui, self.wall_margins())
            u_flow = torch.cat([ci, u[:, nI:]], dim=-1)
            wall = wall_energy(ui, ci, self.wall_constant, self.edge_force_lower, self.edge_force_upper)
            # The Jacobian term too is taken at the clamped point (docs/model-format.md 5.2):
            # log J diverges at collinear angles, where a flow's density does not vanish.
            bonds_c, angles_c, _ = zm.denormalize(u_flow, self.bond_lo, self.bond_hi)
            log_jacobian = zm.log_jacobian(bonds_c, angles_c)
        return {"u": u, "u_flow": u_flow, "log_prob_u": self.log_prob_u(u_flow),
                "log_jacobian": log_jacobian,
                "log_scale": self.log_scale(), "wall": wall}

    def energy(self, positions, box=None) -> torch.Tensor:
        """Potential energy in kJ/mol, shape ``(B,)``.

        Parameters
        ----------
        positions : array_like
            ``(B, N, 3)`` or ``(N, 3)``, nm, model atom order.
        box : array_like, optional
            ``(3, 3)`` OpenMM reduced box vectors (rows a, b, c) in nm, or ``(B, 3, 3)``.

        Raises
        ------
        ValueError
            Non-finite positions, degenerate geometry, or (policy ``error``) a bond
            outside its bounds; the message names the configuration, atoms and value.
        """
        t = self.reduced_terms(positions, box)
        return (-self.kT * (t["log_prob_u"] - t["log_scale"] - t["log_jacobian"])
                + self.energy_offset + t["wall"])

    def energy_and_forces(self, positions, box=None, create_graph: bool = False
                          ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Energy ``(B,)`` and forces ``-dU/dr`` ``(B, N, 3)`` by autograd.

        Parameters
        ----------
        positions, box
            As for :meth:`energy`.
        create_graph : bool
            Keep the graph, so that the forces can be differentiated with respect to
            the weights (force matching).
        """
        x = self._as_positions(positions)
        if box is not None:
            box = torch.as_tensor(box, dtype=x.dtype, device=x.device)
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            E = self.energy(x, box)
            (g,) = torch.autograd.grad(E.sum(), x, create_graph=create_graph)
        if not create_graph:
            E = E.detach()
        return E, -g

    def log_prob(self, positions, box=None) -> torch.Tensor:
        """log q(r) = -(U(r) - U0)/kT, the flow's log density over positions modulo rigid motion."""
        return -(self.energy(positions, box) - self.energy_offset) / self.kT

    # ------------------------------------------------------------ sampling
    def sample(self, n: int, generator: Optional[torch.Generator] = None,
               return_log_prob: bool = False):
        """Sample configurations from the flow.

        z from the prior (uniform on [0, 1]^D, or truncated normals for the bonds and
        angles), u by the generative pass, then Cartesian positions in the
        canonical frame of :func:`zmatrix.cartesian`. Differentiable in the weights.

        Parameters
        ----------
        n : int
        generator : torch.Generator, optional
        return_log_prob : bool
            Also return log q(r) = log p_U(u) - sum log scale - log J(q), the density
            whose ``-kT`` multiple (plus U0) is the energy under the ``error`` policy.

        Returns
        -------
        positions : torch.Tensor
            ``(n, N, 3)``.
        log_prob : torch.Tensor
            ``(n,)``, only with ``return_log_prob``.
        """
        u, logp_u = self.sample_u(n, generator)
        b, a, t = zm.denormalize(u, self.bond_lo, self.bond_hi)
        x = zm.cartesian(b, a, t, self.zmatrix)
        if not return_log_prob:
            return x
        return x, logp_u - self.log_scale() - zm.log_jacobian(b, a)
