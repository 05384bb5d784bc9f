"""Sharded image stores (``extract.SHARD_SIZE``): ``images.h5`` as an HDF5 virtual dataset
over ``images-00000.h5``, … gives the pixels of the single-file store to every reader
(train's byte-offset, h5py and cache modes, analyse), a rerun rewrites only the shards
whose images changed, and a bad SHARD_SIZE names the key."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

from bench.bench_shards import reshard
from scripts import image_store
from scripts.params import ParamsError, parse_params
from scripts.preprocessing import extract
from tests.conftest import demo_raw_params
from tests.test_extract import STELLAR, only, read_outputs, run_extract

SHARD = 7  # small enough that the small universe's stellar set spans several shards


def stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_ino, st.st_mtime_ns


@pytest.fixture(scope="module")
def both(small_universe, tmp_path_factory):
    """The stellar set of the small universe extracted once as one file, once sharded."""
    reports, folders = {}, {}
    for name, shard_size in (("single", None), ("sharded", SHARD)):
        raw = demo_raw_params()
        raw["extract"].update(IMAGE_SIZE=32, NUM_WORKERS=1, SIZE_CHUNKS=16, SHARD_SIZE=shard_size)
        folders[name] = tmp_path_factory.mktemp(name)
        reports[name] = run_extract(only(raw, [STELLAR]), small_universe, folders[name])[STELLAR]
    return folders["single"] / STELLAR, folders["sharded"] / STELLAR, reports


def test_sharded_extract_equals_the_single_file_store(both):
    single, sharded, reports = both
    t1, i1 = read_outputs(single.parent, STELLAR)
    t2, i2 = read_outputs(sharded.parent, STELLAR)  # h5py through the index
    pd.testing.assert_frame_equal(t1, t2)
    assert len(i1) > 2 * SHARD
    np.testing.assert_array_equal(i1, i2)  # bitwise: NaN-free float32 stores
    assert np.isfinite(i2).all()
    pd.testing.assert_frame_equal(pd.read_parquet(single / extract.PROVENANCE),
                                  pd.read_parquet(sharded / extract.PROVENANCE))

    n_shards = -(-len(i1) // SHARD)
    files = image_store.shard_files(sharded)
    assert [p.name for p in files] == [image_store.shard_name(k) for k in range(n_shards)]
    assert image_store.shard_files(single) == []
    assert reports["sharded"]["shards"] == reports["sharded"]["shards_written"] == n_shards
    assert reports["single"]["shards"] == 0
    with h5py.File(sharded / "images.h5") as f:
        dset = f["images"]
        assert dset.is_virtual and list(dset.attrs["filters"]) == list(h5py.File(
            single / "images.h5")["images"].attrs["filters"])
        assert dset.attrs["shard_size"] == SHARD
        found = image_store.shards(dset, sharded / "images.h5")
    assert [(s.first, s.rows) for s in found] == [
        (k * SHARD, min(SHARD, len(i1) - k * SHARD)) for k in range(n_shards)]
    for shard in found:  # each shard: the same layout as a single-file store, its own rows
        with h5py.File(shard.path) as f:
            assert not f["images"].is_virtual and f["images"].chunks == (1,) + i1.shape[1:]
            np.testing.assert_array_equal(f["images"][:], i1[shard.first:shard.first + shard.rows])
    # the index is small: it holds the mapping, not the pixels
    assert (sharded / "images.h5").stat().st_size < (single / "images.h5").stat().st_size / 10


def test_train_and_analyse_readers_read_shards_like_the_single_file(both):
    from scripts.analysis.representation import StoreRows
    from scripts.model.input_pipeline import HDF5Images, ordered_dataset

    single, sharded, _ = both
    with h5py.File(single / "images.h5") as f:
        truth = f["images"][:]
    n = len(truth)
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, n, 40), [n - 1, 0, SHARD - 1, SHARD, SHARD, 2 * SHARD]])

    direct = HDF5Images({"S": sharded / "images.h5"})
    where = direct._offsets["S"]
    assert where is not None and len(where.files) == -(-n // SHARD)  # byte offsets per shard
    readers = {"direct": direct, "h5py": HDF5Images({"S": sharded / "images.h5"}, direct=False),
               "cache": HDF5Images({"S": sharded / "images.h5"}, cache="on")}
    assert readers["h5py"]._offsets["S"] is None and readers["cache"].cached
    for name, reader in readers.items():
        np.testing.assert_array_equal(reader.read(np.zeros(len(rows), int), rows), truth[rows],
                                      err_msg=name)
    # mixed with a single-file store, in one read
    mixed = HDF5Images({"F": single / "images.h5", "S": sharded / "images.h5"})
    stores = rng.integers(0, 2, len(rows))
    np.testing.assert_array_equal(mixed.read(stores, rows), truth[rows])
    batches = list(ordered_dataset(direct, np.zeros(n, int), np.arange(n), batch_size=5))
    np.testing.assert_array_equal(np.concatenate([b.numpy() for b in batches]), truth)
    for reader in (*readers.values(), mixed):
        reader.close()

    with StoreRows(sharded / "images.h5", rows) as analysed:  # analyse's reader
        assert analysed.shape == (len(rows),) + truth.shape[1:]
        np.testing.assert_array_equal(analysed[np.arange(len(rows))], truth[rows])
        np.testing.assert_array_equal(analysed[3:9], truth[rows[3:9]])
        np.testing.assert_array_equal(analysed[2], truth[rows[2]])


def test_analyse_embeds_a_sharded_store_like_the_single_file(both, tmp_path):
    """analyse's representation step (image shape, dataset selection, streamed embedding)
    on the sharded store writes the table it writes from the single file."""
    from scripts.analysis.representation import (compute_representations, image_shape,
                                                 read_representation, select_datasets)

    single, sharded, _ = both
    table = pd.read_parquet(single / "objects.parquet")
    todo = table[["dataset", "row", "object_id", "snapshot", "projection"]].assign(split="test")
    todo = todo.sample(frac=1.0, random_state=0).reset_index(drop=True)  # across shards

    def embed(images):  # a fixed "encoder": a strided subset of the pixels
        return np.ascontiguousarray(images.reshape(len(images), -1)[:, ::53])

    tables = {}
    for name, root in (("single", single.parent), ("sharded", sharded.parent)):
        assert image_shape(root, STELLAR) == (32, 32, 3)
        assert select_datasets([STELLAR], root, lambda shape: "")[0] == [STELLAR]
        out = tmp_path / f"{name}.parquet"
        assert compute_representations(embed, todo, root, out, batch_size=6) == len(todo)
        tables[name] = read_representation(out)
    pd.testing.assert_frame_equal(tables["single"].meta, tables["sharded"].meta)
    np.testing.assert_array_equal(tables["single"].vectors, tables["sharded"].vectors)


def test_other_virtual_datasets_are_read_through_h5py(tmp_path):
    """A virtual dataset not laid out like extract's shards (here: each source holds the
    left or right half of every image) has no byte offsets per row: the reader reads it
    through h5py, exactly."""
    from scripts.model.input_pipeline import HDF5Images

    truth = np.random.default_rng(2).normal(size=(10, 4, 6, 2)).astype(np.float32)
    layout = h5py.VirtualLayout(shape=truth.shape, dtype=np.float32)
    for k, cols in enumerate((slice(0, 3), slice(3, 6))):
        with h5py.File(tmp_path / f"half{k}.h5", "w") as f:
            f.create_dataset("images", data=truth[:, :, cols], chunks=(1, 4, 3, 2))
        layout[:, :, cols] = h5py.VirtualSource(f"half{k}.h5", "images", shape=(10, 4, 3, 2))
    with h5py.File(tmp_path / "images.h5", "w") as f:
        f.create_virtual_dataset("images", layout)
    reader = HDF5Images({"V": tmp_path / "images.h5"})
    assert reader._offsets["V"] is None
    rows = np.array([9, 0, 4, 4])
    np.testing.assert_array_equal(reader.read(np.zeros(4, int), rows), truth[rows])
    reader.close()
    (tmp_path / "half1.h5").unlink()
    with pytest.raises(FileNotFoundError, match="half1.h5"):
        HDF5Images({"V": tmp_path / "images.h5"})


def test_a_missing_shard_is_an_error_not_fill_values(both, tmp_path):
    from scripts.analysis.representation import StoreRows
    from scripts.model.input_pipeline import HDF5Images

    _, sharded, _ = both
    copy = tmp_path / "moved"  # the names in the index are relative: the folder can move
    shutil.copytree(sharded, copy)
    reader = HDF5Images({"S": copy / "images.h5"})
    assert reader._offsets["S"].files[0].parent == copy
    reader.close()
    (copy / image_store.shard_name(1)).unlink()
    with pytest.raises(FileNotFoundError, match=r"images-00001\.h5.*rerun the extract stage"):
        HDF5Images({"S": copy / "images.h5"})
    with pytest.raises(FileNotFoundError, match=r"images-00001\.h5"):
        StoreRows(copy / "images.h5", [0])


def _brighten(path: Path, factor: float = 1.5) -> None:
    """Change the pixels of one FITS image (every image HDU) in place."""
    with fits.open(path, mode="update") as hdus:
        for hdu in hdus:
            if hdu.data is not None and hdu.is_image:
                hdu.data = hdu.data * np.float32(factor)


def test_rerun_rewrites_only_the_shard_whose_images_changed(small_universe, tmp_path):
    raw_root, illustris = small_universe
    raw = tmp_path / "raw"
    shutil.copytree(raw_root / STELLAR, raw / STELLAR)
    universe = (raw, illustris)
    params = demo_raw_params()
    params["extract"].update(IMAGE_SIZE=32, NUM_WORKERS=1, SIZE_CHUNKS=16, SHARD_SIZE=SHARD)
    params = only(params, [STELLAR])
    out = tmp_path / "d"
    first = run_extract(params, universe, out)[STELLAR]
    folder = out / STELLAR
    before = {p.name: stat(p) for p in image_store.shard_files(folder)}
    assert len(before) == first["shards"] >= 3
    _, images_before = read_outputs(out, STELLAR)

    table = pd.read_parquet(folder / "objects.parquet")
    row = SHARD + 2  # in shard 1
    changed = image_store.shard_name(row // SHARD)
    _brighten(raw / STELLAR / "images" / table["file"][row])
    second = run_extract(params, universe, out)[STELLAR]
    assert second["processed"] == 1 and second["shards_written"] == 1
    after = {p.name: stat(p) for p in image_store.shard_files(folder)}
    assert after.keys() == before.keys()
    assert {n for n in after if after[n] != before[n]} == {changed}  # the others: same inode, mtime
    t1, i1 = read_outputs(out, STELLAR)
    assert not np.array_equal(i1[row], images_before[row])
    np.testing.assert_array_equal(np.delete(i1, row, 0), np.delete(images_before, row, 0))

    fresh = run_extract(params, universe, tmp_path / "fresh")[STELLAR]  # equals a fresh run
    assert fresh["processed"] == fresh["kept_images"]
    t2, i2 = read_outputs(tmp_path / "fresh", STELLAR)
    pd.testing.assert_frame_equal(t1, t2)
    np.testing.assert_array_equal(i1, i2)

    # nothing changed: nothing is written but the index
    third = run_extract(params, universe, out)[STELLAR]
    assert third["processed"] == 0 and third["shards_written"] == 0
    assert {p.name: stat(p) for p in image_store.shard_files(folder)} == after

    # the last image removed: only the last shard changes (rows before it do not move)
    last = raw / STELLAR / "images" / t1["file"].iloc[-1]
    last.rename(tmp_path / last.name)
    fourth = run_extract(params, universe, out)[STELLAR]
    assert fourth["processed"] == 0 and fourth["kept_images"] == len(t1) - 1
    final = {p.name: stat(p) for p in image_store.shard_files(folder)}
    last_shard = image_store.shard_name((len(t1) - 2) // SHARD)
    assert {n for n in final if final[n] != after.get(n)} == {last_shard}
    t3, i3 = read_outputs(out, STELLAR)
    pd.testing.assert_frame_equal(t3, t1.iloc[:-1])
    np.testing.assert_array_equal(i3, i1[:-1])

    # back to one file: from the shards, without processing an image; the shards go
    params["extract"]["SHARD_SIZE"] = None
    fifth = run_extract(params, universe, out)[STELLAR]
    assert fifth["processed"] == 0 and fifth["shards"] == 0
    assert image_store.shard_files(folder) == []
    with h5py.File(folder / "images.h5") as f:
        assert not f["images"].is_virtual
    np.testing.assert_array_equal(read_outputs(out, STELLAR)[1], i3)


def test_train_runs_on_a_sharded_store_like_on_one_file(tmp_path):
    """Two training steps on a sharded copy of a store give the losses of the single file."""
    from tests.test_train import _trainer, make_params, write_synthetic

    single = tmp_path / "single"
    write_synthetic(single, n_train=16, n_val=16)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(single / "splits.parquet", sharded / "splits.parquet")
    reshard(single / "SYNTH" / "images.h5", sharded / "SYNTH", 10)
    assert len(image_store.shard_files(sharded / "SYNTH")) == 10  # 32 objects × 3 projections

    params = make_params(epochs=1, steps_per_epoch=2, checkpoint_every=100, batch_size=8)
    losses = {}
    for name, root in (("single", single), ("sharded", sharded)):
        losses[name] = []
        trainer = _trainer(params, root, tmp_path / f"run_{name}",
                           step_callback=lambda step, logs, out=losses[name]: out.append(logs["train/loss"]))
        summary = trainer.fit()
        assert summary["steps"] == 2 and summary["stopping_reason"] == "completed"
        assert np.isfinite(summary["final_val_loss"])
    assert len(losses["sharded"]) == 2 and np.isfinite(losses["sharded"]).all()
    np.testing.assert_allclose(losses["sharded"], losses["single"], rtol=1e-6)


@pytest.mark.parametrize("value", [0, -5, 2.5, "many", True])
def test_bad_shard_size_names_the_key(value):
    raw = demo_raw_params()
    raw["extract"]["SHARD_SIZE"] = value
    with pytest.raises(ParamsError, match=r"extract\.SHARD_SIZE = .*expected an integer in \[1,"):
        parse_params(raw)


def test_shard_size_defaults_to_one_file():
    raw = demo_raw_params()
    assert parse_params(raw).extract.shard_size is None
    raw["extract"]["SHARD_SIZE"] = 5000
    assert parse_params(raw).extract.shard_size == 5000


FD_LIMIT_SCRIPT = """
import json, resource, sys
import numpy as np
from scripts.analysis.representation import StoreRows
from scripts.model.input_pipeline import HDF5Images

