"""Tiny TNG-layout catalogues for the tests of ``TNG/`` (written with h5py).

Writes, under ``<root>/<SIM>/``, a FoF/SubFind group catalogue split into chunk files
exactly as the TNG archive does (``output/groups_SSS/fof_subhalo_tab_SSS.C.hdf5`` with
``Header``, ``Group``, ``Subhalo``; subhalos ordered by parent group and stored in the
chunk of their group; a trailing chunk of subhalo-less groups whose ``Subhalo`` group is
empty), TNG field names, dtypes and units (masses 1e10 M☉/h, lengths ckpc/h, SFR M☉/yr),
and the per-snapshot supplementary catalogues. The raw arrays are returned so tests can
compute expected values from them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

HUBBLE_PARAM = 0.6774
OMEGA0 = 0.3089
OMEGA_LAMBDA = 0.6911
BOX_SIZE = 35000.0  # ckpc/h
#: Critical density today in 1e10 M☉/h per (ckpc/h)³ (2.775e11 h² M☉/Mpc³).
_RHO_CRIT0 = 2.775e11 / 1e10 / 1e9


@dataclass
class TinyCatalogue:
    """Paths and raw arrays of a written catalogue."""

    base_path: Path  # <root>/<SIM>/output
    postprocessing_path: Path
    snapshot: int
    redshift: float
    time: float
    groups: dict[str, np.ndarray]
    subhalos: dict[str, np.ndarray]
    supplementary: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    chunk_paths: list[Path] = field(default_factory=list)


def chunk_file(base_path: Path, snapshot: int, chunk: int) -> Path:
    return (Path(base_path) / f"groups_{snapshot:03d}"
            / f"fof_subhalo_tab_{snapshot:03d}.{chunk}.hdf5")


def write_group_catalogue(base_path: Path, snapshot: int, redshift: float,
                          groups: dict[str, np.ndarray], subhalos: dict[str, np.ndarray],
                          group_bounds: list[int], subhalo_bounds: list[int],
                          time: float | None = None) -> list[Path]:
    """Write chunk files; chunk c holds groups [group_bounds[c], group_bounds[c+1]) and
    subhalos [subhalo_bounds[c], subhalo_bounds[c+1])."""
    n_chunks = len(group_bounds) - 1
    assert len(subhalo_bounds) == n_chunks + 1
    n_groups = group_bounds[-1]
    n_subhalos = subhalo_bounds[-1]
    time = 1.0 / (1.0 + redshift) if time is None else time
    paths = []
    for c in range(n_chunks):
        path = chunk_file(base_path, snapshot, c)
        path.parent.mkdir(parents=True, exist_ok=True)
        g0, g1 = group_bounds[c], group_bounds[c + 1]
        s0, s1 = subhalo_bounds[c], subhalo_bounds[c + 1]
        with h5py.File(path, "w") as f:
            header = f.create_group("Header")
            for key, value in {
                    "Ngroups_ThisFile": np.int32(g1 - g0), "Ngroups_Total": np.int32(n_groups),
                    "Nsubgroups_ThisFile": np.int32(s1 - s0),
                    "Nsubgroups_Total": np.int32(n_subhalos),
                    "Nids_ThisFile": np.int32(0), "Nids_Total": np.int32(0),
                    "NumFiles": np.int32(n_chunks), "Redshift": np.float64(redshift),
                    "Time": np.float64(time), "BoxSize": np.float64(BOX_SIZE),
                    "HubbleParam": np.float64(HUBBLE_PARAM), "Omega0": np.float64(OMEGA0),
                    "OmegaLambda": np.float64(OMEGA_LAMBDA)}.items():
                header.attrs[key] = value
            for name, rows, data in (("Group", (g0, g1), groups),
                                     ("Subhalo", (s0, s1), subhalos)):
                grp = f.create_group(name)
                if rows[1] > rows[0]:  # TNG leaves the group empty in chunks without rows
                    for column, values in data.items():
                        grp.create_dataset(column, data=values[rows[0]:rows[1]])
        paths.append(path)
    return paths


def make_tiny_universe(rng: np.random.Generator, n_groups: int, redshift: float
                       ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Raw Group and Subhalo columns: groups sorted by mass, subhalos by parent group,
    the last quarter of the groups without subhalos (GroupFirstSub = −1)."""
    a = 1.0 / (1.0 + redshift)
    m200 = np.sort(10 ** rng.uniform(0.5, 4.5, n_groups))[::-1].astype(np.float32)
    nsubs = rng.poisson(2.0, n_groups) + 1
    nsubs[3 * n_groups // 4:] = 0
    m200[-2:] = 0.0  # tiny FoF groups have no R200c overdensity: SubFind writes 0
    first = np.where(nsubs > 0, np.concatenate([[0], np.cumsum(nsubs)[:-1]]), -1)
    n_sub = int(nsubs.sum())
    grnr = np.repeat(np.arange(n_groups), nsubs).astype(np.int32)
    # R200c in ckpc/h from M200c = 200 ρc(z) 4/3 π R³, ρc(z) ≈ ρc0 (Ωm (1+z)³ + ΩΛ), comoving
    rho_c = _RHO_CRIT0 * (OMEGA0 * (1 + redshift) ** 3 + OMEGA_LAMBDA)
    r200 = ((3 * m200 / (800 * np.pi * rho_c)) ** (1 / 3) / a).astype(np.float32)
    groups = {
        "Group_M_Crit200": m200,
        "Group_R_Crit200": r200,
        "GroupFirstSub": first.astype(np.int32),
        "GroupNsubs": nsubs.astype(np.int32),
        "GroupMass": (m200 * 1.2).astype(np.float32),
        "GroupPos": rng.uniform(0, BOX_SIZE, (n_groups, 3)).astype(np.float32),
        "GroupLenType": rng.integers(0, 10**6, (n_groups, 6)).astype(np.int32),
    }
    is_central = np.zeros(n_sub, bool)
    is_central[first[first >= 0]] = True
    mass_type = np.zeros((n_sub, 6), np.float32)
    mstar = 10 ** rng.uniform(-3.0, 2.0, n_sub)   # 1e7 – 1e12 M☉/h
    mstar[rng.random(n_sub) < 0.1] = 0.0           # dark subhalos
    mass_type[:, 4] = mstar
    mass_type[:, 1] = mstar * rng.uniform(5, 50, n_sub) + 1e-2
    mass_type[:, 0] = mstar * rng.uniform(0, 2, n_sub)
    in_rad = mass_type * rng.uniform(0.3, 0.7, (n_sub, 1))
    rhalf = np.zeros((n_sub, 6), np.float32)
    rhalf[:, 4] = np.where(mstar > 0, 10 ** rng.uniform(-0.3, 1.3, n_sub), 0.0)
    rhalf[:, 1] = rhalf[:, 4] * 5
    sfr = 10 ** rng.uniform(-3, 1.5, n_sub)
    sfr[rng.random(n_sub) < 0.25] = 0.0            # quenched: SubFind writes exactly 0
    flag = np.ones(n_sub, np.uint8)
    flag[rng.choice(np.flatnonzero(~is_central), max(2, n_sub // 10), replace=False)] = 0
    subhalos = {
        "SubhaloMassType": mass_type,
        "SubhaloMassInRadType": in_rad.astype(np.float32),
        "SubhaloHalfmassRadType": rhalf,
        "SubhaloSFR": sfr.astype(np.float32),
        "SubhaloFlag": flag,
        "SubhaloGrNr": grnr,
        "SubhaloParent": np.zeros(n_sub, np.int32),
        "SubhaloPos": rng.uniform(0, BOX_SIZE, (n_sub, 3)).astype(np.float32),
        "SubhaloLenType": rng.integers(0, 10**5, (n_sub, 6)).astype(np.int32),
    }
    return groups, subhalos


def make_supplementary(rng: np.random.Generator, subhalos: dict[str, np.ndarray],
                       snapshot: int) -> dict[str, dict[str, np.ndarray]]:
    """StellarAssembly, MergerHistory and RootDescendant arrays indexed by subhalo id."""
    n = len(subhalos["SubhaloFlag"])
    mstar = subhalos["SubhaloMassType"][:, 4].astype(np.float64)
    f_ex = rng.uniform(0, 1, n)
    snap = rng.integers(0, snapshot + 1, n)
    snap[rng.random(n) < 0.3] = -1
    snap[0] = snapshot  # a merger at the galaxy's own snapshot: zero elapsed time
    snap[1] = -1
    return {
        "stellar_assembly": {
            "StellarMassExSitu": (mstar * f_ex).astype(np.float32),
            "StellarMassInSitu": (mstar * (1 - f_ex)).astype(np.float32)},
        "merger_history": {
            "SnapNumLastMajorMerger": snap.astype(np.int32),
            "MassLastMajorMerger": np.where(snap >= 0, mstar * rng.uniform(0.25, 1, n),
                                            0.0).astype(np.float32)},
        "root_descendant": {
            "RootDescendantID": (10**12 * 99 + rng.permutation(n)).astype(np.int64)},
    }


SUPPLEMENTARY_FILES = {
    "stellar_assembly": "StellarAssembly/stars_{snap:03d}.hdf5",
    "merger_history": "MergerHistory/MergerHistory_{snap:03d}.hdf5",
    "root_descendant": "SubLink/RootDescendant_{snap:03d}.hdf5",
}


def write_supplementary(postprocessing_path: Path, snapshot: int,
                        data: dict[str, dict[str, np.ndarray]]) -> None:
    for kind, arrays in data.items():
        path = Path(postprocessing_path) / SUPPLEMENTARY_FILES[kind].format(snap=snapshot)
        path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(path, "w") as f:
            for name, values in arrays.items():
                f.create_dataset(name, data=values)


def write_cc_criteria(path: Path, halo_ids: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
    """A CCcriteria.hdf5 with the real file's structure: HaloIDs (N,) + (N, n_snap) arrays."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("HaloIDs", data=np.asarray(halo_ids, np.int64))
        for name, values in arrays.items():
            f.create_dataset(name, data=values)


def build_tiny_catalogue(root: Path, snapshot: int, redshift: float, n_groups: int = 40,
                         seed: int = 0, simulation: str = "TinyTNG",
                         with_supplementary: bool = True) -> TinyCatalogue:
    """Write a 3-chunk catalogue (+ a 4th chunk of subhalo-less groups) and, optionally,
    its supplementary catalogues under ``root/simulation``."""
    rng = np.random.default_rng(seed)
    groups, subhalos = make_tiny_universe(rng, n_groups, redshift)
    nsubs = groups["GroupNsubs"]
    with_subs = int(np.count_nonzero(nsubs))  # groups with subhalos come first
    group_bounds = [0, with_subs // 3, 2 * with_subs // 3, with_subs, n_groups]
    cum = np.concatenate([[0], np.cumsum(nsubs)])
    subhalo_bounds = [int(cum[g]) for g in group_bounds]
    base = Path(root) / simulation / "output"
    paths = write_group_catalogue(base, snapshot, redshift, groups, subhalos,
                                  group_bounds, subhalo_bounds)
    cat = TinyCatalogue(base, base.parent / "postprocessing", snapshot, redshift,
                        1.0 / (1.0 + redshift), groups, subhalos, chunk_paths=paths)
    if with_supplementary:
        cat.supplementary = make_supplementary(rng, subhalos, snapshot)
        write_supplementary(cat.postprocessing_path, snapshot, cat.supplementary)
    return cat


def build_wide_catalogue(root: Path, n_subhalos: int, n_chunks: int, snapshot: int = 99,
                         seed: int = 1) -> TinyCatalogue:
    """A larger catalogue of many wide columns (no physics), for memory checks."""
    rng = np.random.default_rng(seed)
    n_groups = n_subhalos // 4
    groups = {"Group_M_Crit200": rng.random(n_groups, np.float32),
              "GroupPos": rng.random((n_groups, 3), np.float32)}
    subhalos = {"SubhaloSFR": rng.random(n_subhalos, np.float32),
                "SubhaloFlag": np.ones(n_subhalos, np.uint8),
                "SubhaloMassType": rng.random((n_subhalos, 6), np.float32),
                "SubhaloPos": rng.random((n_subhalos, 3), np.float64),
                "SubhaloVel": rng.random((n_subhalos, 3), np.float64),
                "SubhaloSpin": rng.random((n_subhalos, 3), np.float64)}
    gb = np.linspace(0, n_groups, n_chunks + 1).astype(int).tolist()
    sb = np.linspace(0, n_subhalos, n_chunks + 1).astype(int).tolist()
    base = Path(root) / "WideTNG" / "output"
    paths = write_group_catalogue(base, snapshot, 0.0, groups, subhalos, gb, sb)
    return TinyCatalogue(base, base.parent / "postprocessing", snapshot, 0.0, 1.0, groups,
                         subhalos, chunk_paths=paths)
