"""Mock step 2, galaxy physics: intrinsic properties at a time from mass and history.

Turns the initial conditions of step 1 (:mod:`scripts.mock.population`) into galaxies at
one epoch, which step 3 (:mod:`scripts.mock.simulation`) writes as a catalogue.

Each relation below is a simple, documented fit of the kind used in the literature, with a
fixed per-galaxy random deviate (drawn once in :mod:`scripts.mock.population`), so a galaxy
keeps its identity across snapshots and only its physics changes between runs.

Relations (M★ in M☉, t in Gyr, radii in physical kpc):

* quenched fraction: f_q = σ((log M★ − 10.55)/0.25) for centrals; satellites add 35 % of
  the remainder (environmental quenching). σ is the logistic function.
* star-forming main sequence: log sSFR/yr = −10.0 − 0.25 (log M★ − 10) + 2.8 log10(1+z),
  scatter 0.25 dex; quenched: −12.0 ± 0.35 dex; a galaxy that quenched less than 0.5 Gyr ago
  sits in between (green valley).
* colour (rest frame, no k-correction): g−r = 0.42 + 0.36 σ(−(log sSFR + 10.8)/0.25)
  + 0.06 (log M★ − 10.5) ± 0.03; r−i = 0.12 + 0.35 (g−r) ± 0.02.
* bulge fraction (r-band B/T): 0.08 + 0.5 σ((log M★ − 10.6)/0.3) + 0.2 [quenched]
  + 0.08 N_major ± 0.07, clipped to [0, 0.9]; bulge Sérsic index
  n_b = 2 + 1.2 (log M★ − 10) + 0.6 [quenched] ± 0.4 in [1, 6] on a 0.1 grid; the
  single-profile proxy reported as ``sersic_n`` is 1 + (n_b − 1) B/T.
* mass–size (van der Wel et al. 2014-like, projected half-mass radius R):
  late: log R = 0.80 + 0.22 (log M★ − 10.7), early: log R = 0.60 + 0.75 (log M★ − 10.7),
  mixed by B/T, × (1+z)^−0.75 relative to z = 0.1, scatter 0.16 dex. Disk half-light radius
  = R, bulge half-light radius = R (0.4 + 0.5 B/T); the galaxy's face-on half-light radius
  is solved numerically and the 3-D half-mass radius is 4/3 of it (Wolf et al. 2010).
* ex-situ fraction: 0.03 + 0.6 σ((log M★ − 11.1)/0.3) + 0.08 N_major ± 0.04 (× 0.7 for
  satellites), clipped to [0, 0.95].
* major mergers (mass ratio ≥ 1:4): Poisson number since z = 2 with mean
  0.5 + 1.5 σ((log M★ − 10.8)/0.35). A merger less than 2 Gyr before the snapshot is
  "recent": < 0.5 Gyr it leaves a second nucleus (companion), 0.5–2 Gyr a fading tidal tail.
* stellar mass growth: SF galaxies grow by 0.6 sSFR Δt (return fraction 0.4); a major merger
  adds the secondary's mass μ/(1+μ) of the remnant.

:class:`GalaxyPhysics` holds what a run changes: the Compact run has sizes 0.4 dex smaller
and g−r 0.15 mag bluer than the Fiducial run (which matches the observed survey).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.special import gammainc, gammaincinv

#: Return fraction of stellar mass loss (Chabrier IMF) used in mass growth.
RETURN_FRACTION = 0.4
#: Lookback window (Gyr) of a "recent" major merger and of its visible companion phase.
RECENT_MERGER_GYR = 2.0
COMPANION_PHASE_GYR = 0.5
#: Sérsic indices are quantised to this step (GalSim caches one profile table per index).
SERSIC_STEP = 0.1
#: 3-D half-mass radius / projected half-light radius (Wolf et al. 2010).
R3D_OVER_R2D = 4.0 / 3.0


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=float)))


@dataclass(frozen=True)
class GalaxyPhysics:
    """What differs between simulated runs.

    size_offset_dex: added to log10 of every galaxy size; color_offset_gr: added to g−r
    (and 0.35× of it to r−i, which follows g−r).
    """

    name: str
    size_offset_dex: float = 0.0
    color_offset_gr: float = 0.0


FIDUCIAL = GalaxyPhysics("fiducial")
COMPACT = GalaxyPhysics("compact", size_offset_dex=-0.4, color_offset_gr=-0.15)


def quenched_probability(log_mstar, is_central) -> np.ndarray:
    """Probability that a galaxy is quenched (mass and environment quenching)."""
    p = sigmoid((np.asarray(log_mstar) - 10.55) / 0.25)
    return np.where(is_central, p, p + (1.0 - p) * 0.35)


def main_sequence_ssfr(log_mstar, z) -> np.ndarray:
    """log10 sSFR [1/yr] of the star-forming main sequence."""
    return -10.0 - 0.25 * (np.asarray(log_mstar) - 10.0) + 2.8 * np.log10(1.0 + np.asarray(z))


def major_merger_rate(log_mstar) -> np.ndarray:
    """Mean number of major mergers since z = 2."""
    return 0.5 + 1.5 * sigmoid((np.asarray(log_mstar) - 10.8) / 0.35)


def sersic_b(n) -> np.ndarray:
    """b_n such that half of a Sérsic profile's light lies within its half-light radius."""
    return gammaincinv(2.0 * np.asarray(n, dtype=float), 0.5)


