"""Realism of a simulated image set against an observed one, measured in representation space.

Three complementary measures, all on arrays of representations (n_images x n_dims):

- `ood_score`: the k-nearest-neighbour out-of-distribution score of Eisert et al. (2024,
  MNRAS 528, 7411; ERGO-ML), per image, with the fraction of images "in domain";
- `classifier_two_sample_test`: cross-validated AUC of a classifier told to separate the
  two sets (0.5 = indistinguishable), with an interval and p-value from a permutation null;
- `mmd_test`: maximum mean discrepancy with a Gaussian kernel and a permutation p-value.

`compare_sets` runs all of them for a (simulated, observed) pair, the OOD score in both
directions. Nothing here reads or writes files.

Groups. A simulated set holds several images of one object (projections, snapshots, the
progenitors of one root descendant): they are not independent samples. Every measure
takes the object group of each image (``groups_a``/``groups_b``, ``groups_x``/``groups_y``;
the analyse stage passes prepare's ``split_group``) and treats a group as one unit:

- OOD score: the reference sets of the neighbour searches hold *one image per group*
  (drawn at random, seeded), and the scored image's own group is left out of its own-set
  search, so a sibling projection can never be its neighbour. The calibration is built in
  exactly the same way, with reference sets of the same size, from two halves of the
  scored set split *by group*. Under the
  null (the same population) the scored image and both reference sets are then
  independent draws, so the in-domain fraction is the calibration level (0.95).
- C2ST: folds are stratified group folds (no object in a training and a test fold), and
  the interval and p-value come from rerunning the cross-validation with the labels of
  whole groups shuffled, not from DeLong's variance, which assumes independent images
  (and misses the variance of the fold models).
- MMD: kernel pairs within one group are left out of the within-set sums (they are not
  draws from the population), and the permutation null relabels whole groups, keeping the
  number of groups on each side.

Without groups (``None``) every image is its own group and the measures reduce to their
textbook forms.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy.spatial.distance import pdist, squareform
from scipy.stats import norm, rankdata
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from scripts.analysis.neighbours import NeighbourIndex, as_float32

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- helpers
def standardisation(X) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation of ``X`` (std 0 replaced by 1)."""
    X = np.asarray(X, dtype=np.float64)
    mean, std = X.mean(axis=0), X.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def group_codes(groups, n: int, name: str = "groups") -> np.ndarray:
    """Integer code 0…G-1 of each row's group; ``None`` makes every row its own group.

    Missing labels (None/NaN) count as groups of one, so an image without a group is never
    merged with another.
    """
    if groups is None:
        return np.arange(n, dtype=np.int64)
    groups = np.asarray(groups)
    if len(groups) != n:
        raise ValueError(f"{name} has {len(groups)} entries for {n} rows")
    codes, _ = pd.factorize(pd.Series(groups, dtype=object), use_na_sentinel=True)
    codes = codes.astype(np.int64)
    missing = codes < 0
    if missing.any():
        codes[missing] = codes.max(initial=-1) + 1 + np.arange(int(missing.sum()))
    return codes


