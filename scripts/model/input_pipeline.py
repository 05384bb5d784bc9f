"""Stream images from the HDF5 stores of extract into tf.data, never loading a whole set.

Training batches are a pure function of (seed, global step): :class:`PairSampler` decides
which rows form batch ``k``, so a run resumed from a checkpoint at step ``k`` sees exactly
the batches an uninterrupted run would have seen. Reading happens in a ``tf.data`` map
with parallel calls, followed by prefetch, so the accelerator never waits on the file
system.

Parallel reads: h5py serialises every call behind one process-wide lock, so tf.data's
reader threads would queue on it. The stores extract writes are uncompressed float32 (or
float16, ``extract.STORE_DTYPE``), one chunk per image (or contiguous), so
:class:`HDF5Images` looks up each image's byte
offset in the file once and reads rows with ``os.preadv`` straight into the output
array; that system call releases the GIL, and reader threads really run in parallel
(the operating system's page cache keeps a store that fits in memory there after the
first epoch). Stores with filters (compression, shuffle, checksums) or other chunk
shapes fall back to h5py. ``cache=True`` instead loads the stores into memory once.

Whatever a store holds, :meth:`HDF5Images.read` returns float32: float16 rows are read
raw into a float16 buffer (half the bytes) and converted, which is exact; the in-memory
cache keeps a float16 store as float16 (half the memory) and converts the rows it hands
out.

Sharded stores (``extract.SHARD_SIZE``, see :mod:`scripts.image_store`): ``images.h5`` is
an HDF5 virtual dataset over shard files, which h5py reads transparently (fallback and
cache). For byte-offset reads the reader resolves every row to its shard file and the
offset there (:func:`store_row_offsets`); if any shard cannot be read raw, the whole
store is read through h5py.
"""
from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import tensorflow as tf

from scripts import image_store

log = logging.getLogger(__name__)

IMAGES_KEY = image_store.IMAGES_KEY


CACHE_CHOICES = ("off", "on", "auto")
#: ``cache="auto"`` loads the stores into memory when they take at most this fraction of
#: the memory available when the reader opens them.
CACHE_AUTO_FRACTION = 0.25
#: Pixel types read as raw bytes (native little-endian; extract.STORE_DTYPE).
RAW_DTYPES = (np.dtype("<f4"), np.dtype("<f2"))


