"""Resize images by exact area averaging (any ratio, up or down).

Each output pixel is the area-weighted mean of the input pixels it overlaps, with weights
equal to the exact 1-D overlap lengths along each axis (the operation is separable). This
is the flux-exact version of ``tf.image.resize(method='area')`` / OpenCV ``INTER_AREA``
and needs neither library.

Flux convention
---------------
``preserve='mean'`` (default) conserves **surface brightness**: the mean pixel value of the
image (and of any region made of whole output pixels) is unchanged, so pixel values keep
the units of the input (e.g. nanomaggies per *input* pixel) whatever the crop size was.
``preserve='sum'`` conserves **total flux**: output = mean-preserving result ×
(input pixel count / output pixel count), so the image sum is unchanged.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

PRESERVE = ("mean", "sum")


@lru_cache(maxsize=256)
def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) matrix of exact overlap weights; each row sums to 1 (read-only).

    Output pixel ``j`` covers input coordinates ``[j, j + 1) * n_in / n_out``; its weight
    on input pixel ``i`` is the overlap of that interval with ``[i, i + 1)`` divided by the
    interval length ``n_in / n_out``.
    """
    if n_in < 1 or n_out < 1:
        raise ValueError(f"sizes must be >= 1, got n_in={n_in}, n_out={n_out}")
    # Work in units of 1/n_out input pixels so the edges are exact integers.
    lo = np.arange(n_out)[:, None] * n_in           # output pixel start × n_out
    hi = lo + n_in
    i0 = np.arange(n_in)[None, :] * n_out           # input pixel start × n_out
    i1 = i0 + n_out
    overlap = np.clip(np.minimum(hi, i1) - np.maximum(lo, i0), 0, None)
    weights = overlap.astype(np.float64) / n_in
    weights.setflags(write=False)
    return weights


def resize_area(image: np.ndarray, size: int | tuple[int, int], *,
                preserve: str = "mean") -> np.ndarray:
    """Area-average ``image`` (H, W) or (H, W, C) to ``size`` = S or (h, w).

    Returns float32 for float32 input, float64 otherwise. See the module docstring for
    what ``preserve`` ('mean' = surface brightness, 'sum' = total flux) conserves.
    """
    if preserve not in PRESERVE:
        raise ValueError(f"preserve must be one of {PRESERVE}, got {preserve!r}")
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
    h, w = (size, size) if np.isscalar(size) else tuple(size)
    h, w = int(h), int(w)
    H, W = image.shape[:2]
    out_dtype = np.float32 if image.dtype == np.float32 else np.float64
    if (h, w) == (H, W) and preserve == "mean":
        return image.astype(out_dtype, copy=True)
    wy, wx = area_weights(H, h), area_weights(W, w)
    data = image.astype(np.float64, copy=False)
    if image.ndim == 2:
        out = wy @ data @ wx.T
    else:
        out = np.moveaxis(wy @ np.moveaxis(data, -1, 0) @ wx.T, 0, -1)
    if preserve == "sum":
        out = out * (H * W / (h * w))
    return out.astype(out_dtype, copy=False)
