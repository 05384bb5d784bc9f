"""Cross-replica training support: strategy choice, test devices, loss scaling, sync BN.

- :func:`make_strategy` picks a ``tf.distribute`` strategy (one device, several local
  devices, or several workers described by the ``TF_CONFIG`` environment variable).
- :func:`configure_logical_cpus` splits the CPU into N logical devices so that
  multi-replica code can be exercised on a laptop or in CI.
- :func:`replica_loss_scale` is the factor each replica multiplies its (locally
  averaged) loss by so that the gradients summed over replicas — what Keras
  optimizers do under a strategy — equal the single-device gradient of the mean loss
  over the global batch.
- :func:`batch_norm` builds the batch-normalisation layer, synchronised across
  replicas or not (SimCLR uses global BN so that the statistics, like the negatives,
  span the global batch).
"""

from __future__ import annotations

import json
import logging
import os

import keras
import tensorflow as tf

logger = logging.getLogger(__name__)

STRATEGY_KINDS = ("auto", "default", "mirrored", "multi_worker")
COMMUNICATIONS = {
    "auto": tf.distribute.experimental.CommunicationImplementation.AUTO,
    "ring": tf.distribute.experimental.CommunicationImplementation.RING,
    "nccl": tf.distribute.experimental.CommunicationImplementation.NCCL,
}


def _tf_config_workers() -> int:
    """Number of chief + worker tasks in ``TF_CONFIG`` (0 when unset)."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw.strip():
        return 0
    try:
        cluster = json.loads(raw).get("cluster", {})
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(
            "TF_CONFIG must be a JSON object like "
            '{"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": 0}}; '
            f"could not parse it: {err}"
        ) from err
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def make_strategy(kind: str = "auto", devices=None, communication: str = "auto"):
    """Return a ``tf.distribute.Strategy``.

    Args:
        kind: ``"default"`` (the no-op default strategy, one device), ``"mirrored"``
            (synchronous data parallelism over local ``devices``; default all GPUs, or
            the CPU), ``"multi_worker"`` (``MultiWorkerMirroredStrategy``: one process
            per worker, cluster and task read from the ``TF_CONFIG`` environment
            variable; must be created at program start, before other TF ops), or
            ``"auto"``: multi_worker when ``TF_CONFIG`` lists more than one task,
            mirrored when more than one GPU is visible, default otherwise.
        devices: device names for ``"mirrored"`` (e.g. ``["/cpu:0", "/cpu:1"]`` from
            :func:`configure_logical_cpus`).
        communication: collective implementation for ``"multi_worker"``:
            ``"auto"``, ``"ring"`` (gRPC, works on CPU) or ``"nccl"`` (GPUs).

    Create one multi-device strategy per process and reuse it: two Mirrored
    strategies over the same devices number their collectives alike and clash
    ("Collective instance … expected type … but got type …"). Build models and the
    optimizer (``optimizer.build(model.trainable_variables)``) under
    ``strategy.scope()`` before the first distributed step.
    """
    if kind not in STRATEGY_KINDS:
        raise ValueError(f"make_strategy: kind must be one of {STRATEGY_KINDS}, got {kind!r}")
    if communication not in COMMUNICATIONS:
        raise ValueError(
            f"make_strategy: communication must be one of {tuple(COMMUNICATIONS)}, got {communication!r}"
        )
    if kind == "auto":
        if _tf_config_workers() > 1:
            kind = "multi_worker"
        elif devices is not None and len(devices) > 1:
            kind = "mirrored"
        elif len(tf.config.list_physical_devices("GPU")) > 1:
            kind = "mirrored"
        else:
            kind = "default"
    if kind == "default":
        strategy = tf.distribute.get_strategy()
    elif kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy(devices=devices)
    else:
        if devices is not None:
            raise ValueError("make_strategy: devices is not used by 'multi_worker' (TF_CONFIG is)")
        options = tf.distribute.experimental.CommunicationOptions(
            implementation=COMMUNICATIONS[communication]
        )
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    logger.info("Distribution strategy %s with %d replica(s) in sync",
                type(strategy).__name__, strategy.num_replicas_in_sync)
    return strategy


def configure_logical_cpus(n: int) -> list[str]:
    """Split the first physical CPU into ``n`` logical devices; return their names.

    Must run before TensorFlow initialises its runtime (before the first op or
    tensor). If the runtime is already initialised with at least ``n`` logical CPUs,
    their names are returned; otherwise a RuntimeError says to call this earlier
    (e.g. in a fresh process).
    """
    if n < 1:
        raise ValueError(f"configure_logical_cpus: n must be >= 1, got {n}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(n)]
        )
    except RuntimeError as err:
        existing = [d.name for d in tf.config.list_logical_devices("CPU")]
        if len(existing) >= n:
            return existing[:n]
        raise RuntimeError(
            f"configure_logical_cpus({n}): TensorFlow is already initialised with "
            f"{len(existing)} logical CPU(s); call this before any TF op, in a fresh process"
        ) from err
    return [d.name for d in tf.config.list_logical_devices("CPU")][:n]


def replica_loss_scale(local_batch_size, replica_context=None):
    """Factor for a replica's mean loss: local batch size / global batch size.

    Each replica computes the mean of its loss over its own examples (for NT-Xent,
    :func:`scripts.model.losses.nt_xent_loss`, over its local anchors with global
    negatives). The global objective is the mean over all examples,
    L = Σ_r (n_r / N) L_r, so multiplying L_r by n_r / N before ``tape.gradient`` and
    summing the gradients over replicas (as ``optimizer.apply_gradients`` does under
    a strategy) gives exactly the single-device gradient on the global batch. With
    equal local batches this is 1 / num_replicas. Do not combine it with Keras's own
    scaling (``model.fit``/``compute_loss`` already divide by the number of replicas).

    Args:
        local_batch_size: this replica's number of examples (int or scalar tensor).
        replica_context: default the current one; outside ``strategy.run`` (or with
            one replica) the factor is 1.

    Returns:
        float32 scalar tensor.
    """
    ctx = tf.distribute.get_replica_context() if replica_context is None else replica_context
    local = tf.cast(local_batch_size, tf.float32)
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return tf.ones_like(local)
    total = ctx.all_reduce(tf.distribute.ReduceOp.SUM, local)
    return local / total


def batch_norm(synchronized: bool = False, **kwargs) -> keras.layers.BatchNormalization:
    """A ``keras.layers.BatchNormalization``; ``synchronized=True`` computes the batch
    statistics over all replicas (global BN), which is a no-op with one replica.

    ``kwargs`` go to the layer (``momentum``, ``epsilon``, ``center``, ``scale``,
    ``name``, …). Without a name Keras calls it ``batch_normalization[_k]``, which the
    default LARS exclusion patterns recognise.
    """
    return keras.layers.BatchNormalization(synchronized=synchronized, **kwargs)
