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
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np
from sklearn.neighbors import NearestNeighbors

from scripts.analysis.embedding_maps import fit_umap

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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=lambda s: int(float(s)), default=20_000)
    parser.add_argument("--fit-subsample", type=lambda s: int(float(s)), default=None,
                        help="rows to fit on (default N/4)")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
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
