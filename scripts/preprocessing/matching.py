"""Match a source sample to a target sample within per-field uncertainty boxes.

Purpose: give two datasets the same distribution of physical properties (e.g. draw, for
every observed HSC galaxy, one simulated galaxy of similar stellar mass and redshift), so
that a representation trained on both cannot tell them apart by those properties alone.

Algorithm (both methods): targets are visited in a random order fixed by ``seed``; each
target takes one source that is still unused and lies inside the box
``|x_s - x_t| <= sigma`` in every matching field; a source is used at most once; a
target with no free source inside its box stays unmatched.

- ``method="uniform"`` (default): the source is drawn uniformly among the free
  candidates in the box. This is the literal "draw within the uncertainties" and keeps
  the matched sample's scatter about the targets at the size of the box. Cost grows
  with the number of candidates per box (sum over targets).
- ``method="nearest"``: the free candidate nearest to the target in the
  uncertainty-scaled Chebyshev distance ``max_i |x_s,i - x_t,i| / sigma_i``. Tighter
  matches; cost nearly independent of the box occupancy.

Implementation: fields are divided by their uncertainty so the box becomes the unit
ball of the Chebyshev (p = inf) norm. A ``scipy.spatial.cKDTree`` on the sources finds,
for a chunk of targets at once, every (target, source) pair inside the box
(``sparse_distance_matrix`` against a tree of the chunk, p = inf, r = 1: uniform) or
the k nearest sources inside the box with k growing where needed (nearest); used
sources are removed by a boolean mask. :func:`match_positions_bruteforce` is the
straightforward O(N_source × N_target) scan with identical semantics and random-number
consumption: it is the reference for tests and the benchmark baseline.

Matching is done per object: with ``group`` (or ``source_group``/``target_group`` where
the two tables identify objects differently, e.g. ``("snapshot", "object_id")`` in a
simulation and ``"object_id"`` in a survey) the rows (e.g. projections) are collapsed to
one row per object first, taking the FIRST row's field values (projections of one
object share their intrinsic properties), and all rows of a matched object follow it.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

logger = logging.getLogger(__name__)

METHODS = ("uniform", "nearest")
_INDEX_KEY = "index"  # key column name when objects are the table's rows (group=None)
_CHUNK = 4096  # targets per batched k-nearest query (method "nearest")
_BOUND = np.nextafter(1.0, 2.0)  # cKDTree.query's upper bound is strict; the box is closed


def _check_scaled(source_xy: np.ndarray, target_xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    source_xy = np.ascontiguousarray(source_xy, dtype=np.float64)
    target_xy = np.ascontiguousarray(target_xy, dtype=np.float64)
    if source_xy.ndim != 2 or target_xy.ndim != 2 or source_xy.shape[1] != target_xy.shape[1]:
        raise ValueError(
            "source and target coordinates must be 2-D arrays with the same number of "
            f"fields; got shapes {source_xy.shape} and {target_xy.shape}"
        )
    if not (np.isfinite(source_xy).all() and np.isfinite(target_xy).all()):
        raise ValueError("scaled coordinates must be finite; drop rows with missing fields first")
    return source_xy, target_xy


def match_positions(
    source_xy: np.ndarray,
    target_xy: np.ndarray,
    seed: int,
    method: str = "uniform",
    workers: int = 1,
) -> np.ndarray:
    """Matched source position for every target, -1 where none (KD-tree version).

    ``source_xy`` (N_s × d) and ``target_xy`` (N_t × d) are already divided by the
    per-field uncertainties, so the match box is ``max_i |s_i - t_i| <= 1``.
    ``workers`` is passed to the k-nearest queries of ``method="nearest"`` (-1: all
    cores); the pair search of ``"uniform"`` is single-threaded.
    """
    if method not in METHODS:
        raise ValueError(f"matching method must be one of {METHODS}; got {method!r}")
    source_xy, target_xy = _check_scaled(source_xy, target_xy)
    n_source, n_target = len(source_xy), len(target_xy)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_target)
    result = np.full(n_target, -1, dtype=np.intp)
    if n_source == 0 or n_target == 0:
        return result
    tree = cKDTree(source_xy)
    used = np.zeros(n_source, dtype=bool)
    if method == "uniform":
        _uniform(tree, target_xy, order, used, result, rng)
    else:
        _nearest(tree, target_xy, order, used, result, workers)
    return result


def _uniform(tree, target_xy, order, used, result, rng, max_pairs: int = 4_000_000) -> None:
    """Uniform draw among free sources in each box, targets in ``order``.

    Targets are processed in chunks; a small tree on each chunk finds all
    (target, source) pairs inside the box in one C-level call
    (``sparse_distance_matrix``), faster than per-target candidate lists. The chunk size
    adapts so that a chunk holds about ``max_pairs`` pairs (bounded memory when boxes
    are crowded). Candidates are sorted by source position, as in the brute-force scan.
    """
    n_source = tree.n
    size, start = 8192, 0
    while start < len(order):
        chunk = order[start:start + size]
        start += len(chunk)
        pairs = cKDTree(target_xy[chunk]).sparse_distance_matrix(
            tree, 1.0, p=np.inf, output_type="ndarray"
        )
        key = pairs["i"].astype(np.int64) * n_source + pairs["j"]
        key.sort()
        target_in_chunk = key // n_source
        flat = key - target_in_chunk * n_source
        offsets = np.searchsorted(target_in_chunk, np.arange(len(chunk) + 1))
        for j, t in enumerate(chunk):
            candidates = flat[offsets[j]:offsets[j + 1]]
            if candidates.size == 0:
                continue
            free = candidates[~used[candidates]]
            if free.size:
                pick = free[rng.integers(free.size)]
                used[pick] = True
                result[t] = pick
        per_target = max(len(key) / len(chunk), 1.0)
        size = int(np.clip(max_pairs / per_target, 256, 65536))


def _nearest(
    tree, target_xy, order, used, result, workers, k_start: int = 8, k_max: int = 1024
) -> None:
    """Nearest free source in each box (scaled Chebyshev distance), targets in ``order``.

    Each chunk of targets asks the tree for its k nearest sources inside the box; a
    target whose k neighbours are all used asks again with 2k. Where sources get
    depleted (more than a tenth of a chunk asking again), k doubles for later chunks,
    up to ``k_max``.
    """
    n_source = tree.n
    k = min(k_start, n_source)
    for start in range(0, len(order), _CHUNK):
        chunk = order[start:start + _CHUNK]
        _, idx = tree.query(
            target_xy[chunk], k=k, p=np.inf, distance_upper_bound=_BOUND, workers=workers
        )
        idx = idx.reshape(len(chunk), k)
        n_again = 0
        for j, t in enumerate(chunk):
            row = idx[j]
            while True:
                inside = row[row < n_source]  # missing neighbours are reported as n_source
                free = inside[~used[inside]]
                if free.size:
                    used[free[0]] = True
                    result[t] = free[0]
                    break
                if inside.size < row.size or row.size >= n_source:
                    break  # the box holds no further source
                n_again += 1
                _, row = tree.query(
                    target_xy[t], k=min(2 * row.size, n_source), p=np.inf,
                    distance_upper_bound=_BOUND,
                )
                row = np.atleast_1d(row)
        if n_again > len(chunk) // 10:
            k = min(2 * k, n_source, max(k_max, k))


def match_positions_bruteforce(
    source_xy: np.ndarray,
    target_xy: np.ndarray,
    seed: int,
    method: str = "uniform",
    n_visits: int | None = None,
) -> np.ndarray:
    """Reference for :func:`match_positions`: scans every source for every target.

    Same visiting order, same candidate order (ascending source position) and same
    random draws, so both give identical matches. O(N_source × N_target); for tests and
    as the benchmark baseline. ``n_visits`` stops after that many targets of the visiting
    order (the others stay -1), which times a subsample exactly as in the full run.
    """
    if method not in METHODS:
        raise ValueError(f"matching method must be one of {METHODS}; got {method!r}")
    source_xy, target_xy = _check_scaled(source_xy, target_xy)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(target_xy))
    result = np.full(len(target_xy), -1, dtype=np.intp)
    used = np.zeros(len(source_xy), dtype=bool)
    columns = np.ascontiguousarray(source_xy.T)  # one contiguous array per field
    distance = np.empty(len(source_xy))
    scratch = np.empty(len(source_xy))
    for t in order[:n_visits]:
        np.abs(np.subtract(columns[0], target_xy[t, 0], out=distance), out=distance)
        for field in range(1, columns.shape[0]):
            np.abs(np.subtract(columns[field], target_xy[t, field], out=scratch), out=scratch)
            np.maximum(distance, scratch, out=distance)
        free = np.flatnonzero((distance <= 1.0) & ~used)
        if free.size == 0:
            continue
        if method == "uniform":
            pick = free[rng.integers(free.size)]
        else:
            pick = free[np.argmin(distance[free])]
        used[pick] = True
        result[t] = pick
    return result


@dataclass(frozen=True)
class MatchResult:
    """Outcome of :func:`match`, one row per target object.

    ``pairs`` columns: the target object key (``target_<col>`` for each target group
    column, or ``target_index`` when rows are the objects), ``matched`` (bool) and the
    matched source object's key ``source_<col>`` (missing where unmatched; integer keys
    use the nullable ``Int64`` dtype). Objects follow the target table's order of first
    appearance.
    """

    pairs: pd.DataFrame
    source_group: tuple[str, ...] | None
    target_group: tuple[str, ...] | None
    source_name: str = "source"
    target_name: str = "target"

    def key_columns(self, side: str) -> list[str]:
        """``pairs`` columns holding the object key of ``side`` ("source" or "target")."""
        group = self.source_group if side == "source" else self.target_group
        return [f"{side}_{c}" for c in (group if group is not None else (_INDEX_KEY,))]

    @property
    def n_matched(self) -> int:
        return int(self.pairs["matched"].sum())

    @property
    def matched_fraction(self) -> float:
        """Matched target objects / all target objects, those with a missing matching
        field included (0.0 when there are none)."""
        return float(self.pairs["matched"].mean()) if len(self.pairs) else 0.0

    def target_rows(self, target: pd.DataFrame) -> pd.DataFrame:
        """Per row of ``target``: ``matched`` and the partner's ``source_<col>`` key(s)."""
        return self._broadcast(target, "target", "source")

    def source_rows(self, source: pd.DataFrame) -> pd.DataFrame:
        """Per row of ``source``: ``matched`` (drawn for some target) and its ``target_<col>``."""
        drawn = self.pairs[self.pairs["matched"]]
        return self._broadcast(source, "source", "target", drawn)

    def _broadcast(self, df, own, other, pairs=None) -> pd.DataFrame:
        pairs = self.pairs if pairs is None else pairs
        own_cols, other_cols = self.key_columns(own), self.key_columns(other)
        keys = _object_keys(df, self.source_group if own == "source" else self.target_group, own)
        lookup = pd.MultiIndex.from_frame(pairs[own_cols])
        position = lookup.get_indexer(pd.MultiIndex.from_frame(keys))
        out = _take_nullable(pairs[other_cols].reset_index(drop=True), position)
        out.index = df.index
        found = position >= 0
        matched = np.zeros(len(df), dtype=bool)
        matched[found] = pairs["matched"].to_numpy()[position[found]]
        out.insert(0, "matched", matched)
        return out


