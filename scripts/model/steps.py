"""The distributed train and validation steps: ``tf.function``s run on every replica of a
``tf.distribute`` strategy, reduced to the mean loss and contrast accuracy.

The loss is scaled by ``local / global`` batch (:func:`scripts.model.distribute.replica_loss_scale`)
so the summed replica gradients equal the single-device gradient; NT-Xent gathers its
negatives across replicas inside the step. With XLA (``jit_compile``) the network, loss,
gradients and optimizer update of a replica are one nested ``tf.function(jit_compile=True)``;
the views are made before it (``ImageProjectiveTransformV3`` has no XLA kernel).

NNCLR (``queue`` given): each view's nearest neighbour in the support queue is scored
against the other views, and the gathered view-1 projections are enqueued after the update.
Validation always uses NT-Xent (no queue read or written), so validation numbers of SimCLR
and NNCLR runs compare.
"""
from __future__ import annotations

import tensorflow as tf

from scripts.model import distribute
from scripts.model.losses import nt_xent_loss
from scripts.model.nnclr import nnclr_loss
from scripts.model.views import VALIDATION_SALT


def compiled(fn, jit_compile: bool):
    """``fn`` as a nested XLA-compiled ``tf.function`` when ``jit_compile``."""
    return tf.function(fn, jit_compile=True) if jit_compile else fn


def _reduced(strategy, replica_step):
    @tf.function
    def step(batch):
        loss, accuracy = strategy.run(replica_step, args=(batch,))
        mean = tf.distribute.ReduceOp.MEAN
        return (strategy.reduce(mean, loss, axis=None),
                strategy.reduce(mean, accuracy, axis=None))
    return step


def make_train_step(strategy, model, optimizer, temperature: float, replica_views,
                    jit_compile: bool, queue=None):
    """``train_step(batch) → (loss, accuracy)``: one optimizer update on the global batch.

    ``replica_views(batch, salt)`` makes the replica's two views
    (:func:`scripts.model.views.replica_views_fn`).
    """
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

    update = compiled(update, jit_compile)

    def replica_step(batch):
        a, b = replica_views(batch, 0)  # outside XLA: no kernel for the resampling
        return update(a, b)

    return _reduced(strategy, replica_step)


def make_val_step(strategy, model, temperature: float, replica_views, jit_compile: bool):
    """``val_step(batch) → (loss, accuracy)``: NT-Xent of the model in inference mode on the
    validation views (seed salt :data:`~scripts.model.views.VALIDATION_SALT`)."""
    def evaluate(a, b):
        n = tf.shape(a)[0]
        _, z = model(tf.concat([a, b], axis=0), training=False)
        return nt_xent_loss(z[:n], z[n:], temperature, return_accuracy=True)

    evaluate = compiled(evaluate, jit_compile)

    def replica_step(batch):
        return evaluate(*replica_views(batch, VALIDATION_SALT))

    return _reduced(strategy, replica_step)
