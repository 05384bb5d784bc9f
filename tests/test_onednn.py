"""The train stage's guard against TensorFlow 2.21's oneDNN crash (scripts.model.onednn)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from scripts.model import onednn

ROOT = Path(__file__).resolve().parents[1]


def test_only_eight_channel_stems_at_48_px_and_more_are_affected():
    assert onednn.crashes_with_onednn(0.125, 48) and onednn.crashes_with_onednn(0.125, 64)
    assert not onednn.crashes_with_onednn(0.125, 32)
    assert not onednn.crashes_with_onednn(0.25, 64) and not onednn.crashes_with_onednn(1.0, 128)


def test_a_value_the_user_set_is_kept(monkeypatch):
    monkeypatch.setenv(onednn.ENV, "1")
    assert onednn.configure(0.125, 64) is False and os.environ[onednn.ENV] == "1"


def test_the_guarded_configuration_trains_without_crashing():
    """A training gradient of the demo's ResNet-18 ×0.125 at 48 px, in a fresh process, after
    the guard: without it this process dies with a segmentation fault (measured)."""
    code = textwrap.dedent("""
        import numpy as np
        from scripts.model import onednn
        assert onednn.configure(0.125, 48)
        import tensorflow as tf
        from scripts.model.resnet import build_resnet
        model = build_resnet(depth=18, input_shape=(48, 48, 3), width_multiplier=0.125, stem="small")
        x = tf.constant(np.random.default_rng(0).normal(size=(16, 48, 48, 3)).astype("float32"))
        @tf.function
        def step(x):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(model(x, training=True) ** 2)
            return loss, tape.gradient(loss, model.trainable_variables)
        loss, grads = step(x)
        assert np.isfinite(float(loss)) and all(np.isfinite(g.numpy()).all() for g in grads)
    """)
    env = {k: v for k, v in os.environ.items() if k != onednn.ENV}
    env["PYTHONPATH"] = str(ROOT)
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
