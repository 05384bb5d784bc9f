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


def test_combine_and_redshift_standardise_each_part():
    rep = np.arange(12, dtype=float).reshape(6, 2) * 1000
    phot = np.random.default_rng(1).normal(size=(6, 3))
    both = combine(rep, phot)
    assert both.shape == (6, 5)
    np.testing.assert_allclose(both.std(axis=0), 1.0)
    z = with_redshift(phot, np.linspace(0.1, 0.4, 6))
    assert z.shape == (6, 4) and z[:, -1].std() == pytest.approx(1.0)
