"""Runs contrastive steps of a tiny model under a tf.distribute strategy, for
tests/test_distribute.py. Each mode runs in a fresh process because logical devices
and MultiWorkerMirroredStrategy must be set up before TensorFlow initialises.

    python -m tests.distribute_worker mirrored OUT.npz
        2 logical CPUs: single-device vs 2-replica MirroredStrategy loss, gradients and
        LARS steps on the same global batch, and NNCLR steps (loss, neighbour slots, the
        support queue on every device) on a new global batch per step.
    python -m tests.distribute_worker multi_worker OUT.npz   (TF_CONFIG set by the caller)
        one worker of a MultiWorkerMirroredStrategy cluster: LARS steps on its shard, and
        NNCLR steps.

The functions are importable, so the test computes its single-device reference with
exactly the same model, data and step.
"""

from __future__ import annotations

import argparse
import logging
import os

import numpy as np

logger = logging.getLogger(__name__)

DIM_IN = 6
GLOBAL_BATCH = 8
TEMPERATURE = 0.2
STEPS = 4
#: NNCLR support queue: 1.5 global batches, so writes wrap around its end from step 2 on
NNCLR_QUEUE = 12


def global_batch(seed=0):
    """Two correlated views of a deterministic global batch, float32 (N, DIM_IN)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(GLOBAL_BATCH, DIM_IN))
    x1 = base + 0.3 * rng.normal(size=base.shape)
    x2 = base + 0.3 * rng.normal(size=base.shape)
    return x1.astype(np.float32), x2.astype(np.float32)


def build_model(strategy, synchronized=True, seed=1):
    """Dense → batch norm → ReLU → Dense projection, with weights drawn from ``seed``
    (identical in every process), created under ``strategy``."""
    import keras

    from scripts.model.distribute import batch_norm

    with strategy.scope():
        model = keras.Sequential(name="tiny", layers=[
            keras.Input((DIM_IN,)),
            keras.layers.Dense(16, name="dense"),
            batch_norm(synchronized=synchronized, name="batch_normalization"),
            keras.layers.ReLU(),
            keras.layers.Dense(8, name="projection"),
        ])
    rng = np.random.default_rng(seed)
    weights = [rng.normal(scale=0.5, size=w.shape).astype(np.float32) for w in model.get_weights()]
    for var, w in zip(model.weights, weights):
        if var.path.endswith(("moving_variance", "gamma")):  # positive variance; few dead ReLUs
            w[...] = np.abs(w) + 0.5
    model.set_weights(weights)
    return model


def make_optimizer(strategy, model):
    """LARS with a warm-up/cosine schedule, built under the strategy scope."""
    from scripts.model.lars import LARS
    from scripts.model.schedule import WarmupCosine

    with strategy.scope():
        opt = LARS(WarmupCosine(2.0, total_steps=STEPS + 2, warmup_steps=1),
                   weight_decay=1e-2, eeta=0.05)
        opt.build(model.trainable_variables)
    return opt


def distribute(strategy, x1, x2):
    """Give replica r of R rows [r·N/R, (r+1)·N/R) of the global batch."""
    import tensorflow as tf

    def shard(ctx):
        r, n = ctx.replica_id_in_sync_group, ctx.num_replicas_in_sync
        size = GLOBAL_BATCH // n
        return (tf.constant(x1[r * size:(r + 1) * size]), tf.constant(x2[r * size:(r + 1) * size]))

    return strategy.experimental_distribute_values_from_function(shard)


def loss_and_gradients(strategy, model, x1, x2):
    """Global loss (sum of scaled replica losses), each replica's local loss and
    the gradients summed over replicas."""
    import tensorflow as tf

    from scripts.model.distribute import replica_loss_scale
    from scripts.model.losses import nt_xent_loss

    def replica_fn(a, b):
        with tf.GradientTape() as tape:
            loss = nt_xent_loss(model(a, training=True), model(b, training=True), TEMPERATURE)
            scaled = loss * replica_loss_scale(tf.shape(a)[0])
        return loss, scaled, tape.gradient(scaled, model.trainable_variables)

    @tf.function
    def run(inputs):
        loss, scaled, grads = strategy.run(replica_fn, args=inputs)
        total = strategy.reduce(tf.distribute.ReduceOp.SUM, scaled, axis=None)
        summed = [strategy.reduce(tf.distribute.ReduceOp.SUM, g, axis=None) for g in grads]
        return total, loss, summed

    total, local, grads = run(distribute(strategy, x1, x2))
    local = [float(v) for v in strategy.experimental_local_results(local)]
    return float(total), local, [g.numpy() for g in grads]


def train(strategy, model, optimizer, x1, x2, steps=STEPS):
    """``steps`` LARS steps on the global batch; returns the global loss per step."""
    import tensorflow as tf

    from scripts.model.distribute import replica_loss_scale
    from scripts.model.losses import nt_xent_loss

    def replica_fn(a, b):
        with tf.GradientTape() as tape:
            loss = nt_xent_loss(model(a, training=True), model(b, training=True), TEMPERATURE)
            scaled = loss * replica_loss_scale(tf.shape(a)[0])
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return scaled

    @tf.function
    def step(inputs):
        return strategy.reduce(tf.distribute.ReduceOp.SUM,
                               strategy.run(replica_fn, args=inputs), axis=None)

    inputs = distribute(strategy, x1, x2)
    return [float(step(inputs)) for _ in range(steps)]


def nnclr_train(strategy, model, optimizer, steps=STEPS):
    """``steps`` LARS steps of NNCLR, step k on ``global_batch(seed=k)``.

    Returns the global loss per step, the neighbour slots of the global anchors per step
    (``(steps, 2N)``: view-1 rows then view-2 rows, as on one device), the support queue as
    held on each local device ``(devices, NNCLR_QUEUE, dim)`` and its count.
    """
    import tensorflow as tf

    from scripts.model.distribute import replica_loss_scale
    from scripts.model.nnclr import SupportQueue, nnclr_loss

    with strategy.scope():
        queue = SupportQueue(NNCLR_QUEUE, model.output_shape[-1])

    def replica_fn(a, b):
        with tf.GradientTape() as tape:
            out = nnclr_loss(model(a, training=True), model(b, training=True), queue, TEMPERATURE)
            scaled = out.loss * replica_loss_scale(tf.shape(a)[0])
        grads = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        queue.push(out.support)
        return scaled, out.indices

    @tf.function
    def step(inputs):
        scaled, indices = strategy.run(replica_fn, args=inputs)
        return strategy.reduce(tf.distribute.ReduceOp.SUM, scaled, axis=None), indices

    losses, slots = [], []
    for k in range(steps):
        loss, indices = step(distribute(strategy, *global_batch(seed=k)))
        losses.append(float(loss))
        # replica r returns (slots of its view-1 rows, of its view-2 rows): put them in the
        # global order (all view-1 rows, then all view-2 rows)
        halves = [np.split(v.numpy(), 2) for v in strategy.experimental_local_results(indices)]
        slots.append(np.concatenate([h[0] for h in halves] + [h[1] for h in halves]))
    copies = getattr(queue.embeddings, "values", (queue.embeddings,))
    return (np.array(losses), np.stack(slots), np.stack([c.numpy() for c in copies]),
            int(queue.count.numpy()))


def _trainable(model):
    return {v.path: v.numpy() for v in model.trainable_variables}


def run_mirrored(out):
    from scripts.model.distribute import configure_logical_cpus, make_strategy

    devices = configure_logical_cpus(2)
    x1, x2 = global_batch()
    results = {}
    # One MirroredStrategy per process: two instances over the same devices would
    # reuse the same collective group/instance keys and clash.
    single, mirrored = make_strategy("default"), make_strategy("mirrored", devices=devices)
    for tag, strategy, sync in (
        ("single", single, True),
        ("mirrored", mirrored, True),
        ("mirrored_unsync", mirrored, False),
    ):
        model = build_model(strategy, synchronized=sync)
        total, local, grads = loss_and_gradients(strategy, model, x1, x2)
        results[f"{tag}/replicas"] = np.array(strategy.num_replicas_in_sync)
        results[f"{tag}/loss"] = np.array(total)
        results[f"{tag}/local_losses"] = np.array(local)
        for v, g in zip(model.trainable_variables, grads):
            results[f"{tag}/grad/{v.path}"] = g
        if tag == "single":
            # projections of the global batch, for the NumPy reference of local losses
            results["single/z1"] = model(x1, training=True).numpy()
            results["single/z2"] = model(x2, training=True).numpy()
        if tag != "mirrored_unsync":
            model = build_model(strategy, synchronized=sync)
            optimizer = make_optimizer(strategy, model)
            results[f"{tag}/train_losses"] = np.array(train(strategy, model, optimizer, x1, x2))
            for path, w in _trainable(model).items():
                results[f"{tag}/weights/{path}"] = w
            model = build_model(strategy, synchronized=sync)
            optimizer = make_optimizer(strategy, model)
            losses, slots, queues, count = nnclr_train(strategy, model, optimizer)
            results.update({f"{tag}/nnclr/losses": losses, f"{tag}/nnclr/slots": slots,
                            f"{tag}/nnclr/queues": queues, f"{tag}/nnclr/count": np.array(count)})
            for path, w in _trainable(model).items():
                results[f"{tag}/nnclr/weights/{path}"] = w
    np.savez(out, **results)


def run_multi_worker(out):
    from scripts.model.distribute import make_strategy

    strategy = make_strategy("multi_worker", communication="ring")  # first TF call
    x1, x2 = global_batch()
    model = build_model(strategy)
    optimizer = make_optimizer(strategy, model)
    losses = train(strategy, model, optimizer, x1, x2)
    results = {"replicas": np.array(strategy.num_replicas_in_sync), "train_losses": np.array(losses)}
    for path, w in _trainable(model).items():
        results[f"weights/{path}"] = w
    model = build_model(strategy)
    losses, slots, queues, count = nnclr_train(strategy, model, make_optimizer(strategy, model))
    results.update({"nnclr/losses": losses, "nnclr/slots": slots, "nnclr/queues": queues,
                    "nnclr/count": np.array(count)})
    np.savez(out, **results)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=("mirrored", "multi_worker"))
    parser.add_argument("out", help="output .npz path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.mode == "mirrored":
        run_mirrored(args.out)
    else:
        run_multi_worker(args.out)
    logger.info("wrote %s", args.out)


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    main()
