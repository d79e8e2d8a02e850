"""LJ13 and DW4 as OpenMM Systems (smoothflow_torch.particles) and their data generation.

OpenMM (Reference platform, double precision) against the NumPy / PyTorch formulas, hand
values, finite differences, the symmetries, the planar DW4, the exact centre-of-mass pull, and a
tiny resumable data run (docs/particle-systems.md).
"""
import json
import math
import os

import numpy as np
import pytest

openmm = pytest.importorskip("openmm")
from smoothflow_torch.particles import data as pdata  # noqa: E402
from smoothflow_torch.particles import systems as psys  # noqa: E402

RTOL = 1e-10


def _context(system, integrator=None):
    integrator = integrator or openmm.VerletIntegrator(0.001)
    return openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))


def _energy_forces(context, x, groups=-1):
    x3 = np.zeros((len(x), 3))
    x3[:, :x.shape[1]] = x
    context.setPositions(x3)
    st = context.getState(getEnergy=True, getForces=True, groups=groups)
    return st.getPotentialEnergy()._value, np.asarray(st.getForces(asNumpy=True)._value)


def _lj_config(rng, n=13):
    """A random cluster without close contacts (LJ energies stay moderate)."""
    spec = psys.SYSTEMS["lj13"]
    return pdata._initial_positions(spec, rng)[:n] + rng.normal(0, 0.05, (n, 3))


def _dw_config(rng):
    return rng.uniform(-4, 4, size=(4, 2))


@pytest.fixture(scope="module")
def lj():
    return _context(psys.lj13_system())


@pytest.fixture(scope="module")
def dw():
    return _context(psys.dw4_system())


def _rel(a, b):
    return abs(a - b) / max(abs(b), 1e-300)


# --------------------------------------------------------------------------- hand values

def test_lj_hand_values():
    # two particles at rm: the LJ well depth -eps; the pull 0.5 * 2 * (rm/2)^2 = 0.25
    assert psys.lj13_energy(np.array([[0, 0, 0], [1.0, 0, 0]])) == pytest.approx(-0.75, abs=1e-15)
    ctx = _context(psys.lj13_system(n_particles=2))
    e, _ = _energy_forces(ctx, np.array([[0.3, -0.2, 0.1], [0.3, 0.8, 0.1]]))
    assert e == pytest.approx(-0.75, rel=RTOL)
    # 13 particles on a line, spacing rm: sum over separations k of (13 - k) pairs, and the
    # pull 0.5 * sum (i - 6)^2 = 91
    x = np.zeros((13, 3))
    x[:, 0] = np.arange(13.0)
    lj_sum = sum((13 - k) * (k ** -12.0 - 2.0 * k ** -6.0) for k in range(1, 13))
    expect = lj_sum + 91.0
    assert psys.lj13_energy(x) == pytest.approx(expect, rel=1e-14)
    e, _ = _energy_forces(_context(psys.lj13_system()), x)
    assert e == pytest.approx(expect, rel=RTOL)


def test_dw_hand_values(dw):
    # a square of side d0: the four sides sit at the barrier top (u = 0, E = 0); the two
    # diagonals have u = 4 (sqrt 2 - 1), each contributing -4 u^2 + 0.9 u^4
    x = np.array([[0, 0], [4, 0], [4, 4], [0, 4.0]])
    u = 4.0 * (math.sqrt(2.0) - 1.0)
    expect = 2.0 * (-4.0 * u ** 2 + 0.9 * u ** 4)
    assert psys.dw4_energy(x) == pytest.approx(expect, rel=1e-14)
    assert _energy_forces(dw, x)[0] == pytest.approx(expect, rel=RTOL)
    # one pair at its well minimum, u^2 = -b / (2c): E = -b^2 / (4c)
    ctx = _context(psys.dw4_system(n_particles=2))
    d = 4.0 + math.sqrt(4.0 / 1.8)
    e, _ = _energy_forces(ctx, np.array([[0, 0], [d, 0.0]]))
    assert e == pytest.approx(-16 / 3.6, rel=RTOL)
    # the linear coefficient a enters with its sign
    ctx = _context(psys.dw4_system(n_particles=2, a=0.7))
    assert _energy_forces(ctx, np.array([[0, 0], [5.0, 0]]))[0] == pytest.approx(
        0.7 - 4.0 + 0.9, rel=RTOL)


