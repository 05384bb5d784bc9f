"""GPU-oriented training options, checked on the CPU with a tiny model: the XLA-compiled
step gives the uncompiled step's numbers, mixed precision keeps the loss close to float32
and finite, JIT_COMPILE resolves as documented, and ``bench/bench_gpu.py --smoke`` runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.test_train import _trainer, make_params, write_synthetic

ROOT = Path(__file__).resolve().parents[1]

#: Mixed-precision tolerances against float32 (same initial weights, same batches, tiny
#: ResNet-18, batch 8, 50 LARS steps): the first-step loss, where only the rounding of
#: activations differs (measured: bfloat16 1.7 %, float16 0.12 %), and the mean loss over
#: the 50 steps, where trajectories drift apart but the level must not (measured: 1.4 %,
#: 0.08 %).
FIRST_STEP_RTOL = {"mixed_bfloat16": 0.03, "mixed_float16": 0.005}
MEAN_LOSS_RTOL = 0.05


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth_gpu")
    write_synthetic(root, n_train=16, n_val=8, seed=3)
    return root


def test_resolve_jit_compile():
    from scripts.model.build import resolve_jit_compile
    from scripts.model.train_errors import TrainInputError

    assert resolve_jit_compile("auto", 1, gpus=1)[0] is True
    assert resolve_jit_compile("auto", 1, gpus=0)[0] is False
    assert resolve_jit_compile("auto", 4, gpus=4)[0] is False   # MirroredStrategy: no XLA
    assert resolve_jit_compile("on", 1, gpus=0)[0] is True
    assert resolve_jit_compile("off", 1, gpus=1)[0] is False
    with pytest.raises(TrainInputError, match="several devices"):
        resolve_jit_compile("on", 2, gpus=2)
    with pytest.raises(Exception, match="JIT_COMPILE"):
        make_params(jit_compile="yes")


def test_xla_step_equals_uncompiled_step(synth, tmp_path):
    """Three LARS steps and a validation pass, float32: the XLA-compiled step (views made
    on the device, outside the compiled part) and the plain step (views from tf.data) give
    the same losses and weights to 1e-5."""
    params = make_params(epochs=1, steps_per_epoch=3, batch_size=8)
    plain = _trainer(make_params(epochs=1, steps_per_epoch=3, batch_size=8, jit_compile="off"),
                     synth, tmp_path / "plain")
    xla = _trainer(make_params(epochs=1, steps_per_epoch=3, batch_size=8, jit_compile="on"),
                   synth, tmp_path / "xla", augment_on="device")
    assert params.train.jit_compile == "auto" and not plain.jit_compile and xla.jit_compile
    losses = {}
    for name, trainer in (("plain", plain), ("xla", xla)):
        ds = trainer._dataset(trainer.sampler, 0, 3, 0)
        losses[name] = [float(trainer._train_step(batch)[0]) for batch in ds]
        losses[name].append(trainer.validate()[0])
    np.testing.assert_allclose(losses["xla"], losses["plain"], rtol=0, atol=1e-5)
    for w_xla, w_plain in zip(xla.model.get_weights(), plain.model.get_weights()):
        np.testing.assert_allclose(w_xla, w_plain, rtol=0, atol=1e-5)
    assert int(xla.optimizer.iterations.numpy()) == 3


def _losses(synth, run_dir, policy, steps=50):
    params = make_params(mixed_precision=policy, jit_compile="off", epochs=1, learning_rate=0.1,
                         steps_per_epoch=steps, batch_size=8, checkpoint_every=1000,
                         validation_split="test")
    losses = []
    trainer = _trainer(params, synth, run_dir,
                       step_callback=lambda step, logs: losses.append(logs["train/loss"]))
    summary = trainer.fit()
    weights = trainer.model.get_weights()
    return np.array(losses), summary, trainer, weights


def test_mixed_precision_tracks_float32_without_nan(synth, tmp_path):
    """50 LARS steps in float32, mixed_bfloat16 and mixed_float16 (loss scaling) from the
    same initial weights on the same batches: no NaN or inf in losses or weights, the first
    loss within FIRST_STEP_RTOL of float32's and the mean loss within MEAN_LOSS_RTOL; the
    variables, the projection and the optimizer (LARS trust ratios) stay float32."""
    import keras

    ref, _, _, _ = _losses(synth, tmp_path / "f32", "off")
    for policy in ("mixed_bfloat16", "mixed_float16"):
        losses, summary, trainer, weights = _losses(synth, tmp_path / policy, policy)
        assert len(losses) == 50 and np.isfinite(losses).all(), policy
        assert all(np.isfinite(w).all() for w in weights), policy
        assert losses[0] == pytest.approx(ref[0], rel=FIRST_STEP_RTOL[policy]), policy
        assert losses.mean() == pytest.approx(ref.mean(), rel=MEAN_LOSS_RTOL), policy
        assert summary["mixed_precision"] == policy
        assert {v.dtype for v in trainer.model.trainable_variables} == {"float32"}
        assert trainer.model.head.layers[-1].compute_dtype == "float32"  # projection for NT-Xent
        assert trainer.model.encoder.get_layer("stem_conv").compute_dtype == policy.split("_")[1]
        inner = trainer.optimizer
        if policy == "mixed_float16":
            assert isinstance(inner, keras.optimizers.LossScaleOptimizer)
            inner = inner.inner_optimizer
        assert {v.dtype for v in inner.momentums} == {"float32"}


def test_bench_gpu_smoke_runs_on_cpu(tmp_path):
    """``bench/bench_gpu.py --smoke``: the whole benchmark, tiny, on the CPU."""
    out = tmp_path / "bench.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "bench.bench_gpu", "--smoke", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    result = json.loads(out.read_text())
    rows = result["rows"]
    assert {r["model"] for r in rows} == {"resnet18", "resnet50"}
    assert {r["loop"] for r in rows} == {"ours", "keras_fit"}
    assert any(r["xla"] for r in rows) and any(r["precision"] == "mixed_bfloat16" for r in rows)
    for r in rows:
        assert r["pairs_per_s"] > 0 and r["flops_per_pair"] > 0


def test_prefetch_to_device_keeps_the_batches(synth, tmp_path):
    """Batches copied ahead to a device (the GPU in training; the CPU here) are the same."""
    from scripts.model.views import prefetch_to

    trainer = _trainer(make_params(batch_size=8), synth, tmp_path / "p")
    assert trainer.prefetch_device is None  # no GPU here
    ds = trainer._dataset(trainer.sampler, 2, 2, 0)
    moved = prefetch_to(ds, "/device:CPU:0")
    for (a1, b1), (a2, b2) in zip(ds, moved):
        np.testing.assert_array_equal(a1.numpy(), a2.numpy())
        np.testing.assert_array_equal(b1.numpy(), b2.numpy())
