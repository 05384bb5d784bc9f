"""Validation and early stopping: one fixed validation pass per epoch and the rule that
stops a run after ``PATIENCE`` epochs without a better validation loss.

The validation pass uses the same batches and augmentation seeds every epoch (salt
:data:`scripts.model.views.VALIDATION_SALT`), so epochs compare. Its bookkeeping (best
loss, accuracy and epoch, the patience counter) lives in
:class:`scripts.model.checkpointing.TrainingState`, so a resumed run stops where an
uninterrupted one would.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from scripts.model.checkpointing import TrainingState
from scripts.model.input_pipeline import PairSampler

log = logging.getLogger(__name__)


def validation_sampler(val_table: pd.DataFrame, store_names, params, replicas: int) -> PairSampler | None:
    """The validation sampler, or None (with a warning) when the split ``VALIDATION_SPLIT``
    is empty or too small for a contrastive batch. Its batch is ``BATCH_SIZE``, or the
    split's size when smaller, rounded down to a multiple of ``replicas``."""
    if val_table.empty:
        log.warning("no rows in validation split %r: no validation loss, no early stopping",
                    params.validation_split)
        return None
    probe = PairSampler(val_table, store_names, 1, params.positives, params.seed)
    units = probe.steps_per_epoch
    batch = min(params.batch_size, units) // replicas * replicas
    if batch < 2:
        log.warning("validation split %r has %d unit(s): too few for a contrastive batch; "
                    "no validation", params.validation_split, units)
        return None
    if batch < params.batch_size:
        log.info("validation batch %d (the validation split has %d units); its chance "
                 "accuracy is 1/%d", batch, units, 2 * batch - 1)
    return PairSampler(val_table, store_names, batch, params.positives, params.seed)


def chance_accuracy(sampler: PairSampler | None) -> float | None:
    """Contrast accuracy of a random representation: ``1/(2N−1)`` for a batch of ``N``."""
    return None if sampler is None else 1.0 / (2 * sampler.batch_size - 1)


def mean_loss_and_accuracy(batches, val_step) -> tuple[float, float]:
    """Mean of ``val_step(batch) → (loss, accuracy)`` over ``batches``."""
    losses, accs = [], []
    for batch in batches:
        loss, acc = val_step(batch)
        losses.append(float(loss))
        accs.append(float(acc))
    return float(np.mean(losses)), float(np.mean(accs))


def record_validation(state: TrainingState, epoch: int, val_loss: float, val_accuracy: float,
                      patience: int) -> bool:
    """Record epoch ``epoch``'s validation numbers in ``state``; True when the run should stop:
    ``patience`` epochs in a row without a validation loss below the best so far."""
    state.last_val_loss.assign(val_loss)
    state.last_val_accuracy.assign(val_accuracy)
    if val_loss < float(state.best_val_loss.numpy()):
        state.best_val_loss.assign(val_loss)
        state.best_val_accuracy.assign(val_accuracy)
        state.best_epoch.assign(epoch)
        state.bad_epochs.assign(0)
    else:
        state.bad_epochs.assign_add(1)
    return patience_exhausted(state, patience)


def patience_exhausted(state: TrainingState, patience: int) -> bool:
    """Whether ``state`` has gone ``patience`` epochs without improvement."""
    return int(state.bad_epochs.numpy()) >= patience
