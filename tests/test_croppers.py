"""Croppers and area resize: analytic Sérsic known answers, the real HSC mock against
photutils, crop geometry, fallbacks, and flux conservation of the resize."""
from __future__ import annotations

import math
import time

import galsim
import numpy as np
import pytest
from photutils.aperture import CircularAperture, aperture_photometry
from photutils.centroids import centroid_2dg
from photutils.profiles import CurveOfGrowth, RadialProfile
from scipy import optimize, special

import config
from scripts.preprocessing import croppers
from scripts.preprocessing.fits_bands import read_bands, read_image_meta
from scripts.preprocessing.croppers import FractionCropper, PetrosianCropper, R200cCropper
from scripts.preprocessing.resize import area_weights, resize_area

REAL = config.real_hsc_mock_path
HSC = [f"SUBARU_HSC.{b}" for b in "GRIZY"]
R_E = 12.0   # effective radius of the rendered Sérsic profiles, pixels
ETA = 0.2


@pytest.fixture(scope="module")
def hsc_cube() -> np.ndarray:
    return read_bands(REAL, HSC).astype(np.float64)


@pytest.fixture(scope="module")
def sersic_images() -> dict[int, np.ndarray]:
    """Pixel-integrated (GalSim real-space) Sérsic n=1 and n=4, r_e = 12 px, centred."""
    out = {}
    for n in (1, 4):
        profile = galsim.Sersic(n=n, half_light_radius=R_E, flux=1000.0)
        image = profile.drawImage(nx=121, ny=121, scale=1.0, method="real_space")
        out[n] = image.array.astype(np.float64)
    return out


# --------------------------------------------------------------------------- analytic Sérsic


def _sersic_b(n: float) -> float:
    """b_n such that r_e encloses half the light: P(2n, b_n) = 1/2."""
    return float(special.gammaincinv(2 * n, 0.5))


def _sersic_eta(x: float, n: float) -> float:
    """η(x) = I(x) / <I>(<x) of a Sérsic profile at x = r / r_e.

    L(<x) ∝ γ(2n, b x^{1/n}) and I(x) ∝ exp(-b x^{1/n}) give
    η = x² b^{2n} exp(-b x^{1/n}) / (2n Γ(2n) P(2n, b x^{1/n})).
    """
    b = _sersic_b(n)
    y = b * x ** (1.0 / n)
    return x ** 2 * b ** (2 * n) * math.exp(-y) / (2 * n * special.gamma(2 * n)
                                                    * special.gammainc(2 * n, y))


def _sersic_petrosian(n: float) -> tuple[float, float, float]:
    """Analytic (r_P, R50, R90) / r_e for η = 0.2 and the flux within 2 r_P."""
    x_p = optimize.brentq(lambda x: _sersic_eta(x, n) - ETA, 0.3, 20.0, xtol=1e-12)
    b = _sersic_b(n)
    f_p = special.gammainc(2 * n, b * (2 * x_p) ** (1.0 / n))  # fraction of total in 2 r_P
    radius = lambda f: (special.gammaincinv(2 * n, f * f_p) / b) ** n  # noqa: E731
    return x_p, radius(0.5), radius(0.9)


def test_analytic_solver_matches_the_literature_ratio():
    # Sanity of the test's own maths: η=0.2 gives r_P ≈ 2.16 r_e (n=1) and ≈ 1.80 r_e (n=4),
    # the values quoted for Sérsic profiles (e.g. Graham & Driver 2005, PASA 22, 118).
    assert _sersic_petrosian(1)[0] == pytest.approx(2.16, abs=0.01)
    assert _sersic_petrosian(4)[0] == pytest.approx(1.80, abs=0.03)


