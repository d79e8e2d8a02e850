"""Importance-weight statistics (alanine_dipeptide.weights) on weight sets of known answer."""
import math

import numpy as np
import pytest

from alanine_dipeptide import weights as W


def gpd_weights(k: float, n: int, seed: int) -> np.ndarray:
    """n draws of a generalized Pareto distribution of shape k > 0, scale 1 (inverse CDF)."""
    u = np.random.default_rng(seed).uniform(size=n)
    return (u ** -k - 1.0) / k


def test_equal_weights_give_ess_n_and_no_tail_at_any_scale():
    n = 10_000
    for offset in (0.0, 1000.0, -1000.0):        # exp(+-1000) overflows/underflows without log-sum-exp
        lw = np.full(n, offset)
        assert W.ess_fraction(lw) == pytest.approx(1.0, rel=1e-12)
        assert W.pooled_ess([lw, lw])["pooled"] == pytest.approx(1.0, rel=1e-12)
        assert W.pareto_k_hat(lw) == -math.inf      # the tail has no spread at all
    # nearly equal weights, uniform on [1, 1.01]: a bounded tail, the GPD of a uniform has k = -1
    near = np.log1p(0.01 * np.random.default_rng(0).uniform(size=n))
    assert W.pareto_k_hat(near) == pytest.approx(-1.0, abs=0.1)       # -0.976 (prior pulls to 0.5)


def test_ess_of_known_weight_sets_and_of_weights_spanning_thousands_of_nats():
    # weights 1, 1, 2, 2: (6)^2 / (1 + 1 + 4 + 4) = 3.6 of 4
    assert W.ess_fraction(np.log([1.0, 1.0, 2.0, 2.0]) + 700.0) == pytest.approx(0.9, rel=1e-12)
    # one weight e^2000 times the others: ESS = 1
    assert W.ess_fraction(np.array([2000.0, 0.0, 0.0, 0.0])) == pytest.approx(0.25, rel=1e-12)
    # a non-finite log weight (failed energy) is weight zero, the others count
    assert W.ess_fraction(np.array([0.0, 0.0, np.nan, -np.inf])) == pytest.approx(0.5, rel=1e-12)
    with pytest.raises(ValueError, match="non-finite"):
        W.ess_fraction(np.array([np.nan, np.inf]))


@pytest.mark.parametrize("k", [0.3, 0.7, 1.2])
def test_k_hat_recovers_the_shape_of_generalized_pareto_weights(k):
    """n = 10^4: PSIS fits M = 300 tail weights, whose exceedances are again GPD(k) (threshold
    stability).  The maximum-likelihood shape has standard deviation (1 + k) / sqrt(M) (0.075,
    0.098, 0.127 for k = 0.3, 0.7, 1.2), and PSIS's prior shrinks it towards 0.5 by
    (k - 0.5) 10 / (M + 10).  Each seed lies within 3.5 standard deviations; the mean of ten
    seeds within 3 standard errors plus the shrinkage (0.078, 0.100, 0.143)."""
    n, seeds = 10_000, 10
    m = W.tail_length(n)
    assert m == 300
    sd = (1 + k) / math.sqrt(m)
    k_hats = np.array([W.pareto_k_hat(np.log(gpd_weights(k, n, s))) for s in range(seeds)])
    assert np.all(np.abs(k_hats - k) < 3.5 * sd), k_hats
    assert abs(k_hats.mean() - k) < 3 * sd / math.sqrt(seeds) + abs(k - 0.5) * 10 / (m + 10), k_hats.mean()
    # the verdict the diagnostic exists for: 0.3 is a good tail, 1.2 an unreliable one, in every seed
    if k == 0.3:
        assert np.all(k_hats < 0.5)
    if k == 1.2:
        assert np.all(k_hats > 0.7)


