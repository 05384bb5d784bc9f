"""HDF5 → tf.data streaming: pairs, determinism by step (resume), ordered reads."""
import h5py
import numpy as np
import pandas as pd
import pytest

from scripts.model.input_pipeline import HDF5Images, PairSampler, ordered_dataset, pair_dataset


@pytest.fixture()
def stores(tmp_path):
    """Two stores; pixel value encodes (store, row) so reads can be checked exactly."""
    paths, rows = {}, []
    for s, (name, n_obj, n_proj) in enumerate([("A", 10, 3), ("B", 7, 1)]):
        n = n_obj * n_proj
        images = np.zeros((n, 4, 4, 2), np.float32)
        images[..., 0] = s
        images[..., 1] = np.arange(n)[:, None, None]
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("images", data=images, chunks=(1, 4, 4, 2))
        paths[name] = path
        for r in range(n):
            rows.append({"dataset": name, "row": r, "group": f"{name}:{r // n_proj}"})
    return paths, pd.DataFrame(rows)


def test_reader_reads_requested_rows_in_order(stores):
    paths, _ = stores
    reader = HDF5Images(paths)
    out = reader.read(np.array([1, 0, 0, 1]), np.array([3, 5, 5, 0]))
    assert out[:, 0, 0, 0].tolist() == [1, 0, 0, 1]
    assert out[:, 0, 0, 1].tolist() == [3, 5, 5, 0]


