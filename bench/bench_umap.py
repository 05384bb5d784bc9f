"""Benchmark: UMAP fitted on a subsample + batched transform against UMAP fitted on all rows.

Data: N vectors in 128 dims from 20 Gaussian clusters in a 4-dim latent space, mapped
linearly to 128 dims (low intrinsic dimension, so that a 2-D map can preserve local
neighbourhoods at all). Both variants use the same settings (n_neighbors 15, min_dist 0.1,
seeded, hence single-threaded optimisation). numba compilation is done first on a tiny
set and not counted. Quality: for 1000 random rows, the fraction of their 10 nearest
neighbours in 128 dims that are also among their 10 nearest in the 2-D map
(neighbourhood preservation, 1 = perfect), and the fraction of rows whose nearest map
neighbour is in the same cluster. Ratio = fit-all time / subsample time.

    .venv/bin/python -m bench.bench_umap                       # N = 2e4, fit on 5e3
    .venv/bin/python -m bench.bench_umap --n 100000 --fit-subsample 20000
    .venv/bin/python -m bench.bench_umap --small-fit           # the demo's size, see below

``--small-fit`` measures the two speed-ups of the analyse stage's maps at the demo's size
(N = 3774, fitted on 2000, 64 dims): (1) umap-learn's own small-data path (its jitted
metric called pair by pair through scikit-learn) against
:class:`~scripts.analysis.embedding_maps.ExactEuclideanUMAP` (NumPy distances, then
``metric="precomputed"``), both compiled beforehand, with the same quality measures; and
(2) a fresh process fitting and transforming a small map with an empty numba disk cache
against a second fresh process that finds it filled (:mod:`scripts.analysis.jit_cache`).
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from sklearn.neighbors import NearestNeighbors

from scripts.analysis.embedding_maps import ExactEuclideanUMAP, fit_umap, load_umap

logger = logging.getLogger("bench.bench_umap")


def clustered(n: int, dim: int, rng: np.random.Generator, latent: int = 4, clusters: int = 20):
    centres = rng.normal(size=(clusters, latent)) * 4.0
    labels = rng.integers(0, clusters, n)
    x = (centres[labels] + rng.normal(size=(n, latent))) @ rng.normal(size=(latent, dim))
    return x.astype(np.float32), labels


def quality(X: np.ndarray, emb: np.ndarray, labels: np.ndarray, rng, n_probe=1000, k=10) -> dict:
    """Neighbourhood preservation and same-cluster nearest map neighbour on a sample."""
    probe = rng.choice(len(X), size=min(n_probe, len(X)), replace=False)
    _, high = NearestNeighbors(n_neighbors=k + 1).fit(X).kneighbors(X[probe])
    _, low = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb[probe])
    kept = [len(np.intersect1d(h[1:], l[1:])) / k for h, l in zip(high, low)]
    return {"preservation": float(np.mean(kept)),
            "same_cluster": float(np.mean(labels[low[:, 1]] == labels[probe]))}


def _child_small_map() -> None:
    """In a fresh process: seconds to fit a 300-row map and transform 100 more rows."""
    rng = np.random.default_rng(0)
    X, _ = clustered(400, 16, rng)
    load_umap()                                         # the import is not counted
    start = time.perf_counter()
    fit_umap(X, n_neighbors=15, fit_subsample=300, seed=0)
    print(f"{time.perf_counter() - start:.3f}")


def small_fit(seed: int) -> None:
    """The two measurements of ``--small-fit`` (module docstring)."""
    rng = np.random.default_rng(seed)
    X, labels = clustered(3774, 64, rng)
    fit, rest = X[:2000], X[2000:]
    umap = load_umap()
    ExactEuclideanUMAP(fit[:100], 15, random_state=seed, n_jobs=1).transform(rest[:50])   # compile
    umap.UMAP(random_state=seed, n_jobs=1).fit(fit[:100]).transform(rest[:50])
    start = time.perf_counter()
    plain = umap.UMAP(random_state=seed, n_jobs=1)
    emb_plain = np.concatenate([plain.fit_transform(fit), plain.transform(rest)])
    t_plain = time.perf_counter() - start
    start = time.perf_counter()
    exact = ExactEuclideanUMAP(fit, 15, random_state=seed, n_jobs=1)
    emb_exact = np.concatenate([exact.embedding_, exact.transform(rest)])
    t_exact = time.perf_counter() - start
    q_plain = quality(X, emb_plain, labels, np.random.default_rng(1))
    q_exact = quality(X, emb_exact, labels, np.random.default_rng(1))
    logger.info("N=3774 x 64 dims, fitted on 2000, compiled beforehand")
    logger.info("%-44s %8s %13s %13s", "variant", "time s", "preservation", "same cluster")
    logger.info("%-44s %8.1f %13.3f %13.3f", "umap-learn on vectors (pairwise callable)", t_plain,
                q_plain["preservation"], q_plain["same_cluster"])
    logger.info("%-44s %8.1f %13.3f %13.3f", "ExactEuclideanUMAP (NumPy, precomputed)", t_exact,
                q_exact["preservation"], q_exact["same_cluster"])
    logger.info("speed-up of exact distances: %.1fx", t_plain / t_exact)

    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "TF_CPP_MIN_LOG_LEVEL": "3"}
        runs = [float(subprocess.run([sys.executable, "-m", "bench.bench_umap", "--child-small-map"],
                                     env=env, capture_output=True, text=True, check=True).stdout.split()[-1])
                for _ in range(2)]
    logger.info("fresh process, 300-row fit + 100-row transform: empty numba cache %.1f s, "
                "filled cache %.1f s, ratio %.1fx", runs[0], runs[1], runs[0] / runs[1])


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=lambda s: int(float(s)), default=20_000)
    parser.add_argument("--fit-subsample", type=lambda s: int(float(s)), default=None,
                        help="rows to fit on (default N/4)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--small-fit", action="store_true",
                        help="only: exact distances and the numba disk cache at the demo's size")
    parser.add_argument("--child-small-map", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.child_small_map:
        return _child_small_map()
    if args.small_fit:
        return small_fit(args.seed)
    sub = args.fit_subsample or args.n // 4
    rng = np.random.default_rng(args.seed)
    X, labels = clustered(args.n, args.dim, rng)

    # numba JIT warm-up on both code paths: below 4096 fitted rows UMAP finds neighbours
    # exactly, above it with NN-descent, and transform then queries a pynndescent index
    start = time.perf_counter()
    fit_umap(X[:300], fit_subsample=200, seed=args.seed)
    fit_umap(X[:4600], fit_subsample=4500, seed=args.seed)
    logger.info("warm-up (import + JIT, not counted): %.1f s", time.perf_counter() - start)

    start = time.perf_counter()
    emb_sub, _ = fit_umap(X, fit_subsample=sub, seed=args.seed)
    t_sub = time.perf_counter() - start
    start = time.perf_counter()
    emb_all, _ = fit_umap(X, fit_subsample=None, seed=args.seed)
    t_all = time.perf_counter() - start

    q_sub = quality(X, emb_sub, labels, np.random.default_rng(1))
    q_all = quality(X, emb_all, labels, np.random.default_rng(1))
    logger.info("N=%d x %d dims", args.n, args.dim)
    logger.info("%-34s %8s %13s %13s", "variant", "time s", "preservation", "same cluster")
    logger.info("%-34s %8.1f %13.3f %13.3f", f"fit on all {args.n}", t_all,
                q_all["preservation"], q_all["same_cluster"])
    logger.info("%-34s %8.1f %13.3f %13.3f", f"fit on {sub} + transform {args.n - sub}",
                t_sub, q_sub["preservation"], q_sub["same_cluster"])
    logger.info("speed-up of subsample fit: %.1fx", t_all / t_sub)


if __name__ == "__main__":
    main()
