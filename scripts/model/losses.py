"""NT-Xent, the contrastive objective of SimCLR (Chen et al. 2020, arXiv:2002.05709).

Convention (DESIGN §5): the loss is the paper's mean over all 2N anchors,

    L = 1/(2N) Σ_k [ℓ(2k-1, 2k) + ℓ(2k, 2k-1)],
    ℓ(i, j) = -log( exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ) ),

with s the cosine similarity of the projections and τ the temperature.
google-research/simclr's TF2 ``add_contrastive_loss`` returns ``mean(loss_a + loss_b)``,
which is twice this value; divide theirs by 2 to compare.

Several replicas (``tf.distribute``): every replica embeds its local slice of the
global batch, gathers the projections of all replicas with
``ReplicaContext.all_gather`` (whose gradient all-reduces the upstream gradient, so
each replica's projections also receive the gradient they cause as negatives on
other replicas), and scores its *local* anchors against the *global* set of
candidates. The positive of local anchor i therefore sits at row ``offset + i`` of
the gathered matrix, where ``offset`` is the number of examples held by the replicas
before this one. The value returned on each replica is the mean over its local
anchors; with equal local batches the global mean (sum over replicas divided by the
number of replicas) equals the single-device loss on the same global batch, and
scaling each replica's loss by ``local / global`` batch size
(:func:`scripts.model.distribute.replica_loss_scale`) makes the summed gradients equal
the single-device gradients.
"""

from __future__ import annotations

import logging

import tensorflow as tf

logger = logging.getLogger(__name__)

#: Subtracted from the self-similarity logits. Large enough that exp() underflows to
#: exactly 0 in float32 for any cosine similarity / temperature, small enough to keep
#: every logit finite (``-inf`` would give NaN gradients through 0 * inf).
LARGE_NUM = 1e9


def gather_context(replica_context):
    """The replica context to gather over, or None for a single-device computation."""
    ctx = tf.distribute.get_replica_context() if replica_context is None else replica_context
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        # None: cross-replica context (e.g. called under strategy.scope() outside
        # strategy.run); one replica: nothing to gather.
        return None
    return ctx


def gather_with_offset(z1, z2, ctx):
    """All-gather both views over replicas; return them and this replica's row offset."""
    if ctx is None:
        return z1, z2, tf.constant(0, tf.int32)
    z1_all = ctx.all_gather(z1, axis=0)
    z2_all = ctx.all_gather(z2, axis=0)
    # Local batch sizes of every replica, in replica order: the offset is the number
    # of rows held by replicas before this one (correct also for unequal batches).
    local_size = tf.reshape(tf.shape(z1)[0], [1])
    sizes = ctx.all_gather(local_size, axis=0)
    replica_id = tf.cast(ctx.replica_id_in_sync_group, tf.int32)
    offset = tf.reduce_sum(sizes[:replica_id])
    return z1_all, z2_all, offset


def nt_xent_loss(z1, z2, temperature, *, return_accuracy=False, replica_context=None):
    """Normalised-temperature cross-entropy (NT-Xent) of two views of one batch.

    Args:
        z1, z2: projections of the two views, shape (n, d), row i of ``z1`` and row i
            of ``z2`` come from the same image (positive pair). Any float dtype
            (float16/bfloat16 under mixed precision); computed in float32. They are
            L2-normalised here, so similarities are cosines.
        temperature: τ > 0 (dimensionless), e.g. 0.1–0.5.
        return_accuracy: also return the contrast top-1 accuracy: the fraction of
            local anchors whose most similar *other* view in the (global) batch is
            their positive.
        replica_context: a ``tf.distribute.ReplicaContext`` to gather negatives over;
            default: the current one (``tf.distribute.get_replica_context()``). With
            one replica, or in a cross-replica context, nothing is gathered.

    Returns:
        The loss, a float32 scalar: mean over the 2n local anchors, each contrasted
        with every other view of the global batch (see the module docstring for the
        multi-replica convention). With ``return_accuracy``, ``(loss, accuracy)``.
    """
    if isinstance(temperature, (int, float)) and not temperature > 0:
        raise ValueError(f"nt_xent_loss: temperature must be > 0, got {temperature!r}")
    z1 = tf.cast(tf.convert_to_tensor(z1), tf.float32)
    z2 = tf.cast(tf.convert_to_tensor(z2), tf.float32)
    if z1.shape.rank != 2 or z2.shape.rank != 2:
        raise ValueError(
            f"nt_xent_loss: z1 and z2 must be 2-D (batch, dim); got shapes {z1.shape} and {z2.shape}"
        )
    if not z1.shape.is_compatible_with(z2.shape):
        raise ValueError(
            f"nt_xent_loss: the two views must have the same shape; got {z1.shape} and {z2.shape}"
        )
    inv_t = 1.0 / tf.cast(temperature, tf.float32)

    z1 = tf.math.l2_normalize(z1, axis=-1)
    z2 = tf.math.l2_normalize(z2, axis=-1)
    ctx = gather_context(replica_context)
    z1_all, z2_all, offset = gather_with_offset(z1, z2, ctx)

    n_local = tf.shape(z1)[0]
    n_global = tf.shape(z1_all)[0]
    labels = offset + tf.range(n_local)  # positive's column among the gathered rows
    self_mask = tf.one_hot(labels, n_global, dtype=tf.float32)

    # Anchors from view 1: candidates are all of view 2 (positive at `labels`) and
    # all of view 1 except the anchor itself; symmetrically for view 2.
    logits_12 = tf.matmul(z1, z2_all, transpose_b=True) * inv_t
    logits_11 = tf.matmul(z1, z1_all, transpose_b=True) * inv_t - self_mask * LARGE_NUM
    logits_21 = tf.matmul(z2, z1_all, transpose_b=True) * inv_t
    logits_22 = tf.matmul(z2, z2_all, transpose_b=True) * inv_t - self_mask * LARGE_NUM

    logits_a = tf.concat([logits_12, logits_11], axis=1)  # (n, 2 n_global)
    logits_b = tf.concat([logits_21, logits_22], axis=1)
    loss_a = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits_a)
    loss_b = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits_b)
    loss = tf.reduce_mean(tf.concat([loss_a, loss_b], axis=0))
    if not return_accuracy:
        return loss

    pred_a = tf.argmax(logits_a, axis=1, output_type=tf.int32)
    pred_b = tf.argmax(logits_b, axis=1, output_type=tf.int32)
    hits = tf.concat([tf.equal(pred_a, labels), tf.equal(pred_b, labels)], axis=0)
    accuracy = tf.reduce_mean(tf.cast(hits, tf.float32))
    return loss, tf.stop_gradient(accuracy)
