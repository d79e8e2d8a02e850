"""The OpenMM SmoothFlowForce running a free-form model (issue 23 part 4, docs/free-form-flows.md
section 7): a random EGNN encoder exported with export_free_form, evaluated by a Context on the
Reference and CPU platforms, against the PyTorch oracle (particles/potential.py, autograd of the
exact log-determinant in float64):

    U(x) = -kT [log N(f(x); 0, I_D) + log |det J_V(x)|] + U0,    F = kT grad log p(x).

LJ13-like (13 particles, d = 3) and DW4-like (4 particles, d = 2: z is ignored and gets exactly
zero force) models, two copies in one System; finite differences of the Context's energy;
XmlSerializer round trip; a copy kept whole when OpenMM wraps positions into a box; the
refusals (periodic force, wrong particle counts, virtual sites, the Python helpers that read
Z-matrix facts); the GPU platforms running the model (test_free_form_device.py checks them in
every precision); a short velocity-Verlet run in reduced units.
"""
import math

import numpy as np
import pytest
import torch

openmm = pytest.importorskip("openmm")
from openmm import app, unit  # noqa: E402

from smoothflow_torch.particles import potential  # noqa: E402
from smoothflow_torch.particles.egnn import EGNN  # noqa: E402
from smoothflow_torch.particles.export import export_free_form, free_form_to_bytes  # noqa: E402

torch.set_num_threads(1)

R = 0.00831446261815324      # kJ/mol/K, OpenMM's
REDUCED_T = 1.0 / R          # kT = 1 kJ/mol: the reduced units of docs/particle-systems.md
# name: (n, d, temperature K, energy offset kJ/mol, hidden, distance scale, seed)
MODELS = {"lj13": (13, 3, REDUCED_T, 0.0, 12, 1.5, 13),
          "dw4": (4, 2, 300.0, -3.25, 8, 4.0, 4)}


def _encoder(n, d, hidden, scale, seed):
    """A random EGNN far from the identity (coord_gain 1), float64, with a random h0 (zero at
    initialisation, which would leave the messages' node terms untested)."""
    torch.manual_seed(seed)
    enc = EGNN(n, d, hidden=hidden, layers=2, distance_scale=scale, coord_gain=1.0).double()
    with torch.no_grad():
        enc.h0.normal_(0.0, 0.5)
    return enc


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """name -> (model path, encoder, kT, U0)."""
    out = {}
    folder = tmp_path_factory.mktemp("free_form_models")
    for name, (n, d, temperature, offset, hidden, scale, seed) in MODELS.items():
        enc = _encoder(n, d, hidden, scale, seed)
        path = str(folder / f"{name}.safetensors")
        export_free_form(enc, path, temperature=temperature, energy_offset=offset)
        out[name] = (path, enc, R * temperature, offset)
    return out


def _positions(name, numParticles, seed):
    """(numParticles, 3) positions in nm: a cluster of the model's size (pair distances of order
    its distance scale) in every component, z included (a 2-dimensional model must ignore it)."""
    n, d, _, _, _, scale, _ = MODELS[name]
    rng = np.random.default_rng(seed)
    return 0.6 * scale * rng.standard_normal((numParticles, 3))


def _oracle(encoder, x, kT, offset):
    """PyTorch's energy (kJ/mol) and forces (kJ/mol/nm, zero z for d = 2) of one copy, x (n, 3)."""
    d = encoder.spatial_dim
    xt = torch.as_tensor(x[None, :, :d], dtype=torch.float64)
    log_p, sign, grad = potential.log_density_and_gradient(encoder, xt)
    forces = np.zeros_like(x)
    forces[:, :d] = kT * grad[0].numpy()
    return -kT * float(log_p[0]) + offset, forces


def _copies(n):
    """Two copies of an n-particle model among 2n + 1 System particles, interleaved and in an
    order that is neither the System's nor the same for both; particle 2n belongs to none."""
    first = list(range(0, 2 * n, 2))[::-1]
    second = list(range(1, 2 * n, 2))
    second = second[1:] + second[:1]
    return [first, second]


