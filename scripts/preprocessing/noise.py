"""Sky noise of an image, per band: the level that padding beyond the frame must imitate.

A crop that leaves the frame is padded (:mod:`croppers`). Exact zeros there are a border
the network and every realism measure can learn instead of physics, so the padding is
sky noise of the image's own level, drawn from a generator seeded by the image's identity
(:func:`identity_seed`), so that a store does not depend on workers or on resumed runs.

σ per band (:func:`sky_sigma`), in image units:

* from the ``VARIANCE`` plane where the file has one: √(median of the valid variance
  pixels in the frame's outer strip) times √``VARSC`` when the header gives it (the real
  TNG–HSC mocks and HSC coadds: the plane underestimates the true, correlated noise by
  that factor). The strip (:func:`outer_strip`) holds the pixels next to the padding and
  the farthest from the object: the median over the whole frame carries the source's
  Poisson variance exactly for the large objects whose crops leave the frame (+13 % in σ
  on the small mock);
* else a robust estimate from the band itself (:func:`border_sigma`): 1.4826 × the
  median absolute deviation of the differences between neighbouring pixels of the same
  strip, / √2. Differencing removes the smooth light of an object that reaches the frame's
  edge, which inflates the MAD of the pixel values themselves: on the padded galaxies of
  the demo mock σ is +1 % off in the median (p90 3 %) against +6 % (p90 18 %) for the
  values, and +6–12 % for the values on the real TNG–HSC mock. Correlated coadd noise
  makes it read a few per cent low (−0.3 to −5 % on the real mock);
* 0 for a noiseless band (synthetic or model images): padding with zeros is then no
  artefact, and no noise is invented.

The padding is white Gaussian noise of mean 0 (the images are sky-subtracted); correlated
coadd noise keeps its σ but not its texture, which the area resize to ``IMAGE_SIZE``
mostly averages away.
"""
from __future__ import annotations

import hashlib
import math
from typing import Sequence

import numpy as np

#: Scale from the median absolute deviation to σ of a Gaussian.
MAD_TO_SIGMA = 1.482602218505602
#: Where each band's σ came from (``pad_sigma_source`` in objects.parquet).
SOURCES = ("variance", "mad", "none")


def robust_sigma(values: np.ndarray) -> float:
    """Gaussian-equivalent σ from the median absolute deviation (NaN if nothing finite)."""
    values = np.asarray(values)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan
    return float(MAD_TO_SIGMA * np.median(np.abs(values - np.median(values))))


def outer_strip(shape: tuple[int, ...], width: int | None = None) -> np.ndarray:
    """(H, W) boolean mask of the frame's outer strip, ``width`` pixels wide (default an
    eighth of the shorter edge, at least 2; the whole frame when nothing would be left)."""
    h, w = shape[:2]
    width = max(2, min(h, w) // 8) if width is None else int(width)
    strip = np.ones((h, w), dtype=bool)
    if 2 * width < min(h, w):
        strip[width:h - width, width:w - width] = False
    return strip


def border_sigma(band: np.ndarray, width: int | None = None) -> float:
    """Pixel noise σ of a 2-D band from its outer strip (:func:`outer_strip`): the MAD
    σ of the differences of horizontally and vertically neighbouring strip pixels, / √2
    (exact for white noise; insensitive to smooth light). Falls back to
    :func:`robust_sigma` of the values for bands too small to difference."""
    band = np.asarray(band, dtype=np.float64)
    strip = outer_strip(band.shape, width)
    diffs = [(band[:, 1:] - band[:, :-1])[strip[:, 1:] & strip[:, :-1]],
             (band[1:] - band[:-1])[strip[1:] & strip[:-1]]]
    diffs = np.concatenate(diffs)
    if diffs.size < 2:
        return robust_sigma(band[strip])
    return robust_sigma(diffs) / math.sqrt(2.0)


def variance_sigma(variance: np.ndarray, var_scale: float = math.nan,
                   width: int | None = None) -> float:
    """√(median variance over the finite, positive pixels of the outer strip × ``var_scale``);
    NaN when there is none.

    ``var_scale`` (header ``VARSC``: true noise variance / plane) is applied only when it
    is finite and positive.
    """
    variance = np.asarray(variance, dtype=np.float64)
    valid = np.isfinite(variance) & (variance > 0) & outer_strip(variance.shape, width)
    if not valid.any():
        return math.nan
    scale = var_scale if (math.isfinite(var_scale) and var_scale > 0) else 1.0
    return float(math.sqrt(np.median(variance[valid]) * scale))


def sky_sigma(image: np.ndarray, variances: Sequence[np.ndarray | None] | None = None,
              var_scales: Sequence[float] | None = None) -> tuple[np.ndarray, tuple[str, ...]]:
    """Per-band sky σ of an (H, W) or (H, W, C) image and where each came from.

    ``variances``: the band's variance plane or None, per band (see module docstring);
    ``var_scales``: ``VARSC`` per band (NaN where unknown). Returns (σ array of length C,
    source per band in :data:`SOURCES`).
    """
    image = np.asarray(image)
    cube = image[..., None] if image.ndim == 2 else image
    n = cube.shape[-1]
    variances = list(variances) if variances is not None else [None] * n
    var_scales = list(var_scales) if var_scales is not None else [math.nan] * n
    if len(variances) != n or len(var_scales) != n:
        raise ValueError(f"need one variance plane and VARSC per band ({n}), got "
                         f"{len(variances)} and {len(var_scales)}")
    sigma, sources = np.zeros(n), []
    for c in range(n):
        value, source = math.nan, "variance"
        if variances[c] is not None:
            value = variance_sigma(variances[c], float(var_scales[c]))
        if not math.isfinite(value):
            value, source = border_sigma(cube[..., c]), "mad"
        if not (math.isfinite(value) and value > 0):
            value, source = 0.0, "none"
        sigma[c] = value
        sources.append(source)
    return sigma, tuple(sources)


def identity_seed(*parts) -> int:
    """A 63-bit seed from an image's identity (e.g. dataset, snapshot, object, projection):
    the same in every process, run and worker count."""
    digest = hashlib.blake2b(repr(tuple(parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1
