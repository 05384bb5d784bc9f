"""train.PIXEL_UNIT sky: NORMALISATION.SCALE and NOISE_STD as multiples of the measured sky σ."""
from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest

from scripts.model.augment import AugmentConfig
from scripts.model.normalise import Normalisation
from scripts.model.sky import border_mask, border_sky_sigma, in_image_units
from scripts.params import ParamsError
from tests.test_train import SKY_NOISE, _trainer, make_params, write_synthetic


def test_border_mask_is_the_outer_frame():
    mask = border_mask(32, 32)
    assert mask[:4].all() and mask[-4:].all() and mask[:, :4].all() and mask[:, -4:].all()
    assert not mask[4:28, 4:28].any()
    assert border_mask(4, 4, 0.01)[1:3, 1:3].sum() == 0 and border_mask(4, 4, 0.01).sum() == 12


def test_border_sky_sigma_recovers_the_noise_of_each_band_beside_a_bright_galaxy():
    rng = np.random.default_rng(0)
    sigma = np.array([5e-4, 7e-4, 9e-4])
    n, size = 200, 32
    images = rng.normal(0.0, 1.0, (n, size, size, 3)) * sigma
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    images += 0.05 * np.exp(-np.hypot(x, y) / 1.5)[None, :, :, None]       # a galaxy at the centre
    images[:, 1, 1, :] += 10.0                                                # a star in a corner
    images += 2e-3                                                            # a sky offset
    measured = border_sky_sigma(images.astype(np.float32))
    np.testing.assert_allclose(measured, sigma, rtol=0.03)


def test_a_band_without_noise_is_named():
    images = np.random.default_rng(1).normal(0, 1, (4, 16, 16, 2))
    images[..., 1] = 3.0
    with pytest.raises(ValueError, match=r"band\(s\) \[1\].*PIXEL_UNIT: image"):
        border_sky_sigma(images)


def test_in_image_units_multiplies_scale_noise_and_offset_per_band():
    sigma = np.array([2.0, 3.0, 5.0])
    augment = AugmentConfig(noise_std=(0.0, 1.5), flux_scale=(0.9, 1.1))
    norm = Normalisation(stretch="arcsinh", scale=3.0, offset=0.5, clip=(-1.0, 20.0), name="n")
    a, n = in_image_units(augment, norm, sigma)
    assert a.noise_std == ((0.0, 3.0), (0.0, 4.5), (0.0, 7.5))
    assert n.scale == (6.0, 9.0, 15.0) and n.offset == (1.0, 1.5, 2.5)
    assert (n.stretch, n.clip, n.name) == ("arcsinh", (-1.0, 20.0), "n")
    assert a.flux_scale == augment.flux_scale and a.rotation == augment.rotation
    per_band = AugmentConfig(noise_std=((0.0, 1.0), (0.0, 2.0), (0.0, 3.0)))
    assert in_image_units(per_band, Normalisation(scale=(1.0, 1.0, 2.0)), sigma)[0].noise_std == \
        ((0.0, 2.0), (0.0, 6.0), (0.0, 15.0))
    with pytest.raises(ValueError, match="3 bands but 2 NOISE_STD ranges"):
        in_image_units(AugmentConfig(noise_std=((0.0, 1.0), (0.0, 2.0))), norm, sigma)


def test_pixel_unit_is_validated():
    assert make_params(pixel_unit="sky").train.pixel_unit == "sky"
    assert make_params().train.pixel_unit == "image"
    with pytest.raises(ParamsError, match="PIXEL_UNIT"):
        make_params(pixel_unit="nanomaggies")


@pytest.fixture(scope="module")
def two_unit_stores(tmp_path_factory):
    """The synthetic universe twice: as written, and with every pixel ×1000 (another zero
    point or unit), in two folders."""
    root = tmp_path_factory.mktemp("sky")
    write_synthetic(root / "one", colour_concentration=20.0)
    shutil.copytree(root / "one", root / "thousand")
    with h5py.File(root / "thousand" / "SYNTH" / "images.h5", "r+") as f:
        name = next(k for k in f if f[k].ndim == 4)
        f[name][...] = f[name][...] * 1000.0
    return root


def test_sky_units_make_training_views_independent_of_the_pixel_unit(two_unit_stores, tmp_path):
    """With PIXEL_UNIT sky the trainer measures σ per band (1000× larger in the ×1000
    store), keeps SCALE × σ in image units, and draws the same normalised views from both
    stores: what the network sees does not depend on the survey's units. (The synthetic
    galaxies fill their frames, so σ here is not SKY_NOISE; the unit test above checks the
    measurement on a frame whose border is sky.)"""
    params = make_params(pixel_unit="sky", normalisation={"STRETCH": "arcsinh", "SCALE": 3.0,
                                                          "CLIP": [-1.0, 20.0]},
                         augmentation={"NOISE_STD": [0.0, 1.0], "FLUX_SCALE": [0.9, 1.1]})
    views, sigma = {}, {}
    for name in ("one", "thousand"):
        trainer = _trainer(params, two_unit_stores / name, tmp_path / name)
        sigma[name] = trainer.sky_sigma
        np.testing.assert_allclose(trainer.normalisation.scale, 3.0 * trainer.sky_sigma, rtol=1e-6)
        assert [hi for _, hi in trainer.augment.noise_std] == pytest.approx(list(trainer.sky_sigma))
        a, b = next(iter(trainer._dataset(trainer.sampler, 3, 1, 0)))
        views[name] = (a.numpy(), b.numpy())
    np.testing.assert_allclose(sigma["thousand"], 1000.0 * sigma["one"], rtol=1e-5)
    assert (sigma["one"] >= SKY_NOISE).all()
    for one, thousand in zip(views["one"], views["thousand"]):
        np.testing.assert_allclose(thousand, one, atol=2e-4)
    assert np.abs(views["one"][0]).max() > 1.0  # the galaxies are well above the softening


def test_sky_sigma_is_stored_with_the_model(two_unit_stores, tmp_path):
    params = make_params(pixel_unit="sky", epochs=1, steps_per_epoch=2,
                         normalisation={"STRETCH": "arcsinh", "SCALE": 2.0})
    trainer = _trainer(params, two_unit_stores / "one", tmp_path / "run")
    summary = trainer.fit()
    trainer.export(summary)
    assert summary["sky_sigma"] == pytest.approx(list(trainer.sky_sigma))
    stored = json.loads((tmp_path / "run" / "normalisation.json").read_text())
    assert stored["scale"] == pytest.approx([2.0 * s for s in trainer.sky_sigma])
