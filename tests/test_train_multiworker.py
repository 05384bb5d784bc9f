"""Two worker processes train one model with MultiWorkerMirroredStrategy (TF_CONFIG on
localhost), as on a cluster: both finish, the chief exports, and both hold the same
weights and synchronised batch-norm statistics at the end (gradients are all-reduced
every step; with SYNC_BATCH_NORM false the moving statistics would stay per worker)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import tensorflow as tf

from tests.conftest import ROOT
from tests.test_train import write_params, write_synthetic
from tests.test_train_resume import checkpoint_tensors


def _free_ports(k: int) -> list[int]:
    sockets = [socket.socket() for _ in range(k)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_and_agree(tmp_path):
    data, models = tmp_path / "data", tmp_path / "models"
    write_synthetic(data, n_train=24, n_val=8, seed=3)
    params = write_params(tmp_path / "p.yaml", epochs=1, steps_per_epoch=3, checkpoint_every=3,
                          batch_size=8, distribution="multi_worker", sync_batch_norm=True)
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    procs = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "scripts.train", "--params", str(params), "--dataset-path", str(data),
             "--models-path", str(models), "--no-progress"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=240)
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for proc, out in zip(procs, outputs):
        assert proc.returncode == 0, out[-3000:]
    run = models / "tiny"
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["steps"] == 3 and summary["replicas"] == 2 and summary["finished"]
    assert (run / "encoder.keras").exists()
    chief = tf.train.latest_checkpoint(str(run / "checkpoints"))
    others = [p for p in (run / "checkpoints").glob(".*") if p.is_dir()]
    assert chief and others, sorted(p.name for p in (run / "checkpoints").iterdir())
    worker = tf.train.latest_checkpoint(str(others[0]))
    a, b = checkpoint_tensors(chief), checkpoint_tensors(worker)
    weights = [k for k in a if "optimizer" not in k and k in b]
    assert weights
    for k in weights:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6, err_msg=k)
