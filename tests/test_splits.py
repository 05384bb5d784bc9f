"""Identity-seeded, object-aware splits (scripts/preprocessing/splits.py)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from scripts.preprocessing.splits import (
    SPLITS,
    assign_splits,
    check_fractions,
    default_group_key,
    leaking_groups,
    uniform_from_keys,
)

SEED = 1234
N_OBJECTS = 6000
N_PROJECTIONS = 3


def simulated_objects(n_objects: int = N_OBJECTS, seed: int = 0) -> pd.DataFrame:
    """Two snapshots × projections; pairs of subhalos at snapshots 84 and 91 share a
    root descendant (the same galaxy traced through time), as in SubLink."""
    rng = np.random.default_rng(seed)
    half = n_objects // 2
    root = rng.permutation(10 * n_objects)[:half].astype(np.int64)  # distinct root ids
    rows = []
    for snapshot in (84, 91):
        subhalo = rng.permutation(5 * n_objects)[:half]  # subhalo ids differ between snapshots
        for proj in range(N_PROJECTIONS):
            rows.append(pd.DataFrame({
                "object_id": subhalo, "snapshot": snapshot, "projection": proj,
                "root_descendant_id": root,
            }))
    objects = pd.concat(rows, ignore_index=True)
    return objects.sample(frac=1.0, random_state=seed).reset_index(drop=True)


def test_check_fractions_rejects_bad_input():
    assert check_fractions((0.7, 0.2, 0.1), "D") == (0.7, 0.2, 0.1)
    with pytest.raises(ValueError, match="sum to at most 1"):
        check_fractions((0.7, 0.3, 0.1), "MOCK_HSC")
    with pytest.raises(ValueError, match="MOCK_HSC"):
        check_fractions((0.7, -0.1, 0.1), "MOCK_HSC")
    with pytest.raises(ValueError, match="three numbers"):
        check_fractions((0.7, 0.2), "MOCK_HSC")


def test_uniform_is_stable_across_processes_and_dtypes():
    """Python's hash() is salted per process; the split hash must not be."""
    keys = [97, 12, 5_000_000_001]
    here = uniform_from_keys(keys, "MOCK_FIDUCIAL", SEED)
    assert ((here >= 0) & (here < 1)).all()
    code = (
        "from scripts.preprocessing.splits import uniform_from_keys;"
        f"print(repr(uniform_from_keys({keys!r}, 'MOCK_FIDUCIAL', {SEED}).tolist()))"
    )
    for hash_seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True,
            env={**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": os.getcwd()},
        )
        assert eval(out.stdout) == here.tolist()  # noqa: S307 - our own repr output
    # an integer id that passed through a float column (missing values) keeps its split
    np.testing.assert_array_equal(
        uniform_from_keys([97.0, np.int64(12), np.float64(5_000_000_001)], "MOCK_FIDUCIAL", SEED),
        here,
    )
    # seed and dataset both enter the draw
    assert not np.array_equal(uniform_from_keys(keys, "MOCK_FIDUCIAL", SEED + 1), here)
    assert not np.array_equal(uniform_from_keys(keys, "MOCK_COMPACT", SEED), here)


def test_growing_test_fraction_never_moves_train_or_validation():
    objects = simulated_objects()
    before = assign_splits(objects, "MOCK_FIDUCIAL", (0.6, 0.2, 0.1), SEED)
    after = assign_splits(objects, "MOCK_FIDUCIAL", (0.6, 0.2, 0.2), SEED)
    for split in ("train", "validation"):
        pd.testing.assert_series_equal(before == split, after == split)
    assert (after[before == "test"] == "test").all()
    grown = (before == "unused") & (after == "test")
    assert grown.sum() > 0 and (after[before == "unused"].isin(["test", "unused"])).all()


