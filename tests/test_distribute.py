"""Cross-replica behaviour (scripts/model/distribute.py + losses + LARS).

Multi-replica runs happen in fresh processes (tests/distribute_worker.py): logical
CPU devices and MultiWorkerMirroredStrategy must be configured before TensorFlow
initialises, which the pytest process has usually done already.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from scripts.model import distribute
from tests import distribute_worker as worker
from tests import reference_numpy as ref

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-5
TIMEOUT_S = 240  # per subprocess; TF start-up is slow on a loaded 2-core machine


def _env(**extra):
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _tail(text, n=3000):
    return text[-n:] if text else ""


def _free_ports(k):
    socks = [socket.socket() for _ in range(k)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _by_prefix(data, prefix):
    """Arrays under ``prefix`` in insertion order (trainable-variable order)."""
    return [data[k] for k in data.files if k.startswith(prefix)]


class _Run:
    """A worker subprocess writing ``out`` (its log beside it, not a pipe that could fill)."""

    def __init__(self, mode, out, **env):
        self.out = out
        self.log = out.with_suffix(".log")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.distribute_worker", mode, str(out)],
                cwd=REPO, env=_env(**env), stdout=log, stderr=subprocess.STDOUT)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def _results(*runs):
    """Wait for all ``runs``; fail fast (killing the others, which would wait for a
    dead peer) as soon as one fails or the time is up; load their outputs."""
    deadline = time.monotonic() + TIMEOUT_S
    while any(r.proc.poll() is None for r in runs):
        failed = [r for r in runs if r.proc.poll() not in (None, 0)]
        if failed or time.monotonic() > deadline:
            for r in runs:
                r.kill()
            culprit = failed[0] if failed else runs[0]
            reason = f"exit code {culprit.proc.returncode}" if failed else f"timeout {TIMEOUT_S} s"
            pytest.fail(f"{culprit.out.name}: {reason}\n{_tail(culprit.log.read_text())}")
        time.sleep(0.2)
    for r in runs:
        assert r.proc.returncode == 0, f"{r.out.name}:\n{_tail(r.log.read_text())}"
    return [np.load(r.out) for r in runs]


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Start every worker process at once (their TF start-ups overlap): the
    2-device MirroredStrategy run and, if the multi-worker test is selected, the two
    MultiWorkerMirroredStrategy workers."""
    tmp = tmp_path_factory.mktemp("distribute")
    selected = {item.name for item in request.session.items}
    started = {"mirrored": _Run("mirrored", tmp / "mirrored.npz")}
    if "test_multi_worker_mirrored_two_processes" in selected:
        cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
        for index in range(2):
            tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            started[f"worker{index}"] = _Run("multi_worker", tmp / f"worker{index}.npz",
                                             TF_CONFIG=tf_config)
    yield started
    for run in started.values():
        run.kill()


@pytest.fixture(scope="module")
def mirrored_results(runs):
    return _results(runs["mirrored"])[0]


def test_two_replica_loss_equals_single_device(mirrored_results):
    r = mirrored_results
    assert int(r["single/replicas"]) == 1 and int(r["mirrored/replicas"]) == 2
    assert abs(float(r["mirrored/loss"]) - float(r["single/loss"])) <= TOL
    # and both equal the NumPy reference on the global batch
    ref_loss, _ = ref.nt_xent(r["single/z1"], r["single/z2"], worker.TEMPERATURE)
    assert abs(float(r["single/loss"]) - ref_loss) <= TOL


def test_each_replica_scores_its_anchors_against_global_negatives(mirrored_results):
    """Replica k's loss is the mean over its own anchors (rows of its shard, both
    views) of the per-anchor losses computed on the *global* batch."""
    r = mirrored_results
    per_anchor, _ = ref.nt_xent_per_anchor(r["single/z1"], r["single/z2"], worker.TEMPERATURE)
    n = worker.GLOBAL_BATCH
    local = r["mirrored/local_losses"]
    size = n // len(local)
    for k, value in enumerate(local):
        rows = np.arange(k * size, (k + 1) * size)
        expected = per_anchor[np.concatenate([rows, n + rows])].mean()
        assert abs(value - expected) <= TOL, k
    # the two replicas see different anchors: their losses differ
    assert abs(local[0] - local[1]) > 1e-3


def test_two_replica_gradients_equal_single_device(mirrored_results):
    r = mirrored_results
    single, mirrored = _by_prefix(r, "single/grad/"), _by_prefix(r, "mirrored/grad/")
    assert len(single) == len(mirrored) == 6
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(b, a, rtol=0, atol=TOL)
    assert max(np.abs(g).max() for g in single) > 1e-2  # gradients are not trivially zero


def test_unsynchronised_batch_norm_changes_the_result(mirrored_results):
    """Control: with per-replica BN statistics the 2-replica loss is *not* the
    single-device one, so the equality above relies on synchronised BN + gathering."""
    r = mirrored_results
    assert abs(float(r["mirrored_unsync/loss"]) - float(r["single/loss"])) > 1e-3


def test_lars_steps_under_mirrored_strategy_match_single_device(mirrored_results):
    r = mirrored_results
    np.testing.assert_allclose(r["mirrored/train_losses"], r["single/train_losses"], atol=TOL)
    assert r["single/train_losses"][-1] < r["single/train_losses"][0]  # it learns
    single, mirrored = _by_prefix(r, "single/weights/"), _by_prefix(r, "mirrored/weights/")
    assert len(single) == len(mirrored) == 6
    for a, b in zip(single, mirrored):
        np.testing.assert_allclose(b, a, rtol=0, atol=TOL)


