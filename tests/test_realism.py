"""Realism measures on Gaussian sets with known answers."""
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from scripts.analysis.realism import (classifier_two_sample_test, compare_sets, delong_auc,
                                      mmd_test, ood_score, summarise)

D = 16


def gaussian(n, seed, shift=0.0, scale=1.0):
    """Standard normal in D dims; dimension 0 shifted by ``shift``, dimension 1 scaled."""
    X = np.random.default_rng(seed).normal(size=(n, D))
    X[:, 0] += shift
    X[:, 1] *= scale
    return X


def brute_ratio(S, O, k):
    """d_k(x, O) / d_k(x, S \\ {x}) with L1, by full distance matrices."""
    to_other = np.sort(np.abs(S[:, None] - O[None]).sum(-1), axis=1)[:, k - 1]
    within = np.abs(S[:, None] - S[None]).sum(-1)
    np.fill_diagonal(within, np.inf)
    return to_other / np.sort(within, axis=1)[:, k - 1]


def test_ood_score_matches_brute_force():
    rng = np.random.default_rng(5)
    A = rng.normal(size=(40, 3)) * [1.0, 3.0, 0.5] + 2.0
    B = rng.normal(size=(55, 3))
    k = 3
    res = ood_score(A, B, k=k, seed=11)
    assert res.n_subsample == 40                  # the larger B is subsampled to |A|
    np.testing.assert_array_equal(res.indices, np.arange(40))
    # equal sizes: no subsampling, so every score can be recomputed by brute force
    mean, std = A.mean(0), A.std(0)                # default: standardised with A
    a, b = (A - mean) / std, (B - mean) / std
    res_eq = ood_score(A, B[:40], k=k, seed=11)
    np.testing.assert_allclose(res_eq.raw_scores, brute_ratio(a, b[:40], k), rtol=1e-5)
    # calibration: scores of half A1 against half A2, and its 95th percentile
    i1, i2 = res_eq.calibration_indices, res_eq.calibration_other
    assert len(i1) == len(i2) == 20 and not set(i1) & set(i2)
    cal = brute_ratio(a[i1], a[i2], k)
    np.testing.assert_allclose(res_eq.calibration_scores, cal, rtol=1e-5)
    assert res_eq.calibration == pytest.approx(np.percentile(cal, 95), rel=1e-6)
    np.testing.assert_allclose(res_eq.scores, res_eq.raw_scores / res_eq.calibration)
    assert res_eq.in_domain_fraction == pytest.approx(np.mean(res_eq.scores <= 1))


def test_ood_standardise_options_and_errors():
    A, B = gaussian(200, 1) * 5, gaussian(200, 2) * 5
    pre = (A - A.mean(0)) / A.std(0), (B - A.mean(0)) / A.std(0)
    np.testing.assert_allclose(ood_score(*pre, standardise=None).raw_scores,
                               ood_score(A, B, standardise="A").raw_scores, rtol=1e-5)
    with pytest.raises(ValueError, match="standardise"):
        ood_score(A, B, standardise="obs")
    with pytest.raises(ValueError, match="at least"):
        ood_score(A[:10], B, k=8)


def test_same_distribution_is_in_domain():
    """Averaged over seeds the in-domain fraction is the calibration level, 0.95."""
    fractions = [ood_score(gaussian(800, 10 + s), gaussian(800, 50 + s), seed=s).in_domain_fraction
                 for s in range(6)]
    assert all(f > 0.88 for f in fractions)
    assert 0.92 < np.mean(fractions) < 0.98


def test_delong_against_brute_force():
    rng = np.random.default_rng(8)
    y = np.r_[np.ones(30), np.zeros(45)].astype(int)
    s = np.round(rng.normal(size=75) + 0.7 * y, 1)        # rounded: ties included
    auc, var = delong_auc(y, s)
    pos, neg = s[y == 1], s[y == 0]
    psi = (pos[:, None] > neg[None]) + 0.5 * (pos[:, None] == neg[None])
    v10, v01 = psi.mean(1), psi.mean(0)
    assert auc == pytest.approx(psi.mean()) and auc == pytest.approx(roc_auc_score(y, s))
    assert var == pytest.approx(v10.var(ddof=1) / 30 + v01.var(ddof=1) / 45)


