"""kNN-regression driver R^2 and the pixel baseline, on synthetic data with known answers."""
import numpy as np
import pandas as pd
import pytest

from scripts.analysis.drivers import (asinh_magnitude, driver_r2, image_statistics,
                                      pixel_baseline_features)


@pytest.fixture(scope="module")
def table():
    rng = np.random.default_rng(0)
    n = 1500
    X = rng.uniform(-2, 2, size=(n, 3))
    df = pd.DataFrame({
        "smooth": np.sin(X[:, 0]) + 0.5 * X[:, 1] ** 2 + 0.3 * X[:, 2],   # smooth in X
        "noise": rng.normal(size=n),                              # unrelated to X
        "with_nan": X[:, 2].copy(),
        "constant": np.ones(n),
        "label": ["a"] * n,                                       # not numeric
    })
    df.loc[:99, "with_nan"] = np.nan
    return X, df


def test_smooth_field_predicted_noise_not(table):
    X, df = table
    res = driver_r2(X, df, ["smooth", "noise", "with_nan"], k=10, folds=5, seed=0)
    assert list(res.columns) == ["field", "r2", "r2_std", "n"]
    r = res.set_index("field")
    assert r.loc["smooth", "r2"] > 0.95
    assert r.loc["noise", "r2"] < 0.05
    assert r.loc["with_nan", "r2"] > 0.95 and r.loc["with_nan", "n"] == 1400
    assert r.loc["smooth", "n"] == 1500 and r.loc["smooth", "r2_std"] >= 0


def test_scaling_and_seed(table):
    """Inputs are standardised: rescaling one feature does not change the neighbours."""
    X, df = table
    X2 = X * [1.0, 1000.0, 1.0]
    a = driver_r2(X, df, ["smooth"], seed=3)
    b = driver_r2(X2, df, ["smooth"], seed=3)
    assert a["r2"].iloc[0] == pytest.approx(b["r2"].iloc[0])
    assert driver_r2(X, df, ["smooth"], seed=4)["r2"].iloc[0] != a["r2"].iloc[0]


def test_degenerate_fields_and_errors(table):
    X, df = table
    res = driver_r2(X, df, ["constant", "label"]).set_index("field")
    assert np.isnan(res.loc["constant", "r2"]) and np.isnan(res.loc["label", "r2"])
    with pytest.raises(KeyError, match="missing_field"):
        driver_r2(X, df, ["missing_field"])
    with pytest.raises(ValueError, match="len\\(fields_df\\)"):
        driver_r2(X[:10], df, ["smooth"])


def test_groups_keep_projections_together():
    """Copies of one object (projections) inflate R^2 unless grouped into one fold."""
    rng = np.random.default_rng(1)
    n_obj, n_proj = 300, 3
    base = rng.normal(size=(n_obj, 8))
    target = rng.normal(size=n_obj)                 # unrelated to the features
    X = np.repeat(base, n_proj, axis=0) + 0.01 * rng.normal(size=(n_obj * n_proj, 8))
    df = pd.DataFrame({"y": np.repeat(target, n_proj)})
    ids = np.repeat(np.arange(n_obj), n_proj)
    leaky = driver_r2(X, df, ["y"], k=3)["r2"].iloc[0]
    grouped = driver_r2(X, df, ["y"], k=3, groups=ids)["r2"].iloc[0]
    assert leaky > 0.3 and grouped < 0.1


def _galaxies(n, seed, size=24):
    """Exponential discs with random flux, scale length and colour, on 3 bands."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] - (size - 1) / 2
    r = np.hypot(yy, xx)
    scale = rng.uniform(1.0, 5.0, n)
    flux = 10 ** rng.uniform(1, 3, n)
    colour = rng.uniform(0.2, 1.5, n)                       # flux ratio band1/band0
    profile = np.exp(-r[None] / scale[:, None, None])
    profile /= profile.sum(axis=(1, 2), keepdims=True)
    bands = np.stack([flux[:, None, None] * profile * f for f in
                      (np.ones(n)[:, None, None], colour[:, None, None],
                       (colour ** 2)[:, None, None])], axis=-1)
    bands += 0.01 * rng.normal(size=bands.shape)
    return bands.astype(np.float32), pd.DataFrame({"log_flux": np.log10(flux), "scale": scale,
                                                   "colour": colour})


def test_image_statistics_known_values():
    size = 31
    img = np.zeros((2, size, size, 2))
    img[0, 15, 15] = [4.0, 1.0]                              # a point source
    yy, xx = np.mgrid[0:size, 0:size] - 15
    img[1, ..., 0] = img[1, ..., 1] = np.exp(-np.hypot(yy, xx) / 3.0)
    stats = image_statistics(img, softening=1e-6)
    assert stats.shape == (2, 5)
    np.testing.assert_allclose(stats[0, :2], -2.5 * np.log10([4.0, 1.0]), atol=1e-6)
    assert stats[0, 4] == pytest.approx(-2.5 * np.log10(4.0), abs=1e-6)    # colour
    assert stats[0, 2] == 0.0                    # point source: r50 = 0 pixels
    # exponential disc of scale h: r50 = 1.678 h; C = 5 log10(r80/r20) = 2.7 (Bershady+2000)
    assert stats[1, 2] == pytest.approx(1.678 * 3.0, rel=0.1)
    assert stats[1, 3] == pytest.approx(2.7, abs=0.25)
    assert stats[0, 3] < stats[1, 3]
    assert asinh_magnitude(np.array([-1.0]), 1.0)[0] > asinh_magnitude(np.array([1.0]), 1.0)[0]


def test_pixel_baseline_features_predict_image_properties():
    images, truth = _galaxies(900, seed=2)
    feats = pixel_baseline_features(images, n_components=8, downsample=2, softening=0.01,
                                    fit_subsample=500, batch_size=256, seed=0)
    assert feats.shape == (900, 8 + 7) and feats.dtype == np.float32
    # the batched transform equals a one-batch transform (same PCA on the same subsample)
    again = pixel_baseline_features(images, n_components=8, downsample=2, softening=0.01,
                                    fit_subsample=500, batch_size=10_000, seed=0)
    np.testing.assert_allclose(feats, again, rtol=1e-4, atol=1e-4)
    res = driver_r2(feats, truth, ["log_flux", "scale", "colour"], k=10).set_index("field")
    assert (res["r2"] > 0.9).all()
    # the PCA-only baseline without the statistics columns
    pca_only = pixel_baseline_features(images, n_components=8, statistics=False)
    assert pca_only.shape == (900, 8)
    with pytest.raises(ValueError, match="\\(N, H, W, C\\)"):
        pixel_baseline_features(images[..., 0])
