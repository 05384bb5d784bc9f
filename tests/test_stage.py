"""Stage entry points: exit status from the body, input errors as exit 2 with one line."""
from __future__ import annotations

import logging

import pandas as pd

from scripts.stage import EXIT_INPUT, run_stage
from tests.conftest import ROOT


def test_body_result_and_status(caplog):
    params = ["--params", str(ROOT / "params.demo.yaml")]
    assert run_stage("x", lambda p: None, params) == 0
    assert run_stage("x", lambda p: pd.DataFrame({"a": [1, 2]}), params) == 0  # a result, not a status
    assert run_stage("x", lambda p: 1, params) == 1


def test_input_errors_exit_2_with_message(caplog, tmp_path):
    with caplog.at_level(logging.ERROR):
        assert run_stage("x", lambda p: None, ["--params", str(tmp_path / "none.yaml")]) == EXIT_INPUT
    assert "cannot read the params file" in caplog.text

    def missing(params):
        raise FileNotFoundError("dataset/splits.parquet does not exist; run the prepare stage")

    with caplog.at_level(logging.ERROR):
        assert run_stage("x", missing, ["--params", str(ROOT / "params.demo.yaml")]) == EXIT_INPUT
    assert "run the prepare stage" in caplog.text
