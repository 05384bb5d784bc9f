"""Benchmark: faiss neighbour search (exact flat and IVF) against scikit-learn brute force.

Data: N base vectors and Q query vectors in 128 dims, shaped like a learned
representation rather than isotropic noise: a mixture of 50 Gaussian clusters in a 16-dim
latent space, mapped linearly to 128 dims, plus 5 per cent isotropic noise (seeded).
One run times, for the 10 nearest neighbours of every query:

- scikit-learn ``NearestNeighbors(algorithm="brute")`` (the baseline: exact),
- `NeighbourIndex` exact (faiss ``IndexFlatL2``),
- `NeighbourIndex` IVF (``IndexIVFFlat``, nlist = 4 sqrt(N), trained on 64 nlist
  vectors) at several ``nprobe``, with recall@10 against the exact answer.

Times are wall-clock seconds: "build" = index construction (IVF: k-means training and
adding), "search" = querying. Ratios are baseline time / method time (> 1: faster).

    .venv/bin/python -m bench.bench_neighbours                 # N = 1e5, < 2 min on 2 cores
    .venv/bin/python -m bench.bench_neighbours --n 1000000     # the issue's size
"""
from __future__ import annotations

import argparse
import logging
import time

import faiss
import numpy as np
from sklearn.neighbors import NearestNeighbors

from scripts.analysis.neighbours import NeighbourIndex

logger = logging.getLogger("bench.bench_neighbours")


def representation_like(n: int, dim: int, rng: np.random.Generator, latent: int = 16,
                        clusters: int = 50) -> np.ndarray:
    """Clustered vectors of low intrinsic dimension (see module docstring), float32."""
    centres = rng.normal(size=(clusters, latent)) * 3.0
    mixing = rng.normal(size=(latent, dim)) / np.sqrt(latent)
    z = centres[rng.integers(0, clusters, n)] + rng.normal(size=(n, latent))
    x = z @ mixing
    x += 0.05 * x.std() * rng.normal(size=x.shape)
    return x.astype(np.float32)


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true k neighbours among the k returned."""
    k = truth.shape[1]
    hits = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(found, truth)]
    return float(np.sum(hits) / (len(truth) * k))


def run(n: int, n_queries: int, dim: int, k: int, nprobes, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    data = representation_like(n + n_queries, dim, rng)
    base, queries = data[:n], data[n:]
    rows = []

    start = time.perf_counter()
    nn = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(base)
    build = time.perf_counter() - start
    start = time.perf_counter()
    _, truth = nn.kneighbors(queries)
    base_search = time.perf_counter() - start
    rows.append({"method": "sklearn brute", "build_s": build, "search_s": base_search,
                 "recall@10": 1.0})

    start = time.perf_counter()
    exact = NeighbourIndex(metric="l2").fit(base)
    build = time.perf_counter() - start
    start = time.perf_counter()
    _, found = exact.kneighbors(queries, k)
    rows.append({"method": "faiss flat (exact)", "build_s": build,
                 "search_s": time.perf_counter() - start, "recall@10": recall_at(found, truth)})

    start = time.perf_counter()
    ivf = NeighbourIndex(metric="l2", exact_threshold=0, seed=seed).fit(base)
    build = time.perf_counter() - start
    for nprobe in nprobes:
        ivf.index_.nprobe = min(nprobe, ivf.nlist_)
        start = time.perf_counter()
        _, found = ivf.kneighbors(queries, k)
        rows.append({"method": f"faiss IVF{ivf.nlist_} nprobe={ivf.index_.nprobe}",
                     "build_s": build, "search_s": time.perf_counter() - start,
                     "recall@10": recall_at(found, truth)})
    for row in rows:
        row["search_speedup"] = base_search / row["search_s"]
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=lambda s: int(float(s)), default=100_000,
                        help="base vectors N (default 1e5; the issue's size is 1e6)")
    parser.add_argument("--queries", type=lambda s: int(float(s)), default=10_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--nprobe", default="8,32,128", help="comma-separated IVF nprobe values")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    nprobes = [int(p) for p in args.nprobe.split(",") if p.strip()]
    logger.info("faiss %s, %d OpenMP threads; N=%d x %d dims, %d queries, k=%d",
                faiss.__version__, faiss.omp_get_max_threads(), args.n, args.dim,
                args.queries, args.k)
    rows = run(args.n, args.queries, args.dim, args.k, nprobes, args.seed)
    logger.info("%-30s %9s %9s %10s %9s", "method", "build s", "search s", "speed-up", "recall@10")
    for r in rows:
        logger.info("%-30s %9.2f %9.2f %9.1fx %9.3f", r["method"], r["build_s"], r["search_s"],
                    r["search_speedup"], r["recall@10"])


if __name__ == "__main__":
    main()
