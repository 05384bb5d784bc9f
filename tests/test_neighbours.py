"""faiss neighbour search against scikit-learn's exact brute force; chunked builds against
whole ones and a NumPy brute force."""
import numpy as np
import pytest
from sklearn.neighbors import NearestNeighbors

from scripts.analysis.neighbours import NeighbourIndex, knn_l1_distance, knn_self_excluded


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(42)
    X = rng.normal(size=(3000, 24))
    Q = rng.normal(size=(200, 24))
    return X, Q


@pytest.mark.parametrize("metric, sk_metric", [("l2", "euclidean"), ("l1", "manhattan")])
def test_exact_matches_sklearn(data, metric, sk_metric):
    X, Q = data
    index = NeighbourIndex(metric=metric).fit(X)
    assert index.exact_
    D, I = index.kneighbors(Q, 10)
    d_ref, i_ref = NearestNeighbors(n_neighbors=10, metric=sk_metric,
                                    algorithm="brute").fit(X).kneighbors(Q)
    np.testing.assert_array_equal(I, i_ref)
    # true distances (not squared), in float32 precision
    np.testing.assert_allclose(D, d_ref, rtol=1e-4, atol=1e-4)
    assert D.dtype == np.float32 and I.dtype == np.int64


def test_non_contiguous_float64_input(data):
    X, Q = data
    Xf = np.asfortranarray(X)[:, ::2]          # non-contiguous float64 view
    D, I = NeighbourIndex().fit(Xf).kneighbors(Q[:, ::2], 3)
    _, i_ref = NearestNeighbors(n_neighbors=3).fit(X[:, ::2]).kneighbors(Q[:, ::2])
    np.testing.assert_array_equal(I, i_ref)


@pytest.mark.parametrize("metric, sk_metric", [("l2", "euclidean"), ("l1", "manhattan")])
def test_ivf_path_high_recall(data, metric, sk_metric):
    """Lowering exact_threshold switches to IVF; with enough probes recall@10 > 0.9."""
    X, Q = data
    index = NeighbourIndex(metric=metric, exact_threshold=1000, nprobe=96, seed=1).fit(X)
    assert not index.exact_
    assert index.nlist_ == round(4 * np.sqrt(len(X)))
    D, I = index.kneighbors(Q, 10)
    _, i_ref = NearestNeighbors(n_neighbors=10, metric=sk_metric,
                                algorithm="brute").fit(X).kneighbors(Q)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I, i_ref)])
    assert recall > 0.9
    # approximate, but returned distances are exact distances to the returned rows
    if metric == "l2":
        true = np.linalg.norm(X[I] - Q[:, None, :], axis=2)
    else:
        true = np.abs(X[I] - Q[:, None, :]).sum(axis=2)
    np.testing.assert_allclose(D, true, rtol=1e-4, atol=1e-4)
    # with a single probe recall is clearly lower: the knob matters
    low = NeighbourIndex(metric=metric, exact_threshold=1000, nprobe=1, seed=1).fit(X)
    _, I1 = low.kneighbors(Q, 10)
    recall1 = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(I1, i_ref)])
    assert recall1 < recall


def test_self_excluded_handles_duplicates():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4))
    X[7] = X[3]                                     # exact duplicate pair
    index = NeighbourIndex().fit(X)
    D, I = knn_self_excluded(index, X, 2)
    assert not np.any(I == np.arange(50)[:, None])
    assert I[3, 0] == 7 and I[7, 0] == 3 and D[3, 0] == 0
    D_sub, I_sub = knn_self_excluded(index, X, 2, rows=[3, 10])
    np.testing.assert_array_equal(I_sub, I[[3, 10]])


def test_knn_l1_distance_exact():
    rng = np.random.default_rng(3)
    X, Y = rng.normal(size=(60, 5)), rng.normal(size=(80, 5))
    brute_xy = np.sort(np.abs(X[:, None] - Y[None]).sum(-1), axis=1)[:, :4]
    np.testing.assert_allclose(knn_l1_distance(X, Y, 4), brute_xy, rtol=1e-5)
    within = np.abs(X[:, None] - X[None]).sum(-1)
    np.fill_diagonal(within, np.inf)
    brute_xx = np.sort(within, axis=1)[:, :4]
    np.testing.assert_allclose(knn_l1_distance(X, None, 4, exclude_self=True), brute_xx, rtol=1e-5)
    with pytest.raises(ValueError, match="exclude_self"):
        knn_l1_distance(X, Y, 4, exclude_self=True)


