"""dvc.yaml: the stages' deps, params and outs are what they read and write, so `dvc repro`
reruns exactly what a change affects. Runs the real pipeline on the small mock universe in
a temporary copy of the repository (tiny images, two training steps)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, demo_raw_params

pytestmark = pytest.mark.slow

# What the stages need from the repository (dvc.yaml's code and data deps).
COPIED = ["config.py", "scripts", "TNG", "data", "dvc.yaml", ".dvcignore"]
STAGES = ["mock", "extract", "prepare", "train", "analyse"]
PATH_VARIABLES = ["DATASET_RAW_PATH", "ILLUSTRIS_PATH", "DATASET_PATH", "MODELS_PATH", "PLOTS_PATH",
                  "REPORTS_PATH", "SNAPSHOT_REDSHIFTS", "CC_CRITERIA", "REAL_HSC_MOCK",
                  "MLFLOW_TRACKING_URI"]


def tiny_params() -> dict:
    raw = demo_raw_params()
    raw["extract"].update(IMAGE_SIZE=32, NUM_WORKERS=1, SIZE_CHUNKS=64)
    raw["train"].update(EPOCHS=1, STEPS_PER_EPOCH=2, BATCH_SIZE=16, WARMUP_EPOCHS=0,
                        CHECKPOINT_EVERY=2)
    raw["analyse"]["UMAP"]["FIT_SUBSAMPLE"] = 100
    raw["tracking"]["BACKENDS"] = ["none"]
    return raw


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """A copy of the repository with the tiny params as params.demo.yaml and the small
    universe in the mock stage, after a first `dvc repro`."""
    root = tmp_path_factory.mktemp("dvc_repo")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, root / name)
    pipeline = (root / "dvc.yaml").read_text()
    assert "--size demo" in pipeline
    (root / "dvc.yaml").write_text(pipeline.replace("--size demo", "--size small"))
    (root / "params.demo.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))

    env = {k: v for k, v in os.environ.items() if k not in PATH_VARIABLES}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               DVC_NO_ANALYTICS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONDONTWRITEBYTECODE="1")

    def dvc(*args) -> str:
        done = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env,
                              capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"dvc {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def status() -> dict:
        return json.loads(dvc("status", "--json") or "{}")

    def set_param(section, key, value):
        path = root / "params.demo.yaml"
        raw = yaml.safe_load(path.read_text())
        raw[section][key] = value
        path.write_text(yaml.safe_dump(raw, sort_keys=False))

    dvc("init", "--no-scm")
    first = dvc("repro")
    return {"root": root, "dvc": dvc, "status": status, "set_param": set_param, "first": first}


def ran(output: str) -> set[str]:
    return {s for s in STAGES if f"Running stage '{s}'" in output}


def test_repro_runs_every_stage_and_leaves_status_clean(repo):
    assert ran(repo["first"]) == set(STAGES)
    assert repo["status"]() == {}
    for out in ("dataset/splits.parquet", "models/demo/encoder.keras", "reports/demo/metrics.json"):
        assert (repo["root"] / out).exists(), out


def test_new_fields_leave_train_fresh(repo):
    """A FIELDS change rewrites objects.parquet and leaves the image stores (and the split
    table) byte-identical: prepare and analyse rerun, train does not."""
    raw = yaml.safe_load((repo["root"] / "params.demo.yaml").read_text())
    fields = [list(f) for f in raw["extract"]["FIELDS"]]
    fields[0].append("lookback")                               # MOCK_FIDUCIAL
    repo["set_param"]("extract", "FIELDS", fields)
    assert set(repo["status"]()) == {"extract", "analyse"}     # their params changed
    assert ran(repo["dvc"]("repro", "prepare")) == {"extract", "prepare"}
    stale = repo["status"]()
    assert set(stale) == {"analyse"}, stale                    # not train
    assert "dataset/MOCK_FIDUCIAL/objects.parquet" in json.dumps(stale["analyse"])


def test_temperature_makes_only_train_and_analyse_stale(repo):
    before = set(repo["status"]())                             # analyse, after the test above
    repo["set_param"]("train", "TEMPERATURE", 0.3)
    stale = repo["status"]()
    assert set(stale) - before == {"train"}, stale
    assert "analyse" not in before or set(stale) == {"train", "analyse"}
    assert ran(repo["dvc"]("repro", "train")) == {"train"}     # nothing upstream reruns
    stale = repo["status"]()
    assert set(stale) == {"analyse"}, stale
    assert "models/demo" in json.dumps(stale["analyse"])        # the new encoder
