"""HDF5 → tf.data streaming: pairs, determinism by step (resume), ordered reads."""
import h5py
import numpy as np
import pandas as pd
import pytest

from scripts.model.data import HDF5Images, PairSampler, ordered_dataset, pair_dataset


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