@pytest.mark.parametrize("n", [1, 4])
def test_petrosian_radii_of_sersic_profiles_match_analytic(sersic_images, n):
    x_p, x_50, x_90 = _sersic_petrosian(n)
    cropper = PetrosianCropper(factor=2.0).fit(sersic_images[n])
    assert not cropper.failed, cropper.failure_reason
    assert cropper.center == pytest.approx((60.0, 60.0), abs=1e-6)
    assert cropper.r_petrosian / R_E == pytest.approx(x_p, rel=0.02)
    assert cropper.r50 / R_E == pytest.approx(x_50, rel=0.02)
    assert cropper.r90 / R_E == pytest.approx(x_90, rel=0.02)
    # the Petrosian flux is the analytic fraction of the total flux (1000)
    b = _sersic_b(n)
    f_p = special.gammainc(2 * n, b * (2 * cropper.r_petrosian / R_E) ** (1.0 / n))
    assert cropper.flux_petrosian == pytest.approx(1000.0 * f_p, rel=0.01)


@pytest.mark.parametrize("factor", [1.0, 1.5, 2.0])
def test_crop_size_is_twice_factor_times_r90(sersic_images, factor):
    image = sersic_images[1]
    cropper = PetrosianCropper(factor=factor)
    crop = cropper(image)
    expected = int(np.floor(2 * factor * cropper.r90 + 0.5))
    assert cropper.crop_size == expected
    assert crop.shape == (expected, expected)
    # centred on the galaxy: the central pixel of an odd crop is the peak
    if expected % 2:
        assert crop[expected // 2, expected // 2] == image.max()


# --------------------------------------------------------------------------- real HSC mock


def _photutils_petrosian(data: np.ndarray, xy: tuple[float, float]) -> tuple[float, float, float]:
    """Independent r_P, R50, R90: photutils annulus means and exact apertures, own root."""
    edges = np.arange(0.0, 41.0, 1.0)
    profile = RadialProfile(data, xy, edges)          # mean SB in [r-0.5, r+0.5)
    r, mu = profile.radius, profile.profile
    inside = CurveOfGrowth(data, xy, r).profile       # exact aperture flux within r
    eta = mu / (inside / (np.pi * r ** 2))
    k = int(np.nonzero(eta < ETA)[0][0])
    r_p = optimize.brentq(lambda x: np.interp(x, r, eta) - ETA, r[k - 1], r[k])
    f_p = aperture_photometry(data, CircularAperture(xy, 2 * r_p))["aperture_sum"][0]
    radii = np.arange(0.25, 2 * r_p, 0.25)
    growth = CurveOfGrowth(data, xy, radii).profile

    def radius_at(flux):
        j = int(np.nonzero(growth >= flux)[0][0])
        return float(np.interp(flux, growth[j - 1:j + 1], radii[j - 1:j + 1]))

    return r_p, radius_at(0.5 * f_p), radius_at(0.9 * f_p)


@pytest.mark.parametrize("band", range(5), ids=list("GRIZY"))
def test_real_hsc_petrosian_agrees_with_photutils(hsc_cube, band):
    cropper = PetrosianCropper(reference_band=band).fit(hsc_cube)
    assert not cropper.failed, cropper.failure_reason
    data = hsc_cube[..., band]
    # the centre is the galaxy's: a 2-D Gaussian fit to the central 15×15 agrees
    x0 = y0 = 44 - 7
    gx, gy = centroid_2dg(data[y0:y0 + 15, x0:x0 + 15])
    assert cropper.center == pytest.approx((gx + x0, gy + y0), abs=0.5)
    r_p, r50, r90 = _photutils_petrosian(data, cropper.center)
    assert cropper.r_petrosian == pytest.approx(r_p, rel=0.05)
    assert cropper.r50 == pytest.approx(r50, rel=0.05)
    assert cropper.r90 == pytest.approx(r90, rel=0.05)
    crop = cropper.transform(hsc_cube)
    assert crop.shape == (cropper.crop_size, cropper.crop_size, 5)
    assert cropper.crop_size == int(np.floor(2 * cropper.factor * cropper.r90 + 0.5))


def test_reference_band_selects_the_channel(hsc_cube):
    on_cube = PetrosianCropper(reference_band=3).fit(hsc_cube)
    on_plane = PetrosianCropper().fit(hsc_cube[..., 3])
    assert (on_cube.r_petrosian, on_cube.r90, on_cube.center) == \
        (on_plane.r_petrosian, on_plane.r90, on_plane.center)


@pytest.mark.parametrize("which", ["hsc", "sersic4"])
def test_fast_path_equals_full_frame_profile(hsc_cube, sersic_images, which):
    image = hsc_cube[..., 2] if which == "hsc" else sersic_images[4]
    cropper = PetrosianCropper().fit(image)
    full = croppers.radial_profile(image, cropper.center, dr=1.0, oversample=4)
    r_p, reason = croppers.petrosian_radius(full, ETA)
    assert reason == ""
    assert cropper.r_petrosian == pytest.approx(r_p, rel=1e-9)
    flux = full.flux_within(2 * r_p)
    assert cropper.r90 == pytest.approx(full.radius_enclosing(0.9 * flux), rel=1e-9)


def test_fit_is_fast_on_an_88_pixel_frame(hsc_cube):
    cropper = PetrosianCropper(reference_band=2)
    times = []
    for _ in range(20):
        start = time.perf_counter()
        cropper.fit(hsc_cube)
        times.append(time.perf_counter() - start)
    # ~1-2 ms on an idle core; the bound leaves room for a shared, loaded machine
    assert np.median(times) < 0.025


# --------------------------------------------------------------------------- masks, fallbacks


def test_mask_removes_a_neighbour(sersic_images):
    clean = sersic_images[1]
    neighbour = galsim.Gaussian(sigma=3.0, flux=400.0).drawImage(
        nx=121, ny=121, scale=1.0, offset=(30, 0), method="real_space").array
    blended = clean + neighbour
    reference = PetrosianCropper().fit(clean)
    unmasked = PetrosianCropper().fit(blended)
    mask = neighbour > 1e-3 * neighbour.max()
    masked = PetrosianCropper().fit(blended, mask=mask)
    assert abs(unmasked.r90 / reference.r90 - 1) > 0.05  # the neighbour matters …
    assert masked.r_petrosian == pytest.approx(reference.r_petrosian, rel=0.01)  # … unless masked
    assert masked.r90 == pytest.approx(reference.r90, rel=0.02)
    with pytest.raises(ValueError, match="mask shape"):
        PetrosianCropper().fit(blended, mask=mask[:-1])


def _noise(seed):
    return np.random.default_rng(seed).normal(size=(88, 88))


@pytest.mark.parametrize("name,image,reason", [
    ("blank", np.zeros((88, 88)), "no_flux"),
    ("sky_not_subtracted", np.full((88, 88), 3.0), "no_root"),
    ("negative", -galsim.Gaussian(sigma=4.0, flux=100.0).drawImage(
        nx=88, ny=88, scale=1.0).array.astype(np.float64), "no_flux"),
    ("all_nan", np.full((88, 88), np.nan), "no_valid_pixels"),
])
def test_fallback_keeps_full_frame(name, image, reason):
    cropper = PetrosianCropper()
    out = cropper(image)
    assert cropper.failed and cropper.failure_reason == reason
    np.testing.assert_array_equal(out, image)
    assert math.isnan(cropper.r90)
    record = cropper.record()
    assert record["crop_failed"] is True and record["crop_failure"] == reason


def test_noise_only_frames_are_not_galaxies():
    results = [PetrosianCropper().fit(_noise(seed)) for seed in range(40)]
    assert all(c.failed for c in results), [c.snr for c in results if not c.failed]
    assert all(math.isnan(c.r_petrosian) and math.isnan(c.r90) for c in results)
    # … while the same noise plus a modest galaxy is measured
    galaxy = galsim.Exponential(half_light_radius=4.0, flux=600.0).drawImage(
        nx=88, ny=88, scale=1.0).array
    assert not PetrosianCropper().fit(_noise(0) + galaxy).failed


def test_center_methods_find_an_offset_source():
    image = galsim.Gaussian(sigma=3.0, flux=100.0).drawImage(
        nx=88, ny=88, scale=1.0, offset=(6.5, -3.5), method="real_space").array.astype(float)
    truth = (43.5 + 6.5, 43.5 - 3.5)  # galsim's offset is relative to the true frame centre
    assert croppers.find_center(image, "centroid") == pytest.approx(truth, abs=0.01)
    assert croppers.find_center(image, "peak") == pytest.approx(truth, abs=0.0)
    assert croppers.find_center(image, "frame") == (43.5, 43.5)
    fixed = PetrosianCropper(center=truth).fit(image)
    found = PetrosianCropper().fit(image)
    assert fixed.center == truth and found.r90 == pytest.approx(fixed.r90, rel=1e-3)


def test_usage_errors():
    image = np.ones((8, 8))
    with pytest.raises(RuntimeError, match="not fitted"):
        PetrosianCropper().transform(image)
    cropper = FractionCropper(0.5).fit(image)
    with pytest.raises(ValueError, match="differs from the fitted frame"):
        cropper.transform(np.ones((9, 8)))
    for bad in (dict(factor=0), dict(eta=1.5), dict(center="middle"), dict(dr=0)):
        with pytest.raises(ValueError):
            PetrosianCropper(**bad)
    with pytest.raises(ValueError, match="fraction"):
        FractionCropper(1.5)
    with pytest.raises(ValueError, match="factor"):
        R200cCropper(-1.0)
    with pytest.raises(ValueError, match="image"):
        PetrosianCropper().fit(np.ones((2, 3, 4, 5)))


# --------------------------------------------------------------------------- crop geometry


def test_crop_square_is_centred_and_padded():
    rng = np.random.default_rng(7)
    image = rng.normal(size=(30, 26, 2))
    for _ in range(200):
        size = int(rng.integers(1, 45))
        center = (float(rng.uniform(-5, 31)), float(rng.uniform(-5, 35)))
        crop = croppers.crop_square(image, center, size)
        assert crop.shape == (size, size, 2)
        y0, x0 = croppers.crop_origin(center, size)
        # the crop's central position lies within half a pixel of the requested centre
        assert abs(x0 + (size - 1) / 2 - center[0]) <= 0.5
        assert abs(y0 + (size - 1) / 2 - center[1]) <= 0.5
        for i in (0, size // 2, size - 1):
            for j in (0, size // 2, size - 1):
                y, x = y0 + i, x0 + j
                inside = 0 <= y < 30 and 0 <= x < 26
                np.testing.assert_array_equal(crop[i, j], image[y, x] if inside else 0.0)


def test_petrosian_crop_larger_than_frame_is_zero_padded_on_request(hsc_cube):
    cropper = PetrosianCropper(factor=8.0, reference_band=2, pad_mode="constant")
    crop = cropper(hsc_cube)
    n = cropper.crop_size
    assert n > 88 and crop.shape == (n, n, 5)
    y0, x0 = croppers.crop_origin(cropper.center, n)
    np.testing.assert_array_equal(crop[-y0:-y0 + 88, -x0:-x0 + 88], hsc_cube)
    assert crop.sum() == pytest.approx(hsc_cube.sum(), rel=1e-12)
    assert (crop[: -y0] == 0).all() and (crop[:, : -x0] == 0).all()


def test_petrosian_crop_larger_than_frame_is_noise_padded_by_default(hsc_cube):
    """The default padding is sky noise of the frame's own σ per band, seeded: no border of
    exact zeros, the frame itself untouched, the same noise for the same seed."""
    cropper = PetrosianCropper(factor=8.0, reference_band=2).fit(hsc_cube)
    n = cropper.crop_size
    crop = cropper.transform(hsc_cube, seed=11)
    y0, x0 = croppers.crop_origin(cropper.center, n)
    np.testing.assert_array_equal(crop[-y0:-y0 + 88, -x0:-x0 + 88], hsc_cube)
    outside = np.ones((n, n), bool)
    outside[-y0:-y0 + 88, -x0:-x0 + 88] = False
    assert cropper.record()["crop_outside_fraction"] == pytest.approx(outside.mean())
    frame_sigma = np.array([croppers.border_sigma(hsc_cube[..., c]) for c in range(5)])
    pad_sigma = crop[outside].std(axis=0)
    np.testing.assert_allclose(pad_sigma, frame_sigma, rtol=0.03)
    np.testing.assert_allclose(crop[outside].mean(axis=0), 0.0, atol=0.03 * frame_sigma.max())
    for edge in (crop[0], crop[-1], crop[:, 0], crop[:, -1]):
        assert not (edge == 0).all(axis=0).any()
    np.testing.assert_array_equal(cropper.transform(hsc_cube, seed=11), crop)
    assert not np.array_equal(cropper.transform(hsc_cube, seed=12), crop)
    given = cropper.transform(hsc_cube, noise_sigma=[1.0, 2.0, 3.0, 4.0, 5.0], seed=11)
    np.testing.assert_allclose(given[outside].std(axis=0), [1, 2, 3, 4, 5], rtol=0.03)


def test_noiseless_frames_are_padded_with_zeros():
    """σ = 0 (a model image): padding with zeros is no artefact, and no noise is invented."""
    image = np.zeros((20, 20, 2))
    image[8:12, 8:12] = 1.0
    crop = croppers.crop_square(image, (9.5, 9.5), 30, "noise", seed=3)
    assert crop.sum() == image.sum() and (crop[:5] == 0).all()
    mixed = croppers.crop_square(image, (9.5, 9.5), 30, "noise", noise_sigma=[0.0, 1.0], seed=3)
    assert (mixed[:5, :, 0] == 0).all() and (mixed[:5, :, 1] != 0).all()


@pytest.mark.parametrize("frame, center, size, expected", [
    ((10, 10), (4.5, 4.5), 10, 0.0),            # exactly the frame
    ((10, 10), (4.5, 4.5), 4, 0.0),             # inside
    ((10, 10), (0.0, 0.0), 4, 7 / 16),          # rows and columns -1..2: 3 × 3 of 16 inside
    ((20, 20), (9.5, 9.5), 30, 1 - 400 / 900),  # 5 px beyond every edge
    ((10, 16), (15.0, 4.5), 6, 0.5),            # half beyond the right edge
    ((10, 10), (40.0, 40.0), 4, 1.0),           # entirely outside
])
def test_crop_outside_fraction_on_constructed_cases(frame, center, size, expected):
    assert croppers.outside_fraction(frame, center, size) == pytest.approx(expected)
    ones = np.ones(frame)
    crop = croppers.crop_square(ones, center, size, "constant")
    assert (crop == 0).mean() == pytest.approx(expected)


def test_cropper_records_its_outside_fraction():
    image = np.random.default_rng(0).normal(size=(20, 20))
    cropper = R200cCropper(factor=1.0).fit(image, r200c_kpc=15.0, kpc_per_pixel=1.0)
    assert cropper.crop_size == 30
    assert cropper.record()["crop_outside_fraction"] == pytest.approx(1 - 400 / 900)
    assert FractionCropper(0.5).fit(image).record()["crop_outside_fraction"] == 0.0
    failed = R200cCropper().fit(image, r200c_kpc=-1.0, kpc_per_pixel=1.0)
    assert failed.failed and failed.record()["crop_outside_fraction"] == 0.0


def test_r200c_crop_from_kpc_per_pixel(hsc_cube):
    meta = read_image_meta(REAL)
    r200c_kpc = 12.0
    cropper = R200cCropper(factor=1.0)
    crop = cropper(hsc_cube, r200c_kpc=r200c_kpc, kpc_per_pixel=meta.kpc_per_pixel)
    expected = round(2 * r200c_kpc / meta.kpc_per_pixel)
    assert not cropper.failed
    assert cropper.r200c == pytest.approx(r200c_kpc * 88 / meta.fov_kpc)
    assert cropper.crop_size == expected and crop.shape == (expected, expected, 5)
    start = (88 - expected) // 2  # frame-centred: even sizes sit symmetrically
    np.testing.assert_array_equal(crop, hsc_cube[start:start + expected, start:start + expected])
    assert cropper.record()["r200c_px"] == cropper.r200c
    big = R200cCropper(factor=2.0)(hsc_cube, r200c_kpc=40.0, kpc_per_pixel=meta.kpc_per_pixel)
    assert big.shape[0] == round(4 * 40.0 / meta.kpc_per_pixel) > 88
    for r200c, scale, reason in [(np.nan, 0.5, "invalid_r200c"), (0.0, 0.5, "invalid_r200c"),
                                 (10.0, -1.0, "invalid_pixel_scale")]:
        failed = R200cCropper()
        np.testing.assert_array_equal(failed(hsc_cube, r200c_kpc=r200c, kpc_per_pixel=scale),
                                      hsc_cube)
        assert failed.failed and failed.failure_reason == reason


@pytest.mark.parametrize("shape,fraction,expected", [((88, 88), 0.5, 44), ((88, 88), 1.0, 88),
                                                     ((33, 33), 0.5, 17), ((40, 60), 0.25, 10)])
def test_fraction_cropper_keeps_the_central_part(shape, fraction, expected):
    image = np.arange(np.prod(shape), dtype=np.float64).reshape(shape)
    cropper = FractionCropper(fraction)
    crop = cropper(image)
    assert cropper.crop_size == expected and crop.shape == (expected, expected)
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    row0, col0 = divmod(int(crop[0, 0]), shape[1])
    assert abs(row0 + (expected - 1) / 2 - cy) <= 0.5 and abs(col0 + (expected - 1) / 2 - cx) <= 0.5
    assert not cropper.failed and cropper.record()["crop_size"] == expected


# --------------------------------------------------------------------------- resize


def _resize_reference(image: np.ndarray, h: int, w: int) -> np.ndarray:
    """Exact area average via the common refinement: repeat to the LCM grid, block-mean."""
    H, W = image.shape[:2]
    ly, lx = math.lcm(H, h), math.lcm(W, w)
    fine = np.repeat(np.repeat(image, ly // H, axis=0), lx // W, axis=1)
    return fine.reshape(h, ly // h, w, lx // w, *image.shape[2:]).mean(axis=(1, 3))


@pytest.mark.parametrize("shape,size", [((88, 88), 22), ((88, 88), 32), ((37, 37), 32),
                                        ((20, 20), 32), ((45, 30, 3), (16, 24))])
def test_resize_area_is_the_exact_area_average(shape, size):
    image = np.random.default_rng(5).lognormal(size=shape)
    h, w = (size, size) if np.isscalar(size) else size
    out = resize_area(image, size)
    assert out.shape == (h, w) + shape[2:]
    np.testing.assert_allclose(out, _resize_reference(image, h, w), rtol=1e-12)
    # surface brightness (mean) is conserved by default, total flux with preserve='sum'
    np.testing.assert_allclose(out.mean(axis=(0, 1)), image.mean(axis=(0, 1)), rtol=1e-12)
    summed = resize_area(image, size, preserve="sum")
    np.testing.assert_allclose(summed.sum(axis=(0, 1)), image.sum(axis=(0, 1)), rtol=1e-12)


def test_resize_area_integer_ratio_is_block_mean_and_keeps_float32():
    image = np.random.default_rng(2).normal(size=(88, 88, 2)).astype(np.float32)
    out = resize_area(image, 22)
    assert out.dtype == np.float32
    block_mean = image.astype(np.float64).reshape(22, 4, 22, 4, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(out, block_mean, rtol=0, atol=1e-6)  # float32 rounding only
    assert resize_area(np.full((37, 41), 2.5), (32, 32)) == pytest.approx(2.5)
    weights = area_weights(88, 32)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-12)
    assert not weights.flags.writeable
    with pytest.raises(ValueError, match="preserve"):
        resize_area(image, 22, preserve="peak")
    with pytest.raises(ValueError, match="image"):
        resize_area(np.ones(5), 2)
