"""Neighbour masks: which pixels of a frame belong to other sources than the central object.

Cut-outs of the real TNG–HSC mocks and of surveys put the target at the frame centre among
neighbouring galaxies and stars (the calibrated mock has ~20 per frame, some overlapping).
Without a mask the Petrosian fit of extract (:mod:`croppers`) sees their light: its
iterated centroid can walk onto a brighter neighbour, and the aperture magnitudes include
them. Measured on 300 frames of the demo's MOCK_FIDUCIAL (R band against the mock's true
magnitude): error spread 0.46 → 0.19 mag, share off by > 0.2 mag 17 % → 7 %, centres more
than 3 px from the target 7.7 % → 1.7 %.

Detection and deblending are Source Extractor's (Bertin & Arnouts 1996) as the maintained
``sep`` library implements them: a threshold of ``threshold`` × the frame's robust pixel σ
over ``min_area`` connected pixels, then a multi-threshold deblend (``deblend_nthresh``
levels, minimum contrast ``deblend_cont``) that separates overlapping sources.
``sep`` was chosen over photutils' ``deblend_sources`` because it measured ~2 ms against
~15 ms a frame here (100 px), which matters for extract's throughput. The central object
is the source whose segment holds the frame centre, else the source nearest to it
within ``center_radius`` (a fraction of the smaller frame edge). Every other segment,
grown by ``dilate`` pixels to cover its faint wings but never onto the central segment,
is masked.

:func:`fill_masked` replaces masked pixels by the mean of the unmasked pixels of the same
annulus about the centre, per band: the same assumption as the Petrosian profile itself
(surface brightness constant within an annulus), so aperture fluxes measured on the filled
image are those of the central object's profile.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scripts.preprocessing.noise import robust_sigma


@dataclass(frozen=True)
class NeighbourMask:
    """Result of :func:`neighbour_mask`: ``mask`` (H, W) True on other sources' pixels,
    ``n_sources`` detected in the frame, ``central_found`` whether a central source was
    identified (when not, every detected source is masked)."""

    mask: np.ndarray
    n_sources: int
    central_found: bool


def neighbour_mask(ref: np.ndarray, *, threshold: float = 1.5, min_area: int = 5,
                   deblend_nthresh: int = 32, deblend_cont: float = 0.005, dilate: int = 2,
                   center_radius: float = 0.1, valid: np.ndarray | None = None) -> NeighbourMask:
    """Mask of the sources other than the central one in a 2-D frame (see the module docstring).

    ``valid`` (H, W) False marks pixels that carry no data (they are neither detected nor
    masked here). A frame without noise (σ = 0) or without any detection gives an empty mask.
    """
    import sep

    ref = np.asarray(ref, dtype=np.float64)
    h, w = ref.shape
    ok = np.isfinite(ref) if valid is None else (np.asarray(valid, bool) & np.isfinite(ref))
    sigma = robust_sigma(ref[ok])     # NaN when nothing is finite: an empty mask below
    empty = NeighbourMask(np.zeros((h, w), bool), 0, False)
    if not sigma > 0:
        return empty
    data = np.ascontiguousarray(np.where(ok, ref, 0.0))
    try:
        objects, segmentation = sep.extract(data, threshold, err=sigma, mask=~ok,
                                            minarea=int(min_area),
                                            deblend_nthresh=int(deblend_nthresh),
                                            deblend_cont=float(deblend_cont),
                                            segmentation_map=True)
    except Exception as err:  # sep raises plain Exception when a frame exceeds its buffers
        if "buffer full" in str(err) or "overflow" in str(err):
            return empty
        raise
    if not len(objects):
        return empty
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    central = int(segmentation[int(round(cy)), int(round(cx))])
    if central == 0:
        distance = np.hypot(objects["x"] - cx, objects["y"] - cy)
        nearest = int(np.argmin(distance))
        if distance[nearest] <= center_radius * min(h, w):
            central = nearest + 1
    others = (segmentation > 0) & (segmentation != central)
    if dilate > 0 and others.any():
        from scipy import ndimage     # (here: extract workers that keep neighbours never load scipy)
        others = ndimage.binary_dilation(others, iterations=int(dilate))
    if central:
        others &= segmentation != central
    return NeighbourMask(others & ok, int(len(objects)), central != 0)


def fill_masked(image: np.ndarray, mask: np.ndarray, center) -> np.ndarray:
    """Copy of ``image`` (H, W[, C]) with masked pixels set to the mean of the unmasked
    pixels in the same 1-px annulus about ``center`` (x, y), band by band (0 where an
    annulus has no unmasked pixel)."""
    image = np.asarray(image)
    mask = np.asarray(mask, bool)
    if not mask.any():
        return image.copy()
    h, w = mask.shape
    y, x = np.mgrid[0:h, 0:w]
    ring = np.hypot(x - center[0], y - center[1]).astype(np.int64)
    good = ~mask & np.isfinite(image if image.ndim == 2 else image[..., 0])
    counts = np.bincount(ring[good], minlength=ring.max() + 1)
    out = np.array(image, dtype=np.float64, copy=True)
    planes = out[..., None] if out.ndim == 2 else out
    for band in range(planes.shape[-1]):
        plane = planes[..., band]
        sums = np.bincount(ring[good], plane[good], minlength=ring.max() + 1)
        mean = np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)
        plane[mask] = mean[ring[mask]]
    return out.astype(image.dtype, copy=False)