def _object_keys(df: pd.DataFrame, group: tuple[str, ...] | None, side: str) -> pd.DataFrame:
    """Key columns identifying each row's object (the index when ``group`` is None)."""
    if group is None:
        return pd.DataFrame({_INDEX_KEY: df.index.to_numpy()})
    missing = [c for c in group if c not in df.columns]
    if missing:
        raise KeyError(f"group column(s) {missing} not in the {side} table; columns are {list(df.columns)}")
    return df[list(group)].reset_index(drop=True)


def _take_nullable(frame: pd.DataFrame, positions: np.ndarray) -> pd.DataFrame:
    """Rows at ``positions`` (-1: missing), integer key columns as nullable Int64.

    Integer columns become Int64 *before* the take, so missing partners never pass
    through float64 (which would corrupt survey ids above 2**53).
    """
    frame = frame.astype({c: "Int64" for c in frame.columns
                          if pd.api.types.is_integer_dtype(frame[c].dtype)})
    return frame.reindex(positions)


def _uncertainty_vector(
    uncertainties: Sequence[float] | Mapping[str, float],
    source_fields: Sequence[str],
    target_fields: Sequence[str],
) -> np.ndarray:
    if isinstance(uncertainties, Mapping):
        sigma = []
        for s_field, t_field in zip(source_fields, target_fields):
            if t_field in uncertainties:
                sigma.append(uncertainties[t_field])
            elif s_field in uncertainties:
                sigma.append(uncertainties[s_field])
            else:
                raise KeyError(
                    f"no matching uncertainty for field {t_field!r} (source {s_field!r}); "
                    f"given for {list(uncertainties)}"
                )
    else:
        sigma = list(uncertainties)
        if len(sigma) != len(target_fields):
            raise ValueError(
                f"{len(sigma)} uncertainties for {len(target_fields)} matching fields "
                f"{list(target_fields)}"
            )
    sigma = np.asarray(sigma, dtype=np.float64)
    if not (np.isfinite(sigma).all() and (sigma > 0).all()):
        raise ValueError(f"matching uncertainties must be finite and > 0; got {sigma.tolist()}")
    return sigma


