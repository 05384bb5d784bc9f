"""The honest baselines: photometry from extract's measurements, a pixel PCA shared by all
compared sets, and the representation side by side with the photometry."""
import numpy as np
import pandas as pd
import pytest

from scripts.analysis.baselines import (combine, photometry_columns, photometry_features,
                                        pooled_pixel_pca, with_redshift)


def test_photometry_features_are_magnitudes_colours_sizes_and_concentration():
    objects = pd.DataFrame({"mag_G": [20.0, 21.0], "mag_R": [19.5, 20.0], "mag_I": [19.0, 19.9],
                            "petro_r50_arcsec": [1.0, 0.5], "petro_r90_arcsec": [2.5, np.nan],
                            "other": [1, 2]})
    assert photometry_columns(objects.columns, ["G", "R", "I"]) == [
        "mag_G", "mag_R", "mag_I", "petro_r50_arcsec", "petro_r90_arcsec"]
    X = photometry_features(objects, ["G", "R", "I"])
    assert X.shape == (2, 3 + 2 + 3)
    np.testing.assert_allclose(X[0], [20.0, 19.5, 19.0, 0.5, 0.5, 1.0, 2.5, 5 * np.log10(2.5)])
    assert np.isnan(X[1, -1]) and np.isnan(X[1, -2])          # a failed R90 stays NaN
    with pytest.raises(ValueError, match="no photometry"):
        photometry_features(objects[["other"]], ["G"])
    # never measured (e.g. X-ray maps cropped at R200c): left out, not a column of NaN
    xray = pd.DataFrame({"mag_X": [1.0, 2.0], "petro_r50_arcsec": np.nan, "petro_r90_arcsec": np.nan})
    assert photometry_features(xray, ["X"]).shape == (2, 1)


def test_pooled_pixel_pca_shares_its_axes_between_sets():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(60, 8, 8, 2)).astype(np.float32)
    b = a[:30] + 5.0                                          # the same images, brighter
    out = pooled_pixel_pca({"A": a, "B": b}, n_components=4, downsample=2, seed=0)
    assert out["A"].shape == (60, 4) and out["B"].shape == (30, 4)
    # one PCA for both: the brightness offset shows as one constant shift in feature space
    shift = out["B"] - out["A"][:30]
    np.testing.assert_allclose(shift, np.broadcast_to(shift[0], shift.shape), atol=1e-3)
    assert np.abs(shift[0]).max() > 1.0


def test_combine_and_redshift_keep_the_measured_values():
    """Side by side as measured: standardising within one dataset would erase the offsets
    between a simulated and an observed set (each measure standardises with shared
    statistics, then weighs the blocks)."""
    rep = np.arange(12, dtype=float).reshape(6, 2) * 1000
    phot = np.random.default_rng(1).normal(size=(6, 3))
    both = combine(rep, phot)
    assert both.shape == (6, 5)
    np.testing.assert_array_equal(both, np.hstack([rep, phot]))
    redshift = np.linspace(0.1, 0.4, 6)
    z = with_redshift(phot, redshift)
    assert z.shape == (6, 4)
    np.testing.assert_array_equal(z[:, -1], redshift)


def test_a_combined_set_keeps_the_offset_between_two_sets():
    """Known answer: an observed set offset by one unit in every column from a simulated one.
    The combined set's realism must see the offset as each part does (AUC near 1), not lose
    it to a per-dataset standardisation (AUC near or below 0.5)."""
    from scripts.analysis.baselines import feature_weights
    from scripts.analysis.realism import compare_sets

    rng = np.random.default_rng(3)
    sim = {"representation": rng.normal(size=(120, 16)), "photometry": rng.normal(size=(120, 4))}
    obs = {"representation": rng.normal(1.0, 1.0, size=(100, 16)),
           "photometry": rng.normal(1.0, 1.0, size=(100, 4))}
    for sets in (sim, obs):
        sets["representation+photometry"] = combine(sets["representation"], sets["photometry"])
    result = compare_sets(sim["representation+photometry"], obs["representation+photometry"],
                          seed=0, k=5, n_permutations=20, c2st_permutations=5, n_splits=3,
                          weights=feature_weights("representation+photometry", obs))
    assert result["c2st"].summary()["auc"] > 0.9
    assert result["ood_sim"].summary()["in_domain_fraction"] < 0.5


def test_blocks_weigh_the_same_whatever_their_width():
    """Each block of a combined set gets the same total variance: a 64-column representation
    beside 8 photometric columns and one redshift column no longer drowns them."""
    from scripts.analysis.baselines import block_weights, feature_weights

    w = block_weights([64, 8, 1])
    assert w.shape == (73,)
    np.testing.assert_allclose([np.sum(w[:64] ** 2), np.sum(w[64:72] ** 2), w[72] ** 2], 1.0)
    sets = {"representation": np.zeros((5, 64)), "photometry": np.zeros((5, 8)),
            "pixels": np.zeros((5, 16)), "representation+photometry": np.zeros((5, 72))}
    assert feature_weights("photometry", sets) is None                  # one block: unchanged
    np.testing.assert_allclose(feature_weights("representation+photometry", sets),
                               block_weights([64, 8]))
    np.testing.assert_allclose(feature_weights("pixels", sets, with_z=True), block_weights([16, 1]))
    with pytest.raises(ValueError, match="≥ 1"):
        block_weights([3, 0])


def test_a_combined_set_is_not_worse_than_its_informative_block():
    """Known answer: a target read from 2 informative columns, beside 62 columns of noise.
    Side by side with equal column weights, kNN's distances are mostly noise; with block
    weights the combination keeps most of what the informative block predicts."""
    from scripts.analysis.baselines import block_weights
    from scripts.analysis.drivers import driver_r2

    rng = np.random.default_rng(1)
    n = 600
    info = rng.normal(size=(n, 2))
    noise = rng.normal(size=(n, 62))
    table = pd.DataFrame({"y": info[:, 0] + 0.5 * info[:, 1] + 0.1 * rng.normal(size=n)})
    X = np.hstack([noise, info])
    alone = driver_r2(info, table, ["y"]).r2.iloc[0]
    equal = driver_r2(X, table, ["y"]).r2.iloc[0]
    blocks = driver_r2(X, table, ["y"], weights=block_weights([62, 2])).r2.iloc[0]
    assert alone > 0.9
    assert equal < 0.5 * alone
    assert blocks > equal + 0.3, (alone, equal, blocks)
    with pytest.raises(ValueError, match="one entry per feature"):
        driver_r2(X, table, ["y"], weights=np.ones(3))


def test_realism_weights_scale_the_standardised_columns():
    """A shift in one column among 40 identical noise columns: the MMD sees it better once
    that column weighs as much as the 40 together."""
    from scripts.analysis.baselines import block_weights
    from scripts.analysis.realism import compare_sets

    rng = np.random.default_rng(2)
    sim = rng.normal(size=(150, 41))
    obs = rng.normal(size=(150, 41))
    obs[:, -1] += 0.8
    kw = dict(seed=0, k=5, n_permutations=20, c2st_permutations=5, n_splits=3)
    equal = compare_sets(sim, obs, **kw)["mmd"].summary()["mmd2"]
    blocks = compare_sets(sim, obs, weights=block_weights([40, 1]), **kw)["mmd"].summary()["mmd2"]
    assert blocks > 3 * equal, (equal, blocks)
