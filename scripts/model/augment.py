"""Astronomical image augmentations for contrastive learning (tf.data- and GPU-friendly).

Every function works on a whole batch ``(N, H, W, C)`` (or one image ``(H, W, C)``) with
any number of bands ``C``, draws independent random parameters per image from *stateless*
random ops (same seed → same output, on any device), and uses only TensorFlow built-ins, so
it runs inside ``tf.data.Dataset.map`` (graph mode) and inside a compiled train step.

What an augmented view is (:func:`augment_batch`), in this order:

1. **Geometry**, one bilinear resampling per image (``tf.raw_ops.ImageProjectiveTransformV3``)
   combining a rotation by any angle in ``[-rotation, +rotation]`` degrees, horizontal and
   vertical flips (each with probability 1/2), an isotropic zoom drawn log-uniformly in
   ``zoom = (min, max)`` (> 1 magnifies, i.e. a centred crop resized back to ``H × W``;
   < 1 shrinks) and a translation of up to ``translate`` × the image size along each axis
   (with zoom > 1 this makes the crop position random). Pixels that come from outside the
   input are filled by ``fill_mode``: ``"reflect"`` (default; mirrors the neighbouring sky
   so the corners keep the background's noise texture and do not reveal the rotation
   angle) or ``"constant"`` (``fill_value``, default 0 = background-subtracted sky, but
   noise-free corners); ``"nearest"`` and ``"wrap"`` are also accepted.
2. **PSF-like blur**: separable Gaussian with per-image ``sigma`` (pixels) drawn uniformly
   in ``blur_sigma``; the kernel is the Gaussian integrated over each pixel and normalised
   to unit sum, so the total flux of a source away from the edges is conserved; the image
   is reflect-padded so the edges are not darkened.
3. **Flux scaling**: each image multiplied by one factor drawn log-uniformly in
   ``flux_scale``, shared by all bands (calibration and surface-brightness uncertainty),
   times a per-band factor ``10^(-0.4·N(0, colour_jitter_mag))`` — a calibration error of
   a few hundredths of a magnitude. Colours (band ratios) change only by that jitter: an
   independent factor per band would wash out the colour information the network should
   learn.
4. **Gaussian noise**: per image and band, ``std`` drawn uniformly in ``noise_std`` (one pair
   or one per band) — sky / read noise.

Ranges are in the units of the images passed in. Steps 2–4 are linear-flux operations, so
apply :func:`augment_batch` before a non-linear stretch (:mod:`scripts.model.normalise`).
Geometric conventions: pixel centres sit at integer coordinates, rotation is about the image
centre ``((W-1)/2, (H-1)/2)``, and a positive angle turns the image counter-clockwise as
displayed with row 0 at the top — ``rotate(x, π/2)`` equals ``np.rot90(x, 1, axes=(1, 2))``
exactly for square images. No hue/saturation jitter: those assume RGB.

XLA: ``ImageProjectiveTransformV3`` has no XLA kernel, so run these ops in tf.data or in a
``tf.function`` without ``jit_compile=True`` (the compiled train step can follow it).

Seeds for tf.data: give each batch its own seed, e.g.::

    ds = ds.batch(B).enumerate().map(
        lambda i, x: two_views(x, config, seed=tf.stack([tf.constant(base_seed, tf.int64), i])))
"""

from __future__ import annotations

import logging
import math
from dataclasses import InitVar, dataclass, fields
from typing import Any

import numpy as np
import tensorflow as tf

from scripts.params import AugmentationParams, parse_section

logger = logging.getLogger(__name__)

FILL_MODES = ("reflect", "constant", "nearest", "wrap")
INTERPOLATIONS = ("bilinear", "nearest")
#: Rotation-matrix entries smaller than this are set to 0, so quarter turns map pixel
#: centres exactly onto pixel centres (float32 cos(π/2) is -4.4e-8, not 0). The angle
#: error this implies is < 1e-6 rad.
_SNAP = 1e-6

Range = tuple[float, float]
#: Where the params schema keeps the settings it shares with :class:`AugmentConfig`; their
#: rules live there only, and error messages name that key.
PARAMS_PATH = "train.AUGMENTATION"
_SCHEMA_KEYS = tuple(f.name for f in fields(AugmentationParams))


