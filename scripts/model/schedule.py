"""Learning-rate schedule of SimCLR: linear warm-up, then cosine decay to zero.

Also the batch-size scaling of the base learning rate used by SimCLR
(``learning_rate_scaling`` = linear: lr·B/256, sqrt: lr·√B).
"""

from __future__ import annotations

import logging
import math

import keras
import tensorflow as tf

logger = logging.getLogger(__name__)

SCALINGS = ("linear", "sqrt")


def scaled_learning_rate(base_lr: float, batch_size: int, scaling: str = "linear") -> float:
    """Base learning rate scaled to the global batch size, as in SimCLR.

    ``linear``: ``base_lr * batch_size / 256`` (the paper's LARS recipe, lr 0.3 at 256);
    ``sqrt``: ``base_lr * sqrt(batch_size)`` (recommended for small batches / long runs,
    e.g. 0.075·√B).
    """
    if batch_size <= 0:
        raise ValueError(f"scaled_learning_rate: batch_size must be > 0, got {batch_size}")
    if scaling == "linear":
        return float(base_lr) * batch_size / 256.0
    if scaling == "sqrt":
        return float(base_lr) * math.sqrt(batch_size)
    raise ValueError(f"scaled_learning_rate: scaling must be one of {SCALINGS}, got {scaling!r}")


@keras.saving.register_keras_serializable(package="simclr")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``base_learning_rate`` over ``warmup_steps``, then
    cosine decay to 0 at ``total_steps``; 0 afterwards.

    lr(t) = base · t / warmup                                       for t < warmup
    lr(t) = base · ½ (1 + cos(π · min(t − warmup, D) / D)),  D = total − warmup, otherwise

    ``t`` is the optimizer's iteration count before the update (0 on the first step),
    so the first step has lr 0 when there is a warm-up (as in SimCLR).
    """

    def __init__(self, base_learning_rate: float, total_steps: int, warmup_steps: int = 0,
                 name: str = "WarmupCosine"):
        super().__init__()
        total_steps = int(total_steps)
        warmup_steps = int(warmup_steps)
        if total_steps <= 0:
            raise ValueError(f"WarmupCosine: total_steps must be > 0, got {total_steps}")
        if not 0 <= warmup_steps <= total_steps:
            raise ValueError(
                f"WarmupCosine: warmup_steps must be in [0, total_steps={total_steps}], "
                f"got {warmup_steps}"
            )
        self.base_learning_rate = float(base_learning_rate)
        self.total_steps = total_steps
        self.warmup_steps = warmup_steps
        self.name = name

    def __call__(self, step):
        with tf.name_scope(self.name):
            step = tf.cast(step, tf.float32)
            base = tf.constant(self.base_learning_rate, tf.float32)
            warmup = float(self.warmup_steps)
            decay_steps = float(max(self.total_steps - self.warmup_steps, 1))
            warm = base * step / warmup if self.warmup_steps > 0 else base
            progress = tf.clip_by_value(step - warmup, 0.0, decay_steps) / decay_steps
            cosine = base * 0.5 * (1.0 + tf.cos(math.pi * progress))
            if self.total_steps == self.warmup_steps:  # no decay phase at all
                cosine = tf.zeros_like(cosine)
            return tf.where(step < warmup, warm, cosine)

    def get_config(self):
        return {
            "base_learning_rate": self.base_learning_rate,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "name": self.name,
        }
