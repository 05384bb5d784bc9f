"""The contrastive training loop: a custom ``tf.function`` step under a ``tf.distribute``
strategy, with exact resume, validation, early stopping and export.

Why a custom loop and not ``model.fit``: the NT-Xent negatives are gathered across replicas
inside the step (:func:`scripts.model.losses.nt_xent_loss`), the loss is scaled by
``local / global`` batch (:func:`scripts.model.distribute.replica_loss_scale`) so the
summed replica gradients equal the single-device gradient, and a run resumed from a
checkpoint must reproduce an uninterrupted run bit for bit. The last needs every source of
randomness to be a function of ``(seed, step)``:

- the rows of batch ``k``: :class:`scripts.model.data.PairSampler` (pure in ``(seed, k)``);
- the augmentations of batch ``k``: stateless ops seeded by :func:`view_seeds` ``(seed, k)``;
- everything else (weights, optimizer slots and iterations, batch-norm statistics, the
  step/epoch counters, the best validation loss and the patience counter) is in the
  checkpoint (``tf.train.CheckpointManager``, every ``CHECKPOINT_EVERY`` steps).

Where augmentation runs (``augment_on``): ``"input"`` (default) augments and normalises in
the ``tf.data`` map, on CPU worker threads, overlapping the accelerator's previous step
(``prefetch``); the step graph stays a pure network + loss graph, and the views do not
depend on the number of replicas. ``"device"`` moves augmentation + normalisation into the
step (each replica augments its slice with a seed folded from its replica id): use it when
the host CPUs cannot keep up with the accelerators (``bench/bench_input.py`` measures the
ratio).

XLA (``JIT_COMPILE``, :func:`resolve_jit_compile`): the network, the loss, the gradients
and the optimizer update of a replica are one ``tf.function(jit_compile=True)`` nested in
the step; the views are made before it (``ImageProjectiveTransformV3`` has no XLA kernel),
so ``augment_on="device"`` stays possible. ``auto`` compiles on a GPU only: on the 2-core
CPU box XLA made this step ~12× slower. XLA cannot compile a step whose variables live on
several devices (MirroredStrategy) nor a nested function with cross-replica
synchronisation, so it is used with one replica per process only.

NNCLR (``METHOD: nnclr``, :mod:`scripts.model.nnclr`): the step looks up each view's nearest
neighbour in a support queue, scores it against the other views, and enqueues the gathered
view-1 projections after the update; the queue is in the checkpoint. Validation always
uses NT-Xent (no queue read or written), so validation numbers of SimCLR and NNCLR runs
compare and do not depend on the queue's state.

Mixed precision (``MIXED_PRECISION``): layers compute in bfloat16/float16, variables,
gradients, the optimizer (LARS norms and trust ratios included) and NT-Xent stay float32;
``mixed_float16`` scales the loss dynamically (``keras.optimizers.LossScaleOptimizer``).

Numbers: the loss is the paper's mean over the 2N anchors of the global batch (DESIGN §5);
the contrast accuracy is the fraction of anchors whose most similar other view is their
positive (chance ``1/(2N−1)``); NNCLR's training accuracy is the fraction of neighbour
anchors whose most similar other view is their positive (chance ``1/N``). Steps are counted
from 1: "step k" is the state after k optimizer updates, which is also what checkpoint ``k``
holds.
"""
from __future__ import annotations

import functools
import json
import logging
import math
import re
import time
from pathlib import Path
from typing import Any, Callable

import keras
import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from scripts.model import distribute
from scripts.model.augment import AugmentConfig, augment_batch
from scripts.model.data import HDF5Images, PairSampler, pair_dataset
from scripts.model.inference import ENCODER_FILE, NORMALISATION_FILE
from scripts.model.lars import LARS
from scripts.model.losses import nt_xent_loss
from scripts.model.nnclr import SupportQueue, nnclr_loss
from scripts.model.normalise import Normalisation
from scripts.model.resnet import RESNET_SPECS
from scripts.model.schedule import WarmupCosine, scaled_learning_rate
from scripts.model.simclr import SimCLRModel, build_simclr_model
from scripts.params import default_nnclr_queue_size

log = logging.getLogger(__name__)

