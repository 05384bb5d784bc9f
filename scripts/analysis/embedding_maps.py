"""2-D maps of the representation: UMAP and PCA embeddings, and the thumbnail-grid layout.

Only the numbers: plotting lives with the stage. UMAP (and PCA) are fitted on a seeded
subsample and the remaining rows are placed with ``transform`` in batches; :func:`umap_map`
and :func:`pca_map` take the rows as chunks, so a million objects fit in memory and time
(fitting UMAP scales super-linearly with N, transforming linearly).
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from typing import Iterable

import numpy as np
from sklearn.decomposition import PCA
from tqdm import tqdm

from scripts.analysis.neighbours import as_float32

logger = logging.getLogger(__name__)

#: umap-learn finds the neighbours of fewer fitted rows than this exactly, from all pairwise
#: distances (its "small data" branch), above it with NN-descent.
EXACT_NEIGHBOUR_ROWS = 4096


def load_umap():
    """umap-learn, with its compiled functions cached on disk (:mod:`.jit_cache`)."""
    import umap  # slow import (numba, and umap pulls in TensorFlow for ParametricUMAP)

    from scripts.analysis.jit_cache import cache_compiled
    cache_compiled()
    return umap


class ExactEuclideanUMAP:
    """UMAP of fewer than :data:`EXACT_NEIGHBOUR_ROWS` rows on exact Euclidean distances
    computed with NumPy, which umap-learn then takes as ``metric="precomputed"``.

    That is umap-learn's own algorithm below that size (all pairwise distances, exact
    neighbours), but umap-learn computes those distances through scikit-learn with its
    jitted metric as a Python callable, one pair at a time: 6 s to fit 2,000 rows and 11 s
    to transform 1,800 more on 2 cores, where NumPy takes milliseconds (BENCHMARKS.md "UMAP
    maps"). ``transform`` takes vectors, like a UMAP fitted on vectors, and hands umap-learn
    each new row's ``n_neighbors`` nearest fitted rows as a sparse distance matrix, which
    it turns into the same neighbours and coordinates as the dense matrix.
    """

    def __init__(self, fit_X: np.ndarray, n_neighbors: int, **umap_kwargs):
        from sklearn.metrics import pairwise_distances

        if len(fit_X) >= EXACT_NEIGHBOUR_ROWS:
            raise ValueError(f"{len(fit_X)} rows: exact neighbours are for fewer than {EXACT_NEIGHBOUR_ROWS}")
        self.fit_X = np.asarray(fit_X, dtype=np.float64)
        self.n_neighbors = n_neighbors
        self.reducer = load_umap().UMAP(n_neighbors=n_neighbors, metric="precomputed", **umap_kwargs)
        with _precomputed_warnings_quiet():
            self.embedding_ = self.reducer.fit_transform(pairwise_distances(self.fit_X))

    def transform(self, X) -> np.ndarray:
        import scipy.sparse
        from sklearn.neighbors import NearestNeighbors

        X = np.asarray(X, dtype=np.float64)
        k = self.n_neighbors
        dist, idx = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(self.fit_X).kneighbors(X)
        nearest = scipy.sparse.csr_matrix((dist.ravel(), idx.ravel(), np.arange(0, dist.size + 1, k)),
                                          shape=(len(X), len(self.fit_X)))   # keeps exact zeros
        with _precomputed_warnings_quiet():
            return self.reducer.transform(nearest)


@contextlib.contextmanager
def _precomputed_warnings_quiet():
    """umap-learn warns on every precomputed fit and transform about what is done on purpose."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*precomputed.*", category=UserWarning)
        yield


def umap_fit_rows(n: int, n_neighbors: int = 15, fit_subsample: int | None = 50_000,
                  seed: int = 0) -> np.ndarray:
    """The rows UMAP is fitted on: all when ``fit_subsample`` is None or >= ``n``, else a
    sorted seeded draw without replacement (``default_rng(seed).choice``)."""
    if n <= n_neighbors:
        raise ValueError(f"UMAP needs more rows ({n}) than n_neighbors ({n_neighbors})")
    if fit_subsample is None or fit_subsample >= n:
        return np.arange(n)
    if fit_subsample <= n_neighbors:
        raise ValueError(f"fit_subsample ({fit_subsample}) must exceed n_neighbors ({n_neighbors})")
    return np.sort(np.random.default_rng(seed).choice(n, size=fit_subsample, replace=False))


