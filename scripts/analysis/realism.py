"""Realism of a simulated image set against an observed one, measured in representation space.

Three complementary measures, all on arrays of representations (n_objects x n_dims):

- `ood_score`: the k-nearest-neighbour out-of-distribution score of Eisert et al. (2024,
  MNRAS 528, 7411; ERGO-ML), per object, with the fraction of objects "in domain";
- `classifier_two_sample_test`: cross-validated AUC of a classifier told to separate the
  two sets (0.5 = indistinguishable), with a DeLong confidence interval;
- `mmd_test`: maximum mean discrepancy with a Gaussian kernel and a permutation p-value.

`compare_sets` runs all of them for a (simulated, observed) pair, the OOD score in both
directions. Nothing here reads or writes files.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.distance import cdist, pdist
from scipy.stats import norm, rankdata
from sklearn.base import clone
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from scripts.analysis.neighbours import as_float32, knn_l1_distance

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- helpers
def standardisation(X) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension mean and standard deviation of ``X`` (std 0 replaced by 1)."""
    X = np.asarray(X, dtype=np.float64)
    mean, std = X.mean(axis=0), X.std(axis=0)
    return mean, np.where(std > 0, std, 1.0)


def _subsample(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Sorted random row indices (without replacement); all rows when ``size >= n``."""
    if size >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=size, replace=False))


def _kth_ratio(scored: np.ndarray, other: np.ndarray, k: int) -> np.ndarray:
    """``d_k(x, other) / d_k(x, scored \\ {x})`` for every row x of ``scored`` (L1).

    A zero denominator (k exact duplicates of x in its own set) gives +inf, or 1 when the
    numerator is zero as well.
    """
    d_other = knn_l1_distance(scored, other, k)[:, -1].astype(np.float64)
    d_own = knn_l1_distance(scored, None, k, exclude_self=True)[:, -1].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = d_other / d_own
    ratio[(d_own == 0) & (d_other == 0)] = 1.0
    return ratio


# --------------------------------------------------------------------------- OOD score
@dataclass
class OODResult:
    """Per-object out-of-distribution scores of the objects of set A relative to set B.

    ``scores`` = ``raw_scores / calibration``; an object is in domain when its score <= 1.
    ``indices`` are the rows of A that were scored (A is subsampled to the size of B when
    larger, or to ``max_samples``). ``calibration_scores`` are the scores of the rows
    ``calibration_indices`` of A (half A1) against the rows ``calibration_other`` (A2).
    """

    scores: np.ndarray
    raw_scores: np.ndarray
    indices: np.ndarray
    calibration: float
    calibration_scores: np.ndarray
    calibration_indices: np.ndarray
    calibration_other: np.ndarray
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
        }


def ood_score(A, B, k: int = 8, percentile: float = 95.0, standardise="A",
              max_samples: int | None = None, seed: int = 0) -> OODResult:
    """Out-of-distribution score of Eisert et al. (2024) for every object x of set A.

    Convention (DESIGN §6): A is the *scored* set, B the *other* set::

        s_k(x) = d_k(x, B) / d_k(x, A \\ {x}),   x in A,

    with d_k the L1 distance to the k-th nearest neighbour. ``s_k`` compares how far x is
    from B with how far it is from its own kind: ~1 where B is as dense around x as A,
    >> 1 where B has no objects like x. A "in domain" of B means "covered by B".
    So with A = simulation, B = observations, the in-domain fraction is the fraction of
    simulated objects that look like observed ones; with A = observations, B = simulation,
    the fraction of observed objects the simulation reproduces.

    Procedure:
    1. Standardise both sets with one per-dimension mean/std: of A (``standardise="A"``,
       default: A is also the set whose own neighbour scale and calibration define the
       score), of B (``"B"``), of A and B together (``"pooled"``), a given ``(mean, std)``
       pair, or none (``None``, inputs already standardised).
    2. Equal sizes: the larger of A and B is subsampled (seeded) to the size of the
       smaller (and both to ``max_samples`` if given), since d_k shrinks with the
       density, i.e. with the number of objects.
    3. Score the (subsampled) objects of A against the (subsampled) B.
    4. Calibrate with A alone: split its subsample into random halves A1, A2 and compute
       the same score for x in A1 with B := A2, i.e. ``d_k(x, A2) / d_k(x, A1 \\ {x})``
       (again two sets of equal size). Its ``percentile``-th percentile (95th) is the
       calibration value: the largest score an object of A's own distribution gets in
       95 per cent of cases.
    5. Normalised score = s_k / calibration; in domain when <= 1. For B drawn from A's
       distribution the in-domain fraction is therefore ~0.95.

    Parameters: ``A``, ``B`` arrays (n_A, d) and (n_B, d); ``k`` neighbour order (8 as
    in the paper); ``seed`` for the subsamples and the split.
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or B.ndim != 2 or A.shape[1] != B.shape[1]:
        raise ValueError(f"A and B must be 2-D with the same number of dims, got {A.shape} and {B.shape}")
    if isinstance(standardise, str) or standardise is None:
        if standardise == "A":
            mean, std = standardisation(A)
        elif standardise == "B":
            mean, std = standardisation(B)
        elif standardise == "pooled":
            mean, std = standardisation(np.vstack([A, B]))
        elif standardise is None:
            mean, std = np.zeros(A.shape[1]), np.ones(A.shape[1])
        else:
            raise ValueError(f"standardise must be 'A', 'B', 'pooled', None or (mean, std), got {standardise!r}")
    else:
        mean, std = (np.asarray(v, dtype=np.float64) for v in standardise)

    rng = np.random.default_rng(seed)
    m = min(len(A), len(B), max_samples or np.iinfo(np.int64).max)
    if m // 2 < k + 1:
        raise ValueError(f"need at least {2 * (k + 1)} objects in each set for k={k} "
                         f"(calibration halves), got {len(A)} and {len(B)}")
    ia, ib = _subsample(rng, len(A), m), _subsample(rng, len(B), m)
    a = as_float32((A[ia] - mean) / std, "A")
    b = as_float32((B[ib] - mean) / std, "B")

    raw = _kth_ratio(a, b, k)

    perm = rng.permutation(m)
    half = m // 2
    i1, i2 = np.sort(perm[:half]), np.sort(perm[half:2 * half])
    calibration_scores = _kth_ratio(a[i1], a[i2], k)
    calibration = float(np.percentile(calibration_scores, percentile))

    scores = raw / calibration
    result = OODResult(scores=scores, raw_scores=raw, indices=ia, calibration=calibration,
                       calibration_scores=calibration_scores,
                       calibration_indices=ia[i1], calibration_other=ia[i2],
                       in_domain_fraction=float(np.mean(scores <= 1.0)), k=k,
                       percentile=percentile, n_subsample=m)
    logger.info("OOD score (k=%d, n=%d): calibration p%g = %.3f, in domain %.3f",
                k, m, percentile, calibration, result.in_domain_fraction)
    return result


# --------------------------------------------------------------------------- classifier test
def delong_auc(y_true, scores) -> tuple[float, float]:
    """ROC AUC and its DeLong et al. (1988) variance, in O(n log n) (Sun & Xu 2014).

    ``y_true`` in {0, 1}; ties count one half. Returns ``(auc, variance)``.
    """
    y_true = np.asarray(y_true).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    pos, neg = scores[y_true], scores[~y_true]
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 objects of each class, got {m} and {n}")
    rank_pos = rankdata(pos)
    rank_neg = rankdata(neg)
    rank_all = rankdata(np.concatenate([pos, neg]))
    auc = (rank_all[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (rank_all[:m] - rank_pos) / n          # P(score(pos_i) > neg), per positive
    v01 = 1.0 - (rank_all[m:] - rank_neg) / m    # P(pos > score(neg_j)), per negative
    variance = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    return float(auc), float(variance)


def _classifier(name: str, seed: int):
    if name == "logistic":
        return LogisticRegression(C=1.0, max_iter=2000)
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
    n_per_class: int
    confidence: float

    def summary(self) -> dict:
        return {"auc": self.auc, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "p_value": self.p_value, "auc_fold_std": float(np.std(self.fold_aucs, ddof=1)),
                "classifier": self.classifier, "n_per_class": self.n_per_class,
                "confidence": self.confidence}


def classifier_two_sample_test(X, Y, classifier: str = "logistic", n_splits: int = 5,
                               max_samples: int | None = None, confidence: float = 0.95,
                               seed: int = 0) -> C2STResult:
    """Cross-validated AUC of a classifier separating X (label 0) from Y (label 1).

    Balanced: both sets are subsampled (seeded) to the smaller size (and ``max_samples``).
    Features are standardised inside each training fold (StandardScaler in the pipeline).
    ``classifier``: ``"logistic"`` (linear: detects shifts of the mean along any
    direction), ``"knn"`` (15 neighbours) or ``"hgb"`` (histogram gradient boosting:
    also non-linear differences). Stratified k-fold with shuffling (``seed``).

    The AUC is computed on the pooled out-of-fold predicted probabilities; its interval
    is the normal approximation with the DeLong variance, and ``p_value`` the one-sided
    probability of an AUC this large if the sets were indistinguishable (AUC = 0.5).
    (The out-of-fold predictions come from k different models, so the DeLong interval
    is slightly optimistic; ``fold_aucs`` shows the spread across folds.)
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    m = min(len(X), len(Y), max_samples or np.iinfo(np.int64).max)
    if m < n_splits:
        raise ValueError(f"need at least n_splits={n_splits} objects per set, got {len(X)} and {len(Y)}")
    data = np.vstack([X[_subsample(rng, len(X), m)], Y[_subsample(rng, len(Y), m)]])
    labels = np.repeat([0, 1], m)
    model = make_pipeline(StandardScaler(), _classifier(classifier, seed))
    oof = np.empty(2 * m)
    fold_aucs = []
    folds = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for train, test in folds.split(data, labels):
        fitted = clone(model).fit(data[train], labels[train])
        oof[test] = fitted.predict_proba(data[test])[:, 1]
        fold_aucs.append(roc_auc_score(labels[test], oof[test]))
    auc, var = delong_auc(labels, oof)
    se = np.sqrt(max(var, 0.0))
    z = norm.ppf(0.5 + confidence / 2)
    p_value = float(norm.sf((auc - 0.5) / se)) if se > 0 else float(auc <= 0.5)
    result = C2STResult(auc=auc, ci_low=float(max(0.0, auc - z * se)),
                        ci_high=float(min(1.0, auc + z * se)), p_value=p_value,
                        fold_aucs=np.asarray(fold_aucs), classifier=classifier,
                        n_per_class=m, confidence=confidence)
    logger.info("C2ST (%s, %d per class): AUC %.3f [%.3f, %.3f]",
                classifier, m, auc, result.ci_low, result.ci_high)
    return result


# --------------------------------------------------------------------------- MMD
@dataclass
class MMDResult:
    """Unbiased squared MMD (Gaussian kernel) with its permutation p-value."""

    mmd2: float
    p_value: float
    bandwidth: float
    n_x: int
    n_y: int
    n_permutations: int
    null_mmd2: np.ndarray = field(repr=False)

    def summary(self) -> dict:
        return {"mmd2": self.mmd2, "p_value": self.p_value, "bandwidth": self.bandwidth,
                "n_x": self.n_x, "n_y": self.n_y, "n_permutations": self.n_permutations}


def _mmd2_from_sums(s_xx, s_yy, s_xy, n, m):
    """Unbiased MMD^2 from kernel block sums that include the unit diagonal."""
    return (s_xx - n) / (n * (n - 1)) + (s_yy - m) / (m * (m - 1)) - 2.0 * s_xy / (n * m)


def mmd_test(X, Y, n_permutations: int = 200, max_samples: int | None = 1000,
             bandwidth: float | None = None, seed: int = 0, batch: int = 64) -> MMDResult:
    """Gaussian-kernel MMD two-sample test (Gretton et al. 2012) with permutations.

    ``k(x, y) = exp(-|x - y|^2 / (2 bandwidth^2))``; bandwidth by default the median
    heuristic: the median Euclidean distance between all pairs of the pooled sample.
    Statistic: the unbiased estimate of MMD^2. p-value: ``(1 + #{null >= observed}) /
    (1 + n_permutations)`` over random relabellings of the pooled sample (seeded).
    Each set is subsampled (seeded) to ``max_samples`` first: the cost is O((n_x+n_y)^2)
    memory and O(n_permutations (n_x+n_y)^2) time. Inputs are used as given (standardise
    them first if their dimensions have different scales).
    """
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    cap = max_samples or np.iinfo(np.int64).max
    X = X[_subsample(rng, len(X), min(len(X), cap))]
    Y = Y[_subsample(rng, len(Y), min(len(Y), cap))]
    n, m = len(X), len(Y)
    if n < 2 or m < 2:
        raise ValueError(f"need at least 2 objects per set, got {n} and {m}")
    Z = np.vstack([X, Y])
    if bandwidth is None:
        distances = pdist(Z)
        bandwidth = float(np.median(distances[distances > 0])) if np.any(distances > 0) else 1.0
    sq = cdist(Z, Z, "sqeuclidean")
    K = np.exp(-sq / (2.0 * bandwidth ** 2))
    del sq
    total = K.sum()

    def statistic(indicator: np.ndarray) -> np.ndarray:
        """MMD^2 for each column of an (n+m, P) 0/1 matrix marking the 'X' rows."""
        KA = K @ indicator
        s_xx = np.einsum("ij,ij->j", indicator, KA)
        s_xy = KA.sum(axis=0) - s_xx
        s_yy = total - 2.0 * s_xy - s_xx
        return _mmd2_from_sums(s_xx, s_yy, s_xy, n, m)

    observed = float(statistic(np.r_[np.ones(n), np.zeros(m)][:, None])[0])
    null = np.empty(n_permutations)
    for start in range(0, n_permutations, batch):
        size = min(batch, n_permutations - start)
        indicator = np.zeros((n + m, size))
        for j in range(size):
            indicator[rng.permutation(n + m)[:n], j] = 1.0
        null[start:start + size] = statistic(indicator)
    p_value = float((1 + np.sum(null >= observed)) / (1 + n_permutations))
    logger.info("MMD^2 = %.4g (bandwidth %.3g, %d vs %d), permutation p = %.4f",
                observed, bandwidth, n, m, p_value)
    return MMDResult(mmd2=observed, p_value=p_value, bandwidth=bandwidth, n_x=n, n_y=m,
                     n_permutations=n_permutations, null_mmd2=null)


# --------------------------------------------------------------------------- all together
def compare_sets(sim, obs, seed: int = 0, k: int = 8, percentile: float = 95.0,
                 ood_max_samples: int | None = 10_000, classifier: str = "logistic",
                 n_splits: int = 5, c2st_max_samples: int | None = 10_000,
                 mmd_max_samples: int | None = 1000, n_permutations: int = 200) -> dict:
    """All realism measures of a simulated set ``sim`` against an observed set ``obs``.

    Both sets are first standardised with the *observed* set's per-dimension mean/std
    (the observed set is the fixed reference, so both OOD directions and the MMD live in
    the same space). Returns a dict of result objects (each has ``.summary()``):

    - ``"ood_sim"``: `ood_score` with A = sim, B = obs (which simulated objects have
      observed counterparts: the direction of the headline figure of Eisert et al. 2024,
      the fraction of TNG galaxies that align with HSC ones);
    - ``"ood_obs"``: `ood_score` with A = obs, B = sim (which observed objects the
      simulation reproduces);
    - ``"c2st"``: `classifier_two_sample_test` of sim (label 0) vs obs (label 1);
    - ``"mmd"``: `mmd_test` of sim vs obs.

    `summarise` turns it into a flat dict of floats for metrics.json.
    """
    sim = np.asarray(sim, dtype=np.float64)
    obs = np.asarray(obs, dtype=np.float64)
    mean, std = standardisation(obs)
    sim_s, obs_s = (sim - mean) / std, (obs - mean) / std
    return {
        "ood_sim": ood_score(sim_s, obs_s, k=k, percentile=percentile, standardise=None,
                             max_samples=ood_max_samples, seed=seed),
        "ood_obs": ood_score(obs_s, sim_s, k=k, percentile=percentile, standardise=None,
                             max_samples=ood_max_samples, seed=seed),
        "c2st": classifier_two_sample_test(sim_s, obs_s, classifier=classifier,
                                           n_splits=n_splits, max_samples=c2st_max_samples,
                                           seed=seed),
        "mmd": mmd_test(sim_s, obs_s, n_permutations=n_permutations,
                        max_samples=mmd_max_samples, seed=seed),
    }


def summarise(comparison: dict) -> dict:
    """Flatten a `compare_sets` result into ``{"<measure>.<quantity>": scalar}``."""
    return {f"{name}.{key}": value for name, result in comparison.items()
            for key, value in result.summary().items()}