index, truth = sys.argv[1], np.load(sys.argv[2])
rows = np.random.default_rng(0).integers(0, len(truth), 500)
out = {}
hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
resource.setrlimit(resource.RLIMIT_NOFILE, (100, hard))       # soft below the shard count
for direct in (True, False):
    reader = HDF5Images({"S": index}, direct=direct)
    got = reader.read(np.zeros(500, int), rows)
    out[f"exact_{direct}"] = bool(np.array_equal(got, truth[rows]))
    reader.close()
out["raised_to"] = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))         # no way up: an error, not NaN
for name, open_ in (("train", lambda: HDF5Images({"S": index})), ("analyse", lambda: StoreRows(index, rows))):
    try:
        open_()
        out[name] = "opened"
    except OSError as err:
        out[name] = str(err)
print(json.dumps(out))
"""


def test_more_shards_than_the_open_file_limit(tmp_path):
    """HDF5 keeps the shards it reads open and reads one it cannot open as NaN: readers
    raise the soft open-file limit when the hard one allows (pixels exact), else stop
    with an error naming the limit."""
    import json
    import subprocess
    import sys

    from tests.conftest import ROOT

    truth = np.random.default_rng(1).normal(size=(600, 2, 2, 1)).astype(np.float32)
    with h5py.File(tmp_path / "one.h5", "w") as f:
        f.create_dataset("images", data=truth, chunks=(1, 2, 2, 1))
    index = reshard(tmp_path / "one.h5", tmp_path / "S", 2)  # 300 shards
    np.save(tmp_path / "truth.npy", truth)
    done = subprocess.run([sys.executable, "-c", FD_LIMIT_SCRIPT, str(index), str(tmp_path / "truth.npy")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["exact_True"] and out["exact_False"] and out["raised_to"] >= 2 * 300
    for name in ("train", "analyse"):
        assert "300 shard files" in out[name] and "ulimit -n" in out[name], out