def sersic_enclosed(x, n) -> np.ndarray:
    """Fraction of a Sérsic profile's light within x half-light radii (face-on)."""
    n = np.asarray(n, dtype=float)
    return gammainc(2.0 * n, sersic_b(n) * np.power(np.asarray(x, dtype=float), 1.0 / n))


def composite_half_light_radius(bulge_fraction, n_bulge, r_bulge, r_disk) -> np.ndarray:
    """Face-on half-light radius of bulge (Sérsic n_b) + exponential disk, by bisection."""
    b = np.asarray(bulge_fraction, dtype=float)
    lo = np.minimum(r_bulge, r_disk) * 0.05
    hi = np.maximum(r_bulge, r_disk) * 4.0
    for _ in range(60):
        mid = np.sqrt(lo * hi)
        f = b * sersic_enclosed(mid / r_bulge, n_bulge) + (1 - b) * sersic_enclosed(mid / r_disk, 1.0)
        below = f < 0.5
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return np.sqrt(lo * hi)


def _mass_growth(pop_lin: pd.DataFrame, mergers: pd.DataFrame, t, t_quench) -> np.ndarray:
    """log10 M★(t) from the reference mass: in-situ growth and merger mass gains."""
    t = np.broadcast_to(np.asarray(t, dtype=float), (len(pop_lin),))
    t_ref = pop_lin["t_ref"].to_numpy()
    log_m_ref = pop_lin["log_mstar_ref"].to_numpy()
    z_ref = pop_lin["z_ref"].to_numpy()
    ssfr = 10.0 ** main_sequence_ssfr(log_m_ref, z_ref)
    # star-forming time between t_ref and t (signed), stopped at the quenching time
    sf_end_fwd = np.minimum(t, t_quench)
    fwd = np.clip(sf_end_fwd - t_ref, 0.0, None)
    bwd = np.clip(np.minimum(t_ref, t_quench) - t, 0.0, None)
    dt_yr = (fwd - bwd) * 1e9
    log_m = log_m_ref + (1 - RETURN_FRACTION) * ssfr * dt_yr / np.log(10.0)
    if len(mergers):
        index = pd.Index(pop_lin["lineage_id"])
        rows = index.get_indexer(mergers["lineage_id"])
        keep = rows >= 0
        rows = rows[keep]
        te = mergers["t_gyr"].to_numpy()[keep]
        gain = np.log10(1.0 + mergers["mass_ratio"].to_numpy()[keep])
        after_ref = (te > t_ref[rows]) & (te <= t[rows])
        before_ref = (te <= t_ref[rows]) & (te > t[rows])
        np.add.at(log_m, rows, np.where(after_ref, gain, 0.0) - np.where(before_ref, gain, 0.0))
    return log_m