def test_nnclr_two_replicas_match_single_device(mirrored_results):
    """NNCLR under MirroredStrategy: each replica looks up its anchors' neighbours in its
    copy of the queue and scores them against the gathered global batch, and every copy
    enqueues the gathered view-1 projections. So the neighbour slots are those of one
    device, the losses and weights agree, and both devices hold the same queue — the one
    the single device holds. Four steps of 8 into a queue of 12: empty, partly filled,
    full and wrapping."""
    r = mirrored_results
    size, n = worker.NNCLR_QUEUE, worker.GLOBAL_BATCH
    single, mirrored = r["single/nnclr/slots"], r["mirrored/nnclr/slots"]
    np.testing.assert_array_equal(mirrored, single)
    assert (single[0] == -1).all()                          # empty queue at step 1
    assert (single[1] >= 0).all() and single[1].max() < n   # only the filled slots
    assert single[2:].max() >= n                            # later the whole queue
    np.testing.assert_allclose(r["mirrored/nnclr/losses"], r["single/nnclr/losses"], atol=TOL)
    copies = r["mirrored/nnclr/queues"]
    assert copies.shape == (2, size, 8)
    np.testing.assert_array_equal(copies[0], copies[1])
    np.testing.assert_allclose(copies[0], r["single/nnclr/queues"][0], rtol=0, atol=TOL)
    assert int(r["mirrored/nnclr/count"]) == int(r["single/nnclr/count"]) == worker.STEPS * n
    # the newest batch sits at slots (count - n … count - 1) mod size, unit vectors
    newest = (np.arange(int(r["single/nnclr/count"]) - n, int(r["single/nnclr/count"]))) % size
    np.testing.assert_allclose(np.linalg.norm(copies[0][newest], axis=1), 1.0, atol=1e-6)
    single_w, mirrored_w = _by_prefix(r, "single/nnclr/weights/"), _by_prefix(r, "mirrored/nnclr/weights/")
    assert len(single_w) == len(mirrored_w) == 6
    for a, b in zip(single_w, mirrored_w):
        np.testing.assert_allclose(b, a, rtol=0, atol=TOL)


@pytest.mark.slow
def test_multi_worker_mirrored_two_processes(runs):
    """Two local workers (MultiWorkerMirroredStrategy, ring collectives over gRPC on
    localhost) train on their halves of the global batch; they must agree with each
    other and with the single-device run on the whole batch."""
    w0, w1 = _results(runs["worker0"], runs["worker1"])
    assert int(w0["replicas"]) == int(w1["replicas"]) == 2
    np.testing.assert_array_equal(w0["train_losses"], w1["train_losses"])
    weights0, weights1 = _by_prefix(w0, "weights/"), _by_prefix(w1, "weights/")
    for a, b in zip(weights0, weights1):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)

    # single-device reference on the same global batch, in this process
    strategy = distribute.make_strategy("default")
    x1, x2 = worker.global_batch()
    model = worker.build_model(strategy)
    optimizer = worker.make_optimizer(strategy, model)
    losses = worker.train(strategy, model, optimizer, x1, x2)
    np.testing.assert_allclose(w0["train_losses"], losses, atol=TOL)
    assert losses[-1] < losses[0]
    for a, v in zip(weights0, model.trainable_variables):
        np.testing.assert_allclose(a, v.numpy(), rtol=0, atol=TOL)

    # NNCLR: each worker found the single device's neighbours for its shard, and both hold
    # the single device's queue
    model = worker.build_model(strategy)
    losses, slots, queues, count = worker.nnclr_train(strategy, model,
                                                      worker.make_optimizer(strategy, model))
    n, half = worker.GLOBAL_BATCH, worker.GLOBAL_BATCH // 2
    for k, w in enumerate((w0, w1)):
        rows = np.r_[k * half:(k + 1) * half, n + k * half:n + (k + 1) * half]
        np.testing.assert_array_equal(w["nnclr/slots"], slots[:, rows])
        np.testing.assert_allclose(w["nnclr/losses"], losses, atol=TOL)
        np.testing.assert_allclose(w["nnclr/queues"][0], queues[0], rtol=0, atol=TOL)
        assert int(w["nnclr/count"]) == count == worker.STEPS * n
    np.testing.assert_array_equal(w0["nnclr/queues"], w1["nnclr/queues"])


# ------------------------------------------------------------ in-process units

def test_replica_loss_scale_is_one_without_replicas():
    assert float(distribute.replica_loss_scale(16)) == 1.0


def test_make_strategy_kinds(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.make_strategy("default").num_replicas_in_sync == 1
    auto = distribute.make_strategy("auto")
    assert auto.num_replicas_in_sync == max(1, len(tf.config.list_physical_devices("GPU")))
    with pytest.raises(ValueError, match="kind"):
        distribute.make_strategy("tpu")
    with pytest.raises(ValueError, match="communication"):
        distribute.make_strategy("multi_worker", communication="carrier-pigeon")


def test_tf_config_is_parsed(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", json.dumps(
        {"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "chief", "index": 0}}))
    assert distribute._tf_config_workers() == 3
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(ValueError, match="TF_CONFIG"):
        distribute.make_strategy("auto")


def test_batch_norm_option():
    layer = distribute.batch_norm(synchronized=True, momentum=0.9, name="bn")
    assert isinstance(layer, keras.layers.BatchNormalization)
    assert layer.synchronized and layer.momentum == 0.9 and layer.name == "bn"
    assert not distribute.batch_norm().synchronized
    # with one replica the synchronised layer is ordinary batch norm
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    a = distribute.batch_norm(True)(x, training=True)
    b = distribute.batch_norm(False)(x, training=True)
    np.testing.assert_allclose(a, b, atol=1e-6)