def fit_umap(X, n_neighbors: int = 15, min_dist: float = 0.1, fit_subsample: int | None = 50_000,
             seed: int = 0, n_components: int = 2, metric: str = "euclidean",
             batch_size: int = 50_000):
    """UMAP embedding of every row of ``X``, fitted on a seeded subsample.

    ``fit_subsample`` rows (:func:`umap_fit_rows`) are fitted (``umap.UMAP(random_state=seed,
    n_jobs=1)``: a seed makes the result deterministic, and UMAP then runs single-threaded
    anyway); the other rows are embedded with ``reducer.transform`` in batches of
    ``batch_size``. Rows in the fit subsample keep their fitted coordinates. Returns
    ``(embedding (N, n_components) float32, fitted reducer)``; the reducer also embeds new
    data (e.g. another dataset into the same map). :func:`umap_map` does the same for rows
    that arrive in chunks.
    """
    X = as_float32(X)
    rows = umap_fit_rows(X.shape[0], n_neighbors, fit_subsample, seed)
    return umap_map(X[rows], rows, (X,), X.shape[0], n_neighbors=n_neighbors, min_dist=min_dist,
                    seed=seed, n_components=n_components, metric=metric, batch_size=batch_size)


def umap_map(fit_X, fit_rows, chunks: Iterable[np.ndarray], n: int, n_neighbors: int = 15,
             min_dist: float = 0.1, seed: int = 0, n_components: int = 2,
             metric: str = "euclidean", batch_size: int = 50_000):
    """:func:`fit_umap` of ``n`` rows that arrive as ``chunks`` (in row order), of which
    ``fit_X`` are those at ``fit_rows``: fitted on ``fit_X``, every other row transformed in
    batches of ``batch_size`` gathered across chunks, so the batches (and the coordinates)
    are those :func:`fit_umap` makes of the whole array. Holds one chunk and one batch
    beside the fit rows and the (n, n_components) result."""
    fit_rows = np.asarray(fit_rows, dtype=np.int64)
    kwargs = dict(min_dist=min_dist, n_components=n_components, random_state=seed, n_jobs=1)
    logger.info("UMAP: fitting on %d of %d rows", len(fit_rows), n)
    embedding = np.empty((n, n_components), dtype=np.float32)
    if metric == "euclidean" and len(fit_rows) < EXACT_NEIGHBOUR_ROWS:
        reducer = ExactEuclideanUMAP(as_float32(fit_X), n_neighbors, **kwargs)
        embedding[fit_rows] = reducer.embedding_
    else:
        reducer = load_umap().UMAP(n_neighbors=n_neighbors, metric=metric, **kwargs)
        embedding[fit_rows] = reducer.fit_transform(as_float32(fit_X))
    fitted = np.zeros(n, dtype=bool)
    fitted[fit_rows] = True
    rows_waiting: list[np.ndarray] = []      # rows to transform, in order, fewer than a batch
    waiting: list[np.ndarray] = []           # their vectors

    def join(parts):
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    start = 0
    with tqdm(total=n - len(fit_rows), desc="UMAP transform", leave=False, disable=None) as bar:
        for chunk in chunks:
            stop = start + chunk.shape[0]
            if stop > n:
                raise ValueError(f"the chunks hold more than the n={n} rows announced")
            rest = np.flatnonzero(~fitted[start:stop])
            rows_waiting.append(rest + start)
            waiting.append(as_float32(chunk)[rest])
            start = stop
            held = sum(len(r) for r in rows_waiting)
            if held < batch_size and start < n:
                continue
            rows, X = join(rows_waiting), join(waiting)
            full = held if start == n else held - held % batch_size   # the last batch may be short
            for b in range(0, full, batch_size):
                batch = slice(b, min(b + batch_size, full))
                embedding[rows[batch]] = reducer.transform(X[batch])
            bar.update(full)
            rows_waiting, waiting = [rows[full:]], [X[full:]]
    if start != n:
        raise ValueError(f"the chunks held {start} rows, n={n} was announced")
    return embedding, reducer


def fit_pca(X, n_components: int = 2, seed: int = 0):
    """PCA embedding of ``X``; returns ``(embedding (N, n_components) float32, fitted PCA)``."""
    X = as_float32(X)
    return pca_map(X, (X,), X.shape[0], n_components, seed)


