"""Object permanence: does the representation recognise a galaxy seen from another angle?

Each simulated galaxy is imaged in several projections (and, with a merger tree, at
several snapshots). A representation that encodes the galaxy rather than the viewing
angle puts those images next to each other. `object_permanence` measures the fraction of
images whose nearest neighbour (top-1), or any of whose ``k`` nearest neighbours (top-k),
is another image of the same object, and the fraction expected by chance for the same
group sizes.
"""
from __future__ import annotations

import logging

import numpy as np
from scipy.special import gammaln

from scripts.analysis.neighbours import NeighbourIndex, knn_self_excluded

logger = logging.getLogger(__name__)


def _log_binom(n, k):
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def chance_hit_rate(group_sizes, n_total: int, k: int) -> np.ndarray:
    """Probability that ``k`` neighbours drawn at random include a same-group object.

    For an object in a group of ``g`` objects among ``n_total``, its ``k`` neighbours drawn
    uniformly without replacement from the other ``n_total - 1`` objects miss all ``g - 1``
    group mates with the hypergeometric probability ``C(n_total - g, k) / C(n_total - 1, k)``.
    Returns ``1 -`` that, per entry of ``group_sizes``.
    """
    g = np.asarray(group_sizes, dtype=np.float64)
    if np.any(g < 1) or np.any(g > n_total):
        raise ValueError(f"group sizes must lie in [1, n_total={n_total}]")
    if k > n_total - 1:
        raise ValueError(f"k={k} exceeds the {n_total - 1} other objects")
    others = n_total - g
    miss = np.where(others >= k,
                    np.exp(_log_binom(others, np.minimum(k, others)) - _log_binom(n_total - 1, k)),
                    0.0)
    return 1.0 - miss


def object_permanence(X, groups, ks=(1, 5), metric: str = "l2",
                      exact_threshold: int = 1_000_000, seed: int = 0) -> dict:
    """Top-k same-object neighbour rates in representation space, with chance levels.

    Parameters
    ----------
    X : (N, d) representations.
    groups : (N,) object identity of each row (e.g. ``object_id`` within one dataset, or
        ``root_descendant_id`` to match across snapshots); rows of one group are the
        "other projections" of one object.
    ks : neighbour counts to report (top-1 and top-5 by default).
    metric, exact_threshold, seed : passed to `NeighbourIndex`.

    Only rows whose group has at least two members are scored (a singleton has no other
    projection to find), but all rows serve as potential neighbours. Returns a dict with
    ``top{k}`` (observed fraction), ``chance_top{k}`` (mean over scored rows of
    `chance_hit_rate`), ``n_scored``, ``n_total``, ``n_groups`` and ``hits`` (a dict
    ``k -> (n_scored,) bool`` array, aligned with ``scored_rows``).
    """
    groups = np.asarray(groups)
    n = len(groups)
    if len(X) != n:
        raise ValueError(f"X has {len(X)} rows but groups has {n} entries")
    ks = sorted(int(k) for k in ks)
    if ks[0] < 1 or ks[-1] > n - 1:
        raise ValueError(f"ks must lie in [1, N - 1 = {n - 1}], got {ks}")
    _, codes, counts = np.unique(groups, return_inverse=True, return_counts=True)
    size = counts[codes]
    scored = np.flatnonzero(size >= 2)
    if len(scored) == 0:
        raise ValueError("no object has more than one row (projection); nothing to score")
    index = NeighbourIndex(metric=metric, exact_threshold=exact_threshold, seed=seed).fit(X)
    _, neighbours = knn_self_excluded(index, X, ks[-1], rows=scored)
    same = (neighbours >= 0) & (codes[np.clip(neighbours, 0, None)] == codes[scored][:, None])
    result = {"n_scored": int(len(scored)), "n_total": int(n),
              "n_groups": int(np.sum(counts >= 2)), "scored_rows": scored, "hits": {}}
    for k in ks:
        hit = same[:, :k].any(axis=1)
        result["hits"][k] = hit
        result[f"top{k}"] = float(hit.mean())
        result[f"chance_top{k}"] = float(chance_hit_rate(size[scored], n, k).mean())
        logger.info("object permanence top-%d: %.3f (chance %.3f, %d objects)", k,
                    result[f"top{k}"], result[f"chance_top{k}"], len(scored))
    return result