def one_per_group(codes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Row of one randomly chosen member of each group, in increasing group code."""
    order = rng.permutation(len(codes))
    _, first = np.unique(codes[order], return_index=True)
    return order[first]


def _choose_groups(rng: np.random.Generator, unique_codes: np.ndarray, size: int) -> np.ndarray:
    """``size`` of the group codes (sorted, seeded); all of them when ``size`` reaches their number."""
    if size >= len(unique_codes):
        return unique_codes
    return np.sort(rng.choice(unique_codes, size=size, replace=False))


def _groups_up_to(rng: np.random.Generator, codes: np.ndarray, max_rows: int | None) -> np.ndarray:
    """Rows of whole groups, drawn in random order (seeded) while the total stays within
    ``max_rows`` (at least one group); all rows when ``max_rows`` is None or not reached."""
    if max_rows is None or len(codes) <= max_rows:
        return np.arange(len(codes))
    unique, sizes = np.unique(codes, return_counts=True)
    order = rng.permutation(len(unique))
    keep = order[np.cumsum(sizes[order]) <= max_rows]
    if len(keep) == 0:
        keep = order[:1]
    return np.flatnonzero(np.isin(codes, unique[keep]))


def _kth_ratio(x, x_codes, own, own_codes, other, k: int) -> np.ndarray:
    """``d_k(x, other) / d_k(x, own minus x's group)`` for every row x (L1 distances).

    ``own`` holds at most one row per group (``own_codes``), so leaving out x's group removes
    at most one neighbour. A zero denominator gives +inf, or 1 when the numerator is zero too.
    """
    if len(other) < k or len(own) < k + 1:
        raise ValueError(f"need at least {k + 1} reference objects for k={k}, got "
                         f"{len(own)} and {len(other)}")
    exact = np.iinfo(np.int64).max
    d_other, _ = NeighbourIndex(metric="l1", exact_threshold=exact).fit(other).kneighbors(x, k)
    d, i = NeighbourIndex(metric="l1", exact_threshold=exact).fit(own).kneighbors(x, k + 1)
    foreign = own_codes[np.clip(i, 0, None)] != x_codes[:, None]
    d_own = np.where(foreign[:, :k].all(axis=1), d[:, k - 1], d[:, k]).astype(np.float64)
    numerator = d_other[:, -1].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = numerator / d_own
    ratio[(d_own == 0) & (numerator == 0)] = 1.0
    return ratio


# --------------------------------------------------------------------------- OOD score
@dataclass
class OODResult:
    """Per-image out-of-distribution scores of the images of set A relative to set B.

    ``scores`` = ``raw_scores / calibration``; an image is in domain when its score <= 1.
    ``indices`` are the rows of A that were scored (every image of the ``n_subsample``
    groups of A drawn, see `ood_score`), ``half_of`` the half (0/1) of A each belongs to.
    ``reference_a``/``reference_b``: for each half, the rows of A / B holding one image per
    group of that half. Image x of half h has ``raw_scores`` against ``reference_b[h]`` and
    ``calibration_scores`` against ``reference_a[1 - h]``, both over its own-set distance in
    ``reference_a[h]`` without x's group.
    """

    scores: np.ndarray
    raw_scores: np.ndarray
    indices: np.ndarray
    calibration: float
    calibration_scores: np.ndarray
    half_of: np.ndarray
    reference_a: tuple
    reference_b: tuple
    in_domain_fraction: float
    k: int
    percentile: float
    n_subsample: int

    def summary(self) -> dict:
        """JSON-ready scalars."""
        return {
            "in_domain_fraction": float(self.in_domain_fraction),
            "calibration": float(self.calibration),
            "median_score": float(np.median(self.scores)),
            "mean_log_score": float(np.mean(np.log(
                self.scores[np.isfinite(self.scores) & (self.scores > 0)]))),
            "k": int(self.k),
            "percentile": float(self.percentile),
            "n_subsample": int(self.n_subsample),
            "n_scored": int(len(self.indices)),
        }


def _standardiser(standardise, A, B) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(standardise, str) or standardise is None:
        if standardise == "A":
            return standardisation(A)
        if standardise == "B":
            return standardisation(B)
        if standardise == "pooled":
            return standardisation(np.vstack([A, B]))
        if standardise is None:
            return np.zeros(A.shape[1]), np.ones(A.shape[1])
        raise ValueError(f"standardise must be 'A', 'B', 'pooled', None or (mean, std), got {standardise!r}")
    return tuple(np.asarray(v, dtype=np.float64) for v in standardise)


def ood_score(A, B, k: int = 8, percentile: float = 95.0, standardise="A",
              max_samples: int | None = None, seed: int = 0, groups_a=None,
              groups_b=None) -> OODResult:
    """Out-of-distribution score of Eisert et al. (2024) for every image x of set A.

    Convention (DESIGN §6): A is the *scored* set, B the *other* set::

        s_k(x) = d_k(x, B) / d_k(x, A \\ group(x)),   x in A,

    with d_k the L1 distance to the k-th nearest neighbour. ``s_k`` compares how far x is
    from B with how far it is from its own kind: ~1 where B is as dense around x as A,
    >> 1 where B has no objects like x. A "in domain" of B means "covered by B".
    So with A = simulation, B = observations, the in-domain fraction is the fraction of
    simulated images that look like observed ones; with A = observations, B = simulation,
    the fraction of observed images the simulation reproduces.

    Procedure (``groups_a``/``groups_b``: object group of each image, None = one image
    per object):

    1. Standardise both sets with one per-dimension mean/std: of A (``standardise="A"``,
       default), of B (``"B"``), of A and B together (``"pooled"``), a given
       ``(mean, std)`` pair, or none (``None``, inputs already standardised).
    2. Equal sizes: draw the same number m of groups from A and from B (seeded; m = the
       smaller number of groups, capped by ``max_samples``), since d_k shrinks with the
       density, i.e. with the number of independent objects; split each into random
       halves A1, A2 and B1, B2 of m/2 groups.
    3. Reference sets hold one random image per group (the images of one object are not
       independent: with all of them the own-set density around x would be that of x's
       clustered siblings, and a sibling would be x's nearest neighbour).
    4. Score every image x of half A_h against B_h's reference set, its own-set distance
       taken in A_h's reference set without x's group.
    5. Calibrate with A alone in exactly the same way, the other half of A standing in for
       B: x of A_h against A_(1-h)'s reference set over the same own-set distance. Score
       and calibration thus compare reference sets of the same sizes (m/2 objects), so the
       calibration holds at any m (Eisert et al. score at size m and calibrate at m/2,
       which lets the calibration's wider spread push the in-domain fraction towards 1
       when m is ~100). The ``percentile``-th percentile (95th) of the calibration scores
       is the calibration value: the largest score an image of A's own population gets in
       95 per cent of cases.
    6. Normalised score = s_k / calibration; in domain when <= 1. For B drawn from A's
       population the in-domain fraction is therefore ~0.95, however many images each
       object has and however few objects there are.

    Parameters: ``A``, ``B`` arrays (n_A, d) and (n_B, d); ``k`` neighbour order (8 as
    in the paper); ``seed`` for the group draws, the representatives and the split.
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B must be 2-D with the same number of dims, got {A.shape} and {B.shape}")
    mean, std = _standardiser(standardise, A, B)
    codes_a, codes_b = group_codes(groups_a, len(A), "groups_a"), group_codes(groups_b, len(B), "groups_b")
    unique_a, unique_b = np.unique(codes_a), np.unique(codes_b)

    rng = np.random.default_rng(seed)
    m = min(len(unique_a), len(unique_b), max_samples or np.iinfo(np.int64).max)
    half = m // 2
    if half < k + 1:
        raise ValueError(f"need at least {2 * (k + 1)} objects (groups) in each set for k={k} "
                         f"(calibration halves), got {len(unique_a)} and {len(unique_b)}")
    halves_a = np.split(rng.permutation(_choose_groups(rng, unique_a, m))[:2 * half], 2)
    halves_b = np.split(rng.permutation(_choose_groups(rng, unique_b, m))[:2 * half], 2)
    rep_a, rep_b = one_per_group(codes_a, rng), one_per_group(codes_b, rng)
    ref_a = tuple(rep_a[np.isin(codes_a[rep_a], g)] for g in halves_a)   # one image per group
    ref_b = tuple(rep_b[np.isin(codes_b[rep_b], g)] for g in halves_b)
    ia = np.flatnonzero(np.isin(codes_a, np.concatenate(halves_a)))      # scored images
    half_of = np.isin(codes_a[ia], halves_a[1]).astype(np.int8)
    a = as_float32((A - mean) / std, "A")
    b = as_float32((B - mean) / std, "B")

    raw = np.empty(len(ia))
    calibration_scores = np.empty(len(ia))
    for h in (0, 1):
        rows = ia[half_of == h]
        own = ref_a[h]
        raw[half_of == h] = _kth_ratio(a[rows], codes_a[rows], a[own], codes_a[own], b[ref_b[h]], k)
        calibration_scores[half_of == h] = _kth_ratio(a[rows], codes_a[rows], a[own], codes_a[own],
                                                      a[ref_a[1 - h]], k)
    calibration = float(np.percentile(calibration_scores, percentile))

    scores = raw / calibration
    result = OODResult(scores=scores, raw_scores=raw, indices=ia, calibration=calibration,
                       calibration_scores=calibration_scores, half_of=half_of,
                       reference_a=ref_a, reference_b=ref_b,
                       in_domain_fraction=float(np.mean(scores <= 1.0)),
                       k=k, percentile=percentile, n_subsample=2 * half)
    logger.info("OOD score (k=%d, %d objects per set, %d images scored): calibration p%g = %.3f, "
                "in domain %.3f", k, 2 * half, len(ia), percentile, calibration, result.in_domain_fraction)
    return result


# --------------------------------------------------------------------------- classifier test
def _classifier(name: str, seed: int):
    if name == "logistic":
        # liblinear: the same L2-penalised fit (its intercept is penalised too, negligibly
        # here), ~50x faster than lbfgs on a few hundred rows, which the permutation null
        # repeats n_permutations x n_splits times
        return LogisticRegression(C=1.0, solver="liblinear", max_iter=2000)
    if name == "knn":
        return KNeighborsClassifier(n_neighbors=15)
    if name == "hgb":
        return HistGradientBoostingClassifier(max_iter=200, early_stopping=True, random_state=seed)
    raise ValueError(f"classifier must be 'logistic', 'knn' or 'hgb', got {name!r}")


@dataclass
class C2STResult:
    """Classifier two-sample test: AUC of telling X from Y on held-out folds."""

    auc: float
    ci_low: float
    ci_high: float
    p_value: float
    fold_aucs: np.ndarray
    classifier: str
    n_images: tuple
    confidence: float
    n_groups: tuple = (0, 0)
    null_aucs: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    @property
    def standard_error(self) -> float:
        """Spread of the AUC over group relabellings (its standard error near 0.5)."""
        return float(np.std(self.null_aucs, ddof=1)) if len(self.null_aucs) > 1 else float("nan")

    def summary(self) -> dict:
        return {"auc": self.auc, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "p_value": self.p_value, "auc_fold_std": float(np.std(self.fold_aucs, ddof=1)),
                "classifier": self.classifier, "n_x": int(self.n_images[0]),
                "n_y": int(self.n_images[1]),
                "n_groups_x": int(self.n_groups[0]), "n_groups_y": int(self.n_groups[1]),
                "standard_error": self.standard_error, "n_permutations": int(len(self.null_aucs)),
                "confidence": self.confidence}


def group_folds(labels, codes, n_splits: int, rng: np.random.Generator) -> np.ndarray:
    """Fold (0…n_splits-1) of each row: whole groups, stratified by class.

    Each group lies in one class (here: one set). The groups of each class are dealt in
    random order (seeded), largest first, to the fold holding the fewest images of that
    class so far, so every fold gets about 1/n_splits of each class and no group is split.
    The same rule as `StratifiedGroupKFold` for this case, at O(groups) cost (sklearn's
    search is ~0.5 s for 2,500 groups, which the permutation null repeats a hundred times).
    """
    labels, codes = np.asarray(labels), np.asarray(codes)
    fold_of_group = np.empty(codes.max() + 1, dtype=np.int64)
    for label in np.unique(labels):
        groups, sizes = np.unique(codes[labels == label], return_counts=True)
        order = rng.permutation(len(groups))
        order = order[np.argsort(-sizes[order], kind="stable")]
        load = np.zeros(n_splits)
        for g in order:
            target = int(np.argmin(load))
            fold_of_group[groups[g]] = target
            load[target] += sizes[g]
    return fold_of_group[codes]


def auc_score(labels, scores) -> float:
    """ROC AUC of ``scores`` for binary ``labels`` (Mann–Whitney U from ranks; ties count
    one half): the same number as sklearn's ``roc_auc_score`` without its input checks,
    which cost more than the fit in the permutation null."""
    labels = np.asarray(labels).astype(bool)
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _cross_validated_auc(model, data, labels, codes, n_splits: int, rng: np.random.Generator):
    """Pooled out-of-fold AUC and the per-fold AUCs, with `group_folds` folds."""
    folds = group_folds(labels, codes, n_splits, rng)
    oof = np.empty(len(labels))
    fold_aucs = []
    for fold in range(n_splits):
        test = folds == fold
        fitted = clone(model).fit(data[~test], labels[~test])
        oof[test] = fitted.predict_proba(data[test])[:, 1]
        if len(np.unique(labels[test])) == 2:
            fold_aucs.append(auc_score(labels[test], oof[test]))
    return auc_score(labels, oof), np.asarray(fold_aucs)


def classifier_two_sample_test(X, Y, classifier: str = "logistic", n_splits: int = 5,
                               max_samples: int | None = None, confidence: float = 0.95,
                               seed: int = 0, groups_x=None, groups_y=None,
                               n_permutations: int = 50) -> C2STResult:
    """Cross-validated AUC of a classifier separating X (label 0) from Y (label 1).

    Each set is capped at ``max_samples`` images by drawing whole groups (``groups_x``/
    ``groups_y``; None = independent images; seeded). The sets are not cut to one size:
    the AUC does not depend on the class ratio, and cutting a set of multi-image objects
    to the image count of a set of single images would throw most of its objects away. Features are standardised inside each training fold (StandardScaler in
    the pipeline). ``classifier``: ``"logistic"`` (linear: detects shifts of the mean along
    any direction), ``"knn"`` (15 neighbours) or ``"hgb"`` (histogram gradient boosting:
    also non-linear differences).

    Folds: whole groups stratified by set (`group_folds`, the rule of sklearn's
    `StratifiedGroupKFold`, seeded), so no object has images in both a training and a test fold: otherwise a flexible classifier recognises the sibling of a
    training image and the AUC rises above 0.5 for identical populations.

    The AUC is that of the pooled out-of-fold predicted probabilities. Its uncertainty
    comes from a permutation null: the whole cross-validation is rerun ``n_permutations``
    times with the labels of whole *groups* shuffled (keeping the number of groups of each
    set), which is valid for clustered images and includes the variance that the fold
    models add (the DeLong variance of the pooled predictions misses both: measured on
    independent Gaussian sets of 1,200 it is ~1.5 times too narrow). ``p_value``: the
    one-sided normal-approximation probability of an AUC this large under that null
    (mean and standard deviation of the null AUCs); interval: ``auc ± z sd(null)``, the
    standard error at AUC ≈ 0.5 (conservative close to 1).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    codes_x, codes_y = group_codes(groups_x, len(X), "groups_x"), group_codes(groups_y, len(Y), "groups_y")
    rng = np.random.default_rng(seed)
    rx = _groups_up_to(rng, codes_x, max_samples)
    ry = _groups_up_to(rng, codes_y, max_samples)
    n_groups = (len(np.unique(codes_x[rx])), len(np.unique(codes_y[ry])))
    if min(n_groups) < n_splits:
        raise ValueError(f"need at least n_splits={n_splits} objects (groups) per set, got "
                         f"{n_groups[0]} and {n_groups[1]}")
    if n_permutations < 2:
        raise ValueError(f"n_permutations must be >= 2, got {n_permutations}")
    data = np.vstack([X[rx], Y[ry]])
    labels = np.r_[np.zeros(len(rx), int), np.ones(len(ry), int)]
    _, codes = np.unique(np.r_[codes_x[rx], codes_y[ry] + codes_x.max(initial=-1) + 1],
                         return_inverse=True)
    model = make_pipeline(StandardScaler(), _classifier(classifier, seed))
    auc, fold_aucs = _cross_validated_auc(model, data, labels, codes, n_splits, rng)
    null = np.empty(n_permutations)
    n_total = codes.max() + 1
    for j in range(n_permutations):
        group_label = np.zeros(n_total, int)
        group_label[rng.permutation(n_total)[:n_groups[1]]] = 1
        null[j], _ = _cross_validated_auc(model, data, group_label[codes], codes, n_splits, rng)
    centre, se = float(np.mean(null)), float(np.std(null, ddof=1))
    z = norm.ppf(0.5 + confidence / 2)
    p_value = float(norm.sf((auc - centre) / se)) if se > 0 else float(auc <= centre)
    result = C2STResult(auc=auc, ci_low=float(max(0.0, auc - z * se)),
                        ci_high=float(min(1.0, auc + z * se)), p_value=p_value,
                        fold_aucs=fold_aucs, classifier=classifier,
                        n_images=(len(rx), len(ry)), confidence=confidence,
                        n_groups=n_groups, null_aucs=null)
    logger.info("C2ST (%s, %d/%d images in %d/%d groups): AUC %.3f [%.3f, %.3f], p = %.3g", classifier,
                len(rx), len(ry), *n_groups, auc, result.ci_low, result.ci_high, p_value)
    return result


# --------------------------------------------------------------------------- MMD
@dataclass
class MMDResult:
    """Squared MMD (Gaussian kernel, within-group pairs left out) with its permutation p-value."""

    mmd2: float
    p_value: float
    bandwidth: float
    n_x: int
    n_y: int
    n_permutations: int
    null_mmd2: np.ndarray = field(repr=False)
    n_groups_x: int = 0
    n_groups_y: int = 0

    def summary(self) -> dict:
        return {"mmd2": self.mmd2, "p_value": self.p_value, "bandwidth": self.bandwidth,
                "n_x": self.n_x, "n_y": self.n_y, "n_groups_x": self.n_groups_x,
                "n_groups_y": self.n_groups_y, "n_permutations": self.n_permutations}


def _group_sums(K: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``G x G`` sums of the kernel matrix over the images of each pair of groups
    (``codes`` 0…G-1, every code present), in O(n^2)."""
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, np.diff(codes[order]) != 0])
    return np.add.reduceat(np.add.reduceat(K[order][:, order], starts, axis=0), starts, axis=1)


def mmd_test(X, Y, n_permutations: int = 200, max_samples: int | None = 1000,
             bandwidth: float | None = None, seed: int = 0, batch: int = 64,
             groups_x=None, groups_y=None) -> MMDResult:
    """Gaussian-kernel MMD two-sample test (Gretton et al. 2012) with permutations of groups.

    ``k(x, y) = exp(-|x - y|^2 / (2 bandwidth^2))``; bandwidth by default the median
    heuristic: the median Euclidean distance between all pairs of the pooled sample.
    Statistic: the U-statistic estimate of MMD^2 in which the within-set sums leave out
    every pair of images of the same group (``groups_x``/``groups_y``; None = each image
    its own group, which is the usual unbiased estimate leaving out the diagonal). Pairs of
    one object's projections are near duplicates, not draws from the population, and
    would otherwise inflate the within-set similarity of a clustered set.
    p-value: ``(1 + #{null >= observed}) / (1 + n_permutations)`` over random
    relabellings of whole groups of the pooled sample (seeded), keeping the number of
    groups on each side: images of one object cannot be exchanged independently.
    Each set is first cut to at most ``max_samples`` images by drawing whole groups
    (seeded): the cost is O((n_x+n_y)^2) memory. Inputs are used as given (standardise
    them first if their dimensions have different scales).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    codes_x, codes_y = group_codes(groups_x, len(X), "groups_x"), group_codes(groups_y, len(Y), "groups_y")
    rng = np.random.default_rng(seed)
    rx = _groups_up_to(rng, codes_x, max_samples)
    ry = _groups_up_to(rng, codes_y, max_samples)
    X, Y = X[rx], Y[ry]
    n, m = len(X), len(Y)
    _, cx = np.unique(codes_x[rx], return_inverse=True)
    _, cy = np.unique(codes_y[ry], return_inverse=True)
    gx, gy = int(cx.max(initial=-1)) + 1, int(cy.max(initial=-1)) + 1
    if gx < 2 or gy < 2:
        raise ValueError(f"need at least 2 objects (groups) per set, got {gx} and {gy}")
    Z = np.vstack([X, Y])
    if bandwidth is None:
        distances = pdist(Z)
        bandwidth = float(np.median(distances[distances > 0])) if np.any(distances > 0) else 1.0
    sq = pdist(Z, "sqeuclidean")
    K = squareform(np.exp(-sq / (2.0 * bandwidth ** 2)))
    np.fill_diagonal(K, 1.0)
    del sq
    codes = np.r_[cx, cy + gx]
    KG = _group_sums(K, codes)                         # (G, G), G = gx + gy
    del K
    sizes = np.bincount(codes).astype(np.float64)
    within = np.diag(KG).copy()                         # sum over pairs inside each group
    row = KG.sum(axis=1)
    total, n_all = row.sum(), sizes.sum()
    sq_all, within_all = (sizes ** 2).sum(), within.sum()

    def statistic(U: np.ndarray) -> np.ndarray:
        """MMD^2 for each column of a (G, P) 0/1 matrix marking the groups on the 'X' side."""
        s_xx = np.einsum("ij,ij->j", U, KG @ U)
        s_xy = row @ U - s_xx
        s_yy = total - 2.0 * s_xy - s_xx
        w_x = within @ U
        n_x = sizes @ U
        q_x = (sizes ** 2) @ U
        n_y = n_all - n_x
        with np.errstate(divide="ignore", invalid="ignore"):
            return ((s_xx - w_x) / (n_x ** 2 - q_x) + (s_yy - (within_all - w_x)) / (n_y ** 2 - (sq_all - q_x))
                    - 2.0 * s_xy / (n_x * n_y))

    observed = float(statistic(np.r_[np.ones(gx), np.zeros(gy)][:, None])[0])
    null = np.empty(n_permutations)
    G = gx + gy
    for start in range(0, n_permutations, batch):
        size = min(batch, n_permutations - start)
        U = np.zeros((G, size))
        for j in range(size):
            U[rng.permutation(G)[:gx], j] = 1.0
        null[start:start + size] = statistic(U)
    null = np.where(np.isfinite(null), null, -np.inf)
    p_value = float((1 + np.sum(null >= observed)) / (1 + n_permutations))
    logger.info("MMD^2 = %.4g (bandwidth %.3g, %d vs %d images in %d vs %d groups), permutation "
                "p = %.4f", observed, bandwidth, n, m, gx, gy, p_value)
    return MMDResult(mmd2=observed, p_value=p_value, bandwidth=bandwidth, n_x=n, n_y=m,
                     n_permutations=n_permutations, null_mmd2=null, n_groups_x=gx, n_groups_y=gy)


# --------------------------------------------------------------------------- all together
def compare_sets(sim, obs, seed: int = 0, k: int = 8, percentile: float = 95.0,
                 ood_max_samples: int | None = 10_000, classifier: str = "logistic",
                 n_splits: int = 5, c2st_max_samples: int | None = 10_000,
                 mmd_max_samples: int | None = 1000, n_permutations: int = 200,
                 c2st_permutations: int = 50, sim_groups=None, obs_groups=None,
                 weights=None) -> dict:
    """All realism measures of a simulated set ``sim`` against an observed set ``obs``.

    ``sim_groups``/``obs_groups``: the object group of each image (projections, snapshots
    and root descendants of one object share one; None = independent images), used by
    every measure as described in the module docstring.

    Both sets are first standardised with the *observed* set's per-dimension mean/std
    (the observed set is the fixed reference, so both OOD directions and the MMD live in
    the same space); optional ``weights`` then scale the columns (the blocks of a combined
    feature set, :func:`scripts.analysis.baselines.feature_weights`). Returns a dict of
    result objects (each has ``.summary()``):

    - ``"ood_sim"``: `ood_score` with A = sim, B = obs (which simulated images have
      observed counterparts: the direction of the headline figure of Eisert et al. 2024,
      the fraction of TNG galaxies that align with HSC ones);
    - ``"ood_obs"``: `ood_score` with A = obs, B = sim (which observed images the
      simulation reproduces);
    - ``"c2st"``: `classifier_two_sample_test` of sim (label 0) vs obs (label 1);
    - ``"mmd"``: `mmd_test` of sim vs obs.

    `summarise` turns it into a flat dict of floats for metrics.json.
    """
    sim = np.asarray(sim, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    mean, std = standardisation(obs)
    sim_s, obs_s = (sim - mean) / std, (obs - mean) / std
    if weights is not None:
        sim_s, obs_s = sim_s * weights, obs_s * weights
    return {
        "ood_sim": ood_score(sim_s, obs_s, k=k, percentile=percentile, standardise=None,
                             max_samples=ood_max_samples, seed=seed, groups_a=sim_groups,
                             groups_b=obs_groups),
        "ood_obs": ood_score(obs_s, sim_s, k=k, percentile=percentile, standardise=None,
                             max_samples=ood_max_samples, seed=seed, groups_a=obs_groups,
                             groups_b=sim_groups),
        "c2st": classifier_two_sample_test(sim_s, obs_s, classifier=classifier,
                                           n_splits=n_splits, max_samples=c2st_max_samples,
                                           seed=seed, groups_x=sim_groups, groups_y=obs_groups,
                                           n_permutations=c2st_permutations),
        "mmd": mmd_test(sim_s, obs_s, n_permutations=n_permutations,
                        max_samples=mmd_max_samples, seed=seed, groups_x=sim_groups,
                        groups_y=obs_groups),
    }


def summarise(comparison: dict) -> dict:
    """Flatten a `compare_sets` result into ``{"<measure>.<quantity>": scalar}``."""
    return {f"{name}.{key}": value for name, result in comparison.items()
            for key, value in result.summary().items()}
