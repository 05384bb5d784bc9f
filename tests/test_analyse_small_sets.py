"""Analyse degrades gracefully: a pair of sets too small for the realism measures is
skipped with a reason in the report and metrics, and every other result is still written."""
from __future__ import annotations

import copy
import json
import shutil

from scripts import analyse
from scripts.params import parse_params
from tests.test_analyse import save_run


def test_too_small_observed_set_is_skipped_not_fatal(prepared_small, tmp_path):
    source, raw = prepared_small
    raw = copy.deepcopy(raw)
    raw["train"]["RUN_NAME"] = "aperture"
    raw["analyse"]["UMAP"]["FIT_SUBSAMPLE"] = 100
    params = parse_params(raw)
    dataset_root = tmp_path / "dataset"
    shutil.copytree(source, dataset_root)
    save_run(tmp_path / "models" / "aperture", 32, 3)
    metrics = analyse.run(params, dataset_root, tmp_path / "models", tmp_path / "plots",
                          tmp_path / "reports")
    # the small universe has 16 observed galaxies: fewer than 2(k+1) for k = 8
    for sim in ("MOCK_FIDUCIAL", "MOCK_COMPACT"):
        assert "skipped" in metrics["realism"][sim]["MOCK_HSC"]
    report_dir = tmp_path / "reports" / "aperture"
    on_disk = json.loads((report_dir / "metrics.json").read_text())
    assert "skipped" in on_disk["headline"]["realism"]["MOCK_FIDUCIAL"]["MOCK_HSC"]
    assert "skipped" in (report_dir / "report.md").read_text()
    assert on_disk["permanence"] and (report_dir / "report.html").exists()