def _system(sf, path, numParticles, copies=None, mass=1.0):
    system = openmm.System()
    for _ in range(numParticles):
        system.addParticle(mass)
    force = sf.SmoothFlowForce(path)
    for i, copy in enumerate(copies or []):
        force.setParticles(copy) if i == 0 else force.addMolecule(copy)
    system.addForce(force)
    return system, force


def _context(system, platform):
    try:
        platformObject = openmm.Platform.getPlatformByName(platform)
    except Exception:
        pytest.skip(f"platform {platform} is not available")
    # two CPU threads: the two copies in separate chunks, each with its own workspace
    properties = {"Threads": "2"} if platform == "CPU" else {}
    return openmm.Context(system, openmm.VerletIntegrator(0.001), platformObject, properties)


def _evaluate(context, x):
    context.setPositions(x)
    state = context.getState(getEnergy=True, getForces=True)
    return (state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
            state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer))


def _energy(context, x):
    context.setPositions(x)
    return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)


# ---------------------------------------------------------------------------------------------
# What the force reports about the model

def test_force_reports_the_model_kind(sf, models):
    for name, (path, enc, kT, offset) in models.items():
        force = sf.SmoothFlowForce(path)
        assert force.getModelKind() == sf.SmoothFlowForce.FreeFormFlow
        assert force.getSpatialDimension() == MODELS[name][1]
        assert force.getNumModelAtoms() == MODELS[name][0]
        assert force.getKT() == pytest.approx(kT, rel=1e-15)
        assert force.usesPeriodicBoundaryConditions() is False
    with pytest.raises(openmm.OpenMMException, match="free-form model's encoder runs in float64 only"):
        force.setWeightPrecision(sf.SmoothFlowForce.WeightsFloat32)
    assert force.getWeightPrecision() == sf.SmoothFlowForce.WeightsFloat64


# ---------------------------------------------------------------------------------------------
# Energies and forces against PyTorch

