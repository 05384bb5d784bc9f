"""Benchmark: KD-tree matching against the straightforward scan of all sources per target.

Samples: N sources ~ N(0, 1) and N targets ~ N(0.3, 0.8) in 3 fields, box half-width
``--sigma`` in every field. For each size and method the tree version
(:func:`match_positions`) runs in full. The baseline (:func:`match_positions_bruteforce`,
one vectorised NumPy scan of all sources per target, in the same visiting order) runs in
full up to ``--naive-full-max`` targets; above that it visits only the first
``--naive-targets`` targets of the same order and its time is extrapolated linearly to N
(the scan costs the same for every target). The tree result on those visited targets must
equal the baseline's, which is checked and reported.

    .venv/bin/python -m bench.bench_matching                  # 1e4 and 1e5, < 2 min
    .venv/bin/python -m bench.bench_matching --sizes 1e4,1e5,1e6 --naive-targets 200
"""
from __future__ import annotations

import argparse
import logging
import time

import numpy as np

from scripts.preprocessing.matching import METHODS, match_positions, match_positions_bruteforce

logger = logging.getLogger("bench.bench_matching")


def _sizes(text: str) -> list[int]:
    try:
        return [int(float(s)) for s in text.split(",") if s.strip()]
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"--sizes expects numbers like 1e4,1e5; got {text!r}") from err


def run(sizes, sigma, naive_full_max, naive_targets, methods, workers, repeats, seed=0):
    """Time both implementations; return one dict per (size, method)."""
    rows = []
    for n in sizes:
        rng = np.random.default_rng(seed)
        source_xy = rng.normal(0.0, 1.0, (n, 3)) / sigma
        target_xy = rng.normal(0.3, 0.8, (n, 3)) / sigma
        for method in methods:
            tree_s = np.inf
            for _ in range(repeats):
                start = time.perf_counter()
                tree = match_positions(source_xy, target_xy, seed, method, workers=workers)
                tree_s = min(tree_s, time.perf_counter() - start)
            visits = n if n <= naive_full_max else min(naive_targets, n)
            start = time.perf_counter()
            naive = match_positions_bruteforce(source_xy, target_xy, seed, method, n_visits=visits)
            naive_measured = time.perf_counter() - start
            naive_s = naive_measured * n / visits
            visited = np.random.default_rng(seed).permutation(n)[:visits]
            rows.append({
                "n": n, "method": method, "tree_s": tree_s, "naive_s": naive_s,
                "naive_measured_s": naive_measured, "naive_visits": visits,
                "extrapolated": visits < n, "ratio": naive_s / tree_s,
                "matched_fraction": float((tree >= 0).mean()),
                "agree": bool(np.array_equal(tree[visited], naive[visited])),
            })
            r = rows[-1]
            logger.info(
                "N=%-8d %-8s tree %8.3f s | naive %9.2f s%s | ratio x%-8.0f | matched %.3f | "
                "same matches on the %d targets scanned: %s",
                n, method, tree_s, naive_s,
                f" (extrapolated from {visits} targets, {naive_measured:.2f} s)" if r["extrapolated"] else "",
                r["ratio"], r["matched_fraction"], visits, r["agree"],
            )
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=_sizes, default=[10_000, 100_000],
                        help="numbers of sources = targets (default 1e4,1e5)")
    parser.add_argument("--sigma", type=float, default=0.1, help="box half-width per field (default 0.1)")
    parser.add_argument("--naive-full-max", type=int, default=10_000,
                        help="largest N at which the baseline visits every target (default 1e4)")
    parser.add_argument("--naive-targets", type=int, default=1000,
                        help="targets the baseline visits above that, then extrapolated (default 1000)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list of uniform,nearest")
    parser.add_argument("--workers", type=int, default=1, help="KD-tree query threads (-1: all)")
    parser.add_argument("--repeats", type=int, default=3, help="tree timings: best of this many")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    logger.info("matching benchmark: N sources × N targets, 3 fields, sigma %.3g, workers %d",
                args.sigma, args.workers)
    rows = run(args.sizes, args.sigma, args.naive_full_max, args.naive_targets, methods,
               args.workers, args.repeats)
    if not all(r["agree"] for r in rows):
        raise SystemExit("tree and baseline disagree: see the lines above")


if __name__ == "__main__":
    main()
