"""ResNet-18/34/50 encoders (ResNet v1, as in SimCLR) for images with any number of bands.

The encoder maps an image batch ``(N, H, W, C)`` to the global-average-pooled
representation ``(N, D)``, with ``D = 512·m`` for ResNet-18/34 (basic blocks) and
``D = 2048·m`` for ResNet-50 (bottlenecks, expansion 4), ``m`` being the width multiplier.

Two stems:

- ``"standard"``: 7×7 stride-2 convolution + 3×3 stride-2 max-pool (ImageNet-sized inputs;
  the map entering stage 1 is H/4 × W/4).
- ``"small"``: 3×3 stride-1 convolution and no max-pool, for inputs of ≤ 64 px, where
  the standard stem would throw away most of the resolution (SimCLR's CIFAR variant).

Naming, relied on by LARS (which skips weight decay and trust-ratio adaptation for
batch-norm and bias variables by matching ``variable.path``): every batch-norm layer's
name contains ``batch_normalization`` (paths like ``stage1_block1_batch_normalization1/gamma``,
matching LARS's default exclusion patterns and Keras's default BN names), convolutions carry no bias
(the following batch norm has its own shift), and the only bias-like variables are the
batch-norm betas. All convolutions use He-normal initialisation.

Synchronised batch norm (several replicas) is injected through ``batch_norm_factory``, any
callable accepting the keyword arguments of ``keras.layers.BatchNormalization`` (e.g.
``functools.partial(scripts.model.distribute.batch_norm, True)``).
"""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import keras
from keras import layers

logger = logging.getLogger(__name__)

#: Blocks per stage and block kind for each supported depth.
RESNET_SPECS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}
STEMS = ("standard", "small")
BASE_WIDTHS = (64, 128, 256, 512)
BOTTLENECK_EXPANSION = 4
BN_MOMENTUM = 0.9  # SimCLR's batch_norm_decay
BN_EPSILON = 1e-5

BatchNormFactory = Callable[..., keras.layers.Layer]


def scaled_width(base: int, width_multiplier: float) -> int:
    """Channel count ``base·m`` rounded, never below 8 (tiny test models stay usable)."""
    return max(8, int(round(base * width_multiplier)))


