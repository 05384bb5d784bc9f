"""Checkpoint and exact resume of a training run.

Everything a resumed run needs besides ``(seed, step)`` is checkpointed: weights, optimizer
slots and iterations, batch-norm statistics, the NNCLR support queue (only when the run has
one, so SimCLR checkpoints are unchanged) and the counters of :class:`TrainingState`.
``tf.train.CheckpointManager`` keeps the last :data:`CHECKPOINTS_KEPT`; checkpoint ``k``
holds the state after ``k`` optimizer updates.
"""
from __future__ import annotations

import logging
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from scripts.model.train_errors import TrainInputError

log = logging.getLogger(__name__)

CHECKPOINTS_KEPT = 3
CHECKPOINT_DIR = "checkpoints"
QUEUE_KEY = "nnclr_queue"


class TrainingState:
    """The counters of a run, as variables so they are checkpointed: step, epoch, the best
    and last validation loss/accuracy, the best epoch and the epochs without improvement.
    Create it under the strategy's scope."""

    def __init__(self):
        self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self.best_val_loss = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
        self.best_val_accuracy = tf.Variable(np.nan, dtype=tf.float64, trainable=False)
        self.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.last_val_loss = tf.Variable(np.nan, dtype=tf.float64, trainable=False)
        self.last_val_accuracy = tf.Variable(np.nan, dtype=tf.float64, trainable=False)
        self.bad_epochs = tf.Variable(0, dtype=tf.int64, trainable=False, name="bad_epochs")

    def variables(self) -> dict[str, tf.Variable]:
        """``{checkpoint key: variable}``; the keys are those of every checkpoint written so far."""
        return {name: getattr(self, name) for name in (
            "step", "epoch", "best_val_loss", "best_val_accuracy", "best_epoch", "last_val_loss",
            "last_val_accuracy", "bad_epochs")}


def make_checkpoint(model, optimizer, state: TrainingState, queue=None) -> tf.train.Checkpoint:
    """The checkpoint of model, optimizer, ``state`` and (NNCLR) the support ``queue``."""
    extra = {} if queue is None else {QUEUE_KEY: queue}
    return tf.train.Checkpoint(model=model, optimizer=optimizer, **state.variables(), **extra)


def checkpoint_manager(checkpoint: tf.train.Checkpoint, run_dir: str | Path, strategy,
                       chief: bool) -> tf.train.CheckpointManager:
    """The manager of ``run_dir/checkpoints``. Every worker of a multi-worker run must save;
    a non-chief worker writes to a hidden sub-folder of its own, only the chief's are kept."""
    ckpt_dir = Path(run_dir) / CHECKPOINT_DIR
    if not chief:
        resolver = strategy.cluster_resolver
        ckpt_dir = ckpt_dir / f".{resolver.task_type}_{resolver.task_id}"
    return tf.train.CheckpointManager(checkpoint, str(ckpt_dir), max_to_keep=CHECKPOINTS_KEPT)


def restore_latest(manager: tf.train.CheckpointManager, state: TrainingState, optimizer,
                   has_queue: bool, method: str) -> int:
    """Restore the latest checkpoint (if any); returns the step it holds (0: fresh run).

    Refuses (:class:`TrainInputError`) a checkpoint written by the other ``METHOD``
    (with/without the NNCLR queue) and raises ``RuntimeError`` when the optimizer's
    iterations do not match the step (an inconsistent folder).
    """
    latest = manager.latest_checkpoint
    if latest is None:
        return 0
    saved_queue = any(name.startswith(QUEUE_KEY + "/") for name, _ in tf.train.list_variables(latest))
    if saved_queue != has_queue:
        written = "nnclr" if saved_queue else "simclr"
        raise TrainInputError(
            f"checkpoint {latest} was written with train.METHOD = {written}, but train.METHOD "
            f"is now {method}; train into a new train.RUN_NAME (or delete "
            f"{manager.directory}) to start afresh")
    manager.checkpoint.restore(latest).assert_existing_objects_matched()
    step = int(state.step.numpy())
    iterations = int(optimizer.iterations.numpy())
    # a LossScaleOptimizer does not count the steps it skipped (non-finite gradients)
    scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)
    if iterations > step or (iterations != step and not scaled):
        raise RuntimeError(f"checkpoint {latest}: optimizer iterations {iterations} do not "
                           f"match step {step}; the checkpoint folder is inconsistent")
    log.info("resumed from %s: step %d, epoch %d, best validation loss %.4f, %d epoch(s) "
             "without improvement", latest, step, int(state.epoch.numpy()),
             float(state.best_val_loss.numpy()), int(state.bad_epochs.numpy()))
    return step


def save(manager: tf.train.CheckpointManager, state: TrainingState, step: int) -> str:
    """Write checkpoint ``step`` (the state after ``step`` updates); returns its path."""
    state.step.assign(step)
    path = manager.save(checkpoint_number=step)
    log.debug("checkpoint %s", path)
    return path
