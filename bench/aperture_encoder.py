"""A fixed encoder of aperture statistics, saved as a finished train run would be.

The known-answer tests of analyse and infer, and the benches that rebuild their runs
(:mod:`bench.posterior_universe`), embed mock images with it instead of a trained network:
training even a tiny ResNet long enough to learn anything takes minutes on CI cores, and an
untrained random network has no known answers. :func:`aperture_encoder` is a Keras model of
simple image statistics: the mean arcsinh-stretched surface brightness inside concentric
circular apertures in each band, and the differences between consecutive bands (colours).
It is deterministic, needs no training, and goes through the same ``encoder.keras`` +
``normalisation.json`` loading path as a trained run. It is invariant to rotations about the
image centre, and measures what the mock's physics changes (surface brightness and
concentration with mass and size, colour with star formation).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

#: Aperture radii [px] of :func:`aperture_encoder` on the 32-px crop (R90 ≈ 8 px): fine
#: enough to describe the profile, none so large that it sums the neighbours in the crop.
APERTURE_RADII = (1, 2, 3, 4, 6, 8, 12)


def aperture_encoder(image_size: int, n_bands: int, radii=APERTURE_RADII):
    """Fixed encoder of aperture statistics (see module docstring); built-in layers only.

    Output: ``len(radii) * n_bands`` aperture means (pixels within radius r of the centre,
    r in pixels) followed by ``len(radii) * (n_bands - 1)`` colours (band b minus band b+1
    in each aperture), all of the normalised (stretched) image.
    """
    import keras
    from keras import layers

    h = w = int(image_size)
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot(yy - (h - 1) / 2.0, xx - (w - 1) / 2.0).ravel()
    masks = np.stack([(r < radius).astype(np.float32) for radius in radii], axis=1)
    masks /= masks.sum(axis=0, keepdims=True)                     # (H*W, A): aperture means
    n_ap = len(radii)
    colour = np.zeros((n_ap * n_bands, n_ap * (n_bands - 1)), np.float32)
    for a in range(n_ap):                                          # flattened as (A, C)
        for b in range(n_bands - 1):
            colour[a * n_bands + b, a * (n_bands - 1) + b] = 1.0
            colour[a * n_bands + b + 1, a * (n_bands - 1) + b] = -1.0
    inputs = keras.Input((h, w, n_bands), name="images")
    x = layers.Permute((2, 1))(layers.Reshape((h * w, n_bands))(inputs))   # (C, H*W)
    aperture = layers.Dense(n_ap, use_bias=False, trainable=False, name="apertures")
    x = layers.Flatten()(layers.Permute((2, 1))(aperture(x)))             # (A*C)
    outputs = [x]
    if n_bands > 1:
        colours = layers.Dense(colour.shape[1], use_bias=False, trainable=False, name="colours")
        outputs.append(colours(x))
    model = keras.Model(inputs, layers.Concatenate()(outputs) if n_bands > 1 else x,
                        name="aperture_encoder")
    aperture.set_weights([masks])
    if n_bands > 1:
        colours.set_weights([colour])
    return model


def save_run(run_dir: Path, image_size: int, n_bands: int, scale: float = 0.01) -> Path:
    """Write ``encoder.keras`` + ``normalisation.json`` as a finished train run would."""
    from scripts.model.normalise import Normalisation

    run_dir.mkdir(parents=True, exist_ok=True)
    aperture_encoder(image_size, n_bands).save(run_dir / "encoder.keras")
    Normalisation("arcsinh", scale=scale, name="aperture_test").save(run_dir / "normalisation.json")
    return run_dir
