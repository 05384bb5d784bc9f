"""Mock step 1, initial conditions: FoF groups, galaxy lineages, spins and merger events.

The steps of the mock universe (driven by :mod:`scripts.mock.universe`): 1 population →
2 :mod:`~scripts.mock.physics` → 3 :mod:`~scripts.mock.simulation` (catalogues) →
4 :mod:`~scripts.mock.scene` (what each camera sees) → 5 :mod:`~scripts.mock.jobs`
(images rendered in parallel).

A population is what two simulations started from the same initial conditions share: halo
masses and positions, which galaxies live in which halo, their 3-D spin axes, merger events
and one fixed random deviate per galaxy property. :mod:`scripts.mock.physics` turns it into
galaxy properties at any time, so the Fiducial and Compact runs contain the same objects
(same subhalo ids) with different physics, and snapshots 78 and 84 show the same galaxies
at two epochs (progenitors share ``root_id``).

Halo masses follow dN/dlog M ∝ M^−slope; central stellar masses the Moster et al. (2013)
stellar-to-halo mass relation (0.15 dex scatter); satellites are 0.15 + Exp(0.9) dex less
massive than their central; every group also hosts low-mass (log M★ < 9.3) and dark
subhalos. About 8 % of the satellites above 10^9.5 M☉ are spurious (``flag`` = 0, the
SubhaloFlag of TNG: not of cosmological origin).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scripts.mock import physics

#: log10 M★ [M☉] above which galaxies are imaged (a typical selection cut in extract).
IMAGING_LOG_MSTAR = 9.5
#: Internal log10 M★ of dark subhalos; the catalogue writes zero stellar mass for them.
DARK_LOG_MSTAR = 6.0
SPURIOUS_FRACTION = 0.08


@dataclass
class Population:
    """Groups (one row per FoF group) and lineages (one row per galaxy history).

    groups: group_key, log_m200c_ref [log10 M☉ at t_ref], pos_{x,y,z} [ckpc/h],
        vel_{x,y,z} [km/s]; lineages: lineage_id, root_id, group_key, is_central, kind
        ('galaxy', 'lowmass', 'dark'), flag, log_mstar_ref, t_ref, z_ref [Gyr, -], t_end
        [Gyr; a secondary merges into its primary then], deviates; mergers: lineage_id,
        t_gyr, mass_ratio, dir_{x,y,z}, sep_kpc.
    """

    groups: pd.DataFrame
    lineages: pd.DataFrame
    mergers: pd.DataFrame
    t_ref: float
    z_ref: float
    box_size: float


def moster_shmr(log_m200, z) -> np.ndarray:
    """log10 M★ of a central in a halo of log10 M200 (Moster, Naab & White 2013)."""
    a = z / (1.0 + z)
    log_m1 = 11.590 + 1.195 * a
    norm = 0.0351 - 0.0247 * a
    beta = 1.376 - 0.826 * a
    gamma = 0.608 + 0.329 * a
    x = 10.0 ** (np.asarray(log_m200) - log_m1)
    return np.asarray(log_m200) + np.log10(2.0 * norm / (x ** -beta + x ** gamma))


def _power_law_log_mass(rng, n, lo, hi, slope):
    """log10 M with dN/dlogM ∝ M^−slope between lo and hi (inverse CDF, stratified so that
    small samples still span the mass range)."""
    u = (np.arange(n) + rng.random(n)) / n
    a, b = 10.0 ** (-slope * lo), 10.0 ** (-slope * hi)
    return -np.log10(a + u * (b - a)) / slope


def _unit_vectors(rng, n) -> np.ndarray:
    v = rng.standard_normal((n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def sample_population(rng: np.random.Generator, n_groups: int, t_ref: float, z_ref: float,
                      log_m200_range=(11.4, 13.8), slope: float = 0.9,
                      satellite_norm: float = 1.0, box_size: float = 35000.0,
                      rho_crit_ref: float = 127.35, merger_window=(3.3, None),
                      secondary_after: float | None = None) -> Population:
    """Draw groups, lineages and merger events.

    t_ref/z_ref: reference epoch of the drawn masses (Gyr, redshift); rho_crit_ref: critical
    density at z_ref [M☉/kpc³] for R200c; merger_window: (first, last) cosmic time [Gyr] of
    merger events (last defaults to t_ref); secondary_after: mergers later than this time
    [Gyr] keep their secondary galaxy as a separate lineage until it merges (it shows up as
    its own subhalo in earlier snapshots and shares the remnant's root id).
    """
    log_m200 = np.sort(_power_law_log_mass(rng, n_groups, *log_m200_range, slope))[::-1]
    pos = rng.random((n_groups, 3)) * box_size
    groups = pd.DataFrame({
        "group_key": np.arange(n_groups),
        "log_m200c_ref": log_m200,
        "pos_x": pos[:, 0], "pos_y": pos[:, 1], "pos_z": pos[:, 2],
        **{f"vel_{c}": rng.normal(0.0, 300.0, n_groups) for c in "xyz"},
    })
    r200 = (3 * 10.0 ** log_m200 / (4 * np.pi * 200 * rho_crit_ref)) ** (1 / 3)  # kpc

    rows = []
    for g in range(n_groups):
        log_mc = moster_shmr(log_m200[g], z_ref) + 0.15 * rng.standard_normal()
        rows.append((g, True, "galaxy", log_mc, 0.0))
        n_sat = rng.poisson(satellite_norm * (10.0 ** (log_m200[g] - 12.0)) ** 0.9)
        for ms in log_mc - 0.15 - rng.exponential(0.9, n_sat):
            rows.append((g, False, "galaxy" if ms >= 8.8 else "lowmass", ms, rng.random()))
        for ms in rng.uniform(7.0, 9.3, rng.poisson(1.5)):
            rows.append((g, False, "lowmass", ms, rng.random()))
        for _ in range(rng.poisson(0.7)):
            rows.append((g, False, "dark", DARK_LOG_MSTAR, rng.random()))
    n = len(rows)
    lin = pd.DataFrame(rows, columns=["group_key", "is_central", "kind", "log_mstar_ref", "u_r"])
    lin.insert(0, "lineage_id", np.arange(n, dtype=np.int64))
    lin["root_id"] = lin["lineage_id"]
    lin["flag"] = np.uint8(1)
    lin["t_ref"] = t_ref
    lin["z_ref"] = z_ref
    lin["t_end"] = np.inf

    # spurious objects: a few imaged satellites
    cand = np.flatnonzero(~lin["is_central"].to_numpy() & (lin["log_mstar_ref"].to_numpy() >= IMAGING_LOG_MSTAR + 0.05))
    n_spur = min(len(cand), max(1, int(round(SPURIOUS_FRACTION * len(cand))))) if len(cand) else 0
    if n_spur:
        lin.loc[rng.choice(cand, n_spur, replace=False), "flag"] = np.uint8(0)

    _add_deviates(rng, lin, r200)
    t_first, t_last = merger_window
    t_last = t_ref if t_last is None else t_last
    mergers = _sample_mergers(rng, lin, t_first, t_last)
    if secondary_after is not None:
        lin, mergers = _add_secondaries(rng, lin, mergers, secondary_after, r200)
    return Population(groups, lin, mergers, t_ref, z_ref, box_size)


def _add_deviates(rng, lin: pd.DataFrame, r200) -> None:
    """Per-lineage deviates (fixed for life) and 3-D satellite offsets."""
    n = len(lin)
    for name in ("d_sf", "d_color", "d_color2", "d_bulge", "d_n", "d_size", "d_exsitu",
                 "d_gas", "d_bh", "d_dm"):
        lin[name] = rng.standard_normal(n)
    lin["u_quench"] = rng.random(n)
    lin["quench_lookback"] = rng.uniform(0.0, 6.0, n)
    lin["u_thick"] = rng.random(n)
    spin = _unit_vectors(rng, n)
    lin["spin_x"], lin["spin_y"], lin["spin_z"] = spin.T
    # satellites sit at 0.1–1 R200c of their central (physical kpc), with a velocity offset
    r = np.where(lin["is_central"], 0.0,
                 r200[lin["group_key"].to_numpy()] * (0.1 + 0.9 * lin["u_r"].to_numpy()))
    d = _unit_vectors(rng, n) * r[:, None]
    lin["sat_dx_kpc"], lin["sat_dy_kpc"], lin["sat_dz_kpc"] = d.T
    v = rng.normal(0.0, 150.0, (n, 3)) * (~lin["is_central"].to_numpy())[:, None]
    lin["vel_dx"], lin["vel_dy"], lin["vel_dz"] = v.T
    lin.drop(columns="u_r", inplace=True)


def _sample_mergers(rng, lin: pd.DataFrame, t_first: float, t_last: float) -> pd.DataFrame:
    """Major-merger events of galaxy lineages: Poisson count, uniform in cosmic time."""
    galaxy = (lin["kind"] == "galaxy").to_numpy()
    counts = np.where(galaxy, rng.poisson(physics.major_merger_rate(lin["log_mstar_ref"].to_numpy())), 0)
    ids = np.repeat(lin["lineage_id"].to_numpy(), counts)
    m = len(ids)
    d = _unit_vectors(rng, m)
    return pd.DataFrame({
        "lineage_id": ids,
        "t_gyr": rng.uniform(t_first, t_last, m),
        "mass_ratio": rng.uniform(0.25, 1.0, m),
        "dir_x": d[:, 0], "dir_y": d[:, 1], "dir_z": d[:, 2],
        "sep_kpc": rng.uniform(3.0, 10.0, m),
    })


def _add_secondaries(rng, lin, mergers, after: float, r200):
    """Secondary galaxies of late mergers become lineages that end at the merger time."""
    late = mergers[mergers["t_gyr"] > after]
    if not len(late):
        return lin, mergers
    prim = lin.set_index("lineage_id").loc[late["lineage_id"].to_numpy()]
    mu = late["mass_ratio"].to_numpy()
    sec = pd.DataFrame({
        "lineage_id": np.arange(len(lin), len(lin) + len(late), dtype=np.int64),
        "group_key": prim["group_key"].to_numpy(),
        "is_central": False,
        "kind": "galaxy",
        "log_mstar_ref": prim["log_mstar_ref"].to_numpy() + np.log10(mu / (1.0 + mu)),
        "root_id": prim["root_id"].to_numpy(),
        "flag": np.uint8(1),
        "t_ref": prim["t_ref"].to_numpy(),
        "z_ref": prim["z_ref"].to_numpy(),
        "t_end": late["t_gyr"].to_numpy(),
        "u_r": rng.random(len(late)),
    })
    sec["_prim"] = late["lineage_id"].to_numpy()
    _add_deviates(rng, sec, r200)
    # the secondary orbits its primary: 20–80 kpc away
    d = _unit_vectors(rng, len(sec)) * rng.uniform(20.0, 80.0, len(sec))[:, None]
    p = lin.set_index("lineage_id").loc[sec["_prim"].to_numpy()]
    for c, k in zip("xyz", range(3)):
        sec[f"sat_d{c}_kpc"] = p[f"sat_d{c}_kpc"].to_numpy() + d[:, k]
    sec = sec.drop(columns="_prim")
    return pd.concat([lin, sec[lin.columns]], ignore_index=True), mergers
