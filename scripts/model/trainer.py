"""The contrastive training loop of one run folder: resume, step, log, checkpoint,
validate, stop, summarise.

Why a custom loop and not ``model.fit``: the NT-Xent negatives are gathered across replicas
inside the step and a run resumed from a checkpoint must reproduce an uninterrupted run bit
for bit. The last needs every source of randomness to be a function of ``(seed, step)``:

- the rows of batch ``k``: :class:`scripts.model.input_pipeline.PairSampler` (pure in ``(seed, k)``),
  set up by :mod:`scripts.model.sampling`;
- the augmentations of batch ``k``: stateless ops seeded by
  :func:`scripts.model.views.view_seeds` ``(seed, k)``;
- everything else (weights, optimizer slots and iterations, batch-norm statistics, the NNCLR
  queue, the step/epoch counters, the best validation loss and the patience counter) is in
  the checkpoint (:mod:`scripts.model.checkpointing`, every ``CHECKPOINT_EVERY`` steps).

The pieces: :mod:`scripts.model.build` (network, optimizer, schedule, XLA choice),
:mod:`scripts.model.steps` (the distributed train and validation steps),
:mod:`scripts.model.validation` (validation pass and early stopping) and
:mod:`scripts.model.export` (the exported model and summary).

Where augmentation runs (``augment_on``): ``"input"`` (default) augments and normalises in
the ``tf.data`` map, on CPU worker threads, overlapping the accelerator's previous step
(``prefetch``); the step graph stays a pure network + loss graph, and the views do not
depend on the number of replicas. ``"device"`` moves augmentation + normalisation into the
step (each replica augments its slice with a seed folded from its replica id): use it when
the host CPUs cannot keep up with the accelerators (``bench/bench_input.py`` measures the
ratio).

XLA (``JIT_COMPILE``, :func:`scripts.model.build.resolve_jit_compile`): ``auto`` compiles
on a GPU only: on the 2-core CPU box XLA made this step ~12× slower. XLA cannot compile a
step whose variables live on several devices (MirroredStrategy) nor a nested function with
cross-replica synchronisation, so it is used with one replica per process only.

Numbers: the loss is the paper's mean over the 2N anchors of the global batch (DESIGN §5);
the contrast accuracy is the fraction of anchors whose most similar other view is their
positive (chance ``1/(2N−1)``); NNCLR's training accuracy is the fraction of neighbour
anchors whose most similar other view is their positive (chance ``1/N``). Steps are counted
from 1: "step k" is the state after k optimizer updates, which is also what checkpoint ``k``
holds. The loss of step ``k`` is read one step late, so the device stays busy.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import tensorflow as tf
from tqdm.auto import tqdm

from scripts.model import checkpointing, distribute, sky, validation
from scripts.model.build import (augment_config, build_model, build_optimizer, learning_rate_schedule,
                                 normalisation_from_params, resolve_jit_compile)
from scripts.model.export import export_run
from scripts.model.nnclr import SupportQueue
from scripts.model.sampling import training_rows
from scripts.model.steps import make_train_step, make_val_step
from scripts.model.train_errors import NonFiniteLossError, TrainInputError
from scripts.model.views import (AUGMENT_ON, VALIDATION_SALT, make_views_fn, pair_views_dataset,
                                 prefetch_to, replica_views_fn)
from scripts.params import default_nnclr_queue_size

log = logging.getLogger(__name__)


def _is_chief(strategy) -> bool:
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True
    cluster = resolver.cluster_spec().as_dict()
    if "chief" in cluster:
        return resolver.task_type == "chief"
    return resolver.task_type == "worker" and resolver.task_id == 0


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
            rows = training_rows(params, stores, table)
            self.val_sampler = validation.validation_sampler(rows.val_table, rows.store_names,
                                                             params, self.replicas)
        except (ValueError, KeyError) as err:
            raise TrainInputError(str(err).strip("'\"")) from err
        self.reader, self.sampler = rows.reader, rows.sampler
        self.image_shape = rows.image_shape
        self.steps_per_epoch, self.total_steps = rows.steps_per_epoch, rows.total_steps

        self.augment = augment_config(params)
        self.normalisation = normalisation_from_params(params)
        self.sky_sigma = None
        if params.pixel_unit == "sky":
            try:
                self.sky_sigma = sky.sample_sky_sigma(self.reader, *rows.train_images(), seed=params.seed)
                self.augment, self.normalisation = sky.in_image_units(self.augment, self.normalisation,
                                                                      self.sky_sigma)
            except ValueError as err:
                raise TrainInputError(str(err)) from err
            log.info("PIXEL_UNIT sky: sky σ per band %s (image units); NORMALISATION.SCALE %s and "
                     "NOISE_STD %s in image units", np.array2string(self.sky_sigma, precision=3),
                     list(self.normalisation.scale), list(self.augment.noise_std))
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
            self.state = checkpointing.TrainingState()
            self.queue = None
            if params.method == "nnclr":
                size = params.nnclr_queue_size or default_nnclr_queue_size(params.batch_size,
                                                                           params.output_dim)
                self.queue = SupportQueue(size, params.output_dim)
        self.checkpoint = checkpointing.make_checkpoint(self.model, self.optimizer, self.state, self.queue)
        self.manager = checkpointing.checkpoint_manager(self.checkpoint, self.run_dir, self.strategy,
                                                        self.chief)
        self._val_dataset = None
        self._replica_views = replica_views_fn(self._views, params.seed, augment_on)
        self._train_step = self._make_train_step()
        self._val_step = make_val_step(self.strategy, self.model, params.temperature,
                                       self._replica_views, self.jit_compile)
        self.resumed_from = 0

    def _make_train_step(self):
        """The distributed train step of this run (:func:`scripts.model.steps.make_train_step`)."""
        return make_train_step(self.strategy, self.model, self.optimizer, self.params.temperature,
                               self._replica_views, self.jit_compile, self.queue)

    def _dataset(self, sampler, start, num, salt) -> tf.data.Dataset:
        ds = pair_views_dataset(sampler, self.reader, start, num, self._views, self.params.seed,
                                salt=salt, augment=self.augment_on == "input")
        return prefetch_to(ds, self.prefetch_device)

    # ------------------------------------------------------------------ state
    def restore(self) -> int:
        """Restore the latest checkpoint (if any); returns the step it holds (0: fresh run)."""
        return checkpointing.restore_latest(self.manager, self.state, self.optimizer,
                                            self.queue is not None, self.params.method)

    def save(self, step: int) -> str:
        return checkpointing.save(self.manager, self.state, step)

    # ------------------------------------------------------------------ validation
    def validate(self) -> tuple[float, float] | tuple[None, None]:
        """Mean validation loss and contrast accuracy over one fixed pass (same batches and
        same augmentation seeds every epoch, so epochs are comparable)."""
        if self.val_sampler is None:
            return None, None
        if self._val_dataset is None:  # built once: the same batches and seeds every epoch
            ds = self._dataset(self.val_sampler, 0, self.val_sampler.steps_per_epoch, VALIDATION_SALT)
            self._val_dataset = self.strategy.experimental_distribute_dataset(ds)
        return validation.mean_loss_and_accuracy(self._val_dataset, self._val_step)

    @property
    def val_chance(self) -> float | None:
        return validation.chance_accuracy(self.val_sampler)

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
        elif self.val_sampler is not None and validation.patience_exhausted(self.state, p.patience):
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
        """Read step ``k``'s loss; stop on a non-finite one; progress bar, tracker, callback."""
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
        """Validation and early stopping at the end of ``epoch``; returns "early_stopping" or None."""
        state = self.state
        state.epoch.assign(epoch)
        val_loss, val_acc = self.validate()
        if val_loss is None:
            return None
        if not math.isfinite(val_loss):
            raise NonFiniteLossError(
                f"validation loss is {val_loss} after epoch {epoch} (step {step}); stopped. "
                f"The last good checkpoint is kept: {self.manager.latest_checkpoint}.",
                step, self.manager.latest_checkpoint)
        stop = validation.record_validation(state, epoch, val_loss, val_acc, self.params.patience)
        log.info("epoch %d (step %d): validation loss %.4f, contrast accuracy %.3f (chance %.3f); "
                 "best %.4f at epoch %d", epoch, step, val_loss, val_acc, self.val_chance,
                 float(state.best_val_loss.numpy()), int(state.best_epoch.numpy()))
        if self.tracker is not None and self.chief:
            self.tracker.log_metrics({"epoch/val_loss": val_loss, "epoch/val_accuracy": val_acc,
                                      "epoch/epoch": epoch}, step=step)
        if stop:
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
        """The run's summary (``train_summary.json``): where and why it stopped, the
        validation numbers, the throughput and the settings that shaped the step."""
        state = self.state

        def num(var):
            value = float(var.numpy())
            return value if math.isfinite(value) else None
        return {
            "run": self.run_dir.name,
            "stopping_reason": reason,
            "sky_sigma": None if self.sky_sigma is None else [float(v) for v in self.sky_sigma],
            "finished": reason in ("completed", "early_stopping"),
            "steps": int(step),
            "total_steps": int(self.total_steps),
            "steps_per_epoch": int(self.steps_per_epoch),
            "epochs": int(state.epoch.numpy()),
            "resumed_from_step": int(self.resumed_from),
            "global_batch_size": int(self.params.batch_size),
            "replicas": int(self.replicas),
            "optimizer_iterations": int(self.optimizer.iterations.numpy()),
            "final_val_loss": num(state.last_val_loss),
            "final_val_accuracy": num(state.last_val_accuracy),
            "best_val_loss": num(state.best_val_loss),
            "best_val_accuracy": num(state.best_val_accuracy),
            "best_epoch": int(state.best_epoch.numpy()),
            "val_batch_size": None if self.val_sampler is None else int(self.val_sampler.batch_size),
            "val_chance_accuracy": self.val_chance,
            # median over this process's steps; the first (tracing) step is excluded
            "images_per_second": float(np.median(rates[1:] if len(rates) > 1 else rates)) if rates else None,
            "wall_seconds": time.monotonic() - wall0,
            "augment_on": self.augment_on,
            "jit_compile": bool(self.jit_compile),
            "mixed_precision": self.params.mixed_precision,
        }

    def export(self, summary: dict | None = None) -> dict[str, Path]:
        """Export the finished run (:func:`scripts.model.export.export_run`); the chief only."""
        if not self.chief:
            return {}
        return export_run(self.model.encoder, self.normalisation, self.run_dir, summary)
