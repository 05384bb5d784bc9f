"""Subhalo (galaxy) readers: FoF + SubFind only, and with supplementary catalogues.

``Subhalo`` selects galaxies of one snapshot by stellar mass (physical M☉) among
cosmological subhalos (``SubhaloFlag == 1``; flag 0 marks clumps that SubFind found but
that did not form in a dark-matter halo, e.g. disk fragments, Nelson et al. 2019) and
computes subhalo-level FIELDS (``TNG.fields``) from the group catalogue.
``SubhaloStellar`` adds FIELDS from supplementary catalogues (stellar assembly, merger
history, SubLink root descendants, snapshot redshifts).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from TNG import conversions, fields as F
from TNG.catalogue import FieldCatalogue
from TNG.redshifts import load_snapshot_redshifts
from TNG.supplementary import SupplementaryCatalogue, supplementary_path

logger = logging.getLogger(__name__)


class Subhalo(FieldCatalogue):
    """Galaxies of one snapshot from the FoF/SubFind group catalogue.

    ``Subhalo(base_path, snapshot)`` with ``base_path = <illustris_path>/<SIM>/output``;
    ``select(min_stellar_mass, max_stellar_mass, ids)`` → subhalo ids;
    ``fields(names, ids)`` → DataFrame indexed by ``subhalo_id``.
    """

    level = "subhalo"
    object_type = "Subhalo"
    sources = frozenset({F.SUBHALO, F.PARENT_GROUP})

    def select(self, min_stellar_mass: float | None = None,
               max_stellar_mass: float | None = None, ids=None) -> np.ndarray:
        """Ids of cosmological subhalos (``SubhaloFlag == 1``) whose stellar mass
        (SubhaloMassType[:, 4], physical M☉) lies in [min_stellar_mass, max_stellar_mass].

        ``ids`` (optional) restricts the selection to these subhalos (kept in their order;
        those failing a cut are dropped and counted in the log). Without ``ids`` the
        catalogue is scanned chunk by chunk, holding one chunk of two columns at a time.
        """
        h = self.header.hubble_param
        lo = -np.inf if min_stellar_mass is None else float(min_stellar_mass)
        hi = np.inf if max_stellar_mass is None else float(max_stellar_mass)
        if lo > hi:
            raise ValueError(f"min_stellar_mass {lo:g} > max_stellar_mass {hi:g} [M☉]")
        columns = ["SubhaloFlag", ("SubhaloMassType", F.PARTTYPE_STARS)]

        def keep(values) -> np.ndarray:
            mstar = conversions.mass_to_msun(values[columns[1]], h)
            return (values["SubhaloFlag"] == 1) & (mstar >= lo) & (mstar <= hi)

        if ids is not None:
            ids = self._validate_ids(ids)
            selected = ids[keep(self.groupcat.read(self.object_type, columns, ids))]
            n_in = len(ids)
        else:
            parts = [start + np.flatnonzero(keep(values))
                     for start, values in self.groupcat.iter_chunks(self.object_type, columns)]
            selected = np.concatenate(parts) if parts else np.empty(0, np.int64)
            n_in = self.count
        logger.info("%r: %d of %d subhalos with SubhaloFlag==1 and %g ≤ M⋆/M☉ ≤ %g",
                    self, len(selected), n_in, lo, hi)
        return selected.astype(np.int64)

    def _load_source(self, source, requirements, ids, needed_by):
        if source == F.SUBHALO:
            return self._read_groupcat("Subhalo", requirements, ids)
        if source == F.PARENT_GROUP:
            grnr = self.groupcat.read("Subhalo", ["SubhaloGrNr"], ids)["SubhaloGrNr"]
            grnr = grnr.astype(np.int64)
            has_parent = grnr >= 0
            values = self._read_groupcat("Group", requirements, grnr[has_parent])
            out = {}
            for r, v in values.items():
                fill = -1 if np.issubdtype(v.dtype, np.integer) else np.nan
                full = np.full((len(ids),) + v.shape[1:], fill, dtype=v.dtype)
                full[has_parent] = v
                out[r] = full
            return out
        return super()._load_source(source, requirements, ids, needed_by)


class SubhaloStellar(Subhalo):
    """``Subhalo`` plus FIELDS from the supplementary catalogues of the snapshot.

    Parameters
    ----------
    base_path, snapshot : as for :class:`Subhalo`.
    snapshot_redshifts_path : the snapshot → redshift table
        (``config.snapshot_redshifts_path``), needed by ``lookback_last_major_merger``.
    postprocessing_path : default ``<base_path>/../postprocessing``.

    Supplementary files are used where present; a FIELD needing an absent one raises
    ``FileNotFoundError`` naming the file (``present()`` tells which exist).
    """

    sources = Subhalo.sources | {F.STELLAR_ASSEMBLY, F.MERGER_HISTORY, F.ROOT_DESCENDANT,
                                 F.SNAPSHOT_REDSHIFTS}

    def __init__(self, base_path: str | Path, snapshot: int,
                 snapshot_redshifts_path: str | Path | None = None,
                 postprocessing_path: str | Path | None = None):
        super().__init__(base_path, snapshot)
        self.snapshot_redshifts_path = (None if snapshot_redshifts_path is None
                                        else Path(snapshot_redshifts_path))
        self._postprocessing_path = (None if postprocessing_path is None
                                     else Path(postprocessing_path))

    @property
    def postprocessing_path(self) -> Path:
        return self._postprocessing_path or super().postprocessing_path

    def supplementary(self, kind: str) -> SupplementaryCatalogue:
        """Reader of supplementary catalogue ``kind`` ("stellar_assembly", …)."""
        return SupplementaryCatalogue(
            supplementary_path(self.postprocessing_path, kind, self.snapshot), self.count)

    def present(self) -> dict[str, bool]:
        """Which supplementary catalogues exist for this snapshot."""
        return {kind: self.supplementary(kind).exists()
                for kind in (F.STELLAR_ASSEMBLY, F.MERGER_HISTORY, F.ROOT_DESCENDANT)}

    def _load_source(self, source, requirements, ids, needed_by):
        if source in (F.STELLAR_ASSEMBLY, F.MERGER_HISTORY, F.ROOT_DESCENDANT):
            catalogue = self.supplementary(source)
            if not catalogue.exists():
                raise FileNotFoundError(
                    f"FIELD(s) {needed_by} need the {source} catalogue {catalogue.path}, "
                    "which does not exist")
            values = catalogue.read([r.name for r in requirements], ids)
            return {r: values[r.name] for r in requirements}
        if source == F.SNAPSHOT_REDSHIFTS:
            if self.snapshot_redshifts_path is None:
                raise ValueError(f"FIELD(s) {needed_by} need the snapshot→redshift table: "
                                 "pass snapshot_redshifts_path (config.snapshot_redshifts_path)")
            table = load_snapshot_redshifts(self.snapshot_redshifts_path)
            if self.snapshot < len(table) and abs(table[self.snapshot]
                                                  - self.header.redshift) > 1e-3:
                logger.warning("%s gives z=%g for snapshot %d, the catalogue Header z=%g",
                               self.snapshot_redshifts_path, table[self.snapshot],
                               self.snapshot, self.header.redshift)
            return {r: table for r in requirements}
        return super()._load_source(source, requirements, ids, needed_by)

