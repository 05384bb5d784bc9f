"""The real TNG-Cluster cool-core catalogue (Lehle et al. 2024) and its mock counterpart.

The real file ``CCcriteria.hdf5`` holds ``HaloIDs`` (352,) and, per criterion, a (352, 100)
array over snapshots plus a ``_flag`` twin (0 = strong cool core, 1 = weak, 2 = non-cool
core). The mock universe draws rows of it for its clusters and writes the same structure,
with ``HaloIDs`` replaced by the mock group indices, to ``MockTNG-Cluster/postprocessing/``.
The file is read by the pipeline's reader, :meth:`TNG.cccriteria.CCCriteria.read_all`.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from TNG.cccriteria import CCCriteria


def read_real_cc_criteria(path: Path) -> dict[str, np.ndarray]:
    """All datasets of the real file, checked by the pipeline's reader; a missing file
    names the settings that point the mock at it."""
    reader = CCCriteria(path)
    if not reader.exists():
        raise FileNotFoundError(
            f"TNG-Cluster cool-core catalogue not found: {reader.path} (expected the real "
            "CCcriteria.hdf5, shipped as data/tng_cluster/CCcriteria.hdf5; set CC_CRITERIA or "
            "pass cc_criteria_path=…)")
    return reader.read_all()


def usable_rows(cc: dict, snap: int) -> np.ndarray:
    """Rows whose central cooling time and entropy are finite at ``snap``."""
    ok = np.isfinite(cc["centralCoolingTime"][:, snap]) & np.isfinite(cc["centralEntropy"][:, snap])
    return np.flatnonzero(ok)


def draw_rows(rng: np.random.Generator, rows_ok: np.ndarray, n: int,
              source: str = "the cool-core catalogue") -> np.ndarray:
    """``n`` rows of ``rows_ok`` in random order: each at most once while ``n`` allows it
    (the demo uses every usable row once), otherwise drawn with replacement.

    With replacement the clusters are still independent draws, from the empirical
    distribution of the real catalogue: each gets its own mass, shape, orientation and
    noise, and shares only its (t_cool, K0) pair with the other draws of its row. The
    posterior stage's X-ray calibration test needs that many more clusters than the 352
    real rows (bench.posterior_universe). ``source`` names the file (and snapshot) in the
    error when no row is usable.
    """
    rows_ok = np.asarray(rows_ok)
    if len(rows_ok) == 0:
        raise ValueError(f"no usable rows in {source}: every row's centralCoolingTime or "
                         "centralEntropy is NaN there, so no mock cluster can take a real "
                         "(t_cool, K0) pair; point CC_CRITERIA at the real CCcriteria.hdf5")
    if n <= len(rows_ok):
        rows = np.sort(rng.choice(rows_ok, n, replace=False))
        return rows[rng.permutation(len(rows))]
    return rng.choice(rows_ok, n, replace=True)


def write_mock_cc_criteria(path: Path, cc: dict, rows: np.ndarray, halo_ids: np.ndarray) -> Path:
    """Write the selected ``rows`` in the real file's structure with mock ``halo_ids``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("HaloIDs", data=np.asarray(halo_ids, dtype=cc["HaloIDs"].dtype))
        for key, arr in cc.items():
            if key != "HaloIDs":
                f.create_dataset(key, data=arr[rows])
    return path