#: Variables (by ``variable.path``) that get no weight decay (and, for LARS, no trust
#: ratio): batch-norm parameters and biases (DESIGN §5).
NO_DECAY_PATTERNS = ("batch_normalization", "bias")
#: Salt of the validation augmentation seeds: a stream disjoint from the training steps.
VALIDATION_SALT = 0x5A17_DA7E
CHECKPOINTS_KEPT = 3
SAVED_MODEL_DIR = "saved_model"
SUMMARY_FILE = "train_summary.json"
CHECKPOINT_DIR = "checkpoints"
AUGMENT_ON = ("input", "device")
JIT_COMPILE = ("auto", "on", "off")


class TrainInputError(ValueError):
    """Inputs or parameters that cannot be trained on (the message says which key/file)."""


class NonFiniteLossError(RuntimeError):
    """The training (or validation) loss became NaN or infinite; the run stopped."""

    def __init__(self, message: str, step: int, last_checkpoint: str | None):
        super().__init__(message)
        self.step = step
        self.last_checkpoint = last_checkpoint


# --------------------------------------------------------------------------- inputs

def object_groups(table: pd.DataFrame) -> pd.Series:
    """Identity of the physical object behind each image: ``dataset:snapshot:object_id``.

    All projections of one object share it; they are the positives of ``"projections"``.
    """
    missing = [c for c in ("dataset", "object_id") if c not in table.columns]
    if missing:
        raise ValueError(f"splits table lacks column(s) {missing}; expected the prepare stage's "
                         "dataset/splits.parquet (dataset, row, object_id, snapshot, split, …)")
    snapshot = table["snapshot"].astype("Int64").astype(str) if "snapshot" in table.columns else "0"
    return table["dataset"].astype(str) + ":" + snapshot + ":" + table["object_id"].astype(str)


def split_table(splits: pd.DataFrame, datasets, split_names) -> pd.DataFrame:
    """Rows of ``splits`` in ``datasets`` and ``split_names``, with the ``group`` column that
    :class:`~scripts.model.data.PairSampler` needs (sorted by dataset, row for stability)."""
    for col in ("dataset", "row", "split"):
        if col not in splits.columns:
            raise ValueError(f"splits table lacks column {col!r}; run the prepare stage")
    rows = splits[splits["dataset"].isin(list(datasets)) & splits["split"].isin(list(split_names))]
    rows = rows.sort_values(["dataset", "row"], kind="stable").reset_index(drop=True)
    out = rows[["dataset", "row"]].copy()
    out["group"] = object_groups(rows).to_numpy()
    return out


def view_seeds(seed: int, step, salt: int = 0) -> tf.Tensor:
    """Two stateless seeds ``(2, 2)`` int64 for the two views of batch ``step``.

    A pure function of ``(seed, salt, step)``: resuming at ``step`` redraws exactly the
    augmentations an uninterrupted run drew.
    """
    base = tf.stack([tf.constant(int(seed) ^ int(salt), tf.int64), tf.cast(step, tf.int64)])
    return tf.random.experimental.stateless_split(base, num=2)


def make_views_fn(augment: AugmentConfig, normalisation: Normalisation):
    """``views(a, b, seeds) → (view_a, view_b)``: augment raw images (linear flux units,
    before the stretch, as :mod:`scripts.model.augment` requires), then normalise."""
    def views(a, b, seeds):
        va = normalisation.apply_tf(augment_batch(a, augment, seed=seeds[0]))
        vb = normalisation.apply_tf(augment_batch(b, augment, seed=seeds[1]))
        return va, vb
    return views


def augment_config(params) -> AugmentConfig:
    """:class:`AugmentConfig` from ``train.AUGMENTATION``."""
    return AugmentConfig.from_params(params.augmentation)


def normalisation_from_params(params) -> Normalisation:
    """:class:`Normalisation` from ``train.NORMALISATION`` (stored with the model)."""
    n = params.normalisation
    return Normalisation(stretch=n.stretch, scale=n.scale, clip=n.clip,
                         name=f"{params.run_name}_{n.stretch}")


