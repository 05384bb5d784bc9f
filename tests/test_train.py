"""Train stage: a tiny SimCLR model learns, NaN stops cleanly, params drive the optimiser
and the precision policy.

The synthetic universe used here (also by test_train_resume.py and test_inference.py):
every object is a 3-band galaxy with its own size, axis ratio, profile steepness, colour
and (for half of them) a companion at a fixed offset; its projections differ by position
angle and a modest change of apparent axis ratio, as different viewing angles of one
object do. Images are 32×32×3 in linear flux units with Gaussian sky noise.
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import yaml

from scripts.params import parse_params

SIZE = 32
BANDS = ("G", "R", "I")
SKY_NOISE = 0.02


# --------------------------------------------------------------------------- synthetic data

def galaxy(rng: np.random.Generator, n_proj: int, size: int = SIZE,
           colour_concentration: float = 2.0) -> np.ndarray:
    """``n_proj`` projections ``(n_proj, size, size, 3)`` of one random object; a larger
    ``colour_concentration`` makes the objects' colours more alike."""
    r_e = rng.uniform(1.5, 5.0)                  # half-light-like radius [px]
    q = rng.uniform(0.3, 1.0)                     # intrinsic axis ratio
    steep = rng.uniform(0.5, 2.5)                 # profile steepness (Sérsic-like n)
    colour = rng.dirichlet([colour_concentration] * 3) * 3   # band weights, sum 3
    flux = 10 ** rng.uniform(0.3, 1.3)            # central surface brightness
    companion = rng.random() < 0.5
    c_dist, c_angle, c_flux = rng.uniform(6, 10), rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.0)
    y, x = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n_proj, size, size, 3), np.float32)
    for p in range(n_proj):
        pa = rng.uniform(0, 2 * np.pi)
        qp = np.clip(q * rng.uniform(0.85, 1.15), 0.2, 1.0)
        xr = x * np.cos(pa) + y * np.sin(pa)
        yr = -x * np.sin(pa) + y * np.cos(pa)
        r = np.sqrt(xr ** 2 + (yr / qp) ** 2)
        img = flux * np.exp(-(r / r_e) ** (1 / steep))
        if companion:
            cx, cy = c_dist * np.cos(pa + c_angle), c_dist * np.sin(pa + c_angle)
            img = img + c_flux * flux * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 2.0)
        bands = img[..., None] * colour[None, None, :]
        out[p] = bands + rng.normal(0, SKY_NOISE, bands.shape)
    return out


def write_synthetic(root: Path, n_train: int = 48, n_val: int = 32, n_proj: int = 3, seed: int = 0,
                    datasets=("SYNTH",), nan_rows: dict | None = None,
                    colour_concentration: float = 2.0) -> dict[str, Path]:
    """``root/<DATASET>/images.h5`` + ``root/splits.parquet``: ``n_train`` training and
    ``n_val`` validation objects of ``n_proj`` projections per dataset. ``nan_rows``
    ``{dataset: [rows]}`` sets those images to NaN (a broken store)."""
    rng = np.random.default_rng(seed)
    rows, stores = [], {}
    for name in datasets:
        images, n_obj = [], n_train + n_val
        for obj in range(n_obj):
            images.append(galaxy(rng, n_proj, colour_concentration=colour_concentration))
            for p in range(n_proj):
                rows.append({"dataset": name, "row": obj * n_proj + p, "object_id": 1000 + obj,
                             "snapshot": 91, "projection": p,
                             "split": "train" if obj < n_train else "validation",
                             "split_group": f"{name}:{1000 + obj}"})
        cube = np.concatenate(images)
        for r in (nan_rows or {}).get(name, []):
            cube[r] = np.nan
        (root / name).mkdir(parents=True, exist_ok=True)
        stores[name] = root / name / "images.h5"
        with h5py.File(stores[name], "w") as f:
            f.create_dataset("images", data=cube, chunks=(1, SIZE, SIZE, 3))  # as extract writes
    pd.DataFrame(rows).to_parquet(root / "splits.parquet")
    return stores


