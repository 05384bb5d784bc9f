"""Benchmark: are reads from a sharded image store as fast as from one file?

Writes a store of ``--images`` random 3-band float32 images as one ``images.h5`` (as
extract writes it without ``SHARD_SIZE``) and the same rows as shards of ``--shard-size``
under an index ``images.h5`` (extract with ``SHARD_SIZE``, :mod:`scripts.image_store`),
then times :meth:`scripts.model.input_pipeline.HDF5Images.read` on the same random
batches for both, by byte offset (``os.preadv``, the default) and through h5py (the
fallback; for a sharded store, through the virtual dataset), alternating batch by batch
so load changes hit all alike. Every read is checked against the single file. Both stores
are in the page cache (just written), so this measures the readers, not the disk.

    .venv/bin/python -m bench.bench_shards                     # 4096 images of 64 px
    .venv/bin/python -m bench.bench_shards --shard-size 64     # many small shards
"""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from scripts import image_store

log = logging.getLogger("bench.bench_shards")


def reshard(single: Path, folder: Path, size: int) -> Path:
    """The single-file store ``single`` rewritten as shards of ``size`` rows with their
    index in ``folder`` (the layout extract writes with ``SHARD_SIZE``), of the same pixel
    type (float32 or float16); returns the index."""
    folder.mkdir(parents=True, exist_ok=True)
    with h5py.File(single, "r") as f:
        source = f[image_store.IMAGES_KEY]
        n, shape, dtype = source.shape[0], tuple(source.shape[1:]), source.dtype.name
        filters = [str(b) for b in source.attrs.get("filters", [])]
        counts = [min(size, n - begin) for begin in range(0, n, size)]
        for k, begin in enumerate(range(0, n, size)):
            with image_store.create_shard(folder / image_store.shard_name(k), counts[k], shape,
                                          filters, begin, dtype) as shard:
                shard[image_store.IMAGES_KEY][:] = source[begin:begin + counts[k]]
    image_store.write_index(folder / image_store.IMAGES_FILE, counts, shape, filters, size, dtype)
    return folder / image_store.IMAGES_FILE


def run(n_images: int, image: int, shard_size: int, batches: int, batch: int) -> dict:
    from scripts.model.input_pipeline import HDF5Images

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        single = root / "single" / image_store.IMAGES_FILE
        single.parent.mkdir()
        with h5py.File(single, "w") as f:
            shape = (image, image, 3)
            dset = f.create_dataset(image_store.IMAGES_KEY, (n_images,) + shape, np.float32,
                                    chunks=(1,) + shape)
            for begin in range(0, n_images, 512):
                end = min(n_images, begin + 512)
                dset[begin:end] = rng.normal(size=(end - begin,) + shape).astype(np.float32)
        sharded = reshard(single, root / "sharded", shard_size)
        out = {"shards": len(image_store.shard_files(sharded.parent))}
        t0 = time.perf_counter()
        readers = {"single_offsets": HDF5Images({"X": single}),
                   "sharded_offsets": HDF5Images({"X": sharded})}
        out["open_seconds_both"] = time.perf_counter() - t0
        readers.update(single_h5py=HDF5Images({"X": single}, direct=False),
                       sharded_h5py=HDF5Images({"X": sharded}, direct=False))
        assert readers["sharded_offsets"]._offsets["X"] is not None, "sharded store fell back to h5py"
        seconds = dict.fromkeys(readers, 0.0)
        for _ in range(batches):
            rows = rng.integers(0, n_images, batch)
            stores = np.zeros(batch, int)
            expected = None
            for name, reader in readers.items():
                t0 = time.perf_counter()
                got = reader.read(stores, rows)
                seconds[name] += time.perf_counter() - t0
                if expected is None:
                    expected = got
                elif not np.array_equal(got, expected):
                    raise AssertionError(f"{name} read other pixels than the single file")
        for reader in readers.values():
            reader.close()
    out.update({f"{name}_images_per_s": batches * batch / s for name, s in seconds.items()})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4096, help="images in the store (default 4096)")
    parser.add_argument("--image", type=int, default=64, help="image size in pixels (default 64)")
    parser.add_argument("--shard-size", type=int, default=512, help="rows per shard (default 512)")
    parser.add_argument("--batches", type=int, default=40, help="timed batches (default 40)")
    parser.add_argument("--batch", type=int, default=256, help="random rows per batch (default 256)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    r = run(args.images, args.image, args.shard_size, args.batches, args.batch)
    log.info("%d cores; %d images of %dx%dx3 float32 in %d shards of %d; batches of %d random rows",
             os.cpu_count(), args.images, args.image, args.image, r["shards"], args.shard_size, args.batch)
    log.info("byte offsets: one file %.0f images/s, sharded %.0f images/s (sharded / one file %.2f)",
             r["single_offsets_images_per_s"], r["sharded_offsets_images_per_s"],
             r["sharded_offsets_images_per_s"] / r["single_offsets_images_per_s"])
    log.info("h5py: one file %.0f images/s, sharded (through the virtual dataset) %.0f images/s "
             "(sharded / one file %.2f)", r["single_h5py_images_per_s"], r["sharded_h5py_images_per_s"],
             r["sharded_h5py_images_per_s"] / r["single_h5py_images_per_s"])
    log.info("opening both readers (offsets resolved per shard): %.2f s", r["open_seconds_both"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
