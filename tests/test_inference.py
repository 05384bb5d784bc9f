"""Export and inference: the stage's exported encoder, its normalisation and the SavedModel
give the same representation as the trained network held in the final checkpoint."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import tensorflow as tf
import yaml

from scripts import train
from scripts.model.inference import TrainedEncoder, embed, load_encoder
from scripts.model.normalise import Normalisation
from scripts.params import load_params
from tests.test_train import SIZE, _trainer, write_params, write_synthetic


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One short run of the stage's command line (3 steps, one epoch), exported."""
    root = tmp_path_factory.mktemp("inference")
    write_synthetic(root / "data", n_train=12, n_val=4, seed=9)
    params_path = write_params(root / "p.yaml", epochs=1, steps_per_epoch=3, batch_size=8,
                               normalisation={"STRETCH": "arcsinh", "SCALE": [0.1, 0.2, 0.3],
                                              "CLIP": [-1.0, 3.0]})
    argv = ["--params", str(params_path), "--dataset-path", str(root / "data"),
            "--models-path", str(root / "models"), "--no-progress"]
    assert train.main(argv) == train.EXIT_OK
    return root, params_path, root / "models" / "tiny"


@pytest.fixture(scope="module")
def images(run):
    root, _, _ = run
    with h5py.File(root / "data" / "SYNTH" / "images.h5", "r") as f:
        return f["images"][:21]


def test_stage_writes_every_artefact(run):
    _, params_path, run_dir = run
    for name in ("encoder.keras", "normalisation.json", "train_summary.json", "params_used.yaml",
                 "saved_model/saved_model.pb"):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "train_summary.json").read_text())
    assert summary["stopping_reason"] == "completed" and summary["steps"] == 3
    assert summary["epochs"] == 1 and np.isfinite(summary["final_val_loss"])
    used = yaml.safe_load((run_dir / "params_used.yaml").read_text())
    assert used["train"] == load_params(params_path).to_dict()["train"]
    stored = Normalisation.load(run_dir / "normalisation.json")
    assert stored.scale == (0.1, 0.2, 0.3) and stored.clip == (-1.0, 3.0)


def test_embed_equals_the_checkpointed_network(run, images):
    """embed(run_dir, raw images) == final-checkpoint encoder on the normalised images."""
    _, params_path, run_dir = run
    params = load_params(params_path)
    trainer = _trainer(params, run_dir.parents[1] / "data", run_dir)
    assert trainer.restore() == 3
    stored = Normalisation.load(run_dir / "normalisation.json")
    expected = trainer.model.encoder(stored.apply_np(images), training=False).numpy()
    assert expected.shape == (21, 64) and np.std(expected) > 0

    got = embed(run_dir, images, batch_size=8)  # 8 + 8 + 5: a partial last batch
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

    # a loaded encoder, fed by an HDF5 dataset (streamed) or by an iterable of batches
    loaded = load_encoder(run_dir)
    assert isinstance(loaded, TrainedEncoder) and loaded.input_shape == (SIZE, SIZE, 3)
    with h5py.File(run_dir.parents[1] / "data" / "SYNTH" / "images.h5", "r") as f:
        np.testing.assert_allclose(embed(loaded, f["images"], batch_size=5)[:21], expected,
                                   rtol=1e-5, atol=1e-6)
    batches = tf.data.Dataset.from_tensor_slices(images).batch(6)
    np.testing.assert_allclose(embed(loaded, batches), expected, rtol=1e-5, atol=1e-6)
    # a bare Keras encoder with its normalisation
    np.testing.assert_allclose(embed(loaded.encoder, images, normalisation=stored), expected,
                               rtol=1e-5, atol=1e-6)
    assert embed(loaded, images[:0]).shape == (0, 64)


def test_saved_model_serves_raw_images(run, images):
    """The SavedModel applies the normalisation itself: raw images in, representation out."""
    _, _, run_dir = run
    served = tf.saved_model.load(str(run_dir / "saved_model"))
    out = served.serve(tf.constant(images)).numpy()
    np.testing.assert_allclose(out, embed(run_dir, images), rtol=1e-5, atol=1e-6)
    signature = served.signatures["serving_default"]
    (result,) = signature(images=tf.constant(images[:4])).values()
    np.testing.assert_allclose(result.numpy(), out[:4], rtol=1e-5, atol=1e-6)


def test_missing_export_and_bare_encoder_errors(tmp_path, run):
    with pytest.raises(FileNotFoundError, match="run the train stage to the end"):
        load_encoder(tmp_path)
    loaded = load_encoder(run[2])
    with pytest.raises(ValueError, match="needs the normalisation"):
        embed(loaded.encoder, np.zeros((2, SIZE, SIZE, 3), np.float32))


def test_permanence_bench_reads_every_space_of_a_trained_run(run, images):
    """bench_permanence_ceiling --run: the representation is embed()'s, the checkpoint's
    encoder gives it too, the head is the checkpointed network's, and the mean over the 8
    rotations/flips is exactly invariant to them."""
    from bench.bench_permanence_ceiling import dihedral_mean, model_feature_sets

    _, params_path, run_dir = run
    images = np.asarray(images, dtype=np.float32)
    sets = model_feature_sets(run_dir, images)
    rep = embed(run_dir, images)
    np.testing.assert_allclose(sets["representation"], rep, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(sets["checkpoint 3: representation"], rep, rtol=1e-4, atol=1e-5)
    trainer = _trainer(load_params(params_path), run_dir.parents[1] / "data", run_dir)
    assert trainer.restore() == 3
    stored = Normalisation.load(run_dir / "normalisation.json")
    head = trainer.model.head(trainer.model.encoder(stored.apply_np(images), training=False),
                              training=False).numpy()
    np.testing.assert_allclose(sets["checkpoint 3: projection head"], head, rtol=1e-4, atol=1e-5)

    loaded = load_encoder(run_dir)
    mean = sets["representation, mean over 8 rotations/flips"]
    turned = np.rot90(images[:, ::-1], 1, axes=(1, 2))
    np.testing.assert_allclose(dihedral_mean(loaded, np.ascontiguousarray(turned)), mean,
                               rtol=1e-4, atol=1e-5)
    assert not np.allclose(mean, rep, atol=1e-3)
