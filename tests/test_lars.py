"""LARS optimizer (scripts/model/lars.py) and the learning-rate schedule
(scripts/model/schedule.py) against the independent NumPy references."""

import copy
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from scripts.model.lars import LARS
from scripts.model.schedule import WarmupCosine, scaled_learning_rate
from tests import reference_numpy as ref

TOL = 1e-5
EXCLUDE = ("batch_normalization", "bias")

# Paths like a small ResNet's. The batch-norm variables' *names* are just
# "gamma"/"beta": only the path says they belong to a batch-norm layer.
SHAPES = {
    "resnet/conv1/kernel": (3, 3, 2, 4),
    "resnet/conv1/bias": (4,),
    "resnet/block1/batch_normalization/gamma": (4,),
    "resnet/block1/batch_normalization/beta": (4,),
    "head/dense/kernel": (4, 3),        # starts at zero: ‖w‖ = 0 -> trust ratio 1
    "head/dense_1/kernel": (3, 2),      # gets a zero gradient on one step
}
DECAYED = {"resnet/conv1/kernel", "head/dense/kernel", "head/dense_1/kernel"}


def _initial_weights(seed=0):
    rng = np.random.default_rng(seed)
    w = {p: rng.normal(size=s).astype(np.float32) for p, s in SHAPES.items()}
    w["head/dense/kernel"][:] = 0.0
    return w


def _gradients(steps, seed=1):
    rng = np.random.default_rng(seed)
    grads = []
    for step in range(steps):
        g = {p: (0.5 * rng.normal(size=s)).astype(np.float32) for p, s in SHAPES.items()}
        if step == 2:
            g["head/dense_1/kernel"][:] = 0.0
        grads.append(g)
    return grads


def _make_variables(weights):
    """Keras variables whose .path is the given path (nested name scopes)."""
    variables = {}
    for path, value in weights.items():
        *scopes, name = path.split("/")
        ctxs = [keras.name_scope(s) for s in scopes]
        for c in ctxs:
            c.__enter__()
        try:
            variables[path] = keras.Variable(value.copy(), name=name)
        finally:
            for c in reversed(ctxs):
                c.__exit__(None, None, None)
        assert variables[path].path == path
    return variables


def _apply(opt, variables, grads_per_step):
    for grads in grads_per_step:
        opt.apply_gradients([(tf.constant(grads[p]), v) for p, v in variables.items()])


def _slots(opt, variables):
    return {p: opt.momentums[opt._get_variable_index(v)].numpy() for p, v in variables.items()}


@pytest.mark.parametrize(
    "lr_kind,momentum,weight_decay,eeta,nesterov",
    [
        ("constant", 0.9, 1e-2, 1e-3, False),
        ("constant", 0.9, 0.0, 0.05, True),
        ("schedule", 0.9, 1e-1, 0.05, False),
        ("schedule", 0.5, 1e-6, 1e-3, True),
    ],
)
def test_lars_matches_reference(lr_kind, momentum, weight_decay, eeta, nesterov):
    steps = 6
    w0, grads = _initial_weights(), _gradients(steps)
    if lr_kind == "constant":
        lr, lr_at = 0.8, (lambda step: 0.8)
    else:
        lr = WarmupCosine(1.5, total_steps=8, warmup_steps=2)
        lr_at = lambda step: ref.warmup_cosine(step, 1.5, 8, 2)  # noqa: E731
    variables = _make_variables(w0)
    opt = LARS(lr, momentum=momentum, weight_decay=weight_decay, eeta=eeta,
               exclude_from_weight_decay=EXCLUDE, nesterov=nesterov)
    _apply(opt, variables, grads)
    ref_w, ref_v = ref.lars_run(w0, grads, lr_at, momentum=momentum, weight_decay=weight_decay,
                                eeta=eeta, exclude_from_weight_decay=EXCLUDE, nesterov=nesterov)
    slots = _slots(opt, variables)
    for path, var in variables.items():
        np.testing.assert_allclose(var.numpy(), ref_w[path], rtol=0, atol=TOL, err_msg=path)
        # the velocity carries the per-step update: compare it relatively, so that
        # tiny trust-ratio-scaled updates (eeta = 1e-3) are checked too
        np.testing.assert_allclose(slots[path], ref_v[path], rtol=1e-4, atol=1e-9, err_msg=path)
        assert np.any(np.abs(ref_v[path]) > 0), path  # every variable actually moved
    assert int(opt.iterations) == steps