def test_assignment_depends_on_identity_not_row_order():
    objects = simulated_objects()
    split = assign_splits(objects, "MOCK_FIDUCIAL", (0.7, 0.15, 0.1), SEED)
    shuffled = objects.sample(frac=1.0, random_state=7)
    split_shuffled = assign_splits(shuffled, "MOCK_FIDUCIAL", (0.7, 0.15, 0.1), SEED)
    pd.testing.assert_series_equal(split_shuffled.sort_index(), split)
    # a subset (e.g. a resumed or filtered table) keeps every object's split
    subset = objects.iloc[::5]
    np.testing.assert_array_equal(
        assign_splits(subset, "MOCK_FIDUCIAL", (0.7, 0.15, 0.1), SEED).to_numpy(),
        split.iloc[::5].to_numpy(),
    )


def test_root_descendant_and_projections_stay_together_and_fractions_realised():
    objects = simulated_objects()
    fractions = (0.6, 0.2, 0.1)
    split = assign_splits(objects, "MOCK_FIDUCIAL", fractions, SEED)
    assert set(split.unique()) <= set(SPLITS)
    # all snapshots and projections of one galaxy: one split
    assert leaking_groups(objects["root_descendant_id"], split) == []
    per_object = pd.Series(list(zip(objects["snapshot"], objects["object_id"])), index=objects.index)
    assert leaking_groups(per_object, split) == []
    # realised fractions per galaxy within 5 binomial standard deviations
    per_galaxy = split.groupby(objects["root_descendant_id"]).first()
    n = len(per_galaxy)
    expected = dict(zip(SPLITS, (*fractions, 1.0 - sum(fractions))))
    for name, f in expected.items():
        realised = float((per_galaxy == name).mean())
        assert abs(realised - f) < 5 * np.sqrt(f * (1 - f) / n), (name, realised, f)


def test_without_root_descendant_the_object_id_groups_projections():
    objects = simulated_objects()
    split_rd_off = assign_splits(
        objects, "MOCK_FIDUCIAL", (0.6, 0.2, 0.1), SEED, root_descendant_split=False
    )
    assert leaking_groups(objects["object_id"], split_rd_off) == []
    # snapshots of one galaxy are now split independently: with 3000 galaxies many
    # root-descendant groups straddle two splits
    assert len(leaking_groups(objects["root_descendant_id"], split_rd_off)) > 100
    observed = objects.drop(columns=["root_descendant_id", "snapshot"])
    split_obs = assign_splits(observed, "MOCK_HSC", (0.6, 0.2, 0.1), SEED)
    assert leaking_groups(observed["object_id"], split_obs) == []
    # explicit group key equals the default rule
    pd.testing.assert_series_equal(
        assign_splits(observed, "MOCK_HSC", (0.6, 0.2, 0.1), SEED, group_key="object_id"),
        assign_splits(observed.assign(object_id=observed["object_id"].astype(float)),
                      "MOCK_HSC", (0.6, 0.2, 0.1), SEED, group_key="object_id"),
    )


def test_missing_root_descendant_falls_back_to_object_id():
    objects = pd.DataFrame({
        "object_id": [1, 1, 2, 2, 3],
        "root_descendant_id": [10, 10, -1, -1, np.nan],
    })
    keys = default_group_key(objects)
    assert keys.tolist() == ["rd:10", "rd:10", "id:2", "id:2", "id:3"]
    assert default_group_key(objects, root_descendant_split=False).tolist() == [
        "id:1", "id:1", "id:2", "id:2", "id:3"
    ]


def test_multi_column_group_key_and_errors():
    objects = simulated_objects(600)
    split = assign_splits(objects, "MOCK_FIDUCIAL", (0.5, 0.25, 0.25), SEED,
                          group_key=["snapshot", "object_id"])
    per_object = pd.Series(list(zip(objects["snapshot"], objects["object_id"])), index=objects.index)
    assert leaking_groups(per_object, split) == []
    assert (split != "unused").all()  # fractions sum to 1
    with pytest.raises(KeyError, match="halo_id.*MOCK_FIDUCIAL"):
        assign_splits(objects, "MOCK_FIDUCIAL", (0.5, 0.25, 0.25), SEED, group_key="halo_id")