def _as_columns(group: str | Sequence[str] | None) -> tuple[str, ...] | None:
    return None if group is None else ((group,) if isinstance(group, str) else tuple(group))


def _collapse(df: pd.DataFrame, group: tuple[str, ...] | None) -> pd.DataFrame:
    """One row per object: the first row of each group, in order of first appearance."""
    if group is None:
        return df
    return df.loc[~df.duplicated(subset=list(group), keep="first")]


def _fields(objects: pd.DataFrame, fields: Sequence[str], side: str, name: str) -> np.ndarray:
    missing = [f for f in fields if f not in objects.columns]
    if missing:
        raise KeyError(
            f"matching field(s) {missing} not in the {side} dataset {name!r}; "
            f"columns are {list(objects.columns)}"
        )
    return objects[list(fields)].to_numpy(dtype=np.float64)


def match(
    source: pd.DataFrame,
    target: pd.DataFrame,
    source_fields: Sequence[str],
    target_fields: Sequence[str],
    uncertainties: Sequence[float] | Mapping[str, float],
    seed: int,
    *,
    group: str | Sequence[str] | None = None,
    source_group: str | Sequence[str] | None = None,
    target_group: str | Sequence[str] | None = None,
    method: str = "uniform",
    source_name: str = "source",
    target_name: str = "target",
    workers: int = 1,
) -> MatchResult:
    """Draw, for every target object, one unused source object within the uncertainties.

    Parameters
    ----------
    source, target : tables with the matching fields (one row per image or per object).
    source_fields, target_fields : matching columns, aligned pairwise (the names may
        differ between datasets, e.g. ``"z"`` in a simulation and ``"photoz"`` observed).
    uncertainties : box half-widths sigma in the fields' units, as a sequence aligned
        with the fields or a mapping keyed by target (or source) field name.
    seed : fixes the target visiting order and the draws.
    group : column(s) identifying an object in both tables (e.g. ``("snapshot",
        "object_id")``); rows are collapsed to the first row of each object. ``None``:
        every row is an object, keyed by the table index.
    source_group, target_group : per-table object keys, overriding ``group``.
    method : ``"uniform"`` or ``"nearest"`` (see the module docstring).
    source_name, target_name : dataset names for log messages.
    workers : cores for the k-nearest queries of ``method="nearest"`` (-1: all).

    Objects with a missing (NaN) matching field take no part: such targets stay
    unmatched and such sources are never drawn. A warning names the pair when nothing
    matched.
    """
    if len(source_fields) != len(target_fields) or not len(target_fields):
        raise ValueError(
            f"source_fields {list(source_fields)} and target_fields {list(target_fields)} "
            "must be non-empty and aligned pairwise"
        )
    src_group = _as_columns(group if source_group is None else source_group)
    tgt_group = _as_columns(group if target_group is None else target_group)
    sigma = _uncertainty_vector(uncertainties, source_fields, target_fields)
    for df, cols, side, name in ((source, src_group, "source", source_name),
                                 (target, tgt_group, "target", target_name)):
        if cols is not None:
            _object_keys(df, cols, f"{side} dataset {name!r}")
    src_obj, tgt_obj = _collapse(source, src_group), _collapse(target, tgt_group)
    src_xy = _fields(src_obj, source_fields, "source", source_name) / sigma
    tgt_xy = _fields(tgt_obj, target_fields, "target", target_name) / sigma
    src_ok, tgt_ok = np.isfinite(src_xy).all(axis=1), np.isfinite(tgt_xy).all(axis=1)
    for ok, name in ((src_ok, source_name), (tgt_ok, target_name)):
        if not ok.all():
            logger.info("%s: %d of %d objects lack a matching field and are left out",
                        name, int((~ok).sum()), len(ok))
    src_positions, tgt_positions = np.flatnonzero(src_ok), np.flatnonzero(tgt_ok)
    picked = match_positions(src_xy[src_ok], tgt_xy[tgt_ok], seed, method, workers)
    source_of_target = np.full(len(tgt_obj), -1, dtype=np.intp)
    hit = picked >= 0
    source_of_target[tgt_positions[hit]] = src_positions[picked[hit]]

    tgt_keys = _object_keys(tgt_obj, tgt_group, "target").add_prefix("target_")
    src_keys = _object_keys(src_obj, src_group, "source").add_prefix("source_")
    partner = _take_nullable(src_keys, source_of_target).reset_index(drop=True)
    pairs = pd.concat([tgt_keys, pd.DataFrame({"matched": source_of_target >= 0}), partner], axis=1)
    result = MatchResult(pairs, src_group, tgt_group, source_name, target_name)
    if len(tgt_obj) and result.n_matched == 0:
        logger.warning(
            "no object of %s matched any object of %s within the uncertainties %s of %s; "
            "check the fields' units or widen the uncertainties",
            target_name, source_name, sigma.tolist(), list(target_fields),
        )
    else:
        logger.info(
            "matched %d of %d objects of %s to %s (fraction %.3f, %s, %d source objects)",
            result.n_matched, len(tgt_obj), target_name, source_name,
            result.matched_fraction, method, len(src_obj),
        )
    return result
