"""The two augmented views of every training batch, a pure function of ``(seed, step)``.

Resuming at step ``k`` must redraw exactly the augmentations an uninterrupted run drew, so
each batch's views come from stateless ops seeded by :func:`view_seeds` ``(seed, k)``. They
are made either in the ``tf.data`` map (``augment_on="input"``, CPU worker threads,
overlapping the accelerator's previous step) or inside the step on each replica
(``augment_on="device"``, :func:`replica_views_fn`).
"""
from __future__ import annotations

import tensorflow as tf

from scripts.model.augment import AugmentConfig, augment_batch
from scripts.model.input_pipeline import HDF5Images, PairSampler, pair_dataset
from scripts.model.normalise import Normalisation

#: Salt of the validation augmentation seeds: a stream disjoint from the training steps.
VALIDATION_SALT = 0x5A17_DA7E
AUGMENT_ON = ("input", "device")


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


def replica_views_fn(views_fn, seed: int, augment_on: str):
    """``replica_views(batch, salt) → (view_a, view_b)`` inside the step.

    ``augment_on="input"``: the batch already holds the views. ``"device"``: the batch is
    ``(steps, raw_a, raw_b)`` and each replica augments its slice with the step's seeds
    folded with its replica id. ``augment_on`` is one of :data:`AUGMENT_ON` (the
    :class:`~scripts.model.trainer.Trainer` checks it).
    """
    def replica_views(batch, salt):
        if augment_on == "input":
            return batch
        step, a, b = batch
        seeds = view_seeds(seed, step[0], salt)
        ctx = tf.distribute.get_replica_context()
        if ctx is not None and ctx.num_replicas_in_sync > 1:
            rid = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
            seeds = tf.stack([tf.random.experimental.stateless_fold_in(s, rid) for s in tf.unstack(seeds)])
        return views_fn(a, b, seeds)
    return replica_views


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