def test_bad_input_messages():
    with pytest.raises(ValueError, match="metric"):
        NeighbourIndex(metric="cosine")
    with pytest.raises(ValueError, match="NaN"):
        NeighbourIndex().fit(np.array([[0.0, np.nan]]))
    with pytest.raises(RuntimeError, match="before fit"):
        NeighbourIndex().kneighbors(np.zeros((1, 2)), 1)
    with pytest.raises(ValueError, match="dims"):
        NeighbourIndex().fit(np.zeros((5, 3))).kneighbors(np.zeros((1, 2)), 1)


def uneven_chunks(X):
    """X in chunks of uneven sizes with an empty chunk (and a 1-row one) among them."""
    edges = [0, 1, 700, 700, 1999, 2000, len(X)]
    return [X[a:b] for a, b in zip(edges[:-1], edges[1:])]


@pytest.mark.parametrize("metric", ["l2", "l1"])
def test_chunked_exact_equals_whole_and_brute_force(data, metric):
    X, Q = data
    chunks = uneven_chunks(X)
    assert any(len(c) == 0 for c in chunks)
    whole = NeighbourIndex(metric=metric).fit(X)
    chunked = NeighbourIndex(metric=metric).fit_chunks((c for c in chunks), n=len(X))
    assert chunked.exact_ and (chunked.n_, chunked.d_) == (len(X), X.shape[1])
    D, I = chunked.kneighbors(Q, 10)
    D_whole, I_whole = whole.kneighbors(Q, 10)
    np.testing.assert_array_equal(I, I_whole)
    np.testing.assert_array_equal(D, D_whole)
    diff = Q[:, None, :] - X[None, :, :]
    brute = np.sqrt((diff ** 2).sum(-1)) if metric == "l2" else np.abs(diff).sum(-1)
    i_ref = np.argsort(brute, axis=1)[:, :10]
    np.testing.assert_array_equal(I, i_ref)
    np.testing.assert_allclose(D, np.take_along_axis(brute, i_ref, axis=1), rtol=1e-4, atol=1e-4)


def test_chunked_ivf_is_deterministic_and_equals_whole(data):
    X, Q = data
    chunks = uneven_chunks(X)
    opts = dict(exact_threshold=1000, nprobe=8, seed=5)
    first = NeighbourIndex(**opts).fit_chunks(lambda: iter(chunks), n=len(X))
    second = NeighbourIndex(**opts).fit_chunks(lambda: iter(chunks), n=len(X))
    whole = NeighbourIndex(**opts).fit(X)
    assert not first.exact_ and first.nlist_ == whole.nlist_
    D1, I1 = first.kneighbors(Q, 10)
    D2, I2 = second.kneighbors(Q, 10)
    Dw, Iw = whole.kneighbors(Q, 10)
    np.testing.assert_array_equal(I1, I2)
    np.testing.assert_array_equal(D1, D2)
    # the training rows are the seeded positions fit draws, so the cells are the same
    np.testing.assert_array_equal(I1, Iw)
    # a train_size below N takes the seeded-subsample path, also reproducible
    sub = dict(opts, nlist=10, train_size=1000)
    a = NeighbourIndex(**sub).fit_chunks(lambda: iter(chunks), n=len(X)).kneighbors(Q, 5)[1]
    b = NeighbourIndex(**sub).fit(X).kneighbors(Q, 5)[1]
    np.testing.assert_array_equal(a, b)


def test_chunked_build_checks_its_input(data):
    X, _ = data
    with pytest.raises(TypeError, match="callable"):      # IVF reads the chunks twice
        NeighbourIndex(exact_threshold=10).fit_chunks(iter([X]), n=len(X))
    with pytest.raises(ValueError, match="announced"):
        NeighbourIndex().fit_chunks([X[:10], X[10:20]], n=30)
    with pytest.raises(ValueError, match="more than"):
        NeighbourIndex().fit_chunks([X[:10], X[10:20]], n=15)
    with pytest.raises(ValueError, match="dims"):
        NeighbourIndex().fit_chunks([X[:10], X[10:20, :5]], n=20)
    with pytest.raises(ValueError, match="empty set"):
        NeighbourIndex().fit_chunks([X[:0]], n=0)
