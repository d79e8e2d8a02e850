"""Z-matrix internal coordinates in PyTorch: Cartesian -> internal and back.

A Z-matrix is an ``(N, 4)`` integer array of model atom indices in placement order
(``docs/model-format.md`` section 3): row 0 ``[a, -1, -1, -1]`` (atom a at the origin),
row 1 ``[a, j, -1, -1]`` (bond a-j), row 2 ``[a, j, k, -1]`` (bond a-j, angle a-j-k), and
every later row ``[a, j, k, l]`` (bond, angle and torsion a-j-k-l).

The coordinates of a batch are returned as bonds ``(B, N-1)`` of rows 1..N-1, angles
``(B, N-2)`` of rows 2..N-1 in (0, pi), and torsions ``(B, N-3)`` of rows 3..N-1 in
[-pi, pi] (atan2 may return either end for a planar trans torsion; :func:`normalize` maps
both to u = 0), with the IUPAC sign (that of ``mdtraj.compute_dihedrals``):

    b1 = r_j - r_a, b2 = r_k - r_j, b3 = r_l - r_k
    phi = atan2(|b2| b1 . (b2 x b3), (b1 x b2) . (b2 x b3))
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np
import torch

__all__ = [
    "validate_zmatrix",
    "minimum_image",
    "internal_coordinates",
    "degenerate_torsions",
    "normalize",
    "denormalize",
    "log_scale",
    "log_jacobian",
    "cartesian",
    "dimension_kinds",
]


def validate_zmatrix(zmatrix, n_atoms: Optional[int] = None) -> np.ndarray:
    """Check a Z-matrix and return it as an ``(N, 4)`` int64 array.

    Parameters
    ----------
    zmatrix : array_like
        ``N`` rows ``[a, j, k, l]``; -1 where unused.
    n_atoms : int, optional
        Expected N.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    ValueError
        Naming the offending row.
    """
    try:
        rows = [list(r) for r in zmatrix]
    except TypeError as e:
        raise ValueError(f"zmatrix must be a list of rows [a, j, k, l]: {e}") from None
    N = len(rows)
    if n_atoms is not None and N != n_atoms:
        raise ValueError(f"zmatrix has {N} rows, expected n_atoms = {n_atoms}")
    if N < 3:
        raise ValueError(f"a Z-matrix needs at least 3 atoms, got {N}")
    out = np.full((N, 4), -1, dtype=np.int64)
    placed = set()
    for r, row in enumerate(rows):
        if len(row) != 4:
            raise ValueError(f"zmatrix row {r} has {len(row)} entries, expected 4")
        for v in row:
            if isinstance(v, bool) or not float(v).is_integer():
                raise ValueError(f"zmatrix row {r} has a non-integer entry: {row}")
        row = [int(v) for v in row]
        n_used = min(r, 3) + 1
        used, unused = row[:n_used], row[n_used:]
        if any(v != -1 for v in unused):
            raise ValueError(f"zmatrix row {r} = {row}: entries after the first {n_used} "
                             f"must be -1")
        a = used[0]
        if not 0 <= a < N:
            raise ValueError(f"zmatrix row {r} = {row}: atom {a} outside 0..{N - 1}")
        if a in placed:
            raise ValueError(f"zmatrix row {r} = {row}: atom {a} is placed twice")
        refs = used[1:]
        for v in refs:
            if v not in placed:
                raise ValueError(f"zmatrix row {r} = {row}: reference atom {v} is not "
                                 f"placed in an earlier row")
        if len(set(used)) != len(used):
            raise ValueError(f"zmatrix row {r} = {row}: atoms must be distinct")
        placed.add(a)
        out[r] = row
    return out


def dimension_kinds(n_atoms: int) -> Tuple[int, int, int]:
    """Numbers of bond, angle and torsion dimensions: ``(N-1, N-2, N-3)``."""
    return n_atoms - 1, n_atoms - 2, n_atoms - 3


def minimum_image(d: torch.Tensor, box: Optional[torch.Tensor]) -> torch.Tensor:
    """Minimum-image displacement in an OpenMM reduced triclinic box.

    ``box`` rows are a = (ax, 0, 0), b = (bx, by, 0), c = (cx, cy, cz). The
    reduction subtracts c, then b, then a:
    ``d -= c floor(d_z / c_z + 1/2)``; ``d -= b floor(d_y / b_y + 1/2)``;
    ``d -= a floor(d_x / a_x + 1/2)``.

    Parameters
    ----------
    d : torch.Tensor
        Shape ``(B, M, 3)``.
    box : torch.Tensor or None
        ``(3, 3)`` or ``(B, 3, 3)``; None for no periodicity.

    Returns
    -------
    torch.Tensor
    """
    if box is None:
        return d
    if box.dim() == 2:
        box = box.unsqueeze(0)
    a = box[:, 0, :].unsqueeze(1)
    b = box[:, 1, :].unsqueeze(1)
    c = box[:, 2, :].unsqueeze(1)
    d = d - c * torch.floor(d[..., 2:3].detach() / c[..., 2:3] + 0.5)
    d = d - b * torch.floor(d[..., 1:2].detach() / b[..., 1:2] + 0.5)
    d = d - a * torch.floor(d[..., 0:1].detach() / a[..., 0:1] + 0.5)
    return d


def _cross(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return torch.linalg.cross(u, v, dim=-1)


def _dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).sum(-1)


def _norm(u: torch.Tensor) -> torch.Tensor:
    return torch.sqrt((u * u).sum(-1))


def internal_coordinates(positions: torch.Tensor, zmatrix, box=None
                         ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bonds, angles and torsions of a batch of configurations.

    Parameters
    ----------
    positions : torch.Tensor
        Shape ``(B, N, 3)``, nm, in model atom order.
    zmatrix : array_like or torch.Tensor
        ``(N, 4)``.
    box : torch.Tensor, optional
        Periodic box (see :func:`minimum_image`); every displacement vector below is
        reduced to its minimum image.

    Returns
    -------
    bonds : torch.Tensor
        ``(B, N-1)``, |r_a - r_j| of rows 1..N-1.
    angles : torch.Tensor
        ``(B, N-2)``, angle a-j-k (at j) of rows 2..N-1, atan2(|v1 x v2|, v1 . v2) with
        v1 = r_a - r_j, v2 = r_k - r_j.
    torsions : torch.Tensor
        ``(B, N-3)``, dihedral a-j-k-l of rows 3..N-1 (IUPAC sign).
    """
    Z = torch.as_tensor(np.asarray(zmatrix), dtype=torch.long, device=positions.device)
    if box is not None:
        box = torch.as_tensor(box, dtype=positions.dtype, device=positions.device)

    def disp(to, frm):  # r_to - r_from, minimum image
        return minimum_image(positions[:, to, :] - positions[:, frm, :], box)

    a, j, k, l = Z[:, 0], Z[:, 1], Z[:, 2], Z[:, 3]
    bonds = _norm(disp(a[1:], j[1:]))
    v1 = disp(a[2:], j[2:])
    v2 = disp(k[2:], j[2:])
    angles = torch.atan2(_norm(_cross(v1, v2)), _dot(v1, v2))
    b1 = disp(j[3:], a[3:])
    b2 = disp(k[3:], j[3:])
    b3 = disp(l[3:], k[3:])
    n1 = _cross(b1, b2)
    n2 = _cross(b2, b3)
    torsions = torch.atan2(_norm(b2) * _dot(b1, n2), _dot(n1, n2))
    return bonds, angles, torsions