def pair_views_dataset(sampler: PairSampler, reader: HDF5Images, start_step: int, num_steps: int,
                       views_fn, seed: int, salt: int = 0, augment: bool = True) -> tf.data.Dataset:
    """Batches ``start_step … start_step+num_steps-1``.

    ``augment=True``: ``(view_a, view_b)`` augmented and normalised in the map;
    ``augment=False``: ``(steps, raw_a, raw_b)`` for augmentation on the device, ``steps``
    being the batch's step repeated for every image.
    Deterministic order (``deterministic=True``) and prefetched.
    """
    steps = tf.data.Dataset.range(start_step, start_step + num_steps)
    raw = pair_dataset(sampler, reader, start_step, num_steps)
    ds = tf.data.Dataset.zip((steps, raw))
    if augment:
        ds = ds.map(lambda k, ab: views_fn(ab[0], ab[1], view_seeds(seed, k, salt)),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        # the step as a per-image vector, so the distributed dataset can split it like images
        ds = ds.map(lambda k, ab: (tf.fill(tf.shape(ab[0])[:1], k), ab[0], ab[1]))
    options = tf.data.Options()
    options.deterministic = True
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.with_options(options).prefetch(tf.data.AUTOTUNE)


def prefetch_to(ds: tf.data.Dataset, device: str | None, buffer_size: int = 2) -> tf.data.Dataset:
    """``ds`` copied to ``device`` (e.g. ``/device:GPU:0``) ``buffer_size`` batches ahead of
    the consumer, so the host-to-device copy overlaps the step; unchanged when None."""
    if device is None:
        return ds
    return ds.apply(tf.data.experimental.prefetch_to_device(device, buffer_size=buffer_size))


# --------------------------------------------------------------------------- model & optimizer

def resolve_jit_compile(setting: str, replicas: int, gpus: int | None = None) -> tuple[bool, str]:
    """Whether the step is XLA-compiled for ``train.JIT_COMPILE`` = ``setting``, and why.

    ``auto``: on when a GPU is visible and the strategy has one replica (XLA was ~12× slower
    for this step on the 2-core CPU box); ``on``: always (one replica; raises
    :class:`TrainInputError` otherwise); ``off``: never. ``gpus`` defaults to the visible
    GPUs.
    """
    if setting not in JIT_COMPILE:
        raise TrainInputError(f"train.JIT_COMPILE = {setting!r}: expected one of {JIT_COMPILE}")
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
    depth = int(architecture.replace("resnet", ""))
    if depth not in RESNET_SPECS:
        raise ValueError(f"train.ARCHITECTURE = {architecture!r}: expected one of "
                         f"{['resnet%d' % d for d in RESNET_SPECS]}")
    return depth


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


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


# --------------------------------------------------------------------------- trainer

class Trainer:
    """Contrastive training of one run folder (``models/<run>/``), resumable.

    Args:
        params: the ``train`` section (:class:`scripts.params.TrainParams`).
        stores: ``{dataset: path to images.h5}`` of every dataset in ``table``.
        table: the prepare stage's splits (``dataset, row, object_id, snapshot, split``).
        run_dir: output folder; checkpoints go to ``run_dir/checkpoints``.
        tracker: a :class:`scripts.tracking.Tracker` (or None).
        strategy: a ``tf.distribute.Strategy``; default from ``DISTRIBUTION``.
        augment_on: ``"input"`` (tf.data map, default) or ``"device"`` (inside the step).
        progress: show a tqdm bar.
        step_callback: ``f(step, logs)`` called on the host after each step is known to be
            finite (tests use it to interrupt a run at a chosen step).
        deterministic: enable TensorFlow op determinism (bit-exact resume on GPUs too).
    """

    def __init__(self, params, stores: dict[str, str | Path], table: pd.DataFrame,
                 run_dir: str | Path, tracker=None, strategy=None, augment_on: str = "input",
                 progress: bool = True, step_callback: Callable[[int, dict], None] | None = None,
                 deterministic: bool = False):
        if augment_on not in AUGMENT_ON:
            raise ValueError(f"augment_on = {augment_on!r}: expected one of {AUGMENT_ON}")
        if deterministic:
            tf.config.experimental.enable_op_determinism()
        self.params = params
        self.run_dir = Path(run_dir)
        self.tracker = tracker
        self.augment_on = augment_on
        self.progress = progress
        self.step_callback = step_callback
        self.strategy = strategy or distribute.make_strategy(params.distribution)
        self.replicas = self.strategy.num_replicas_in_sync
        if params.batch_size % self.replicas:
            raise TrainInputError(f"train.BATCH_SIZE = {params.batch_size} is not divisible by the "
                                  f"{self.replicas} replicas; choose a multiple of {self.replicas}")
        self.chief = _is_chief(self.strategy)

        try:
            self._set_up_data(params, stores, table)
        except (ValueError, KeyError) as err:
            raise TrainInputError(str(err).strip("'\"")) from err

        self.augment = augment_config(params)
        self.normalisation = normalisation_from_params(params)
        self._views = make_views_fn(self.augment, self.normalisation)
        self.jit_compile, why = resolve_jit_compile(params.jit_compile, self.replicas)
        # one GPU, default strategy: batches are copied to it ahead of the step (several
        # replicas: experimental_distribute_dataset already prefetches to each device)
        gpus = tf.config.list_logical_devices("GPU")
        self.prefetch_device = gpus[0].name if gpus and self.replicas == 1 else None
        log.info("train step %s with XLA (%s); precision %s", "compiled" if self.jit_compile
                 else "not compiled", why, params.mixed_precision)

        with self.strategy.scope():
            self.model = build_model(params, self.image_shape, params.sync_batch_norm)
            self.schedule = learning_rate_schedule(params, self.steps_per_epoch, self.total_steps)
            self.optimizer = build_optimizer(params, self.schedule, self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.best_val_loss = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
            self.best_val_accuracy = tf.Variable(np.nan, dtype=tf.float64, trainable=False)
            self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
            self.last_val_loss = tf.Variable(np.nan, dtype=tf.float64, trainable=False)
            self.last_val_accuracy = tf.Variable(np.nan, dtype=tf.float64, trainable=False)
            self.bad_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_epochs")
            self.queue = None
            if params.method == "nnclr":
                size = params.nnclr_queue_size or default_nnclr_queue_size(params.batch_size,
                                                                           params.output_dim)
                self.queue = SupportQueue(size, params.output_dim)
        # the NNCLR queue is checkpointed only when it exists: SimCLR checkpoints are unchanged
        extra = {} if self.queue is None else {"nnclr_queue": self.queue}
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.step, epoch=self.epoch,
            best_val_loss=self.best_val_loss, best_val_accuracy=self.best_val_accuracy,
            best_epoch=self.best_epoch, last_val_loss=self.last_val_loss,
            last_val_accuracy=self.last_val_accuracy, bad_epochs=self.bad_epochs, **extra)
        ckpt_dir = self.run_dir / CHECKPOINT_DIR
        if not self.chief:  # every worker must save; only the chief's files are kept
            resolver = self.strategy.cluster_resolver
            ckpt_dir = ckpt_dir / f".{resolver.task_type}_{resolver.task_id}"
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(ckpt_dir),
                                                  max_to_keep=CHECKPOINTS_KEPT)
        self._val_dataset = None
        self._train_step = self._make_train_step()
        self._val_step = self._make_val_step()
        self.resumed_from = 0

    # ------------------------------------------------------------------ set-up helpers
    def _set_up_data(self, params, stores, table) -> None:
        datasets = sorted(set(table["dataset"]))
        self.train_table = split_table(table, datasets, params.train_splits)
        self.val_table = split_table(table, datasets, [params.validation_split])
        if self.train_table.empty:
            raise ValueError(f"no rows in splits {list(params.train_splits)} of datasets {datasets}; "
                             "check train.TRAIN_SPLITS and the prepare stage's fractions")
        used = sorted(set(self.train_table["dataset"]) | set(self.val_table["dataset"]))
        missing = [name for name in used if name not in stores]
        if missing:
            raise ValueError(f"no image store given for dataset(s) {missing}")
        self.reader = HDF5Images({name: stores[name] for name in used}, cache=params.cache_images)
        self.store_names = self.reader.names
        self.image_shape = tuple(int(s) for s in self.reader.image_shape)
        self.sampler = PairSampler(self.train_table, self.store_names, params.batch_size,
                                   params.positives, params.seed)
        self.steps_per_epoch = params.steps_per_epoch or self.sampler.steps_per_epoch
        self.total_steps = params.epochs * self.steps_per_epoch
        self.val_sampler = self._validation_sampler()

    def _validation_sampler(self) -> PairSampler | None:
        if self.val_table.empty:
            log.warning("no rows in validation split %r: no validation loss, no early stopping",
                        self.params.validation_split)
            return None
        probe = PairSampler(self.val_table, self.store_names, 1, self.params.positives, self.params.seed)
        units = probe.steps_per_epoch
        batch = min(self.params.batch_size, units) // self.replicas * self.replicas
        if batch < 2:
            log.warning("validation split %r has %d unit(s): too few for a contrastive batch; "
                        "no validation", self.params.validation_split, units)
            return None
        if batch < self.params.batch_size:
            log.info("validation batch %d (the validation split has %d units); its chance "
                     "accuracy is 1/%d", batch, units, 2 * batch - 1)
        return PairSampler(self.val_table, self.store_names, batch, self.params.positives,
                           self.params.seed)

    def _dataset(self, sampler, start, num, salt) -> tf.data.Dataset:
        ds = pair_views_dataset(sampler, self.reader, start, num, self._views, self.params.seed,
                                salt=salt, augment=self.augment_on == "input")
        return prefetch_to(ds, self.prefetch_device)

    def _replica_views(self, batch, salt):
        """Views on the device (``augment_on="device"``): this replica's slice, with its seed."""
        if self.augment_on == "input":
            return batch
        step, a, b = batch
        seeds = view_seeds(self.params.seed, step[0], salt)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            rid = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
            seeds = tf.stack([tf.random.experimental.stateless_fold_in(s, rid) for s in tf.unstack(seeds)])
        return self._views(a, b, seeds)

    def _compiled(self, fn):
        """``fn`` as a nested XLA-compiled ``tf.function`` when :attr:`jit_compile`."""
        return tf.function(fn, jit_compile=True) if self.jit_compile else fn

    def _make_train_step(self):
        model, optimizer, temperature = self.model, self.optimizer, self.params.temperature
        queue = self.queue

        def update(a, b):
            """Network, loss, gradients and optimizer update (and the NNCLR queue update):
            the part XLA compiles."""
            n = tf.shape(a)[0]
            with tf.GradientTape() as tape:
                _, z = model(tf.concat([a, b], axis=0), training=True)  # BN over both views
                if queue is None:
                    loss, accuracy = nt_xent_loss(z[:n], z[n:], temperature, return_accuracy=True)
                else:
                    out = nnclr_loss(z[:n], z[n:], queue, temperature)
                    loss, accuracy = out.loss, out.accuracy
                scaled = optimizer.scale_loss(loss * distribute.replica_loss_scale(n))
            grads = tape.gradient(scaled, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            if queue is not None:
                queue.push(out.support)
            return loss, accuracy

        update = self._compiled(update)

        def replica_step(batch):
            a, b = self._replica_views(batch, 0)  # outside XLA: no kernel for the resampling
            return update(a, b)

        @tf.function
        def train_step(batch):
            loss, accuracy = self.strategy.run(replica_step, args=(batch,))
            mean = tf.distribute.ReduceOp.MEAN
            return (self.strategy.reduce(mean, loss, axis=None),
                    self.strategy.reduce(mean, accuracy, axis=None))
        return train_step

    def _make_val_step(self):
        model, temperature = self.model, self.params.temperature

        def evaluate(a, b):
            n = tf.shape(a)[0]
            _, z = model(tf.concat([a, b], axis=0), training=False)
            return nt_xent_loss(z[:n], z[n:], temperature, return_accuracy=True)

        evaluate = self._compiled(evaluate)

        def replica_step(batch):
            return evaluate(*self._replica_views(batch, VALIDATION_SALT))

        @tf.function
        def val_step(batch):
            loss, accuracy = self.strategy.run(replica_step, args=(batch,))
            mean = tf.distribute.ReduceOp.MEAN
            return (self.strategy.reduce(mean, loss, axis=None),
                    self.strategy.reduce(mean, accuracy, axis=None))
        return val_step

    # ------------------------------------------------------------------ state
    def restore(self) -> int:
        """Restore the latest checkpoint (if any); returns the step it holds (0: fresh run)."""
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        has_queue = any(name.startswith("nnclr_queue/") for name, _ in tf.train.list_variables(latest))
        if has_queue != (self.queue is not None):
            written = "nnclr" if has_queue else "simclr"
            raise TrainInputError(
                f"checkpoint {latest} was written with train.METHOD = {written}, but train.METHOD "
                f"is now {self.params.method}; train into a new train.RUN_NAME (or delete "
                f"{self.manager.directory}) to start afresh")
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        step = int(self.step.numpy())
        iterations = int(self.optimizer.iterations.numpy())
        # a LossScaleOptimizer does not count the steps it skipped (non-finite gradients)
        scaled = isinstance(self.optimizer, keras.optimizers.LossScaleOptimizer)
        if iterations > step or (iterations != step and not scaled):
            raise RuntimeError(f"checkpoint {latest}: optimizer iterations {iterations} do not "
                               f"match step {step}; the checkpoint folder is inconsistent")
        log.info("resumed from %s: step %d, epoch %d, best validation loss %.4f, %d epoch(s) "
                 "without improvement", latest, step, int(self.epoch.numpy()),
                 float(self.best_val_loss.numpy()), int(self.bad_epochs.numpy()))
        return step

    def save(self, step: int) -> str:
        self.step.assign(step)
        path = self.manager.save(checkpoint_number=step)
        log.debug("checkpoint %s", path)
        return path

    # ------------------------------------------------------------------ validation
    def validate(self) -> tuple[float, float] | tuple[None, None]:
        """Mean validation loss and contrast accuracy over one fixed pass (same batches and
        same augmentation seeds every epoch, so epochs are comparable)."""
        if self.val_sampler is None:
            return None, None
        if self._val_dataset is None:  # built once: the same batches and seeds every epoch
            ds = self._dataset(self.val_sampler, 0, self.val_sampler.steps_per_epoch, VALIDATION_SALT)
            self._val_dataset = self.strategy.experimental_distribute_dataset(ds)
        losses, accs = [], []
        for batch in self._val_dataset:
            loss, acc = self._val_step(batch)
            losses.append(float(loss))
            accs.append(float(acc))
        return float(np.mean(losses)), float(np.mean(accs))

    @property
    def val_chance(self) -> float | None:
        return None if self.val_sampler is None else 1.0 / (2 * self.val_sampler.batch_size - 1)

    # ------------------------------------------------------------------ loop
    def fit(self, max_runtime_seconds: float | None = None) -> dict[str, Any]:
        """Train to ``EPOCHS × steps_per_epoch`` steps (or until early stopping / the runtime
        limit), resuming from the latest checkpoint. Returns the summary dict.

        Raises :class:`NonFiniteLossError` (after keeping the last good checkpoint) when the
        loss becomes NaN or infinite.
        """
        p = self.params
        max_runtime = p.max_runtime_seconds if max_runtime_seconds is None else max_runtime_seconds
        wall0 = time.monotonic()
        start = self.restore()
        self.resumed_from = start
        spe, total = self.steps_per_epoch, self.total_steps
        log.info("training %s (%s): %d steps (%d epochs × %d), global batch %d on %d replica(s), "
                 "images %s, positives %s, augmentation on %s", self.run_dir.name, p.method, total,
                 p.epochs, spe, p.batch_size, self.replicas, self.image_shape, p.positives,
                 self.augment_on)
        reason = None
        if start >= total:
            reason = "completed"
        elif self.val_sampler is not None and int(self.bad_epochs.numpy()) >= p.patience:
            reason = "early_stopping"
        if reason:
            log.info("nothing to train: the run already stopped (%s) at step %d", reason, start)
            return self._summary(start, reason, [], wall0)

        if self.tracker is not None and start == 0:
            self._log_views()
        ds = self._dataset(self.sampler, start, total - start, 0)
        iterator = iter(self.strategy.experimental_distribute_dataset(ds))
        bar = tqdm(total=total, initial=start, desc=self.run_dir.name, unit="step",
                   disable=None if self.progress else True, dynamic_ncols=True)  # None: off without a terminal
        rates: list[float] = []
        last_ckpt = self.manager.latest_checkpoint
        pending = None  # (step, loss, accuracy) tensors, read one step late so the device stays busy
        t_prev = None
        step = start
        try:
            while step < total:
                batch = next(iterator)
                loss_t, acc_t = self._train_step(batch)
                step += 1
                if pending is not None:
                    self._finish_step(pending, bar, rates, last_ckpt)
                pending = (step, loss_t, acc_t)
                # wall time per step, measured between dispatches (the first includes tracing)
                now = time.monotonic()
                if t_prev is not None:
                    rates.append(p.batch_size / max(now - t_prev, 1e-9))
                t_prev = now
                at_epoch_end = step % spe == 0
                over_time = max_runtime is not None and now - wall0 > max_runtime and step < total
                if step % p.checkpoint_every == 0 or at_epoch_end or over_time or step == total:
                    self._finish_step(pending, bar, rates, last_ckpt)
                    pending = None
                if at_epoch_end:
                    reason = self._end_epoch(step // spe, step)
                if step % p.checkpoint_every == 0 or reason or over_time or step == total:
                    last_ckpt = self.save(step)
                if reason:
                    break
                if over_time:
                    reason = "max_runtime"
                    log.warning("stopping after %.0f s (train.MAX_RUNTIME_SECONDS = %g) at step %d "
                                "of %d; checkpoint written, rerun the same command to resume",
                                now - wall0, max_runtime, step, total)
                    break
            reason = reason or "completed"
        finally:
            bar.close()
        return self._summary(step, reason, rates, wall0)

    def _finish_step(self, pending, bar, rates, last_ckpt) -> None:
        step, loss_t, acc_t = pending
        loss, acc = float(loss_t), float(acc_t)
        if not math.isfinite(loss):
            where = last_ckpt or "none (no checkpoint was written yet)"
            message = (f"training loss is {loss} at step {step} (epoch {(step - 1) // self.steps_per_epoch + 1}); "
                       f"stopped. The last good checkpoint is kept: {where}. Check the input "
                       "images for NaN/inf values and lower train.LEARNING_RATE.")
            raise NonFiniteLossError(message, step, last_ckpt)
        lr = float(self.schedule(step - 1))
        rate = float(np.mean(rates[-20:])) if rates else float("nan")
        bar.update(step - bar.n)
        bar.set_postfix(loss=f"{loss:.4f}", acc=f"{acc:.3f}", img_s=f"{rate:.0f}", refresh=False)
        logs = {"train/loss": loss, "train/accuracy": acc, "train/learning_rate": lr}
        if rates:
            logs["train/images_per_second"] = rate
        if self.tracker is not None and self.chief:
            self.tracker.log_metrics(logs, step=step)
        if self.step_callback is not None:
            self.step_callback(step, logs)

    def _end_epoch(self, epoch: int, step: int) -> str | None:
        """Validation, best/patience bookkeeping; returns "early_stopping" or None."""
        self.epoch.assign(epoch)
        val_loss, val_acc = self.validate()
        if val_loss is None:
            return None
        if not math.isfinite(val_loss):
            raise NonFiniteLossError(
                f"validation loss is {val_loss} after epoch {epoch} (step {step}); stopped. "
                f"The last good checkpoint is kept: {self.manager.latest_checkpoint}.",
                step, self.manager.latest_checkpoint)
        self.last_val_loss.assign(val_loss)
        self.last_val_accuracy.assign(val_acc)
        if val_loss < float(self.best_val_loss.numpy()):
            self.best_val_loss.assign(val_loss)
            self.best_val_accuracy.assign(val_acc)
            self.best_epoch.assign(epoch)
            self.bad_epochs.assign(0)
        else:
            self.bad_epochs.assign_add(1)
        log.info("epoch %d (step %d): validation loss %.4f, contrast accuracy %.3f (chance %.3f); "
                 "best %.4f at epoch %d", epoch, step, val_loss, val_acc, self.val_chance,
                 float(self.best_val_loss.numpy()), int(self.best_epoch.numpy()))
        if self.tracker is not None and self.chief:
            self.tracker.log_metrics({"epoch/val_loss": val_loss, "epoch/val_accuracy": val_acc,
                                      "epoch/epoch": epoch}, step=step)
        if int(self.bad_epochs.numpy()) >= self.params.patience:
            log.info("early stopping: no validation improvement for %d epochs (train.PATIENCE)",
                     self.params.patience)
            return "early_stopping"
        return None

    def _log_views(self, n: int = 8) -> None:
        """A grid of the first training batch's augmented views (a₀, b₀, a₁, b₁, …), once."""
        ds = pair_views_dataset(self.sampler, self.reader, 0, 1, self._views, self.params.seed)
        a, b = next(iter(ds))
        n = min(n, int(a.shape[0]))
        grid = np.stack([a[:n].numpy(), b[:n].numpy()], axis=1).reshape((2 * n,) + self.image_shape)
        self.tracker.log_images("augmented_views", grid, step=0)

    def _summary(self, step, reason, rates, wall0) -> dict[str, Any]:
        def num(var):
            value = float(var.numpy())
            return value if math.isfinite(value) else None
        return {
            "run": self.run_dir.name,
            "stopping_reason": reason,
            "finished": reason in ("completed", "early_stopping"),
            "steps": int(step),
            "total_steps": int(self.total_steps),
            "steps_per_epoch": int(self.steps_per_epoch),
            "epochs": int(self.epoch.numpy()),
            "resumed_from_step": int(self.resumed_from),
            "global_batch_size": int(self.params.batch_size),
            "replicas": int(self.replicas),
            "optimizer_iterations": int(self.optimizer.iterations.numpy()),
            "final_val_loss": num(self.last_val_loss),
            "final_val_accuracy": num(self.last_val_accuracy),
            "best_val_loss": num(self.best_val_loss),
            "best_val_accuracy": num(self.best_val_accuracy),
            "best_epoch": int(self.best_epoch.numpy()),
            "val_batch_size": None if self.val_sampler is None else int(self.val_sampler.batch_size),
            "val_chance_accuracy": self.val_chance,
            # median over this process's steps; the first (tracing) step is excluded
            "images_per_second": float(np.median(rates[1:] if len(rates) > 1 else rates)) if rates else None,
            "wall_seconds": time.monotonic() - wall0,
            "augment_on": self.augment_on,
            "jit_compile": bool(self.jit_compile),
            "mixed_precision": self.params.mixed_precision,
        }

    # ------------------------------------------------------------------ export
    def export(self, summary: dict | None = None) -> dict[str, Path]:
        """Write ``encoder.keras``, ``saved_model/`` (serving: raw images → representation,
        normalisation included), ``normalisation.json`` and ``train_summary.json``."""
        out = {}
        if not self.chief:
            return out
        self.run_dir.mkdir(parents=True, exist_ok=True)
        out["normalisation"] = self.run_dir / NORMALISATION_FILE
        self.normalisation.save(out["normalisation"])
        out["encoder"] = self.run_dir / ENCODER_FILE
        self.model.encoder.save(out["encoder"])
        out["saved_model"] = self.run_dir / SAVED_MODEL_DIR
        export_saved_model(self.model.encoder, self.normalisation, out["saved_model"])
        if summary is not None:
            out["summary"] = write_summary(self.run_dir, summary)
        log.info("exported %s", ", ".join(str(p) for p in out.values()))
        return out


def export_saved_model(encoder: keras.Model, normalisation: Normalisation, path: str | Path) -> Path:
    """A SavedModel whose ``serve`` endpoint (also ``serving_default``) maps raw images
    ``(N, H, W, C)`` float32 to float32 representations, applying ``normalisation`` first —
    servable without this package (``tf.saved_model.load(path).serve(images)``)."""
    shape = (None,) + tuple(int(s) for s in encoder.input_shape[1:])

    def serve(images):
        x = normalisation.apply_tf(images)
        return tf.cast(encoder(x, training=False), tf.float32)

    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.add_endpoint("serve", serve, input_signature=[tf.TensorSpec(shape, tf.float32, name="images")])
    archive.write_out(str(path), verbose=False)
    return Path(path)


def write_summary(run_dir: str | Path, summary: dict) -> Path:
    path = Path(run_dir) / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path