def raw_params(datasets=("SYNTH",), **train) -> dict:
    """A params mapping for the synthetic sets; ``train`` overrides ``train:`` keys (any case)."""
    n = len(datasets)
    raw_train = {
        "RUN_NAME": "tiny", "ARCHITECTURE": "resnet18", "WIDTH_MULTIPLIER": 0.125,
        "STEM": "standard", "HEAD_LAYERS": 2, "HEAD_HIDDEN_DIM": 64, "OUTPUT_DIM": 32,
        "TEMPERATURE": 0.2, "POSITIVES": "projections", "BATCH_SIZE": 16, "EPOCHS": 2,
        "STEPS_PER_EPOCH": 4, "OPTIMIZER": "lars", "LEARNING_RATE": 1.0, "LR_SCALING": "linear",
        "WARMUP_EPOCHS": 0.5, "WEIGHT_DECAY": 1e-6,
        "AUGMENTATION": {"ROTATION": True, "FLIP": True, "ZOOM": [1.0, 1.2], "TRANSLATE": 0.05,
                         "BLUR_SIGMA": [0.0, 1.0], "NOISE_STD": [0.0, 0.02],
                         "FLUX_SCALE": [0.9, 1.1]},
        "NORMALISATION": {"STRETCH": "arcsinh", "SCALE": 0.1, "CLIP": [-1.0, 20.0]},
        "MIXED_PRECISION": "off", "SEED": 0, "CHECKPOINT_EVERY": 4, "PATIENCE": 10,
        "DISTRIBUTION": "default",
    }
    raw_train.update({k.upper(): v for k, v in train.items()})
    return {
        "extract": {"DATASETS": list(datasets), "EXTRACTORS": ["survey"] * n,
                    "FIELDS": [[] for _ in datasets], "LOAD": [True] * n, "FRACTION": [1.0] * n,
                    "NUM_PROJECTIONS": [3] * n, "FILTERS": list(BANDS), "IMAGE_SIZE": SIZE},
        "prepare": {"SPLIT_SEED": 0, "SETS": [[d, [0.75, 0.25, 0.0]] for d in datasets]},
        "train": raw_train,
        "tracking": {"BACKENDS": ["none"]},
    }


def make_params(datasets=("SYNTH",), **train):
    """Validated :class:`scripts.params.Params` of :func:`raw_params`."""
    return parse_params(raw_params(datasets, **train))


def write_params(path: Path, datasets=("SYNTH",), **train) -> Path:
    path.write_text(yaml.safe_dump(raw_params(datasets, **train)))
    return path


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    write_synthetic(root, colour_concentration=20.0)
    return root


def _trainer(params, root, run_dir, **kwargs):
    from scripts.model.trainer import Trainer
    from scripts.train import read_inputs

    table, stores = read_inputs(params, root)
    return Trainer(params.train, stores, table, run_dir, progress=False, **kwargs)


# --------------------------------------------------------------------------- learning

#: 8 epochs of 8 steps. With 6 (48 steps) a fresh install on an AMD EPYC box reached 0.34
#: and failed the bar below, which earlier machines had cleared (0.62); at 64 steps it
#: clears it with room (0.63).
EPOCHS_LEARN = 8


