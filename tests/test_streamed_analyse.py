"""The analyse stage without the whole representation in memory (issue 15, "Analyse at
1e6"): rows gathered and standardisers accumulated from a chunked parquet, UMAP/PCA maps
from chunks, analogues streamed, and the seeded evaluation cap on objects."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scripts.analysis.embedding_maps import fit_pca, fit_umap, pca_map, umap_fit_rows, umap_map
from scripts.analysis.inputs import evaluation_rows
from scripts.analysis.representation import (META_COLUMNS, VectorSource, gather_rows,
                                             read_representation, standardiser,
                                             streamed_standardiser, vector_columns)

DIM = 5


@pytest.fixture(scope="module")
def rep_path(tmp_path_factory):
    """Three datasets in runs that straddle row groups of 7 rows; B's vectors sit far from
    zero with a tiny spread, where a running sum of squares would lose the variance."""
    rng = np.random.default_rng(1)
    names = ["A"] * 30 + ["B"] * 11 + ["A"] * 9 + ["C"] * 25
    frame = pd.DataFrame({"dataset": names, "row": np.arange(len(names)),
                          "object_id": np.arange(len(names)) // 3, "snapshot": 99,
                          "projection": np.arange(len(names)) % 3, "split": "test"})[list(META_COLUMNS)]
    vectors = rng.normal(size=(len(names), DIM))
    vectors[30:41] = 1e4 + 1e-2 * vectors[30:41]
    vectors = vectors.astype(np.float32)
    for i, c in enumerate(vector_columns(DIM)):
        frame[c] = vectors[:, i]
    path = tmp_path_factory.mktemp("rep") / "representation.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=7)
    return path


@pytest.mark.parametrize("datasets", [None, ["B"], ["C", "A"]])
def test_source_gathers_rows_and_standardises_like_the_whole_table(rep_path, datasets):
    whole = read_representation(rep_path, datasets=datasets).vectors
    source = VectorSource(rep_path, batch_size=4)
    assert source.dim == DIM
    positions = np.array([0, 3, 4, len(whole) - 1])
    np.testing.assert_array_equal(source.take(positions, datasets), whole[positions])
    assert source.take(np.array([], dtype=np.int64), datasets).shape == (0, DIM)
    mean, std = source.standardiser(datasets)
    mean_ref, std_ref = standardiser(whole)
    np.testing.assert_allclose(mean, mean_ref, rtol=1e-12)
    np.testing.assert_allclose(std, std_ref, rtol=1e-9)


def test_streamed_standardiser_of_one_chunk_is_the_standardiser():
    X = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    X[:, 2] = 3.0                                 # constant column: std 1, as standardiser
    for got, want in zip(streamed_standardiser([X]), standardiser(X)):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="no vectors"):
        streamed_standardiser([X[:0]])


def test_gather_rows_checks_its_positions():
    chunks = [np.arange(6, dtype=np.float32).reshape(3, 2), np.ones((2, 2), np.float32)]
    np.testing.assert_array_equal(gather_rows(iter(chunks), [1, 3]), [[2, 3], [1, 1]])
    with pytest.raises(ValueError, match="increasing"):
        gather_rows(iter(chunks), [3, 1])
    with pytest.raises(IndexError, match="5 vectors"):
        gather_rows(iter(chunks), [2, 5])


def test_umap_and_pca_from_chunks_equal_the_in_memory_maps():
    """The stage's streamed maps: fitted on the same seeded rows, the rest transformed in
    the same batches whatever the chunking, so the coordinates are the in-memory ones."""
    rng = np.random.default_rng(2)
    X = np.concatenate([rng.normal(0, 1, (150, 6)), rng.normal(4, 1, (150, 6))]).astype(np.float32)
    fit = umap_fit_rows(len(X), n_neighbors=10, fit_subsample=120, seed=3)
    assert len(fit) == 120 and np.all(np.diff(fit) > 0)
    whole, _ = fit_umap(X, n_neighbors=10, fit_subsample=120, seed=3, batch_size=50)
    chunks = [X[i:i + 37] for i in range(0, len(X), 37)]
    streamed, _ = umap_map(X[fit], fit, iter(chunks), len(X), n_neighbors=10, seed=3, batch_size=50)
    np.testing.assert_array_equal(streamed, whole)
    pca_whole, pca = fit_pca(X, n_components=2)
    pca_streamed, _ = pca_map(X, iter(chunks), len(X), n_components=2)
    np.testing.assert_allclose(pca_streamed, pca_whole, atol=1e-5)
    # PCA fitted on the subsample projects every row through the subsample's axes
    pca_sub, fitted = pca_map(X[fit], iter(chunks), len(X), n_components=2)
    np.testing.assert_allclose(pca_sub, fitted.transform(X), atol=1e-5)
    with pytest.raises(ValueError, match="n=299"):
        pca_map(X, iter(chunks), len(X) - 1)


def test_streamed_analogues_are_the_exact_nearest_neighbours(rep_path):
    from sklearn.neighbors import NearestNeighbors

    from scripts.analysis.analogues import find_analogues
    from scripts.analysis.representation import read_meta

    rep = read_representation(rep_path)
    source = VectorSource(rep_path, batch_size=4)         # many chunks, for the index and queries
    table = find_analogues(source, read_meta(rep_path), "A", ["B", "C"], k=3)
    obs = rep.of("A")
    sims = rep.subset(rep.meta["dataset"].isin(["B", "C"]).to_numpy())
    mean, std = standardiser(obs.vectors)
    dist, idx = NearestNeighbors(n_neighbors=3).fit((sims.vectors - mean) / std).kneighbors(
        (obs.vectors - mean) / std)
    assert len(table) == 3 * len(obs.meta)
    assert (table["observed_row"].to_numpy()[::3] == obs.meta["row"].to_numpy()).all()
    np.testing.assert_array_equal(table["simulated_row"].to_numpy(),
                                  sims.meta["row"].to_numpy()[idx].ravel())
    np.testing.assert_allclose(table["distance"].to_numpy(), dist.ravel(), rtol=1e-4)


def test_evaluation_cap_keeps_whole_objects_of_a_seeded_draw():
    datasets = np.array(["A"] * 60 + ["B"] * 9)
    groups = np.array([f"a{i // 3}" for i in range(60)] + [f"b{i}" for i in range(9)], dtype=object)
    groups[10] = None                              # an image with no group is an object alone
    held_out = np.ones(69, dtype=bool)
    held_out[:6] = False                           # objects a0, a1 are in training
    keep, info = evaluation_rows(datasets, groups, held_out, max_objects=None, seed=0)
    assert (keep == held_out).all() and info == {}
    keep, info = evaluation_rows(datasets, groups, held_out, max_objects=10, seed=4)
    assert not keep[:6].any()
    assert list(info) == ["A"] and keep[60:].all()          # B has 9 objects: untouched
    assert info["A"]["objects"] == 10 and info["A"]["of"] == 19   # a2…a19 and the lone image
    assert info["A"]["images"] == keep[:60].sum()
    labels = pd.Series(groups[6:60]).fillna("alone").to_numpy()
    kept_objects = pd.Series(keep[6:60]).groupby(labels).agg(["all", "any"])
    assert (kept_objects["all"] == kept_objects["any"]).all()  # every image of an object, or none
    assert kept_objects["all"].sum() == 10
    again, _ = evaluation_rows(datasets, groups, held_out, max_objects=10, seed=4)
    other, _ = evaluation_rows(datasets, groups, held_out, max_objects=10, seed=5)
    assert (again == keep).all() and (other != keep).any()
