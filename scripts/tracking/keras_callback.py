"""Keras callback that sends training metrics to a :class:`~scripts.tracking.base.Tracker`.

Per step: ``train/<metric>`` at the global step (batches counted across epochs), every
``log_every_n_steps`` steps. Per epoch: ``epoch/<metric>`` (Keras names validation
metrics ``val_*``, giving ``epoch/val_loss``) and ``epoch/learning_rate`` at the epoch
index (0-based, as Keras' own TensorBoard callback does).
"""
from __future__ import annotations

import logging
from typing import Any

import keras

logger = logging.getLogger(__name__)


class KerasTrackingCallback(keras.callbacks.Callback):
    """``model.fit(..., callbacks=[KerasTrackingCallback(tracker)])``."""

    def __init__(self, tracker: Any, log_every_n_steps: int = 1,
                 step_prefix: str = "train", epoch_prefix: str = "epoch") -> None:
        super().__init__()
        if log_every_n_steps < 1:
            raise ValueError(f"log_every_n_steps must be ≥ 1, got {log_every_n_steps}")
        self.tracker = tracker
        self.log_every_n_steps = int(log_every_n_steps)
        self.step_prefix = step_prefix
        self.epoch_prefix = epoch_prefix
        self.global_step = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.global_step += 1
        if logs and self.global_step % self.log_every_n_steps == 0:
            self.tracker.log_metrics(
                {f"{self.step_prefix}/{k}": v for k, v in logs.items()}, step=self.global_step
            )

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = {f"{self.epoch_prefix}/{k}": v for k, v in (logs or {}).items()}
        lr = self._learning_rate()
        if lr is not None and f"{self.epoch_prefix}/learning_rate" not in metrics:
            metrics[f"{self.epoch_prefix}/learning_rate"] = lr
        if metrics:
            self.tracker.log_metrics(metrics, step=int(epoch))

    def _learning_rate(self) -> float | None:
        """The optimizer's current learning rate (schedules evaluated), if it has one."""
        optimizer = getattr(self.model, "optimizer", None)
        rate = getattr(optimizer, "learning_rate", None)
        if rate is None:
            return None
        try:
            return float(keras.ops.convert_to_numpy(rate))
        except (TypeError, ValueError) as exc:
            logger.debug("learning rate not readable: %s", exc)
            return None
