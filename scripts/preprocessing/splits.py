"""Object-aware, identity-seeded train/validation/test splits.

Each split group (an object, or every snapshot of one galaxy sharing a SubLink root
descendant) receives one uniform number ``u`` in [0, 1) from a stable hash of
``(seed, dataset, group key)``. The split follows from cumulative fractions::

    train       if u < f_train
    validation  if u < f_train + f_val
    test        if u < f_train + f_val + f_test
    unused      otherwise

Because ``u`` depends on the object's identity only (not on row order, not on the other
objects in the table), the assignment is reproducible across runs and machines, and
enlarging the test fraction only takes objects out of the "unused" remainder: no object
ever moves between train and validation. Python's built-in ``hash`` is salted per process,
so the hash here is BLAKE2b of a canonical text form of the key.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: Split names, in the order of the cumulative fractions.
TRAIN, VALIDATION, TEST, UNUSED = "train", "validation", "test", "unused"
SPLITS = (TRAIN, VALIDATION, TEST, UNUSED)

#: Catalogue columns used to build the default group key.
OBJECT_ID = "object_id"
ROOT_DESCENDANT_ID = "root_descendant_id"

_SEPARATOR = "\x1f"  # ASCII unit separator: cannot occur in a formatted number or id


def check_fractions(fractions: Sequence[float], dataset: str) -> tuple[float, float, float]:
    """Validate ``(train, validation, test)`` fractions: each in [0, 1], sum ≤ 1."""
    try:
        values = tuple(float(f) for f in fractions)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"split fractions of dataset {dataset!r} must be three numbers "
            f"(train, validation, test); got {fractions!r}"
        ) from err
    if len(values) != 3:
        raise ValueError(
            f"split fractions of dataset {dataset!r} must be three numbers "
            f"(train, validation, test); got {len(values)}: {fractions!r}"
        )
    if any(not np.isfinite(f) or f < 0.0 or f > 1.0 for f in values):
        raise ValueError(
            f"split fractions of dataset {dataset!r} must each lie in [0, 1]; got {values}"
        )
    if sum(values) > 1.0 + 1e-9:
        raise ValueError(
            f"split fractions of dataset {dataset!r} must sum to at most 1 "
            f"(the remainder is 'unused'); got {values}, sum {sum(values):.6g}"
        )
    return values  # type: ignore[return-value]


def _canonical(value) -> str:
    """Text form of one key value that does not depend on its storage dtype.

    ``97``, ``np.int64(97)`` and ``97.0`` (an integer column that passed through a float
    column because of missing values) all give ``"97"``, so a parquet round trip never
    changes a split.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "<NA>"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        value = float(value)
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return str(value)


def uniform_from_keys(keys: Sequence, dataset: str, seed: int) -> np.ndarray:
    """Stable uniform number in [0, 1) per key, from BLAKE2b of ``seed|dataset|key``.

    ``keys`` holds scalars or tuples (several key columns). The first 8 bytes of the
    digest, read as an unsigned integer, are divided by 2**64.
    """
    prefix = f"{int(seed)}{_SEPARATOR}{dataset}{_SEPARATOR}"
    out = np.empty(len(keys), dtype=np.float64)
    for i, key in enumerate(keys):
        parts = key if isinstance(key, tuple) else (key,)
        text = prefix + _SEPARATOR.join(_canonical(p) for p in parts)
        digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
        out[i] = int.from_bytes(digest, "big") / 2.0**64
    return out


def default_group_key(objects: pd.DataFrame, root_descendant_split: bool = True) -> pd.Series:
    """Group key of each row: ``"rd:<root_descendant_id>"`` else ``"id:<object_id>"``.

    The root descendant (SubLink) is used where the catalogue provides it, the switch
    ``root_descendant_split`` is on and the value is valid (not missing, not negative —
    SubLink writes -1 for "none"); other rows fall back to the object id. The prefixes keep
    the two kinds of id from colliding. Keys are per dataset: callers split one dataset at
    a time, because object ids are unique only within a dataset.
    """
    if OBJECT_ID not in objects.columns:
        raise KeyError(
            f"objects table needs an {OBJECT_ID!r} column to build split groups; "
            f"columns are {list(objects.columns)}"
        )
    key = "id:" + objects[OBJECT_ID].map(_canonical)
    if root_descendant_split and ROOT_DESCENDANT_ID in objects.columns:
        rd = pd.to_numeric(objects[ROOT_DESCENDANT_ID], errors="coerce")
        valid = rd.notna() & (rd >= 0)
        key = key.where(~valid, "rd:" + objects[ROOT_DESCENDANT_ID].map(_canonical))
        n_fallback = int((~valid).sum())
        if n_fallback:
            logger.info(
                "%d of %d rows have no valid %s; their split group is the object id",
                n_fallback, len(objects), ROOT_DESCENDANT_ID,
            )
    return key.rename("split_group")


def assign_splits(
    objects: pd.DataFrame,
    dataset: str,
    fractions: Sequence[float],
    seed: int,
    group_key: str | Sequence[str] | None = None,
    root_descendant_split: bool = True,
) -> pd.Series:
    """Split name ("train", "validation", "test" or "unused") of every row of one dataset.

    Parameters
    ----------
    objects : table of one dataset, one row per image.
    dataset : dataset name; part of the hash, so datasets are split independently.
    fractions : ``(train, validation, test)``, each in [0, 1], summing to ≤ 1.
    seed : SPLIT_SEED.
    group_key : column name(s) whose values identify a split group; all rows sharing a
        key land in the same split. ``None`` uses :func:`default_group_key` (root
        descendant where available and ``root_descendant_split`` is true, else object id).

    Returns a string Series named ``"split"`` aligned with ``objects.index``.
    """
    f_train, f_val, f_test = check_fractions(fractions, dataset)
    if group_key is None:
        keys = default_group_key(objects, root_descendant_split)
    else:
        columns = [group_key] if isinstance(group_key, str) else list(group_key)
        missing = [c for c in columns if c not in objects.columns]
        if missing:
            raise KeyError(
                f"split group column(s) {missing} not in the objects table of dataset "
                f"{dataset!r}; columns are {list(objects.columns)}"
            )
        keys = objects[columns[0]] if len(columns) == 1 else pd.Series(
            list(objects[columns].itertuples(index=False, name=None)), index=objects.index
        )
    codes, uniques = pd.factorize(keys, use_na_sentinel=False)
    u = uniform_from_keys(list(uniques), dataset, seed)[codes]
    edges = np.cumsum([f_train, f_val, f_test])
    index = np.searchsorted(edges, u, side="right")  # u < edge[i] → split i
    split = pd.Series(np.asarray(SPLITS, dtype=object)[index], index=objects.index, name="split")
    logger.info(
        "%s: %d rows in %d groups → %s",
        dataset, len(objects), len(uniques),
        ", ".join(f"{s} {int((split == s).sum())}" for s in SPLITS),
    )
    return split


def leaking_groups(groups: pd.Series, split: pd.Series) -> list:
    """Group keys that appear in more than one split (empty when the split is clean)."""
    n_splits = pd.DataFrame({"g": groups, "s": split}).groupby("g", dropna=False)["s"].nunique()
    return list(n_splits.index[n_splits > 1])
