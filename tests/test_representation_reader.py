"""Streaming a representation parquet: iter_vectors / count_rows / read_meta against the
whole-table read_representation, and neighbour indexes (plain and AnalogueFinder) built
from the stream."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from scripts.analysis.neighbours import NeighbourIndex
from scripts.analysis.representation import (META_COLUMNS, count_rows, iter_vectors, read_meta,
                                             read_representation, vector_columns)

DIM = 6


@pytest.fixture(scope="module")
def rep_path(tmp_path_factory):
    """A representation table of 3 datasets in runs that straddle row groups of 7 rows."""
    rng = np.random.default_rng(0)
    names = ["A"] * 12 + ["B"] * 5 + ["A"] * 4 + ["C"] * 20
    frame = pd.DataFrame({"dataset": names, "row": np.arange(len(names)),
                          "object_id": np.arange(len(names)) + 100, "snapshot": 99,
                          "projection": 0, "split": "test"})[list(META_COLUMNS)]
    vectors = rng.normal(size=(len(names), DIM)).astype(np.float32)
    for i, c in enumerate(vector_columns(DIM)):
        frame[c] = vectors[:, i]
    path = tmp_path_factory.mktemp("rep") / "representation.parquet"
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=7)
    return path


@pytest.mark.parametrize("datasets", [None, ["A"], ["C", "B"], ["missing"]])
def test_stream_equals_whole_read(rep_path, datasets):
    whole = read_representation(rep_path, datasets=datasets)
    chunks = list(iter_vectors(rep_path, datasets, batch_size=5))
    assert all(0 < len(c) <= 5 and c.dtype == np.float32 and c.shape[1] == DIM for c in chunks)
    streamed = np.concatenate(chunks) if chunks else np.empty((0, DIM), np.float32)
    np.testing.assert_array_equal(streamed, whole.vectors)
    assert count_rows(rep_path, datasets) == len(whole.vectors)
    pd.testing.assert_frame_equal(read_meta(rep_path, datasets), whole.meta)


def test_index_from_stream_equals_index_from_whole(rep_path):
    whole = read_representation(rep_path, datasets=["A", "C"])
    n = count_rows(rep_path, ["A", "C"])
    streamed = NeighbourIndex().fit_chunks(iter_vectors(rep_path, ["A", "C"], batch_size=4), n=n)
    D, I = streamed.kneighbors(whole.vectors[:9], 3)
    D_ref, I_ref = NeighbourIndex().fit(whole.vectors).kneighbors(whole.vectors[:9], 3)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_array_equal(D, D_ref)


def test_missing_file_says_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="analyse"):
        next(iter_vectors(tmp_path / "none.parquet"))
    with pytest.raises(FileNotFoundError, match="analyse"):
        count_rows(tmp_path / "none.parquet", ["A"])


def test_analogue_finder_streamed_equals_in_memory(rep_path):
    from scripts.analysis.analogues import AnalogueFinder

    rep = read_representation(rep_path)
    reference = rep.of("B").vectors
    queries = rep.vectors[::3]
    in_memory = AnalogueFinder.from_representation(rep, ["A", "C"], reference, chunk_rows=4)
    streamed = AnalogueFinder.from_file(rep_path, ["A", "C"], reference, batch_size=5)
    pd.testing.assert_frame_equal(streamed.meta, in_memory.meta)
    D, I = streamed.query(queries, 4)
    D_mem, I_mem = in_memory.query(queries, 4)
    np.testing.assert_array_equal(I, I_mem)
    np.testing.assert_array_equal(D, D_mem)
    # the same as standardising the whole simulated set at once and fitting it
    sims = rep.subset(rep.meta["dataset"].isin(["A", "C"]).to_numpy())
    whole = NeighbourIndex().fit(streamed._z(sims.vectors))
    D_whole, I_whole = whole.kneighbors(streamed._z(queries), 4)
    np.testing.assert_array_equal(I, I_whole)
    np.testing.assert_array_equal(D, D_whole)
