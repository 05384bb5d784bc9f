"""Analyse keeps each run's outputs apart, measures its headline numbers on held-out
images only, and notices inputs that changed under it."""
from __future__ import annotations

import copy
import hashlib
import logging
import shutil

import pandas as pd
import pytest

from scripts.analysis.representation import read_representation, representation_metadata
from scripts.fingerprint import update_run_fingerprints
from scripts.params import parse_params
from bench.aperture_encoder import save_run

FIRST, SECOND = "first", "second"


def _params(raw, run_name):
    raw = copy.deepcopy(raw)
    raw["train"]["RUN_NAME"] = run_name
    raw["analyse"]["UMAP"]["FIT_SUBSAMPLE"] = 100
    raw["analyse"]["SPLITS"] = ["train", "validation", "test"]
    raw["analyse"].pop("EVALUATION_SPLITS", None)            # the default: test only
    raw["tracking"]["BACKENDS"] = ["none"]
    return parse_params(raw)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def two_runs(prepared_small, tmp_path_factory):
    """Two encoders (different normalisations) analysed one after the other into one
    reports folder."""
    from scripts import analyse

    source, raw = prepared_small
    root = tmp_path_factory.mktemp("two_runs")
    dataset_root = root / "dataset"
    shutil.copytree(source, dataset_root)
    save_run(root / "models" / FIRST, 32, 3, scale=0.01)
    save_run(root / "models" / SECOND, 32, 3, scale=0.05)
    metrics = {FIRST: analyse.run(_params(raw, FIRST), dataset_root, root / "models", root / "reports")}
    before = {p.name: _digest(p) for p in (root / "reports" / FIRST).glob("*.parquet")}
    metrics[SECOND] = analyse.run(_params(raw, SECOND), dataset_root, root / "models", root / "reports")
    return {"root": root, "raw": raw, "dataset": dataset_root, "metrics": metrics, "before": before}


def test_runs_keep_their_own_outputs(two_runs):
    reports = two_runs["root"] / "reports"
    after = {p.name: _digest(p) for p in (reports / FIRST).glob("*.parquet")}
    assert after == two_runs["before"] and "representation.parquet" in after
    fingerprints = set()
    for run in (FIRST, SECOND):
        meta = representation_metadata(reports / run / "representation.parquet")
        assert meta["encoder_fingerprint"] == two_runs["metrics"][run]["fingerprints"]["encoder"]
        assert meta["run_name"] == run
        fingerprints.add(meta["encoder_fingerprint"])
        assert list((reports / run / "plots").glob("map_umap_*.png"))
    assert len(fingerprints) == 2
    assert not (two_runs["dataset"] / "representation.parquet").exists()


def test_headline_numbers_come_from_the_test_split(two_runs):
    metrics = two_runs["metrics"][FIRST]
    assert metrics["evaluation_splits"] == ["test"]
    assert metrics["embedded_splits"] == ["train", "validation", "test"]
    rep = read_representation(two_runs["root"] / "reports" / FIRST / "representation.parquet")
    assert set(rep.meta["split"]) == {"train", "validation", "test"}     # the maps show all
    test_counts = rep.meta[rep.meta["split"] == "test"].groupby("dataset").size()
    assert metrics["drivers"], "no driver measured on the test split"
    for dataset, fields in metrics["drivers"].items():
        for entry in fields.values():
            assert entry["representation"]["n"] <= test_counts[dataset]
    for dataset, perm in metrics["permanence"].items():
        assert perm["n_total"] == test_counts[dataset]
    md = (two_runs["root"] / "reports" / FIRST / "report.md").read_text()
    assert "held-out test split" in md and "one unit" in md


def test_reused_run_folder_and_changed_splits_are_reported(two_runs, caplog):
    from scripts import analyse

    root = two_runs["root"]
    update_run_fingerprints(root / "models" / SECOND, splits="0123456789abcdef")
    save_run(root / "models" / SECOND, 32, 3, scale=0.2)           # retrained: a new encoder
    with caplog.at_level(logging.INFO):
        metrics = analyse.run(_params(two_runs["raw"], SECOND), two_runs["dataset"], root / "models",
                              root / "reports")
    assert "holds the analysis of another encoder" in caplog.text
    assert "splits.parquet changed since run second was trained" in caplog.text
    assert metrics["fingerprints"]["splits_unchanged"] is False
    assert metrics["fingerprints"]["encoder"] != two_runs["metrics"][SECOND]["fingerprints"]["encoder"]


def test_analogue_command_refuses_vectors_of_another_encoder(two_runs, tmp_path, monkeypatch, caplog):
    import yaml

    import config
    from scripts.analysis import analogues

    root = two_runs["root"]
    models = tmp_path / "models"
    save_run(models / FIRST, 32, 3, scale=0.3)                      # not the analysed encoder
    raw = copy.deepcopy(two_runs["raw"])
    raw["train"]["RUN_NAME"] = FIRST
    params_path = tmp_path / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw))
    monkeypatch.setattr(config, "models_path", models)
    monkeypatch.setattr(config, "reports_path", root / "reports")
    monkeypatch.setattr(config, "dataset_path", two_runs["dataset"])
    with caplog.at_level(logging.ERROR):
        assert analogues.main(["--params", str(params_path), str(tmp_path / "any.fits")]) == 2
    assert "made by another encoder" in caplog.text


def test_report_shows_the_padded_share_of_each_dataset(two_runs):
    metrics = two_runs["metrics"][FIRST]
    rep = read_representation(two_runs["root"] / "reports" / FIRST / "representation.parquet")
    counts = rep.meta.groupby("dataset").size()
    assert set(metrics["crop_outside"]) == set(counts.index)
    for name, summary in metrics["crop_outside"].items():
        objects = pd.read_parquet(two_runs["dataset"] / name / "objects.parquet")
        assert summary["n"] == counts[name]
        expected = (objects.set_index("row").loc[rep.of(name).meta["row"], "crop_outside_fraction"] > 0).mean()
        assert summary["padded_fraction"] == pytest.approx(expected)
    assert "outside its frame" in (two_runs["root"] / "reports" / FIRST / "report.md").read_text()
