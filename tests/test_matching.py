"""Uncertainty-box matching (scripts/preprocessing/matching.py) and its plots."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy.stats import ks_2samp

from scripts.preprocessing.matching import (
    match,
    match_positions,
    match_positions_bruteforce,
)
from scripts.preprocessing.prepare_plots import plot_matching

SOURCE_FIELDS = ["z", "mag_I", "petro_r90_arcsec"]
TARGET_FIELDS = ["photoz", "i_cmodel_mag", "petro_r90_arcsec"]
SIGMA = [0.15, 0.15, 0.15]


def samples(n_source=40_000, n_target=3_000, seed=1):
    """Source N(0, 1) in 3 fields (large); target N(0.5, 0.6) (shifted and narrower)."""
    rng = np.random.default_rng(seed)
    source = pd.DataFrame(rng.normal(0.0, 1.0, (n_source, 3)), columns=SOURCE_FIELDS)
    target = pd.DataFrame(rng.normal(0.5, 0.6, (n_target, 3)), columns=TARGET_FIELDS)
    source.index = 100_000 + np.arange(n_source)  # index labels ≠ positions
    return source, target


def matched_tables(result, source, target):
    pairs = result.pairs[result.pairs["matched"]]
    return (source.loc[pairs["source_index"].to_numpy(dtype=np.int64)],
            target.loc[pairs["target_index"].to_numpy()])


@pytest.mark.parametrize("method", ["uniform", "nearest"])
def test_matching_reproduces_target_distribution(method):
    source, target = samples()
    result = match(source, target, SOURCE_FIELDS, TARGET_FIELDS, SIGMA, seed=3, method=method)
    matched_source, matched_target = matched_tables(result, source, target)
    assert result.matched_fraction > 0.95
    for s_field, t_field in zip(SOURCE_FIELDS, TARGET_FIELDS):
        assert ks_2samp(source[s_field], target[t_field]).pvalue < 1e-3  # raw: different
        assert ks_2samp(matched_source[s_field], target[t_field]).pvalue > 0.05
        assert ks_2samp(matched_source[s_field], matched_target[t_field]).pvalue > 0.05
    # every source at most once, every pair inside its uncertainty box
    assert matched_source.index.is_unique
    diff = np.abs(matched_source[SOURCE_FIELDS].to_numpy() - matched_target[TARGET_FIELDS].to_numpy())
    assert (diff <= np.asarray(SIGMA) * (1 + 1e-12)).all()


@pytest.mark.parametrize("method", ["uniform", "nearest"])
def test_tree_equals_bruteforce_and_is_deterministic(method):
    rng = np.random.default_rng(5)
    source_xy = rng.normal(0, 1, (3000, 3)) / 0.2
    target_xy = rng.normal(0.3, 0.7, (1500, 3)) / 0.2
    tree = match_positions(source_xy, target_xy, seed=11, method=method)
    np.testing.assert_array_equal(tree, match_positions_bruteforce(source_xy, target_xy, 11, method))
    np.testing.assert_array_equal(tree, match_positions(source_xy, target_xy, seed=11, method=method))
    assert 0.2 < (tree >= 0).mean() < 1.0  # the depleted core leaves some targets unmatched
    if method == "uniform":
        assert not np.array_equal(tree, match_positions(source_xy, target_xy, seed=12, method=method))
    used = tree[tree >= 0]
    assert len(np.unique(used)) == len(used)


@pytest.mark.parametrize("method", ["uniform", "nearest"])
def test_chunked_and_depleted_paths_equal_bruteforce(method, monkeypatch):
    """Many small chunks (adaptive chunk size / growing k) still give the same matches."""
    import functools

    from scripts.preprocessing import matching

    monkeypatch.setattr(matching, "_uniform", functools.partial(matching._uniform, max_pairs=3000))
    monkeypatch.setattr(matching, "_CHUNK", 100)
    rng = np.random.default_rng(8)
    # crowded boxes, as many targets as sources: sources get used up around the targets
    source_xy = rng.normal(0, 1, (2000, 2)) / 0.3
    target_xy = rng.normal(0, 0.5, (2000, 2)) / 0.3
    tree = match_positions(source_xy, target_xy, seed=2, method=method)
    np.testing.assert_array_equal(tree, match_positions_bruteforce(source_xy, target_xy, 2, method))
    assert 0.3 < (tree >= 0).mean() < 1.0


def test_nearest_picks_the_closest_free_source():
    source_xy = np.array([[0.9, 0.0], [0.1, 0.1], [0.5, -0.5], [3.0, 3.0]])
    target_xy = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]])
    picked = match_positions(source_xy, target_xy, seed=0, method="nearest")
    # the targets are identical, so whichever order: closest first, the far source never
    assert sorted(picked.tolist()) == [-1, 0, 1, 2]
    assert picked[np.random.default_rng(0).permutation(4)].tolist() == [1, 2, 0, -1]


def test_matched_fraction_when_source_is_too_small():
    rng = np.random.default_rng(2)
    source = pd.DataFrame({"x": rng.uniform(0, 1, 200)})
    target = pd.DataFrame({"x": rng.uniform(0, 1, 1000)})
    result = match(source, target, ["x"], ["x"], [2.0], seed=0)  # every source in every box
    assert result.n_matched == 200
    assert result.matched_fraction == pytest.approx(0.2)
    assert result.pairs["source_index"].dropna().is_unique


def test_object_level_matching_with_projections():
    """Projections collapse to one object (first row); all projections follow a match."""
    rng = np.random.default_rng(4)
    n_src, n_tgt, n_proj = 500, 120, 3
    src_obj = pd.DataFrame({"object_id": np.arange(n_src), "snapshot": 84,
                            "mass": rng.normal(10, 0.5, n_src)})
    # the observed set has no snapshot: its objects are keyed by object_id alone
    tgt_obj = pd.DataFrame({"object_id": np.arange(n_tgt) * 7, "logm": rng.normal(10, 0.3, n_tgt)})
    source = src_obj.loc[src_obj.index.repeat(n_proj)].assign(projection=np.tile(range(n_proj), n_src))
    target = tgt_obj.loc[tgt_obj.index.repeat(n_proj)].assign(projection=np.tile(range(n_proj), n_tgt))
    # later projections carry a far-off value: only the FIRST row of an object counts
    source.loc[source["projection"] > 0, "mass"] = 99.0
    source, target = source.reset_index(drop=True), target.reset_index(drop=True)

    result = match(source, target, ["mass"], ["logm"], {"logm": 0.05}, seed=1,
                   source_group=["snapshot", "object_id"], target_group="object_id",
                   source_name="TNG", target_name="HSC")
    assert len(result.pairs) == n_tgt
    assert list(result.pairs.columns) == [
        "target_object_id", "matched", "source_snapshot", "source_object_id"]
    assert result.pairs["source_object_id"].dtype == "Int64"
    by_object = match(src_obj, tgt_obj, ["mass"], ["logm"], [0.05], seed=1)
    # same draws as matching the one-row-per-object tables directly
    np.testing.assert_array_equal(result.pairs["matched"], by_object.pairs["matched"])
    np.testing.assert_array_equal(
        result.pairs["source_object_id"].dropna().to_numpy(),
        src_obj["object_id"].to_numpy()[by_object.pairs["source_index"].dropna().to_numpy(dtype=int)],
    )

    rows_t = result.target_rows(target)
    rows_s = result.source_rows(source)
    assert rows_t.index.equals(target.index) and rows_s.index.equals(source.index)
    # projections share the outcome and the partner
    assert (rows_t.groupby(target["object_id"])["matched"].nunique() == 1).all()
    assert (rows_t.groupby(target["object_id"])["source_object_id"].nunique(dropna=False) == 1).all()
    assert rows_s["matched"].sum() == n_proj * result.n_matched
    # the two views agree: the partner of a target is the source whose partner is the target
    t = rows_t[rows_t["matched"]].drop_duplicates("source_object_id")
    s = rows_s[rows_s["matched"]].drop_duplicates("target_object_id")
    partner_of = dict(zip(s["target_object_id"], source.loc[s.index, "object_id"]))
    assert all(partner_of[target.loc[i, "object_id"]] == t.loc[i, "source_object_id"] for i in t.index)
    with pytest.raises(KeyError, match="snapshot.*HSC"):
        match(source, target, ["mass"], ["logm"], [0.05], seed=1,
              group=["snapshot", "object_id"], source_name="TNG", target_name="HSC")


def test_missing_values_zero_matches_and_errors(caplog):
    source = pd.DataFrame({"a": [0.0, np.nan, 0.2], "b": [0.0, 0.0, np.nan]})
    target = pd.DataFrame({"a": [0.0, 0.0, np.nan], "b": [0.0, 0.0, 0.0]})
    result = match(source, target, ["a", "b"], ["a", "b"], [0.5, 0.5], seed=0)
    # only source 0 is complete; target 2 has a missing field
    assert result.pairs["matched"].tolist().count(True) == 1
    assert not result.pairs["matched"].iloc[2]
    assert result.pairs["source_index"].dropna().tolist() == [0]

    far = pd.DataFrame({"a": [50.0, 60.0], "b": [0.0, 0.0]})
    with caplog.at_level(logging.WARNING, logger="scripts.preprocessing.matching"):
        none = match(source, far, ["a", "b"], ["a", "b"], [0.5, 0.5], seed=0,
                     source_name="MOCK_FIDUCIAL", target_name="MOCK_HSC")
    assert none.matched_fraction == 0.0
    assert "MOCK_FIDUCIAL" in caplog.text and "MOCK_HSC" in caplog.text

    with pytest.raises(KeyError, match="mag_I.*MOCK_COMPACT"):
        match(source, target, ["a", "mag_I"], ["a", "b"], [0.5, 0.5], seed=0, source_name="MOCK_COMPACT")
    with pytest.raises(ValueError, match="> 0"):
        match(source, target, ["a", "b"], ["a", "b"], [0.5, 0.0], seed=0)
    with pytest.raises(ValueError, match="uncertainties"):
        match(source, target, ["a", "b"], ["a", "b"], [0.5], seed=0)
    with pytest.raises(ValueError, match="method"):
        match(source, target, ["a", "b"], ["a", "b"], [0.5, 0.5], seed=0, method="hungarian")


def test_plots_written_as_valid_nontrivial_pngs(tmp_path):
    source, target = samples(n_source=4000, n_target=500)
    result = match(source, target, SOURCE_FIELDS, TARGET_FIELDS, SIGMA, seed=0)
    matched_source, matched_target = matched_tables(result, source, target)
    paths = plot_matching(source, target, matched_source, matched_target,
                          SOURCE_FIELDS, TARGET_FIELDS, tmp_path / "prepare",
                          source_name="MOCK_FIDUCIAL", target_name="MOCK_HSC")
    assert len(paths) == 3 + 2  # a histogram per field, a scatter per consecutive pair
    assert len({p.name for p in paths}) == len(paths)
    for path in paths:
        assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            pixels = np.asarray(image.convert("RGB"), dtype=np.float64)
        assert pixels.shape[0] > 200 and pixels.shape[1] > 400
        assert pixels.std() > 10  # not blank
        assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # drawn content, not a flat fill
