"""float16 image stores (``extract.STORE_DTYPE``, issue 15): extract writes the float32
store's pixels rounded to float16 (np.float16) with the same table, converting the
previous store instead of processing the images again; every reader (train's byte-offset,
h5py and cache modes, analyse's StoreRows) returns them as float32, sharded or not; a
finite pixel float16 cannot hold stops extract instead of becoming infinite; a bad
STORE_DTYPE names the key."""
from __future__ import annotations

import shutil

import h5py
import numpy as np
import pandas as pd
import pytest

from scripts import image_store
from scripts.params import ParamsError, parse_params
from tests.conftest import demo_raw_params
from tests.test_extract import STELLAR, only, read_outputs, run_extract
from tests.test_sharded_store import SHARD, _brighten, stat


def params(dtype: str, shard_size: int | None = None) -> dict:
    raw = demo_raw_params()
    raw["extract"].update(IMAGE_SIZE=32, NUM_WORKERS=1, SIZE_CHUNKS=16, SHARD_SIZE=shard_size,
                          STORE_DTYPE=dtype)
    return only(raw, [STELLAR])


def as_float16(images: np.ndarray) -> np.ndarray:
    """What a float16 store must hand back: the float32 pixels rounded to float16."""
    return images.astype(np.float16).astype(np.float32)


@pytest.fixture(scope="module")
def stores(small_universe, tmp_path_factory):
    """``{name: (dataset folder, report)}``: ``f32`` a float32 extract; ``f16`` a copy of it
    rerun with float16; ``f16_sharded`` a fresh float16 extract in shards of SHARD."""
    out = {}
    root32 = tmp_path_factory.mktemp("f32")
    out["f32"] = (root32 / STELLAR, run_extract(params("float32"), small_universe, root32)[STELLAR])
    root16 = tmp_path_factory.mktemp("f16")
    shutil.copytree(root32 / STELLAR, root16 / STELLAR)
    out["f16"] = (root16 / STELLAR, run_extract(params("float16"), small_universe, root16)[STELLAR])
    root_sh = tmp_path_factory.mktemp("f16_sharded")
    out["f16_sharded"] = (root_sh / STELLAR,
                          run_extract(params("float16", SHARD), small_universe, root_sh)[STELLAR])
    return out


def test_float16_store_holds_the_float32_pixels_rounded(stores):
    folder32, _ = stores["f32"]
    folder16, report = stores["f16"]
    t32, i32 = read_outputs(folder32.parent, STELLAR)
    t16, i16 = read_outputs(folder16.parent, STELLAR)
    assert i32.dtype == np.float32 and i16.dtype == np.float16
    assert np.isfinite(i16).all() and len(i16) > 2 * SHARD
    np.testing.assert_array_equal(i16.astype(np.float32), as_float16(i32))
    pd.testing.assert_frame_equal(t16, t32)
    # converted from the previous float32 store: no image processed again
    assert report["processed"] == 0 and report["kept_images"] == len(i32)
    with h5py.File(folder16 / "images.h5") as f:
        dset = f["images"]
        assert dset.chunks == (1,) + i32.shape[1:] and dset.compression is None
    # half the bytes (plus the same HDF5 overhead)
    size32, size16 = ((f / "images.h5").stat().st_size for f in (folder32, folder16))
    assert size16 < 0.55 * size32


def test_fresh_sharded_float16_extract_equals_the_converted_store(stores):
    folder16, _ = stores["f16"]
    sharded, report = stores["f16_sharded"]
    t16, i16 = read_outputs(folder16.parent, STELLAR)
    t_sh, i_sh = read_outputs(sharded.parent, STELLAR)  # h5py through the float16 index
    assert i_sh.dtype == np.float16
    np.testing.assert_array_equal(i_sh, i16)
    pd.testing.assert_frame_equal(t_sh, t16)
    assert report["processed"] == report["kept_images"]
    assert report["shards"] == -(-len(i16) // SHARD)
    with h5py.File(sharded / "images.h5") as f:
        for shard in image_store.shards(f["images"], sharded / "images.h5"):
            with h5py.File(shard.path) as s:
                assert s["images"].dtype == np.float16


def test_every_reader_returns_float32(stores):
    from scripts.analysis.representation import StoreRows
    from scripts.model.input_pipeline import HDF5Images, ordered_dataset

    folder32, _ = stores["f32"]
    _, i32 = read_outputs(folder32.parent, STELLAR)
    truth = as_float16(i32)
    n = len(truth)
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, n, 40), [n - 1, 0, SHARD - 1, SHARD, SHARD]])
    for name in ("f16", "f16_sharded"):
        index = stores[name][0] / "images.h5"
        readers = {"direct": HDF5Images({"S": index}),
                   "h5py": HDF5Images({"S": index}, direct=False),
                   "cache": HDF5Images({"S": index}, cache="on")}
        assert readers["direct"]._offsets["S"] is not None, "float16 rows must be read raw"
        assert readers["h5py"]._offsets["S"] is None and readers["cache"].cached
        for mode, reader in readers.items():
            got = reader.read(np.zeros(len(rows), int), rows)
            assert got.dtype == np.float32, (name, mode)
            np.testing.assert_array_equal(got, truth[rows], err_msg=f"{name} {mode}")
        assert readers["cache"]._cubes["S"].dtype == np.float16  # half the memory
        assert readers["direct"].nbytes == truth.size * 2
        batches = list(ordered_dataset(readers["direct"], np.zeros(n, int), np.arange(n), 7))
        np.testing.assert_array_equal(np.concatenate([b.numpy() for b in batches]), truth)
        for reader in readers.values():
            reader.close()
        with StoreRows(index, rows) as analysed:
            got = analysed[np.arange(len(rows))]
            assert got.dtype == np.float32
            np.testing.assert_array_equal(got, truth[rows])

    # a float32 and a float16 store in one read
    mixed = HDF5Images({"A": folder32 / "images.h5", "B": stores["f16"][0] / "images.h5"})
    which = rng.integers(0, 2, len(rows))
    expected = np.where((which == 0)[:, None, None, None], i32[rows], truth[rows])
    np.testing.assert_array_equal(mixed.read(which, rows), expected)
    mixed.close()


