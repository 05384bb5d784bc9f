"""Sky σ per band for padding: from the variance plane (× VARSC), else the MAD of
neighbour differences on the frame's outer strip, else 0."""
from __future__ import annotations

import math

import numpy as np
import pytest

from scripts.preprocessing.noise import (border_sigma, identity_seed, outer_strip, robust_sigma,
                                         sky_sigma, variance_sigma)


def test_variance_plane_gives_sigma_times_varsc():
    rng = np.random.default_rng(1)
    var = np.full((40, 40), 4.0e-6, np.float32)
    var[15:25, 15:25] = 1e-3           # source Poisson variance on a few pixels
    var[0, :5] = np.nan                # invalid pixels are ignored
    var[1, :5] = 0.0
    assert variance_sigma(var) == pytest.approx(2e-3)
    assert variance_sigma(var, 1.21) == pytest.approx(2.2e-3)
    assert variance_sigma(var, math.nan) == pytest.approx(2e-3)
    assert math.isnan(variance_sigma(np.zeros((4, 4))))
    image = rng.normal(0, 5.0, (40, 40, 2))
    sigma, sources = sky_sigma(image, [var, None], [1.21, math.nan])
    assert sources == ("variance", "mad")
    assert sigma[0] == pytest.approx(2.2e-3)
    assert sigma[1] == pytest.approx(5.0, rel=0.1)


def test_frame_border_sigma_is_not_biased_by_a_frame_filling_galaxy():
    """A galaxy that fills its frame (the ones whose crops get padded) biases the MAD of
    the pixel values, even on the frame's outer strip; neighbouring-pixel differences of
    the strip keep the sky σ."""
    rng = np.random.default_rng(2)
    sky = rng.normal(0, 0.3, (64, 64))
    y, x = np.mgrid[0:64, 0:64]
    for scale in (4.0, 8.0):                  # compact; 5 σ of light at the frame's edge
        image = sky + 50 * np.exp(-np.hypot(x - 32, y - 32) / scale)
        assert robust_sigma(image) > 0.4                        # the whole frame: biased
        assert border_sigma(image) == pytest.approx(0.3, rel=0.05)
    strip_values = image[outer_strip(image.shape)]
    assert robust_sigma(strip_values) > 0.5                     # the strip's values: biased too
    sigma, sources = sky_sigma(np.stack([image, np.zeros_like(image)], axis=-1))
    assert sources == ("mad", "none") and sigma[1] == 0.0
    assert sigma[0] == border_sigma(image)
    assert border_sigma(image[:1, :1]) == 0.0


def test_identity_seed_is_stable_and_distinct():
    assert identity_seed("MOCK_FIDUCIAL", 84, 97, 3) == identity_seed("MOCK_FIDUCIAL", 84, 97, 3)
    seeds = {identity_seed(ds, 84, 97, p) for ds in ("MOCK_FIDUCIAL", "MOCK_COMPACT") for p in range(3)}
    assert len(seeds) == 6
    assert 0 <= identity_seed("x") < 2 ** 63
    # a fixed value: the seed (hence every padded store) must not change between processes
    assert identity_seed("MOCK_FIDUCIAL", 84, 97, 3) == 4552565955755523106