def test_weight_decay_only_where_intended():
    """Zero gradients, no momentum: non-excluded variables shrink by (1 - lr·eeta)
    (trust = eeta‖w‖/‖wd·w‖ cancels wd), excluded ones do not move at all."""
    lr, eeta, wd = 0.5, 0.01, 0.3
    w0 = _initial_weights()
    variables = _make_variables(w0)
    opt = LARS(lr, momentum=0.0, weight_decay=wd, eeta=eeta, exclude_from_weight_decay=EXCLUDE)
    zero = {p: np.zeros(s, np.float32) for p, s in SHAPES.items()}
    _apply(opt, variables, [zero])
    for path, var in variables.items():
        if path in DECAYED:
            np.testing.assert_allclose(var.numpy(), w0[path] * (1 - lr * eeta), atol=1e-7)
        else:
            np.testing.assert_array_equal(var.numpy(), w0[path])
    assert {p for p, v in variables.items() if opt._decay_flags[opt._get_variable_index(v)]} == DECAYED


def test_no_decoupled_keras_weight_decay():
    """weight_decay is folded into the gradient only; Keras's AdamW-style decay
    (w -= lr·wd·w outside update_step) must not happen as well: excluded variables
    with zero gradient stay put even with a large weight_decay."""
    variables = _make_variables({"block/batch_normalization/gamma": np.ones(4, np.float32)})
    opt = LARS(1.0, momentum=0.0, weight_decay=0.5)
    _apply(opt, variables, [{"block/batch_normalization/gamma": np.zeros(4, np.float32)}] * 3)
    np.testing.assert_array_equal(variables["block/batch_normalization/gamma"].numpy(), 1.0)


def test_trust_ratio_sets_step_length():
    """One step, no momentum, no decay: an adapted variable moves by lr·eeta·‖w‖
    whatever the gradient scale; an excluded one by lr·‖g‖."""
    lr, eeta = 0.2, 0.001
    w0 = _initial_weights()
    w0["head/dense/kernel"][:] = 1.0
    grads = _gradients(1)[0]
    grads = {p: g * 1e3 for p, g in grads.items()}  # large gradients: LARS must not care
    variables = _make_variables(w0)
    opt = LARS(lr, momentum=0.0, weight_decay=0.0, eeta=eeta)
    _apply(opt, variables, [grads])
    for path, var in variables.items():
        step = np.linalg.norm(var.numpy() - w0[path])
        if path in DECAYED:
            expected = lr * eeta * np.linalg.norm(w0[path])
        else:
            expected = lr * np.linalg.norm(grads[path])
        assert step == pytest.approx(expected, rel=1e-3), path


def test_exclusion_matches_path_not_name():
    variables = _make_variables(_initial_weights())
    opt = LARS(0.1, weight_decay=1e-4, exclude_from_weight_decay=EXCLUDE,
               exclude_from_layer_adaptation=("head",))
    opt.build(list(variables.values()))
    flags = {p: (opt._decay_flags[opt._get_variable_index(v)],
                 opt._adapt_flags[opt._get_variable_index(v)]) for p, v in variables.items()}
    assert flags["resnet/block1/batch_normalization/gamma"] == (False, True)
    assert flags["resnet/conv1/bias"] == (False, True)
    assert flags["resnet/conv1/kernel"] == (True, True)
    assert flags["head/dense/kernel"] == (True, False)


def test_config_round_trip_with_schedule():
    schedule = WarmupCosine(0.3, total_steps=100, warmup_steps=10)
    opt = LARS(schedule, momentum=0.8, weight_decay=1e-6, eeta=2e-3,
               exclude_from_weight_decay=("bn", "bias"), exclude_from_layer_adaptation=("bias",),
               nesterov=True)
    config = opt.get_config()
    clone = LARS.from_config(copy.deepcopy(config))  # Keras's from_config edits its argument
    assert clone.get_config() == config
    assert isinstance(clone._learning_rate, WarmupCosine)
    assert clone._learning_rate.get_config() == schedule.get_config()
    # through Keras's generic (de)serialisation, by registered name
    clone2 = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(clone2) is LARS and clone2.get_config() == config
    assert clone.weight_decay == 1e-6 and clone.eeta == 2e-3 and clone.nesterov