@pytest.mark.parametrize("platform", ["Reference", "CPU"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_energy_and_forces_match_pytorch(sf, models, name, platform):
    path, enc, kT, offset = models[name]
    n, d = MODELS[name][:2]
    copies = _copies(n)
    system, _ = _system(sf, path, 2 * n + 1, copies)
    context = _context(system, platform)
    for seed in (1, 2):
        x = _positions(name, 2 * n + 1, seed)
        energy, forces = _evaluate(context, x)
        expected, expectedForces = 0.0, np.zeros_like(x)
        for copy in copies:
            e, f = _oracle(enc, x[copy], kT, offset)
            expected += e
            expectedForces[copy] = f
        assert energy == pytest.approx(expected, rel=1e-10, abs=1e-10 * kT)
        scale = np.abs(expectedForces).max()
        assert scale > 1e-3 * kT  # a model whose forces are not all but vanishing
        np.testing.assert_allclose(forces, expectedForces, rtol=1e-10, atol=1e-10 * scale)
        assert np.all(forces[2 * n] == 0.0)  # no copy holds it
        if d == 2:
            assert np.all(forces[:, 2] == 0.0)  # exactly: z is not read
            shifted = x.copy()
            shifted[:, 2] += np.random.default_rng(seed).standard_normal(2 * n + 1)
            assert _energy(context, shifted) == energy


def test_copies_are_independent_and_permutation_invariant(sf, models):
    """Relabelling a copy's particles leaves the energy (the model's particles are identical) and
    moves the forces with the particles; the copies do not interact."""
    path, enc, kT, offset = models["lj13"]
    n = MODELS["lj13"][0]
    x = _positions("lj13", 2 * n + 1, 3)
    copies = _copies(n)
    system, force = _system(sf, path, 2 * n + 1, copies)
    context = _context(system, "Reference")
    energy, forces = _evaluate(context, x)
    permuted = [int(p) for p in np.random.default_rng(5).permutation(copies[0])]
    force.setMoleculeParticles(0, permuted)
    context.reinitialize(preserveState=True)
    energy2, forces2 = _evaluate(context, x)
    assert energy2 == pytest.approx(energy, rel=1e-12)
    np.testing.assert_allclose(forces2, forces, rtol=1e-9, atol=1e-9 * np.abs(forces).max())
    moved = x.copy()
    moved[copies[1]] += np.array([3.0, -1.0, 0.5])  # translating a whole copy changes nothing
    moved[copies[0][0]] += np.array([0.05, 0.0, 0.0])  # moving one particle changes its copy only
    e_first, _ = _oracle(enc, moved[copies[0]], kT, offset)
    e_second, _ = _oracle(enc, x[copies[1]], kT, offset)
    assert _energy(context, moved) == pytest.approx(e_first + e_second, rel=1e-10)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forces_match_finite_differences(sf, models, name):
    path, enc, kT, offset = models[name]
    n, d = MODELS[name][:2]
    system, _ = _system(sf, path, n)
    context = _context(system, "Reference")
    x = _positions(name, n, 7)
    _, forces = _evaluate(context, x)
    h = 1e-5 * MODELS[name][5]
    rng = np.random.default_rng(8)
    for _ in range(3):
        v = rng.standard_normal(x.shape)
        slope = (_energy(context, x + h * v) - _energy(context, x - h * v)) / (2 * h)
        assert -slope == pytest.approx(float(np.sum(forces * v)), rel=1e-6, abs=1e-7 * kT)
    for i, k in [(0, 0), (n - 1, 1), (n // 2, d - 1)]:
        e = np.zeros_like(x)
        e[i, k] = h
        slope = (_energy(context, x + e) - _energy(context, x - e)) / (2 * h)
        assert -slope == pytest.approx(forces[i, k], rel=1e-6, abs=1e-7 * kT)


# ---------------------------------------------------------------------------------------------
# Serialization, and OpenMM's view of the copies as molecules

def test_serialization_round_trip(sf, models):
    path, enc, kT, offset = models["dw4"]
    n = MODELS["dw4"][0]
    copies = _copies(n)
    system, force = _system(sf, path, 2 * n + 1, copies)
    x = _positions("dw4", 2 * n + 1, 9)
    energy = _energy(_context(system, "Reference"), x)
    copy = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    restored = sf.SmoothFlowForce.cast(copy.getForce(0))
    assert restored.getModelKind() == sf.SmoothFlowForce.FreeFormFlow
    assert restored.getModelBytes() == force.getModelBytes()
    assert [list(restored.getMoleculeParticles(m)) for m in range(2)] == copies
    assert _energy(_context(copy, "Reference"), x) == energy


def test_copies_stay_whole_when_positions_are_wrapped(sf, models):
    """With other forces periodic, getState(enforcePeriodicBox=True) wraps molecules, which OpenMM
    finds from each force's bonded particles: a copy must move as one (a free-form model has no
    Z-matrix; each particle is bonded to its copy's first)."""
    path = models["lj13"][0]
    n = MODELS["lj13"][0]
    copies = _copies(n)
    system, force = _system(sf, path, 2 * n + 1, copies)
    box = 6.0
    system.setDefaultPeriodicBoxVectors((box, 0, 0), (0, box, 0), (0, 0, box))
    periodic = openmm.CustomBondForce("0")
    periodic.addBond(0, 1)
    periodic.setUsesPeriodicBoundaryConditions(True)
    system.addForce(periodic)
    assert not force.usesPeriodicBoundaryConditions()
    context = _context(system, "Reference")
    x = _positions("lj13", 2 * n + 1, 11) + np.array([box - 0.2, 0.1, -0.3])  # straddling the box's faces
    context.setPositions(x)
    wrapped = context.getState(getPositions=True, enforcePeriodicBox=True).getPositions(asNumpy=True)
    wrapped = wrapped.value_in_unit(unit.nanometer)
    for copy in copies:
        shift = wrapped[copy] - x[copy]
        np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-12)
        assert np.allclose(shift[0] / box, np.round(shift[0] / box), atol=1e-12)
    assert not np.allclose(wrapped, x)  # something was wrapped


# ---------------------------------------------------------------------------------------------
# Refusals

def test_periodic_force_is_refused(sf, models):
    path = models["lj13"][0]
    n = MODELS["lj13"][0]
    system, force = _system(sf, path, n)
    system.setDefaultPeriodicBoxVectors((5, 0, 0), (0, 5, 0), (0, 0, 5))
    force.setUsesPeriodicBoundaryConditions(True)
    with pytest.raises(openmm.OpenMMException, match=r"free-form flow over 13 particles, which is not periodic.*"
                                                     r"setUsesPeriodicBoundaryConditions\(false\)"):
        _context(system, "Reference")
    force.setUsesPeriodicBoundaryConditions(False)
    assert math.isfinite(_energy(_context(system, "Reference"), _positions("lj13", n, 1)))


def test_wrong_particles_are_refused(sf, models):
    path = models["lj13"][0]
    n = MODELS["lj13"][0]
    force = sf.SmoothFlowForce(path)
    with pytest.raises(openmm.OpenMMException, match="needs exactly 13 particles .*but 12 were given"):
        force.setParticles(list(range(n - 1)))
    with pytest.raises(openmm.OpenMMException, match="needs exactly 13 particles .*but 14 were given"):
        force.addMolecule(list(range(n + 1)))
    with pytest.raises(openmm.OpenMMException, match="appears twice"):
        force.setParticles([0] * n)
    # the default mapping takes particles 0..N-1 of a System of exactly N particles only
    system, _ = _system(sf, path, n + 1)
    with pytest.raises(openmm.OpenMMException, match="the model has 13 atoms but the System has 14 particles"):
        _context(system, "Reference")
    system, _ = _system(sf, path, n, [list(range(1, n + 1))])
    with pytest.raises(openmm.OpenMMException, match="out of range: the System has 13 particles"):
        _context(system, "Reference")
    system, _ = _system(sf, path, n + 2, [list(range(n))])
    system.setParticleMass(3, 0.0)  # as OpenMM requires of a virtual site
    system.setVirtualSite(3, openmm.TwoParticleAverageSite(n, n + 1, 0.5, 0.5))
    with pytest.raises(openmm.OpenMMException, match="particle 3 .*is a virtual site"):
        _context(system, "Reference")


@pytest.mark.parametrize("platform", ["OpenCL", "CUDA"])
def test_gpu_platforms_run_free_form_models(sf, models, platform):
    """The GPU platforms evaluate a free-form model (platforms/common/src/kernels/free_form.cc)
    instead of refusing it; tests/python/test_free_form_device.py checks them in every
    precision.  Skipped where the platform, its device or the SmoothFlow kernels are missing."""
    path, enc, kT, offset = models["dw4"]
    n = MODELS["dw4"][0]
    copies = _copies(n)
    system, _ = _system(sf, path, 2 * n + 1, copies)
    try:
        platformObject = openmm.Platform.getPlatformByName(platform)
    except Exception:
        pytest.skip(f"platform {platform} is not available")
    try:
        context = openmm.Context(system, openmm.VerletIntegrator(0.001), platformObject, {"Precision": "double"})
    except openmm.OpenMMException as e:
        message = str(e)
        assert "free-form" not in message, message  # no refusal of the kind
        pytest.skip(f"no {platform} device or kernels here: {message}")
    x = _positions("dw4", 2 * n + 1, 1)
    energy, forces = _evaluate(context, x)
    expected, expectedForces = _evaluate(_context(system, "Reference"), x)
    assert energy == pytest.approx(expected, rel=1e-9, abs=1e-9 * kT)
    np.testing.assert_allclose(forces, expectedForces, rtol=0, atol=1e-9 * np.abs(expectedForces).max())


# ---------------------------------------------------------------------------------------------
# The Python helpers

def _particleTopology(numAtoms, element=None, box=None):
    topology = app.Topology()
    chain = topology.addChain()
    for i in range(numAtoms):
        residue = topology.addResidue("PAR", chain)
        topology.addAtom(f"P{i}", element, residue)
    if box is not None:
        topology.setPeriodicBoxVectors(box)
    return topology


def test_python_helpers(sf, models):
    path = models["lj13"][0]
    n = MODELS["lj13"][0]
    force = sf.SmoothFlowForce(path)
    for call, what in [(lambda: sf.checkConfiguration(force, _positions("lj13", n, 1)), "checkConfiguration"),
                       (lambda: sf.equivalentAtoms(force), "equivalentAtoms")]:
        with pytest.raises(ValueError, match=f"{what}: the model is a free-form flow over 13 identical particles"):
            call()
    box = openmm.Vec3(5, 0, 0), openmm.Vec3(0, 5, 0), openmm.Vec3(0, 0, 5)
    topology = _particleTopology(2 * n + 1, box=box)
    # whole copies of consecutive atoms, in order; a free-form force is never periodic
    assert sf.mapModelToTopology(force, topology, atoms=range(1, 2 * n + 1)) == [list(range(1, n + 1)),
                                                                               list(range(n + 1, 2 * n + 1))]
    with pytest.raises(ValueError, match="whole copies of 13 particles .*but 27 were selected"):
        sf.mapModelToTopology(force, topology)
    system = openmm.System()
    for _ in range(2 * n + 1):
        system.addParticle(1.0)
    added = sf.addSmoothFlowForce(system, topology, path, atoms=range(1, 2 * n + 1))
    assert added.getNumMolecules() == 2 and not added.usesPeriodicBoundaryConditions()
    with pytest.raises(ValueError, match="free-form flow over 13 particles, which is not periodic"):
        sf.addSmoothFlowForce(openmm.System(), topology, path, atoms=range(n), periodic=True)
    # elements are compared where both the model file and the Topology give them
    enc, kT, offset = models["lj13"][1:]
    atoms = [{"name": f"AR{i}", "residue": "LJ", "residue_index": 0, "element": "Ar"} for i in range(n)]
    named = sf.SmoothFlowForce.createFromBytes(free_form_to_bytes(enc, REDUCED_T, atoms=atoms))
    argon, neon = app.Element.getBySymbol("Ar"), app.Element.getBySymbol("Ne")
    assert sf.mapModelToTopology(named, _particleTopology(n, argon)) == [list(range(n))]
    with pytest.raises(ValueError, match="atom 0 'P0' of residue PAR 1 is Ne, but the free-form model's particle 0 "
                                         "is Ar"):
        sf.mapModelToTopology(named, _particleTopology(n, neon))
    x = _positions("lj13", 2 * n + 1, 4)
    expected = sum(_oracle(enc, x[list(range(1 + k * n, 1 + (k + 1) * n))], kT, offset)[0] for k in range(2))
    assert _energy(_context(system, "Reference"), x) == pytest.approx(expected, rel=1e-10)


# ---------------------------------------------------------------------------------------------
# Dynamics

def test_velocity_verlet_conserves_energy(sf, models):
    """200 velocity-Verlet steps of the LJ13-like model's particles (mass 1, kT = 1: reduced units,
    time unit 1 ps, docs/particle-systems.md section 2) under the flow force alone.  At dt = 0.002
    the total energy's largest excursion is about 2e-7 kJ/mol (1e-4 is allowed) while the
    potential energy moves by more than 0.1 kJ/mol: a force that were not the exact gradient of
    the energy (a dropped or mis-scaled log-determinant term) would drift by far more."""
    path = models["lj13"][0]
    n = MODELS["lj13"][0]
    system, _ = _system(sf, path, n)
    integrator = openmm.VerletIntegrator(0.002)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(_positions("lj13", n, 12))
    context.setVelocitiesToTemperature(REDUCED_T, 5)
    total, potential_ = [], []
    for _ in range(200):
        integrator.step(1)
        state = context.getState(getEnergy=True)
        u = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        k = state.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
        assert math.isfinite(u) and math.isfinite(k)
        total.append(u + k)
        potential_.append(u)
    total = np.array(total)
    assert np.ptp(potential_) > 0.1
    assert np.abs(total - total[0]).max() < 1e-4
