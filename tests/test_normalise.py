"""Per-band normalisation: formulas, numpy vs TensorFlow agreement, JSON round trip."""

import json

import numpy as np
import pytest
import tensorflow as tf

from scripts.model.normalise import Normalisation, robust_band_scale


def images(seed=0, bands=5):
    rng = np.random.default_rng(seed)
    # sky noise plus bright sources spanning four decades, per-band levels
    x = rng.normal(0.0, 0.05, size=(3, 16, 16, bands))
    x[:, 8, 8, :] += 10.0 ** rng.uniform(-1, 3, size=(3, bands))
    return x.astype(np.float32)


CHOICES = [
    Normalisation("arcsinh", scale=[0.05, 0.1, 0.2, 0.3, 0.5], clip=(-3.0, 10.0), name="asinh5"),
    Normalisation("log", scale=0.1, offset=[0.0, 0.01, 0.0, -0.01, 0.02], name="log"),
    Normalisation("linear", scale=2.0, offset=0.5, clip=(-1.0, 1.0), name="lin"),
    Normalisation("arcsinh", scale=1.0),
]


@pytest.mark.parametrize("norm", CHOICES, ids=lambda n: f"{n.stretch}-{n.name}")
def test_numpy_and_tensorflow_agree(norm):
    x = images()
    expected = norm.apply_np(x)
    got_eager = norm.apply_tf(tf.constant(x)).numpy()
    got_graph = tf.function(norm.apply_tf)(tf.constant(x)).numpy()
    assert expected.dtype == np.float32 and expected.shape == x.shape
    np.testing.assert_allclose(got_eager, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(got_graph, expected, rtol=1e-6, atol=1e-6)


def test_formulas_known_values():
    x = np.array([[[[-1.0, 0.0, 9.8, 99.8]]]], np.float32)  # one pixel, four bands
    log = Normalisation("log", scale=0.1, offset=-0.1).apply_np(x)
    # log10(1 + max(x + 0.1, 0) / 0.1): -0.9 → 0; 0.1 → log10 2; 10 → 2; 100 → 3
    np.testing.assert_allclose(log.ravel(), [0.0, np.log10(2.0), 2.0, 3.0], rtol=1e-6, atol=1e-7)
    asinh = Normalisation("arcsinh", scale=[1.0, 1.0, 0.1, 0.1]).apply_np(x)
    np.testing.assert_allclose(asinh.ravel(), np.arcsinh([-1.0, 0.0, 98.0, 998.0]), rtol=1e-6)
    # odd in x, ~linear below the softening scale, ~ln(2x) far above it
    assert asinh.ravel()[0] < 0
    small = Normalisation("arcsinh", scale=1.0).apply_np(np.full((1, 1, 1, 1), 1e-3, np.float32))
    assert small.item() == pytest.approx(1e-3, rel=1e-6)
    np.testing.assert_allclose(asinh.ravel()[3], np.log(2 * 998.0), rtol=1e-6)
    clipped = Normalisation("linear", scale=10.0, clip=(-0.05, 1.0)).apply_np(x)
    np.testing.assert_allclose(clipped.ravel(), [-0.05, 0.0, 0.98, 1.0], rtol=1e-6)


@pytest.mark.parametrize("norm", CHOICES, ids=lambda n: f"{n.stretch}-{n.name}")
def test_json_round_trip(norm, tmp_path):
    again = Normalisation.from_dict(json.loads(json.dumps(norm.to_dict())))
    assert again == norm
    path = tmp_path / "normalisation.json"
    norm.save(path)
    loaded = Normalisation.load(path)
    assert loaded == norm
    x = images(1)
    np.testing.assert_array_equal(loaded.apply_np(x), norm.apply_np(x))


@pytest.mark.parametrize("stretch", ["linear", "arcsinh", "log"])
def test_inverse_recovers_unclipped_values(stretch):
    norm = Normalisation(stretch, scale=[0.1, 0.3, 1.0], offset=[0.0, -0.05, 0.02])
    x = np.abs(images(2, bands=3)) + 0.1  # above every offset, so log does not zero anything
    np.testing.assert_allclose(norm.inverse_np(norm.apply_np(x)), x, rtol=1e-5, atol=1e-6)


def test_robust_scale_recovers_noise_level():
    rng = np.random.default_rng(3)
    sigma = np.array([0.02, 0.5, 3.0])
    x = rng.normal(0.0, sigma, size=(20, 32, 32, 3))
    x[:, 16, 16, :] += 1e4  # a few bright sources do not move a MAD estimate
    np.testing.assert_allclose(robust_band_scale(x), sigma, rtol=0.03)


def test_invalid_choices_name_the_key():
    with pytest.raises(ValueError, match="stretch"):
        Normalisation("sqrt")
    with pytest.raises(ValueError, match="scale"):
        Normalisation("arcsinh", scale=[1.0, 0.0])
    with pytest.raises(ValueError, match="clip"):
        Normalisation("linear", clip=(1.0, -1.0))
    with pytest.raises(ValueError, match="unknown key"):
        Normalisation.from_dict({"stretch": "log", "sacle": 1.0})
    with pytest.raises(ValueError, match="3 entries but the images have 5 bands"):
        Normalisation("log", scale=[1.0, 2.0, 3.0]).apply_np(images())
