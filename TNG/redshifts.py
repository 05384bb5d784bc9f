"""IllustrisTNG snapshot → redshift table.

The table (``config.snapshot_redshifts_path``) is a text file whose line *n* (counting
from 0) is the redshift of snapshot *n*; TNG has 100 snapshots, snapshot 99 is z = 0.
It turns snapshot numbers stored in supplementary catalogues (e.g. the snapshot of the
last major merger) into redshifts and hence times.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


#: Snapshots of every IllustrisTNG run (0 … 99, snapshot 99 is z = 0).
TNG_SNAPSHOTS = 100


def load_snapshot_redshifts(path: str | Path) -> np.ndarray:
    """Read the table: returns z per snapshot (float64, index = snapshot number).

    Checked once here for every reader (catalogue FIELDS and the mock universe): at least
    :data:`TNG_SNAPSHOTS` lines, each one finite non-negative redshift.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"snapshot→redshift table {path} not found (expected one redshift per line, "
            "line n = snapshot n; see config.snapshot_redshifts_path)")
    z = np.loadtxt(path, dtype=np.float64, ndmin=1)
    if z.ndim != 1 or len(z) < TNG_SNAPSHOTS:
        raise ValueError(f"{path}: expected ≥{TNG_SNAPSHOTS} lines with one redshift each "
                         f"(line n = snapshot n), got shape {z.shape}")
    if not np.all(np.isfinite(z)) or np.any(z < 0):
        raise ValueError(f"{path}: expected one finite non-negative redshift per line")
    return z


def snapshot_to_redshift(snapshots, table: np.ndarray) -> np.ndarray:
    """Redshift of each snapshot number; negative numbers (TNG's −1 = "never") and NaN
    → NaN.

    Raises ``IndexError`` for snapshot numbers beyond the table.
    """
    snaps = np.asarray(snapshots, dtype=np.float64)
    out = np.full(snaps.shape, np.nan)
    valid = np.isfinite(snaps) & (snaps >= 0)
    if np.any(snaps[valid] >= len(table)):
        bad = int(np.max(snaps[valid]))
        raise IndexError(f"snapshot {bad} beyond the redshift table ({len(table)} snapshots)")
    out[valid] = table[snaps[valid].astype(np.int64)]
    return out
