"""Work around a TensorFlow 2.21 oneDNN crash on CPU: decide before TensorFlow is imported.

Measured on the 2-core CPU box (TF 2.21.0, oneDNN on by default): the training gradient of
a ResNet whose stem has 8 channels (``WIDTH_MULTIPLIER`` 0.125, the demo's) crashes the
process (segmentation fault, "double free or corruption", "unaligned tcache chunk") at
48×48 and 64×64 px, in the first train step; 32 px, and 16 or more stem channels at 64 px,
run fine, as does the forward pass at any size. With ``TF_ENABLE_ONEDNN_OPTS=0`` the same
steps run. The train stage therefore switches oneDNN off for exactly the affected
configurations, unless the user set ``TF_ENABLE_ONEDNN_OPTS`` themselves, and says so.
"""
from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

ENV = "TF_ENABLE_ONEDNN_OPTS"
#: Stem channel counts below this, at images of at least :data:`MIN_CRASH_SIZE` px, crash.
MIN_SAFE_STEM_CHANNELS = 16
MIN_CRASH_SIZE = 48
#: The stem's base width (``scripts.model.resnet``: 64 × WIDTH_MULTIPLIER, never below 8).
STEM_BASE = 64


def crashes_with_onednn(width_multiplier: float, image_size: int) -> bool:
    """Whether the measured oneDNN crash applies to this model and image size."""
    stem_channels = max(8, int(round(STEM_BASE * width_multiplier)))
    return stem_channels < MIN_SAFE_STEM_CHANNELS and image_size >= MIN_CRASH_SIZE


def configure(width_multiplier: float, image_size: int) -> bool:
    """Switch oneDNN off (``TF_ENABLE_ONEDNN_OPTS=0``) for an affected configuration; must run
    before TensorFlow is imported. Returns whether it did. A value the user set is kept."""
    if not crashes_with_onednn(width_multiplier, image_size):
        return False
    if os.environ.get(ENV) == "0":           # already off (the user, or scripts.demo)
        return False
    if ENV in os.environ:
        log.warning("%s=%s kept as set; with WIDTH_MULTIPLIER %g at %d px, TensorFlow 2.21's "
                    "oneDNN kernels crash in training on CPU unless it is 0", ENV,
                    os.environ[ENV], width_multiplier, image_size)
        return False
    if "tensorflow" in sys.modules:
        log.warning("TensorFlow is already imported: cannot switch oneDNN off for WIDTH_MULTIPLIER "
                    "%g at %d px (it crashes in training on CPU)", width_multiplier, image_size)
        return False
    os.environ[ENV] = "0"
    log.warning("oneDNN switched off (%s=0): TensorFlow 2.21 crashes in training on CPU with "
                "an 8-channel stem (WIDTH_MULTIPLIER %g) at %d px", ENV, width_multiplier, image_size)
    return True