# --------------------------------------------------------------------------- OpenMM vs formulas

def test_openmm_energies_equal_numpy(lj, dw):
    rng = np.random.default_rng(11)
    for _ in range(20):
        x = _lj_config(rng)
        e, _ = _energy_forces(lj, x)
        assert _rel(e, psys.lj13_energy(x)) < RTOL
        assert _rel(_energy_forces(lj, x, groups={psys.LJ_GROUP})[0], psys.lj_energy(x)) < RTOL
        y = _dw_config(rng)
        assert _rel(_energy_forces(dw, y)[0], psys.dw4_energy(y)) < RTOL


def test_torch_energies_and_forces_equal_openmm(lj, dw):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(12)
    for ctx, energy, x in ((lj, psys.lj13_energy, _lj_config(rng)),
                           (dw, psys.dw4_energy, _dw_config(rng))):
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        et = energy(xt)
        (grad,) = torch.autograd.grad(et, xt)
        e, f = _energy_forces(ctx, x)
        assert _rel(float(et.detach()), e) < RTOL
        np.testing.assert_allclose(-grad.numpy(), f[:, :x.shape[1]], rtol=1e-9,
                                   atol=1e-9 * np.abs(f).max())
    # batched evaluation agrees with one-by-one
    xs = np.stack([_lj_config(rng) for _ in range(3)])
    np.testing.assert_allclose(psys.lj13_energy(torch.tensor(xs)).numpy(),
                               [psys.lj13_energy(x) for x in xs], rtol=1e-14)


def test_forces_equal_finite_differences(lj, dw):
    rng = np.random.default_rng(13)
    h = 1e-5
    for ctx, x in ((lj, _lj_config(rng)), (dw, _dw_config(rng))):
        _, f = _energy_forces(ctx, x)
        fd = np.zeros_like(x)
        for i in range(x.shape[0]):
            for k in range(x.shape[1]):
                xp, xm = x.copy(), x.copy()
                xp[i, k] += h
                xm[i, k] -= h
                fd[i, k] = -(_energy_forces(ctx, xp)[0] - _energy_forces(ctx, xm)[0]) / (2 * h)
        scale = np.abs(fd).max()
        assert scale > 1e-3
        np.testing.assert_allclose(f[:, :x.shape[1]], fd, atol=1e-6 * scale)


# --------------------------------------------------------------------------- symmetries