def test_projection_pairs_are_same_object_other_projection(stores):
    paths, table = stores
    sampler = PairSampler(table, list(paths), batch_size=8, positives="projections", seed=3)
    assert sampler.steps_per_epoch == 17 // 8
    for step in range(6):
        sa, ra, sb, rb = sampler.batch(step)
        assert (sa == sb).all()
        for s, a, b in zip(sa, ra, rb):
            if s == 0:  # three projections: a different one, same object
                assert a != b and a // 3 == b // 3
            else:  # one projection: the same image
                assert a == b
        # every object at most once per batch
        assert len({(s, a // (3 if s == 0 else 1)) for s, a in zip(sa, ra)}) == 8


def test_batches_depend_only_on_step(stores):
    paths, table = stores
    one = PairSampler(table, list(paths), batch_size=5, positives="augmentations", seed=1)
    two = PairSampler(table.sample(frac=1, random_state=0).sort_index(), list(paths), 5,
                      "augmentations", seed=1)
    for step in (0, 3, 11, 40):
        for x, y in zip(one.batch(step), two.batch(step)):
            np.testing.assert_array_equal(x, y)
    # a different epoch reshuffles
    assert not np.array_equal(one.batch(0)[1], one.batch(one.steps_per_epoch)[1])


def test_resumed_stream_equals_uninterrupted(stores):
    paths, table = stores
    reader = HDF5Images(paths)
    sampler = PairSampler(table, list(paths), batch_size=4, positives="projections", seed=7)
    full = [(a.numpy(), b.numpy()) for a, b in pair_dataset(sampler, reader, 0, 6)]
    resumed = [(a.numpy(), b.numpy()) for a, b in pair_dataset(sampler, reader, 3, 3)]
    for (a1, b1), (a2, b2) in zip(full[3:], resumed):
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(b1, b2)
    assert full[0][0].shape == (4, 4, 4, 2)


def test_ordered_dataset_keeps_order_and_last_partial_batch(stores):
    paths, _ = stores
    reader = HDF5Images(paths)
    rows = np.arange(7)[::-1]
    batches = [b.numpy() for b in ordered_dataset(reader, np.ones(7, int), rows, batch_size=3)]
    assert [len(b) for b in batches] == [3, 3, 1]
    assert np.concatenate(batches)[:, 0, 0, 1].tolist() == rows.tolist()


def test_errors_name_the_problem(stores, tmp_path):
    paths, table = stores
    with pytest.raises(FileNotFoundError, match="run the extract stage"):
        HDF5Images({"X": tmp_path / "nope.h5"})
    with pytest.raises(ValueError, match="BATCH_SIZE"):
        PairSampler(table, list(paths), batch_size=1000)
    with pytest.raises(ValueError, match="no image store"):
        PairSampler(table, ["A"], batch_size=2)


def _layouts(tmp_path, images):
    """The same images as one chunk per row (extract), contiguous, and gzip-compressed."""
    out = {}
    for name, kwargs in [("chunked", {"chunks": (1,) + images.shape[1:]}), ("contiguous", {}),
                         ("gzip", {"chunks": (2,) + images.shape[1:], "compression": "gzip"})]:
        path = tmp_path / f"{name}.h5"
        with h5py.File(path, "w") as f:
            f.create_dataset("images", data=images, **kwargs)
        out[name] = path
    return out


def test_raw_offset_reads_equal_h5py_in_every_layout_and_cache_mode(tmp_path):
    """Raw-offset reads (chunked and contiguous stores), the h5py fallback (compressed) and
    the in-memory cache give exactly h5py's pixels, also with repeated and unsorted rows."""
    from scripts.model.input_pipeline import row_offsets

    images = np.random.default_rng(0).normal(size=(9, 5, 6, 3)).astype(np.float32)
    paths = _layouts(tmp_path, images)
    rows = np.array([8, 0, 3, 3, 7, 1])
    for name, path in paths.items():
        with h5py.File(path) as f:
            assert (row_offsets(f["images"]) is None) == (name == "gzip")
        for cache in ("off", "on"):
            reader = HDF5Images({name: path}, cache=cache)
            assert reader.cached == (cache == "on")
            np.testing.assert_array_equal(reader.read(np.zeros(len(rows), int), rows), images[rows])
            reader.close()


def test_row_never_written_reads_as_fill_value(tmp_path):
    path = tmp_path / "partial.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("images", (4, 2, 2, 1), np.float32, chunks=(1, 2, 2, 1), fillvalue=0)
        ds[1] = 5.0
    reader = HDF5Images({"P": path})
    assert reader.read(np.zeros(2, int), np.array([0, 1]))[:, 0, 0, 0].tolist() == [0.0, 5.0]


def test_parallel_reads_from_threads_are_exact(stores):
    """tf.data calls the reader from several threads at once: every read stays exact."""
    from concurrent.futures import ThreadPoolExecutor

    paths, _ = stores
    reader = HDF5Images(paths)
    rng = np.random.default_rng(1)
    jobs = [(rng.integers(0, 2, 16), rng.integers(0, 7, 16)) for _ in range(64)]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda j: reader.read(*j), jobs))
    for (s, r), out in zip(jobs, results):
        assert out[:, 0, 0, 0].tolist() == s.tolist() and out[:, 0, 0, 1].tolist() == r.tolist()


def test_cache_auto_follows_available_memory(stores, monkeypatch):
    from scripts.model import input_pipeline

    paths, _ = stores
    monkeypatch.setattr(input_pipeline, "available_memory_bytes", lambda: 10**12)
    assert HDF5Images(paths, cache="auto").cached
    monkeypatch.setattr(input_pipeline, "available_memory_bytes", lambda: 100)
    assert not HDF5Images(paths, cache="auto").cached
    with pytest.raises(ValueError, match="cache"):
        HDF5Images(paths, cache="sometimes")


def test_bench_input_runs_every_reader_and_prints_the_gpu_ratio(caplog):
    """``bench/bench_input.py`` end to end on a tiny store (no timing asserted: speed is
    benchmarked, not tested): every reader and the full pipeline give a finite rate, and at
    the GPU-demand image size the log states the ratio to the published GPU demand."""
    import logging
    import math

    from bench import bench_input

    quietened = {name: logging.getLogger(name).level for name in ("scripts", "absl", "tensorflow")}
    try:
        with caplog.at_level(logging.INFO, logger="bench.bench_input"):
            assert bench_input.main(["--batches", "2", "--images", "256",
                                     "--image", str(bench_input.GPU_DEMAND_IMAGE), "--skip-step"]) == 0
    finally:  # main quietens these loggers for its own output; later tests need them as they were
        for name, level in quietened.items():
            logging.getLogger(name).setLevel(level)
    text = caplog.text
    assert "reads alone, one thread" in text and "tf.data raw batches" in text
    assert "GPU demand from published throughput" in text and "not measured on a GPU" in text
    rates = bench_input.run(batches=2, steps=1, n_images=256, image=32, skip_step=True)
    for key in ("read_offsets_pairs_per_s", "read_h5py_pairs_per_s", "read_cached_pairs_per_s",
                "raw_pairs_per_s", "raw_h5py_pairs_per_s", "raw_cached_pairs_per_s", "pipeline_pairs_per_s"):
        assert math.isfinite(rates[key]) and rates[key] > 0, key
    assert "ratio" not in rates  # the step is not timed with --skip-step