def _continue_matches(save, restore):
    """Train 3 steps, save, train 3 more; restore in fresh objects, train the same 3:
    weights and momenta must be identical."""
    steps = _gradients(6, seed=4)
    w0 = _initial_weights(seed=5)
    sched = WarmupCosine(1.0, total_steps=10, warmup_steps=2)
    variables = _make_variables(w0)
    opt = LARS(sched, weight_decay=1e-3, eeta=0.05)
    _apply(opt, variables, steps[:3])
    state = save(opt, variables)
    _apply(opt, variables, steps[3:])

    fresh_vars = _make_variables(_initial_weights(seed=99))
    fresh_opt = LARS(WarmupCosine(1.0, total_steps=10, warmup_steps=2), weight_decay=1e-3, eeta=0.05)
    restore(fresh_opt, fresh_vars, state)
    assert int(fresh_opt.iterations) == 3
    _apply(fresh_opt, fresh_vars, steps[3:])
    for path in variables:
        np.testing.assert_array_equal(fresh_vars[path].numpy(), variables[path].numpy())
    a, b = _slots(opt, variables), _slots(fresh_opt, fresh_vars)
    for path in variables:
        np.testing.assert_array_equal(a[path], b[path])


def test_checkpoint_restore_continues_identically(tmp_path):
    def save(opt, variables):
        ckpt = tf.train.Checkpoint(optimizer=opt, **{p.replace("/", "."): v for p, v in variables.items()})
        return ckpt.save(str(tmp_path / "ckpt"))

    def restore(opt, variables, path):
        # the optimizer is not built yet: its slots are restored when created (deferred)
        ckpt = tf.train.Checkpoint(optimizer=opt, **{p.replace("/", "."): v for p, v in variables.items()})
        ckpt.restore(path).assert_existing_objects_matched()
        opt.build(list(variables.values()))

    _continue_matches(save, restore)


def test_keras_model_save_load_keeps_optimizer_state(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 5)).astype(np.float32)
    y = rng.normal(size=(16, 2)).astype(np.float32)

    def build():
        inputs = keras.Input((5,))
        h = keras.layers.Dense(4, name="dense")(inputs)
        h = keras.layers.BatchNormalization(name="batch_normalization")(h)
        model = keras.Model(inputs, keras.layers.Dense(2, name="out")(h))
        model.compile(optimizer=LARS(WarmupCosine(0.5, 20, 2), weight_decay=1e-4, eeta=0.05), loss="mse")
        return model

    keras.utils.set_random_seed(0)
    model = build()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.optimizer, LARS)
    assert loaded.optimizer.get_config() == model.optimizer.get_config()
    assert int(loaded.optimizer.iterations) == 4
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    loaded.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="momentum"):
        LARS(0.1, momentum=1.5)
    with pytest.raises(ValueError, match="weight_decay"):
        LARS(0.1, weight_decay=-1.0)
    with pytest.raises(ValueError, match="eeta"):
        LARS(0.1, eeta=0.0)


# ---------------------------------------------------------------- schedule

@pytest.mark.parametrize("total,warmup", [(100, 10), (50, 0), (20, 20), (7, 3)])
def test_warmup_cosine_matches_reference(total, warmup):
    schedule = WarmupCosine(0.6, total_steps=total, warmup_steps=warmup)
    steps = np.arange(0, total + 5)
    got = np.array([float(schedule(s)) for s in steps])
    expected = np.array([ref.warmup_cosine(int(s), 0.6, total, warmup) for s in steps])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert got[-1] == 0.0  # decayed to zero past the end
    if warmup:
        assert got[0] == 0.0
    if 0 < warmup < total:
        assert got[warmup] == pytest.approx(0.6)  # peak at the end of the warm-up
    # tensor steps (as the optimizer passes them) give the same values
    tensor_steps = tf.constant(steps, tf.int64)
    np.testing.assert_allclose(schedule(tensor_steps).numpy(), expected, atol=1e-6)


def test_warmup_cosine_serialises():
    schedule = WarmupCosine(0.3, total_steps=1000, warmup_steps=100)
    clone = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(clone, WarmupCosine)
    assert clone.get_config() == schedule.get_config()
    for s in (0, 50, 100, 500, 1000):
        assert float(clone(s)) == float(schedule(s))


def test_warmup_cosine_rejects_bad_steps():
    with pytest.raises(ValueError, match="total_steps"):
        WarmupCosine(0.1, total_steps=0)
    with pytest.raises(ValueError, match="warmup_steps"):
        WarmupCosine(0.1, total_steps=10, warmup_steps=11)


@pytest.mark.parametrize("batch_size", [32, 256, 4096])
def test_scaled_learning_rate(batch_size):
    assert scaled_learning_rate(0.3, batch_size, "linear") == pytest.approx(0.3 * batch_size / 256)
    assert scaled_learning_rate(0.075, batch_size, "sqrt") == pytest.approx(0.075 * math.sqrt(batch_size))
    with pytest.raises(ValueError, match="scaling"):
        scaled_learning_rate(0.3, batch_size, "cubic")
    with pytest.raises(ValueError, match="batch_size"):
        scaled_learning_rate(0.3, 0)
