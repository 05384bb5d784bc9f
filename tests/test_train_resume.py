"""Exact resume: a run killed with SIGKILL after its first checkpoint and rerun ends with the
same weights, optimizer state and step count as an uninterrupted run of the same length.

Batches are a pure function of (seed, step) (PairSampler) and so are the augmentations
(stateless ops seeded by (seed, step)); everything else is in the checkpoint. The killed
run is a real separate process (``kill -9``, no clean-up), stopped while it holds
progress beyond its checkpoint (it has already trained past the end of epoch 1 and run
that epoch's validation), which the rerun must redo identically. With ``METHOD: nnclr`` the
support queue (20 embeddings, 2.5 batches: it wraps before and after the checkpoint) and
its counter are part of the checkpoint, so the resumed run looks up the same neighbours.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from scripts.model.build import build_model
from scripts.params import load_params
from scripts.train import run_training
from tests.test_train import write_params, write_synthetic

CHECKPOINT_EVERY = 3  # K; the run has 2K + 2 = 8 steps (2 epochs of 4)
PAUSE_AT = 5          # the killed run is frozen once step 5 is done (step 6 is dispatched)
NNCLR_QUEUE = 20      # 2.5 batches of 8

DRIVER = """
import sys, time
from pathlib import Path
from scripts.model.build import build_model
from scripts.params import load_params
from scripts.train import run_training

params_path, data, models, marker, pause_at = sys.argv[1:6]

def pause(step, logs):
    if step == int(pause_at):
        Path(marker).write_text(str(step))
        time.sleep(600)

run_training(load_params(params_path), Path(data), Path(models), progress=False,
             step_callback=pause, export=False)
"""


def checkpoint_tensors(path: str) -> dict[str, np.ndarray]:
    reader = tf.train.load_checkpoint(path)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if not k.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter"))}


@pytest.mark.parametrize("method", ["simclr", "nnclr"])
def test_killed_run_resumes_to_the_same_weights(tmp_path, method):
    data = tmp_path / "data"
    write_synthetic(data, n_train=24, n_val=8, seed=5)
    params_path = write_params(tmp_path / "p.yaml", epochs=2, steps_per_epoch=4,
                               checkpoint_every=CHECKPOINT_EVERY, batch_size=8, method=method,
                               nnclr_queue_size=NNCLR_QUEUE if method == "nnclr" else None)
    params = load_params(params_path)

    # A: uninterrupted, in this process
    summary_a = run_training(params, data, tmp_path / "a", progress=False, export=False)
    assert summary_a["steps"] == 8 and summary_a["resumed_from_step"] == 0

    # B: a separate process, killed with SIGKILL after its first checkpoint (step 3)
    marker = tmp_path / "paused"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(params_path), str(data),
                             str(tmp_path / "b"), str(marker), str(PAUSE_AT)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run did not reach the pause step"
            time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    ckpt_b = tmp_path / "b" / "tiny" / "checkpoints"
    assert tf.train.latest_checkpoint(str(ckpt_b)).endswith(f"ckpt-{CHECKPOINT_EVERY}")

    # B rerun: resumes from step 3 and finishes
    summary_b = run_training(params, data, tmp_path / "b", progress=False, export=False)
    assert summary_b["resumed_from_step"] == CHECKPOINT_EVERY
    assert summary_b["steps"] == summary_a["steps"] == 8
    assert summary_b["optimizer_iterations"] == summary_a["optimizer_iterations"] == 8
    assert summary_b["epochs"] == summary_a["epochs"] == 2
    assert summary_b["best_val_loss"] == summary_a["best_val_loss"]

    a = checkpoint_tensors(tf.train.latest_checkpoint(str(tmp_path / "a" / "tiny" / "checkpoints")))
    b = checkpoint_tensors(tf.train.latest_checkpoint(str(ckpt_b)))
    assert a.keys() == b.keys()
    worst = max(float(np.max(np.abs(b[k].astype(np.float64) - a[k]))) for k in a)
    for key in a:
        np.testing.assert_allclose(b[key], a[key], rtol=0, atol=1e-5, err_msg=key)
    # every weight, BN statistic, LARS momentum and the iteration counter was compared:
    # trainable weights are stored once, under the optimizer; momenta under its _variables
    model = build_model(params.train, (32, 32, 3))
    count = lambda prefix: sum(k.startswith(prefix) for k in a)  # noqa: E731
    assert count("optimizer/_trainable_variables/") == len(model.trainable_weights)
    assert count("optimizer/_variables/") == len(model.trainable_weights)
    assert count("model/") == len(model.non_trainable_weights)
    assert int(a["optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE"]) == 8
    assert int(a["step/.ATTRIBUTES/VARIABLE_VALUE"]) == 8
    queue_keys = sorted(k for k in a if k.startswith("nnclr_queue/"))
    if method == "nnclr":
        assert queue_keys == ["nnclr_queue/count/.ATTRIBUTES/VARIABLE_VALUE",
                              "nnclr_queue/embeddings/.ATTRIBUTES/VARIABLE_VALUE"]
        assert int(a["nnclr_queue/count/.ATTRIBUTES/VARIABLE_VALUE"]) == 8 * 8
        np.testing.assert_array_equal(b["nnclr_queue/embeddings/.ATTRIBUTES/VARIABLE_VALUE"],
                                      a["nnclr_queue/embeddings/.ATTRIBUTES/VARIABLE_VALUE"])
    else:
        assert queue_keys == []  # SimCLR checkpoints hold exactly what they held before NNCLR
    print(f"largest difference between the resumed and the uninterrupted run: {worst:.3g}")
