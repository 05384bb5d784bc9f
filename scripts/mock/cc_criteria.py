"""The real TNG-Cluster cool-core catalogue (Lehle et al. 2024) and its mock counterpart.

The real file ``CCcriteria.hdf5`` holds ``HaloIDs`` (352,) and, per criterion, a (352, 100)
array over snapshots plus a ``_flag`` twin (0 = strong cool core, 1 = weak, 2 = non-cool
core). The mock universe draws rows of it for its clusters and writes the same structure,
with ``HaloIDs`` replaced by the mock group indices, to ``MockTNG-Cluster/postprocessing/``.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

CRITERIA = ("centralCoolingTime", "centralEntropy", "centraleNumDens", "concentrationPhys",
            "concentrationScaled", "slopeeNumDens")


def read_cc_criteria(path: Path) -> dict[str, np.ndarray]:
    """All datasets of a CCcriteria file; checks the structure the mock relies on."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"TNG-Cluster cool-core catalogue not found: {path} (expected the real CCcriteria.hdf5, "
            "shipped as data/tng_cluster/CCcriteria.hdf5; set CC_CRITERIA or pass cc_criteria_path=…)")
    with h5py.File(path, "r") as f:
        data = {key: f[key][()] for key in f.keys()}
    need = ["HaloIDs", *CRITERIA, *(c + "_flag" for c in CRITERIA)]
    missing = [k for k in need if k not in data]
    if missing:
        raise KeyError(f"{path}: missing datasets {missing}; expected {need}")
    n = len(data["HaloIDs"])
    for key in need[1:]:
        if data[key].ndim != 2 or data[key].shape[0] != n:
            raise ValueError(f"{path}: dataset {key} has shape {data[key].shape}, expected ({n}, n_snapshots)")
    return data


def usable_rows(cc: dict, snap: int) -> np.ndarray:
    """Rows whose central cooling time and entropy are finite at ``snap``."""
    ok = np.isfinite(cc["centralCoolingTime"][:, snap]) & np.isfinite(cc["centralEntropy"][:, snap])
    return np.flatnonzero(ok)


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
