"""Prepare stage on the small mock universe: stable object-aware splits, matching, scaling."""
from __future__ import annotations

import copy
import json
import logging
import shutil

import numpy as np
import pandas as pd
import pytest

from scripts.params import parse_params
from scripts.preprocessing import prepare
from scripts.preprocessing.splits import SPLITS, uniform_from_keys


def run_prepare(extracted_small, tmp_path, mutate=None):
    source, raw = extracted_small
    raw = copy.deepcopy(raw)
    if mutate:
        mutate(raw)
    root = tmp_path / "dataset"
    shutil.copytree(source, root)
    splits = prepare.run(parse_params(raw).prepare, root, tmp_path / "plots")
    return root, splits, raw


def test_outputs_and_object_aware_splits(prepared_small):
    root, raw = prepared_small
    splits = pd.read_parquet(root / "splits.parquet")
    for name, _ in raw["prepare"]["SETS"]:
        objects = pd.read_parquet(root / name / "objects.parquet")
        part = splits[splits["dataset"] == name].sort_values("row")
        assert len(part) == len(objects) and (part["row"].to_numpy() == objects["row"].to_numpy()).all()
    # every split group, every object (all projections) and every root descendant in one split
    assert splits.groupby(["dataset", "split_group"])["split"].nunique().max() == 1
    assert splits.groupby(["dataset", "snapshot", "object_id"])["split"].nunique().max() == 1
    fid = pd.read_parquet(root / "MOCK_FIDUCIAL" / "objects.parquet").merge(
        splits[splits["dataset"] == "MOCK_FIDUCIAL"][["row", "split"]], on="row")
    assert fid.groupby("root_descendant_id")["split"].nunique().max() == 1
    shared = fid.groupby("root_descendant_id")["snapshot"].nunique()
    assert (shared > 1).any(), "the mock should have galaxies present at both snapshots"
    summary = json.loads((root / "prepare_summary.json").read_text())
    assert {m["target"] for m in summary["matching"]} == {"MOCK_FIDUCIAL", "MOCK_COMPACT"}
    assert list((root.parent / "plots").glob("match_*_hist_*.png"))


def test_growing_test_fraction_never_moves_train_or_validation(extracted_small, tmp_path):
    def smaller(raw):
        for entry in raw["prepare"]["SETS"]:
            entry[1] = [0.6, 0.15, 0.05]

    def larger(raw):
        for entry in raw["prepare"]["SETS"]:
            entry[1] = [0.6, 0.15, 0.25]

    _, a, _ = run_prepare(extracted_small, tmp_path / "a", smaller)
    _, b, _ = run_prepare(extracted_small, tmp_path / "b", larger)
    merged = a.merge(b, on=["dataset", "row"], suffixes=("_a", "_b"))
    was = merged["split_a"].isin(["train", "validation"])
    assert (merged.loc[was, "split_a"] == merged.loc[was, "split_b"]).all()
    assert (merged["split_b"] == "test").sum() > (merged["split_a"] == "test").sum()


def test_matched_pairs_lie_inside_the_uncertainty_box(prepared_small):
    root, raw = prepared_small
    prep = raw["prepare"]
    splits = pd.read_parquet(root / "splits.parquet")
    hsc = pd.read_parquet(root / "MOCK_HSC" / "objects.parquet").drop_duplicates("object_id").set_index("object_id")
    sigma = prep["MATCHING_UNCERTAINTIES"]
    names = [n for n, _ in prep["SETS"]]
    src_fields = prep["MATCHING_FIELDS"][names.index("MOCK_HSC")]
    checked = 0
    for target in prep["MATCHING_TARGET_SETS"]:
        objects = pd.read_parquet(root / target / "objects.parquet")
        part = splits[splits["dataset"] == target].merge(objects, on=["row", "object_id", "snapshot"])
        # objects are matched on their first row (projection 0), as matching.match does
        matched = part[part["matched"].fillna(False).astype(bool)].drop_duplicates(["snapshot", "object_id"])
        assert len(matched) > 0
        tgt_fields = prep["MATCHING_FIELDS"][names.index(target)]
        partner = hsc.loc[matched["matched_to"].astype(int)]
        for s, t, width in zip(src_fields, tgt_fields, sigma):
            assert (np.abs(partner[s].to_numpy() - matched[t].to_numpy()) <= width + 1e-9).all()
        # one partner per object, each source object used at most once per target set
        per_object = matched.drop_duplicates(["snapshot", "object_id"])
        assert not per_object["matched_to"].duplicated().any()
        checked += len(per_object)
    assert checked > 0
    assert splits.loc[splits["dataset"] == "MOCK_XRAY", "matched"].isna().all()