def test_tiny_model_learns(synth, tmp_path):
    """A short run must learn the objects' identity across projections.

    Validation: 32 unseen objects × 3 projections in two batches of 16, projection
    positives, fixed augmentations; chance accuracy 1/(2·16−1) = 3.2 %. Colours are made
    alike (concentration 20), so the objects differ mostly in size, shape and companion.
    A randomly initialised network already beats chance (random convolutions keep size and
    colour), so the bar is relative as well as absolute: after 64 LARS steps the contrast
    accuracy must be ≥ 5× chance (16 %) and ≥ 0.2 above the untrained network's, and the
    validation and training losses must fall by ≥ 0.5 nats. Measured (2026-12-03, AMD EPYC,
    2 cores): accuracy 0.23 → 0.63, validation loss 3.39 → 1.77.
    """
    params = make_params(epochs=EPOCHS_LEARN, steps_per_epoch=8, checkpoint_every=100, optimizer="lars",
                         learning_rate=2.0, lr_scaling="none", warmup_epochs=0.5)
    losses = []
    trainer = _trainer(params, synth, tmp_path / "learn",
                       step_callback=lambda step, logs: losses.append(logs["train/loss"]))
    val0_loss, val0_acc = trainer.validate()
    summary = trainer.fit()
    chance = summary["val_chance_accuracy"]
    assert chance == pytest.approx(1 / 31)
    assert summary["steps"] == EPOCHS_LEARN * 8 and summary["stopping_reason"] == "completed"
    assert summary["images_per_second"] > 0
    acc, loss = summary["final_val_accuracy"], summary["final_val_loss"]
    logging.getLogger(__name__).info("val acc %.3f (untrained %.3f), loss %.3f (untrained %.3f)",
                                     acc, val0_acc, loss, val0_loss)
    assert acc >= 5 * chance
    assert acc >= val0_acc + 0.2
    assert loss < val0_loss - 0.5
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.5


# --------------------------------------------------------------------------- loop logic (no network)

class RecordingTracker:
    """A tracker that keeps every call, to check what the stage logs."""

    def __init__(self):
        self.metrics, self.images, self.artifacts, self.tags, self.params = [], [], [], {}, None

    def log_params(self, params):
        self.params = params

    def log_metrics(self, metrics, step):
        self.metrics.append((int(step), dict(metrics)))

    def log_images(self, name, images, step):
        self.images.append((name, np.asarray(images), step))

    def log_artifact(self, path, artifact_path=None):
        self.artifacts.append(Path(path).name)

    def log_artifacts(self, directory, artifact_path=None):
        pass

    def set_tags(self, tags):
        self.tags.update(tags)

    def log_embedding(self, *args, **kwargs):
        pass

    def close(self, status="FINISHED"):
        self.status = status


def scripted_step(trainer, losses):
    """Replace the network step by one returning ``losses[k]`` at step k+1 (no tracing);
    it still consumes the real input batches and advances the optimizer's iterations."""
    it = iter(losses)

    def step(batch):
        trainer.optimizer.iterations.assign_add(1)
        return tf.constant(next(it), tf.float32), tf.constant(0.5, tf.float32)
    return step


def test_early_stopping_patience_and_tracking(synth, tmp_path):
    """Validation losses 3.0, 2.5, 2.6, 2.7 with patience 2: stop after epoch 4 with the best
    at epoch 2; per-step train metrics, per-epoch validation metrics and one grid of
    augmented views reach the tracker; a rerun of the stopped run trains nothing."""
    params = make_params(epochs=10, steps_per_epoch=2, checkpoint_every=100, patience=2)
    tracker = RecordingTracker()
    trainer = _trainer(params, synth, tmp_path / "es", tracker=tracker)
    trainer._train_step = scripted_step(trainer, [4.0] * 20)
    vals = iter([(3.0, 0.1), (2.5, 0.2), (2.6, 0.3), (2.7, 0.4)])
    trainer.validate = lambda: next(vals)
    summary = trainer.fit()
    assert summary["stopping_reason"] == "early_stopping" and summary["finished"]
    assert summary["steps"] == 8 and summary["epochs"] == 4
    assert summary["best_val_loss"] == 2.5 and summary["best_epoch"] == 2
    assert summary["best_val_accuracy"] == 0.2
    assert (summary["final_val_loss"], summary["final_val_accuracy"]) == (2.7, 0.4)
    # a checkpoint was written at the stop although CHECKPOINT_EVERY is 100
    assert trainer.manager.latest_checkpoint.endswith("ckpt-8")

    train_steps = [s for s, m in tracker.metrics if "train/loss" in m]
    assert train_steps == list(range(1, 9))
    lr = [m["train/learning_rate"] for _, m in tracker.metrics if "train/loss" in m]
    assert lr == pytest.approx([float(trainer.schedule(s)) for s in range(8)])
    epochs = [(s, m["epoch/val_loss"]) for s, m in tracker.metrics if "epoch/val_loss" in m]
    assert epochs == [(2, 3.0), (4, 2.5), (6, 2.6), (8, 2.7)]
    (name, grid, _), = tracker.images
    assert name == "augmented_views" and grid.shape == (16, SIZE, SIZE, 3)
    assert np.isfinite(grid).all()

    again = _trainer(params, synth, tmp_path / "es")
    again._train_step = None  # must not be called
    rerun = again.fit()
    assert rerun["stopping_reason"] == "early_stopping" and rerun["steps"] == 8


