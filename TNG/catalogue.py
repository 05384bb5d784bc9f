"""Common machinery of the FIELD readers (:class:`TNG.Subhalo`, :class:`TNG.Group`, …).

A reader knows which raw *sources* it can load (see ``TNG.fields``); ``fields(names,
ids)`` gathers the requirements of the requested FIELDS, loads each needed raw column once
for the requested ids only, and computes the FIELDS into a DataFrame indexed by id.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from TNG.fields import FIELDS, Field, FieldInputs, Requirement, UnknownFieldError, available_fields
from TNG.groupcat import GroupCatalogue, Header

logger = logging.getLogger(__name__)


class FieldCatalogue:
    """Base of the readers: one snapshot of one simulation.

    Subclasses set ``level`` ("subhalo" or "group"), ``object_type`` ("Subhalo" or
    "Group"), ``sources`` and implement ``_load_source`` and ``select``.

    Parameters
    ----------
    base_path : the simulation's ``output`` directory (``<illustris_path>/<SIM>/output``).
    snapshot : snapshot number.
    """

    level = ""
    object_type = ""
    sources: frozenset[str] = frozenset()

    def __init__(self, base_path: str | Path, snapshot: int):
        self.base_path = Path(base_path)
        self.snapshot = int(snapshot)
        self.groupcat = GroupCatalogue(self.base_path, self.snapshot)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.base_path)!r}, snapshot={self.snapshot})"

    @classmethod
    def from_simulation(cls, illustris_path: str | Path, simulation: str, snapshot: int,
                        **kwargs):
        """Reader for ``<illustris_path>/<simulation>/output`` (TNG archive layout)."""
        return cls(Path(illustris_path) / simulation / "output", snapshot, **kwargs)

    @property
    def postprocessing_path(self) -> Path:
        """``<illustris_path>/<SIM>/postprocessing`` (sibling of ``output``)."""
        return self.base_path.parent / "postprocessing"

    @property
    def header(self) -> Header:
        return self.groupcat.header

    @property
    def count(self) -> int:
        """Number of objects (subhalos or groups) in the catalogue."""
        return self.groupcat.count(self.object_type)

    def available_fields(self) -> list[str]:
        """FIELDS this reader can compute (see ``TNG.fields.describe``)."""
        return available_fields(self.level, self.sources)

    def _resolve(self, names: Sequence[str]) -> list[Field]:
        available = set(self.available_fields())
        unknown = [n for n in names if n not in available]
        if unknown:
            elsewhere = {}
            for n in unknown:
                if n in FIELDS:
                    f = FIELDS[n]
                    missing = sorted(f.sources - self.sources)
                    elsewhere[n] = (f"a {f.level}-level reader" if f.level not in
                                    (self.level, "any") else f"a reader with sources {missing}")
            raise UnknownFieldError(unknown, available, repr(self), elsewhere)
        return [FIELDS[n] for n in names]

    def _validate_ids(self, ids) -> np.ndarray:
        ids = np.asarray(ids).ravel()
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            if not np.all(np.mod(ids, 1) == 0):
                raise TypeError(f"{self.level} ids must be integers, got {ids.dtype}")
        ids = ids.astype(np.int64)
        n = self.count
        bad = (ids < 0) | (ids >= n)
        if np.any(bad):
            raise IndexError(f"{self.level} ids {ids[bad][:5].tolist()} outside [0, {n}) of "
                             f"{self!r}")
        return ids

    def select(self, ids=None) -> np.ndarray:
        """Ids of the objects passing the reader's selection (subclasses add cuts)."""
        raise NotImplementedError

    def fields(self, names: str | Iterable[str], ids=None) -> pd.DataFrame:
        """FIELDS ``names`` for objects ``ids`` (default: ``select()``), as a DataFrame.

        Index: the ids (named ``subhalo_id`` or ``group_id``), in the given order; one
        column per requested FIELD, in the given order (an id FIELD, if requested, is also
        a column). Only the raw columns the FIELDS declare are read.
        """
        names = [names] if isinstance(names, str) else list(dict.fromkeys(names))
        fields = self._resolve(names)
        ids = self.select() if ids is None else self._validate_ids(ids)
        by_source: dict[str, list[Requirement]] = defaultdict(list)
        needed_by: dict[str, list[str]] = defaultdict(list)
        for f in fields:
            for r in f.requires:
                if r not in by_source[r.source]:
                    by_source[r.source].append(r)
                if f.name not in needed_by[r.source]:
                    needed_by[r.source].append(f.name)
        columns: dict[Requirement, np.ndarray] = {}
        for source, requirements in by_source.items():
            columns.update(self._load_source(source, requirements, ids, needed_by[source]))
        header = self.header
        inputs = FieldInputs(ids=ids, snapshot=self.snapshot, redshift=header.redshift,
                             scale_factor=header.scale_factor,
                             hubble_param=header.hubble_param,
                             cosmology=header.cosmology(), columns=columns)
        data = {f.name: f.compute(inputs) for f in fields}
        logger.info("%r: %d FIELDS for %d %ss (sources: %s)", self, len(fields), len(ids),
                    self.level, sorted(by_source) or ["header"])
        return pd.DataFrame(data, index=pd.Index(ids, name=f"{self.level}_id"),
                            columns=names)

    def _load_source(self, source: str, requirements: list[Requirement], ids: np.ndarray,
                     needed_by: list[str]) -> dict[Requirement, np.ndarray]:
        """Raw columns ``requirements`` of ``source`` for ``ids``."""
        raise ValueError(f"{type(self).__name__} cannot load source {source!r} "
                         f"(needed by {needed_by})")

    def _read_groupcat(self, object_type: str, requirements: list[Requirement],
                       rows: np.ndarray) -> dict[Requirement, np.ndarray]:
        specs = [r.name if r.component is None else (r.name, r.component)
                 for r in requirements]
        values = self.groupcat.read(object_type, specs, rows)
        return {r: values[s] for r, s in zip(requirements, specs)}
