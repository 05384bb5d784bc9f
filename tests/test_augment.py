"""Astro augmentations: geometric known answers, flux-conserving blur, noise/flux statistics,
stateless reproducibility and graph-mode use inside tf.data."""

import numpy as np
import pytest
import tensorflow as tf

from scripts.model.augment import (
    AugmentConfig,
    affine_transform,
    augment_batch,
    gaussian_blur,
    rotate,
    two_views,
)

FULL = AugmentConfig(rotation=True, flip=True, zoom=(0.8, 1.25), translate=0.1, blur_sigma=(0.0, 1.5),
                     noise_std=(0.01, 0.05), flux_scale=(0.7, 1.4))


def random_images(n=4, size=(32, 32), bands=5, seed=0):
    return np.random.default_rng(seed).normal(size=(n, *size, bands)).astype(np.float32)


def blob(size=41, centre=(20.0, 20.0), sigma=1.5, bands=1):
    """Gaussian source at (x, y) = centre (column, row), shape (size, size, bands)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float64)
    g = np.exp(-0.5 * ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / sigma**2)
    return np.repeat(g[..., None], bands, axis=-1).astype(np.float32)


def moments(image):
    """Flux, centroid (x, y) and mean second moment per axis of a 2-D image."""
    yy, xx = np.mgrid[: image.shape[0], : image.shape[1]]
    flux = image.sum()
    x0, y0 = (image * xx).sum() / flux, (image * yy).sum() / flux
    var = 0.5 * ((image * (xx - x0) ** 2).sum() + (image * (yy - y0) ** 2).sum()) / flux
    return flux, x0, y0, var


# ------------------------------------------------------------------ geometry
@pytest.mark.parametrize("k", [1, 2, 3, -1])
@pytest.mark.parametrize("fill_mode", ["reflect", "constant"])
def test_quarter_turns_equal_numpy_rot90_exactly(k, fill_mode):
    x = random_images()
    got = rotate(x, k * np.pi / 2, fill_mode=fill_mode).numpy()
    np.testing.assert_array_equal(got, np.rot90(x, k, axes=(1, 2)))
    # float32 angles (as sampled in graphs) too
    got32 = rotate(tf.constant(x), tf.constant(k * np.pi / 2, tf.float32), fill_mode=fill_mode).numpy()
    np.testing.assert_array_equal(got32, np.rot90(x, k, axes=(1, 2)))


def test_half_turn_of_non_square_image_and_per_image_angles():
    x = random_images(n=3, size=(24, 32), bands=3)
    np.testing.assert_array_equal(rotate(x, np.pi).numpy(), x[:, ::-1, ::-1])
    square = random_images(n=3, bands=2)
    got = rotate(square, [0.0, np.pi / 2, 3 * np.pi / 2]).numpy()
    for i, k in enumerate([0, 1, 3]):
        np.testing.assert_array_equal(got[i], np.rot90(square[i], k))


def test_arbitrary_angle_moves_source_counter_clockwise():
    theta = np.deg2rad(30.0)
    image = blob(centre=(20.0 + 10.0, 20.0), sigma=1.5)  # 10 px right of the centre
    out = rotate(image, theta, fill_mode="constant").numpy()[..., 0]
    flux, x0, y0, var = moments(out)
    assert x0 == pytest.approx(20.0 + 10.0 * np.cos(theta), abs=0.02)
    assert y0 == pytest.approx(20.0 - 10.0 * np.sin(theta), abs=0.02)  # up on the display
    assert flux == pytest.approx(moments(image[..., 0])[0], rel=1e-3)


def test_flips_equal_numpy_flips():
    x = random_images(bands=5)
    np.testing.assert_array_equal(affine_transform(x, flip_horizontal=True).numpy(), x[:, :, ::-1])
    np.testing.assert_array_equal(affine_transform(x, flip_vertical=True).numpy(), x[:, ::-1])
    np.testing.assert_array_equal(affine_transform(x, flip_horizontal=[True, False, True, False]).numpy()[1], x[1])


def test_random_flips_are_one_of_the_four_numpy_flips_per_image():
    image = random_images(n=1, bands=5)[0]
    batch = np.repeat(image[None], 32, axis=0)
    out = augment_batch(batch, AugmentConfig(rotation=False, flip=True), seed=11).numpy()
    variants = [image, image[:, ::-1], image[::-1], image[::-1, ::-1]]
    seen = set()
    for view in out:
        matches = [i for i, v in enumerate(variants) if np.array_equal(view, v)]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {0, 1, 2, 3}


def test_zoom_and_shift_known_answers():
    image = blob(centre=(20.0, 20.0), sigma=2.0)
    _, _, _, var0 = moments(image[..., 0])
    zoomed = affine_transform(image, zoom=2.0, fill_mode="constant").numpy()[..., 0]
    _, x0, y0, var = moments(zoomed)
    assert (x0, y0) == pytest.approx((20.0, 20.0), abs=1e-3)
    # magnifying by 2 doubles the size: second moment ×4, plus at most the 1/6 input px² per
    # axis that linear interpolation between samples adds
    assert 4.0 <= var / var0 <= 4.0 * (1.0 + (1.0 / 6.0) / var0)
    shifted = affine_transform(image, shift=[3.0, -2.0], fill_mode="constant").numpy()[..., 0]
    np.testing.assert_array_equal(shifted[5:-5, 5:-5], np.roll(image[..., 0], (-2, 3), axis=(0, 1))[5:-5, 5:-5])


def test_random_geometry_bounds():
    """Translation draws stay within ±translate·size and zoom within its range."""
    image = blob(size=64, centre=(31.5, 31.5), sigma=2.0)
    batch = np.repeat(image[None], 16, axis=0)
    cfg = AugmentConfig(rotation=False, flip=False, zoom=(1.5, 2.0), translate=0.1)
    out = augment_batch(batch, cfg, seed=5).numpy()[..., 0]
    stats = np.array([moments(o) for o in out])
    shifts = stats[:, 1:3] - 31.5
    assert np.all(np.abs(shifts) <= 0.1 * 64 + 0.01) and np.std(shifts) > 1.0
    size_ratio = np.sqrt(stats[:, 3] / moments(image[..., 0])[3])
    assert np.all((size_ratio > 1.5 - 0.05) & (size_ratio < 2.0 + 0.05)) and np.ptp(size_ratio) > 0.05


# ------------------------------------------------------------------ blur
def test_blur_conserves_flux_and_sets_the_psf_width():
    sigmas = np.array([0.5, 1.0, 2.0, 3.0], np.float32)
    point = np.zeros((4, 48, 48, 5), np.float32)
    point[:, 24, 24, :] = np.arange(1, 6)  # different flux per band
    out = gaussian_blur(point, sigmas).numpy()
    for i, sigma in enumerate(sigmas):
        for b in range(5):
            flux, x0, y0, var = moments(out[i, ..., b])
            assert flux == pytest.approx(b + 1.0, rel=1e-2)
            assert (x0, y0) == pytest.approx((24.0, 24.0), abs=1e-4)
            if sigma >= 1.0:  # pixel-integrated Gaussian: variance sigma² + 1/12 (Sheppard)
                assert var == pytest.approx(sigma**2 + 1.0 / 12.0, rel=2e-3)


def test_blur_per_image_sigma_matches_single_image_blur_and_zero_is_identity():
    x = random_images(n=3, bands=5)
    sigmas = [0.0, 0.7, 2.0]
    batch = gaussian_blur(x, sigmas).numpy()
    np.testing.assert_allclose(batch[0], x[0], atol=1e-6)
    for i, s in enumerate(sigmas[1:], start=1):
        alone = gaussian_blur(x[i : i + 1], s, max_sigma=2.0).numpy()[0]
        np.testing.assert_allclose(batch[i], alone, atol=1e-5)


def test_blur_reflect_padding_keeps_a_flat_image_flat():
    flat = np.full((2, 32, 32, 3), 7.0, np.float32)
    np.testing.assert_allclose(gaussian_blur(flat, [1.0, 3.0]).numpy(), 7.0, rtol=1e-5)


# ------------------------------------------------------------------ photometric
def test_noise_has_the_requested_std_per_band():
    zeros = np.zeros((8, 32, 32, 5), np.float32)
    stds = [0.1, 0.2, 0.3, 0.5, 1.0]
    cfg = AugmentConfig(rotation=False, flip=False, noise_std=[[s, s] for s in stds])
    out = augment_batch(zeros, cfg, seed=1).numpy()
    np.testing.assert_allclose(out.std(axis=(0, 1, 2)), stds, rtol=0.02)
    np.testing.assert_allclose(out.mean(axis=(0, 1, 2)), 0.0, atol=0.02)
    single = augment_batch(zeros, AugmentConfig(rotation=False, flip=False, noise_std=(0.25, 0.25)), seed=2)
    assert float(tf.math.reduce_std(single)) == pytest.approx(0.25, rel=0.02)


def test_flux_scale_is_one_log_uniform_factor_per_image_shared_by_all_bands():
    ones = np.ones((256, 8, 8, 5), np.float32)
    out = augment_batch(ones, AugmentConfig(rotation=False, flip=False, flux_scale=(0.1, 10.0)),
                        seed=3).numpy()
    factors = out[:, 0, 0, :]
    np.testing.assert_array_equal(out, np.broadcast_to(factors[:, None, None, :], out.shape))
    np.testing.assert_allclose(factors, factors[:, :1].repeat(5, axis=1), rtol=1e-6)  # shared
    assert factors.min() >= 0.1 * (1 - 1e-6) and factors.max() <= 10.0 * (1 + 1e-6)
    logs = np.log10(factors[:, 0])  # log-uniform in [-1, 1]: mean 0, std 2/sqrt(12)
    assert abs(logs.mean()) < 0.1 and logs.std() == pytest.approx(2 / np.sqrt(12), rel=0.1)
    assert len(np.unique(factors[:, 0])) == 256


def test_colour_kept_to_the_jitter_while_total_flux_follows_the_shared_factor():
    """Band ratios of a galaxy-like source change only by COLOUR_JITTER_MAG (in magnitudes),
    while its total flux varies by the whole FLUX_SCALE range."""
    n, jitter = 512, 0.02
    sed = np.array([1.0, 2.0, 3.5], np.float32)  # g, r, i fluxes of the source
    images = np.repeat(blob(size=21, centre=(10.0, 10.0), sigma=2.0, bands=3)[None] * sed, n, axis=0)
    cfg = AugmentConfig(rotation=False, flip=False, flux_scale=(0.5, 2.0), colour_jitter_mag=jitter)
    out = augment_batch(images, cfg, seed=11).numpy()
    flux = out.sum(axis=(1, 2)) / images.sum(axis=(1, 2))  # factor per image and band
    colours = -2.5 * np.log10(flux[:, :-1] / flux[:, 1:])  # change of g-r and r-i [mag]
    # the difference of two independent N(0, jitter) is N(0, jitter·√2)
    np.testing.assert_allclose(colours.std(axis=0), jitter * np.sqrt(2), rtol=0.1)
    assert np.abs(colours).max() < 5 * jitter * np.sqrt(2)
    total = np.log(flux).mean(axis=1)  # the shared factor (jitter averages out)
    assert total.min() < np.log(0.55) and total.max() > np.log(1.8)
    assert total.std() == pytest.approx(np.log(4.0) / np.sqrt(12), rel=0.1)
    # without jitter the colour is exact
    exact = augment_batch(images, AugmentConfig(rotation=False, flip=False, flux_scale=(0.5, 2.0)),
                          seed=11).numpy().sum(axis=(1, 2))
    np.testing.assert_allclose(exact / exact[:, :1], np.broadcast_to(sed / sed[0], exact.shape), rtol=1e-5)


def test_colour_jitter_alone_and_its_schema_limit():
    ones = np.ones((2000, 4, 4, 2), np.float32)
    out = augment_batch(ones, AugmentConfig(rotation=False, flip=False, colour_jitter_mag=0.05),
                        seed=5).numpy()
    mags = -2.5 * np.log10(out[:, 0, 0, :])
    np.testing.assert_allclose(mags.std(axis=0), 0.05, rtol=0.06)
    np.testing.assert_allclose(mags.mean(axis=0), 0.0, atol=0.005)
    with pytest.raises(ValueError, match="train.AUGMENTATION.COLOUR_JITTER_MAG"):
        AugmentConfig(colour_jitter_mag=0.5)
    with pytest.raises(ValueError, match="per-band ranges are no longer supported"):
        AugmentConfig(flux_scale=((0.9, 1.1), (0.9, 1.1)))


# ------------------------------------------------------------------ randomness and graphs
def test_same_seed_same_views_different_seed_different():
    x = random_images()
    a = augment_batch(x, FULL, seed=7).numpy()
    assert a.shape == x.shape and a.dtype == np.float32
    np.testing.assert_array_equal(a, augment_batch(x, FULL, seed=7).numpy())
    np.testing.assert_array_equal(a, augment_batch(x, FULL, seed=[7, 0]).numpy())
    assert not np.allclose(a, augment_batch(x, FULL, seed=8).numpy())
    # images of one batch get independent parameters: identical inputs give different views
    same = np.repeat(x[:1], 4, axis=0)
    views = augment_batch(same, FULL, seed=1).numpy()
    assert not np.allclose(views[0], views[1])
    va, vb = two_views(x, FULL, seed=7)
    assert not np.allclose(va.numpy(), vb.numpy())
    np.testing.assert_array_equal(two_views(x, FULL, seed=7)[1].numpy(), vb.numpy())
    g1, g2 = tf.random.Generator.from_seed(3), tf.random.Generator.from_seed(3)
    np.testing.assert_array_equal(augment_batch(x, FULL, rng=g1).numpy(), augment_batch(x, FULL, rng=g2).numpy())


@pytest.mark.parametrize("bands", [1, 3, 5])
def test_shapes_and_bands_kept_single_image_too(bands):
    x = random_images(n=2, size=(24, 24), bands=bands)
    assert augment_batch(x, FULL, seed=0).shape == x.shape
    assert augment_batch(x[0], FULL, seed=0).shape == x[0].shape


def test_runs_inside_tf_data_map_and_matches_eager():
    data = random_images(n=10, bands=5, seed=4)
    base = tf.constant(123, tf.int64)
    ds = (tf.data.Dataset.from_tensor_slices(data).batch(4).enumerate()
          .map(lambda i, x: two_views(x, FULL, seed=tf.stack([base, i])), num_parallel_calls=2))
    batches = list(ds)
    assert [b[0].shape for b in batches] == [(4, 32, 32, 5), (4, 32, 32, 5), (2, 32, 32, 5)]
    eager_a, eager_b = two_views(data[8:], FULL, seed=[123, 2])
    np.testing.assert_allclose(batches[2][0].numpy(), eager_a.numpy(), atol=1e-6)
    np.testing.assert_allclose(batches[2][1].numpy(), eager_b.numpy(), atol=1e-6)


def test_config_from_dict_round_trip_and_errors():
    cfg = AugmentConfig.from_dict({"rotation": 45, "zoom": [0.9, 1.1], "noise_std": [[0, 0.1], [0, 0.2]],
                                   "fill_mode": "constant"})
    assert cfg.rotation == 45.0 and cfg.zoom == (0.9, 1.1) and cfg.noise_std == ((0.0, 0.1), (0.0, 0.2))
    assert AugmentConfig.from_dict(cfg.to_dict()) == cfg
    assert AugmentConfig(rotation=False).rotation == 0.0 and AugmentConfig().rotation == 180.0
    with pytest.raises(ValueError, match="unknown key"):
        AugmentConfig.from_dict({"hue": 0.1})
    with pytest.raises(ValueError, match="train.AUGMENTATION.ZOOM"):
        AugmentConfig(zoom=(1.2, 0.8))
    with pytest.raises(ValueError, match="train.AUGMENTATION.FLUX_SCALE"):
        AugmentConfig(flux_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="train.AUGMENTATION.ROTATION.*degrees in \\[0, 180\\]"):
        AugmentConfig(rotation=200)
    with pytest.raises(ValueError, match="2 per-band ranges but the images have 5 bands"):
        augment_batch(random_images(), cfg, seed=0)
    with pytest.raises(ValueError, match="seed"):
        augment_batch(random_images(), cfg)
