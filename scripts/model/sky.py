"""Sky units: train's intensity settings as multiples of each band's measured sky noise.

``train.NORMALISATION.SCALE`` (the arcsinh softening) and ``train.AUGMENTATION.NOISE_STD``
are intensities. In image units (``PIXEL_UNIT: image``) they must be retuned for every
survey, zero point and image size: values that suited one mock were ~70× the sky noise of
the calibrated one, and the added noise drowned everything but the galaxies' cores. With
``PIXEL_UNIT: sky`` they are multiples of each band's sky noise σ, measured once at the
start of training on a seeded sample of the training images, so one setting means the
same thing on any data set ("add up to 1.5 σ of noise", "soften the stretch at 3 σ").

σ of a band is ``1.4826 · MAD`` of the pixels in the outer frame (:data:`BORDER_FRACTION`
of the image size on each side), where the sky dominates: the galaxy sits at the centre,
and the median absolute deviation ignores the few neighbours that reach the border.
The measured σ is folded into the stored normalisation (image units), so analyse and the
exported model apply the same transform without knowing about sky units.
"""
from __future__ import annotations

import logging

import numpy as np

from scripts.model.augment import AugmentConfig
from scripts.model.normalise import Normalisation, robust_band_scale

log = logging.getLogger(__name__)

#: Width of the outer frame, per side, as a fraction of the image size.
BORDER_FRACTION = 0.125
#: Training images whose border pixels give each band's σ (seeded sample).
SAMPLE_IMAGES = 512


def border_mask(height: int, width: int, fraction: float = BORDER_FRACTION) -> np.ndarray:
    """``(height, width)`` bool mask of the outer frame, at least one pixel wide."""
    by, bx = max(1, int(round(fraction * height))), max(1, int(round(fraction * width)))
    mask = np.ones((height, width), dtype=bool)
    mask[by:height - by, bx:width - bx] = False
    return mask


def border_sky_sigma(images: np.ndarray, fraction: float = BORDER_FRACTION) -> np.ndarray:
    """Per-band robust noise ``1.4826 · MAD`` of the border pixels of ``images`` (N, H, W, C),
    NaN pixels ignored. Raises ``ValueError`` naming the band when a band has no spread
    (a constant or empty border gives no unit)."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {x.shape}")
    sigma = robust_band_scale(x[:, border_mask(x.shape[1], x.shape[2], fraction)], min_scale=0.0)
    bad = [b for b in range(len(sigma)) if not (np.isfinite(sigma[b]) and sigma[b] > 0)]
    if bad:
        raise ValueError(f"train.PIXEL_UNIT = sky: band(s) {bad} have no sky noise in the border of "
                         f"the {len(x)} sampled training images (σ = {sigma[bad].tolist()}); use "
                         "PIXEL_UNIT: image with SCALE and NOISE_STD in image units")
    return sigma


def sample_sky_sigma(reader, store_index: np.ndarray, rows: np.ndarray, seed: int,
                     n: int = SAMPLE_IMAGES) -> np.ndarray:
    """σ per band (:func:`border_sky_sigma`) of at most ``n`` training images drawn without
    replacement with ``seed`` from the ``(store_index, rows)`` pairs, read with ``reader``."""
    pick = np.random.default_rng([seed, 0x5C]).permutation(len(rows))[:n]
    pick = pick[np.lexsort((rows[pick], store_index[pick]))]  # in store order: sequential reads
    return border_sky_sigma(reader.read(store_index[pick], rows[pick]))


def in_image_units(augment: AugmentConfig, normalisation: Normalisation,
                   sigma: np.ndarray) -> tuple[AugmentConfig, Normalisation]:
    """The augmentation and normalisation with their sky-unit intensities times ``sigma``:
    ``noise_std`` becomes one range per band, ``scale`` one value per band."""
    sigma = np.asarray(sigma, dtype=np.float64)
    n = len(sigma)
    noise = augment.noise_std
    noise = [noise] * n if np.ndim(noise) == 1 else list(noise)
    scale = normalisation.scale
    scale = [scale] * n if np.ndim(scale) == 0 else list(scale)
    if len(noise) != n or len(scale) != n:
        raise ValueError(f"train.PIXEL_UNIT = sky: {n} bands but {len(noise)} NOISE_STD ranges and "
                         f"{len(scale)} NORMALISATION.SCALE values; give one for all bands or one per band")
    noise_image = tuple((float(lo * s), float(hi * s)) for (lo, hi), s in zip(noise, sigma))
    scale_image = tuple(float(v * s) for v, s in zip(scale, sigma))
    offset = normalisation.offset
    offset_image = (tuple(float(v * s) for v, s in zip(offset, sigma)) if np.ndim(offset)
                    else tuple(float(offset * s) for s in sigma))
    fields = augment.to_dict()
    fields["noise_std"] = noise_image
    return (AugmentConfig.from_dict(fields),
            Normalisation(stretch=normalisation.stretch, scale=scale_image, offset=offset_image,
                          clip=normalisation.clip, name=normalisation.name))
