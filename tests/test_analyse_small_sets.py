"""Analyse from the command line degrades gracefully: a pair of sets too small for the
realism measures is skipped with a reason in the report and metrics, and every other
result is still written."""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys

from tests.conftest import ROOT, write_params
from bench.aperture_encoder import save_run


def test_too_small_observed_set_is_skipped_not_fatal(prepared_small, tmp_path):
    source, raw = prepared_small
    raw = copy.deepcopy(raw)
    raw["train"]["RUN_NAME"] = "aperture"
    raw["analyse"]["UMAP"]["FIT_SUBSAMPLE"] = 100
    raw["tracking"]["BACKENDS"] = ["none"]
    params = write_params(tmp_path / "p.yaml", raw)
    dataset_root = tmp_path / "dataset"
    shutil.copytree(source, dataset_root)
    save_run(tmp_path / "models" / "aperture", 32, 3)
    env = dict(os.environ, DATASET_PATH=str(dataset_root), MODELS_PATH=str(tmp_path / "models"),
               PLOTS_PATH=str(tmp_path / "plots"), REPORTS_PATH=str(tmp_path / "reports"),
               TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-m", "scripts.analyse", "--params", str(params)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the small universe has 16 observed galaxies: fewer than 2(k+1) for k = 8
    assert "realism of MOCK_FIDUCIAL against MOCK_HSC skipped" in proc.stderr
    report_dir = tmp_path / "reports" / "aperture"
    metrics = json.loads((report_dir / "metrics.json").read_text())
    for sim in ("MOCK_FIDUCIAL", "MOCK_COMPACT"):
        assert "skipped" in metrics["realism"][sim]["MOCK_HSC"]
        assert "skipped" in metrics["headline"]["realism"][sim]["MOCK_HSC"]
    assert "skipped" in (report_dir / "report.md").read_text()
    assert metrics["permanence"] and (report_dir / "report.html").exists()
    assert (report_dir / "representation.parquet").exists()