def _conv(filters: int, kernel_size: int, strides: int, name: str) -> layers.Conv2D:
    """Bias-free He-normal convolution (a batch norm always follows)."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        name=name,
    )


def _bn(factory: BatchNormFactory, name: str, zero_init: bool = False) -> keras.layers.Layer:
    """Batch norm named ``<name>`` (contains ``batch_normalization``); gamma = 0 when ``zero_init``."""
    kwargs = dict(name=name, momentum=BN_MOMENTUM, epsilon=BN_EPSILON)
    if zero_init:
        kwargs["gamma_initializer"] = "zeros"
    return factory(**kwargs)


def _basic_block(x, filters: int, strides: int, prefix: str, factory: BatchNormFactory,
                 zero_init_residual: bool):
    """Two 3×3 convolutions with an identity (or 1×1 projection) shortcut; ``filters`` out."""
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, strides, f"{prefix}_proj_conv")(x)
        shortcut = _bn(factory, f"{prefix}_proj_batch_normalization")(shortcut)
    y = _conv(filters, 3, strides, f"{prefix}_conv1")(x)
    y = _bn(factory, f"{prefix}_batch_normalization1")(y)
    y = layers.ReLU(name=f"{prefix}_relu1")(y)
    y = _conv(filters, 3, 1, f"{prefix}_conv2")(y)
    y = _bn(factory, f"{prefix}_batch_normalization2", zero_init=zero_init_residual)(y)
    y = layers.Add(name=f"{prefix}_add")([y, shortcut])
    return layers.ReLU(name=f"{prefix}_out")(y)


def _bottleneck_block(x, filters: int, strides: int, prefix: str, factory: BatchNormFactory,
                      zero_init_residual: bool):
    """1×1 reduce, 3×3 (carrying the stride), 1×1 expand to ``4·filters``; shortcut as above."""
    out_filters = BOTTLENECK_EXPANSION * filters
    shortcut = x
    if strides != 1 or x.shape[-1] != out_filters:
        shortcut = _conv(out_filters, 1, strides, f"{prefix}_proj_conv")(x)
        shortcut = _bn(factory, f"{prefix}_proj_batch_normalization")(shortcut)
    y = _conv(filters, 1, 1, f"{prefix}_conv1")(x)
    y = _bn(factory, f"{prefix}_batch_normalization1")(y)
    y = layers.ReLU(name=f"{prefix}_relu1")(y)
    y = _conv(filters, 3, strides, f"{prefix}_conv2")(y)
    y = _bn(factory, f"{prefix}_batch_normalization2")(y)
    y = layers.ReLU(name=f"{prefix}_relu2")(y)
    y = _conv(out_filters, 1, 1, f"{prefix}_conv3")(y)
    y = _bn(factory, f"{prefix}_batch_normalization3", zero_init=zero_init_residual)(y)
    y = layers.Add(name=f"{prefix}_add")([y, shortcut])
    return layers.ReLU(name=f"{prefix}_out")(y)


def representation_dim(depth: int, width_multiplier: float = 1.0) -> int:
    """Length of the pooled representation of ``build_resnet(depth, …, width_multiplier)``."""
    kind, _ = _spec(depth)
    last = scaled_width(BASE_WIDTHS[-1], width_multiplier)
    return last * (BOTTLENECK_EXPANSION if kind == "bottleneck" else 1)


def _spec(depth: int) -> tuple[str, tuple[int, int, int, int]]:
    if depth not in RESNET_SPECS:
        raise ValueError(
            f"ResNet depth must be one of {sorted(RESNET_SPECS)} (train.model.depth), got {depth!r}"
        )
    return RESNET_SPECS[depth]


def build_resnet(
    depth: int,
    input_shape: Sequence[int],
    width_multiplier: float = 1.0,
    stem: str = "standard",
    batch_norm_factory: BatchNormFactory = layers.BatchNormalization,
    zero_init_residual: bool = True,
    name: str = "encoder",
) -> keras.Model:
    """Build a ResNet encoder returning the global-average-pooled representation.

    Args:
        depth: 18, 34 (basic blocks) or 50 (bottleneck blocks).
        input_shape: ``(H, W, C)`` of one image, channels last; any number of bands ``C``.
        width_multiplier: scales every channel count (64·m, 128·m, 256·m, 512·m; never < 8).
        stem: ``"standard"`` (7×7/2 conv + 3×3/2 max-pool) or ``"small"`` (3×3/1 conv, no
            pool; for ≤ 64 px images).
        batch_norm_factory: callable building a batch-norm layer from the keyword arguments of
            ``keras.layers.BatchNormalization`` (inject synchronised BN here).
        zero_init_residual: start the last batch norm of every residual branch at gamma = 0,
            so each block begins as the identity (SimCLR / Goyal et al. 2017).
        name: model name; it prefixes nothing (variable paths are ``<layer>/<variable>``).

    Returns:
        ``keras.Model`` mapping ``(N, H, W, C)`` float images to ``(N, D)`` representations,
        ``D = representation_dim(depth, width_multiplier)``. The output of stage ``i``
        (1..4) is the layer ``stage{i}_out``.
    """
    kind, blocks = _spec(depth)
    if stem not in STEMS:
        raise ValueError(f"stem must be one of {STEMS} (train.model.stem), got {stem!r}")
    if width_multiplier <= 0:
        raise ValueError(f"width_multiplier must be > 0 (train.model.width_multiplier), got {width_multiplier}")
    input_shape = tuple(int(s) for s in input_shape)
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"input_shape must be (H, W, C) with positive sizes, got {input_shape}")

    block_fn = _basic_block if kind == "basic" else _bottleneck_block
    inputs = keras.Input(shape=input_shape, name="images")
    stem_width = scaled_width(BASE_WIDTHS[0], width_multiplier)
    if stem == "standard":
        x = _conv(stem_width, 7, 2, "stem_conv")(inputs)
        x = _bn(batch_norm_factory, "stem_batch_normalization")(x)
        x = layers.ReLU(name="stem_relu")(x)
        x = layers.MaxPooling2D(pool_size=3, strides=2, padding="same", name="stem_pool")(x)
    else:
        x = _conv(stem_width, 3, 1, "stem_conv")(inputs)
        x = _bn(batch_norm_factory, "stem_batch_normalization")(x)
        x = layers.ReLU(name="stem_relu")(x)

    for stage, (base, n_blocks) in enumerate(zip(BASE_WIDTHS, blocks), start=1):
        filters = scaled_width(base, width_multiplier)
        for block in range(1, n_blocks + 1):
            strides = 2 if (stage > 1 and block == 1) else 1
            prefix = f"stage{stage}_block{block}"
            x = block_fn(x, filters, strides, prefix, batch_norm_factory, zero_init_residual)
        x = layers.Identity(name=f"stage{stage}_out")(x)

    outputs = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    model = keras.Model(inputs, outputs, name=name)
    logger.debug("built ResNet-%d (%s stem, width ×%g) on %s: %d parameters, representation %d",
                 depth, stem, width_multiplier, input_shape, model.count_params(), outputs.shape[-1])
    return model