def pca_map(fit_X, chunks: Iterable[np.ndarray], n: int, n_components: int = 2, seed: int = 0):
    """PCA fitted on ``fit_X`` (e.g. UMAP's fit subsample), then every one of the ``n`` rows
    of ``chunks`` projected, one chunk at a time; returns ``(embedding (n, n_components)
    float32, fitted PCA)``."""
    pca = PCA(n_components=n_components, random_state=seed).fit(as_float32(fit_X))
    logger.info("PCA: %d components explain %.1f%% of the variance (fitted on %d rows)",
                n_components, 100 * pca.explained_variance_ratio_.sum(), len(fit_X))
    embedding = np.empty((n, n_components), dtype=np.float32)
    start = 0
    for chunk in chunks:
        stop = start + chunk.shape[0]
        if stop > n:
            raise ValueError(f"the chunks hold more than the n={n} rows announced")
        embedding[start:stop] = pca.transform(as_float32(chunk))
        start = stop
    if start != n:
        raise ValueError(f"the chunks held {start} rows, n={n} was announced")
    return embedding, pca


def stream_maps(source, n: int, n_neighbors: int = 15, min_dist: float = 0.1,
                fit_subsample: int | None = 50_000, pca_components: int = 2, seed: int = 0):
    """The analyse stage's UMAP and PCA maps of ``n`` vectors that ``source`` streams (a
    :class:`~scripts.analysis.representation.VectorSource`): standardised with its streamed
    standardiser, both maps fitted on the seeded :func:`umap_fit_rows`, every other row
    transformed chunk by chunk. Returns ``(umap (n, 2), pca (n, k), fitted PCA, fit rows)``
    with ``k = min(pca_components, D, len(fit rows))``."""
    mean, std = source.standardiser()

    def z(vectors):
        return ((vectors - mean) / std).astype(np.float32)

    fit_rows = umap_fit_rows(n, n_neighbors, fit_subsample, seed)
    fit_z = z(source.take(fit_rows))
    umap_xy, _ = umap_map(fit_z, fit_rows, (z(c) for c in source.chunks()), n,
                          n_neighbors=n_neighbors, min_dist=min_dist, seed=seed)
    n_pca = min(pca_components, source.dim, len(fit_rows))
    pca_xy, pca = pca_map(fit_z, (z(c) for c in source.chunks()), n, n_components=n_pca, seed=seed)
    return umap_xy, pca_xy, pca, fit_rows


def thumbnail_grid(embedding_2d, n_grid: int) -> list[tuple[tuple[int, int], int]]:
    """Pick one object per occupied cell of an ``n_grid`` x ``n_grid`` grid over a 2-D map.

    The grid spans the bounding box of ``embedding_2d`` (N, 2) in equal cells; cell
    ``(ix, iy)`` has ``ix`` along the first coordinate (x, left to right) and ``iy`` along
    the second (y, bottom to top), both in ``[0, n_grid)``. For each cell holding at
    least one object, the object nearest (Euclidean) to the cell centre is chosen.
    Returns ``[((ix, iy), row_index), ...]`` sorted by ``(ix, iy)``.
    """
    E = np.asarray(embedding_2d, dtype=np.float64)
    if E.ndim != 2 or E.shape[1] != 2:
        raise ValueError(f"embedding_2d must be (N, 2), got shape {E.shape}")
    if n_grid < 1:
        raise ValueError(f"n_grid must be >= 1, got {n_grid}")
    finite = np.flatnonzero(np.all(np.isfinite(E), axis=1))
    if len(finite) == 0:
        return []
    P = E[finite]
    low, high = P.min(axis=0), P.max(axis=0)
    width = np.where(high > low, (high - low) / n_grid, 1.0)
    cell = np.clip(np.floor((P - low) / width).astype(np.int64), 0, n_grid - 1)
    centre = low + (cell + 0.5) * width
    distance = np.hypot(*(P - centre).T)
    flat = cell[:, 0] * n_grid + cell[:, 1]
    order = np.lexsort((distance, flat))           # by cell, then by distance to centre
    first = order[np.r_[True, flat[order][1:] != flat[order][:-1]]]
    return [((int(cell[i, 0]), int(cell[i, 1])), int(finite[i])) for i in first]
