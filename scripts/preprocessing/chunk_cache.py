"""Extract's resumable cache: each finished chunk of processed images is committed to its own
HDF5 file with its records, so an interrupted run resumes from the chunks it finished and
gives the same store as an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from scripts.image_store import IMAGES_KEY
from scripts.preprocessing.image_preprocessing import ImageResult

log = logging.getLogger("extract")


class ChunkCache:
    """Finished chunks of one dataset under ``dataset/<DATASET>/.cache/``.

    A chunk is a pair ``chunk_<hash>.h5`` (images) + ``chunk_<hash>.parquet`` (one record
    per file, with the image's index in the .h5 or a skip reason), written to temporary
    names and renamed, so a kill leaves either a whole chunk or none. The cache is valid
    for one processing fingerprint (bands, cropper, IMAGE_SIZE, code version).
    """

    def __init__(self, root: Path, fingerprint: str):
        self.root = root
        self.fingerprint = fingerprint
        self.marker = root / "fingerprint.txt"

    def open(self, use_cache: bool) -> None:
        if self.root.exists() and (not use_cache or not self.marker.exists()
                                   or self.marker.read_text() != self.fingerprint):
            if use_cache:
                log.info("%s: cache made with other settings; starting afresh", self.root)
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.marker.write_text(self.fingerprint)

    def records(self) -> pd.DataFrame:
        frames = []
        for path in sorted(self.root.glob("chunk_*.parquet")):
            frame = pd.read_parquet(path)
            frame["chunk"] = path.stem
            frames.append(frame)
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def write(self, results: list[ImageResult], stats: dict[str, tuple[int, int]],
              image_shape: tuple[int, ...]) -> pd.DataFrame:
        """Commit one chunk; returns its records (as :meth:`records` would read them)."""
        key = hashlib.sha1("\n".join(r.file for r in results).encode()).hexdigest()[:16]
        images = [r.image for r in results if r.image is not None]
        rows, index = [], 0
        for r in results:
            size, mtime = stats[r.file]
            row = {"file": r.file, "size": size, "mtime_ns": mtime, "reason": r.reason,
                   "detail": r.detail, "index": index if r.image is not None else -1,
                   "record": json.dumps(r.record)}
            index += r.image is not None
            rows.append(row)
        h5_tmp = self.root / f".chunk_{key}.h5.tmp"
        with h5py.File(h5_tmp, "w") as f:
            data = np.stack(images) if images else np.zeros((0,) + image_shape, np.float32)
            f.create_dataset(IMAGES_KEY, data=data)
        os.replace(h5_tmp, self.root / f"chunk_{key}.h5")
        pq_tmp = self.root / f".chunk_{key}.parquet.tmp"
        frame = pd.DataFrame(rows)
        frame.to_parquet(pq_tmp, index=False)
        os.replace(pq_tmp, self.root / f"chunk_{key}.parquet")  # the commit point
        return frame.assign(chunk=f"chunk_{key}")

    def clear(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
