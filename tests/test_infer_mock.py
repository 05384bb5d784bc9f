"""The posterior stage through the real stages on the small mock universe.

extract → prepare (session fixtures) → analyse with a fixed "aperture" encoder
(tests/test_analyse.py) → ``python -m scripts.infer`` as a user runs it. The small
universe is far too small to judge calibration (about 17 training and 4 test objects of
MOCK_FIDUCIAL, three projections each) — that acceptance is tested on a synthetic run
with 1000 test objects (tests/test_infer.py). Here the stage must run end to end on real
prepare and analyse outputs (the observed set's photoz mapped onto z,
real split groups, analogues, analyse's metrics.json extended, not replaced), write
posteriors in physical units, and refuse an observed set without an observable with one
clear line and exit status 2.
"""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.test_analyse import save_run

RUN = "aperture"
ROOT = Path(__file__).resolve().parents[1]


def _raw(raw):
    raw = copy.deepcopy(raw)
    raw["train"]["RUN_NAME"] = RUN
    raw["analyse"]["UMAP"]["FIT_SUBSAMPLE"] = 100
    raw["tracking"]["BACKENDS"] = ["none"]
    raw["infer"] = {"TRAIN_SETS": ["MOCK_FIDUCIAL"], "LOG_FIELDS": ["half_mass_radius_kpc"],
                    "INFER_SETS": ["MOCK_HSC", "MOCK_FIDUCIAL", "MOCK_COMPACT"],
                    "REPRESENTATION_COMPONENTS": 4, "NUM_COUPLING_LAYERS": 2, "HIDDEN_UNITS": [16],
                    "CONDITION_EMBEDDING": [8, 4], "LEARNING_RATE": 3e-3, "BATCH_SIZE": 64,
                    "EPOCHS": 40, "PATIENCE": 10, "NUM_SAMPLES": 100, "CONDITION_NOISE": 0.1,
                    "CORNER_OBJECTS": 1,
                    # the presets' recalibration, its fold flows in two worker processes:
                    # under ``python -m`` the stage module is __main__, and the workers must
                    # get the fold function by its importable name
                    "RECALIBRATION": "quantile", "RECALIBRATION_FOLDS": 2, "NUM_WORKERS": 2}
    return raw


