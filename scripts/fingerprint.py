"""Fingerprints: short content hashes that tie each stage's outputs to the inputs they used.

- `table_fingerprint`: of prepare's split table (which image is in which split), written
  by prepare into ``dataset/prepare_summary.json`` and recorded by train and analyse, so
  a split table that changed under a trained run is noticed (its "test" objects may then
  have been trained on);
- `stores_fingerprint`: of the settings each training set's images were extracted with
  (extract's ``dataset/<DATASET>/fingerprint.txt``), recorded by train, so that a run is
  never resumed on images cropped or measured another way (the split table alone does not
  change when only the extraction does);
- `encoder_fingerprint`: of a trained encoder (architecture, weights, normalisation),
  stored with the representation table so that vectors of one encoder are never compared
  with those of another;
- `file_fingerprint`: of a file's bytes: infer records that of the representation table
  it conditioned on, so a rerun of analyse keeps the posterior numbers only while they
  still describe its representation.

A fingerprint is the first 16 hex digits of a SHA-256: enough to tell versions apart,
short enough to read in a log line.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

#: Columns of the split table that define the splits (identity and assignment).
SPLIT_COLUMNS = ("dataset", "row", "object_id", "snapshot", "projection", "split", "split_group")
#: Where train records the fingerprints of its inputs and of its exported encoder.
RUN_FINGERPRINTS = "fingerprints.json"
PREPARE_SUMMARY = "prepare_summary.json"


def _digest(h) -> str:
    return h.hexdigest()[:16]


def table_fingerprint(table: pd.DataFrame, columns=SPLIT_COLUMNS) -> str:
    """Order-independent hash of the given columns of ``table`` (those present), rows
    sorted by (dataset, row) when both exist."""
    present = [c for c in columns if c in table.columns]
    part = table[present]
    if {"dataset", "row"} <= set(present):
        part = part.sort_values(["dataset", "row"], kind="stable")
    hashed = pd.util.hash_pandas_object(part.astype(str), index=False).to_numpy()
    h = hashlib.sha256(",".join(present).encode())
    h.update(np.ascontiguousarray(hashed).tobytes())
    return _digest(h)


def encoder_fingerprint(encoder, normalisation) -> str:
    """Hash of an encoder's architecture (Keras config), its weights and the normalisation
    applied before it."""
    h = hashlib.sha256(json.dumps(encoder.get_config(), sort_keys=True, default=str).encode())
    for weights in encoder.get_weights():
        array = np.ascontiguousarray(weights)
        h.update(str((array.dtype.str, array.shape)).encode())
        h.update(array.tobytes())
    h.update(json.dumps(normalisation.to_dict(), sort_keys=True, default=str).encode())
    return _digest(h)


def file_fingerprint(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hash of a file's bytes (e.g. the representation table that infer read)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return _digest(h)


def splits_fingerprint(dataset_root: str | Path) -> str | None:
    """The split-table fingerprint prepare recorded in ``dataset/prepare_summary.json``;
    computed from ``dataset/splits.parquet`` for a table written before prepare recorded
    one; None without a split table."""
    summary = Path(dataset_root) / PREPARE_SUMMARY
    if summary.exists():
        recorded = json.loads(summary.read_text()).get("splits_fingerprint")
        if recorded:
            return recorded
    splits = Path(dataset_root) / "splits.parquet"
    return table_fingerprint(pd.read_parquet(splits)) if splits.exists() else None


def read_run_fingerprints(run_dir: str | Path) -> dict:
    """``models/<run>/fingerprints.json`` (empty for a run trained before they existed)."""
    path = Path(run_dir) / RUN_FINGERPRINTS
    return json.loads(path.read_text()) if path.exists() else {}


def update_run_fingerprints(run_dir: str | Path, **values) -> dict:
    """Merge ``values`` into ``models/<run>/fingerprints.json``; returns the new content."""
    path = Path(run_dir) / RUN_FINGERPRINTS
    content = {**read_run_fingerprints(run_dir), **values}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=1) + "\n")
    return content


def check_splits_unchanged(recorded: str | None, current: str | None, what: str) -> bool:
    """Warn (and return False) when ``recorded`` and ``current`` split fingerprints differ."""
    if recorded is None or current is None or recorded == current:
        return True
    logger.warning("dataset/splits.parquet changed since %s (split fingerprint %s, now %s): "
                   "objects now in the validation or test split may have been trained on. "
                   "Retrain (python -m scripts.train with a new train.RUN_NAME) before trusting "
                   "held-out numbers.", what, recorded, current)
    return False


#: Extract's record of the settings a dataset's images were made with.
EXTRACT_FINGERPRINT = "fingerprint.txt"


def stores_fingerprint(dataset_root: str | Path, sets) -> str:
    """Hash of extract's ``fingerprint.txt`` of every set in ``sets`` (a set without one
    counts as such: stores written by other tools)."""
    parts = {}
    for name in sorted(sets):
        path = Path(dataset_root) / name / EXTRACT_FINGERPRINT
        parts[name] = path.read_text() if path.exists() else None
    return _digest(hashlib.sha256(json.dumps(parts, sort_keys=True).encode()))


def check_stores_unchanged(recorded: str | None, current: str, run_dir: str | Path) -> None:
    """Raise ValueError when the run in ``run_dir`` was trained on stores extracted with
    other settings: resuming it would continue a model of other images."""
    if recorded is None or recorded == current:
        return
    raise ValueError(
        f"{run_dir} was trained on images extracted with other settings (stores fingerprint "
        f"{recorded}, now {current}: an extract key such as NEIGHBOURS, IMAGE_SIZE or the crop "
        f"changed, or the extract code did). Resuming it would continue a model of other "
        f"images: delete {run_dir} or set a new train.RUN_NAME to train afresh.")