@pytest.mark.parametrize("classifier", ["logistic", "knn", "hgb"])
def test_c2st_same_distribution(classifier):
    res = classifier_two_sample_test(gaussian(600, 1), gaussian(600, 2), classifier=classifier,
                                     seed=0)
    assert res.ci_low <= 0.5 <= res.ci_high
    assert abs(res.auc - 0.5) < 0.06 and res.p_value > 0.01
    assert len(res.fold_aucs) == 5 and res.n_per_class == 600


def test_mmd_null_and_shift():
    same = mmd_test(gaussian(300, 1), gaussian(300, 2), n_permutations=200, seed=0)
    assert same.p_value > 0.05
    shifted = mmd_test(gaussian(300, 1), gaussian(300, 3, shift=1.0), n_permutations=200, seed=0)
    assert shifted.p_value < 0.01 and shifted.mmd2 > same.mmd2
    # under the null the permutation p-value is ~uniform: few of 20 draws fall below 0.05
    p_null = [mmd_test(gaussian(80, 200 + s), gaussian(80, 300 + s), n_permutations=100,
                       seed=s).p_value for s in range(20)]
    assert np.mean(np.array(p_null) < 0.05) <= 0.2 and 0.3 < np.mean(p_null) < 0.7
    # the unbiased statistic against a direct double sum
    X, Y = gaussian(40, 4), gaussian(30, 5, shift=0.5)
    res = mmd_test(X, Y, n_permutations=10, bandwidth=3.0)
    kern = lambda P, Q: np.exp(-((P[:, None] - Q[None]) ** 2).sum(-1) / (2 * 3.0 ** 2))
    kxx, kyy = kern(X, X), kern(Y, Y)
    ref = ((kxx.sum() - np.trace(kxx)) / (40 * 39) + (kyy.sum() - np.trace(kyy)) / (30 * 29)
           - 2 * kern(X, Y).mean())
    assert res.mmd2 == pytest.approx(ref, rel=1e-9)


@pytest.fixture(scope="module")
def comparisons():
    """Observed set, a simulation from the same law, a near one and a far one."""
    obs = gaussian(1500, 100)
    sims = {"same": gaussian(1200, 101),
            "near": gaussian(1200, 102, shift=0.8, scale=1.3),
            "far": gaussian(1200, 103, shift=2.5, scale=2.0)}
    return {name: compare_sets(sim, obs, seed=0, n_permutations=100, mmd_max_samples=500)
            for name, sim in sims.items()}


def test_compare_sets_same_distribution(comparisons):
    res = comparisons["same"]
    assert res["ood_sim"].in_domain_fraction >= 0.9
    assert res["ood_obs"].in_domain_fraction >= 0.9
    assert res["c2st"].ci_low <= 0.5 <= res["c2st"].ci_high
    assert res["mmd"].p_value > 0.05
    flat = summarise(res)
    assert set(flat) >= {"ood_sim.in_domain_fraction", "ood_obs.in_domain_fraction",
                         "c2st.auc", "mmd.p_value"}
    assert all(np.isscalar(v) for v in flat.values())


def test_compare_sets_clear_shift(comparisons):
    res = comparisons["far"]
    assert res["ood_sim"].in_domain_fraction < 0.5
    assert res["ood_obs"].in_domain_fraction < 0.5
    assert res["c2st"].auc > 0.9 and res["c2st"].p_value < 1e-6
    assert res["mmd"].p_value < 0.01


def test_closer_simulation_scores_better_on_every_metric(comparisons):
    """Mirror of the mock universe: the good run must beat the bad run everywhere."""
    same, near, far = (comparisons[n] for n in ("same", "near", "far"))
    for better, worse in ((same, near), (near, far)):
        for direction in ("ood_sim", "ood_obs"):
            assert better[direction].in_domain_fraction > worse[direction].in_domain_fraction
        assert better["c2st"].auc < worse["c2st"].auc
        assert better["mmd"].mmd2 < worse["mmd"].mmd2
