"""Mock step 3, the simulated catalogue: one snapshot as TNG group-catalogue arrays.

TNG names, units and dtypes; step 4 (:mod:`scripts.mock.scene`) images the same galaxies.

Takes the galaxies alive at a snapshot (:func:`physics.evaluate`) and writes what SubFind
would: masses per particle type [gas, DM, –, tracers, stars, BHs] in 1e10 M☉/h, lengths and
positions in ckpc/h (physical kpc = value · a / h), velocities in km/s, SFR in M☉/yr.
Subhalos are ordered by group, the central (most massive, GroupFirstSub) first and
satellites by decreasing mass; groups by decreasing FoF mass, then small FoF groups without
subhalos (GroupFirstSub = −1). Component masses beyond stars follow simple scalings:
central DM = 0.85 M200c, satellite DM = M★ 10^(1.4 ± 0.3) (stripped), spurious objects
(SubhaloFlag = 0) 0.05 M★; cold gas M★ 10^(−0.1 − 0.5 (log M★ − 10) ± 0.2) if star
forming, 10^(−1.5 ± 0.3) M★ if quenched, plus a hot halo for massive centrals; black holes
log M_BH = 8.69 + 1.16 (log M_bulge − 11) ± 0.3 (Kormendy & Ho 2013) above 10^9 M☉. Within
twice the stellar half-mass radius live 75 % of the stars and a dark-matter mass set by a
DM fraction falling with mass. Particle numbers use TNG100-1 resolution. SubhaloSFR is zero
below sSFR = 10^−12.5 /yr (the resolution floor in TNG). Halo masses grow by 0.04 dex/Gyr.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from scripts.mock.cosmology import OMEGA_B, OMEGA_M, TNGCosmology
from scripts.mock.physics import sigmoid

#: TNG100-1 particle masses [M☉]: baryons (gas, stars) and dark matter.
M_BARYON_PART = 1.4e6
M_DM_PART = 7.5e6
SSFR_FLOOR = -12.5
KM_S_GYR_IN_KPC = 1.0227
N_TYPES = 6
GAS, DM, STARS, BH = 0, 1, 4, 5


@dataclass
class SnapshotCatalogue:
    """TNG arrays of one snapshot plus a per-subhalo table (intrinsic truth, ids)."""

    snap: int
    redshift: float
    groups: dict
    subhalos: dict
    supplementary: dict
    table: pd.DataFrame


def nfw_overdensity_mass(m200c: float, r200c: float, delta_ratio_fn) -> tuple[float, float]:
    """Mass and radius at another overdensity of an NFW halo (Duffy et al. 2008 c(M)).

    ``delta_ratio_fn(x)`` returns mean enclosed density / (200 ρc) that the new radius x·R200c
    must satisfy as 1.
    """
    c = 5.71 * (m200c / 2e12) ** -0.084
    mu = lambda y: np.log1p(y) - y / (1 + y)
    enclosed = lambda x: mu(c * x) / mu(c)
    x = brentq(lambda x: enclosed(x) / x ** 3 - delta_ratio_fn(x), 0.05, 5.0)
    return m200c * enclosed(x), r200c * x


def _to_code_mass(m):
    return (np.asarray(m, dtype=float) * 0.6774 / 1e10).astype(np.float32)


def build_snapshot(galaxies: pd.DataFrame, population, snap: int, clock, n_empty_groups: int,
                   rng: np.random.Generator, cosmology: TNGCosmology | None = None) -> SnapshotCatalogue:
    """Group and subhalo arrays of one snapshot from the living ``galaxies``."""
    cosmo = cosmology or TNGCosmology()
    h = cosmo.h
    z = clock.redshift(snap)
    a = 1.0 / (1.0 + z)
    t = clock.time(snap)
    box = population.box_size
    fb = OMEGA_B / OMEGA_M
    rho_c = float(cosmo.rho_crit(z))

    grp = population.groups.set_index("group_key")
    gal = galaxies.copy()
    log_m200 = grp["log_m200c_ref"].to_numpy() + 0.04 * (t - population.t_ref)
    m200 = 10.0 ** log_m200
    r200 = (3 * m200 / (4 * np.pi * 200 * rho_c)) ** (1 / 3)  # physical kpc
    gk = gal["group_key"].to_numpy()
    central = gal["is_central"].to_numpy()
    kind = gal["kind"].to_numpy()
    flag = gal["flag"].to_numpy()

    mstar = np.where(kind == "dark", 0.0, 10.0 ** np.where(kind == "dark", 0.0, gal["log_mstar"].to_numpy()))
    log_ms = np.log10(np.maximum(mstar, 1.0))
    quenched = gal["quenched"].to_numpy()
    m_dm = np.where(central, 0.85 * m200[gk], np.maximum(mstar, 1e8) * 10 ** (1.4 + 0.3 * gal["d_dm"].to_numpy()))
    m_dm = np.where(kind == "dark", 10 ** (9.3 + 0.3 * gal["d_dm"].to_numpy()), m_dm)
    m_dm = np.where(flag == 0, 0.05 * mstar, m_dm)
    cold = mstar * np.where(quenched, 10 ** (-1.5 + 0.3 * gal["d_gas"].to_numpy()),
                            10 ** (-0.1 - 0.5 * (log_ms - 10) + 0.2 * gal["d_gas"].to_numpy()))
    hot = np.where(central, 0.1 * fb * m200[gk] * sigmoid((log_m200[gk] - 12.5) / 0.3), 0.0)
    m_gas = cold + hot
    m_bulge = mstar * gal["bulge_fraction"].to_numpy()
    m_bh = np.where(mstar > 1e9, 10 ** (8.69 + 1.16 * (np.log10(np.maximum(m_bulge, 1.0)) - 11)
                                        + 0.3 * gal["d_bh"].to_numpy()), 0.0)
    m_bh = np.where(mstar > 1e9, np.maximum(m_bh, 1.2e6), 0.0)

    mass_type = np.zeros((len(gal), N_TYPES))
    mass_type[:, GAS], mass_type[:, DM], mass_type[:, STARS], mass_type[:, BH] = m_gas, m_dm, mstar, m_bh
    total = mass_type.sum(axis=1)

    r_half = np.where(mstar > 0, gal["half_mass_radius_kpc"].to_numpy(), 0.0)  # physical kpc
    f_dm_in = np.clip(0.3 + 0.4 * sigmoid(-(log_ms - 10.5) / 0.5), 0.0, 0.9)
    in_rad = np.zeros_like(mass_type)
    in_rad[:, STARS] = 0.75 * mstar
    in_rad[:, GAS] = np.where(mstar > 0, 0.4 * cold, 0.0)
    in_rad[:, DM] = np.where(mstar > 0, np.minimum(m_dm, in_rad[:, STARS] * f_dm_in / (1 - f_dm_in)), 0.0)
    in_rad[:, BH] = m_bh

    hmr = np.zeros_like(mass_type)
    hmr[:, STARS] = r_half
    hmr[:, GAS] = np.where(m_gas > 0, np.where(central & (hot > cold), 0.3 * r200[gk], 2.0 * np.maximum(r_half, 1.0)), 0.0)
    hmr[:, DM] = np.where(central, 0.4 * r200[gk], np.maximum(15.0 * r_half, 3.0 * (m_dm / 1e10) ** (1 / 3)))
    hmr_all = np.where(m_dm > m_gas + mstar, hmr[:, DM], np.maximum(hmr[:, STARS], hmr[:, GAS]))

    # positions: group centre drifting with its velocity; satellites at their 3-D offsets
    dt = t - population.t_ref
    gpos = grp[["pos_x", "pos_y", "pos_z"]].to_numpy() + grp[["vel_x", "vel_y", "vel_z"]].to_numpy() * dt * KM_S_GYR_IN_KPC * h / a
    off = gal[["sat_dx_kpc", "sat_dy_kpc", "sat_dz_kpc"]].to_numpy() * h / a
    pos = np.mod(gpos[gk] + off, box)
    vel = grp[["vel_x", "vel_y", "vel_z"]].to_numpy()[gk] + gal[["vel_dx", "vel_dy", "vel_dz"]].to_numpy()
    vmax = 10 ** (2.3 + 0.3 * (np.log10(np.maximum(total, 1e8)) - 12.0))
    sfr = np.where((mstar > 0) & (gal["log_ssfr"].to_numpy() >= SSFR_FLOOR),
                   10 ** (gal["log_ssfr"].to_numpy() + log_ms), 0.0)

    # ordering: groups by FoF mass, inside a group central first then by subhalo mass
    group_order = np.argsort(-log_m200, kind="stable")
    group_rank = np.empty_like(group_order)
    group_rank[group_order] = np.arange(len(group_order))
    order = np.lexsort((-total, ~central, group_rank[gk]))
    gal = gal.iloc[order].reset_index(drop=True)
    mass_type, in_rad, hmr, hmr_all = mass_type[order], in_rad[order], hmr[order], hmr_all[order]
    pos, vel, vmax, sfr = pos[order], vel[order], vmax[order], sfr[order]
    gk = gk[order]
    n_sub = len(gal)
    grnr = group_rank[gk].astype(np.int32)

    len_type = np.zeros((n_sub, N_TYPES), dtype=np.int64)
    len_type[:, GAS] = np.round(mass_type[:, GAS] / M_BARYON_PART)
    len_type[:, DM] = np.round(mass_type[:, DM] / M_DM_PART)
    len_type[:, STARS] = np.round(mass_type[:, STARS] / M_BARYON_PART)
    len_type[:, BH] = (mass_type[:, BH] > 0).astype(int)

    subhalos = {
        "SubhaloMass": _to_code_mass(mass_type.sum(axis=1)),
        "SubhaloMassType": _to_code_mass(mass_type),
        "SubhaloMassInRadType": _to_code_mass(in_rad),
        "SubhaloHalfmassRad": (hmr_all * h / a).astype(np.float32),
        "SubhaloHalfmassRadType": (hmr * h / a).astype(np.float32),
        "SubhaloSFR": sfr.astype(np.float32),
        "SubhaloSFRinRad": (0.9 * sfr).astype(np.float32),
        "SubhaloGrNr": grnr,
        "SubhaloParent": np.zeros(n_sub, dtype=np.int32),
        "SubhaloFlag": gal["flag"].to_numpy().astype(np.uint8),
        "SubhaloPos": pos.astype(np.float32),
        "SubhaloCM": np.mod(pos + rng.normal(0.0, 0.5, pos.shape), box).astype(np.float32),
        "SubhaloVel": vel.astype(np.float32),
        "SubhaloVmax": vmax.astype(np.float32),
        "SubhaloLen": len_type.sum(axis=1).astype(np.int32),
        "SubhaloLenType": len_type.astype(np.int32),
        "SubhaloBHMass": _to_code_mass(mass_type[:, BH]),
        "SubhaloIDMostbound": (10 ** 9 + gal["lineage_id"].to_numpy() * 1000 + snap).astype(np.uint64),
    }

    # groups with subhalos
    n_g = len(group_order)
    first = np.full(n_g, -1, dtype=np.int64)
    nsubs = np.bincount(grnr, minlength=n_g)
    starts = np.concatenate([[0], np.cumsum(nsubs)[:-1]])
    first[nsubs > 0] = starts[nsubs > 0]
    g_mass_type = np.zeros((n_g, N_TYPES))
    np.add.at(g_mass_type, grnr, mass_type)
    m200_sorted = m200[group_order]
    r200_sorted = r200[group_order]
    g_mass_type[:, DM] += 0.25 * m200_sorted * (1 - fb)
    g_mass_type[:, GAS] += 0.05 * m200_sorted * fb
    g_len_type = np.zeros((n_g, N_TYPES), dtype=np.int64)
    np.add.at(g_len_type, grnr, len_type)
    g_len_type[:, DM] += np.round(0.25 * m200_sorted * (1 - fb) / M_DM_PART).astype(np.int64)
    g_len_type[:, GAS] += np.round(0.05 * m200_sorted * fb / M_BARYON_PART).astype(np.int64)
    om_z = float(cosmo.omega_m_z(z))
    m500, r500, mm200, rm200 = (np.zeros(n_g) for _ in range(4))
    for i in range(n_g):
        m500[i], r500[i] = nfw_overdensity_mass(m200_sorted[i], r200_sorted[i], lambda x: 500 / 200 * x ** 0)
        mm200[i], rm200[i] = nfw_overdensity_mass(m200_sorted[i], r200_sorted[i], lambda x: om_z * x ** 0)
    gpos_sorted = np.mod(gpos[group_order], box)
    sfr_g = np.bincount(grnr, weights=sfr, minlength=n_g)
    bh_g = np.bincount(grnr, weights=mass_type[:, BH], minlength=n_g)
    central_rows = first[nsubs > 0]
    gpos_sorted[nsubs > 0] = pos[central_rows]
    gvel = vel[np.maximum(first, 0)]

    # small FoF groups without subhalos, at the end
    ne = n_empty_groups
    e_mass = 10 ** rng.uniform(9.4, 9.9, ne)
    e_type = np.zeros((ne, N_TYPES))
    e_type[:, DM] = e_mass
    e_len = np.zeros((ne, N_TYPES), dtype=np.int64)
    e_len[:, DM] = np.round(e_mass / M_DM_PART)
    cat = lambda x, y: np.concatenate([x, y], axis=0)
    groups = {
        "GroupMass": _to_code_mass(cat(g_mass_type.sum(axis=1), e_mass)),
        "GroupMassType": _to_code_mass(cat(g_mass_type, e_type)),
        "GroupLen": cat(g_len_type.sum(axis=1), e_len.sum(axis=1)).astype(np.int32),
        "GroupLenType": cat(g_len_type, e_len).astype(np.int32),
        "GroupNsubs": cat(nsubs, np.zeros(ne, dtype=np.int64)).astype(np.int32),
        "GroupFirstSub": cat(first, np.full(ne, -1)).astype(np.int32),
        "GroupPos": cat(gpos_sorted, rng.random((ne, 3)) * box).astype(np.float32),
        "GroupVel": cat(gvel, rng.normal(0, 200, (ne, 3))).astype(np.float32),
        "GroupSFR": cat(sfr_g, np.zeros(ne)).astype(np.float32),
        "GroupBHMass": _to_code_mass(cat(bh_g, np.zeros(ne))),
        "Group_M_Crit200": _to_code_mass(cat(m200_sorted, np.zeros(ne))),
        "Group_R_Crit200": (cat(r200_sorted, np.zeros(ne)) * h / a).astype(np.float32),
        "Group_M_Crit500": _to_code_mass(cat(m500, np.zeros(ne))),
        "Group_R_Crit500": (cat(r500, np.zeros(ne)) * h / a).astype(np.float32),
        "Group_M_Mean200": _to_code_mass(cat(mm200, np.zeros(ne))),
        "Group_R_Mean200": (cat(rm200, np.zeros(ne)) * h / a).astype(np.float32),
    }

    mstar_s = mass_type[:, STARS]
    exsitu = gal["exsitu_fraction"].to_numpy() * mstar_s
    snap_last = gal["snap_last_major_merger"].to_numpy().astype(np.int32)
    mass_last = np.where(snap_last >= 0, 10 ** np.nan_to_num(gal["log_mass_last_major_merger"].to_numpy(), nan=0.0), 0.0)
    supplementary = {
        "StellarAssembly": {
            "StellarMassExSitu": _to_code_mass(exsitu),
            "StellarMassInSitu": _to_code_mass(mstar_s - exsitu),
        },
        "MergerHistory": {
            "SnapNumLastMajorMerger": snap_last,
            "MassLastMajorMerger": np.where(snap_last >= 0, _to_code_mass(mass_last), np.float32(-1.0)).astype(np.float32),
            "NumMajorMergersTotal": gal["n_major_mergers"].to_numpy().astype(np.int32),
        },
        "RootDescendant": {
            # SubhaloIDRaw-style id of the z = 0 descendant: 99 · 1e12 + its index
            "RootDescendantID": (99 * 10 ** 12 + gal["root_id"].to_numpy()).astype(np.int64),
        },
    }

    table = gal.assign(
        subhalo_id=np.arange(n_sub, dtype=np.int64),
        group_id=grnr.astype(np.int64),
        snapshot=snap,
        root_descendant_id=supplementary["RootDescendant"]["RootDescendantID"],
        halo_mass=log_m200[gk],
        r200c_kpc=r200[gk],
        mass_in_rad=np.log10(np.maximum(in_rad[:, STARS], 1.0)),
        sfr_catalogue=sfr,
    )
    return SnapshotCatalogue(snap, z, groups, subhalos, supplementary, table)