def test_dtype_changes_rewrite_shards_and_float32_reprocesses(stores, small_universe, tmp_path):
    """float32 → float16 converts without processing, rewriting every shard (same rows,
    other dtype); float16 → float32 processes the images again (float16 pixels are not
    float32 ones) and gives the float32 store bit for bit."""
    folder32, _ = stores["f32"]
    _, i32 = read_outputs(folder32.parent, STELLAR)
    root = tmp_path / "d"
    shutil.copytree(folder32, root / STELLAR)
    first = run_extract(params("float32", SHARD), small_universe, root)[STELLAR]
    assert first["processed"] == 0 and first["shards_written"] == first["shards"] >= 3
    before = {p.name: stat(p) for p in image_store.shard_files(root / STELLAR)}

    second = run_extract(params("float16", SHARD), small_universe, root)[STELLAR]
    assert second["processed"] == 0 and second["shards_written"] == second["shards"]
    after = {p.name: stat(p) for p in image_store.shard_files(root / STELLAR)}
    assert all(after[k] != before[k] for k in before)
    np.testing.assert_array_equal(read_outputs(root, STELLAR)[1], i32.astype(np.float16))

    third = run_extract(params("float32", SHARD), small_universe, root)[STELLAR]
    assert third["processed"] == third["kept_images"] == len(i32)
    images = read_outputs(root, STELLAR)[1]
    assert images.dtype == np.float32
    np.testing.assert_array_equal(images, i32)


def test_to_store_dtype_flags_rows_that_would_overflow():
    block = np.zeros((4, 2, 2, 1), np.float32)
    block[1, 0, 0, 0] = 65504.0        # float16's largest: fine
    block[2, 1, 1, 0] = -7e4           # beyond: would become -inf
    block[3, 0, 1, 0] = np.inf         # already infinite: not an overflow
    converted, overflow = image_store.to_store_dtype(block, "float16")
    assert converted.dtype == np.float16 and converted[1, 0, 0, 0] == 65504
    assert overflow.tolist() == [2]
    same, none = image_store.to_store_dtype(block, "float32")
    assert same is block and len(none) == 0


def test_a_pixel_beyond_float16_stops_extract_naming_it(small_universe, tmp_path):
    """Extract refuses to store a finite pixel as infinite: the error names the dataset,
    STORE_DTYPE and the image, no store is written, and the chunk cache stays, so a
    float32 rerun processes nothing again."""
    raw_root, illustris = small_universe
    raw = tmp_path / "raw"
    shutil.copytree(raw_root / STELLAR, raw / STELLAR)
    universe = (raw, illustris)
    files = sorted((raw / STELLAR / "images").iterdir())
    _brighten(files[0], 1e7)
    out = tmp_path / "d"
    with pytest.raises(ValueError, match=rf"{STELLAR}.*extract\.STORE_DTYPE float16.*"
                                         rf"{files[0].name}.*float32"):
        run_extract(params("float16"), universe, out)
    folder = out / STELLAR
    assert not (folder / "images.h5").exists()
    assert not list(folder.glob(".images*.tmp"))
    report = run_extract(params("float32"), universe, out)[STELLAR]
    assert report["processed"] == 0 and report["kept_images"] > 0
    _, images = read_outputs(out, STELLAR)
    assert np.abs(images).max() > np.finfo(np.float16).max and np.isfinite(images).all()


@pytest.mark.parametrize("value", ["float64", "half", 16, None])
def test_bad_store_dtype_names_the_key(value):
    raw = demo_raw_params()
    raw["extract"]["STORE_DTYPE"] = value
    with pytest.raises(ParamsError, match=r"extract\.STORE_DTYPE = .*float32.*float16"):
        parse_params(raw)


def test_store_dtype_defaults_to_float32():
    raw = demo_raw_params()
    assert parse_params(raw).extract.store_dtype == "float32"
    raw["extract"]["STORE_DTYPE"] = "float16"
    assert parse_params(raw).extract.store_dtype == "float16"


def test_reshard_keeps_a_float16_store_float16(tmp_path):
    """bench_shards.reshard (the tests' and benches' way to shard a store) keeps the pixel
    type, so the shards are read by byte offset as extract's float16 shards are."""
    from bench.bench_shards import reshard
    from scripts.model.input_pipeline import HDF5Images

    pixels = np.random.default_rng(1).normal(size=(25, 8, 8, 3)).astype(np.float16)
    with h5py.File(tmp_path / "one.h5", "w") as f:
        dset = f.create_dataset("images", data=pixels, chunks=(1, 8, 8, 3))
        dset.attrs["filters"] = ["g", "r", "i"]
    index = reshard(tmp_path / "one.h5", tmp_path / "S", 10)
    with h5py.File(index) as f:
        assert f["images"].dtype == np.float16
    reader = HDF5Images({"S": index})
    assert reader._offsets["S"] is not None
    np.testing.assert_array_equal(reader.read(np.zeros(25, int), np.arange(25)),
                                  pixels.astype(np.float32))
    reader.close()
