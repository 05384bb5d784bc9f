"""2-D maps of the representation: UMAP and PCA embeddings, and the thumbnail-grid layout.

Only the numbers: plotting lives with the stage. UMAP is fitted on a seeded subsample
and the remaining rows are placed with ``transform`` in batches, so a million objects fit
in memory and time (fitting UMAP scales super-linearly with N, transforming linearly).
"""
from __future__ import annotations

import logging

import numpy as np
from sklearn.decomposition import PCA
from tqdm import tqdm

from scripts.analysis.neighbours import as_float32

logger = logging.getLogger(__name__)


def fit_umap(X, n_neighbors: int = 15, min_dist: float = 0.1, fit_subsample: int | None = 50_000,
             seed: int = 0, n_components: int = 2, metric: str = "euclidean",
             batch_size: int = 50_000):
    """UMAP embedding of every row of ``X``, fitted on a seeded subsample.

    ``fit_subsample`` rows (all when None or >= N) are drawn without replacement with
    ``seed`` and fitted (``umap.UMAP(random_state=seed, n_jobs=1)``: a seed makes the
    result deterministic, and UMAP then runs single-threaded anyway); the other rows are
    embedded with ``reducer.transform`` in batches of ``batch_size``. Rows in the fit
    subsample keep their fitted coordinates. Returns ``(embedding (N, n_components)
    float32, fitted reducer)``; the reducer also embeds new data (e.g. another dataset
    into the same map).
    """
    import umap  # slow import (numba, and umap pulls in TensorFlow for ParametricUMAP)

    X = as_float32(X)
    n = X.shape[0]
    if n <= n_neighbors:
        raise ValueError(f"UMAP needs more rows ({n}) than n_neighbors ({n_neighbors})")
    rng = np.random.default_rng(seed)
    if fit_subsample is None or fit_subsample >= n:
        fit_rows = np.arange(n)
    else:
        if fit_subsample <= n_neighbors:
            raise ValueError(f"fit_subsample ({fit_subsample}) must exceed n_neighbors ({n_neighbors})")
        fit_rows = np.sort(rng.choice(n, size=fit_subsample, replace=False))
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, n_components=n_components,
                        metric=metric, random_state=seed, n_jobs=1)
    logger.info("UMAP: fitting on %d of %d rows", len(fit_rows), n)
    embedding = np.empty((n, n_components), dtype=np.float32)
    embedding[fit_rows] = reducer.fit_transform(X[fit_rows])
    rest = np.setdiff1d(np.arange(n), fit_rows, assume_unique=True)
    for start in tqdm(range(0, len(rest), batch_size), desc="UMAP transform", leave=False, disable=None):
        rows = rest[start:start + batch_size]
        embedding[rows] = reducer.transform(X[rows])
    return embedding, reducer


def fit_pca(X, n_components: int = 2, seed: int = 0):
    """PCA embedding of ``X``; returns ``(embedding (N, n_components) float32, fitted PCA)``."""
    X = as_float32(X)
    pca = PCA(n_components=n_components, random_state=seed)
    embedding = pca.fit_transform(X).astype(np.float32)
    logger.info("PCA: %d components explain %.1f%% of the variance", n_components,
                100 * pca.explained_variance_ratio_.sum())
    return embedding, pca


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
