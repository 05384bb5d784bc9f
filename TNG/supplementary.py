"""Per-subhalo supplementary catalogues of TNG (one HDF5 file per snapshot).

Files under ``<illustris_path>/<SIM>/postprocessing/`` whose datasets are arrays indexed
by subhalo id (length ``Nsubgroups_Total``):

- ``StellarAssembly/stars_{snap:03d}.hdf5``: ``StellarMassExSitu``, ``StellarMassInSitu``
  (1e10 M☉/h), Rodriguez-Gomez et al. (2016);
- ``MergerHistory/MergerHistory_{snap:03d}.hdf5``: ``SnapNumLastMajorMerger`` (−1 =
  never), ``MassLastMajorMerger`` (1e10 M☉/h), …;
- ``SubLink/RootDescendant_{snap:03d}.hdf5``: ``RootDescendantID`` (int64), a flattened
  export of SubLink's RootDescendantID (the same galaxy at different snapshots shares it).
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np

from TNG.groupcat import read_rows

logger = logging.getLogger(__name__)

#: Catalogue kind → file path template relative to ``postprocessing/``.
SUPPLEMENTARY_FILES = {
    "stellar_assembly": "StellarAssembly/stars_{snap:03d}.hdf5",
    "merger_history": "MergerHistory/MergerHistory_{snap:03d}.hdf5",
    "root_descendant": "SubLink/RootDescendant_{snap:03d}.hdf5",
}


def supplementary_path(postprocessing_path: str | Path, kind: str, snapshot: int) -> Path:
    """Path of the ``kind`` catalogue (see ``SUPPLEMENTARY_FILES``) of ``snapshot``."""
    try:
        template = SUPPLEMENTARY_FILES[kind]
    except KeyError:
        raise ValueError(f"supplementary catalogue {kind!r}: expected one of "
                         f"{sorted(SUPPLEMENTARY_FILES)}") from None
    return Path(postprocessing_path) / template.format(snap=int(snapshot))


class SupplementaryCatalogue:
    """One supplementary file whose datasets are indexed by subhalo id.

    ``n_subhalos`` (optional, the group catalogue's ``Nsubgroups_Total``) is checked
    against each dataset's length; a difference is logged, ids beyond a dataset raise.
    """

    def __init__(self, path: str | Path, n_subhalos: int | None = None):
        self.path = Path(path)
        self.n_subhalos = n_subhalos

    def __repr__(self) -> str:
        return f"SupplementaryCatalogue({str(self.path)!r})"

    def exists(self) -> bool:
        return self.path.is_file()

    def read(self, names: Sequence[str], ids: np.ndarray) -> dict[str, np.ndarray]:
        """Datasets ``names`` at rows ``ids`` (any order), raw values."""
        if not self.exists():
            raise FileNotFoundError(f"supplementary catalogue {self.path} does not exist")
        ids = np.asarray(ids, dtype=np.int64).ravel()
        out = {}
        with h5py.File(self.path, "r") as f:
            for name in dict.fromkeys(names):
                if name not in f:
                    raise KeyError(f"dataset {name!r} not in {self.path} "
                                   f"(has: {sorted(f.keys())})")
                ds = f[name]
                if self.n_subhalos is not None and ds.shape[0] != self.n_subhalos:
                    logger.warning("%s: %s has %d rows, the group catalogue %d subhalos",
                                   self.path, name, ds.shape[0], self.n_subhalos)
                if ids.size and (ids.min() < 0 or ids.max() >= ds.shape[0]):
                    raise IndexError(f"subhalo ids outside [0, {ds.shape[0]}) of "
                                     f"{self.path}:{name}")
                out[name] = read_rows(ds, ids)
        return out
