"""Cool-core criteria of TNG-Cluster halos (Lehle et al. 2024, supplementary catalogue).

File layout (``CCcriteria.hdf5``): ``HaloIDs`` (N,) FoF group ids, and for each criterion
an (N, 100) array whose **second axis is the snapshot number**, NaN where not measured:

============================  ==================================  =======================
dataset                       meaning                             unit
============================  ==================================  =======================
``centralCoolingTime``        central cooling time t_cool,0       Gyr
``centralEntropy``            central entropy K_0                 keV cm²
``centraleNumDens``           central electron number density     cm⁻³
``concentrationPhys``         X-ray concentration SB(<40 kpc) /   –
                              SB(<400 kpc)
``concentrationScaled``       X-ray concentration SB(<0.04 R500)  –
                              / SB(<0.4 R500)
``slopeeNumDens``             logarithmic slope of n_e at         –
                              0.04 R500 (cuspiness)
============================  ==================================  =======================

Each has a ``<name>_flag`` twin: the Lehle et al. (2024) class of the halo by that
criterion, **0 = strong cool core (SCC), 1 = weak cool core (WCC), 2 = non-cool core
(NCC)**, NaN where the value is NaN. The thresholds, verified on the real TNG-Cluster file
(every flagged value lies inside its interval):

- ``centralCoolingTime``: SCC < 1 Gyr ≤ WCC < 7.7 Gyr ≤ NCC
- ``centralEntropy``: SCC < 22 ≤ WCC < 150 ≤ NCC [keV cm²]
- ``centraleNumDens``: SCC > 1.5e-2 ≥ WCC > 5e-3 ≥ NCC [cm⁻³]
- ``concentrationPhys``: SCC > 0.155 ≥ WCC > 0.075 ≥ NCC
- ``concentrationScaled``: SCC > 0.5 ≥ WCC > 0.2 ≥ NCC
- ``slopeeNumDens``: SCC > 0.75 ≥ WCC > 0.5 ≥ NCC

This reader returns values and flags as stored; the FIELDS built on it
(``TNG.fields``) use the central-cooling-time flag for ``cool_core`` (SCC, t_cool,0 <
1 Gyr) and ``cool_core_class``. Halos absent from ``HaloIDs`` (TNG-Cluster covers only its
352 primary zoom targets) get NaN.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

logger = logging.getLogger(__name__)

#: Lehle et al. (2024) classes encoded in the ``_flag`` datasets.
CC_CLASSES = {0: "SCC", 1: "WCC", 2: "NCC"}

#: Suffix of the flag twin of each criterion.
FLAG_SUFFIX = "_flag"

#: The criteria of the Lehle et al. (2024) file (each with its ``_flag`` twin).
CRITERIA = ("centralCoolingTime", "centralEntropy", "centraleNumDens", "concentrationPhys",
            "concentrationScaled", "slopeeNumDens")


class CCCriteria:
    """Reader of a ``CCcriteria.hdf5`` file (see module docstring for the layout)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._halo_ids: np.ndarray | None = None

    def __repr__(self) -> str:
        return f"CCCriteria({str(self.path)!r})"

    def exists(self) -> bool:
        return self.path.is_file()

    def _open(self) -> h5py.File:
        if not self.exists():
            raise FileNotFoundError(f"cool-core criteria catalogue {self.path} does not exist "
                                    "(TNG-Cluster postprocessing/CCcriteria.hdf5)")
        return h5py.File(self.path, "r")

    @property
    def halo_ids(self) -> np.ndarray:
        """FoF group ids covered by the file (``HaloIDs``)."""
        if self._halo_ids is None:
            with self._open() as f:
                if "HaloIDs" not in f:
                    raise KeyError(f"no 'HaloIDs' dataset in {self.path}")
                self._halo_ids = f["HaloIDs"][()].astype(np.int64)
        return self._halo_ids

    def _checked(self, f: h5py.File, name: str, n_halos: int) -> h5py.Dataset:
        """Dataset ``name`` of the open file, checked to be (n_halos, n_snapshots)."""
        ds = f[name]
        if ds.ndim != 2 or ds.shape[0] != n_halos:
            raise ValueError(f"{self.path}:{name} has shape {ds.shape}; expected "
                             f"({n_halos}, n_snapshots)")
        return ds

    def read_all(self) -> dict[str, np.ndarray]:
        """Every dataset over all snapshots, as stored, for callers that copy whole rows
        (the mock universe). Checks that ``HaloIDs``, each of :data:`CRITERIA` and its
        flag twin are present, the arrays (len(HaloIDs), n_snapshots)."""
        n_halos = len(self.halo_ids)
        need = [*CRITERIA, *(c + FLAG_SUFFIX for c in CRITERIA)]
        with self._open() as f:
            missing = [k for k in need if k not in f]
            if missing:
                raise KeyError(f"{self.path}: missing datasets {missing}; expected "
                               f"HaloIDs and {need}")
            out = {name: self._checked(f, name, n_halos)[()] for name in need}
            out.update({k: f[k][()] for k in f if k not in out})
        return out

    def criteria(self) -> list[str]:
        """Names of the criteria (datasets other than HaloIDs and the flags)."""
        with self._open() as f:
            return sorted(k for k in f if k != "HaloIDs" and not k.endswith(FLAG_SUFFIX))

    def read(self, names: Sequence[str], halo_ids, snapshot: int) -> dict[str, np.ndarray]:
        """Values of datasets ``names`` (criteria or their ``_flag`` twins) at
        ``snapshot`` for the FoF groups ``halo_ids`` (any order); NaN for halos absent
        from the file. float64 arrays of len(halo_ids).
        """
        wanted = np.asarray(halo_ids, dtype=np.int64).ravel()
        file_ids = self.halo_ids
        order = np.argsort(file_ids, kind="stable")
        pos = np.searchsorted(file_ids[order], wanted)
        pos = np.clip(pos, 0, max(len(file_ids) - 1, 0))
        found = (file_ids[order][pos] == wanted) if len(file_ids) else np.zeros(len(wanted), bool)
        rows = order[pos]
        if not found.all():
            logger.info("%d of %d halos not in %s: NaN", int((~found).sum()), len(wanted),
                        self.path)
        out = {}
        with self._open() as f:
            for name in dict.fromkeys(names):
                if name not in f:
                    raise KeyError(f"dataset {name!r} not in {self.path} "
                                   f"(has: {sorted(f.keys())})")
                ds = self._checked(f, name, len(file_ids))
                if not 0 <= snapshot < ds.shape[1]:
                    raise IndexError(f"snapshot {snapshot} outside the snapshot axis "
                                     f"(0..{ds.shape[1] - 1}) of {self.path}:{name}")
                column = ds[:, int(snapshot)].astype(np.float64)
                values = np.full(len(wanted), np.nan)
                values[found] = column[rows[found]]
                out[name] = values
        return out
