"""NT-Xent (scripts/model/losses.py) against the independent NumPy reference."""

import math

import numpy as np
import pytest
import tensorflow as tf

from scripts.model.losses import nt_xent_loss
from tests import reference_numpy as ref

TOL = 1e-5


def _views(n, d, seed, noise=0.3):
    """Two correlated views: a shared direction plus independent noise (float32)."""
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(n, d))
    z1 = base + noise * rng.normal(size=(n, d))
    z2 = base + noise * rng.normal(size=(n, d))
    return z1.astype(np.float32), z2.astype(np.float32)


@pytest.mark.parametrize("n", [1, 2, 7, 32])
@pytest.mark.parametrize("temperature", [0.05, 0.1, 0.5, 1.0])
def test_loss_and_accuracy_match_reference(n, temperature):
    z1, z2 = _views(n, 16, seed=n * 1000 + int(temperature * 100), noise=1.0)
    loss, acc = nt_xent_loss(z1, z2, temperature, return_accuracy=True)
    ref_loss, ref_acc = ref.nt_xent(z1, z2, temperature)
    assert loss.dtype == tf.float32
    assert abs(float(loss) - ref_loss) <= TOL
    assert abs(float(acc) - ref_acc) <= TOL
    # without return_accuracy: the same loss, a single tensor
    assert float(nt_xent_loss(z1, z2, temperature)) == float(loss)


def test_accuracy_is_informative():
    """Noisy views: the reference accuracy is strictly between 0 and 1, and matched."""
    z1, z2 = _views(32, 8, seed=3, noise=1.5)
    _, acc = nt_xent_loss(z1, z2, 0.1, return_accuracy=True)
    _, ref_acc = ref.nt_xent(z1, z2, 0.1)
    assert 0.0 < ref_acc < 1.0
    assert abs(float(acc) - ref_acc) <= TOL


def test_identical_views_give_low_loss_and_perfect_accuracy():
    z, _ = _views(32, 128, seed=1)
    loss, acc = nt_xent_loss(z, z, 0.1, return_accuracy=True)
    random_level = math.log(2 * 32 - 1)
    assert float(acc) == 1.0
    assert float(loss) < 0.01 * random_level


def test_unrelated_views_give_log_2n_minus_1():
    """Independent random directions in high dimension: all similarities ≈ 0, so every
    anchor sees 2N-1 equally likely candidates."""
    n, d = 32, 4096
    rng = np.random.default_rng(7)
    z1 = rng.normal(size=(n, d)).astype(np.float32)
    z2 = rng.normal(size=(n, d)).astype(np.float32)
    loss = float(nt_xent_loss(z1, z2, 1.0))
    assert abs(loss - math.log(2 * n - 1)) < 0.01


def test_scale_invariance_of_inputs():
    """Embeddings are L2-normalised inside: rescaling rows changes nothing."""
    z1, z2 = _views(7, 16, seed=11)
    scales = np.linspace(0.01, 100.0, 7, dtype=np.float32)[:, None]
    a = float(nt_xent_loss(z1, z2, 0.2))
    b = float(nt_xent_loss(z1 * scales, z2 * scales[::-1], 0.2))
    assert abs(a - b) <= TOL


def test_gradients_finite_and_match_finite_differences():
    n, d, temperature = 7, 8, 0.1
    z1, z2 = _views(n, d, seed=5)
    t1, t2 = tf.constant(z1), tf.constant(z2)
    with tf.GradientTape() as tape:
        tape.watch([t1, t2])
        loss = nt_xent_loss(t1, t2, temperature)
    g1, g2 = tape.gradient(loss, [t1, t2])
    assert np.all(np.isfinite(g1)) and np.all(np.isfinite(g2))

    # central differences of the float64 reference
    z1_64, z2_64 = z1.astype(np.float64), z2.astype(np.float64)
    eps = 1e-6
    num = np.zeros((2, n, d))
    for v, arr in enumerate((z1_64, z2_64)):
        for idx in np.ndindex(n, d):
            orig = arr[idx]
            arr[idx] = orig + eps
            plus = ref.nt_xent(z1_64, z2_64, temperature)[0]
            arr[idx] = orig - eps
            minus = ref.nt_xent(z1_64, z2_64, temperature)[0]
            arr[idx] = orig
            num[v][idx] = (plus - minus) / (2 * eps)
    np.testing.assert_allclose(g1.numpy(), num[0], atol=2e-5)
    np.testing.assert_allclose(g2.numpy(), num[1], atol=2e-5)


def test_gradients_finite_with_zero_embedding_and_low_temperature():
    z1, z2 = _views(8, 16, seed=9)
    z1[3] = 0.0  # a dead projection must not produce NaN
    t1, t2 = tf.constant(z1), tf.constant(z2)
    with tf.GradientTape() as tape:
        tape.watch([t1, t2])
        loss = nt_xent_loss(t1, t2, 0.05)
    grads = tape.gradient(loss, [t1, t2])
    assert np.isfinite(float(loss))
    assert all(np.all(np.isfinite(g)) for g in grads)


@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_mixed_precision_inputs_computed_in_float32(dtype):
    z1, z2 = _views(16, 32, seed=2)
    low1, low2 = tf.cast(z1, dtype), tf.cast(z2, dtype)
    loss = nt_xent_loss(low1, low2, 0.1)
    assert loss.dtype == tf.float32
    ref_loss, _ = ref.nt_xent(tf.cast(low1, tf.float32).numpy(), tf.cast(low2, tf.float32).numpy(), 0.1)
    assert abs(float(loss) - ref_loss) <= TOL


def test_in_tf_function_with_unknown_batch_size():
    fn = tf.function(
        lambda a, b: nt_xent_loss(a, b, 0.5, return_accuracy=True),
        input_signature=[tf.TensorSpec([None, 16], tf.float32)] * 2,
    )
    for n in (3, 10):
        z1, z2 = _views(n, 16, seed=n)
        loss, acc = fn(z1, z2)
        ref_loss, ref_acc = ref.nt_xent(z1, z2, 0.5)
        assert abs(float(loss) - ref_loss) <= TOL
        assert abs(float(acc) - ref_acc) <= TOL


def test_bad_input_is_rejected():
    z1, z2 = _views(4, 8, seed=0)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(z1, z2, 0.0)
    with pytest.raises(ValueError, match="same shape"):
        nt_xent_loss(z1, z2[:3], 0.1)
    with pytest.raises(ValueError, match="2-D"):
        nt_xent_loss(z1[0], z2[0], 0.1)
