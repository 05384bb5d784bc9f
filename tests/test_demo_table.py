"""The README's demo table is printed from a run's metrics.json, never typed by hand."""
from scripts.demo import readme_table


def test_table_reports_each_measure_with_its_split_and_skips():
    metrics = {
        "evaluation_splits": ["test"],
        "images": {"GOOD": {"test": 60}, "BAD": {"test": 50}},
        "realism": {
            "GOOD": {"OBS": {"ood_sim": {"in_domain_fraction": 0.951, "n_subsample": 20},
                             "ood_obs": {"in_domain_fraction": 0.94},
                             "c2st": {"auc": 0.51, "ci_low": 0.4, "ci_high": 0.62},
                             "mmd": {"mmd2": 1e-4, "p_value": 0.4}}},
            "BAD": {"OBS": {"skipped": "need at least 18 objects"}}},
        "drivers": {"GOOD": {"stellar_mass": {"representation": {"r2": 0.8, "r2_std": 0.05},
                                              "baseline": {"r2": 0.6, "r2_std": 0.1},
                                              "photometry": {"r2": 0.7, "r2_std": 0.02}}}},
        "permanence": {"GOOD": {"top1": 0.3, "top5": 0.5, "chance_top5": 0.01}},
    }
    table = readme_table(metrics, "OBS", ["GOOD", "BAD"]).splitlines()
    assert table[0] == "| measured on the test split | GOOD | BAD |"
    assert "| test images (objects in the OOD score) | 60 (20) | 50 (–) |" in table
    assert "| in-domain fraction vs OBS (sim scored / obs scored) | 0.95 / 0.94 | skipped: need at least 18 objects |" in table
    assert ("| stellar_mass R²: representation / pixel baseline / photometry | "
            "0.80 ± 0.05 / 0.60 ± 0.10 / 0.70 ± 0.02 | – |") in table
    assert "| object permanence top-1 / top-5 (chance top-5) | 0.30 / 0.50 (0.010) | – |" in table


def test_table_without_an_observed_set_has_no_realism_rows():
    metrics = {"evaluation_splits": ["test"], "images": {"XRAY": {"test": 9}}, "realism": {"XRAY": {}},
               "drivers": {}, "permanence": {}}
    table = readme_table(metrics, "", ["XRAY"])
    assert "| test images | 9 |" in table and "in-domain" not in table and "AUC" not in table


def test_stages_run_in_process_in_order_and_stop_at_a_failure(tmp_path, monkeypatch):
    """scripts.demo runs each stage's ``main(["--params", P])`` in the demo's process, in order,
    and stops at the first non-zero status without running the later stages."""
    import pytest

    from scripts.demo import StageFailed, run_stages

    calls = tmp_path / "calls.txt"
    for name, status in (("fake_stage_ok", 0), ("fake_stage_fails", 2), ("fake_stage_after", 0)):
        (tmp_path / f"{name}.py").write_text(
            "from pathlib import Path\n"
            "def main(argv):\n"
            f"    with open({str(calls)!r}, 'a') as f:\n"
            f"        f.write({name!r} + ' ' + ' '.join(argv) + '\\n')\n"
            f"    return {status}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    done = run_stages("params.demo.yaml", ("fake_stage_ok", "fake_stage_missing"))
    assert [m for m, _ in done] == ["fake_stage_ok"]
    with pytest.raises(StageFailed) as err:
        run_stages("params.demo.yaml", ("fake_stage_ok", "fake_stage_fails", "fake_stage_after"))
    assert err.value.module == "fake_stage_fails" and err.value.status == 2
    assert calls.read_text().splitlines() == ["fake_stage_ok --params params.demo.yaml"] * 2 + [
        "fake_stage_fails --params params.demo.yaml"]


def test_the_run_beside_reports_its_stage_times_and_its_failure(tmp_path, caplog):
    """finish_beside waits for the second run and logs its stage times and headline from
    its log, or, when it failed, its exit status and the end of its log."""
    import logging
    import subprocess
    import sys

    from scripts.demo import finish_beside

    log_text = ("noise from TensorFlow\n"
                "2026-12-04 08:57:28,188 demo: scripts.train                         49.6 s\n"
                "2026-12-04 08:57:28,188 demo: scripts.infer                         50.4 s\n"
                "headline {\"m200c\": 0.63}\n")
    for status in (0, 3):
        log_path = tmp_path / f"side{status}.log"
        log_path.write_text(log_text)
        proc = subprocess.Popen([sys.executable, "-c", f"raise SystemExit({status})"])
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="demo"):
            assert finish_beside(proc, log_path) == status
        text = caplog.text
        assert "scripts.infer                         50.4 s" in text and "headline" in text
        assert ("noise from TensorFlow" in text) == bool(status)   # a failure shows the log's end
        assert ("failed (exit 3)" in text) == bool(status)
