"""FoF group (halo) reader for X-ray maps of groups and clusters.

``Group`` selects halos of one snapshot by M200c (physical M☉) and computes group-level
FIELDS (``TNG.fields``): M200c, R200c and, from the TNG-Cluster cool-core catalogue
(``TNG.cccriteria``, Lehle et al. 2024), central cooling time, central entropy, X-ray
concentration and the cool-core class.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from TNG import conversions, fields as F
from TNG.catalogue import FieldCatalogue
from TNG.cccriteria import CCCriteria

logger = logging.getLogger(__name__)

#: File name of the cool-core criteria under ``postprocessing/``.
CC_CRITERIA_FILE = "CCcriteria.hdf5"


class Group(FieldCatalogue):
    """Halos of one snapshot from the FoF group catalogue (+ CCcriteria).

    Parameters
    ----------
    base_path : ``<illustris_path>/<SIM>/output``.
    snapshot : snapshot number.
    cc_criteria_path : the ``CCcriteria.hdf5`` file; default
        ``<base_path>/../postprocessing/CCcriteria.hdf5``. Its ``HaloIDs`` are FoF group
        ids of this catalogue; halos it does not list get NaN in the CC FIELDS.
    """

    level = "group"
    object_type = "Group"
    sources = frozenset({F.GROUP, F.CC_CRITERIA})

    def __init__(self, base_path: str | Path, snapshot: int,
                 cc_criteria_path: str | Path | None = None):
        super().__init__(base_path, snapshot)
        self.cc_criteria = CCCriteria(cc_criteria_path if cc_criteria_path is not None
                                      else self.postprocessing_path / CC_CRITERIA_FILE)

    def select(self, min_m200c: float | None = None, max_m200c: float | None = None,
               ids=None) -> np.ndarray:
        """Ids of FoF groups with M200c (Group_M_Crit200, physical M☉) in
        [min_m200c, max_m200c]; ``ids`` (optional) restricts to these groups, in order."""
        h = self.header.hubble_param
        lo = -np.inf if min_m200c is None else float(min_m200c)
        hi = np.inf if max_m200c is None else float(max_m200c)
        if lo > hi:
            raise ValueError(f"min_m200c {lo:g} > max_m200c {hi:g} [M☉]")

        def keep(values) -> np.ndarray:
            m200c = conversions.mass_to_msun(values["Group_M_Crit200"], h)
            return (m200c >= lo) & (m200c <= hi)

        if ids is not None:
            ids = self._validate_ids(ids)
            selected = ids[keep(self.groupcat.read("Group", ["Group_M_Crit200"], ids))]
            n_in = len(ids)
        else:
            parts = [start + np.flatnonzero(keep(values))
                     for start, values in self.groupcat.iter_chunks("Group", ["Group_M_Crit200"])]
            selected = np.concatenate(parts) if parts else np.empty(0, np.int64)
            n_in = self.count
        logger.info("%r: %d of %d groups with %g ≤ M200c/M☉ ≤ %g", self, len(selected), n_in,
                    lo, hi)
        return selected.astype(np.int64)

    def _load_source(self, source, requirements, ids, needed_by):
        if source == F.GROUP:
            return self._read_groupcat("Group", requirements, ids)
        if source == F.CC_CRITERIA:
            if not self.cc_criteria.exists():
                raise FileNotFoundError(f"FIELD(s) {needed_by} need the cool-core criteria "
                                        f"catalogue {self.cc_criteria.path}, which does not exist")
            values = self.cc_criteria.read([r.name for r in requirements], ids, self.snapshot)
            return {r: values[r.name] for r in requirements}
        return super()._load_source(source, requirements, ids, needed_by)
