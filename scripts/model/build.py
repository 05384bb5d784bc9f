"""The pieces of a run built from ``train`` params: the SimCLR network, its optimizer and
learning-rate schedule, the normalisation, the augmentation settings and whether the step
is XLA-compiled.

Weight decay never touches batch-norm parameters or biases (:data:`NO_DECAY_PATTERNS`,
DESIGN §5). Mixed precision (``MIXED_PRECISION``): layers compute in bfloat16/float16;
variables, gradients and the optimizer stay float32, and ``mixed_float16`` scales the loss
dynamically (``keras.optimizers.LossScaleOptimizer``).
"""
from __future__ import annotations

import functools
import re

import keras
import tensorflow as tf

from scripts.model import distribute
from scripts.model.augment import AugmentConfig
from scripts.model.lars import LARS
from scripts.model.normalise import Normalisation
from scripts.model.schedule import WarmupCosine, scaled_learning_rate
from scripts.model.simclr import SimCLRModel, build_simclr_model
from scripts.model.train_errors import TrainInputError

#: Variables (by ``variable.path``) that get no weight decay (and, for LARS, no trust
#: ratio): batch-norm parameters and biases (DESIGN §5).
NO_DECAY_PATTERNS = ("batch_normalization", "bias")


def augment_config(params) -> AugmentConfig:
    """:class:`AugmentConfig` of ``train.AUGMENTATION`` as the params schema parsed and
    validated it: every schema key is carried over, none is listed or checked again here."""
    return AugmentConfig.from_params(params.augmentation)


def normalisation_from_params(params) -> Normalisation:
    """:class:`Normalisation` from ``train.NORMALISATION`` (stored with the model)."""
    n = params.normalisation
    return Normalisation(stretch=n.stretch, scale=n.scale, clip=n.clip,
                         name=f"{params.run_name}_{n.stretch}")


def resolve_jit_compile(setting: str, replicas: int, gpus: int | None = None) -> tuple[bool, str]:
    """Whether the step is XLA-compiled for ``train.JIT_COMPILE`` = ``setting``, and why.

    ``auto``: on when a GPU is visible and the strategy has one replica (XLA was ~12× slower
    for this step on the 2-core CPU box); ``on``: always (one replica; raises
    :class:`TrainInputError` otherwise); ``off``: never. ``gpus`` defaults to the visible
    GPUs. ``setting`` is one of the schema's choices (it validated the key).
    """
    if setting == "off":
        return False, "train.JIT_COMPILE is off"
    if replicas > 1:
        if setting == "on":
            raise TrainInputError(
                f"train.JIT_COMPILE = on with {replicas} replicas: XLA cannot compile a step whose "
                "variables live on several devices (MirroredStrategy) or that synchronises replicas "
                "inside the compiled part; use JIT_COMPILE: auto or off, or one device per process")
        return False, f"{replicas} replicas (XLA compiles one-replica steps only)"
    if setting == "on":
        return True, "train.JIT_COMPILE is on"
    gpus = len(tf.config.list_logical_devices("GPU")) if gpus is None else gpus
    return (True, "a GPU is visible") if gpus else (False, "no GPU (XLA is slower on the CPU)")


def depth_of(architecture: str) -> int:
    """ResNet depth of ``train.ARCHITECTURE`` (``resnet18`` → 18; the schema validated the
    name against the depths :data:`scripts.model.resnet.RESNET_SPECS` builds)."""
    return int(architecture.replace("resnet", ""))


def build_model(params, input_shape, sync_batch_norm: bool = False) -> SimCLRModel:
    """The SimCLR model of ``train`` params, built under the current strategy scope and the
    params' mixed-precision policy (the global policy is restored afterwards)."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32" if params.mixed_precision == "off" else params.mixed_precision)
    try:
        keras.utils.set_random_seed(params.seed)
        return build_simclr_model(
            depth_of(params.architecture), input_shape, width_multiplier=params.width_multiplier,
            stem=params.stem, head_layers=params.head_layers, head_hidden_dim=params.head_hidden_dim,
            head_output_dim=params.output_dim,
            batch_norm_factory=functools.partial(distribute.batch_norm, sync_batch_norm),
        )
    finally:
        keras.config.set_dtype_policy(previous)


def no_decay_variables(variables) -> list:
    """Variables matching :data:`NO_DECAY_PATTERNS` in their path (batch norm, biases)."""
    return [v for v in variables if any(re.search(p, v.path) for p in NO_DECAY_PATTERNS)]


def learning_rate_schedule(params, steps_per_epoch: int, total_steps: int) -> WarmupCosine:
    """Linear warm-up over ``WARMUP_EPOCHS`` then cosine decay, peak at the batch-scaled
    learning rate (``LR_SCALING``: linear lr·B/256, sqrt lr·√B, none lr)."""
    if params.lr_scaling == "none":
        peak = params.learning_rate
    else:
        peak = scaled_learning_rate(params.learning_rate, params.batch_size, params.lr_scaling)
    warmup = min(int(round(params.warmup_epochs * steps_per_epoch)), total_steps)
    return WarmupCosine(peak, total_steps=total_steps, warmup_steps=warmup)


def build_optimizer(params, schedule, variables) -> keras.optimizers.Optimizer:
    """Optimizer of ``train.OPTIMIZER``, built on ``variables`` (so a checkpoint restores its
    slots immediately).

    Weight decay (``WEIGHT_DECAY``) never touches batch-norm parameters or biases:
    - ``lars``: SimCLR's L2 term folded into the gradient before the trust ratio
      (:class:`scripts.model.lars.LARS`, momentum ``MOMENTUM``, trust coefficient 1e-3);
    - ``adam``: decoupled decay (AdamW, Loshchilov & Hutter 2019), ``w ← w − lr·wd·w``;
    - ``sgd``: momentum SGD with Keras's decoupled decay ``w ← w − lr·wd·w``.
    ``mixed_float16`` wraps it in a dynamic ``LossScaleOptimizer``.
    """
    wd = params.weight_decay
    if params.optimizer == "lars":
        opt = LARS(schedule, momentum=params.momentum, weight_decay=wd,
                   exclude_from_weight_decay=NO_DECAY_PATTERNS)
    elif params.optimizer == "adam":
        opt = keras.optimizers.AdamW(schedule, weight_decay=wd) if wd > 0 else keras.optimizers.Adam(schedule)
    elif params.optimizer == "sgd":
        opt = keras.optimizers.SGD(schedule, momentum=params.momentum, weight_decay=wd or None)
    else:
        raise ValueError(f"train.OPTIMIZER = {params.optimizer!r}: expected lars, adam or sgd")
    if params.optimizer != "lars" and wd > 0:
        opt.exclude_from_weight_decay(var_list=no_decay_variables(variables))
    if params.mixed_precision == "mixed_float16":
        opt = keras.optimizers.LossScaleOptimizer(opt)
    opt.build(variables)
    return opt
