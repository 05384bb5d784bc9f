"""Modes of one-dimensional posteriors by peak detection (the original's ``peak_detection``).

Each row of samples is binned on its own range, smoothed with a Gaussian kernel (a binned
kernel density estimate, bandwidth by Scott's rule), and its local maxima at least
``min_height`` times the highest one are the modes, strongest first. Vectorised over
rows: 10⁵ objects × 400 samples take a second.
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d

BINS = 64


def posterior_modes(samples, max_modes: int = 3, min_height: float = 0.2,
                    bins: int = BINS) -> np.ndarray:
    """Modes of each row of ``samples`` (N, S): array (N, max_modes), strongest first, NaN
    where a row has fewer modes (or non-finite samples)."""
    samples = np.asarray(samples, float)
    n, s = samples.shape
    out = np.full((n, max_modes), np.nan)
    ok = np.isfinite(samples).all(axis=1)
    if not ok.any():
        return out
    x = samples[ok]
    lo, hi = x.min(axis=1), x.max(axis=1)
    span = np.where(hi > lo, hi - lo, 1.0)
    # pad by 10 % so a mode at the edge is still a local maximum
    lo, span = lo - 0.1 * span, 1.2 * span
    idx = np.clip(((x - lo[:, None]) / span[:, None] * bins).astype(int), 0, bins - 1)
    counts = np.zeros((len(x), bins))
    np.add.at(counts, (np.repeat(np.arange(len(x)), s), idx.ravel()), 1.0)
    # Scott's rule bandwidth, in bins (common per row)
    sigma_bins = 1.06 * x.std(axis=1) * s ** (-0.2) / span * bins
    density = np.empty_like(counts)
    for width in np.unique(np.round(np.clip(sigma_bins, 0.5, bins / 4), 1)):
        rows = np.round(np.clip(sigma_bins, 0.5, bins / 4), 1) == width
        density[rows] = gaussian_filter1d(counts[rows], width, axis=1, mode="constant")
    left = np.concatenate([np.full((len(x), 1), -np.inf), density[:, :-1]], axis=1)
    right = np.concatenate([density[:, 1:], np.full((len(x), 1), -np.inf)], axis=1)
    peak = (density > left) & (density >= right)
    peak &= density >= min_height * density.max(axis=1, keepdims=True)
    height = np.where(peak, density, -np.inf)
    order = np.argsort(-height, axis=1)[:, :max_modes]
    centres = lo[:, None] + (order + 0.5) / bins * span[:, None]
    valid = np.take_along_axis(height, order, axis=1) > -np.inf
    modes = np.where(valid, centres, np.nan)
    if modes.shape[1] < max_modes:
        modes = np.pad(modes, ((0, 0), (0, max_modes - modes.shape[1])), constant_values=np.nan)
    out[ok] = modes
    return out