def test_max_runtime_stops_after_a_checkpoint_and_resumes(synth, tmp_path, monkeypatch):
    """Past MAX_RUNTIME_SECONDS the stage writes a checkpoint, exits 3 and exports nothing;
    the rerun goes on from that step."""
    from scripts import train
    from scripts.model.trainer import Trainer

    counted = []
    original = Trainer._make_train_step

    def fake(self):
        counted.append(self)
        return scripted_step(self, [2.0] * 100)
    monkeypatch.setattr(Trainer, "_make_train_step", fake)
    monkeypatch.setattr(Trainer, "validate", lambda self: (1.0, 0.5))
    path = write_params(tmp_path / "p.yaml", epochs=2, steps_per_epoch=4, checkpoint_every=100,
                        max_runtime_seconds=1e-6)
    argv = ["--params", str(path), "--dataset-path", str(synth), "--models-path",
            str(tmp_path / "models"), "--no-progress"]
    assert train.main(argv) == train.EXIT_RUNTIME
    run = tmp_path / "models" / "tiny"
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["stopping_reason"] == "max_runtime" and summary["steps"] == 1
    assert not (run / "encoder.keras").exists()
    assert (run / "checkpoints" / "ckpt-1.index").exists()

    write_params(path, epochs=2, steps_per_epoch=4, checkpoint_every=100)
    assert train.main(argv) == train.EXIT_OK
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["resumed_from_step"] == 1 and summary["steps"] == 8
    assert summary["optimizer_iterations"] == 8 and summary["stopping_reason"] == "completed"
    assert (run / "encoder.keras").exists() and (run / "params_used.yaml").exists()
    assert len(counted) == 2 and original is not fake


def test_missing_inputs_exit_2_with_the_stage_to_run(tmp_path, caplog):
    from scripts import train

    path = write_params(tmp_path / "p.yaml")
    argv = ["--params", str(path), "--dataset-path", str(tmp_path / "nowhere"),
            "--models-path", str(tmp_path / "models"), "--no-progress"]
    with caplog.at_level(logging.ERROR):
        assert train.main(argv) == train.EXIT_INPUT
    assert "splits.parquet does not exist; run the prepare stage" in caplog.text


# --------------------------------------------------------------------------- NaN

