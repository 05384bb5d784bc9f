"""Neighbour masks for the Petrosian fit (extract.NEIGHBOURS: mask, scripts/preprocessing/deblend.py).

Known answers on synthetic frames: a galaxy at the frame centre of known flux beside a
star ten times brighter. Unmasked, the iterated centroid walks onto the star and the
aperture holds its light; masked, the centre and the magnitude are the galaxy's.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from scripts.params import ParamsError, parse_params
from scripts.preprocessing.croppers import PetrosianCropper
from scripts.preprocessing.deblend import fill_masked, neighbour_mask
from tests.conftest import demo_raw_params

N = 96
GALAXY_FLUX = 50.0


def _gaussian(x0, y0, sigma, flux, n=N):
    y, x = np.mgrid[0:n, 0:n]
    return flux * np.exp(-((x - x0) ** 2 + (y - y0) ** 2) / (2 * sigma ** 2)) / (2 * np.pi * sigma ** 2)


def _frame(seed=0, star_flux=10 * GALAXY_FLUX, star_offset=(14.0, 9.0), noise=0.01):
    c = (N - 1) / 2.0
    rng = np.random.default_rng(seed)
    galaxy = _gaussian(c, c, 4.0, GALAXY_FLUX)
    star = _gaussian(c + star_offset[0], c + star_offset[1], 1.5, star_flux)
    return galaxy + star + rng.normal(0.0, noise, (N, N)), c


def _aperture(image, center, radius):
    y, x = np.mgrid[0:N, 0:N]
    return image[(x - center[0]) ** 2 + (y - center[1]) ** 2 <= radius ** 2].sum()


def test_unmasked_fit_is_pulled_onto_the_bright_neighbour():
    frame, c = _frame()
    fit = PetrosianCropper(2.0).fit(frame)
    assert math.hypot(fit.center[0] - c, fit.center[1] - c) > 5.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_masked_fit_recovers_the_central_galaxy(seed):
    frame, c = _frame(seed)
    nm = neighbour_mask(frame)
    assert nm.central_found and nm.n_sources == 2
    assert nm.mask.any() and not nm.mask[int(c), int(c)]
    fit = PetrosianCropper(2.0).fit(frame, mask=nm.mask)
    assert not fit.failed
    assert math.hypot(fit.center[0] - c, fit.center[1] - c) < 0.5
    flux = _aperture(fill_masked(frame, nm.mask, fit.center), fit.center, 2 * fit.r_petrosian)
    # a Gaussian's Petrosian aperture (2 r_P) holds ~all of its light
    assert flux == pytest.approx(GALAXY_FLUX, rel=0.03)
    unmasked = _aperture(frame, fit.center, 2 * fit.r_petrosian)
    assert unmasked > 1.5 * GALAXY_FLUX        # the star's light that the mask removes


def test_overlapping_neighbour_is_deblended():
    """A fainter galaxy whose isophotes touch the target's: one segment above the threshold,
    split by the multi-threshold deblend."""
    frame, c = _frame(star_flux=2 * GALAXY_FLUX, star_offset=(11.0, 0.0))
    assert neighbour_mask(frame, deblend_cont=1.0).n_sources == 1     # one segment undeblended
    nm = neighbour_mask(frame)
    assert nm.n_sources == 2 and nm.central_found
    fit = PetrosianCropper(2.0).fit(frame, mask=nm.mask)
    flux = _aperture(fill_masked(frame, nm.mask, fit.center), fit.center, 2 * fit.r_petrosian)
    assert flux == pytest.approx(GALAXY_FLUX, rel=0.10)


def test_isolated_galaxy_and_noiseless_frame_mask_nothing():
    frame, _ = _frame(star_flux=0.0)
    assert not neighbour_mask(frame).mask.any()
    clean = _gaussian((N - 1) / 2, (N - 1) / 2, 4.0, GALAXY_FLUX)
    assert not neighbour_mask(clean).mask.any()                   # a model image without noise
    assert neighbour_mask(np.zeros((N, N))).n_sources == 0        # σ = 0: nothing to detect


def test_fill_masked_uses_the_annulus_mean_per_band():
    c = (N - 1) / 2.0
    radial = np.stack([_gaussian(c, c, 5.0, 100.0), 2 * _gaussian(c, c, 5.0, 100.0)], axis=-1)
    mask = np.zeros((N, N), bool)
    mask[40:50, 52:60] = True
    damaged = radial.copy()
    damaged[mask] = 1e3
    filled = fill_masked(damaged, mask, (c, c))
    y, x = np.mgrid[0:N, 0:N]
    ring = np.hypot(x - c, y - c).astype(int)
    for row, col in zip(*np.nonzero(mask)):         # the definition, pixel by pixel
        same = (ring == ring[row, col]) & ~mask
        np.testing.assert_allclose(filled[row, col], radial[same].mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(filled[~mask], radial[~mask])
    assert filled.sum(axis=(0, 1)) == pytest.approx(radial.sum(axis=(0, 1)), rel=0.01)


def test_neighbours_key_is_validated():
    raw = demo_raw_params()
    raw["extract"]["NEIGHBOURS"] = "deblend"
    with pytest.raises(ParamsError, match="NEIGHBOURS"):
        parse_params(raw)
    raw["extract"]["NEIGHBOURS"] = "mask"
    assert parse_params(raw).extract.neighbours == "mask"


def test_real_tng_hsc_frame_keeps_its_galaxy_and_masks_the_others():
    """The shipped real TNG–HSC mock (data/real_hsc_mock): its isolated central galaxy is
    the central source, nothing within 1.5 r_P of it is masked (the nearest neighbour's
    mask begins at 1.9 r_P), the Petrosian radius is the unmasked one, and the other
    sources of the frame (the brightest pixel outside 2 r_P: the star near the lower edge)
    are masked."""
    from astropy.io import fits

    import config

    path = config.data_path / "real_hsc_mock" / "shalo_084-97_v3_HSC_GRIZY.fits"
    with fits.open(path) as hdus:
        ref = hdus["SUBARU_HSC.R"].data.astype(np.float64)
    nm = neighbour_mask(ref)
    assert nm.central_found and nm.n_sources >= 5
    plain = PetrosianCropper(2.0).fit(ref)
    masked = PetrosianCropper(2.0).fit(ref, mask=nm.mask)
    assert masked.r_petrosian == pytest.approx(plain.r_petrosian, rel=1e-6)
    y, x = np.mgrid[0:ref.shape[0], 0:ref.shape[1]]
    distance = np.hypot(x - masked.center[0], y - masked.center[1])
    assert not nm.mask[distance <= 1.5 * masked.r_petrosian].any()
    outside = distance > 2 * masked.r_petrosian
    brightest = np.unravel_index(np.argmax(np.where(outside, ref, -np.inf)), ref.shape)
    assert nm.mask[brightest]
