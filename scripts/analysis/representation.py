"""Representations of every analysed image: raw images → normalisation → encoder → parquet.

The analyse stage embeds each (dataset, split) once and stores the vectors in
``reports/<run>/representation.parquet`` (with the encoder's fingerprint in the file's
metadata): one row per image with its identity (``dataset``,
``row``, ``object_id``, ``snapshot``, ``projection``, ``split``) and the vector as float32
columns ``r0 … r{D-1}``. Images are streamed from the HDF5 stores in batches
(:func:`scripts.model.input_pipeline.ordered_dataset`) and the table is written batch by batch
(pyarrow ``ParquetWriter``), so neither the images nor the vectors of a large survey
need to fit in memory at once. :func:`iter_vectors` reads the vectors back the same way, a
batch at a time (with :func:`count_rows` and :func:`read_meta` for their number and identity).

The encoder always sees the images through the run's stored normalisation
(``normalisation.json``), exactly as in training (DESIGN §5).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from scripts import image_store

logger = logging.getLogger(__name__)

REPRESENTATION_FILE = "representation.parquet"
#: Identity columns of every representation row, in file order.
META_COLUMNS = ("dataset", "row", "object_id", "snapshot", "projection", "split")
VECTOR_PREFIX = "r"
IMAGES_KEY = image_store.IMAGES_KEY


def vector_columns(dim: int) -> list[str]:
    """Names of the vector columns, ``r0 … r{dim-1}``."""
    return [f"{VECTOR_PREFIX}{i}" for i in range(int(dim))]


# --------------------------------------------------------------------------- encoder
class Embedder:
    """Raw images ``(N, H, W, C)`` → representations ``(N, D)`` float32.

    A thin layer over :class:`scripts.model.inference.TrainedEncoder` (the run's stored
    normalisation, then the encoder in inference mode) that embeds ``batch_size`` images
    per forward pass and says whether a dataset's images fit the encoder.
    """

    def __init__(self, encoder, normalisation, batch_size: int = 256):
        from scripts.model.inference import TrainedEncoder

        self.trained = TrainedEncoder(encoder, normalisation)
        self.batch_size = int(batch_size)

    @classmethod
    def from_run(cls, run_dir: str | Path, batch_size: int = 256) -> "Embedder":
        """The encoder (``encoder.keras``) and normalisation (``normalisation.json``) of a
        trained run folder ``models/<run>/`` (:func:`scripts.model.inference.load_encoder`)."""
        from scripts.model.inference import load_encoder

        trained = load_encoder(run_dir)
        return cls(trained.encoder, trained.normalisation, batch_size)

    @property
    def encoder(self):
        return self.trained.encoder

    @property
    def normalisation(self):
        return self.trained.normalisation

    @property
    def input_shape(self) -> tuple:
        """``(H, W, C)`` the encoder accepts (entries may be None for any size)."""
        return tuple(self.encoder.input_shape[1:])

    @property
    def dim(self) -> int:
        return int(self.encoder.output_shape[-1])

    def accepts(self, image_shape: Iterable[int]) -> str:
        """'' when images of ``image_shape`` (H, W, C) fit the encoder, else why not."""
        image_shape = tuple(int(s) for s in image_shape)
        want = self.input_shape
        if len(image_shape) != len(want):
            return f"images have shape {image_shape}, the encoder expects {want}"
        if want[-1] is not None and image_shape[-1] != want[-1]:
            return f"{image_shape[-1]} band(s), the encoder was trained on {want[-1]}"
        for got, exp in zip(image_shape[:-1], want[:-1]):
            if exp is not None and got != exp:
                return f"images are {image_shape[:-1]} px, the encoder expects {tuple(want[:-1])}"
        return ""

    def __call__(self, images) -> np.ndarray:
        from scripts.model.inference import embed

        return embed(self.trained, images, batch_size=self.batch_size)


# --------------------------------------------------------------------------- inputs
def store_path(dataset_root: str | Path, name: str) -> Path:
    """``dataset/<DATASET>/images.h5`` (a single file or the index of its shards)."""
    return Path(dataset_root) / name / image_store.IMAGES_FILE


def image_shape(dataset_root: str | Path, name: str) -> tuple[int, ...] | None:
    """Shape of one image of the store of ``name`` (H, W, C), or None without a store."""
    path = store_path(dataset_root, name)
    if not path.exists():
        return None
    with h5py.File(path, "r") as handle:
        return tuple(int(s) for s in handle[IMAGES_KEY].shape[1:])


def select_datasets(candidates: Iterable[str], dataset_root: str | Path,
                    accepts: Callable[[tuple], str]) -> tuple[list[str], dict[str, str]]:
    """Datasets (in order, without repeats) whose image store exists and fits the encoder.

    ``accepts(shape)`` returns '' or the reason a shape does not fit (e.g.
    :meth:`Embedder.accepts`). Returns ``(kept, skipped)`` with ``skipped`` mapping each
    left-out dataset to its reason (also logged).
    """
    kept, skipped = [], {}
    for name in dict.fromkeys(candidates):
        shape = image_shape(dataset_root, name)
        reason = (f"no image store {store_path(dataset_root, name)} (run extract with LOAD true)"
                  if shape is None else accepts(shape))
        if reason:
            skipped[name] = reason
            logger.info("not embedding %s: %s", name, reason)
        else:
            kept.append(name)
    return kept, skipped


def rows_to_embed(splits: pd.DataFrame, datasets: Iterable[str], split_names: Iterable[str]) -> pd.DataFrame:
    """Rows of ``dataset/splits.parquet`` to embed: the given datasets and splits, sorted by
    dataset (in the order given) and row, with the identity columns of :data:`META_COLUMNS`."""
    missing = [c for c in META_COLUMNS if c not in splits.columns]
    if missing:
        raise ValueError(f"splits table lacks column(s) {missing}; expected the prepare stage's "
                         "dataset/splits.parquet")
    datasets = list(datasets)
    table = splits[splits["dataset"].isin(datasets) & splits["split"].isin(list(split_names))]
    order = table["dataset"].map({n: i for i, n in enumerate(datasets)})
    table = table.assign(_order=order).sort_values(["_order", "row"], kind="stable")
    return table[list(META_COLUMNS)].reset_index(drop=True)


# --------------------------------------------------------------------------- embedding
def _schema(dim: int) -> pa.Schema:
    fields = [pa.field("dataset", pa.string()), pa.field("row", pa.int64()),
              pa.field("object_id", pa.int64()), pa.field("snapshot", pa.int64()),
              pa.field("projection", pa.int64()), pa.field("split", pa.string())]
    fields += [pa.field(c, pa.float32()) for c in vector_columns(dim)]
    return pa.schema(fields)


def compute_representations(embed: Callable[[np.ndarray], np.ndarray], table: pd.DataFrame,
                            dataset_root: str | Path, out_path: str | Path,
                            batch_size: int = 256, row_group_size: int = 65536,
                            metadata: dict[str, str] | None = None) -> int:
    """Embed the images of ``table`` (from :func:`rows_to_embed`) and write the parquet file.

    ``embed`` maps raw images (N, H, W, C) to (N, D) vectors. Images are read in batches of
    ``batch_size`` through :func:`scripts.model.input_pipeline.ordered_dataset` (tf.data, reads
    overlapping the encoder) and the vectors are appended to ``out_path`` in row groups of
    ``row_group_size`` rows (only one row group is held in memory).
    The file is written under a temporary name and renamed at the end, so an interrupted
    run never leaves a truncated table. ``metadata`` (strings) goes into the file's schema
    (e.g. the encoder fingerprint; read back by :func:`representation_metadata`). Returns
    the number of rows written.
    """
    from scripts.model.input_pipeline import HDF5Images, ordered_dataset

    out_path = Path(out_path)
    if len(table) == 0:
        raise ValueError("no rows to embed: check analyse.SPLITS and the datasets in splits.parquet")
    names = list(dict.fromkeys(table["dataset"]))
    reader = HDF5Images({n: store_path(dataset_root, n) for n in names})
    store_index = table["dataset"].map({n: i for i, n in enumerate(names)}).to_numpy(np.int64)
    rows = table["row"].to_numpy(np.int64)
    tmp = out_path.with_suffix(".tmp")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = None
    written = flushed = 0
    pending: list[np.ndarray] = []

    def flush():
        nonlocal writer, flushed
        vectors = np.concatenate(pending)
        pending.clear()
        if writer is None:
            schema = _schema(vectors.shape[1])
            if metadata:
                schema = schema.with_metadata({str(k): str(v) for k, v in metadata.items()})
            writer = pq.ParquetWriter(tmp, schema)
        meta = table.iloc[flushed:flushed + len(vectors)]
        columns = {c: meta[c].to_numpy() for c in META_COLUMNS}
        columns.update({c: vectors[:, i] for i, c in enumerate(vector_columns(vectors.shape[1]))})
        writer.write_table(pa.Table.from_pydict(columns, schema=writer.schema))
        flushed += len(vectors)

    try:
        batches = ordered_dataset(reader, store_index, rows, batch_size).as_numpy_iterator()
        with tqdm(total=len(table), desc="embedding", unit="img", disable=None) as bar:
            for images in batches:
                vectors = np.asarray(embed(images), dtype=np.float32)
                if vectors.ndim != 2 or len(vectors) != len(images):
                    raise ValueError(f"the encoder returned shape {vectors.shape} for "
                                     f"{len(images)} images; expected (N, D)")
                if not np.all(np.isfinite(vectors)):
                    raise ValueError("the encoder returned NaN or infinite values; check the "
                                     "run's normalisation.json and the image stores")
                pending.append(vectors)
                written += len(images)
                if written - flushed >= row_group_size:
                    flush()
                bar.update(len(images))
        if pending:
            flush()
    except BaseException:
        if writer is not None:
            writer.close()
        tmp.unlink(missing_ok=True)          # never leave a partial table behind
        raise
    finally:
        reader.close()
    writer.close()
    if written != len(table):
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"embedded {written} images but {len(table)} were requested")
    tmp.replace(out_path)
    logger.info("wrote %d representations (D=%d) to %s", written,
                len(writer.schema.names) - len(META_COLUMNS), out_path)
    return written


@dataclass
class Representation:
    """The stored representations: identity table ``meta`` and row-aligned ``vectors``."""

    meta: pd.DataFrame
    vectors: np.ndarray

    def subset(self, mask) -> "Representation":
        mask = np.asarray(mask)
        return Representation(self.meta[mask].reset_index(drop=True), self.vectors[mask])

    def of(self, dataset: str) -> "Representation":
        return self.subset(self.meta["dataset"].to_numpy() == dataset)


def read_representation(path: str | Path, datasets: Iterable[str] | None = None,
                        splits: Iterable[str] | None = None) -> Representation:
    """Read ``representation.parquet`` (optionally only some datasets and splits)."""
    path = _existing(path)
    filters = []
    if datasets is not None:
        filters.append(("dataset", "in", list(datasets)))
    if splits is not None:
        filters.append(("split", "in", list(splits)))
    table = pq.read_table(path, filters=filters or None)
    vectors = _stack_vectors(table, _vector_names(table.column_names, path))
    meta = table.select(list(META_COLUMNS)).to_pandas()
    return Representation(meta, vectors)


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the analyse stage "
                                "(python -m scripts.analyse) first")
    return path


def _vector_names(names: Iterable[str], path: Path) -> list[str]:
    """The vector columns ``r0 … r{D-1}`` among ``names``, in index order."""
    vec_cols = [c for c in names if c.startswith(VECTOR_PREFIX) and c[len(VECTOR_PREFIX):].isdigit()]
    if not vec_cols:
        raise ValueError(f"{path} has no vector columns {VECTOR_PREFIX}0…; not a representation table")
    return sorted(vec_cols, key=lambda c: int(c[len(VECTOR_PREFIX):]))


def _stack_vectors(table, vec_cols: list[str]) -> np.ndarray:
    """The vector columns of a pyarrow table or record batch as one (n, D) float32 array."""
    if table.num_rows == 0:
        return np.empty((0, len(vec_cols)), np.float32)
    columns = [table.column(c).to_numpy() for c in vec_cols]
    return np.column_stack(columns).astype(np.float32, copy=False)


def _dataset_batches(path: Path, columns: list[str], datasets: Iterable[str] | None,
                     batch_size: int) -> Iterator[pa.RecordBatch]:
    """Record batches of ``columns`` in file order, only rows of ``datasets`` (None: all).

    ``pre_buffer=False``: with pyarrow's default read-ahead cache the memory pool's peak grew
    with the file (431 MiB for 1e6 rows x 64 floats, 145 MiB for 2e5); without it the peak
    is one row group's worth (98 MiB at both), which is what streaming is for.
    """
    wanted = None if datasets is None else pa.array(list(datasets), pa.string())
    read = columns if wanted is None or "dataset" in columns else [*columns, "dataset"]
    with pq.ParquetFile(path, pre_buffer=False) as handle:
        for batch in handle.iter_batches(batch_size=int(batch_size), columns=read):
            if wanted is not None:
                keep = pc.is_in(batch.column("dataset"), value_set=wanted)
                if not pc.all(keep).as_py():   # sets are stored in runs: most batches are whole
                    batch = batch.filter(keep)
            if batch.num_rows:
                yield batch


def iter_vectors(path: str | Path, datasets: Iterable[str] | None = None,
                 batch_size: int = 65536) -> Iterator[np.ndarray]:
    """Stream the vectors of ``representation.parquet`` as (n_i, D) float32 chunks.

    Rows of ``datasets`` only (None: all), in file order, so the chunks concatenated are
    ``read_representation(path, datasets).vectors``; at most ``batch_size`` rows per chunk
    (pyarrow ``ParquetFile.iter_batches``), so a survey's vectors are never held whole
    (e.g. for :meth:`scripts.analysis.neighbours.NeighbourIndex.fit_chunks`). Empty
    batches are skipped.
    """
    path = _existing(path)
    vec_cols = _vector_names(pq.read_schema(path).names, path)
    for batch in _dataset_batches(path, vec_cols, datasets, batch_size):
        yield _stack_vectors(batch, vec_cols)


def gather_rows(chunks: Iterable[np.ndarray], positions) -> np.ndarray:
    """The rows at ``positions`` (increasing, distinct) of the concatenated ``chunks``, read
    one chunk at a time, so only the gathered rows are held (e.g. a seeded subsample of a
    survey's vectors). Equal to ``np.concatenate(list(chunks))[positions]``."""
    positions = np.asarray(positions, dtype=np.int64)
    if positions.ndim != 1 or np.any(np.diff(positions) <= 0):
        raise ValueError("positions must be a 1-D increasing sequence of distinct rows")
    parts, start, dim = [], 0, 0
    for chunk in chunks:
        stop = start + chunk.shape[0]
        lo, hi = np.searchsorted(positions, [start, stop])
        if hi > lo:
            parts.append(np.array(chunk[positions[lo:hi] - start], dtype=np.float32))
        dim, start = chunk.shape[1], stop
    if positions.size and (positions[0] < 0 or positions[-1] >= start):
        raise IndexError(f"rows {positions[0]}…{positions[-1]} asked of {start} vectors")
    return np.concatenate(parts) if parts else np.empty((0, dim), np.float32)


def streamed_standardiser(chunks: Iterable[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """:func:`standardiser` of the concatenated ``chunks`` in one pass, holding one chunk:
    float64 per-chunk means and squared deviations merged pairwise (Chan, Golub & LeVeque
    1983), which stays exact where a running sum of squares would cancel."""
    n, mean, m2 = 0, None, None
    for chunk in chunks:
        x = np.asarray(chunk, dtype=np.float64)
        if not len(x):
            continue
        nb, mb = len(x), x.mean(axis=0)
        m2b = ((x - mb) ** 2).sum(axis=0)
        if mean is None:
            n, mean, m2 = nb, mb, m2b
            continue
        delta, total = mb - mean, n + nb
        mean = mean + delta * (nb / total)
        m2 = m2 + m2b + delta ** 2 * (n * nb / total)
        n = total
    if mean is None:
        raise ValueError("no vectors to standardise")
    std = np.sqrt(m2 / n)
    return mean, np.where(std > 0, std, 1.0)


class VectorSource:
    """The vectors of one ``representation.parquet``, read on demand rather than held: a
    pass over them (:meth:`chunks`), the rows at given positions (:meth:`take`) or their
    standardiser (:meth:`standardiser`), each optionally over some datasets' rows only.

    Positions count rows in file order within the selection, as in :func:`read_meta` of
    the same datasets. This is what lets the analyse stage run on a survey whose vectors
    do not fit in memory: only the identity table (about 60 bytes a row) is held whole.
    """

    def __init__(self, path: str | Path, batch_size: int = 65536):
        self.path = _existing(path)
        self.batch_size = int(batch_size)
        self.dim = len(_vector_names(pq.read_schema(self.path).names, self.path))

    def chunks(self, datasets: Iterable[str] | None = None) -> Iterator[np.ndarray]:
        return iter_vectors(self.path, datasets, self.batch_size)

    def take(self, positions, datasets: Iterable[str] | None = None) -> np.ndarray:
        return gather_rows(self.chunks(datasets), positions)

    def standardiser(self, datasets: Iterable[str] | None = None) -> tuple[np.ndarray, np.ndarray]:
        return streamed_standardiser(self.chunks(datasets))


def count_rows(path: str | Path, datasets: Iterable[str] | None = None,
               batch_size: int = 65536) -> int:
    """Rows of ``datasets`` (None: all) in ``representation.parquet``, read from the
    ``dataset`` column alone (what :func:`iter_vectors` will yield, known in advance)."""
    path = _existing(path)
    if datasets is None:
        return int(pq.ParquetFile(path).metadata.num_rows)
    batches = _dataset_batches(path, ["dataset"], datasets, batch_size)
    return sum(batch.num_rows for batch in batches)


def read_meta(path: str | Path, datasets: Iterable[str] | None = None) -> pd.DataFrame:
    """The identity columns (:data:`META_COLUMNS`) of ``datasets``' rows (None: all), in
    file order, without the vectors: row-aligned with :func:`iter_vectors`."""
    path = _existing(path)
    filters = None if datasets is None else [("dataset", "in", list(datasets))]
    return pq.read_table(path, columns=list(META_COLUMNS), filters=filters).to_pandas()


def representation_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata stored with a representation table (empty when none)."""
    raw = pq.read_schema(path).metadata or {}
    return {k.decode(): v.decode() for k, v in raw.items() if not k.startswith(b"ARROW:")
            and k != b"pandas"}


def standardiser(vectors) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and std of ``vectors`` (float64; std 0 → 1), for z-scoring."""
    from scripts.analysis.realism import standardisation

    return standardisation(vectors)


class StoreRows:
    """Selected rows of one image store, addressed ``0 … len(rows)-1`` like an array.

    Supports ``len``, integer-array and slice indexing (returns float32 (n, H, W, C)), so
    functions that stream an (N, H, W, C) array-like in batches (e.g.
    :func:`scripts.analysis.drivers.pixel_baseline_features`) read only the rows of the
    analysed split, a batch at a time.
    """

    def __init__(self, path: str | Path, rows):
        self.path = Path(path)
        self.rows = np.asarray(rows, dtype=np.int64)
        self._file = image_store.open_store(self.path)  # checks that every shard is there
        self._images = self._file[IMAGES_KEY]
        self.shape = (len(self.rows),) + tuple(self._images.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index) -> np.ndarray:
        wanted = self.rows[index]
        scalar = np.ndim(wanted) == 0
        wanted = np.atleast_1d(wanted)
        unique, inverse = np.unique(wanted, return_inverse=True)  # h5py wants increasing rows
        out = np.asarray(self._images[unique], dtype=np.float32)[inverse]
        return out[0] if scalar else out

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "StoreRows":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
