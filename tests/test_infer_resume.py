"""The posterior flow resumes exactly: a stage run killed with SIGKILL after a checkpoint and
rerun ends with the same flow, and the same posterior samples, as an uninterrupted run.

Batches of epoch e are a permutation seeded by (SEED, e), samples by (SEED, chunk);
weights, optimizer, learning rate, best weights and patience counters are in the
checkpoint. The uninterrupted run (in this process) and the killed-and-resumed one (a
separate process first) also show that seeded runs are reproducible across processes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import tensorflow as tf

from scripts import infer
from scripts.params import parse_params
from tests.posterior_fixtures import RUN, synthetic_raw_params, write_synthetic_run

EPOCHS, CHECKPOINT_EVERY, PAUSE_AT = 8, 3, 5   # killed after epoch 5: checkpoint at 3

DRIVER = """
import sys, time, yaml
from pathlib import Path
from scripts import infer
from scripts.params import parse_params

params_path, root, marker, pause_at = sys.argv[1:5]
root = Path(root)

def pause(epoch, logs):
    if epoch == int(pause_at):
        Path(marker).write_text(str(epoch))
        time.sleep(600)

infer.run(parse_params(yaml.safe_load(Path(params_path).read_text())), root / "dataset",
          root / "models", root / "reports", epoch_callback=pause)
"""


def _raw():
    return synthetic_raw_params(EPOCHS=EPOCHS, CHECKPOINT_EVERY=CHECKPOINT_EVERY, PATIENCE=50,
                                NUM_SAMPLES=50, CORNER_OBJECTS=0, BATCH_SIZE=64)


def _tensors(ckpt_dir: Path) -> dict:
    reader = tf.train.load_checkpoint(str(ckpt_dir))
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
            if not k.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter"))}


def test_killed_infer_run_resumes_to_the_same_flow(tmp_path):
    import yaml

    small = dict(n_sim=(400, 100, 100), n_obs=50)
    a, b = tmp_path / "a", tmp_path / "b"
    write_synthetic_run(a, **small)
    write_synthetic_run(b, **small)
    params_path = tmp_path / "p.yaml"
    params_path.write_text(yaml.safe_dump(_raw()))
    params = parse_params(_raw())

    out_a = infer.run(params, a / "dataset", a / "models", a / "reports")
    assert out_a["posterior_flow"]["training"]["epochs"] == EPOCHS

    marker = tmp_path / "paused"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(params_path), str(b), str(marker),
                             str(PAUSE_AT)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the run did not reach the pause epoch"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    ckpts = b / "models" / RUN / infer.POSTERIOR_DIR / "checkpoints"
    assert tf.train.latest_checkpoint(str(ckpts)).endswith(f"-{CHECKPOINT_EVERY}")

    out_b = infer.run(params, b / "dataset", b / "models", b / "reports")
    training = out_b["posterior_flow"]["training"]
    assert training["resumed_from_epoch"] == CHECKPOINT_EVERY and training["epochs"] == EPOCHS

    ta = _tensors(a / "models" / RUN / infer.POSTERIOR_DIR / "checkpoints")
    tb = _tensors(ckpts)
    assert ta.keys() == tb.keys() and len(ta) > 10
    for k in ta:
        np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)
    with h5py.File(a / "reports" / RUN / infer.SAMPLES_FILE) as ha, \
            h5py.File(b / "reports" / RUN / infer.SAMPLES_FILE) as hb:
        np.testing.assert_array_equal(ha["samples"][:], hb["samples"][:])


def test_a_reused_trainer_fits_the_same_flow_as_a_fresh_one(tmp_path):
    """training.shared_trainer reuses one flow object (and its traced step) for every fit of a
    configuration: a fit after another one gives bit for bit the flow a fresh process gives,
    and a posterior fitted earlier still samples from its own weights."""
    from scripts.posterior import training
    from scripts.posterior.training import fit_posterior

    inf = parse_params(synthetic_raw_params(EPOCHS=6, LINEAR_MEAN=False)).infer
    rng = np.random.default_rng(0)
    cond = rng.normal(size=(300, 4)).astype(np.float32)
    targets = (cond[:, :2] + 0.3 * rng.normal(size=(300, 2))).astype(np.float32)
    first, second = np.arange(300) < 150, np.arange(300) >= 150
    val_a, val_b = first & (np.arange(300) % 5 == 0), second & (np.arange(300) % 5 == 0)
    train_a, train_b = first & ~val_a, second & ~val_b

    training._TRAINERS.clear()
    a = fit_posterior(inf, cond, targets, train_a, val_a, tmp_path / "a")
    samples_a = a.sample(cond[:20], 30, seed=1)
    b = fit_posterior(inf, cond, targets, train_b, val_b, tmp_path / "b")
    assert b.flow is a.flow and len(training._TRAINERS) == 1
    np.testing.assert_array_equal(a.sample(cond[:20], 30, seed=1), samples_a)

    training._TRAINERS.clear()
    fresh = fit_posterior(inf, cond, targets, train_b, val_b, tmp_path / "fresh")
    assert fresh.flow is not b.flow
    assert fresh.fit["best_epoch"] == b.fit["best_epoch"]
    for w_fresh, w_reused in zip(fresh.weights, b.weights):
        np.testing.assert_array_equal(w_fresh, w_reused)
    np.testing.assert_array_equal(fresh.sample(cond[:20], 30, seed=2),
                                  b.sample(cond[:20], 30, seed=2))
    assert not np.array_equal(b.weights[0], a.weights[0])
