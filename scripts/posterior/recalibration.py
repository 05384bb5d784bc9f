"""Quantile recalibration of the flow's marginal posteriors from cross-fitted PIT values.

A flow trained on a few hundred objects is miscalibrated by amounts that change with the
seed (on the demo, 68 % coverage between 0.61 and 0.72 across five seeds), and early
stopping on the validation split makes that split's own coverage optimistic, so it
cannot be used to correct them. ``infer.RECALIBRATION: quantile`` measures the
miscalibration where no flow has seen the data: the objects of the train and validation
splits are dealt, whole (prepare's ``split_group``), into ``RECALIBRATION_FOLDS`` folds; for
each fold a flow of the same configuration is trained on the other folds (their train
rows, early stopping on their validation rows) and the rank (PIT) of each held-out truth
among its posterior samples is recorded. If the flows were calibrated these PIT values
would be uniform. Their empirical distribution ``R`` is the recalibration map of
Kuleshov, Fenner & Ermon (2018, ICML, "Accurate uncertainties for deep learning using
calibrated regression"): the recalibrated CDF of a field is ``R(F(y))``, so its quantile
at level ``u`` is the original posterior's quantile at level ``R⁻¹(u)``.

:meth:`QuantileRecalibration.transform` applies it to every object's samples rank by rank:
the sample of within-object rank ``r`` moves to the original quantile at level
``R⁻¹((r + ½)/S)``. The order of each field's samples is kept, so the dependence between
fields (the copula) is the flow's. The test split plays no part and measures the result.

The fold flows are then used a second time. One flow's miscalibration depends on its
seed, and a map measured on other flows cannot know that seed's share; averaging the
*quantile functions* of the stage's flow and the fold flows (:func:`quantile_average`,
Vincentization: each rank's value is the mean of the members' values at that rank)
keeps a single flow's width and location while it averages the seed-to-seed scatter
away. Pooling the samples instead would add the members' disagreement to the width:
a pooled seed ensemble measured here covered 0.80 at 68 %. The map is applied to the
average. On the demo this held 68 % and 95 % coverage within ±0.03 and ±0.02 of nominal
across three seeds, where the single flow strayed to 0.74 and 0.89 (BENCHMARKS.md).

The map moves quantile levels within each object's samples: it cannot widen a posterior
beyond its most extreme sample. :meth:`QuantileRecalibration.saturated` says when the
held-out truths fell outside the samples so often that the 95 % interval would need
levels beyond them (then raise NUM_SAMPLES).

Each fold flow resumes from its own checkpoints, so a killed stage reruns to the same map.
"""
from __future__ import annotations

import numpy as np

#: the recalibration methods of ``infer.RECALIBRATION``
METHODS = ("none", "quantile")


def fold_of_groups(groups, n_folds: int, seed: int) -> np.ndarray:
    """Fold index (0 … n_folds-1) of each row, dealing whole groups at random (seeded), so
    the projections and snapshots of one object never straddle a training fold and its
    held-out fold."""
    keys, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    order = np.random.default_rng([seed, 7]).permutation(len(keys))
    group_fold = np.empty(len(keys), int)
    group_fold[order] = np.arange(len(keys)) % n_folds
    return group_fold[codes]


def quantile_average(members) -> np.ndarray:
    """Quantile average (Vincentization) of several posteriors of the same objects: each of
    ``members`` is (N, S, D); the result's k-th smallest value of a field is the mean of
    the members' k-th smallest values, placed in the first member's within-object order,
    so the dependence between fields (the copula) is the first member's."""
    first = np.asarray(members[0], np.float64)
    if any(np.shape(m) != first.shape for m in members):
        raise ValueError("quantile_average: members of different shapes "
                         f"{[np.shape(m) for m in members]}")
    mean_sorted = np.mean([np.sort(np.asarray(m, np.float64), axis=1) for m in members], axis=0)
    out = np.empty_like(first)
    np.put_along_axis(out, np.argsort(first, axis=1, kind="stable"), mean_sorted, axis=1)
    return out


class QuantileRecalibration:
    """``fit(pits)`` with held-out PIT values (M, D); ``transform(samples)`` (N, S, D)."""

    def fit(self, pits) -> "QuantileRecalibration":
        pits = np.asarray(pits, float)
        if pits.ndim == 1:
            pits = pits[:, None]
        self.pits_ = [np.sort(col[np.isfinite(col)]) for col in pits.T]
        short = [j for j, col in enumerate(self.pits_) if len(col) < 10]
        if short:
            raise ValueError(f"infer.RECALIBRATION: fewer than 10 held-out PIT values for "
                             f"target column(s) {short}; use RECALIBRATION: none or more data")
        return self

    def levels(self, field: int, u) -> np.ndarray:
        """``R⁻¹(u)``: the original posterior's quantile level that the recalibrated
        posterior puts at level ``u`` (the ``u``-quantile of the held-out PIT values)."""
        return np.quantile(self.pits_[field], np.clip(np.asarray(u, float), 0.0, 1.0),
                           method="hazen")     # the plotting position (k - ½)/M of the PITs

    def transform(self, samples) -> np.ndarray:
        """Recalibrated samples, same shape; rows with any non-finite sample stay as they are."""
        out = np.array(samples, dtype=np.float64, copy=True)
        n, s, d = out.shape
        ok = np.isfinite(out).reshape(n, -1).all(axis=1)
        if not ok.any():
            return out
        u = (np.arange(s) + 0.5) / s
        rows = out[ok]
        for j in range(d):
            order = np.argsort(rows[:, :, j], axis=1, kind="stable")
            ranked = np.take_along_axis(rows[:, :, j], order, axis=1)
            # position of level q among the sorted samples, whose r-th sits at (r + ½)/S
            pos = np.clip(self.levels(j, u) * s - 0.5, 0.0, s - 1.0)
            lo = np.floor(pos).astype(int)
            hi = np.minimum(lo + 1, s - 1)
            w = pos - lo
            moved = ranked[:, lo] * (1.0 - w) + ranked[:, hi] * w
            col = np.empty_like(moved)
            np.put_along_axis(col, order, moved, axis=1)
            rows[:, :, j] = col
        out[ok] = rows
        return out

    def saturated(self, n_samples: int) -> list[int]:
        """Fields whose 2.5 % or 97.5 % recalibrated level lies beyond the middle of the
        outermost of ``n_samples`` samples (level ½/S or 1 − ½/S): their 95 % intervals
        end at the extreme samples and stay too narrow."""
        edge = 0.5 / n_samples
        return [j for j in range(len(self.pits_))
                if self.levels(j, 0.025) < edge or self.levels(j, 0.975) > 1 - edge]

    def summary(self) -> dict:
        """What the map does at the levels the stage reports: the original level that
        ends up at 2.5 / 16 / 84 / 97.5 % (identity when the fold flows were calibrated)."""
        marks = [0.025, 0.16, 0.84, 0.975]
        return {"n_pit": [int(len(p)) for p in self.pits_],
                "levels": marks,
                "original_levels": [[float(v) for v in self.levels(j, marks)]
                                    for j in range(len(self.pits_))]}