def available_memory_bytes() -> int | None:
    """Memory available to new allocations (Linux ``MemAvailable``), or None if unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def row_offsets(dataset: h5py.Dataset) -> np.ndarray | None:
    """Byte offset in the file of every row of ``dataset`` (−1: row never written), when
    rows can be read as raw bytes: no filters, native little-endian float32 or float16
    (:data:`RAW_DTYPES`), and either contiguous storage or one chunk per row. None
    otherwise (read through h5py)."""
    if dataset.dtype not in RAW_DTYPES or dataset.ndim < 2 or dataset.shape[0] == 0:
        return None
    if dataset.compression or dataset.shuffle or dataset.fletcher32 or dataset.scaleoffset is not None:
        return None
    n = dataset.shape[0]
    row_bytes = int(np.prod(dataset.shape[1:])) * dataset.dtype.itemsize
    if dataset.chunks is None:
        start = dataset.id.get_offset()
        return None if start is None else start + row_bytes * np.arange(n, dtype=np.int64)
    if tuple(dataset.chunks) != (1,) + tuple(dataset.shape[1:]):
        return None
    offsets = np.full(n, -1, dtype=np.int64)

    def visit(info):
        offsets[info.chunk_offset[0]] = info.byte_offset

    try:
        dataset.id.chunk_iter(visit)
    except (AttributeError, RuntimeError):  # HDF5 < 1.12.3 has no chunk iteration
        for i in range(dataset.id.get_num_chunks()):
            info = dataset.id.get_chunk_info(i)
            offsets[info.chunk_offset[0]] = info.byte_offset
    return offsets


@dataclass(frozen=True)
class RowOffsets:
    """Where every row of a store lies: in file ``files[k]`` for rows ``starts[k] …
    starts[k+1]-1``, at byte ``offsets[row]`` of that file (−1: never written)."""

    files: tuple[Path, ...]
    starts: np.ndarray
    offsets: np.ndarray

    def file_indices(self, rows: np.ndarray) -> np.ndarray:
        """Index into ``files`` of each row."""
        if len(self.files) == 1:
            return np.zeros(len(rows), np.int64)
        return np.searchsorted(self.starts, rows, side="right") - 1


def store_row_offsets(dataset: h5py.Dataset, path: str | Path) -> RowOffsets | None:
    """:func:`row_offsets` of a store, single-file or sharded (each row resolved to its
    shard file); None when some part cannot be read as raw bytes (read through h5py)."""
    path = Path(path)
    try:
        found = image_store.shards(dataset, path)
    except ValueError as err:
        log.info("%s: reading through h5py (%s)", path, err)
        return None
    if found is None:
        offsets = row_offsets(dataset)
        return None if offsets is None else RowOffsets((path,), np.zeros(1, np.int64), offsets)
    parts = []
    for shard in found:
        with h5py.File(shard.path, "r") as handle:
            source = handle[shard.key]
            if source.shape != (shard.rows,) + tuple(dataset.shape[1:]) or source.dtype != dataset.dtype:
                log.warning("%s: shard %s holds %s %s, its index expects %s; reading through h5py",
                            path, shard.path.name, source.shape, source.dtype,
                            (shard.rows,) + tuple(dataset.shape[1:]))
                return None
            offsets = row_offsets(source)
        if offsets is None:
            log.info("%s: shard %s cannot be read as raw bytes; reading through h5py", path,
                     shard.path.name)
            return None
        parts.append(offsets)
    return RowOffsets(tuple(s.path for s in found), np.array([s.first for s in found], np.int64),
                      np.concatenate(parts) if parts else np.zeros(0, np.int64))


class HDF5Images:
    """Row-addressed reader over several ``images.h5`` stores (one per dataset), each a
    single file or the index of shard files.

    Files are opened lazily and kept open. Safe to call from tf.data's worker threads:
    raw-offset reads (see the module docstring) run in parallel, h5py fallback reads are
    serialised by h5py's lock.

    Args:
        stores: ``{dataset name: path to images.h5}``.
        cache: ``"on"`` loads every store into memory when first read (one cube per store,
            in the store's dtype); ``"auto"`` does so when all stores together take at most
            :data:`CACHE_AUTO_FRACTION` of the available memory; ``"off"`` (default)
            reads from the files each time. The pixels are the same in every mode, and
            always float32.
        direct: read rows by byte offset where the layout allows (default); False: always
            through h5py (for comparisons).
    """

    def __init__(self, stores: dict[str, str | Path], cache: str | bool = "off", direct: bool = True):
        if isinstance(cache, bool):
            cache = "on" if cache else "off"
        if cache not in CACHE_CHOICES:
            raise ValueError(f"cache = {cache!r}: expected one of {CACHE_CHOICES}")
        self.paths = {name: Path(path) for name, path in stores.items()}
        self.names = list(self.paths)
        self._files: dict[str, h5py.File] = {}
        self._fds: dict[str, list[int]] = {}  # per store, one per file of its RowOffsets (-1: closed)
        self._open_lock = threading.Lock()
        self._offsets: dict[str, RowOffsets | None] = {}
        self._cubes: dict[str, np.ndarray] = {}
        shapes = {name: self._dataset(name).shape[1:] for name in self.names}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"image stores have different image shapes {shapes}; extract them "
                             "with the same IMAGE_SIZE and the same number of FILTERS")
        self.image_shape = next(iter(shapes.values())) if shapes else None
        self.cached = self._want_cache(cache)
        for name in self.names:
            self._offsets[name] = (store_row_offsets(self._dataset(name), self.paths[name])
                                   if direct and not self.cached else None)
        # all stores together: HDF5 keeps every shard it has read open, byte-offset reads
        # one more descriptor per shard (open_store checked each store alone)
        shard_files = sum(len(image_store.source_files(self._dataset(n), self.paths[n]))
                          for n in self.names)
        own = sum(len(o.files) for o in self._offsets.values() if o is not None and len(o.files) > 1)
        if shard_files + own:
            image_store.ensure_open_files(shard_files + own,
                                          ", ".join(str(self.paths[n]) for n in self.names))
        for name, located in self._offsets.items():
            if located is not None:
                self._fds[name] = [-1] * len(located.files)
        # the pixel type of each byte-offset store (float32 or float16)
        self._raw_dtypes = {name: self._dataset(name).dtype for name in self._fds}

    def _want_cache(self, cache: str) -> bool:
        if cache != "auto":
            return cache == "on"
        need = self.nbytes
        available = available_memory_bytes()
        fits = available is not None and need <= CACHE_AUTO_FRACTION * available
        log.info("image stores take %.2f GiB, %s GiB available: %s", need / 2**30,
                 "?" if available is None else f"{available / 2**30:.1f}",
                 "cached in memory" if fits else "read from the files")
        return fits

    @property
    def nbytes(self) -> int:
        """Bytes of all images of all stores, in their stored dtypes (what the cache takes)."""
        return sum(int(np.prod(self._dataset(n).shape)) * self._dataset(n).dtype.itemsize
                   for n in self.names)

    def _dataset(self, name: str) -> h5py.Dataset:
        if name not in self._files:
            try:
                self._files[name] = image_store.open_store(self.paths[name])
            except FileNotFoundError as err:
                raise FileNotFoundError(f"dataset {name}: {err}") from None
        return self._files[name][IMAGES_KEY]

    def _cube(self, name: str) -> np.ndarray:
        if name not in self._cubes:
            dataset = self._dataset(name)
            # a float16 store stays float16 in memory; rows become float32 in read()
            dtype = dataset.dtype if dataset.dtype in RAW_DTYPES else np.dtype(np.float32)
            cube = np.empty(dataset.shape, dtype=dtype)
            step = max(1, (256 << 20) // max(1, int(np.prod(dataset.shape[1:])) * dtype.itemsize))
            for start in range(0, dataset.shape[0], step):
                stop = min(dataset.shape[0], start + step)
                dataset.read_direct(cube, np.s_[start:stop], np.s_[start:stop])
            self._cubes[name] = cube
        return self._cubes[name]

    def _fd(self, name: str, k: int) -> int:
        """Descriptor of file ``k`` of store ``name`` (opened once, by one thread)."""
        fds = self._fds[name]
        if fds[k] < 0:
            with self._open_lock:
                if fds[k] < 0:
                    fds[k] = os.open(self._offsets[name].files[k], os.O_RDONLY)
        return fds[k]

    def __len__(self) -> int:
        return sum(self._dataset(n).shape[0] for n in self.names)

    def _pread_row(self, name: str, row: int, offset: int, k: int, dest: np.ndarray) -> None:
        """Row ``row`` of store ``name``, at byte ``offset`` of its file ``k``, into the
        C-contiguous image ``dest`` (of the store's dtype)."""
        if offset < 0:  # never written: h5py returns the fill value
            self._dataset(name).read_direct(dest[np.newaxis], np.s_[row:row + 1])
            return
        view, fd = memoryview(dest).cast("B"), self._fd(name, k)
        got = os.preadv(fd, [view], offset)
        while got < len(view):  # short reads are legal; finish the row
            more = os.preadv(fd, [view[got:]], offset + got)
            if more <= 0:
                raise OSError(f"{self._offsets[name].files[k]}: unexpected end of file at row {row}")
            got += more

    def read(self, store_index: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Images for (store index, row) pairs, in the order given; float32 (N, H, W, C)."""
        store_index = np.asarray(store_index, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows),) + tuple(self.image_shape), dtype=np.float32)
        for s in np.unique(store_index):
            name = self.names[s]
            where = np.flatnonzero(store_index == s)
            wanted = rows[where]
            if self.cached and len(where) == len(rows) and self._cube(name).dtype == out.dtype:
                np.take(self._cube(name), wanted, axis=0, out=out)  # gather straight into out
            elif self.cached:
                out[where] = self._cube(name)[wanted]  # float16 cube: converted here
            elif self._offsets[name] is not None:
                # float32: straight into the output, in file order (no intermediate copy);
                # float16: into a half-size buffer, converted once
                located = self._offsets[name]
                offsets, files = located.offsets[wanted], located.file_indices(wanted)
                raw = self._raw_dtypes[name]
                half = None if raw == out.dtype else np.empty((len(where),) + out.shape[1:], raw)
                for i in np.argsort(wanted, kind="stable"):
                    dest = out[where[i]] if half is None else half[i]
                    self._pread_row(name, int(wanted[i]), int(offsets[i]), int(files[i]), dest)
                if half is not None:
                    out[where] = half
            else:
                # h5py: one read per distinct row (the store is chunked per image, and h5py's
                # fancy indexing with a list of rows is ~20x slower than chunk by chunk)
                dataset = self._dataset(name)
                unique, inverse = np.unique(wanted, return_inverse=True)
                block = np.empty((len(unique),) + tuple(self.image_shape), dtype=np.float32)
                for i, row in enumerate(unique):
                    dataset.read_direct(block, np.s_[row], np.s_[i])
                out[where] = block[inverse]
        return out

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        for fds in self._fds.values():
            for k, fd in enumerate(fds):
                if fd >= 0:
                    os.close(fd)
                    fds[k] = -1  # reopened if read again
        self._files.clear()
        self._cubes.clear()


@dataclass
class PairSampler:
    """Deterministic batches of positive pairs as a function of the global step.

    ``table`` has one row per image with columns ``dataset`` (store name), ``row``
    (row in that store) and ``group`` (object identity: all projections of one object
    share it). ``positives="augmentations"`` pairs every image with itself (the two views
    differ by augmentation only); ``"projections"`` iterates over objects and pairs two
    different projections of each (the same image when an object has only one).
    """

    table: pd.DataFrame
    store_names: list[str]
    batch_size: int
    positives: str = "augmentations"
    seed: int = 0

    def __post_init__(self):
        if self.positives not in ("augmentations", "projections"):
            raise ValueError(f"positives = {self.positives!r}: expected 'augmentations' or 'projections'")
        missing = set(self.table["dataset"]) - set(self.store_names)
        if missing:
            raise ValueError(f"rows of datasets {sorted(missing)} have no image store")
        store = self.table["dataset"].map({n: i for i, n in enumerate(self.store_names)})
        self._store = store.to_numpy(np.int64)
        self._row = self.table["row"].to_numpy(np.int64)
        if self.positives == "projections":
            codes, _ = pd.factorize(self.table["group"], sort=True)
            order = np.argsort(codes, kind="stable")
            counts = np.bincount(codes)
            self._members = order  # rows of every group, contiguous
            self._offsets = np.concatenate([[0], np.cumsum(counts)])
            self._units = len(counts)
        else:
            self._units = len(self.table)
        if self._units < self.batch_size:
            raise ValueError(f"only {self._units} training units for a batch of {self.batch_size}; "
                             "lower train.BATCH_SIZE or add data")

    def _permutation(self, epoch: int) -> np.ndarray:
        """The epoch's order of training units, drawn once per epoch (cached)."""
        cached = getattr(self, "_cached", None)
        if cached is None or cached[0] != epoch:
            self._cached = cached = (epoch, np.random.default_rng([self.seed, epoch]).permutation(self._units))
        return cached[1]

    @property
    def steps_per_epoch(self) -> int:
        return self._units // self.batch_size  # the remainder is dropped (fixed batch shape)

    def batch(self, step: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(store_a, row_a, store_b, row_b) of global step ``step``."""
        epoch, k = divmod(int(step), self.steps_per_epoch)
        units = self._permutation(epoch)[k * self.batch_size:(k + 1) * self.batch_size]
        if self.positives == "augmentations":
            a = b = units
        else:
            step_rng = np.random.default_rng([self.seed, epoch, k])
            sizes = self._offsets[units + 1] - self._offsets[units]
            first = step_rng.integers(0, sizes)
            # a different projection where there is one: shift by 1..size-1
            shift = np.where(sizes > 1, step_rng.integers(1, np.maximum(sizes, 2)), 0)
            second = (first + shift) % sizes
            a = self._members[self._offsets[units] + first]
            b = self._members[self._offsets[units] + second]
        return self._store[a], self._row[a], self._store[b], self._row[b]


def pair_dataset(sampler: PairSampler, reader: HDF5Images, start_step: int, num_steps: int,
                 parallel_reads: int | None = None) -> tf.data.Dataset:
    """Raw (view_a, view_b) batches for steps ``start_step … start_step+num_steps-1``."""
    shape = (sampler.batch_size,) + tuple(reader.image_shape)

    def read_step(step):
        sa, ra, sb, rb = sampler.batch(int(step))
        return reader.read(sa, ra), reader.read(sb, rb)

    def load(step):
        a, b = tf.numpy_function(read_step, [step], (tf.float32, tf.float32), stateful=False)
        a.set_shape(shape)
        b.set_shape(shape)
        return a, b

    steps = tf.data.Dataset.range(start_step, start_step + num_steps)
    return steps.map(load, num_parallel_calls=parallel_reads or tf.data.AUTOTUNE,
                     deterministic=True)


def ordered_dataset(reader: HDF5Images, store_index: np.ndarray, rows: np.ndarray,
                    batch_size: int) -> tf.data.Dataset:
    """Images in the given order, batched (for embedding a set)."""
    store_index = np.asarray(store_index, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    n_batches = int(np.ceil(len(rows) / batch_size))

    def read_batch(i):
        sl = slice(int(i) * batch_size, (int(i) + 1) * batch_size)
        return reader.read(store_index[sl], rows[sl])

    def load(i):
        images = tf.numpy_function(read_batch, [i], tf.float32, stateful=False)
        images.set_shape((None,) + tuple(reader.image_shape))
        return images

    return tf.data.Dataset.range(n_batches).map(load, num_parallel_calls=tf.data.AUTOTUNE,
                                                deterministic=True)
