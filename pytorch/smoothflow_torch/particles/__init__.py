"""Particle benchmark systems of the equivariant-flow literature (LJ13, DW4) for OpenMM.

systems   the OpenMM Systems (custom forces) and the same energies in NumPy / PyTorch
data      data sets from OpenMM Langevin / replica-exchange runs, with provenance and a
          held-out split by chain (``python -m smoothflow_torch.particles.data --help``)
egnn      E(n)-equivariant graph network on the centre-of-mass-free subspace (free-form flows)
fff       FFF loss (Hutchinson surrogate), exact log-det / NLL on the subspace
train     training loop (``python -m smoothflow_torch.particles.train CONFIG --out DIR``)
floor     the data's NLL floor, mean beta U + log Z by BAR (``python -m smoothflow_torch.particles.floor --help``)

Reduced units and the sampling protocol: docs/particle-systems.md; the free-form flows:
docs/free-form-flows.md.
"""

from .systems import (DW_GROUP, LJ_GROUP, OSCILLATOR_GROUP, R_KJ_PER_MOL_K,
                      REDUCED_TEMPERATURE_KELVIN, SYSTEMS, ParticleSystem, dw4_energy, dw4_system,
                      lj13_energy, lj13_system, lj_energy, oscillator_energy, pair_indices,
                      remove_com)

__all__ = ["DW_GROUP", "LJ_GROUP", "OSCILLATOR_GROUP", "R_KJ_PER_MOL_K",
           "REDUCED_TEMPERATURE_KELVIN", "SYSTEMS", "ParticleSystem", "dw4_energy", "dw4_system",
           "lj13_energy", "lj13_system", "lj_energy", "oscillator_energy", "pair_indices",
           "remove_com"]
