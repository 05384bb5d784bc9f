"""Writers for TNG-layout group catalogues and their supplementary files.

Layout (as the public TNG data and ``illustris_python`` expect it), under ``<sim>/``:

* ``output/groups_{snap:03d}/fof_subhalo_tab_{snap:03d}.{chunk}.hdf5`` — groups
  ``Header`` (attributes Ngroups_ThisFile, Ngroups_Total, Nsubgroups_ThisFile,
  Nsubgroups_Total, NumFiles, Nids_*, Redshift, Time, BoxSize, HubbleParam, Omega0,
  OmegaLambda, …), ``Group`` and ``Subhalo`` with one dataset per field. As in Arepo output,
  each chunk holds a contiguous range of groups and a contiguous range of subhalos, the two
  ranges not aligned; the last chunk carries groups only (an empty ``Subhalo`` group).
* ``postprocessing/offsets/offsets_{snap:03d}.hdf5`` — ``FileOffsets/Group`` and
  ``FileOffsets/Subhalo`` (first index in each chunk; ``illustris_python.loadSingle``).
* supplementary catalogues, one HDF5 file per snapshot with datasets indexed by subhalo id.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from scripts.mock.cosmology import HUBBLE_PARAM, OMEGA_L, OMEGA_M


def chunk_bounds(n: int, num_chunks: int) -> np.ndarray:
    """Start indices (num_chunks + 1 boundaries) splitting ``n`` items into near-equal runs."""
    return np.array([k * n // num_chunks for k in range(num_chunks + 1)], dtype=np.int64)


def header_attrs(snap_redshift: float, box_size: float) -> dict:
    """Header attributes common to every chunk of one snapshot."""
    return {
        "Redshift": np.float64(snap_redshift),
        "Time": np.float64(1.0 / (1.0 + snap_redshift)),
        "BoxSize": np.float64(box_size),
        "HubbleParam": np.float64(HUBBLE_PARAM),
        "Omega0": np.float64(OMEGA_M),
        "OmegaLambda": np.float64(OMEGA_L),
        "FlagDoubleprecision": np.int32(0),
        "Git_commit": np.bytes_(b"mock-universe"),
        "Git_date": np.bytes_(b"scripts.mock"),
        "Nids_ThisFile": np.int32(0),
        "Nids_Total": np.int32(0),
    }


def write_group_catalogue(sim_dir: Path, snap: int, groups: dict, subhalos: dict,
                          attrs: dict, num_files: int) -> list[Path]:
    """Write the chunked catalogue of one snapshot; returns the chunk paths.

    ``groups``/``subhalos`` map TNG field names to arrays whose first axis runs over all
    groups/subhalos (units and dtypes already TNG's). ``num_files`` ≥ 2.
    """
    if num_files < 2:
        raise ValueError(f"num_files must be ≥ 2 (TNG catalogues are chunked), got {num_files}")
    n_g = len(next(iter(groups.values())))
    n_s = len(next(iter(subhalos.values()))) if subhalos else 0
    gb = chunk_bounds(n_g, num_files)
    sb = np.append(chunk_bounds(n_s, num_files - 1), n_s)
    out_dir = Path(sim_dir) / "output" / f"groups_{snap:03d}"
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for k in range(num_files):
        path = out_dir / f"fof_subhalo_tab_{snap:03d}.{k}.hdf5"
        with h5py.File(path, "w") as f:
            h = f.create_group("Header")
            for key, val in attrs.items():
                h.attrs[key] = val
            h.attrs["Ngroups_ThisFile"] = np.int32(gb[k + 1] - gb[k])
            h.attrs["Ngroups_Total"] = np.int32(n_g)
            h.attrs["Nsubgroups_ThisFile"] = np.int32(sb[k + 1] - sb[k])
            h.attrs["Nsubgroups_Total"] = np.int32(n_s)
            h.attrs["NumFiles"] = np.int32(num_files)
            for name, table, b in (("Group", groups, gb), ("Subhalo", subhalos, sb)):
                grp = f.create_group(name)
                if b[k + 1] > b[k]:
                    for field, arr in table.items():
                        grp.create_dataset(field, data=arr[b[k]:b[k + 1]])
        paths.append(path)
    write_offsets(Path(sim_dir), snap, gb[:-1], sb[:-1])
    return paths


def write_offsets(sim_dir: Path, snap: int, group_starts, subhalo_starts) -> Path:
    path = Path(sim_dir) / "postprocessing" / "offsets" / f"offsets_{snap:03d}.hdf5"
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("FileOffsets/Group", data=np.asarray(group_starts, dtype=np.int64))
        f.create_dataset("FileOffsets/Subhalo", data=np.asarray(subhalo_starts, dtype=np.int64))
    return path


def write_datasets(path: Path, datasets: dict, attrs: dict | None = None) -> Path:
    """Write a flat supplementary HDF5 file (one dataset per key)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for key, val in (attrs or {}).items():
            f.attrs[key] = val
        for key, arr in datasets.items():
            f.create_dataset(key, data=arr)
    return path


def supplementary_paths(sim_dir: Path, snap: int) -> dict[str, Path]:
    """Where the supplementary catalogues of one snapshot live."""
    pp = Path(sim_dir) / "postprocessing"
    return {
        "StellarAssembly": pp / "StellarAssembly" / f"stars_{snap:03d}.hdf5",
        "MergerHistory": pp / "MergerHistory" / f"MergerHistory_{snap:03d}.hdf5",
        "RootDescendant": pp / "SubLink" / f"RootDescendant_{snap:03d}.hdf5",
    }
