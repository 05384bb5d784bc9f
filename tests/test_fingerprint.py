"""Fingerprints tie outputs to their inputs: prepare records its split table's, train and
analyse warn when it changed under a trained run, train refuses to resume on stores
extracted another way, and vectors of two encoders are told apart."""
from __future__ import annotations

import json
import logging

import pandas as pd
import pytest

from scripts.fingerprint import (check_splits_unchanged, encoder_fingerprint,
                                 read_run_fingerprints, splits_fingerprint, stores_fingerprint,
                                 table_fingerprint)


def _table():
    return pd.DataFrame({"dataset": ["A"] * 4 + ["B"] * 2, "row": [0, 1, 2, 3, 0, 1],
                         "object_id": [1, 1, 2, 2, 7, 8], "snapshot": 91, "projection": [0, 1] * 3,
                         "split": ["train", "train", "test", "test", "train", "validation"],
                         "split_group": ["A:1", "A:1", "A:2", "A:2", "B:7", "B:8"],
                         "matched": [True] * 6})


def test_table_fingerprint_sees_assignments_not_row_order():
    table = _table()
    fp = table_fingerprint(table)
    assert len(fp) == 16 and fp == table_fingerprint(table.iloc[::-1])
    assert fp == table_fingerprint(table.assign(matched=False))      # not a split column
    moved = table.copy()
    moved.loc[2, "split"] = "train"
    assert table_fingerprint(moved) != fp


def test_splits_fingerprint_recorded_or_computed(tmp_path, prepared_small):
    dataset_root, _ = prepared_small
    summary = json.loads((dataset_root / "prepare_summary.json").read_text())
    assert summary["splits_fingerprint"] == table_fingerprint(pd.read_parquet(dataset_root / "splits.parquet"))
    assert splits_fingerprint(dataset_root) == summary["splits_fingerprint"]
    _table().to_parquet(tmp_path / "splits.parquet")                # no prepare_summary.json
    assert splits_fingerprint(tmp_path) == table_fingerprint(_table())
    assert splits_fingerprint(tmp_path / "nowhere") is None


def test_check_splits_unchanged_warns_once_changed(caplog):
    with caplog.at_level(logging.WARNING):
        assert check_splits_unchanged("abc", "abc", "x") and check_splits_unchanged(None, "abc", "x")
        assert not caplog.records
        assert not check_splits_unchanged("abc", "def", "run demo was trained")
    assert "changed since run demo was trained" in caplog.text and "abc" in caplog.text


def test_encoder_fingerprint_tells_weights_and_normalisation_apart():
    import keras

    from scripts.model.normalise import Normalisation

    def model(seed):
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((8, 8, 1))
        return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))

    norm = Normalisation("arcsinh", scale=0.1)
    a, b = model(0), model(1)
    fp = encoder_fingerprint(a, norm)
    assert fp == encoder_fingerprint(a, Normalisation("arcsinh", scale=0.1))
    assert fp != encoder_fingerprint(b, norm)
    assert fp != encoder_fingerprint(a, Normalisation("arcsinh", scale=0.2))


def test_reloaded_encoder_keeps_its_fingerprint(tmp_path):
    from scripts.model.inference import load_encoder
    from bench.aperture_encoder import save_run

    run = save_run(tmp_path / "run", 16, 3)
    first, second = load_encoder(run), load_encoder(run)
    assert encoder_fingerprint(first.encoder, first.normalisation) == \
        encoder_fingerprint(second.encoder, second.normalisation)


def test_train_records_the_split_table_and_warns_when_it_changes(tmp_path, caplog):
    from scripts.train import run_training
    from tests.test_train import make_params, write_synthetic

    write_synthetic(tmp_path, n_train=10, n_val=4)
    params = make_params(epochs=1, steps_per_epoch=1, batch_size=8, checkpoint_every=1)
    run_training(params, tmp_path, tmp_path / "models", progress=False)
    recorded = read_run_fingerprints(tmp_path / "models" / params.train.run_name)["splits"]
    assert recorded == table_fingerprint(pd.read_parquet(tmp_path / "splits.parquet"))
    splits = pd.read_parquet(tmp_path / "splits.parquet")
    splits.loc[splits["split_group"] == splits["split_group"].iloc[0], "split"] = "test"
    splits.to_parquet(tmp_path / "splits.parquet")
    with caplog.at_level(logging.WARNING):
        run_training(params, tmp_path, tmp_path / "models", progress=False)
    assert "splits.parquet changed since run" in caplog.text
    assert read_run_fingerprints(tmp_path / "models" / params.train.run_name)["splits"] == recorded


def test_train_refuses_to_resume_on_stores_extracted_another_way(tmp_path):
    """A finished run is not silently reused when only the extraction changed (same objects,
    same split table, other crops): train stops with a message naming the run."""
    from scripts.model.train_errors import TrainInputError
    from scripts.train import run_training
    from tests.test_train import make_params, write_synthetic

    write_synthetic(tmp_path, n_train=10, n_val=4)
    marker = tmp_path / "SYNTH" / "fingerprint.txt"
    marker.write_text('{"crop": {"name": "petrosian"}}')
    params = make_params(epochs=1, steps_per_epoch=1, batch_size=8, checkpoint_every=1)
    run_dir = tmp_path / "models" / params.train.run_name
    run_training(params, tmp_path, tmp_path / "models", progress=False)
    recorded = read_run_fingerprints(run_dir)["stores"]
    assert recorded == stores_fingerprint(tmp_path, ["SYNTH"])
    run_training(params, tmp_path, tmp_path / "models", progress=False)   # same stores: resumes
    marker.write_text('{"crop": {"name": "petrosian", "neighbours": "mask"}}')
    with pytest.raises(TrainInputError, match=f"{run_dir}.*other settings.*train.RUN_NAME"):
        run_training(params, tmp_path, tmp_path / "models", progress=False)
    assert read_run_fingerprints(run_dir)["stores"] == recorded