def test_k_hat_does_not_depend_on_the_scale_of_the_weights():
    lw = np.log(gpd_weights(0.7, 5000, 3))
    assert W.pareto_k_hat(lw + 800.0) == pytest.approx(W.pareto_k_hat(lw), abs=1e-9)


def test_gpd_fit_recovers_shape_and_scale_of_exceedances():
    """The Zhang-Stephens fit alone (without the tail selection) on 20000 GPD(0.5, scale 2)
    draws: shape within 4 sd (1.5 / sqrt(20000) = 0.011), scale within 5 %."""
    x = 2.0 * gpd_weights(0.5, 20_000, 11)
    k, sigma = W.gpd_fit_zhang_stephens(x)
    assert k == pytest.approx(0.5, abs=0.045)
    assert sigma == pytest.approx(2.0, rel=0.05)


def test_gpd_fit_applies_the_psis_prior_to_the_zhang_stephens_shape():
    """PSIS's weakly informative prior: k = (M k_ZS + 10 * 0.5) / (M + 10), with k_ZS the
    plain Zhang-Stephens estimate (prior weight 0); on 20 exceedances it moves k by a third of
    the way to 0.5, so it matters for small tails."""
    x = gpd_weights(2.0, 20, 2)
    plain, _ = W.gpd_fit_zhang_stephens(x, prior_weight=0.0)
    shrunk, _ = W.gpd_fit_zhang_stephens(x)
    assert shrunk == pytest.approx((20 * plain + 5.0) / 30.0, rel=1e-12)
    assert abs(plain - shrunk) > 0.01


def test_pooled_ess_of_two_identical_sets_is_that_of_one_set_of_double_size():
    a = np.log(gpd_weights(0.4, 2000, 5))
    pooled = W.pooled_ess([a, a])
    assert pooled["pooled"] == pytest.approx(W.ess_fraction(np.concatenate([a, a])), rel=1e-12)
    assert pooled["pooled"] == pytest.approx(W.ess_fraction(a), rel=1e-12)   # ESS and n both double
    assert pooled["per_set"] == pytest.approx([W.ess_fraction(a)] * 2) and pooled["std"] == 0.0
    assert pooled["n_total"] == 4000


def test_pooled_ess_normalizes_over_the_union_not_per_set():
    """Set A: n equal weights; set B: the same but one weight c = 50 times larger.  Pooled,
    (2n - 1 + c)^2 / ((2n - 1 + c^2) 2n); per set 1 and (n - 1 + c)^2 / ((n - 1 + c^2) n):
    averaging the sets' ESS/n would hide B's heavy weight behind A."""
    n, c = 100, 50.0
    a = np.zeros(n)
    b = np.zeros(n)
    b[17] = math.log(c)
    got = W.pooled_ess([a, b])
    per_b = (n - 1 + c) ** 2 / ((n - 1 + c ** 2) * n)
    assert got["pooled"] == pytest.approx((2 * n - 1 + c) ** 2 / ((2 * n - 1 + c ** 2) * 2 * n), rel=1e-12)
    assert got["per_set"] == pytest.approx([1.0, per_b], rel=1e-12)
    assert got["mean"] == pytest.approx((1 + per_b) / 2) and got["min"] == pytest.approx(per_b)
    assert got["std"] == pytest.approx(np.std([1.0, per_b], ddof=1), rel=1e-12)


def test_largest_weights_come_with_their_indices_largest_first():
    w = np.array([1.0, 5.0, 2.0, 8.0, 3.0])
    idx, top = W.largest_weights(np.log(w) - 300.0, count=3)
    assert idx.tolist() == [3, 1, 4]
    assert top == pytest.approx(w[[3, 1, 4]] / w.sum(), rel=1e-12)


