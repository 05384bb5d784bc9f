"""UMAP subsample-fit + transform, PCA, and the thumbnail grid."""
from pathlib import Path

import numpy as np
import pytest

from scripts.analysis.embedding_maps import fit_pca, fit_umap, thumbnail_grid


@pytest.fixture(scope="module")
def blobs():
    """Three well separated Gaussian blobs in 10 dims, 300 points."""
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 10)) * 10
    labels = np.repeat(np.arange(3), 100)
    return centres[labels] + rng.normal(size=(300, 10)), labels


@pytest.fixture(scope="module")
def umap_runs(blobs):
    X, _ = blobs
    first = fit_umap(X, n_neighbors=10, min_dist=0.1, fit_subsample=200, seed=3,
                     batch_size=40)
    second = fit_umap(X, n_neighbors=10, min_dist=0.1, fit_subsample=200, seed=3,
                      batch_size=40)
    return first, second


def test_umap_shape_and_determinism(umap_runs):
    (emb, reducer), (emb2, _) = umap_runs
    assert emb.shape == (300, 2) and emb.dtype == np.float32
    assert np.all(np.isfinite(emb))
    np.testing.assert_array_equal(emb, emb2)
    assert reducer.embedding_.shape == (200, 2)          # fitted on the subsample only


def test_umap_transformed_rows_land_with_their_blob(umap_runs, blobs):
    """Rows placed by transform sit next to fitted rows of the same blob."""
    (emb, reducer), _ = umap_runs
    _, labels = blobs
    fitted = np.isin(emb, reducer.embedding_).all(axis=1)
    assert fitted.sum() == 200
    rest = np.flatnonzero(~fitted)
    d = np.linalg.norm(emb[rest][:, None] - emb[fitted][None], axis=2)
    nearest = np.flatnonzero(fitted)[d.argmin(axis=1)]
    assert np.mean(labels[nearest] == labels[rest]) > 0.95


def test_umap_rejects_tiny_input():
    with pytest.raises(ValueError, match="n_neighbors"):
        fit_umap(np.zeros((5, 3)), n_neighbors=15)


def test_pca_known_axis():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(500, 5)) * [10.0, 3.0, 1.0, 0.1, 0.1]
    emb, pca = fit_pca(X, n_components=2)
    assert emb.shape == (500, 2)
    assert abs(pca.components_[0, 0]) > 0.99 and abs(pca.components_[1, 1]) > 0.99
    assert pca.explained_variance_ratio_[0] > 0.85


def test_thumbnail_grid_nearest_to_centre():
    rng = np.random.default_rng(2)
    E = rng.uniform(0, 4, size=(400, 2))
    E[:10] = [10.0, 10.0]                                 # stretch the box: empty cells
    E[10] = [0.0, 0.0]                                    # box corner
    picks = thumbnail_grid(E, n_grid=5)
    cells = [c for c, _ in picks]
    assert len(cells) == len(set(cells))                  # one object per cell
    # brute force: cell of every point and its distance to the cell centre
    width = 10.0 / 5
    cell = np.clip(np.floor(E / width).astype(int), 0, 4)
    centre = (cell + 0.5) * width
    dist = np.linalg.norm(E - centre, axis=1)
    occupied = {tuple(c) for c in cell}
    assert set(cells) == occupied
    for c, row in picks:
        members = np.flatnonzero((cell == c).all(axis=1))
        assert dist[row] == pytest.approx(dist[members].min())
    assert ((4, 4), 0) in picks or any(c == (4, 4) and row < 10 for c, row in picks)
    assert cells == sorted(cells)


def test_thumbnail_grid_ignores_nan_rows():
    E = np.array([[0.0, 0.0], [np.nan, 1.0], [1.0, 1.0]])
    picks = thumbnail_grid(E, n_grid=2)
    assert picks == [((0, 0), 0), ((1, 1), 2)]
    with pytest.raises(ValueError, match="\\(N, 2\\)"):
        thumbnail_grid(np.zeros((3, 3)), 2)


def test_exact_umap_below_the_small_data_size_places_new_rows_with_their_blob(blobs):
    """Below EXACT_NEIGHBOUR_ROWS fitted rows the map is fitted on NumPy's exact distances;
    its transform hands umap-learn each row's nearest fitted rows as a sparse matrix (exact
    zeros kept): a fitted row transformed again lands beside itself, in its blob, and every transformed row lands in its own blob."""
    from scripts.analysis.embedding_maps import ExactEuclideanUMAP

    X, labels = blobs
    X = X.copy()
    emb, reducer = fit_umap(X, n_neighbors=10, fit_subsample=200, seed=3, batch_size=1000)
    assert isinstance(reducer, ExactEuclideanUMAP)
    fitted = np.isin(emb, reducer.embedding_).all(axis=1)
    twin = int(np.flatnonzero(fitted)[0])
    moved = reducer.transform(X[[twin]])[0]          # a fitted row, transformed again
    nearest_fitted = np.flatnonzero(fitted)[np.linalg.norm(emb[fitted] - moved, axis=1).argmin()]
    assert labels[nearest_fitted] == labels[twin]
    assert np.linalg.norm(moved - emb[twin]) < 2 * emb[labels == labels[twin]].std(axis=0).max()
    assert np.isfinite(emb).all()
    rest = np.flatnonzero(~fitted)
    d = np.linalg.norm(emb[rest][:, None] - emb[fitted][None], axis=2)
    assert np.mean(labels[np.flatnonzero(fitted)[d.argmin(axis=1)]] == labels[rest]) > 0.95
    with pytest.raises(ValueError, match="exact neighbours"):
        ExactEuclideanUMAP(np.zeros((4096, 2)), 10)


def test_umap_compiled_code_is_cached_on_disk():
    """After cache_compiled, umap-learn's jitted functions carry numba's disk cache, and
    calling one writes its index file."""
    from numba.core.caching import FunctionCache

    from scripts.analysis.embedding_maps import load_umap

    umap = load_umap()
    euclidean = umap.distances.euclidean
    assert isinstance(euclidean._cache, FunctionCache)
    euclidean(np.zeros(3), np.ones(3))
    folder = Path(euclidean._cache.cache_path)
    assert list(folder.glob("distances.euclidean-*.nbi")), sorted(p.name for p in folder.glob("*.nbi"))
