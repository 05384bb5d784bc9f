"""Chunk-wise reader of TNG FoF/SubFind group catalogues.

A catalogue is split into ``NumFiles`` chunk files
``<base>/groups_{snap:03d}/fof_subhalo_tab_{snap:03d}.{chunk}.hdf5`` (base =
``<illustris_path>/<SIM>/output``), each with HDF5 groups ``Header``, ``Group`` and
``Subhalo``. Rows of a chunk continue where the previous chunk stopped; a chunk may hold
no subhalos (its ``Subhalo`` group is then empty).

Unlike ``illustris_python.groupcat.loadSubhalos`` (which allocates every requested column
for all objects), this reader reads only the requested columns and, optionally, only the
requested rows: it walks the chunks, selects the rows of each chunk and keeps only the
selection, so a TNG300-size catalogue (~1e7 subhalos) is never in memory at once. The
largest temporary is one column of one chunk.
"""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from TNG import conversions

logger = logging.getLogger(__name__)

#: Object types of a group catalogue: HDF5 group name → Header count prefix.
OBJECT_TYPES = {"Subhalo": "Nsubgroups", "Group": "Ngroups"}

#: At most this many scattered rows of a chunk are read by HDF5 point selection; more are
#: read as one contiguous block (bounded by the chunk size) and indexed in memory.
_MAX_POINT_SELECTION = 1000

#: A column: a dataset name, or (name, k) for component k of an (N, k) dataset (e.g.
#: ("SubhaloMassType", 4) = stars), read without loading the other components.
ColumnSpec = str | tuple[str, int]


def chunk_path(base_path: str | Path, snapshot: int, chunk: int) -> Path:
    """Path of one chunk file of the group catalogue of ``snapshot``."""
    return (Path(base_path) / f"groups_{snapshot:03d}"
            / f"fof_subhalo_tab_{snapshot:03d}.{chunk}.hdf5")


def read_rows(dataset: h5py.Dataset, rows: np.ndarray, component: int | None = None
              ) -> np.ndarray:
    """Rows ``rows`` (any order, repeats allowed) of an HDF5 dataset, optionally one
    component of its second axis.

    Few scattered rows are read by point selection; otherwise the contiguous block
    spanning them, so at most one block of the dataset is held in memory.
    """
    rows = np.asarray(rows, dtype=np.int64)
    tail = () if component is None else (component,)
    if rows.size == 0:
        shape = (0,) + (dataset.shape[1:] if component is None else dataset.shape[2:])
        return np.empty(shape, dtype=dataset.dtype)
    unique, inverse = np.unique(rows, return_inverse=True)
    lo, hi = int(unique[0]), int(unique[-1]) + 1
    if len(unique) <= _MAX_POINT_SELECTION and hi - lo > 4 * len(unique):
        data = dataset[(unique,) + tail]
    else:
        data = dataset[(slice(lo, hi),) + tail][unique - lo]
    return data[inverse]


def _parse_spec(spec: ColumnSpec) -> tuple[str, int | None]:
    if isinstance(spec, str):
        return spec, None
    name, component = spec
    return str(name), int(component)


@dataclass(frozen=True)
class Header:
    """Header attributes of a group catalogue (from chunk 0), with physical helpers."""

    attrs: Mapping[str, object]
    path: Path

    def __getitem__(self, key: str):
        try:
            return self.attrs[key]
        except KeyError:
            raise KeyError(f"Header attribute {key!r} not in {self.path} "
                           f"(has: {sorted(self.attrs)})") from None

    @property
    def redshift(self) -> float:
        """Redshift of the snapshot (``Redshift``)."""
        return float(self["Redshift"])

    @property
    def time(self) -> float:
        """``Time`` attribute (the scale factor for cosmological runs)."""
        return float(self["Time"])

    @property
    def scale_factor(self) -> float:
        """Scale factor a = ``Time`` (checked against 1/(1+Redshift))."""
        return conversions.scale_factor(self.time, self.redshift)

    @property
    def hubble_param(self) -> float:
        """h (``HubbleParam``); H0 = 100 h km/s/Mpc."""
        return float(self["HubbleParam"])

    @property
    def omega0(self) -> float:
        return float(self["Omega0"])

    @property
    def omega_lambda(self) -> float:
        return float(self["OmegaLambda"])

    @property
    def box_size(self) -> float:
        """Box side [ckpc/h]."""
        return float(self["BoxSize"])

    @property
    def num_files(self) -> int:
        return int(self["NumFiles"])

    def total(self, object_type: str) -> int:
        """Number of objects of ``object_type`` ("Subhalo" or "Group") in the catalogue."""
        return int(self[f"{_prefix(object_type)}_Total"])

    def cosmology(self):
        """The simulation's flat ΛCDM (from HubbleParam and Omega0)."""
        return conversions.cosmology(self.hubble_param, self.omega0)