def test_reweighted_fraction_is_the_self_normalized_estimate_and_its_interval_covers_the_truth():
    """Target N(0, 1), proposal N(-1.5, 1.5^2) (ESS/n about 0.44), P(x > 1) = 0.1587: the
    95 % interval covers it in 90-99 % of 200 seeds (binomial sd of the coverage 1.5 %).  An
    interval from n instead of the weights (binomial Wald) covers it in only about 72 %."""
    truth = 0.5 * math.erfc(1 / math.sqrt(2))
    covered = 0
    for seed in range(200):
        x = np.random.default_rng(seed).normal(-1.5, 1.5, 2000)
        lw = -0.5 * x ** 2 + 0.5 * ((x + 1.5) / 1.5) ** 2 + 50.0
        r = W.reweighted_fraction(lw, x > 1)
        w = np.exp(lw - lw.max())
        assert r["estimate"] == pytest.approx(np.sum(w * (x > 1)) / np.sum(w), rel=1e-12)
        lo, hi = r["interval"]
        covered += lo <= truth <= hi
    assert 0.90 <= covered / 200 <= 0.99, covered


def test_reweighted_fraction_with_equal_weights_is_the_binomial_interval():
    f = np.zeros(1000)
    f[:300] = 1
    r = W.reweighted_fraction(np.zeros(1000), f)
    se = math.sqrt(0.3 * 0.7 / 1000)
    assert r["estimate"] == pytest.approx(0.3) and r["stderr"] == pytest.approx(se, rel=1e-12)
    assert r["interval"] == pytest.approx([0.3 - 1.959964 * se, 0.3 + 1.959964 * se], rel=1e-6)


def test_summary_locates_the_heaviest_sample_in_its_set():
    rng = np.random.default_rng(4)
    sets = [rng.normal(0, 0.3, 500) for _ in range(3)]
    sets[2][123] = 6.0                                   # one sample e^6 ~ 400 times the others
    flags = [s > 0 for s in sets]
    out = W.summary(sets, flags, count=4)
    assert (out["largest"][0]["set"], out["largest"][0]["index"]) == (2, 123)
    assert out["largest"][0]["relative_to_mean"] == pytest.approx(
        1500 * math.exp(6.0) / np.exp(np.concatenate(sets)).sum(), rel=1e-12)
    assert len(out["largest"]) == 4 and len(out["k_hat_per_set"]) == 3
    assert out["fraction"]["estimate"] == pytest.approx(
        W.reweighted_fraction(np.concatenate(sets), np.concatenate(flags))["estimate"])


def test_joint_states_of_known_populations_per_group_and_pooled():
    """Two indicators, weights exp(log_w) in two groups: each pattern's weighted fraction is the
    mean over the groups of the within-group self-normalized fractions (counted here by hand),
    the standard error their spread; with one group, nan."""
    from smoothflow_torch.pipeline.weights import joint_states
    up = np.array([[0, 0], [1, 0], [1, 1], [0, 0], [0, 0], [0, 1], [1, 1], [0, 0]], bool)
    log_w = np.log(np.array([1.0, 3.0, 0.5, 2.0, 1.0, 1.0, 2.0, 4.0]))
    groups = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    got = joint_states(up, log_w, groups)
    assert list(got) == [(False, False), (False, True), (True, False), (True, True)]
    by_hand = {(False, False): ((1 + 2) / 6.5, (1 + 4) / 8), (False, True): (0.0, 1 / 8),
               (True, False): (3 / 6.5, 0.0), (True, True): (0.5 / 6.5, 2 / 8)}
    for pattern, (a, b) in by_hand.items():
        sampled, mean, se = got[pattern]
        assert sampled == pytest.approx(np.mean(np.all(up == pattern, axis=1)))
        assert mean == pytest.approx((a + b) / 2, rel=1e-12)
        assert se == pytest.approx(abs(a - b) / 2, rel=1e-12)      # sd (ddof 1) of two / sqrt(2)
    single = joint_states(up)
    assert single[(False, False)][1] == pytest.approx(0.5) and math.isnan(single[(False, False)][2])
    assert sum(v[1] for v in joint_states(up, log_w).values()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="log weights"):
        joint_states(up, log_w[:3])
