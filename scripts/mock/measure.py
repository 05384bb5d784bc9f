"""Measurements on mock cut-outs: the survey catalogue's Petrosian sizes, and the aperture
photometry the tests check the mock's physics with.

Petrosian radii come from the extract stage's own :class:`~scripts.preprocessing.croppers.PetrosianCropper`
(SDSS definition: η = 0.2, Petrosian flux within 2 r_P, R50/R90 enclosing 50/90 % of it),
so the survey catalogue's ``petro_*`` columns and the radii extract measures on the
images share one definition. The catalogue measures them on the noiseless subject model,
as a survey's deblended photometry would, so no S/N test applies.

:class:`CurveOfGrowth` and :func:`flux_within` are plain circular-aperture sums around the
cut-out centre (each pixel split into ``oversample``² sub-pixels), exact to a few per cent
at small radii. Radii are in pixels.
"""
from __future__ import annotations

import math

import numpy as np

from scripts.preprocessing.croppers import PetrosianCropper


class CurveOfGrowth:
    """Enclosed flux F(<r) of ``image`` around ``center`` (default: cut-out centre)."""

    def __init__(self, image: np.ndarray, center=None, oversample: int = 5):
        ny, nx = image.shape
        cy, cx = ((ny - 1) / 2.0, (nx - 1) / 2.0) if center is None else center
        sub = (np.arange(oversample) + 0.5) / oversample - 0.5
        yy = (np.arange(ny)[:, None] + sub[None, :]).ravel()
        xx = (np.arange(nx)[:, None] + sub[None, :]).ravel()
        r = np.hypot(yy[:, None] - cy, xx[None, :] - cx).ravel()
        w = np.repeat(np.repeat(image / oversample ** 2, oversample, axis=0), oversample, axis=1).ravel()
        order = np.argsort(r, kind="stable")
        self.r = r[order]
        self.cum = np.cumsum(w[order])
        self.r_max = min(nx, ny) / 2.0

    def __call__(self, radius) -> np.ndarray:
        idx = np.searchsorted(self.r, np.asarray(radius, dtype=float), side="right")
        return np.where(idx > 0, self.cum[np.maximum(idx - 1, 0)], 0.0)

    def radius_enclosing(self, flux) -> float:
        """Smallest radius [px] whose enclosed flux reaches ``flux``."""
        idx = int(np.searchsorted(self.cum, flux, side="left"))
        return float(self.r[min(idx, len(self.r) - 1)])


def petrosian_radii(image: np.ndarray) -> dict[str, float]:
    """Petrosian measures of a noiseless 2-D ``image`` by the extract stage's
    :class:`PetrosianCropper`: ``r_petro``, ``r50``, ``r90`` [px] and ``petro_flux`` (NaN
    where the fit fails, e.g. a galaxy larger than its frame, as a survey catalogue leaves
    them empty), and ``aperture_px``, the photometric aperture: 2 r_P, or the largest circle
    in the frame when the fit failed."""
    cropper = PetrosianCropper(min_snr=0.0).fit(image)
    failed = cropper.failed
    r_petro = cropper.r_petrosian
    return {"r_petro": r_petro, "r50": cropper.r50, "r90": cropper.r90,
            "petro_flux": math.nan if failed else cropper.flux_petrosian,
            "aperture_px": min(image.shape) / 2.0 if failed else cropper.petrosian_aperture * r_petro}


def flux_within(image: np.ndarray, radius_px: float, oversample: int = 5) -> float:
    """Flux inside a circular aperture of ``radius_px`` around the centre."""
    return float(CurveOfGrowth(image, oversample=oversample)(radius_px))