def _last_major_merger(pop_lin: pd.DataFrame, mergers: pd.DataFrame, t):
    """Per lineage: number of past major mergers, index into ``mergers`` of the last one."""
    n = len(pop_lin)
    t = np.broadcast_to(np.asarray(t, dtype=float), (n,))
    count = np.zeros(n, dtype=int)
    last = np.full(n, -1, dtype=int)
    if len(mergers):
        rows = pd.Index(pop_lin["lineage_id"]).get_indexer(mergers["lineage_id"])
        te = mergers["t_gyr"].to_numpy()
        order = np.argsort(te, kind="stable")
        for k in order:  # few events; time-ordered so the last one wins
            r = rows[k]
            if r >= 0 and te[k] <= t[r]:
                count[r] += 1
                last[r] = k
    return count, last


def evaluate(population, physics: GalaxyPhysics, t, z, clock) -> pd.DataFrame:
    """Intrinsic properties of every lineage alive at cosmic time ``t`` (Gyr), redshift ``z``.

    ``t`` and ``z`` are scalars (a snapshot) or one value per lineage (survey galaxies).
    Returns one row per living lineage with masses in log10 M☉, radii in physical kpc,
    sSFR in log10 /yr, merger times in Gyr and the ``clock``'s snapshot numbers.
    """
    lin = population.lineages
    mergers = population.mergers
    n = len(lin)
    t_arr = np.broadcast_to(np.asarray(t, dtype=float), (n,)).copy()
    z_arr = np.broadcast_to(np.asarray(z, dtype=float), (n,)).copy()
    alive = t_arr < lin["t_end"].to_numpy()
    is_central = lin["is_central"].to_numpy()

    # quenching: decided by the reference mass, happens at t_ref − lookback
    p_q = quenched_probability(lin["log_mstar_ref"].to_numpy(), is_central)
    will_quench = lin["u_quench"].to_numpy() < p_q
    t_quench = np.where(will_quench, lin["t_ref"].to_numpy() - lin["quench_lookback"].to_numpy(), np.inf)
    log_m = _mass_growth(lin, mergers, t_arr, t_quench)
    quenched = t_arr >= t_quench
    n_major, last = _last_major_merger(lin, mergers, t_arr)

    # star formation
    ms = main_sequence_ssfr(log_m, z_arr) + 0.25 * lin["d_sf"].to_numpy()
    q_level = -12.0 + 0.35 * lin["d_sf"].to_numpy()
    since_q = np.where(quenched, t_arr - t_quench, 0.0)
    w = np.clip(since_q / 0.5, 0.0, 1.0)
    log_ssfr = np.where(quenched, (1 - w) * ms + w * q_level, ms)

    # colours
    color_gr = (0.42 + 0.36 * sigmoid(-(log_ssfr + 10.8) / 0.25) + 0.06 * (log_m - 10.5)
                + 0.03 * lin["d_color"].to_numpy() + physics.color_offset_gr)
    color_ri = 0.12 + 0.35 * color_gr + 0.02 * lin["d_color2"].to_numpy()

    # structure
    bulge = np.clip(0.08 + 0.5 * sigmoid((log_m - 10.6) / 0.3) + 0.2 * quenched + 0.08 * n_major
                    + 0.07 * lin["d_bulge"].to_numpy(), 0.0, 0.9)
    n_b = np.clip(2.0 + 1.2 * (log_m - 10.0) + 0.6 * quenched + 0.4 * lin["d_n"].to_numpy(), 1.0, 6.0)
    n_b = np.round(np.round(n_b / SERSIC_STEP) * SERSIC_STEP, 6)
    log_r_late = 0.80 + 0.22 * (log_m - 10.7)
    log_r_early = 0.60 + 0.75 * (log_m - 10.7)
    log_r = ((1 - bulge) * log_r_late + bulge * log_r_early - 0.75 * np.log10((1 + z_arr) / 1.1)
             + 0.16 * lin["d_size"].to_numpy() + physics.size_offset_dex)
    r_disk = 10.0 ** log_r
    r_bulge = r_disk * (0.4 + 0.5 * bulge)
    r_half = composite_half_light_radius(bulge, n_b, r_bulge, r_disk)
    disk_q0 = 0.12 + 0.13 * lin["u_thick"].to_numpy() + 0.1 * quenched

    exsitu = np.clip((0.03 + 0.6 * sigmoid((log_m - 11.1) / 0.3) + 0.08 * n_major
                      + 0.04 * lin["d_exsitu"].to_numpy()) * np.where(is_central, 1.0, 0.7), 0.0, 0.95)

    # last major merger and its visible feature
    has = last >= 0
    safe = np.where(has, last, 0)
    t_last = np.where(has, mergers["t_gyr"].to_numpy()[safe] if len(mergers) else 0.0, np.nan)
    snap_last = np.where(has, clock.snapshot_at_or_after(np.where(has, t_last, 0.0)), -1).astype(np.int32)
    t_last_snap = np.where(has, clock.times[np.maximum(snap_last, 0)], np.nan)
    lookback = np.where(has, t_arr - t_last_snap, np.nan)
    mu = np.where(has, mergers["mass_ratio"].to_numpy()[safe] if len(mergers) else 0.0, np.nan)
    recent = has & (lookback <= RECENT_MERGER_GYR)
    feature = np.where(recent & (lookback < COMPANION_PHASE_GYR), "companion",
                       np.where(recent, "tidal", "none"))
    mass_secondary = np.where(has, log_m + np.log10(np.where(has, mu / (1 + mu), 1.0)), np.nan)

    def merger_col(name):
        if not len(mergers):
            return np.full(n, np.nan)
        return np.where(has, mergers[name].to_numpy()[safe], np.nan)

    out = pd.DataFrame({
        "lineage_id": lin["lineage_id"].to_numpy(),
        "root_id": lin["root_id"].to_numpy(),
        "group_key": lin["group_key"].to_numpy(),
        "is_central": is_central,
        "kind": lin["kind"].to_numpy(),
        "flag": lin["flag"].to_numpy(),
        "t_gyr": t_arr,
        "redshift": z_arr,
        "log_mstar": np.where(lin["kind"].to_numpy() == "dark", -np.inf, log_m),
        "quenched": quenched,
        "log_ssfr": log_ssfr,
        "color_gr": color_gr,
        "color_ri": color_ri,
        "bulge_fraction": bulge,
        "sersic_n_bulge": n_b,
        "sersic_n": 1.0 + (n_b - 1.0) * bulge,
        "disk_hlr_kpc": r_disk,
        "bulge_hlr_kpc": r_bulge,
        "half_light_radius_kpc": r_half,
        "half_mass_radius_kpc": R3D_OVER_R2D * r_half,
        "disk_q0": disk_q0,
        "exsitu_fraction": exsitu,
        "n_major_mergers": n_major,
        "snap_last_major_merger": snap_last,
        "lookback_last_major_merger": lookback,
        "mass_ratio_last_major_merger": mu,
        "log_mass_last_major_merger": mass_secondary,
        "merger_recent": recent,
        "merger_feature": feature,
        "feature_dx": merger_col("dir_x"),
        "feature_dy": merger_col("dir_y"),
        "feature_dz": merger_col("dir_z"),
        "feature_sep_kpc": merger_col("sep_kpc"),
        "spin_x": lin["spin_x"].to_numpy(),
        "spin_y": lin["spin_y"].to_numpy(),
        "spin_z": lin["spin_z"].to_numpy(),
        "d_gas": lin["d_gas"].to_numpy(),
        "d_bh": lin["d_bh"].to_numpy(),
        "d_dm": lin["d_dm"].to_numpy(),
        "sat_dx_kpc": lin["sat_dx_kpc"].to_numpy(),
        "sat_dy_kpc": lin["sat_dy_kpc"].to_numpy(),
        "sat_dz_kpc": lin["sat_dz_kpc"].to_numpy(),
        "vel_dx": lin["vel_dx"].to_numpy(),
        "vel_dy": lin["vel_dy"].to_numpy(),
        "vel_dz": lin["vel_dz"].to_numpy(),
    })
    return out[alive].reset_index(drop=True)
