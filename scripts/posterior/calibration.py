"""Calibration of posterior samples against known truths (pure NumPy/SciPy, no I/O).

Every function takes ``samples`` of shape ``(N, S)`` (one field, ``S`` posterior draws per
object) or ``(N, S, D)`` (several fields) and the true values ``truth`` ``(N,)`` / ``(N, D)``.

- :func:`coverage`: share of truths inside the central ``level`` credible interval (the
  ``(1-level)/2`` and ``(1+level)/2`` sample quantiles). A calibrated posterior gives
  ``level``; an over-confident (too narrow) one less, an under-confident one more.
- :func:`pit`: the probability integral transform (rank of the truth among the samples,
  randomised within ties so that it is exactly uniform on [0, 1] for a calibrated
  posterior), with :func:`pit_ks_pvalue` the Kolmogorov–Smirnov p-value against uniform.
- :func:`tarp`: the multivariate "Tests of Accuracy with Random Points" of Lemos et al.
  (2023, ICML, arXiv:2302.03026): expected coverage of balls around random reference
  points; a calibrated joint posterior gives ECP(α) = α for every α.
- :func:`r2` and :func:`bias` of a point estimate (the posterior median) against the truth,
  and :func:`width_ratio`, how much narrower the posterior is than the prior.
"""
from __future__ import annotations

import numpy as np
from scipy import stats

#: credible levels of the coverage curve
CURVE_LEVELS = np.round(np.linspace(0.05, 0.95, 19), 2)


def _finite_rows(samples: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Rows whose truth and every sample are finite."""
    s_ok = np.isfinite(samples).reshape(len(samples), -1).all(axis=1)
    t_ok = np.isfinite(truth).reshape(len(truth), -1).all(axis=1)
    return s_ok & t_ok


def coverage(samples, truth, level: float) -> float:
    """Fraction of ``truth`` inside the central ``level`` interval of each row's samples."""
    samples, truth = np.asarray(samples, float), np.asarray(truth, float)
    ok = _finite_rows(samples, truth)
    if not ok.any():
        return float("nan")
    lo, hi = np.quantile(samples[ok], [(1 - level) / 2, (1 + level) / 2], axis=1)
    t = truth[ok]
    return float(np.mean((t >= lo) & (t <= hi)))


def coverage_interval(samples, truth, level: float, groups=None, n_boot: int = 500,
                      seed: int = 0, width: float = 0.9) -> tuple[float, float]:
    """Bootstrap interval (central ``width``) of :func:`coverage`, resampling whole
    ``groups`` (e.g. prepare's ``split_group``: the projections of one object are not
    independent), or rows when ``groups`` is None."""
    samples, truth = np.asarray(samples, float), np.asarray(truth, float)
    ok = _finite_rows(samples, truth)
    if not ok.any():
        return (float("nan"), float("nan"))
    lo, hi = np.quantile(samples[ok], [(1 - level) / 2, (1 + level) / 2], axis=1)
    inside = ((truth[ok] >= lo) & (truth[ok] <= hi)).astype(float)
    keys = np.arange(ok.sum()) if groups is None else np.asarray(groups)[ok]
    _, codes = np.unique(keys, return_inverse=True)
    hits, sizes = np.bincount(codes, weights=inside), np.bincount(codes).astype(float)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, len(sizes), size=(n_boot, len(sizes)))
    values = hits[draw].sum(axis=1) / sizes[draw].sum(axis=1)
    a = (1 - width) / 2
    return (float(np.quantile(values, a)), float(np.quantile(values, 1 - a)))


def coverage_curve(samples, truth, levels=CURVE_LEVELS) -> np.ndarray:
    """Empirical coverage at each credible level (the diagonal for a calibrated posterior)."""
    return np.array([coverage(samples, truth, lv) for lv in levels])


def pit(samples, truth, seed: int = 0) -> np.ndarray:
    """Randomised PIT of each finite row: ``(#{s < t} + U·(#{s = t} + 1)) / (S + 1)`` with
    ``U ~ U(0, 1)``; exactly uniform when the truth is a draw from the posterior."""
    samples, truth = np.asarray(samples, float), np.asarray(truth, float)
    ok = _finite_rows(samples, truth)
    s, t = samples[ok], truth[ok][:, None]
    below = (s < t).sum(axis=1)
    equal = (s == t).sum(axis=1)
    u = np.random.default_rng(seed).uniform(size=len(below))
    return (below + u * (equal + 1)) / (s.shape[1] + 1)


def pit_ks_pvalue(pit_values) -> float:
    """Kolmogorov–Smirnov p-value of PIT values against U(0, 1) (small: miscalibrated)."""
    pit_values = np.asarray(pit_values, float)
    if len(pit_values) == 0:
        return float("nan")
    return float(stats.kstest(pit_values, "uniform").pvalue)


def pit_histogram(pit_values, bins: int = 10) -> np.ndarray:
    """Counts of PIT values in ``bins`` equal bins of [0, 1] (flat when calibrated)."""
    return np.histogram(pit_values, bins=bins, range=(0.0, 1.0))[0]


