"""An E(n)-equivariant graph network (Satorras, Hoogeboom, Welling 2021) as a free-form flow.

The network maps particle positions x of shape (..., n, d) to z of the same shape, on the
centre-of-mass-free subspace V = {x : sum_i x_i = 0} of dimension D = (n - 1) d:

    f(x) = P EGNN(P x),    P x = x - mean_i x_i.

Each layer (fully connected graph, no self edges, all particles identical):

    m_ij  = phi_e(h_i, h_j, |x_i - x_j|^2 / s^2)
    x_i  += (1 / (n - 1)) sum_{j != i} (x_i - x_j) phi_x(m_ij)
    h_i  += phi_h(h_i, sum_{j != i} m_ij)

with h_i at the first layer one learned vector shared by all particles (so a permutation of the
particles permutes the output the same way) and phi_* small MLPs with SiLU activations only:
the exact force of part 4 differentiates log |det J_f| once more, so f must be C^2 (and is
C^inf here; no normalisation by |x_i - x_j|, whose square root is not smooth at zero).

Symmetries (tested in tests/python/test_fff.py): f(x R) = f(x) R for every orthogonal R
(rotations and reflections), f(P_pi x) = P_pi f(x) for permutations, and f(x + t) = f(x)
for translations t: the input's centre of mass is discarded and the output is mean-free, so
f restricted to V maps V to V. The flow's density and log-determinant live on V
(docs/free-form-flows.md, section 3).
"""
from __future__ import annotations

import torch
from torch import nn


def remove_mean(x: torch.Tensor) -> torch.Tensor:
    """x minus its mean over particles (axis -2): the orthogonal projection onto V."""
    return x - x.mean(dim=-2, keepdim=True)


def _mlp(n_in: int, n_hidden: int, n_out: int, final_gain: float = 1.0) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(n_in, n_hidden), nn.SiLU(), nn.Linear(n_hidden, n_out))
    if final_gain != 1.0:
        with torch.no_grad():
            net[-1].weight.mul_(final_gain)
            net[-1].bias.mul_(final_gain)
    return net


class EGNNLayer(nn.Module):
    """One message-passing layer: edge messages, coordinate update, residual node update."""

    def __init__(self, hidden: int, coord_gain: float, update_nodes: bool = True):
        super().__init__()
        self.edge = nn.Sequential(nn.Linear(2 * hidden + 1, hidden), nn.SiLU(),
                                  nn.Linear(hidden, hidden), nn.SiLU())
        self.coord = _mlp(hidden, hidden, 1, final_gain=coord_gain)
        # The last layer's node update would reach no output: it is left out (no dead weights).
        self.node = _mlp(2 * hidden, hidden, hidden) if update_nodes else None

    def forward(self, x: torch.Tensor, h: torch.Tensor, inv_scale2: float):
        n = x.shape[-2]
        diff = x.unsqueeze(-2) - x.unsqueeze(-3)                     # (..., n, n, d): x_i - x_j
        d2 = (diff * diff).sum(-1, keepdim=True) * inv_scale2         # (..., n, n, 1)
        hh = h.shape[:-2] + (n, n, h.shape[-1])
        hi = h.unsqueeze(-2).expand(hh)
        hj = h.unsqueeze(-3).expand(hh)
        off = 1.0 - torch.eye(n, dtype=x.dtype, device=x.device)     # no self edges
        m = self.edge(torch.cat([hi, hj, d2], dim=-1)) * off.unsqueeze(-1)
        # diff_ii = 0, so the self term of the coordinate update vanishes without the mask.
        x = x + (diff * self.coord(m)).sum(-2) / (n - 1)
        if self.node is not None:
            h = h + self.node(torch.cat([h, m.sum(-2)], dim=-1))
        return x, h


class EGNN(nn.Module):
    """Dimension-preserving E(n)-equivariant network on the centre-of-mass-free subspace.

    Parameters
    ----------
    n_particles, spatial_dim
        n and d; inputs are (..., n, d).
    hidden
        Width of node features, messages and every MLP's hidden layer.
    layers
        Number of message-passing layers.
    distance_scale
        s: squared distances enter the messages as |x_i - x_j|^2 / s^2 (about a typical pair
        distance keeps the first layer's inputs of order one).
    coord_gain
        Scale of the last layer of phi_x at initialisation; small values start f near the
        identity, which keeps J_f invertible and g(f(x)) close to x from the first step.
    """

    def __init__(self, n_particles: int, spatial_dim: int, hidden: int = 32, layers: int = 3,
                 distance_scale: float = 1.0, coord_gain: float = 0.01):
        super().__init__()
        if n_particles < 2:
            raise ValueError(f"EGNN: n_particles must be >= 2, got {n_particles}")
        if spatial_dim < 1 or hidden < 1 or layers < 1:
            raise ValueError(f"EGNN: spatial_dim, hidden and layers must be >= 1, got "
                             f"{spatial_dim}, {hidden}, {layers}")
        if not distance_scale > 0:
            raise ValueError(f"EGNN: distance_scale must be > 0, got {distance_scale}")
        self.n_particles = n_particles
        self.spatial_dim = spatial_dim
        self.inv_scale2 = 1.0 / float(distance_scale) ** 2
        self.h0 = nn.Parameter(torch.zeros(hidden))   # one feature vector, shared: identical particles
        self.layers = nn.ModuleList(EGNNLayer(hidden, coord_gain, update_nodes=k < layers - 1)
                                    for k in range(layers))

    @property
    def dof(self) -> int:
        """D = (n - 1) d, the dimension of the centre-of-mass-free subspace."""
        return (self.n_particles - 1) * self.spatial_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.n_particles, self.spatial_dim):
            raise ValueError(f"EGNN: expected positions of shape (..., {self.n_particles}, "
                             f"{self.spatial_dim}), got {tuple(x.shape)}")
        x = remove_mean(x)
        h = self.h0.to(x.dtype).expand(x.shape[:-1] + self.h0.shape)
        for layer in self.layers:
            x, h = layer(x, h, self.inv_scale2)
        return remove_mean(x)
