"""Training of a :class:`~scripts.posterior.flow.ConditionalFlow`: Adam, learning-rate decay
on a validation plateau, early stopping that keeps the best epoch, and an exact resume.

Batches of epoch ``e`` are a seeded permutation that depends only on ``(seed, e)``, and so
is the optional Gaussian noise added to the conditions (``condition_noise``, the noise
regularisation of conditional density estimators, Rothfuss et al. 2019: it smooths the
learned conditional, against over-confident posteriors from small training sets); the
weights, the optimizer, the learning rate, the best weights so far and the patience
counters are in the checkpoint (every ``checkpoint_every`` epochs and at the end). A run
killed (even with ``kill -9``) and rerun therefore resumes at its last checkpoint and ends
with the same flow as an uninterrupted run.

The stage's fits go through :func:`fit_posterior`: the stage's flow and the fold flows of
one configuration share one trainer per process (:func:`shared_trainer`), and
:func:`train_fold` is what the fold worker processes run.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import tensorflow as tf
import tf_keras

from scripts.posterior.flow import ConditionalFlow

log = logging.getLogger("infer")

CHECKPOINTS_KEPT = 2
EVAL_BATCH = 8192


@dataclass(frozen=True)
class FitSettings:
    learning_rate: float = 1e-3
    lr_decay_factor: float = 0.5
    lr_decay_patience: int = 5
    patience: int = 15
    batch_size: int = 256
    epochs: int = 200
    checkpoint_every: int = 5
    condition_noise: float = 0.0
    weight_decay: float = 0.0
    seed: int = 0

    @classmethod
    def from_params(cls, p) -> "FitSettings":
        return cls(**{k: getattr(p, k) for k in cls.__dataclass_fields__})


class FlowTrainer:
    """Fits ``flow`` on (targets, conditions), checkpointing into ``ckpt_dir``.

    :meth:`reset` puts the flow, the optimizer and the fit state back to how construction
    left them and points the checkpoints at another folder, so one trainer fits several
    flows of the same configuration (the recalibration folds) with the same results as
    fresh trainers, while its traced TensorFlow functions are reused (tracing costs ~3 s a
    flow on 2 CPU cores, more than training a fold of the demo).
    """

    def __init__(self, flow: ConditionalFlow, settings: FitSettings, ckpt_dir: str | Path,
                 tracker=None, epoch_callback: Callable[[int, dict], None] | None = None):
        self.flow, self.s = flow, settings
        self._initial = [v.numpy() for v in flow.variables]
        variables = list(flow.trainable_variables)
        self.variables = variables
        if settings.weight_decay > 0:
            self.optimizer = tf_keras.optimizers.AdamW(learning_rate=settings.learning_rate,
                                                       weight_decay=settings.weight_decay)
        else:
            self.optimizer = tf_keras.optimizers.Adam(learning_rate=settings.learning_rate)
        self.optimizer.build(variables)
        self.state = tf.Module(name="fit_state")
        self.state.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.state.best_val = tf.Variable(np.inf, dtype=tf.float64, trainable=False)
        self.state.best_epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.state.bad_epochs = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.state.plateau_epochs = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.state.best = [tf.Variable(v, trainable=False) for v in variables]
        self.checkpoint = tf.train.Checkpoint(flow=flow, optimizer=self.optimizer, state=self.state)
        self.reset(ckpt_dir, tracker, epoch_callback)
        spec = [tf.TensorSpec([None, flow.target_dim], tf.float32),
                tf.TensorSpec([None, flow.condition_dim], tf.float32)]

        @tf.function(input_signature=spec)
        def train_step(y, c):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_mean(flow.log_prob(y, c))
            grads = tape.gradient(loss, variables)
            self.optimizer.apply_gradients(zip(grads, variables))
            return loss

        @tf.function(input_signature=spec)
        def nll_sum(y, c):
            return -tf.reduce_sum(flow.log_prob(y, c))

        self._train_step, self._nll_sum = train_step, nll_sum

    def reset(self, ckpt_dir: str | Path, tracker=None,
              epoch_callback: Callable[[int, dict], None] | None = None) -> "FlowTrainer":
        """The state of a fresh trainer of the same flow configuration: initial weights,
        zeroed optimizer slots and step, the initial learning rate, no best epoch; the
        checkpoints go to (and resume from) ``ckpt_dir``."""
        self.tracker, self.epoch_callback = tracker, epoch_callback
        for v, value in zip(self.flow.variables, self._initial):
            v.assign(value)
        for v in self.optimizer.variables:
            v.assign(tf.zeros_like(v))
        self.optimizer.learning_rate.assign(self.s.learning_rate)
        self.state.epoch.assign(0)
        self.state.best_val.assign(np.inf)
        for name in ("best_epoch", "bad_epochs", "plateau_epochs"):
            getattr(self.state, name).assign(0)
        for b, v in zip(self.state.best, self.variables):
            b.assign(v)
        self.checkpoint.save_counter.assign(0)
        self.manager = tf.train.CheckpointManager(self.checkpoint, str(ckpt_dir),
                                                  max_to_keep=CHECKPOINTS_KEPT)
        return self

    # ------------------------------------------------------------------ helpers
    @property
    def learning_rate(self) -> float:
        return float(self.optimizer.learning_rate.numpy())

    def mean_nll(self, y, c) -> float:
        total = 0.0
        for start in range(0, len(y), EVAL_BATCH):
            total += float(self._nll_sum(y[start:start + EVAL_BATCH], c[start:start + EVAL_BATCH]))
        return total / max(len(y), 1)

    def restore(self) -> int:
        latest = self.manager.latest_checkpoint
        if latest is None:
            return 0
        self.checkpoint.restore(latest).assert_existing_objects_matched()
        epoch = int(self.state.epoch.numpy())
        log.info("flow resumed from %s: epoch %d, best validation NLL %.4f (epoch %d)", latest,
                 epoch, float(self.state.best_val.numpy()), int(self.state.best_epoch.numpy()))
        return epoch

    def _batches(self, n: int, epoch: int):
        order = np.random.default_rng([self.s.seed, epoch]).permutation(n)
        for start in range(0, n, self.s.batch_size):
            yield order[start:start + self.s.batch_size]

    # ------------------------------------------------------------------ fit
    def fit(self, y_train, c_train, y_val, c_val) -> dict:
        """Train to EPOCHS or early stopping; the best epoch's weights end in the flow.
        Returns a summary (epochs run, best epoch, losses per epoch of this call)."""
        s = self.s
        y_train, c_train = np.asarray(y_train, np.float32), np.asarray(c_train, np.float32)
        y_val, c_val = np.asarray(y_val, np.float32), np.asarray(c_val, np.float32)
        start = self.restore()
        history = []
        reason = "completed" if start >= s.epochs else None
        if reason is None and int(self.state.bad_epochs.numpy()) >= s.patience:
            reason = "early_stopping"
        epoch = start
        while reason is None:
            epoch += 1
            c_epoch = c_train
            if s.condition_noise > 0:  # noise regularisation, a pure function of (seed, epoch)
                noise = np.random.default_rng([s.seed, epoch, 1]).normal(size=c_train.shape)
                c_epoch = (c_train + s.condition_noise * noise).astype(np.float32)
            losses = [float(self._train_step(y_train[b], c_epoch[b]))
                      for b in self._batches(len(y_train), epoch)]
            train_loss = float(np.mean(losses))
            val_loss = self.mean_nll(y_val, c_val) if len(y_val) else train_loss
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                raise FloatingPointError(
                    f"flow loss is not finite at epoch {epoch} (train {train_loss}, validation "
                    f"{val_loss}); lower infer.LEARNING_RATE or infer.CLAMP. The last good "
                    f"checkpoint is kept: {self.manager.latest_checkpoint}")
            self.state.epoch.assign(epoch)
            if val_loss < float(self.state.best_val.numpy()):
                self.state.best_val.assign(val_loss)
                self.state.best_epoch.assign(epoch)
                self.state.bad_epochs.assign(0)
                self.state.plateau_epochs.assign(0)
                for b, v in zip(self.state.best, self.variables):
                    b.assign(v)
            else:
                self.state.bad_epochs.assign_add(1)
                self.state.plateau_epochs.assign_add(1)
                if int(self.state.plateau_epochs.numpy()) >= s.lr_decay_patience:
                    self.optimizer.learning_rate.assign(self.learning_rate * s.lr_decay_factor)
                    self.state.plateau_epochs.assign(0)
                    log.info("epoch %d: learning rate decayed to %.3g", epoch, self.learning_rate)
            logs = {"flow/train_nll": train_loss, "flow/val_nll": val_loss,
                    "flow/learning_rate": self.learning_rate}
            history.append({"epoch": epoch, **logs})
            if self.tracker is not None:
                self.tracker.log_metrics(logs, step=epoch)
            if int(self.state.bad_epochs.numpy()) >= s.patience:
                reason = "early_stopping"
            elif epoch >= s.epochs:
                reason = "completed"
            if reason or epoch % s.checkpoint_every == 0:
                self.manager.save(checkpoint_number=epoch)
            if epoch % 10 == 0 or reason:
                log.info("flow epoch %d: train NLL %.4f, validation NLL %.4f (best %.4f at %d)",
                         epoch, train_loss, val_loss, float(self.state.best_val.numpy()),
                         int(self.state.best_epoch.numpy()))
            if self.epoch_callback is not None:
                self.epoch_callback(epoch, logs)
        for b, v in zip(self.state.best, self.variables):
            v.assign(b)
        return {"epochs": int(self.state.epoch.numpy()), "resumed_from_epoch": start,
                "best_epoch": int(self.state.best_epoch.numpy()),
                "best_val_nll": float(self.state.best_val.numpy()), "stop_reason": reason,
                "history": history}


# --------------------------------------------------------------------------- fits of the stage
class FittedPosterior:
    """A trained flow with its optional ridge mean: samples in the flow's target space.
    The flow object is shared by every fit of its configuration (:func:`shared_trainer`),
    so the fitted weights are kept here and put back before sampling."""

    def __init__(self, flow, mean_model, fit: dict):
        self.flow, self.mean_model, self.fit = flow, mean_model, fit
        self.weights = [v.numpy() for v in flow.variables]

    def sample(self, condition, n: int, seed: int, first_chunk: int = 0) -> np.ndarray:
        for v, value in zip(self.flow.variables, self.weights):
            v.assign(value)
        out = np.asarray(self.flow.sample(condition, n, seed=seed, first_chunk=first_chunk),
                         np.float64)
        if self.mean_model is not None:
            out = self.mean_model.restore(out, condition)
        return out


#: one trainer (flow, optimizer, traced functions) per flow configuration in this process
_TRAINERS: dict = {}


def shared_trainer(inf, target_dim: int, condition_dim: int, ckpt_dir: Path, tracker=None,
                   epoch_callback=None):
    """The process's trainer of this flow configuration, reset for a new fit into
    ``ckpt_dir``: the stage flow and every fold flow (here and in each worker process) reuse
    one flow object and its traced step, as fresh ones would give the same flow."""
    settings = FitSettings.from_params(inf)
    key = (target_dim, condition_dim, inf.num_coupling_layers, tuple(inf.hidden_units),
           inf.clamp, tuple(inf.condition_embedding), settings)
    trainer = _TRAINERS.get(key)
    if trainer is None:
        flow = ConditionalFlow(target_dim, condition_dim, inf.num_coupling_layers,
                               inf.hidden_units, inf.clamp, inf.condition_embedding, seed=inf.seed)
        trainer = _TRAINERS[key] = FlowTrainer(flow, settings, ckpt_dir)
    return trainer.reset(ckpt_dir, tracker, epoch_callback)


def fit_posterior(inf, condition, targets, train, val, ckpt_dir: Path, tracker=None,
                  epoch_callback=None) -> FittedPosterior:
    """Train (or resume) the flow of ``inf`` on the ``train`` rows, early stopping on ``val``."""
    from scripts.posterior.linear_mean import LinearMean

    mean_model = LinearMean().fit(condition[train], targets[train]) if inf.linear_mean else None
    flow_targets = targets if mean_model is None else mean_model.residual(targets, condition)
    trainer = shared_trainer(inf, targets.shape[1], condition.shape[1], ckpt_dir, tracker,
                             epoch_callback)
    fit = trainer.fit(flow_targets[train], condition[train], flow_targets[val], condition[val])
    return FittedPosterior(trainer.flow, mean_model, fit)


def train_fold(inf, condition, targets, train, val, ckpt_dir: Path) -> int:
    """One fold flow, trained to its end in a worker process; returns its best epoch. The
    worker leaves any GPU to the main process: TensorFlow would otherwise reserve the GPU's
    memory once per worker, and these small flows train as fast on the CPU."""
    logging.basicConfig(level=logging.WARNING)
    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # a reused worker whose runtime is already set up (without GPU)
        pass
    return fit_posterior(inf, condition, targets, train, val, ckpt_dir).fit["best_epoch"]