def test_scaler_json_round_trip_and_unit_variance(prepared_small):
    root, raw = prepared_small
    scaler = json.loads((root / "scaler.json").read_text())
    splits = pd.read_parquet(root / "splits.parquet")
    for field, entry in scaler["fields"].items():
        ref = entry["fitted_on"]
        objects = pd.read_parquet(root / ref / "objects.parquet")
        part = splits[(splits["dataset"] == ref)].sort_values("row")
        train = part["split"].to_numpy() == "train"
        values = part[f"{field}_scaled"].to_numpy()[train]
        assert abs(np.nanmean(values)) < 1e-9
        assert np.nanstd(values) == pytest.approx(1.0, abs=1e-9) or entry["scale"] == 1.0
        raw_values = objects[field].to_numpy()[train]
        np.testing.assert_allclose(values * entry["scale"] + entry["mean"], raw_values, rtol=1e-9)


def test_missing_matching_field_names_dataset(extracted_small, tmp_path):
    def mutate(raw):
        raw["prepare"]["MATCHING_FIELDS"][1] = ["z", "no_such_column"]

    with pytest.raises(KeyError, match="MOCK_FIDUCIAL.*no_such_column|no_such_column.*MOCK_FIDUCIAL"):
        run_prepare(extracted_small, tmp_path, mutate)


def test_zero_matches_warns_and_keeps_objects(extracted_small, tmp_path, caplog):
    def mutate(raw):
        raw["prepare"]["MATCHING_UNCERTAINTIES"] = [1e-9, 1e-9]

    with caplog.at_level(logging.WARNING):
        root, splits, _ = run_prepare(extracted_small, tmp_path, mutate)
    assert "no object of MOCK_FIDUCIAL matched" in caplog.text
    fid = splits[splits["dataset"] == "MOCK_FIDUCIAL"]
    assert len(fid) > 0 and not fid["matched"].any()


def test_each_split_group_lands_in_the_fraction_interval_of_its_draw(prepared_small):
    """SETS fractions are honoured: a split group's split is the interval (train |
    validation | test | unused, widths the SETS fractions) holding its stable uniform draw
    from (SPLIT_SEED, dataset, group); pooled over the sets, the share of groups per split
    is the fraction within binomial noise (4σ)."""
    root, raw = prepared_small
    seed = raw["prepare"]["SPLIT_SEED"]
    splits = pd.read_parquet(root / "splits.parquet")
    counts, expected_counts, n_total = {}, {}, 0
    for name, fractions in raw["prepare"]["SETS"]:
        groups = splits[splits["dataset"] == name].drop_duplicates("split_group")
        u = uniform_from_keys(groups["split_group"].tolist(), name, seed)
        expected = np.asarray(SPLITS)[np.searchsorted(np.cumsum(fractions), u, side="right")]
        np.testing.assert_array_equal(groups["split"].to_numpy(), expected)
        shares = dict(zip(SPLITS, [*fractions, 1.0 - sum(fractions)]))
        for split, share in shares.items():
            counts[split] = counts.get(split, 0) + int((groups["split"] == split).sum())
            expected_counts[split] = expected_counts.get(split, 0.0) + len(groups) * share
        n_total += len(groups)
    assert n_total >= 50, f"only {n_total} split groups: too few to test the shares"
    for split, mean in expected_counts.items():
        p = mean / n_total
        assert abs(counts[split] - mean) <= 4 * np.sqrt(n_total * p * (1 - p)) + 1, (split, counts, mean)


def test_command_line_equals_the_library_run_and_its_summary(prepared_small, extracted_small, tmp_path):
    """``python -m scripts.preprocessing.prepare --params P`` as a user runs it writes the
    split table, scaler and summary that :func:`prepare.run` writes for the same params,
    and the summary describes that table (image counts, split groups, fingerprint)."""
    import subprocess
    import sys

    from scripts.fingerprint import table_fingerprint
    from tests.conftest import ROOT, write_params

    source, raw = extracted_small
    root = tmp_path / "dataset"
    shutil.copytree(source, root)
    params = write_params(tmp_path / "p.yaml", raw)
    env = dict(__import__("os").environ, DATASET_PATH=str(root), PLOTS_PATH=str(tmp_path / "plots"))
    proc = subprocess.run([sys.executable, "-m", "scripts.preprocessing.prepare", "--params", str(params)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    library_root, _ = prepared_small
    splits = pd.read_parquet(root / "splits.parquet")
    pd.testing.assert_frame_equal(splits, pd.read_parquet(library_root / "splits.parquet"))
    assert json.loads((root / "scaler.json").read_text()) == \
        json.loads((library_root / "scaler.json").read_text())
    summary = json.loads((root / "prepare_summary.json").read_text())
    assert summary["splits_fingerprint"] == table_fingerprint(splits)
    counts = splits.groupby(["dataset", "split"]).size()
    assert {(d, s): n for d, per in summary["images"].items() for s, n in per.items() if n} == \
        {key: int(n) for key, n in counts.items()}
    groups = splits.drop_duplicates(["dataset", "split_group"]).groupby(["dataset", "split"]).size()
    assert summary["split_groups"] == {f"{d}/{s}": int(n) for (d, s), n in groups.items()}
    assert list((tmp_path / "plots" / "prepare").glob("match_*_hist_*.png"))