#: |u x v|^2 <= COLLINEAR_SIN2 |u|^2 |v|^2 counts as collinear (sin^2 of the angle below 1e-24),
#: as in the C core: an angle's or torsion's derivatives are undefined there.
COLLINEAR_SIN2 = 1e-24


def _collinear(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return ~(_dot(_cross(u, v), _cross(u, v)) > COLLINEAR_SIN2 * _dot(u, u) * _dot(v, v))


def degenerate_angles(positions: torch.Tensor, zmatrix, box=None) -> torch.Tensor:
    """Where an angle a-j-k is 0 or 180 degrees to within COLLINEAR_SIN2, ``(B, N-2)``."""
    Z = np.asarray(zmatrix)
    with torch.no_grad():
        if box is not None:
            box = torch.as_tensor(box, dtype=positions.dtype, device=positions.device)
        p = positions.detach()
        a, j, k = (torch.as_tensor(Z[2:, c], device=p.device) for c in range(3))
        return _collinear(minimum_image(p[:, a] - p[:, j], box), minimum_image(p[:, k] - p[:, j], box))


def degenerate_torsions(positions: torch.Tensor, zmatrix, box=None) -> torch.Tensor:
    """Where a torsion a-j-k-l is undefined (a, j, k or j, k, l collinear to within
    COLLINEAR_SIN2), ``(B, N-3)``."""
    Z = np.asarray(zmatrix)
    if Z.shape[0] < 4:
        return positions.new_zeros((positions.shape[0], 0), dtype=torch.bool)
    with torch.no_grad():
        if box is not None:
            box = torch.as_tensor(box, dtype=positions.dtype, device=positions.device)
        p = positions.detach()
        a, j, k, l = (torch.as_tensor(Z[3:, c], device=p.device) for c in range(4))
        b1 = minimum_image(p[:, j] - p[:, a], box)
        b2 = minimum_image(p[:, k] - p[:, j], box)
        b3 = minimum_image(p[:, l] - p[:, k], box)
        return _collinear(b1, b2) | _collinear(b2, b3)


def normalize(bonds, angles, torsions, bond_lo, bond_hi) -> torch.Tensor:
    """Map internal coordinates to u in the unit cube/torus, ``(B, D)``.

    bonds: ``(b - lo) / (hi - lo)``; angles: ``theta / pi``; torsions:
    ``(phi + pi) / (2 pi)``, a point of the circle [0, 1): where that is 1 (phi = +pi, or
    an ulp below by rounding) u is 0, the point phi = -pi, as in the C core. On a circle
    where the flow is only C1 (the spline) u = 0 and u = 1 have different one-sided
    forces, so every implementation must pick the same one (``docs/model-format.md`` 3).
    """
    ub = (bonds - bond_lo) / (bond_hi - bond_lo)
    ua = angles / math.pi
    ut = (torsions + math.pi) / (2.0 * math.pi)
    ut = torch.where(ut >= 1.0, ut - 1.0, ut)
    return torch.cat([ub, ua, ut], dim=-1)


def denormalize(u: torch.Tensor, bond_lo, bond_hi
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of :func:`normalize`: ``(bonds, angles, torsions)`` from ``u``."""
    nb = bond_lo.shape[-1]
    N = nb + 1
    ub, ua, ut = u[:, :nb], u[:, nb:nb + N - 2], u[:, nb + N - 2:]
    return (bond_lo + ub * (bond_hi - bond_lo), ua * math.pi,
            ut * (2.0 * math.pi) - math.pi)


def log_scale(bond_lo, bond_hi) -> torch.Tensor:
    """``sum_d log(scale_d)``: log(hi - lo) per bond, log pi per angle, log 2 pi per torsion."""
    N = bond_lo.shape[-1] + 1
    return (torch.log(bond_hi - bond_lo).sum(-1) + (N - 2) * math.log(math.pi)
            + (N - 3) * math.log(2.0 * math.pi))


def log_jacobian(bonds: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """``log J = sum 2 log b + sum log sin theta``, shape ``(B,)``."""
    return 2.0 * torch.log(bonds).sum(-1) + torch.log(torch.sin(angles)).sum(-1)


def cartesian(bonds: torch.Tensor, angles: torch.Tensor, torsions: torch.Tensor,
              zmatrix) -> torch.Tensor:
    """Cartesian positions from internal coordinates (differentiable).

    Row 0's atom sits at the origin, row 1's on the +x axis, row 2's in the xy plane
    (y > 0); every later atom is placed by the natural extension reference frame
    (NeRF) from its bond, angle and torsion.

    Parameters
    ----------
    bonds, angles, torsions : torch.Tensor
        ``(B, N-1)``, ``(B, N-2)``, ``(B, N-3)`` as returned by
        :func:`internal_coordinates`.
    zmatrix : array_like

    Returns
    -------
    torch.Tensor
        ``(B, N, 3)`` in model atom order.
    """
    Z = np.asarray(zmatrix, dtype=np.int64)
    N = Z.shape[0]
    B = bonds.shape[0]
    zero = bonds.new_zeros(B)
    pos = [None] * N
    pos[Z[0, 0]] = bonds.new_zeros(B, 3)
    pos[Z[1, 0]] = torch.stack([bonds[:, 0], zero, zero], -1)
    # row 2: bond to j, angle a-j-k, in the xy plane on the +y side
    a, j, k = Z[2, :3]
    e = pos[k] - pos[j]
    e = e / _norm(e).unsqueeze(-1)          # +-x
    b, th = bonds[:, 1:2], angles[:, 0:1]
    ey = torch.tensor([0.0, 1.0, 0.0], dtype=bonds.dtype, device=bonds.device)
    pos[a] = pos[j] + b * (torch.cos(th) * e + torch.sin(th) * ey)
    for r in range(3, N):
        a, j, k, l = Z[r]
        b = bonds[:, r - 1:r]
        th = angles[:, r - 2:r - 1]
        ph = torsions[:, r - 3:r - 2]
        bc = pos[j] - pos[k]
        bc = bc / _norm(bc).unsqueeze(-1)
        n = _cross(pos[k] - pos[l], bc)
        n = n / _norm(n).unsqueeze(-1)
        m = _cross(n, bc)
        pos[a] = pos[j] + b * (-torch.cos(th) * bc + torch.sin(th) * torch.cos(ph) * m
                               + torch.sin(th) * torch.sin(ph) * n)
    return torch.stack(pos, dim=1)
