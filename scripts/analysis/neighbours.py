"""Nearest-neighbour search in representation space (faiss-cpu).

`NeighbourIndex` picks the search structure from the size of the indexed set: an exact
flat index up to ``exact_threshold`` vectors, an inverted-file index (IVF, approximate)
beyond it, where a flat search over ~1e6 x 1e6 pairs would take hours on a few cores.
`NeighbourIndex.fit_chunks` builds the same index from chunks of vectors (e.g. a
representation parquet read batch by batch), so only faiss's own copy is held whole.
`knn_l1_distance` is the always-exact L1 search used by the realism score.

Distances are returned in the units of the input vectors: true (not squared) Euclidean
distance for ``metric="l2"``, the sum of absolute differences for ``metric="l1"``.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Iterable, Iterator

import faiss
import numpy as np

logger = logging.getLogger(__name__)

_METRICS = {"l2": faiss.METRIC_L2, "l1": faiss.METRIC_L1}


def as_float32(X, name: str = "X") -> np.ndarray:
    """Return ``X`` as a C-contiguous float32 2-D array (what faiss requires)."""
    X = np.ascontiguousarray(np.asarray(X), dtype=np.float32)
    if X.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n_objects, n_dims), got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name} contains NaN or infinite values; drop or impute those rows first")
    return X


def _checked_chunks(chunks: Iterable, n: int) -> Iterator[np.ndarray]:
    """The non-empty chunks as float32 2-D arrays of one width; raises as soon as they hold
    more than ``n`` rows, and at the end when they hold fewer."""
    seen, d = 0, None
    for chunk in chunks:
        chunk = as_float32(chunk, "chunk")
        if d is not None and chunk.shape[1] != d:
            raise ValueError(f"a chunk has {chunk.shape[1]} dims, earlier ones had {d}")
        d = chunk.shape[1]
        seen += chunk.shape[0]
        if seen > n:
            raise ValueError(f"the chunks hold more than the n={n} vectors announced")
        if chunk.shape[0]:
            yield chunk
    if seen != n:
        raise ValueError(f"the chunks held {seen} vectors, n={n} was announced")


def _gather_rows(chunks: Iterable[np.ndarray], n: int, n_train: int, seed: int) -> np.ndarray:
    """Rows at the seeded positions ``sort(default_rng(seed).choice(n, n_train))`` of the
    concatenated chunks (all rows when ``n_train == n``), read one chunk at a time."""
    from scripts.analysis.representation import gather_rows

    wanted = (np.sort(np.random.default_rng(seed).choice(n, size=n_train, replace=False))
              if n_train < n else np.arange(n))
    return gather_rows(chunks, wanted)


def _reserve(index: "faiss.IndexFlat", n: int) -> None:
    """Allocate a flat index's storage for ``n`` vectors before they are added in chunks.

    faiss grows the storage like a ``std::vector``: without this, an add that passes the
    capacity copies the whole storage into a buffer twice as large, so for a moment both
    are resident. Resizing to ``n`` rows and back to 0 keeps the capacity (``resize``
    never shrinks it), so every later ``add`` writes in place.
    """
    index.codes.resize(n * index.code_size)
    index.codes.resize(0)


class NeighbourIndex:
    """k-nearest-neighbour search, exact for small sets and IVF-approximate for large ones.

    Parameters
    ----------
    metric : "l2" or "l1"
        Euclidean or Manhattan distance.
    exact_threshold : int
        Sets with at most this many vectors get an exact ``IndexFlat``; larger ones an
        ``IndexIVFFlat`` (approximate: a query only visits ``nprobe`` of ``nlist`` cells).
    nlist : int or None
        Number of IVF cells; default ``4 * sqrt(N)`` (faiss' usual rule of thumb).
    nprobe : int
        Cells visited per query (IVF only): recall rises and speed falls with it.
    train_size : int or None
        Vectors (random, seeded) used to train the IVF coarse quantiser; default
        ``min(N, 64 * nlist)`` (at least 39 per centroid, as faiss asks).
    seed : int
        Seed of the training subsample and of the k-means.

    Attributes after `fit` or `fit_chunks`: ``index_`` (the faiss index), ``exact_`` (bool),
    ``n_``, ``d_`` (and ``nlist_`` for IVF).
    """

    def __init__(self, metric: str = "l2", exact_threshold: int = 1_000_000,
                 nlist: int | None = None, nprobe: int = 32,
                 train_size: int | None = None, seed: int = 0):
        if metric not in _METRICS:
            raise ValueError(f"metric must be one of {sorted(_METRICS)}, got {metric!r}")
        if nprobe < 1:
            raise ValueError(f"nprobe must be >= 1, got {nprobe}")
        self.metric = metric
        self.exact_threshold = int(exact_threshold)
        self.nlist = nlist
        self.nprobe = int(nprobe)
        self.train_size = train_size
        self.seed = int(seed)

    def fit(self, X) -> "NeighbourIndex":
        """Index the rows of ``X`` (N x d)."""
        X = as_float32(X)
        return self.fit_chunks(lambda: (X,), n=X.shape[0])

    def fit_chunks(self, chunks: Iterable | Callable[[], Iterable], n: int) -> "NeighbourIndex":
        """Index vectors that arrive in chunks (2-D arrays of any row counts, empty ones too),
        so a large set never has to be held whole beside faiss's own copy of it.

        ``n`` is the total number of rows the chunks hold: it chooses exact or IVF and the
        IVF cell count before the first vector arrives, and a different total raises. Rows
        are numbered in arrival order, so the indices `kneighbors` returns are positions in
        the concatenated chunks.

        * Exact (``n <= exact_threshold``): one pass, each chunk appended to the flat index;
          the result equals ``fit`` of the concatenated chunks. ``chunks`` may be a one-shot
          iterable (a generator) or a callable returning one.
        * IVF: two passes, so ``chunks`` must be a zero-argument callable returning a fresh
          iterable each call. The first pass gathers the quantiser's training rows: the
          same seeded subsample of row positions that ``fit`` draws over the whole set
          (``default_rng(seed).choice(n, train_size)``), not a sample of the first chunks,
          since pooled sets arrive sorted by dataset and cells trained on the first chunks
          would only know the first set. The second pass adds every chunk. The result is
          deterministic for a seed and equal to ``fit`` of the concatenated chunks; memory
          beyond the index is one chunk plus the ``train_size x d`` training sample.
        """
        n = int(n)
        if n <= 0:
            raise ValueError("cannot build a neighbour index on an empty set")
        exact = n <= self.exact_threshold
        if not exact and not callable(chunks):
            raise TypeError(f"an IVF build ({n} vectors > exact_threshold "
                            f"{self.exact_threshold}) reads the chunks twice: pass a "
                            "zero-argument callable that returns a fresh iterable of chunks")
        read = chunks if callable(chunks) else (lambda: chunks)
        faiss_metric = _METRICS[self.metric]
        index = None
        if not exact:
            nlist = min(n, int(self.nlist or max(1, round(4 * math.sqrt(n)))))
            n_train = min(n, int(self.train_size or 64 * nlist))
            train = _gather_rows(_checked_chunks(read(), n), n, n_train, self.seed)
            d = train.shape[1]
            quantizer = faiss.IndexFlat(d, faiss_metric)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss_metric)
            index.cp.seed = self.seed
            logger.info("training IVF index: %d cells on %d of %d vectors (d=%d)",
                        nlist, n_train, n, d)
            index.train(train)
            del train
            index.nprobe = min(self.nprobe, nlist)
            self.nlist_ = nlist
        for chunk in _checked_chunks(read(), n):
            if index is None:
                index = faiss.IndexFlat(chunk.shape[1], faiss_metric)
                _reserve(index, n)
            elif chunk.shape[1] != index.d:
                raise ValueError(f"a chunk has {chunk.shape[1]} dims, earlier ones had {index.d}")
            index.add(chunk)
        self.n_, self.d_, self.exact_ = n, index.d, exact
        self.index_ = index
        return self

    def kneighbors(self, Q, k: int, batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest indexed rows of each query row, nearest first.

        Returns ``(distances, indices)``, both (n_queries, k); distances float32 in input
        units (true L2, not squared), indices int64 into the fitted ``X``. Where fewer than
        ``k`` rows are reachable (tiny sets, IVF with small ``nprobe``) indices are -1 and
        distances +inf.
        """
        if not hasattr(self, "index_"):
            raise RuntimeError("NeighbourIndex.kneighbors called before fit(X)")
        Q = as_float32(Q, "Q")
        if Q.shape[1] != self.d_:
            raise ValueError(f"queries have {Q.shape[1]} dims, index was fitted on {self.d_}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        D = np.empty((Q.shape[0], k), dtype=np.float32)
        I = np.empty((Q.shape[0], k), dtype=np.int64)
        for start in range(0, Q.shape[0], batch_size):
            stop = start + batch_size
            D[start:stop], I[start:stop] = self.index_.search(Q[start:stop], k)
        missing = I < 0
        if self.metric == "l2":
            np.sqrt(np.maximum(D, 0.0, out=D), out=D)
        D[missing] = np.inf
        return D, I


def knn_self_excluded(index: NeighbourIndex, X, k: int,
                      rows=None) -> tuple[np.ndarray, np.ndarray]:
    """k nearest neighbours of fitted rows among the *other* fitted rows.

    ``X`` must be the array ``index`` was fitted on; ``rows`` (default: all) selects the
    rows to query, and the outputs are aligned with it. Searches ``k + 1`` and removes
    the row itself by index (not by position, so exact duplicates are handled: a
    duplicate at distance 0 is a genuine neighbour); if the row itself is not among the
    ``k + 1`` returned (possible only with ties or IVF), the farthest is dropped instead.
    """
    X = as_float32(X)
    rows = np.arange(X.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    D, I = index.kneighbors(X[rows], k + 1)
    own = I == rows[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), k)
    keep = np.ones_like(own)
    keep[np.arange(I.shape[0]), drop] = False
    return D[keep].reshape(-1, k), I[keep].reshape(-1, k)


def knn_l1_distance(X, Y=None, k: int = 8, exclude_self: bool = False) -> np.ndarray:
    """Exact L1 (Manhattan) distances from each row of ``X`` to its ``k`` nearest rows of ``Y``.

    Uses faiss ``IndexFlat`` with ``METRIC_L1`` (brute force, exact). With ``Y=None`` the
    search is within ``X``; ``exclude_self=True`` (only with ``Y=None``) then leaves out each
    row itself, i.e. gives ``d_j(x, X \\ {x})``. Returns an (n_X, k) float32 array sorted
    ascending, so ``[:, -1]`` is the k-th neighbour distance.
    """
    X = as_float32(X)
    if exclude_self and Y is not None:
        raise ValueError("exclude_self=True means a search of X within itself: pass Y=None")
    target = X if Y is None else as_float32(Y, "Y")
    if target.shape[1] != X.shape[1]:
        raise ValueError(f"X has {X.shape[1]} dims but Y has {target.shape[1]}")
    need = k + 1 if exclude_self else k
    if target.shape[0] < need:
        raise ValueError(f"need at least {need} reference rows for k={k}, got {target.shape[0]}")
    index = NeighbourIndex(metric="l1", exact_threshold=np.iinfo(np.int64).max).fit(target)
    if exclude_self:
        D, _ = knn_self_excluded(index, X, k)
    else:
        D, _ = index.kneighbors(X, k)
    return D