@dataclass(frozen=True)
class AugmentConfig:
    """What :func:`augment_batch` does; defaults are rotation + flips only.

    The settings params also has (``train.AUGMENTATION``) are checked by the params
    schema's own rules (:class:`scripts.params.AugmentationParams`), so a bad value fails
    with the same message naming the key, whether it came from params.yaml or from code.

    Attributes:
        rotation: ``True`` (any angle, ±180°), ``False`` (none) or the maximum angle in
            degrees; angles are drawn uniformly in ``[-max, max]``.
        flip: random horizontal and vertical flips (each with probability 1/2).
        zoom: ``(min, max)`` magnification, drawn log-uniformly; ``(1, 1)`` is none.
        translate: maximum shift as a fraction of the image size along each axis (0–0.5).
        blur_sigma: ``(lo, hi)`` Gaussian PSF sigma in pixels, uniform; ``(0, 0)`` is none.
        blur_truncate: kernel half-width in units of the largest sigma.
        noise_std: ``(lo, hi)`` Gaussian noise std (image units), uniform, per image and
            band; or one pair per band. ``(0, 0)`` is none.
        flux_scale: ``(lo, hi)`` multiplicative factor, log-uniform, one per image shared
            by all bands. ``(1, 1)`` is none.
        colour_jitter_mag: std in magnitudes of the per-band factor
            ``10^(-0.4·N(0, σ))``; 0 is none.
        fill_mode: ``"reflect"``, ``"constant"``, ``"nearest"`` or ``"wrap"`` (see module doc).
        fill_value: value outside the image for ``fill_mode="constant"``.
        interpolation: ``"bilinear"`` or ``"nearest"``.
    """

    rotation: bool | float = True
    flip: bool = True
    zoom: Range = (1.0, 1.0)
    translate: float = 0.0
    blur_sigma: Range = (0.0, 0.0)
    blur_truncate: float = 4.0
    noise_std: Range | tuple[Range, ...] = (0.0, 0.0)
    flux_scale: Range = (1.0, 1.0)
    colour_jitter_mag: float = 0.0
    fill_mode: str = "reflect"
    fill_value: float = 0.0
    interpolation: str = "bilinear"
    #: True when the schema keys come from an already parsed ``train.AUGMENTATION``
    #: (:meth:`from_params`): the schema checked them once and they are not checked again.
    schema_checked: InitVar[bool] = False

    def __post_init__(self, schema_checked: bool):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 (frozen dataclass)
        if not schema_checked:  # built from code: the schema's rules, run by the schema
            checked = parse_section(AugmentationParams,
                                    {k.upper(): getattr(self, k) for k in _SCHEMA_KEYS}, PARAMS_PATH)
            for k in _SCHEMA_KEYS:
                set_(k, getattr(checked, k))
        rotation = self.rotation
        set_("rotation", (180.0 if rotation else 0.0) if isinstance(rotation, bool) else rotation)
        # settings of the library only (not in params): checked here, their one home
        if float(self.blur_truncate) <= 0:
            raise ValueError(f"augment.blur_truncate must be > 0, got {self.blur_truncate!r}")
        set_("blur_truncate", float(self.blur_truncate))
        if self.fill_mode not in FILL_MODES:
            raise ValueError(f"augment.fill_mode must be one of {FILL_MODES}, got {self.fill_mode!r}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(f"augment.interpolation must be one of {INTERPOLATIONS}, got {self.interpolation!r}")
        set_("fill_value", float(self.fill_value))

    @classmethod
    def from_params(cls, augmentation: AugmentationParams) -> "AugmentConfig":
        """The config of a parsed ``train.AUGMENTATION`` section (every schema key carried)."""
        return cls(**{k: getattr(augmentation, k) for k in _SCHEMA_KEYS}, schema_checked=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> "AugmentConfig":
        """Build from a params mapping (lists accepted for pairs); unknown keys are an error."""
        data = dict(data or {})
        allowed = {f.name for f in fields(cls)}
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"augment: unknown key(s) {sorted(unknown)}; expected some of {sorted(allowed)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (pairs as lists); ``from_dict(to_dict())`` gives an equal config."""
        def plain(v):
            return [plain(x) for x in v] if isinstance(v, tuple) else v
        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    # static switches: an op that cannot change the image is not built into the graph
    @property
    def geometric(self) -> bool:
        return self.rotation > 0 or self.flip or self.zoom != (1.0, 1.0) or self.translate > 0

    @property
    def blurs(self) -> bool:
        return self.blur_sigma[1] > 0

    @property
    def scales_flux(self) -> bool:
        return self.flux_scale != (1.0, 1.0)

    @property
    def jitters_colour(self) -> bool:
        return self.colour_jitter_mag > 0

    @property
    def adds_noise(self) -> bool:
        return bool(np.max(self.noise_std) > 0)


# --------------------------------------------------------------------------- helpers
def _as_batch(images) -> tuple[tf.Tensor, bool]:
    """float32 ``(N, H, W, C)`` and whether the input was a single image."""
    x = tf.convert_to_tensor(images)
    if x.dtype != tf.float32:
        x = tf.cast(x, tf.float32)
    if x.shape.rank == 3:
        return x[tf.newaxis], True
    if x.shape.rank != 4:
        raise ValueError(f"images must be (N, H, W, C) or (H, W, C), got shape {x.shape}")
    return x, False


def _per_image(value, n, dtype=tf.float32) -> tf.Tensor:
    """Broadcast a scalar or length-N value to shape (N,)."""
    v = tf.cast(tf.convert_to_tensor(value), dtype)
    return tf.broadcast_to(tf.reshape(v, [-1]) if v.shape.rank else v, [n])


def _band_bounds(ranges: Range | tuple[Range, ...], n_bands: int, key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` arrays of length ``n_bands`` from one pair or one pair per band."""
    arr = np.asarray(ranges, dtype=np.float32)
    if arr.ndim == 1:
        arr = np.tile(arr[None], (n_bands, 1))
    if arr.shape[0] != n_bands:
        raise ValueError(f"augment.{key} gives {arr.shape[0]} per-band ranges but the images have {n_bands} bands")
    return arr[:, 0], arr[:, 1]


def _as_seed(seed=None, rng: tf.random.Generator | None = None) -> tf.Tensor:
    """A stateless-op seed: shape-(2,) int64 tensor from an int, a pair, a scalar tensor or a Generator."""
    if rng is not None:
        if seed is not None:
            raise ValueError("give either seed or rng, not both")
        return tf.cast(rng.make_seeds(1)[:, 0], tf.int64)
    if seed is None:
        raise ValueError("augmentations need a seed (int or pair) or a tf.random.Generator (rng=) to be reproducible")
    s = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if s.shape.rank == 0:
        return tf.stack([s, tf.constant(0, tf.int64)])
    if s.shape.rank != 1 or (s.shape[0] is not None and s.shape[0] != 2):
        raise ValueError(f"seed must be an int or a pair of ints, got shape {s.shape}")
    return s


# --------------------------------------------------------------------------- deterministic ops
def affine_transform(images, angles=0.0, zoom=1.0, shift=None, flip_horizontal=False, flip_vertical=False,
                     fill_mode: str = "reflect", fill_value: float = 0.0, interpolation: str = "bilinear"):
    """Resample every image once through ``rotation · flip / zoom`` about the centre, then shift.

    Output pixel ``p`` (x = column, y = row, pixel centres at integers, centre ``c``) samples the
    input at ``c + R(θ) F (p - c - t) / s``: the input is zoomed by ``s`` about the centre,
    rotated by ``θ`` (counter-clockwise as displayed, ``np.rot90`` convention), flipped (``F``),
    then translated by ``t = (tx, ty)`` pixels.

    Args:
        images: ``(N, H, W, C)`` or ``(H, W, C)``.
        angles: radians, scalar or ``(N,)``.
        zoom: magnification ``s`` (> 0), scalar or ``(N,)``.
        shift: ``(N, 2)`` or ``(2,)`` ``(tx, ty)`` in pixels, or ``None``.
        flip_horizontal, flip_vertical: bool, scalar or ``(N,)`` (left-right, up-down).
        fill_mode, fill_value, interpolation: see :class:`AugmentConfig`.
    """
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    x, single = _as_batch(images)
    n = tf.shape(x)[0]
    h, w = tf.shape(x)[1], tf.shape(x)[2]
    # matrices in float64 so quarter turns stay exact after snapping
    theta = _per_image(angles, n, tf.float64)
    s = _per_image(zoom, n, tf.float64)
    fx = tf.where(_per_image(flip_horizontal, n, tf.bool), -1.0, 1.0)
    fy = tf.where(_per_image(flip_vertical, n, tf.bool), -1.0, 1.0)
    fx, fy = tf.cast(fx, tf.float64), tf.cast(fy, tf.float64)
    if shift is None:
        tx = ty = tf.zeros([n], tf.float64)
    else:
        t = tf.broadcast_to(tf.reshape(tf.cast(shift, tf.float64), [-1, 2]), [n, 2])
        tx, ty = t[:, 0], t[:, 1]

    def snap(v):
        return tf.where(tf.abs(v) < _SNAP, tf.zeros_like(v), v)

    cos, sin = snap(tf.cos(theta)), snap(tf.sin(theta))
    # M = R(θ) · diag(fx, fy) / s
    m00, m01 = cos * fx / s, -sin * fy / s
    m10, m11 = sin * fx / s, cos * fy / s
    cx = (tf.cast(w, tf.float64) - 1.0) / 2.0
    cy = (tf.cast(h, tf.float64) - 1.0) / 2.0
    a2 = cx - m00 * (cx + tx) - m01 * (cy + ty)
    b2 = cy - m10 * (cx + tx) - m11 * (cy + ty)
    zeros = tf.zeros([n], tf.float64)
    transforms = tf.cast(tf.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1), tf.float32)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=x,
        transforms=transforms,
        output_shape=tf.shape(x)[1:3],
        fill_value=tf.constant(fill_value, tf.float32),
        interpolation=interpolation.upper(),
        fill_mode=fill_mode.upper(),
    )
    out.set_shape(x.shape)  # the op loses static H, W, C in graph mode
    return out[0] if single else out


def rotate(images, angles_rad, fill_mode: str = "reflect", fill_value: float = 0.0,
           interpolation: str = "bilinear"):
    """Rotate each image about its centre by ``angles_rad`` (scalar or ``(N,)``), counter-clockwise
    as displayed; ``rotate(x, π/2) == np.rot90(x, 1, axes=(1, 2))`` exactly for square images."""
    return affine_transform(images, angles=angles_rad, fill_mode=fill_mode, fill_value=fill_value,
                            interpolation=interpolation)


def gaussian_kernel_1d(sigma, radius: int) -> tf.Tensor:
    """Pixel-integrated, unit-sum Gaussian kernels ``(N, 2·radius+1)`` for sigmas ``(N,)`` (pixels).

    Each tap is the Gaussian's integral over the pixel ``[i - ½, i + ½]``, so sigma → 0 gives a
    delta and the kernel is accurate for sub-pixel sigmas; normalising to unit sum conserves flux.
    """
    sigma = tf.maximum(tf.reshape(tf.cast(sigma, tf.float32), [-1, 1]), 1e-6)
    offsets = tf.range(-radius, radius + 1, dtype=tf.float32)[tf.newaxis]
    scale = 1.0 / (math.sqrt(2.0) * sigma)
    kernel = 0.5 * (tf.math.erf((offsets + 0.5) * scale) - tf.math.erf((offsets - 0.5) * scale))
    return kernel / tf.reduce_sum(kernel, axis=1, keepdims=True)


def gaussian_blur(images, sigma, max_sigma: float | None = None, truncate: float = 4.0):
    """Blur each image with a circular Gaussian PSF of its own ``sigma`` (pixels; scalar or ``(N,)``).

    Separable depthwise convolution with reflect padding; the batch is folded into the channel
    axis so one ``depthwise_conv2d`` pair blurs all images with their own kernels. The kernel
    half-width is ``ceil(truncate · max_sigma)`` (at most ``min(H, W) - 1``, the reflect-pad
    limit); ``max_sigma`` defaults to the largest ``sigma`` and must be given when ``sigma`` is
    not known at trace time.
    """
    x, single = _as_batch(images)
    height, width, bands = x.shape[1], x.shape[2], x.shape[3]
    if height is None or width is None or bands is None:
        raise ValueError(f"gaussian_blur needs static H, W, C; got shape {x.shape}")
    if max_sigma is None:
        static = tf.get_static_value(tf.convert_to_tensor(sigma))
        if static is None:
            raise ValueError("gaussian_blur: pass max_sigma when sigma is a traced tensor")
        max_sigma = float(np.max(static))
    radius = min(int(math.ceil(truncate * max_sigma)), height - 1, width - 1)
    if radius <= 0:
        return x[0] if single else x
    n = tf.shape(x)[0]
    kernel = gaussian_kernel_1d(_per_image(sigma, n), radius)  # (N, K)
    kernel = tf.repeat(kernel, bands, axis=0)  # (N·C, K), image-major like the folded channels
    k = 2 * radius + 1
    kernel_t = tf.transpose(kernel)  # (K, N·C)
    vertical = tf.reshape(kernel_t, [k, 1, -1, 1])
    horizontal = tf.reshape(kernel_t, [1, k, -1, 1])
    folded = tf.reshape(tf.transpose(x, [1, 2, 0, 3]), [1, height, width, -1])  # (1, H, W, N·C)
    padded = tf.pad(folded, [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    y = tf.nn.depthwise_conv2d(padded, vertical, strides=[1, 1, 1, 1], padding="VALID")
    y = tf.nn.depthwise_conv2d(y, horizontal, strides=[1, 1, 1, 1], padding="VALID")
    y = tf.transpose(tf.reshape(y, [height, width, n, bands]), [2, 0, 1, 3])
    return y[0] if single else y


# --------------------------------------------------------------------------- random views
def augment_batch(images, config: AugmentConfig, seed=None, rng: tf.random.Generator | None = None):
    """One random view of every image (independent parameters per image), see module doc.

    Args:
        images: ``(N, H, W, C)`` or ``(H, W, C)`` float images, any number of bands.
        config: :class:`AugmentConfig`.
        seed: int, pair of ints, or int tensor (scalar or ``(2,)``); the output is a pure
            function of ``(images, config, seed)``.
        rng: alternatively a ``tf.random.Generator`` that supplies the seed (advances its state).

    Returns:
        float32 tensor of the input's shape.
    """
    seed = _as_seed(seed, rng)
    x, single = _as_batch(images)
    bands = x.shape[-1]
    if bands is None:
        raise ValueError(f"augment_batch needs a static band axis; got shape {x.shape}")
    n = tf.shape(x)[0]
    h = tf.cast(tf.shape(x)[1], tf.float32)
    w = tf.cast(tf.shape(x)[2], tf.float32)
    seeds = tf.random.experimental.stateless_split(seed, num=8)

    if config.geometric:
        max_angle = math.radians(config.rotation)
        angles = tf.random.stateless_uniform([n], seeds[0], -max_angle, max_angle)
        flips = tf.random.stateless_uniform([n, 2], seeds[1]) < 0.5
        if not config.flip:
            flips = tf.zeros_like(flips)
        log_lo, log_hi = math.log(config.zoom[0]), math.log(config.zoom[1])
        zoom = tf.exp(tf.random.stateless_uniform([n], seeds[2], log_lo, log_hi))
        shift = (tf.random.stateless_uniform([n, 2], seeds[3], -config.translate, config.translate)
                 * tf.stack([w, h])[tf.newaxis])
        x = affine_transform(x, angles=angles, zoom=zoom, shift=shift, flip_horizontal=flips[:, 0],
                             flip_vertical=flips[:, 1], fill_mode=config.fill_mode,
                             fill_value=config.fill_value, interpolation=config.interpolation)
    if config.blurs:
        lo, hi = config.blur_sigma
        sigma = tf.random.stateless_uniform([n], seeds[4], lo, hi)
        x = gaussian_blur(x, sigma, max_sigma=hi, truncate=config.blur_truncate)
    if config.scales_flux or config.jitters_colour:
        shared_seed, band_seed = tf.unstack(tf.random.experimental.stateless_split(seeds[5], num=2))
        log_lo, log_hi = math.log(config.flux_scale[0]), math.log(config.flux_scale[1])
        log_factor = tf.random.stateless_uniform([n, 1], shared_seed, log_lo, log_hi)
        if config.jitters_colour:
            mag = config.colour_jitter_mag * tf.random.stateless_normal([n, bands], band_seed)
            log_factor = log_factor - 0.4 * math.log(10.0) * mag
        x = x * tf.exp(log_factor)[:, tf.newaxis, tf.newaxis, :]
    if config.adds_noise:
        lo, hi = _band_bounds(config.noise_std, bands, "noise_std")
        u = tf.random.stateless_uniform([n, bands], seeds[6])
        std = lo + u * (hi - lo)
        x = x + std[:, tf.newaxis, tf.newaxis, :] * tf.random.stateless_normal(tf.shape(x), seeds[7])
    return x[0] if single else x


def two_views(images, config: AugmentConfig, seed=None, rng: tf.random.Generator | None = None):
    """Two independent views ``(view_a, view_b)`` of every image — the SimCLR positive pair."""
    seed = _as_seed(seed, rng)
    seeds = tf.random.experimental.stateless_split(seed, num=2)
    return augment_batch(images, config, seed=seeds[0]), augment_batch(images, config, seed=seeds[1])