def _random_rotation(rng, d):
    q, r = np.linalg.qr(rng.normal(size=(d, d)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def test_energy_invariant_under_rotation_translation_permutation(lj, dw):
    rng = np.random.default_rng(14)
    for ctx, x in ((lj, _lj_config(rng)), (dw, _dw_config(rng))):
        d = x.shape[1]
        e0 = _energy_forces(ctx, x)[0]
        rot = x @ _random_rotation(rng, d).T
        moved = x + rng.normal(0, 3, size=d)
        perm = x[rng.permutation(len(x))]
        mirror = x * np.r_[-1.0, np.ones(d - 1)]
        for y in (rot, moved, perm, mirror):
            assert _rel(_energy_forces(ctx, y)[0], e0) < RTOL
        # and a deformation does change it (the comparison can fail)
        bent = x.copy()
        bent[0, 0] += 0.1
        assert _rel(_energy_forces(ctx, bent)[0], e0) > 1e-6


def test_centre_of_mass_pull_is_exact(lj):
    rng = np.random.default_rng(15)
    for _ in range(10):
        x = _lj_config(rng) + rng.normal(0, 5, size=3)  # far from the origin on purpose
        com = x.mean(0)
        expect = 0.5 * ((x - com) ** 2).sum()
        e, f = _energy_forces(lj, x, groups={psys.OSCILLATOR_GROUP})
        assert _rel(e, expect) < 1e-12
        # its gradient is x_i - x_com (the sum of the deviations vanishes)
        np.testing.assert_allclose(f, -(x - com), rtol=0, atol=1e-12 * np.abs(x - com).max())
        assert _rel(psys.oscillator_energy(x), expect) < 1e-13


# --------------------------------------------------------------------------- planar DW4

def test_dw4_energy_independent_of_z(dw):
    rng = np.random.default_rng(16)
    y = _dw_config(rng)
    e0, f0 = _energy_forces(dw, y)
    x3 = np.c_[y, rng.normal(0, 2, size=4)]
    e1, f1 = _energy_forces(dw, x3)
    assert e1 == e0
    assert np.all(f1[:, 2] == 0.0)
    np.testing.assert_array_equal(f1, f0)


def test_dw4_z_stays_zero_in_dynamics():
    spec = psys.SYSTEMS["dw4"]
    system = psys.dw4_system()
    integ = pdata.langevin_integrator(0.01, 1.0, 1.0, seed=5)
    ctx = _context(system, integ)
    integ.setPerDofVariableByName("mask", pdata._mask(spec))
    x0 = np.c_[np.array([[0, 0], [4.5, 0], [0, 4.5], [4.5, 4.5]]), np.zeros(4)]
    ctx.setPositions(x0)
    ctx.setVelocities(np.zeros((4, 3)))
    integ.step(500)
    st = ctx.getState(getPositions=True, getVelocities=True)
    x = np.asarray(st.getPositions(asNumpy=True)._value)
    v = np.asarray(st.getVelocities(asNumpy=True)._value)
    assert np.all(x[:, 2] == 0.0) and np.all(v[:, 2] == 0.0)
    assert np.abs(x[:, :2] - x0[:, :2]).max() > 0.1  # it did move in the plane
    # without the planar mask the thermostat does move z: the mask is what keeps it at 0
    integ3 = pdata.langevin_integrator(0.01, 1.0, 1.0, seed=5)
    ctx3 = _context(psys.dw4_system(), integ3)
    ctx3.setPositions(x0)
    integ3.step(50)
    z = np.asarray(ctx3.getState(getPositions=True).getPositions(asNumpy=True)._value)[:, 2]
    assert np.abs(z).max() > 0


def test_langevin_samples_the_reduced_temperature():
    """Equipartition on the pull alone (eps = 0, a harmonic system with exact averages):
    <E_pull> = (3 (N - 1) / 2) kT and <E_kin> = (3 N / 2) kT at kT = 1; planar: <E_kin> = N kT."""
    integ = pdata.langevin_integrator(0.02, 1.0, 1.0, seed=3)
    ctx = _context(psys.lj13_system(), integ)
    ctx.setParameter("eps", 0.0)
    ctx.setPositions(np.random.default_rng(3).normal(size=(13, 3)))
    ctx.setVelocities(np.zeros((13, 3)))
    integ.step(500)
    pot, kin = [], []
    for _ in range(3000):
        integ.step(10)
        st = ctx.getState(getEnergy=True)
        pot.append(st.getPotentialEnergy()._value)
        kin.append(st.getKineticEnergy()._value)
    assert np.mean(pot) == pytest.approx(18.0, rel=0.06)
    assert np.mean(kin) == pytest.approx(19.5, rel=0.04)
    spec = psys.SYSTEMS["dw4"]
    integ = pdata.langevin_integrator(0.01, 1.0, 1.0, seed=4)
    ctx = _context(psys.dw4_system(), integ)
    integ.setPerDofVariableByName("mask", pdata._mask(spec))
    ctx.setPositions(np.c_[np.array([[0, 0], [5.5, 0], [0, 5.5], [5.5, 5.5]]), np.zeros(4)])
    ctx.setVelocities(np.zeros((4, 3)))
    integ.step(500)
    kin = []
    for _ in range(3000):
        integ.step(10)
        kin.append(ctx.getState(getEnergy=True).getKineticEnergy()._value)
    assert np.mean(kin) == pytest.approx(4.0, rel=0.05)


# --------------------------------------------------------------------------- diagnostics

def test_autocorrelation_time_of_ar1():
    rng = np.random.default_rng(17)
    rho = 0.8
    n = 200000
    a = np.empty(n)
    a[0] = 0
    noise = rng.normal(size=n)
    for t in range(1, n):
        a[t] = rho * a[t - 1] + noise[t]
    assert pdata.autocorrelation_time(a) == pytest.approx((1 + rho) / (1 - rho), rel=0.1)
    assert pdata.autocorrelation_time(rng.normal(size=20000)) == pytest.approx(1.0, abs=0.1)


def test_gelman_rubin_detects_unmixed_chains():
    rng = np.random.default_rng(18)
    mixed = [rng.normal(size=2000) for _ in range(4)]
    stuck = [rng.normal(size=2000) + 2.0 * c for c in range(4)]
    assert pdata.gelman_rubin(mixed) < 1.01
    assert pdata.gelman_rubin(stuck) > 1.5


# --------------------------------------------------------------------------- data runs

_TINY = dict(samples=48, chains=4, val_chains=1, test_chains=1, chunk_samples=6, stride=10,
             equilibration=0.5, seed=7, progress=False)


def _load(path):
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


@pytest.mark.parametrize("system", ["dw4", "lj13"])
def test_tiny_data_run_keys_split_and_resume(system, tmp_path):
    spec = psys.SYSTEMS[system]
    full = pdata.generate(system, str(tmp_path / "full"), **_TINY)
    d = _load(full)
    assert set(d) == {"positions", "energies", "chain", "time", "split"}
    m = 48
    assert d["positions"].shape == (m, spec.n_particles, spec.spatial_dim)
    assert d["energies"].shape == d["chain"].shape == d["time"].shape == d["split"].shape == (m,)
    # positions are centred and their stored energies are the reference energies of them
    np.testing.assert_allclose(d["positions"].mean(1), 0.0, atol=1e-12)
    np.testing.assert_allclose(spec.energy(d["positions"]), d["energies"], rtol=1e-9, atol=1e-9)
    # the split is by whole chains: the last chain is the test set, the one before validation
    for c in range(4):
        assert len(np.unique(d["split"][d["chain"] == c])) == 1
    assert set(d["split"][d["chain"] == 3]) == {pdata.SPLITS["test"]}
    assert set(d["split"][d["chain"] == 2]) == {pdata.SPLITS["validation"]}
    assert set(d["split"][d["chain"] < 2]) == {pdata.SPLITS["train"]}
    for c in range(4):
        t = d["time"][d["chain"] == c]
        assert np.all(np.diff(t) > 0)
    prov = json.load(open(tmp_path / "full" / f"{system}.json"))
    for key in ("settings", "versions", "timing", "diagnostics", "counts", "sha256", "units"):
        assert key in prov
    assert prov["counts"] == {"train": 24, "validation": 12, "test": 12}
    assert prov["units"]["openmm_temperature_K"] == pytest.approx(1 / 0.00831446261815324)
    diag = prov["diagnostics"]
    assert len(diag["swap_acceptance"]) == len(spec.temperatures) - 1
    assert all(0.0 <= a <= 1.0 for a in diag["swap_acceptance"])
    assert diag["energy"]["ess"] > 0
    assert not os.path.exists(tmp_path / "full" / f"{system}.checkpoint.npz")

    # interrupted after one chunk, then resumed: the same data, bit for bit
    part = tmp_path / "part"
    assert pdata.generate(system, str(part), max_chunks=1, **_TINY) is None
    assert os.path.exists(part / f"{system}.checkpoint.npz")
    with pytest.raises(ValueError, match="seed"):
        pdata.generate(system, str(part), **dict(_TINY, seed=8))
    resumed = _load(pdata.generate(system, str(part), **_TINY))
    for k in d:
        np.testing.assert_array_equal(resumed[k], d[k])
    # and a different seed gives different data (the comparison above can fail)
    other = _load(pdata.generate(system, str(tmp_path / "other"), **dict(_TINY, seed=8)))
    assert not np.array_equal(other["positions"], d["positions"])


def test_cli_help_and_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        pdata.main(["--help"])
    assert e.value.code == 0
    assert "--samples" in capsys.readouterr().out
    with pytest.raises(ValueError, match="temperatures"):
        pdata.generate("dw4", str(tmp_path), temperatures=[2.0, 3.0], progress=False)
    with pytest.raises(ValueError, match="test-chains"):
        pdata.generate("dw4", str(tmp_path), chains=2, val_chains=1, test_chains=1,
                       progress=False)
    with pytest.raises(ValueError, match="unknown system"):
        pdata.generate("lj55", str(tmp_path), progress=False)