def test_non_finite_loss_stops_names_step_keeps_checkpoint(tmp_path, caplog):
    """One image of the store is NaN and first drawn at step s > 2: the stage exits 4,
    names step s, and the checkpoint of step 2 is kept (and holds finite weights)."""
    import tensorflow as tf

    from scripts import train
    from scripts.model.input_pipeline import PairSampler
    from scripts.model.sampling import split_table

    root = tmp_path / "data"
    write_synthetic(root, n_train=15, n_val=4, seed=3)  # 45 training images, batch 16
    splits = pd.read_parquet(root / "splits.parquet")
    table = split_table(splits, ["SYNTH"], ["train"])
    sampler = PairSampler(table, ["SYNTH"], 16, "augmentations", seed=0)
    seen = set()
    for k in range(2):
        seen |= set(sampler.batch(k)[1].tolist())
    later = [(k + 1, r) for k in range(2, 6) for r in sampler.batch(k)[1].tolist() if r not in seen]
    bad_step, bad_row = later[0]
    with h5py.File(root / "SYNTH" / "images.h5", "r+") as f:
        f["images"][bad_row] = np.nan

    path = write_params(tmp_path / "p.yaml", positives="augmentations", epochs=3,
                        steps_per_epoch=2, checkpoint_every=2)
    argv = ["--params", str(path), "--dataset-path", str(root), "--models-path",
            str(tmp_path / "models"), "--no-progress"]
    with caplog.at_level(logging.ERROR):
        assert train.main(argv) == train.EXIT_NON_FINITE
    assert f"training loss is nan at step {bad_step} " in caplog.text
    run = tmp_path / "models" / "tiny"
    latest = tf.train.latest_checkpoint(str(run / "checkpoints"))
    assert latest.endswith(f"ckpt-{2 * ((bad_step - 1) // 2)}")
    assert latest in caplog.text
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["stopping_reason"] == "non_finite_loss" and summary["failed_step"] == bad_step
    assert not (run / "encoder.keras").exists()
    reader = tf.train.load_checkpoint(latest)
    weights = [reader.get_tensor(k) for k in reader.get_variable_to_shape_map() if "model/" in k]
    assert weights and all(np.isfinite(w).all() for w in weights if w.dtype.kind == "f")


# --------------------------------------------------------------------------- params-driven

@pytest.fixture(scope="module")
def tiny_model():
    from scripts.model.build import build_model

    return build_model(make_params().train, (SIZE, SIZE, 3))


@pytest.mark.parametrize("name, expected", [("lars", "LARS"), ("adam", "AdamW"), ("sgd", "SGD")])
def test_optimizer_from_params_decays_weights_not_batch_norm(tiny_model, name, expected):
    """OPTIMIZER picks the class; WEIGHT_DECAY shrinks kernels but never batch-norm
    parameters. With a zero gradient and constant lr η (no warm-up), one step multiplies a
    kernel by 1 − η·wd (AdamW, SGD: decoupled decay) or 1 − η·eeta (LARS: the L2 gradient
    wd·w rescaled by the trust ratio eeta·‖w‖/‖wd·w‖) and leaves every BN gamma as it was."""
    import keras

    from scripts.model.build import build_optimizer, learning_rate_schedule

    params = make_params(optimizer=name, weight_decay=0.01, learning_rate=0.5,
                         lr_scaling="none", warmup_epochs=0).train
    model = keras.models.clone_model(tiny_model)
    model.set_weights(tiny_model.get_weights())
    variables = model.trainable_variables
    schedule = learning_rate_schedule(params, steps_per_epoch=10, total_steps=1000)
    opt = build_optimizer(params, schedule, variables)
    assert type(opt).__name__ == expected
    before = {v.path: v.numpy().copy() for v in variables}
    opt.apply_gradients([(tf.zeros_like(v), v) for v in variables])
    lr = float(schedule(0))
    factor = 1 - lr * (1e-3 if name == "lars" else 0.01)
    kernel = next(v for v in variables if v.path.endswith("stem_conv/kernel"))
    np.testing.assert_allclose(kernel.numpy(), before[kernel.path] * factor, rtol=1e-5)
    bn = [v for v in variables if "batch_normalization" in v.path]
    assert len(bn) > 30
    for v in bn:
        np.testing.assert_array_equal(v.numpy(), before[v.path])


