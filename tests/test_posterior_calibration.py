"""Calibration measures and peak detection against known answers on synthetic Gaussians.

Truths ``θ_i ~ N(μ_i, σ)``; a perfect posterior sampler draws from ``N(μ_i, σ)``, a shrunk
(over-confident) one from ``N(μ_i, σ/2)``, an inflated one from ``N(μ_i, 2σ)``, a biased one
from ``N(μ_i + σ, σ)``. Exact answers: coverage of the central interval of level ``l`` is
``l`` for the perfect sampler and ``2Φ(Φ⁻¹((1+l)/2) · s) − 1`` for width factor ``s``.
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from scripts.posterior import calibration as cal
from scripts.posterior.peaks import posterior_modes

N, S, SIGMA = 4000, 400, 0.7


@pytest.fixture(scope="module")
def gaussians():
    rng = np.random.default_rng(0)
    mu = rng.normal(0, 2, N)
    truth = mu + SIGMA * rng.normal(size=N)
    noise = rng.normal(size=(N, S))
    return mu, truth, noise


def _expected(level, width):
    return 2 * stats.norm.cdf(stats.norm.ppf((1 + level) / 2) * width) - 1


@pytest.mark.parametrize("level", [0.68, 0.95])
def test_perfect_sampler_has_nominal_coverage(gaussians, level):
    mu, truth, noise = gaussians
    samples = mu[:, None] + SIGMA * noise
    assert cal.coverage(samples, truth, level) == pytest.approx(level, abs=0.02)


@pytest.mark.parametrize("width", [0.5, 2.0])
def test_mis_sized_samplers_have_the_expected_coverage(gaussians, width):
    mu, truth, noise = gaussians
    samples = mu[:, None] + width * SIGMA * noise
    for level in (0.68, 0.95):
        assert cal.coverage(samples, truth, level) == pytest.approx(_expected(level, width), abs=0.025)


def test_pit_uniform_for_perfect_and_not_for_shrunk_or_biased(gaussians):
    mu, truth, noise = gaussians
    perfect = cal.pit(mu[:, None] + SIGMA * noise, truth)
    assert cal.pit_ks_pvalue(perfect) > 0.01
    assert cal.pit_histogram(perfect).min() > 0.8 * N / 10
    shrunk = cal.pit(mu[:, None] + 0.5 * SIGMA * noise, truth)
    assert cal.pit_ks_pvalue(shrunk) < 1e-6
    hist = cal.pit_histogram(shrunk)          # U shape: truths fall in the tails
    assert hist[0] > 2 * hist[5] and hist[-1] > 2 * hist[5]
    biased = cal.pit(mu[:, None] + SIGMA + SIGMA * noise, truth)
    assert cal.pit_ks_pvalue(biased) < 1e-6


def test_pit_is_uniform_with_ties():
    """Discrete samples (many ties with the truth) still give uniform PIT values."""
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 3, 3000).astype(float)
    samples = rng.integers(0, 3, (3000, 50)).astype(float)
    assert cal.pit_ks_pvalue(cal.pit(samples, truth)) > 0.01


def test_tarp_detects_joint_miscalibration():
    rng = np.random.default_rng(2)
    mu = rng.normal(0, 2, (N, 3))
    truth = mu + SIGMA * rng.normal(size=(N, 3))
    noise = rng.normal(size=(N, 200, 3))
    good = cal.tarp(mu[:, None] + SIGMA * noise, truth)
    assert good["max_deviation"] < 0.04 and good["ks_p"] > 0.01
    bad = cal.tarp(mu[:, None] + 0.5 * SIGMA * noise, truth)
    assert bad["max_deviation"] > 0.1 and bad["ks_p"] < 1e-6


def test_r2_bias_width_ratio(gaussians):
    mu, truth, noise = gaussians
    samples = mu[:, None] + SIGMA * noise
    median = np.median(samples, axis=1)
    # R² of the ideal estimator: 1 - σ² / (4 + σ²)
    assert cal.r2(median, truth) == pytest.approx(1 - SIGMA**2 / (4 + SIGMA**2), abs=0.02)
    assert cal.bias(median + 0.3, truth) == pytest.approx(0.3, abs=0.03)
    # prior width sqrt(4 + σ²), posterior width σ
    assert cal.width_ratio(samples, truth) == pytest.approx(np.sqrt(4 + SIGMA**2) / SIGMA, rel=0.05)


def test_nan_rows_are_left_out(gaussians):
    mu, truth, noise = gaussians
    samples = mu[:, None] + SIGMA * noise
    samples[:10] = np.nan
    truth = truth.copy()
    truth[10:20] = np.nan
    m = cal.field_calibration(samples, truth, truth)
    assert m["n"] == N - 20 and np.isfinite(m["coverage_68"]) and np.isfinite(m["r2_median"])


def test_peaks_find_both_modes_of_a_bimodal_posterior():
    rng = np.random.default_rng(3)
    uni = rng.normal(1.0, 0.2, (5, 400))
    bi = np.concatenate([rng.normal(-2, 0.2, (5, 260)), rng.normal(2, 0.2, (5, 140))], axis=1)
    modes = posterior_modes(np.concatenate([uni, bi]), max_modes=3, min_height=0.2)
    assert np.allclose(modes[:5, 0], 1.0, atol=0.15) and np.isnan(modes[:5, 1:]).all()
    assert np.allclose(modes[5:, 0], -2.0, atol=0.2) and np.allclose(modes[5:, 1], 2.0, atol=0.2)
    nan_row = posterior_modes(np.full((1, 50), np.nan))
    assert np.isnan(nan_row).all()


def test_coverage_interval_resamples_whole_objects(gaussians):
    """Copies of one object (projections) are one unit: the interval does not shrink when
    every object is repeated three times."""
    mu, truth, noise = gaussians
    samples = mu[:, None] + SIGMA * noise
    lo, hi = cal.coverage_interval(samples, truth, 0.68)
    assert lo < 0.68 < hi and 0.02 < hi - lo < 0.04          # ±1.645·sqrt(.68·.32/4000)
    rep = np.repeat(samples, 3, axis=0), np.repeat(truth, 3), np.repeat(np.arange(N), 3)
    lo3, hi3 = cal.coverage_interval(rep[0], rep[1], 0.68, groups=rep[2])
    assert (hi3 - lo3) == pytest.approx(hi - lo, rel=0.2)
    lo_naive, hi_naive = cal.coverage_interval(rep[0], rep[1], 0.68)
    assert (hi_naive - lo_naive) < 0.7 * (hi - lo)