def _infer(root: Path, params: Path):
    env = {"DATASET_PATH": str(root / "dataset"), "MODELS_PATH": str(root / "models"),
           "REPORTS_PATH": str(root / "reports"), "TF_CPP_MIN_LOG_LEVEL": "2",
           "PATH": "/usr/bin:/bin", "HOME": str(root)}
    return subprocess.run([sys.executable, "-m", "scripts.infer", "--params", str(params)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def analysed(prepared_small, tmp_path_factory):
    from scripts import analyse
    from scripts.params import parse_params

    source, raw = prepared_small
    root = tmp_path_factory.mktemp("infer_mock")
    shutil.copytree(source, root / "dataset")
    save_run(root / "models" / RUN, 32, 3)
    raw = _raw(raw)
    analyse.run(parse_params(raw), root / "dataset", root / "models", root / "reports",
                driver_max_samples=200, mmd_max_samples=200)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    return root, raw, params


@pytest.mark.slow
def test_stage_runs_on_the_mock_universe(analysed, small_universe):
    root, _, params = analysed
    proc = _infer(root, params)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = root / "reports" / RUN
    metrics = json.loads((report / "metrics.json").read_text())
    assert "realism" in metrics and "posterior" in metrics           # analyse's numbers kept
    assert set(metrics["posterior"]) == {"MOCK_FIDUCIAL", "MOCK_COMPACT"}
    for field, m in metrics["posterior"]["MOCK_FIDUCIAL"].items():
        assert 0 <= m["coverage_68"] <= m["coverage_95"] <= 1 and m["n"] > 0, (field, m)
    assert "posterior_calibration" in metrics["headline"]
    summary = pd.read_parquet(report / "posterior_summary.parquet")
    hsc = summary[summary["dataset"] == "MOCK_HSC"]
    assert len(hsc) and hsc["posterior_ok"].all()
    # physical units (log M☉) for the observed set too: prepare's scaling is undone, so the
    # medians sit near the set's true masses (scaled values would be ~10 dex away); within
    # 1 dex, since this flow learns from ~17 objects through a fixed aperture "encoder"
    raw_root, _ = small_universe
    true_mass = pd.read_parquet(raw_root / "MOCK_HSC" / "truth.parquet")["stellar_mass"]
    assert abs(hsc["stellar_mass_median"].median() - true_mass.median()) < 1.0
    assert summary["half_mass_radius_kpc_p2.5"].min() > 0                # LOG_FIELDS
    assert (report / "posterior_samples.h5").exists() and (report / "posterior_report.html").exists()
    assert list((report / "plots" / "posterior").glob("corner_MOCK_HSC_*.png"))
    assert "coverage 68%" in proc.stderr                                 # the logged headline
    assert "fold flows trained" in proc.stderr
    assert metrics["posterior_flow"]["recalibration"]["folds"] == 2


@pytest.mark.slow
def test_observed_set_without_an_observable_exits_with_one_line(analysed):
    root, raw, _ = analysed
    raw = copy.deepcopy(raw)
    names = [n for n, _ in raw["prepare"]["SETS"]]
    observables = raw["prepare"]["OBSERVABLES"]
    observables[names.index("MOCK_HSC")] = observables[names.index("MOCK_HSC")][:-1]
    last = observables[names.index("MOCK_FIDUCIAL")][-1]   # the training sets' name for it
    bad = root / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = _infer(root, bad)
    assert proc.returncode == 2
    assert f"MOCK_HSC lacks the OBSERVABLE '{last}'" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_analyse_rerun_keeps_the_posterior_of_the_same_representation(analysed):
    """Rerunning analyse on the same encoder and splits writes the same representation, so
    metrics.json keeps the infer stage's numbers (they were lost before); the recorded
    fingerprint is that of the representation file infer read."""
    from scripts import analyse
    from scripts.analysis.representation import REPRESENTATION_FILE
    from scripts.fingerprint import file_fingerprint
    from scripts.params import parse_params

    root, raw, params = analysed
    report = root / "reports" / RUN
    if "posterior" not in json.loads((report / "metrics.json").read_text()):
        assert _infer(root, params).returncode == 0
    before = json.loads((report / "metrics.json").read_text())
    recorded = before["posterior_flow"]["representation_fingerprint"]
    assert recorded == file_fingerprint(report / REPRESENTATION_FILE)
    analyse.run(parse_params(raw), root / "dataset", root / "models", root / "reports",
                driver_max_samples=200, mmd_max_samples=200)
    after = json.loads((report / "metrics.json").read_text())
    assert file_fingerprint(report / REPRESENTATION_FILE) == recorded
    assert after["posterior"] == before["posterior"]
    assert after["posterior_flow"] == before["posterior_flow"]
    assert after["headline"]["posterior_calibration"] == before["headline"]["posterior_calibration"]


def test_posterior_of_another_representation_is_dropped(tmp_path, caplog):
    """kept_posterior keeps infer's sections only for the fingerprint they were computed on;
    another one, none recorded (an older infer), or an unreadable file keep nothing, and
    the log says so."""
    from scripts.analysis.report import kept_posterior

    path = tmp_path / "metrics.json"
    assert kept_posterior(path, "abc") == {}                         # no earlier metrics
    sections = {"posterior": {"MOCK_FIDUCIAL": {"stellar_mass": {"coverage_68": 0.7}}},
                "posterior_flow": {"representation_fingerprint": "abc"}}
    path.write_text(json.dumps({"realism": {}, **sections}))
    assert kept_posterior(path, "abc") == sections
    with caplog.at_level("WARNING"):
        assert kept_posterior(path, "def") == {}
    assert "another representation (fingerprint abc, now def)" in caplog.text
    path.write_text(json.dumps({"posterior": sections["posterior"], "posterior_flow": {}}))
    assert kept_posterior(path, "abc") == {}
    path.write_text("{not json")
    assert kept_posterior(path, "abc") == {}