def test_learning_rate_scaling_and_warmup():
    from scripts.model.build import learning_rate_schedule

    for scaling, peak in [("linear", 0.3 * 512 / 256), ("sqrt", 0.3 * np.sqrt(512)), ("none", 0.3)]:
        p = make_params(learning_rate=0.3, batch_size=512, lr_scaling=scaling, warmup_epochs=2).train
        s = learning_rate_schedule(p, steps_per_epoch=50, total_steps=500)
        assert s.warmup_steps == 100 and s.total_steps == 500
        assert float(s(100)) == pytest.approx(peak, rel=1e-6)
        assert float(s(50)) == pytest.approx(peak / 2, rel=1e-6)


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
def test_mixed_precision_policy_trains(synth, tmp_path, policy):
    """MIXED_PRECISION sets the compute dtype of the layers (variables stay float32, the
    loss is float32) for two real steps on CPU; float16 runs with a LossScaleOptimizer
    (TensorFlow falls back to Eigen kernels for half precision on CPU). The global Keras
    policy is left as it was."""
    import keras

    params = make_params(mixed_precision=policy, epochs=1, steps_per_epoch=2, batch_size=8,
                         validation_split="test")
    trainer = _trainer(params, synth, tmp_path / policy)
    summary = trainer.fit()
    assert keras.config.dtype_policy().name == "float32"
    compute = policy.split("_")[1]
    conv = trainer.model.encoder.get_layer("stem_conv")
    assert conv.compute_dtype == compute and conv.kernel.dtype == "float32"
    assert summary["steps"] == 2
    skipped = 0  # float16: steps whose scaled gradients overflowed are skipped (scale halves)
    if policy == "mixed_float16":
        skipped = np.log2(trainer.optimizer.initial_scale / float(trainer.optimizer.dynamic_scale))
    assert summary["optimizer_iterations"] + skipped == 2
    loss = [v for v in (trainer._train_step(next(iter(trainer._dataset(trainer.sampler, 2, 1, 0)))))]
    assert loss[0].dtype == tf.float32 and np.isfinite(loss[0].numpy())
    is_scaled = isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    assert is_scaled == (policy == "mixed_float16")


def test_device_augmentation_equals_input_pipeline(synth, tmp_path):
    """augment_on="device" draws the same views as the tf.data map (one replica): the same
    seeds of (seed, step) and the same functions, only the place differs."""
    params = make_params()
    on_input = _trainer(params, synth, tmp_path / "a", augment_on="input")
    on_device = _trainer(params, synth, tmp_path / "b", augment_on="device")
    va, vb = next(iter(on_input._dataset(on_input.sampler, 5, 1, 0)))
    batch = next(iter(on_device._dataset(on_device.sampler, 5, 1, 0)))
    assert batch[0].numpy().tolist() == [5] * 16
    da, db = on_device._replica_views(batch, 0)
    np.testing.assert_array_equal(va.numpy(), da.numpy())
    np.testing.assert_array_equal(vb.numpy(), db.numpy())
    assert not np.array_equal(va.numpy(), vb.numpy())


# --------------------------------------------------------------------------- distribution

TWO_REPLICAS = """
import json, sys
from pathlib import Path
from scripts.model.distribute import configure_logical_cpus, make_strategy
devices = configure_logical_cpus(2)  # before TensorFlow initialises
import numpy as np
from tests.test_train import _trainer, make_params
root = Path(sys.argv[1])
out = {}
for name, strategy in [("one", make_strategy("default")),
                       ("two", make_strategy("mirrored", devices=devices))]:
    params = make_params(epochs=1, steps_per_epoch=3, batch_size=8, sync_batch_norm=True)
    trainer = _trainer(params, root, root / name, strategy=strategy)
    summary = trainer.fit()
    out[name] = {"replicas": trainer.replicas, "val_loss": summary["final_val_loss"],
                 "weights": [w.tolist() for w in trainer.model.get_weights()]}
print(json.dumps(out))
"""


def test_two_replicas_train_like_one_device(tmp_path):
    """MirroredStrategy over 2 logical CPUs, synchronised BN: the global batch is split,
    negatives are gathered across replicas and each replica's loss is scaled by
    local/global batch, so 3 LARS steps give the weights (and validation loss) of one
    device on the same global batches."""
    import subprocess
    import sys

    write_synthetic(tmp_path, n_train=16, n_val=8, seed=2)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", TWO_REPLICAS, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert (out["one"]["replicas"], out["two"]["replicas"]) == (1, 2)
    assert out["two"]["val_loss"] == pytest.approx(out["one"]["val_loss"], abs=1e-5)
    for w1, w2 in zip(out["one"]["weights"], out["two"]["weights"]):
        np.testing.assert_allclose(np.asarray(w2), np.asarray(w1), rtol=0, atol=1e-5)
