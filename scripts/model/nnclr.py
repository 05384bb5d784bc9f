"""NNCLR (Dwibedi et al. 2021, "With a Little Help from My Friends", arXiv:2104.14548):
the positive of a view is its nearest neighbour in a support queue of past embeddings.

Objective (``train.METHOD: nnclr``). With u the L2-normalised projections of the two views
of a batch of N images and NN(u) the most cosine-similar entry of the support queue Q,

    ℓ(i; a→b) = −log( exp(NN(u_i^a)·u_i^b / τ) / Σ_k exp(NN(u_i^a)·u_k^b / τ) ),
    L = 1/(2N) Σ_i [ℓ(i; 1→2) + ℓ(i; 2→1)],

the paper's InfoNCE with nearest-neighbour anchors, symmetrised by swapping the views. The
candidates are the *other* view of every image in the (global) batch, so chance accuracy is
1/N. The neighbour is a queue entry: no gradient flows through it (nor into the queue);
the gradient reaches the network through the candidates u^b.

Support queue (:class:`SupportQueue`): a FIFO of the last ``size`` normalised view-1
projections. After each step the whole global batch's view-1 projections are written over
the oldest entries (slots ``count … count+N−1`` modulo ``size``), so ``size`` must be at
least the global batch. Semantics while it fills:

- empty (the first step of a run): the anchor is the view itself, NN(u) = u (plain
  cross-view InfoNCE, i.e. SimCLR's positive without same-view negatives; gradients flow
  through that anchor as in SimCLR);
- partly filled: only the filled slots are candidates for the nearest neighbour;
- full: every slot is.

Several replicas: each replica gathers both views of the global batch
(:func:`scripts.model.losses.gather_with_offset`), looks up the neighbours of its own
anchors in its copy of the queue and scores them against the global candidates; the queue
update writes the *gathered* view-1 projections on every replica, so all copies stay
identical and hold what a single device with the global batch would hold. Scaling each
replica's loss by local / global batch
(:func:`scripts.model.distribute.replica_loss_scale`) gives the single-device gradients.

The queue and its counter are ``tf.Variable`` s tracked by the training checkpoint, so a
resumed run looks up the same neighbours as an uninterrupted one.
"""
from __future__ import annotations

import logging
from typing import NamedTuple

import tensorflow as tf

from scripts.model.losses import LARGE_NUM, gather_context, gather_with_offset

logger = logging.getLogger(__name__)


class SupportQueue(tf.Module):
    """FIFO of past L2-normalised projections, ``(size, dim)`` float32, plus ``count``, the
    number of embeddings ever enqueued (the write position is ``count mod size``).

    Create it under the training strategy's scope so that every replica holds a copy.
    """

    def __init__(self, size: int, dim: int, name: str = "nnclr_queue"):
        super().__init__(name=name)
        if size < 1 or dim < 1:
            raise ValueError(f"SupportQueue: size and dim must be >= 1, got size={size}, dim={dim} "
                             "(train.NNCLR_QUEUE_SIZE, train.OUTPUT_DIM)")
        self.size = int(size)
        self.dim = int(dim)
        self.embeddings = tf.Variable(tf.zeros((self.size, self.dim), tf.float32), trainable=False,
                                      name="embeddings")
        self.count = tf.Variable(0, dtype=tf.int64, trainable=False, name="count")
        logger.info("NNCLR support queue: %d embeddings of dimension %d (%.1f MiB per replica)",
                    self.size, self.dim, self.size * self.dim * 4 / 2 ** 20)

    def filled(self) -> tf.Tensor:
        """Number of slots holding an embedding, int32 scalar."""
        return tf.cast(tf.minimum(self.count, self.size), tf.int32)

    def nearest(self, u):
        """Nearest neighbours of the normalised rows ``u`` (n, dim) among the filled slots.

        Returns ``(neighbours, indices)``: ``(n, dim)`` float32 without gradient and the slots
        ``(n,)`` int32. With an empty queue the neighbour is ``u`` itself and the slot -1.
        """
        bank = self.embeddings.value()
        filled = self.filled()
        similarity = tf.matmul(u, bank, transpose_b=True)
        empty = tf.cast(tf.range(self.size) >= filled, tf.float32)
        indices = tf.argmax(similarity - empty * LARGE_NUM, axis=1, output_type=tf.int32)
        neighbours = tf.stop_gradient(tf.gather(bank, indices))
        has_any = filled > 0
        return (tf.where(has_any, neighbours, u),
                tf.where(has_any, indices, tf.fill(tf.shape(indices), -1)))

    def push(self, support) -> None:
        """Enqueue ``support`` (N, dim), overwriting the oldest entries; N ≤ ``size``.

        In a replica context every replica must pass the same tensor (the gathered global
        batch): each device writes it into its own copy, so the copies stay identical.
        """
        support = tf.stop_gradient(tf.cast(support, tf.float32))
        n = support.shape[0]
        if n is not None and n > self.size:
            raise ValueError(f"SupportQueue.push: {n} embeddings do not fit a queue of {self.size}; "
                             "train.NNCLR_QUEUE_SIZE must be at least train.BATCH_SIZE")
        count = tf.shape(support, out_type=tf.int64)[0]
        slots = tf.math.floormod(self.count + tf.range(count), self.size)[:, None]

        def write(strategy, slots, support, count):
            strategy.extended.update(self.embeddings, lambda v, s, x: v.scatter_nd_update(s, x),
                                     args=(slots, support))
            strategy.extended.update(self.count, lambda v, k: v.assign_add(k), args=(count,))

        ctx = tf.distribute.get_replica_context()
        if ctx is None:  # cross-replica context: the values are the same for every copy
            write(tf.distribute.get_strategy(), slots, support, count)
        else:
            ctx.merge_call(write, args=(slots, support, count))


