"""Checkpoint round trip and the early-stopping rule, without a network or input data."""
from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from scripts.model import checkpointing, validation
from scripts.model.train_errors import TrainInputError


def _pieces():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    return model, optimizer, checkpointing.TrainingState()


def _one_update(model, optimizer):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(tf.ones((4, 3))) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))


def test_checkpoint_round_trip_restores_weights_step_and_counters(tmp_path):
    model, optimizer, state = _pieces()
    manager = checkpointing.checkpoint_manager(
        checkpointing.make_checkpoint(model, optimizer, state), tmp_path, None, chief=True)
    assert checkpointing.restore_latest(manager, state, optimizer, False, "simclr") == 0
    _one_update(model, optimizer)
    state.epoch.assign(1)
    state.best_val_loss.assign(2.5)
    state.bad_epochs.assign(1)
    path = checkpointing.save(manager, state, 1)
    assert path.endswith("ckpt-1") and (tmp_path / checkpointing.CHECKPOINT_DIR).is_dir()

    model2, optimizer2, state2 = _pieces()
    manager2 = checkpointing.checkpoint_manager(
        checkpointing.make_checkpoint(model2, optimizer2, state2), tmp_path, None, chief=True)
    assert checkpointing.restore_latest(manager2, state2, optimizer2, False, "simclr") == 1
    for a, b in zip(model.get_weights(), model2.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert int(optimizer2.iterations.numpy()) == 1
    assert (int(state2.epoch.numpy()), float(state2.best_val_loss.numpy()),
            int(state2.bad_epochs.numpy())) == (1, 2.5, 1)


def test_restore_refuses_a_checkpoint_of_the_other_method(tmp_path):
    model, optimizer, state = _pieces()
    manager = checkpointing.checkpoint_manager(
        checkpointing.make_checkpoint(model, optimizer, state), tmp_path, None, chief=True)
    _one_update(model, optimizer)
    checkpointing.save(manager, state, 1)
    with pytest.raises(TrainInputError, match="written with train.METHOD = simclr"):
        checkpointing.restore_latest(manager, state, optimizer, True, "nnclr")


def test_restore_refuses_iterations_that_do_not_match_the_step(tmp_path):
    model, optimizer, state = _pieces()
    manager = checkpointing.checkpoint_manager(
        checkpointing.make_checkpoint(model, optimizer, state), tmp_path, None, chief=True)
    checkpointing.save(manager, state, 3)  # no update was made: iterations 0
    with pytest.raises(RuntimeError, match="do not match step 3"):
        checkpointing.restore_latest(manager, state, optimizer, False, "simclr")


def test_early_stopping_after_patience_epochs_without_improvement():
    """Losses 3.0, 2.5, 2.6, 2.7 with patience 2: stop after the fourth, best at epoch 2;
    an improvement resets the counter."""
    state = checkpointing.TrainingState()
    stops = [validation.record_validation(state, epoch, loss, acc, patience=2)
             for epoch, (loss, acc) in enumerate([(3.0, 0.1), (2.5, 0.2), (2.6, 0.3), (2.7, 0.4)], 1)]
    assert stops == [False, False, False, True]
    assert (float(state.best_val_loss.numpy()), float(state.best_val_accuracy.numpy()),
            int(state.best_epoch.numpy())) == (2.5, 0.2, 2)
    assert (float(state.last_val_loss.numpy()), float(state.last_val_accuracy.numpy())) == (2.7, 0.4)
    assert validation.record_validation(state, 5, 2.4, 0.5, patience=2) is False
    assert int(state.bad_epochs.numpy()) == 0


def test_equal_loss_is_no_improvement():
    state = checkpointing.TrainingState()
    assert validation.record_validation(state, 1, 1.0, 0.5, patience=1) is False
    assert validation.record_validation(state, 2, 1.0, 0.6, patience=1) is True
    assert int(state.best_epoch.numpy()) == 1