def tarp(samples, truth, seed: int = 0, levels=CURVE_LEVELS) -> dict:
    """TARP expected coverage probability (Lemos et al. 2023).

    ``samples`` (N, S, D) and ``truth`` (N, D), in a space where the fields have comparable
    scales (here: prepare's standardised values). Each object gets a reference point drawn
    uniformly in the bounding box of the truths; ``f_i`` is the fraction of its samples
    nearer to the reference than the truth is. ECP(α) = mean(f_i < α); a calibrated
    posterior gives ECP(α) = α, so ``f`` is uniform: returned with its KS p-value and the
    largest deviation ``max |ECP(α) - α|`` over ``levels``.
    """
    samples, truth = np.asarray(samples, float), np.asarray(truth, float)
    if samples.ndim == 2:
        samples, truth = samples[..., None], truth[:, None]
    ok = _finite_rows(samples, truth)
    s, t = samples[ok], truth[ok]
    if not len(t):
        return {"ecp": [float("nan")] * len(levels), "levels": list(map(float, levels)),
                "max_deviation": float("nan"), "ks_p": float("nan"), "n": 0}
    rng = np.random.default_rng(seed)
    lo, hi = t.min(axis=0), t.max(axis=0)
    ref = rng.uniform(lo, hi, size=t.shape)
    d_samples = np.linalg.norm(s - ref[:, None, :], axis=2)
    d_truth = np.linalg.norm(t - ref, axis=1)
    f = (d_samples < d_truth[:, None]).mean(axis=1)
    ecp = np.array([np.mean(f < a) for a in levels])
    return {"ecp": ecp.tolist(), "levels": list(map(float, levels)),
            "max_deviation": float(np.max(np.abs(ecp - np.asarray(levels)))),
            "ks_p": float(stats.kstest(f, "uniform").pvalue), "n": int(len(t))}


def r2(estimate, truth) -> float:
    """Coefficient of determination of a point estimate (NaN rows left out)."""
    estimate, truth = np.asarray(estimate, float), np.asarray(truth, float)
    ok = np.isfinite(estimate) & np.isfinite(truth)
    if ok.sum() < 2:
        return float("nan")
    resid = np.sum((truth[ok] - estimate[ok]) ** 2)
    total = np.sum((truth[ok] - truth[ok].mean()) ** 2)
    return float(1.0 - resid / total) if total > 0 else float("nan")


def bias(estimate, truth) -> float:
    """Mean of ``estimate - truth`` (NaN rows left out)."""
    diff = np.asarray(estimate, float) - np.asarray(truth, float)
    diff = diff[np.isfinite(diff)]
    return float(diff.mean()) if len(diff) else float("nan")


def interval_width(values, level: float = 0.68, axis=-1) -> np.ndarray:
    """Width of the central ``level`` interval along ``axis``."""
    lo, hi = np.quantile(values, [(1 - level) / 2, (1 + level) / 2], axis=axis)
    return hi - lo


def width_ratio(samples, prior_values, level: float = 0.68) -> float:
    """Prior width over the median posterior width (central ``level`` intervals).

    ``prior_values``: the field over the training set (the prior the flow learned). 1 means
    the condition taught nothing; larger is more informative.
    """
    samples = np.asarray(samples, float)
    prior_values = np.asarray(prior_values, float)
    prior_values = prior_values[np.isfinite(prior_values)]
    rows = samples[np.isfinite(samples).all(axis=1)]
    if not len(rows) or not len(prior_values):
        return float("nan")
    post = float(np.median(interval_width(rows, level, axis=1)))
    return float(interval_width(prior_values, level)) / post if post > 0 else float("inf")


def field_calibration(samples, truth, prior_values, seed: int = 0, groups=None) -> dict:
    """Every per-field figure of the stage for one field (``samples`` (N, S), in the
    field's physical units; ``truth`` (N,); ``prior_values`` its training-set values;
    ``groups`` the object of each row, for the coverage intervals)."""
    samples, truth = np.asarray(samples, float), np.asarray(truth, float)
    ok = _finite_rows(samples, truth)
    median = np.median(samples[ok], axis=1) if ok.any() else np.array([])
    pits = pit(samples, truth, seed=seed)
    return {
        "n": int(ok.sum()),
        "coverage_68": coverage(samples, truth, 0.68),
        "coverage_95": coverage(samples, truth, 0.95),
        "coverage_68_interval": coverage_interval(samples, truth, 0.68, groups, seed=seed),
        "coverage_95_interval": coverage_interval(samples, truth, 0.95, groups, seed=seed),
        "coverage_curve": coverage_curve(samples, truth).tolist(),
        "pit_ks_p": pit_ks_pvalue(pits),
        "pit_histogram": pit_histogram(pits).tolist(),
        "r2_median": r2(median, truth[ok]),
        "bias_median": bias(median, truth[ok]),
        "width_ratio": width_ratio(samples, prior_values),
    }
