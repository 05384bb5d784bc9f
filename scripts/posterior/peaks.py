"""Modes of one-dimensional posteriors by peak detection (the original's ``peak_detection``).

Each row of samples is binned on its own range, smoothed with a Gaussian kernel (a binned
kernel density estimate, bandwidth by Scott's rule), and its local maxima at least
``min_height`` times the highest one and prominent by ``PROMINENCE`` of it (so noise
wiggles are not modes) are the modes, strongest first (``scipy.signal.find_peaks``).
"""
from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

BINS = 64
#: a mode's prominence (its drop to the saddle towards a higher mode), relative to the top
PROMINENCE = 0.1


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
    modes = np.full((len(x), max_modes), np.nan)
    top = density.max(axis=1)
    for i, row in enumerate(density):
        # a mode must stand out of the noise: height and prominence relative to the top
        peaks, props = find_peaks(np.concatenate([[0.0], row, [0.0]]), height=min_height * top[i],
                                  prominence=PROMINENCE * top[i])
        strongest = peaks[np.argsort(-props["peak_heights"])][:max_modes] - 1
        modes[i, :len(strongest)] = lo[i] + (strongest + 0.5) / bins * span[i]
    out[ok] = modes
    return out
