"""Stream images from the HDF5 stores of extract into tf.data, never loading a whole set.

Training batches are a pure function of (seed, global step): :class:`PairSampler` decides
which rows form batch ``k``, so a run resumed from a checkpoint at step ``k`` sees exactly
the batches an uninterrupted run would have seen. Reading happens in a ``tf.data`` map
with parallel calls (h5py reads of one batch, rows sorted per store), followed by
prefetch, so the accelerator never waits on the file system.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import tensorflow as tf

log = logging.getLogger(__name__)

IMAGES_KEY = "images"


class HDF5Images:
    """Row-addressed reader over several ``images.h5`` stores (one per dataset).

    Files are opened lazily and kept open; h5py serialises access internally, so the
    reader may be called from tf.data's worker threads.
    """

    def __init__(self, stores: dict[str, str | Path]):
        self.paths = {name: Path(path) for name, path in stores.items()}
        self.names = list(self.paths)
        self._files: dict[str, h5py.File] = {}
        shapes = {name: self._dataset(name).shape[1:] for name in self.names}
        if len(set(shapes.values())) > 1:
            raise ValueError(f"image stores have different image shapes {shapes}; extract them "
                             "with the same IMAGE_SIZE and the same number of FILTERS")
        self.image_shape = next(iter(shapes.values())) if shapes else None

    def _dataset(self, name: str) -> h5py.Dataset:
        if name not in self._files:
            try:
                self._files[name] = h5py.File(self.paths[name], "r")
            except OSError as err:
                raise FileNotFoundError(f"cannot open image store {self.paths[name]} of dataset "
                                        f"{name} ({err}); run the extract stage first") from None
        return self._files[name][IMAGES_KEY]

    def __len__(self) -> int:
        return sum(self._dataset(n).shape[0] for n in self.names)

    def read(self, store_index: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Images for (store index, row) pairs, in the order given; float32 (N, H, W, C)."""
        store_index = np.asarray(store_index, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows),) + tuple(self.image_shape), dtype=np.float32)
        for s in np.unique(store_index):
            where = np.flatnonzero(store_index == s)
            unique, inverse = np.unique(rows[where], return_inverse=True)
            dataset = self._dataset(self.names[s])
            # one read per row: the store is chunked per image, and h5py's fancy indexing
            # with a list of rows is ~20x slower than reading the chunks one by one
            block = np.empty((len(unique),) + tuple(self.image_shape), dtype=np.float32)
            for i, row in enumerate(unique):
                dataset.read_direct(block, np.s_[row], np.s_[i])
            out[where] = block[inverse]
        return out

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()


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
