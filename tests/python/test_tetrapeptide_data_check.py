"""The tetrapeptide's data check (studies/alanine_tetrapeptide/data_check.py): its reweighted
joint and conditional alpha_L populations recover known unbiased populations from frames drawn
under a bias, as the chains are; and its dihedral is IUPAC's (OpenMM's sign)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
KT = 2.494


@pytest.fixture(scope="module")
def check():
    spec = importlib.util.spec_from_file_location("data_check", REPO / "studies/alanine_tetrapeptide/data_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# unbiased populations of the 8 joint states of three residues, coupled like the tetrapeptide's
# (two neighbours in alpha_L at once far more often than independence gives)
STATES = [(False, False, False), (True, False, False), (False, True, False), (False, False, True),
          (True, True, False), (True, False, True), (False, True, True), (True, True, True)]
TRUTH = np.array([0.942, 0.023, 0.015, 0.011, 0.0065, 0.0004, 0.002, 0.0001])


def biased_frames(n_chains, frames, rng):
    """Frames of the joint state drawn from p_s exp(-V_s/kT) with a separable bias V (deep where
    the state is rare, as metadynamics makes it): (up, chain, bias)."""
    TRUTH_ = TRUTH / TRUTH.sum()
    per_residue = np.array([-9.0, -7.5, -6.0])            # kJ/mol, V = sum over residues with phi > 0
    bias = np.array([per_residue[np.array(s)].sum() for s in STATES])
    q = TRUTH_ * np.exp(-bias / KT)
    q /= q.sum()
    up, chain, v = [], [], []
    for c in range(n_chains):
        s = rng.choice(len(STATES), size=frames, p=q)
        up.append(np.array(STATES)[s]), chain.append(np.full(frames, c)), v.append(bias[s])
    return np.concatenate(up), np.concatenate(chain), np.concatenate(v), q


def test_joint_populations_recover_the_unbiased_ones(check):
    rng = np.random.default_rng(7)
    up, chain, bias, q = biased_frames(6, 20000, rng)
    got = check.joint_populations(up, chain, check.weights_of(bias, KT))
    truth = TRUTH / TRUTH.sum()
    assert set(got) == set(STATES)
    for s, p in zip(STATES, truth):
        sampled, pop, se = got[s]
        assert abs(sampled - q[STATES.index(s)]) < 0.01
        assert se > 0 and abs(pop - p) < 4 * se + 1e-4, (s, pop, p, se)
    assert abs(sum(v[1] for v in got.values()) - 1) < 1e-12
    # the bias's sign matters: weights exp(-V/kT) would not recover them
    wrong = check.joint_populations(up, chain, np.exp(-(bias - bias.min()) / KT))
    assert abs(wrong[(False, False, False)][1] - truth[0]) > 0.02


def test_conditional_population_is_the_others_below_zero_one(check):
    rng = np.random.default_rng(8)
    up, chain, bias, _ = biased_frames(4, 30000, rng)
    truth = TRUTH / TRUTH.sum()
    mean, se, _ = check.conditional_population(up, chain, check.weights_of(bias, KT), 0)
    want = truth[1] / (truth[0] + truth[1])                  # P(res 0 up | res 1, 2 down)
    marginal = sum(p for s, p in zip(STATES, truth) if s[0])
    assert abs(mean - want) < 4 * se + 1e-4 and abs(marginal - want) > 10 * se


def test_dihedral_sign_is_iupac(check):
    """A right-handed (clockwise looking down b) turn of +60 degrees: 0-1-2-3 with atom 3 rotated."""
    a = np.radians(60.0)
    x = np.array([[[1.0, 0, 0], [0, 0, 0], [0, 0, 1], [np.cos(a), np.sin(a), 1]]])
    assert np.degrees(check.dihedral(x, [0, 1, 2, 3]))[0] == pytest.approx(60.0)
    openmm = pytest.importorskip("openmm")
    system = openmm.System()
    for _ in range(4):
        system.addParticle(1.0)
    force = openmm.CustomTorsionForce("theta")
    force.addTorsion(0, 1, 2, 3, [])
    system.addForce(force)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(x[0])
    assert context.getState(getEnergy=True).getPotentialEnergy()._value == pytest.approx(a, abs=1e-9)


@pytest.fixture(scope="module")
def compare(check):
    import sys
    sys.path.insert(0, str(REPO / "studies/alanine_tetrapeptide"))
    spec = importlib.util.spec_from_file_location("compare_data_sets",
                                                  REPO / "studies/alanine_tetrapeptide/compare_data_sets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def synthetic_chain(rng, n, bias_on_phi2):
    """Angles of three residues whose neighbours' psi depends on phi2 (beta more likely at low
    phi2), sampled under exp(-V(phi2)/kT) when ``bias_on_phi2``; (angles, bias)."""
    phi2 = rng.uniform(-180, 0, n)
    v = -6.0 * np.cos(np.radians(phi2 + 90)) if bias_on_phi2 else np.zeros(n)
    keep = rng.uniform(size=n) < np.exp(-(v - v.min()) / KT)          # rejection: the biased ensemble
    phi2, v = phi2[keep], v[keep]
    m = len(phi2)
    p_beta = np.clip(0.6 + phi2 / 300, 0.05, 0.95)
    psi = {r: np.where(rng.uniform(size=m) < p_beta, 150.0, -40.0) for r in ("ALA3", "ALA4")}
    angles = {"phi:ALA2": phi2, "phi:ALA3": rng.uniform(-170, -50, m), "phi:ALA4": rng.uniform(-170, -50, m),
              "psi:ALA3": psi["ALA3"], "psi:ALA4": psi["ALA4"]}
    return angles, v


def test_given_a_phi_bin_the_neighbours_do_not_see_its_bias(compare):
    """A bias on phi2 alone leaves the neighbours' distribution given phi2 unchanged: the
    biased and unbiased synthetic sets agree bin by bin, with the known fraction."""
    rng = np.random.default_rng(4)
    biased = [synthetic_chain(rng, 60000, True) for _ in range(2)]
    plain = [synthetic_chain(rng, 60000, False)]
    a = compare.beta_neighbours_given(biased, KT, "phi:ALA2", ["ALA3", "ALA4"])
    b = compare.beta_neighbours_given(plain, KT, "phi:ALA2", ["ALA3", "ALA4"])
    edges = compare.GIVEN_BINS
    for (va, na), (vb, nb), lo, hi in zip(a, b, edges[:-1], edges[1:]):
        phi = np.linspace(lo, hi, 1001)
        truth = np.mean(np.clip(0.6 + phi / 300, 0.05, 0.95) ** 2)      # both neighbours at beta
        assert na > 1000 and nb > 1000
        assert abs(va - truth) < 0.02 and abs(vb - truth) < 0.02, (lo, hi, va, vb, truth)
