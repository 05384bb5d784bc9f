"""Image stores of extract: one ``images.h5``, or ``images.h5`` as the index of shard files.

A dataset's images are the array ``(N, H, W, C)`` under :data:`IMAGES_KEY` of
``dataset/<DATASET>/images.h5``, float32 or, with ``extract.STORE_DTYPE: float16``, float16
(half the disk and page cache; every reader hands float32 to its caller). With
``extract.SHARD_SIZE`` the rows live in shard files ``images-00000.h5``,
``images-00001.h5``, … next to it (``SHARD_SIZE`` rows each, the last
one shorter; every shard holds its rows under the same key, one chunk per image), and
``images.h5`` is a small index holding an HDF5 *virtual dataset* (VDS) of the same key,
shape and attributes that maps each block of rows onto its shard. So every reader that
opens ``images.h5`` with h5py (slicing, ``read_direct``, shape, attributes) reads a sharded
store unchanged, and one shard can be rewritten without touching the others.

The shard names in the index are relative: HDF5 looks them up in the directory of the
index file, so a dataset folder can be moved or copied whole. A VDS reads a missing
source file as the fill value without any error, so :func:`open_store` checks that every
shard exists (the fill value of the index is NaN, so pixels of a shard deleted later are
not silently zero either).

HDF5 keeps a VDS's source files open once read (until the index is closed), and a source
it cannot open because the process is out of file descriptors is read as the fill value
too, without an error. So :func:`open_store` makes sure the open-file limit leaves room
for every shard (raising the soft limit up to the hard one), or stops with an error.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from scripts.params import STORE_DTYPES

log = logging.getLogger(__name__)

IMAGES_FILE = "images.h5"
IMAGES_KEY = "images"
#: Name of shard ``k`` of a store (``images-00000.h5`` …; wider numbers past 99999).
SHARD_FORMAT = "images-{:05d}.h5"
SHARD_PATTERN = re.compile(r"images-(\d{5,})\.h5")


def shard_name(k: int) -> str:
    return SHARD_FORMAT.format(int(k))


def shard_number(name: str) -> int | None:
    """``k`` of a shard file name ``images-<k>.h5``; None for any other name."""
    match = SHARD_PATTERN.fullmatch(name)
    return int(match.group(1)) if match else None


def shard_files(folder: Path) -> list[Path]:
    """The shard files present in ``folder`` (whether an index uses them or not)."""
    return sorted(p for p in Path(folder).glob("images-*.h5") if shard_number(p.name) is not None)


@dataclass(frozen=True)
class Shard:
    """Rows ``first … first+rows-1`` of a store, held by dataset ``key`` of file ``path``."""

    first: int
    rows: int
    path: Path
    key: str


def source_files(dataset: h5py.Dataset, store: str | Path) -> list[Path]:
    """The files a virtual dataset reads from, however it maps them (none for a plain
    dataset; ``.``, the index's own file, left out)."""
    if not dataset.is_virtual:
        return []
    folder = Path(store).parent
    names = dict.fromkeys(s.file_name for s in dataset.virtual_sources() if s.file_name != ".")
    return [Path(n) if Path(n).is_absolute() else folder / n for n in names]


def shards(dataset: h5py.Dataset, store: str | Path) -> list[Shard] | None:
    """The shards of an opened store in row order, or None when it is a plain dataset.

    Raises ValueError for a virtual dataset that is not a list of whole-row blocks each
    mapped from a whole source dataset (not written by extract)."""
    if not dataset.is_virtual:
        return None
    folder = Path(store).parent
    found = []
    for source in dataset.virtual_sources():
        (lo, *lo_rest), (hi, *hi_rest) = source.vspace.get_select_bounds()
        whole_rows = list(lo_rest) == [0] * len(lo_rest) and \
            [h + 1 for h in hi_rest] == list(dataset.shape[1:])
        if (not whole_rows or source.src_space.get_select_type() != h5py.h5s.SEL_ALL
                or source.file_name == "."):
            raise ValueError(f"{store}: virtual dataset {dataset.name} maps {source.file_name} "
                             "onto a part of its rows or images; expected whole rows of shards")
        path = Path(source.file_name)
        found.append(Shard(int(lo), int(hi - lo + 1), path if path.is_absolute() else folder / path,
                           source.dset_name))
    found.sort(key=lambda s: s.first)
    expected = 0
    for shard in found:
        if shard.first != expected:
            raise ValueError(f"{store}: shard {shard.path.name} starts at row {shard.first}, "
                             f"expected {expected} (rows missing or mapped twice)")
        expected += shard.rows
    if expected != dataset.shape[0]:
        raise ValueError(f"{store}: shards hold {expected} rows, the index {dataset.shape[0]}")
    return found


#: Descriptors left for everything but the image shards (TensorFlow, logs, sockets).
SPARE_FILE_DESCRIPTORS = 256


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux
        return 0


def ensure_open_files(files: int, what: str) -> None:
    """Make sure this process may open ``files`` more files (besides those it has open and
    :data:`SPARE_FILE_DESCRIPTORS`), raising the soft open-file limit up to the hard one if
    needed. Raises OSError naming ``what`` when the hard limit is too low."""
    try:
        import resource
    except ImportError:  # not POSIX: no limit to query
        return
    want = _open_descriptors() + files + SPARE_FILE_DESCRIPTORS
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or want <= soft:
        return
    if hard == resource.RLIM_INFINITY or want <= hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            log.info("raised the open-file limit from %d to %d for %d image shards", soft, want, files)
            return
        except (ValueError, OSError) as err:
            log.info("cannot raise the open-file limit from %d to %d: %s", soft, want, err)
    raise OSError(f"{what}: reading {files} shard files needs about {want} open files, this "
                  f"process may open {soft} (hard limit {hard}); raise `ulimit -n` or extract "
                  "with a larger SHARD_SIZE (HDF5 would read the shards it cannot open as NaN)")


def open_store(path: str | Path) -> h5py.File:
    """``path`` opened read-only, after checking that every file its images are read from
    (the shards of a sharded store, the sources of any virtual dataset) exists and that
    the open-file limit leaves room to keep them all open (:func:`ensure_open_files`).

    Raises FileNotFoundError naming the missing store or shard (HDF5 alone would read a
    missing shard as the fill value), OSError when the limit is too low."""
    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise FileNotFoundError(f"cannot open image store {path} ({err}); run the extract "
                                "stage first") from None
    try:
        found = source_files(handle[IMAGES_KEY], path)
    except KeyError:
        handle.close()
        raise
    missing = [p for p in found if not p.is_file()]
    if missing:
        handle.close()
        raise FileNotFoundError(f"image store {path} lacks {len(missing)} of its {len(found)} "
                                f"shard files ({', '.join(p.name for p in missing[:5])}"
                                f"{', …' if len(missing) > 5 else ''}); rerun the extract stage")
    if found:
        try:
            ensure_open_files(len(found), str(path))
        except OSError:
            handle.close()
            raise
    return handle


def store_dtype(name: str) -> np.dtype:
    """The little-endian NumPy dtype of a :data:`STORE_DTYPES` name (what extract writes)."""
    if name not in STORE_DTYPES:
        raise ValueError(f"store dtype {name!r}: expected one of {STORE_DTYPES}")
    return np.dtype(name).newbyteorder("<")


def to_store_dtype(block: np.ndarray, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """``block`` (float32 images, rows first) converted to ``dtype`` (a :data:`STORE_DTYPES`
    name, rounded to nearest as NumPy does), and the indices of its rows holding a finite
    pixel that becomes infinite there (float16 ends at 65504): the caller must not store
    those rows, as a reader could not tell them from genuinely infinite pixels."""
    target = store_dtype(dtype)
    if block.dtype == target:
        return block, np.zeros(0, np.int64)
    with np.errstate(over="ignore"):
        converted = block.astype(target)
    infinite = np.isinf(converted)
    if not infinite.any():  # the usual case: no second full-size mask
        return converted, np.zeros(0, np.int64)
    overflow = infinite & np.isfinite(block)
    return converted, np.flatnonzero(overflow.reshape(len(block), -1).any(axis=1))


def create_images(handle: h5py.File, rows: int, image_shape: tuple[int, ...], filters,
                  dtype: str = "float32") -> h5py.Dataset:
    """The empty ``(rows, H, W, C)`` images dataset (``dtype``, a :data:`STORE_DTYPES` name)
    of a single-file store or a shard, one chunk per image (the layout byte-offset reads
    need), with its ``filters``."""
    dset = handle.create_dataset(IMAGES_KEY, shape=(rows,) + tuple(image_shape),
                                 dtype=store_dtype(dtype),
                                 chunks=(1,) + tuple(image_shape) if rows else None)
    dset.attrs["filters"] = list(filters)
    return dset


def create_shard(path: Path, rows: int, image_shape: tuple[int, ...], filters, first: int,
                 dtype: str = "float32") -> h5py.File:
    """A new shard file at ``path`` with an empty images dataset (:func:`create_images`);
    returns the open file (the caller fills and closes it)."""
    handle = h5py.File(path, "w")
    create_images(handle, rows, image_shape, filters, dtype).attrs["first_row"] = int(first)
    return handle


def write_index(path: Path, shard_rows: list[int], image_shape: tuple[int, ...], filters,
                shard_size: int, dtype: str = "float32") -> None:
    """Write the index ``path``: a virtual dataset over shards ``0 … len(shard_rows)-1``
    (named by :func:`shard_name`, relative to the index's folder) of the given row counts,
    of the shards' ``dtype`` (a :data:`STORE_DTYPES` name)."""
    total = int(sum(shard_rows))
    layout = h5py.VirtualLayout(shape=(total,) + tuple(image_shape), dtype=store_dtype(dtype))
    first = 0
    for k, rows in enumerate(shard_rows):
        layout[first:first + rows] = h5py.VirtualSource(shard_name(k), IMAGES_KEY,
                                                         shape=(rows,) + tuple(image_shape))
        first += rows
    with h5py.File(path, "w") as handle:
        dset = handle.create_virtual_dataset(IMAGES_KEY, layout, fillvalue=np.nan)
        dset.attrs["filters"] = list(filters)
        dset.attrs["shard_size"] = int(shard_size)


def shard_of_rows(index_path: Path, dtype: str = "float32") -> dict[int, Shard]:
    """``{first row: shard}`` of an existing sharded store of pixel type ``dtype`` (empty
    for a single file, a missing or unreadable one, or one of another dtype: nothing to
    reuse)."""
    if not Path(index_path).exists():
        return {}
    try:
        with h5py.File(index_path, "r") as handle:
            dataset = handle[IMAGES_KEY]
            if dataset.dtype != store_dtype(dtype):
                log.info("%s: its shards hold %s, STORE_DTYPE is %s: rewriting them all",
                         index_path, dataset.dtype, dtype)
                return {}
            found = shards(dataset, index_path) or []
    except (OSError, KeyError, ValueError) as err:
        log.info("%s: not reusing its shards (%s)", index_path, err)
        return {}
    return {s.first: s for s in found}