class NNCLRStep(NamedTuple):
    """What :func:`nnclr_loss` returns for this replica's anchors."""

    loss: tf.Tensor       #: float32 scalar, mean over the 2n local anchors
    accuracy: tf.Tensor   #: fraction of anchors whose most similar candidate is the positive
    indices: tf.Tensor    #: (2n,) int32 queue slots of NN(u^1), then NN(u^2); -1: empty queue
    support: tf.Tensor    #: (N, dim) gathered normalised view-1 projections, to enqueue


def nnclr_loss(z1, z2, queue: SupportQueue, temperature, *, replica_context=None) -> NNCLRStep:
    """NNCLR loss of two views of one batch (see the module docstring); reads, does not
    update, ``queue`` (call ``queue.push(step.support)`` after the step).

    Args:
        z1, z2: projections ``(n, d)`` of the two views (row i of each from image i); any
            float dtype, computed in float32 and L2-normalised here.
        queue: the support queue (its ``dim`` must be d).
        temperature: τ > 0.
        replica_context: as in :func:`scripts.model.losses.nt_xent_loss`.
    """
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(f"nnclr_loss: temperature must be > 0, got {temperature!r}")
    z1 = tf.cast(tf.convert_to_tensor(z1), tf.float32)
    z2 = tf.cast(tf.convert_to_tensor(z2), tf.float32)
    if z1.shape.rank != 2 or not z1.shape.is_compatible_with(z2.shape):
        raise ValueError(f"nnclr_loss: z1 and z2 must be 2-D (batch, dim) of the same shape; got "
                         f"{z1.shape} and {z2.shape}")
    if z1.shape[1] is not None and z1.shape[1] != queue.dim:
        raise ValueError(f"nnclr_loss: projections have dimension {z1.shape[1]} but the support "
                         f"queue holds {queue.dim} (train.OUTPUT_DIM)")
    inv_t = 1.0 / tf.cast(temperature, tf.float32)

    u1 = tf.math.l2_normalize(z1, axis=-1)
    u2 = tf.math.l2_normalize(z2, axis=-1)
    u1_all, u2_all, offset = gather_with_offset(u1, u2, gather_context(replica_context))
    nn1, idx1 = queue.nearest(u1)
    nn2, idx2 = queue.nearest(u2)

    labels = offset + tf.range(tf.shape(u1)[0])
    logits_a = tf.matmul(nn1, u2_all, transpose_b=True) * inv_t  # anchors NN(u¹), candidates u²
    logits_b = tf.matmul(nn2, u1_all, transpose_b=True) * inv_t
    losses = tf.concat([
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits_a),
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits_b),
    ], axis=0)
    hits = tf.concat([tf.equal(tf.argmax(logits_a, axis=1, output_type=tf.int32), labels),
                      tf.equal(tf.argmax(logits_b, axis=1, output_type=tf.int32), labels)], axis=0)
    return NNCLRStep(loss=tf.reduce_mean(losses),
                     accuracy=tf.stop_gradient(tf.reduce_mean(tf.cast(hits, tf.float32))),
                     indices=tf.concat([idx1, idx2], axis=0),
                     support=tf.stop_gradient(u1_all))