def _prefix(object_type: str) -> str:
    try:
        return OBJECT_TYPES[object_type]
    except KeyError:
        raise ValueError(f"object type {object_type!r}: expected one of "
                         f"{sorted(OBJECT_TYPES)}") from None


class GroupCatalogue:
    """Reader of one snapshot's group catalogue, chunk by chunk.

    Parameters
    ----------
    base_path : the simulation's ``output`` directory (``<illustris_path>/<SIM>/output``),
        as for ``illustris_python``.
    snapshot : snapshot number.
    """

    def __init__(self, base_path: str | Path, snapshot: int):
        self.base_path = Path(base_path)
        self.snapshot = int(snapshot)
        self._header: Header | None = None
        self._ranges: dict[str, list[tuple[int, int]]] = {}
        self._meta: dict[tuple[str, str], tuple[np.dtype, tuple[int, ...]]] = {}

    def __repr__(self) -> str:
        return f"GroupCatalogue({str(self.base_path)!r}, snapshot={self.snapshot})"

    def chunk_path(self, chunk: int) -> Path:
        return chunk_path(self.base_path, self.snapshot, chunk)

    def _open(self, chunk: int) -> h5py.File:
        path = self.chunk_path(chunk)
        if not path.is_file():
            n = f" of {self._header.num_files}" if self._header is not None else ""
            raise FileNotFoundError(
                f"group catalogue chunk {chunk}{n} missing: {path} (expected TNG layout "
                "<illustris_path>/<SIM>/output/groups_SSS/fof_subhalo_tab_SSS.C.hdf5)")
        return h5py.File(path, "r")

    @property
    def header(self) -> Header:
        """Header of chunk 0 (Redshift, Time, HubbleParam, counts, …)."""
        if self._header is None:
            with self._open(0) as f:
                if "Header" not in f:
                    raise KeyError(f"no 'Header' group in {self.chunk_path(0)}")
                attrs = {k: (v.item() if isinstance(v, np.generic) else v)
                         for k, v in f["Header"].attrs.items()}
            self._header = Header(attrs, self.chunk_path(0))
        return self._header

    def count(self, object_type: str) -> int:
        """Total number of subhalos ("Subhalo") or FoF groups ("Group")."""
        return self.header.total(object_type)

    def chunk_ranges(self, object_type: str) -> list[tuple[int, int]]:
        """[start, stop) row range of every chunk (from each chunk's ``N*_ThisFile``)."""
        if object_type not in self._ranges:
            key = f"{_prefix(object_type)}_ThisFile"
            ranges, start = [], 0
            for chunk in range(self.header.num_files):
                with self._open(chunk) as f:
                    n = int(f["Header"].attrs[key])
                ranges.append((start, start + n))
                start += n
            total = self.count(object_type)
            if start != total:
                raise ValueError(
                    f"{self.base_path / f'groups_{self.snapshot:03d}'}: sum of {key} over "
                    f"{len(ranges)} chunks is {start}, Header {_prefix(object_type)}_Total "
                    f"is {total}")
            self._ranges[object_type] = ranges
        return self._ranges[object_type]

    def _dataset(self, f: h5py.File, chunk: int, object_type: str, name: str
                 ) -> h5py.Dataset:
        group = f.get(object_type)
        if group is None or name not in group:
            have = sorted(group.keys()) if group is not None else []
            raise KeyError(f"column {object_type}/{name} not in {self.chunk_path(chunk)} "
                           f"(has: {have})")
        return group[name]

    def column_info(self, object_type: str, name: str) -> tuple[np.dtype, tuple[int, ...]]:
        """dtype and per-row shape of a column (from the first chunk holding rows)."""
        key = (object_type, name)
        if key not in self._meta:
            for chunk, (start, stop) in enumerate(self.chunk_ranges(object_type)):
                if stop > start:
                    with self._open(chunk) as f:
                        ds = self._dataset(f, chunk, object_type, name)
                        self._meta[key] = (ds.dtype, tuple(ds.shape[1:]))
                    break
            else:
                raise ValueError(f"{self!r} holds no {object_type} rows to read {name} from")
        return self._meta[key]

    def columns(self, object_type: str) -> list[str]:
        """Names of the columns of ``object_type`` (from the first chunk holding rows)."""
        for chunk, (start, stop) in enumerate(self.chunk_ranges(object_type)):
            if stop > start:
                with self._open(chunk) as f:
                    return sorted(f[object_type].keys())
        return []

    def read(self, object_type: str, columns: Sequence[ColumnSpec],
             rows: Sequence[int] | np.ndarray | None = None) -> dict[ColumnSpec, np.ndarray]:
        """Read ``columns`` of ``object_type`` ("Subhalo" or "Group").

        ``rows`` (optional): row indices (= subhalo or group ids), any order, repeats
        allowed; the result follows that order. Without ``rows`` every row is read (of the
        requested columns only). A column is a dataset name or ``(name, k)`` for component
        ``k`` of an (N, k) dataset. Values are the raw catalogue values (code units).
        """
        specs = list(dict.fromkeys(columns))
        total = self.count(object_type)
        if rows is not None:
            rows = np.asarray(rows, dtype=np.int64).ravel()
            bad = (rows < 0) | (rows >= total)
            if np.any(bad):
                raise IndexError(f"{object_type} ids {rows[bad][:5].tolist()} out of range "
                                 f"[0, {total}) of {self!r}")
        n_out = total if rows is None else len(rows)
        out: dict[ColumnSpec, np.ndarray] = {}
        parsed = {spec: _parse_spec(spec) for spec in specs}
        for spec, (name, component) in parsed.items():
            dtype, shape = self.column_info(object_type, name) if total else (np.float64, ())
            if component is not None:
                if not shape or not 0 <= component < shape[0]:
                    raise IndexError(f"column {object_type}/{name} has per-row shape {shape}; "
                                     f"component {component} does not exist")
                shape = shape[1:]
            out[spec] = np.empty((n_out,) + shape, dtype=dtype)
        if not specs or n_out == 0:
            return out
        ranges = self.chunk_ranges(object_type)
        for chunk, (start, stop) in enumerate(tqdm(ranges, desc=f"{object_type} chunks",
                                                   disable=None, leave=False)):
            if stop == start:
                continue
            if rows is None:
                target, local = slice(start, stop), None
            else:
                target = (rows >= start) & (rows < stop)
                if not target.any():
                    continue
                local = rows[target] - start
            with self._open(chunk) as f:
                for spec, (name, component) in parsed.items():
                    ds = self._dataset(f, chunk, object_type, name)
                    if ds.shape[0] != stop - start:
                        raise ValueError(f"{self.chunk_path(chunk)}: {object_type}/{name} has "
                                         f"{ds.shape[0]} rows, Header says {stop - start}")
                    if local is None:
                        tail = () if component is None else (component,)
                        out[spec][target] = ds[(slice(None),) + tail]
                    else:
                        out[spec][target] = read_rows(ds, local, component)
        return out

    def iter_chunks(self, object_type: str, columns: Sequence[ColumnSpec]
                    ) -> Iterator[tuple[int, dict[ColumnSpec, np.ndarray]]]:
        """Yield ``(first_row, {column: values of this chunk})`` chunk by chunk.

        For selections over the whole catalogue (e.g. a stellar-mass cut) without holding
        more than one chunk of the needed columns.
        """
        specs = list(dict.fromkeys(columns))
        ranges = self.chunk_ranges(object_type)
        for chunk, (start, stop) in enumerate(tqdm(ranges, desc=f"{object_type} chunks",
                                                   disable=None, leave=False)):
            if stop == start:
                continue
            with self._open(chunk) as f:
                values = {}
                for spec in specs:
                    name, component = _parse_spec(spec)
                    ds = self._dataset(f, chunk, object_type, name)
                    tail = () if component is None else (component,)
                    values[spec] = ds[(slice(None),) + tail]
            yield start, values
