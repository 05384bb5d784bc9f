"""Driver of the mock: runs every step for every dataset and writes the real formats.

Steps: 1 :mod:`~scripts.mock.population` (initial conditions) → 2
:mod:`~scripts.mock.physics` (galaxies at an epoch) → 3 :mod:`~scripts.mock.simulation`
(group catalogues) → 4 :mod:`~scripts.mock.scene` (what each camera sees) → 5
:mod:`~scripts.mock.jobs` (images rendered in parallel); then the ground truth.

Writes (see the README, "The mock universe"):

* ``<illustris_root>/MockTNG-Fiducial`` and ``MockTNG-Compact``: group catalogues and
  supplementary files at snapshots 78 and 84 (z = 0.30, 0.20) — the same initial conditions, different
  galaxy physics (:mod:`physics`); ``MockTNG-Cluster``: snapshot 99 plus
  ``postprocessing/CCcriteria.hdf5`` built from real TNG-Cluster rows.
* ``<raw_root>/MOCK_FIDUCIAL|MOCK_COMPACT/images/shalo_{snap:03d}-{subhalo}_v{proj}_HSC_GRIZY.fits``
  for every subhalo with M★ ≥ 10^9.5 M☉ (also SubhaloFlag = 0 ones), ``num_projections``
  cameras each; ``MOCK_HSC/images/{object_id}_HSC_GRIZY.fits`` + ``MOCK_HSC/catalogue.csv``;
  ``MOCK_XRAY/images/xray_099-{haloid}_v{proj}_0.5-5.0keV.fits``.
* ``<raw_root>/MOCK_HSC_CUTOUTS`` and ``MOCK_LEGACY_CUBES``: small observed sets in the
  layouts of real cut-out services (one file per band, HSC cutout service; a (bands, H, W)
  cube, Legacy Survey), file names without catalogue ids and ``catalogue.csv`` keyed by
  RA/Dec (:mod:`observed`; ``params.observed.yaml`` extracts them).
* ``<raw_root>/<DATASET>/truth.parquet``: one row per image file (``file`` is the name
  inside ``images/``; ``snapshot`` is −1 for the survey set) with every intrinsic parameter
  behind it. Units: stellar_mass, mass_in_rad, halo_mass, m200c, m500c in log10 M☉; sfr in
  log10 M☉/yr and ssfr in log10 /yr (the physical values; the catalogue's SubhaloSFR is 0
  below sSFR 10^−12.5); radii in physical kpc (``*_arcsec`` on the sky); angles in degrees;
  lookback times in Gyr; central_cooling_time in Gyr, central_entropy in keV cm²,
  central_density in cm⁻³; cool_core = 1 for a strong cool core (cc_class 0; 1 weak, 2 none).

Random numbers: every stage and every image has its own seed derived from
(seed, dataset code, snapshot, object id, projection), so a build is reproducible and the
pixels do not depend on ``n_jobs``. Each build first removes the outputs of a previous one
(only the folders named above).
"""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.mock import cc_criteria, geometry, observed, physics, survey, xray
from scripts.mock.cosmology import SnapshotClock, TNGCosmology
from scripts.mock.instrument import HSC_BANDS, HSCInstrument
from scripts.mock.jobs import GalaxyImageTask, XrayImageTask, run_tasks
from scripts.mock.population import IMAGING_LOG_MSTAR, sample_population
from scripts.mock.scene import build_scene
from scripts.mock.simulation import build_snapshot
from scripts.mock.sizes import UniverseSize, get_size
from scripts.mock.tng_catalogue import (header_attrs, supplementary_paths, write_datasets,
                                        write_group_catalogue)
from TNG.redshifts import load_snapshot_redshifts

log = logging.getLogger(__name__)

#: Snapshots of the simulated galaxy runs, (earlier, later): z = 0.30 and 0.20, inside the
#: real TNG–HSC archive's 72–91 (z ≈ 0.1–0.4), so the galaxies are as faint and as small on
#: the sky as the archive's (r ≈ 19–22.5); 1.2 Gyr apart, so most galaxies of the later
#: snapshot have their progenitor imaged at the earlier one.
GALAXY_SNAPSHOTS = (78, 84)
CLUSTER_SNAPSHOT = 99
#: dataset → (simulation, physics, seed code)
GALAXY_RUNS = {
    "MOCK_FIDUCIAL": ("MockTNG-Fiducial", physics.FIDUCIAL, 1),
    "MOCK_COMPACT": ("MockTNG-Compact", physics.COMPACT, 2),
}
SURVEY_DATASET, SURVEY_CODE = "MOCK_HSC", 3
#: Observed sets in the layouts of real cut-out services: name → (layout, seed offset).
OBSERVED_SETS = {"MOCK_HSC_CUTOUTS": ("band_files", 5), "MOCK_LEGACY_CUBES": ("cube", 6)}
#: Objects per observed set.
OBSERVED_SIZE = 12
XRAY_DATASET, XRAY_SIM, XRAY_CODE = "MOCK_XRAY", "MockTNG-Cluster", 4
#: Seed code of the observing field (conditions, neighbours) of a simulated galaxy's view.
FIELD_CODE = 7
GALAXY_BOX = 75000.0     # ckpc/h (TNG100)
CLUSTER_BOX = 680000.0   # ckpc/h (TNG-Cluster parent box)
Z_FIRST_MERGERS = 2.0
BANDS = tuple(b.name for b in HSC_BANDS)

_TRUTH_GALAXY = [
    "stellar_mass", "mass_in_rad", "halo_mass", "half_mass_radius_kpc", "half_light_radius_kpc",
    "sersic_n", "sersic_n_bulge", "bulge_fraction", "color_gr", "color_ri", "sfr", "ssfr",
    "quenched", "exsitu_fraction", "merger_recent", "merger_feature", "snap_last_major_merger",
    "lookback_last_major_merger", "mass_ratio_last_major_merger", "n_major_mergers", "redshift",
]


def default_cc_criteria_path() -> Path:
    """The real TNG-Cluster CCcriteria.hdf5 shipped in data/ (config.cc_criteria_path)."""
    import config
    return config.cc_criteria_path


def default_snapshot_redshifts_path() -> Path:
    """The real TNG snapshot → redshift table (config.snapshot_redshifts_path)."""
    import config
    return config.snapshot_redshifts_path


def _clean(raw_root: Path, illustris_root: Path) -> None:
    """Remove the folders a previous build wrote (and nothing else)."""
    for ds in (*GALAXY_RUNS, SURVEY_DATASET, XRAY_DATASET, *OBSERVED_SETS):
        shutil.rmtree(raw_root / ds, ignore_errors=True)
    for sim in (*(v[0] for v in GALAXY_RUNS.values()), XRAY_SIM):
        shutil.rmtree(illustris_root / sim, ignore_errors=True)


def _write_snapshot(sim_dir: Path, cat, box: float, num_files: int) -> None:
    write_group_catalogue(sim_dir, cat.snap, cat.groups, cat.subhalos, header_attrs(cat.redshift, box), num_files)
    paths = supplementary_paths(sim_dir, cat.snap)
    for name, datasets in cat.supplementary.items():
        write_datasets(paths[name], datasets)


def _hsc_cards(band, sim: dict | None, view: dict, cond, b: int, npix: int, pixel_scale: float,
               apmag: float, cosmo: TNGCosmology) -> tuple:
    """Header cards of one band: simulation keys as in the real TNG–HSC mock (``sim`` given),
    or those of a survey cut-out (``sim`` None: celestial WCS, no simulation truth)."""
    cards = [("ORIGIN", "scripts.mock (GalSim)" if sim else "scripts.mock MOCK_HSC", "Image origin")]
    if sim:
        kpc_px = view["kpc_per_arcsec"] * pixel_scale
        cards += [
            ("SIMTAG", sim["simtag"], "Simulation name"),
            ("SNAPNUM", sim["snap"], "Simulation snapshot"),
            ("SUBHALO", sim["subhalo"], "Subhalo ID"),
            ("CAMERA", f"v{sim['proj']}", "Camera ID"),
            ("INCL", sim["cam_polar"], "Camera polar angle [deg]"),
            ("AZIM", sim["cam_azim"], "Camera azimuth [deg]"),
            ("ROLL", 0.0, "Camera roll"),
            ("COSMO", "Planck15", "Cosmology"),
            ("REDSHIFT", sim["redshift"], "Redshift"),
        ]
    else:
        cards += [("OBJID", int(view["object_id"]), "HSC-like object_id")]
    cards += [
        ("FILTER", band.filter_name, "Filter name"),
        ("WLPIVOT", band.wl_pivot, "Pivot wavelength (micron)"),
        ("BUNIT", "AB nanomaggies, m_AB = 22.5-2.5log10(f)", "Image units"),
    ]
    if sim:
        cards += [
            ("FOVSIZE", view["fov_kpc"], "Field of view [kpc]"),
            ("CRPIX1", npix // 2, "X-axis coordinate system reference pixel"),
            ("CRVAL1", 0.0, "Coordinate system value at X-axis reference pix"),
            ("CDELT1", kpc_px * 1000.0, "Coordinate increment along X-axis"),
            ("CTYPE1", "pc", "Physical units of the X-axis increment"),
            ("CRPIX2", npix // 2, "Y-axis coordinate system reference pixel"),
            ("CRVAL2", 0.0, "Coordinate system value at Y-axis reference pix"),
            ("CDELT2", kpc_px * 1000.0, "Coordinate increment along Y-axis"),
            ("CTYPE2", "pc", "Physical units of the Y-axis increment"),
            ("FOVKPC", view["fov_kpc"], "Field of view (kpc)"),
            ("FOVARC", view["fov_arcsec"], "Field of view (arcsec)"),
            ("KPCARC", view["kpc_per_arcsec"], "Angular scale (kpc/arcsec)"),
            ("DLUM", float(cosmo.luminosity_distance_mpc(sim["redshift"])), "Luminosity distance (Mpc)"),
            ("APMAG", apmag, f"Apparent {band.name}-band AB magnitude"),
            ("DR", "mock", "HSC-SSP-like data release"),
            ("RERUN", "mock_wide", "HSC-SSP-like rerun"),
        ]
    else:
        cards += [
            ("CTYPE1", "RA---TAN", ""), ("CTYPE2", "DEC--TAN", ""),
            ("CRPIX1", npix / 2.0 + 0.5, ""), ("CRPIX2", npix / 2.0 + 0.5, ""),
            ("CRVAL1", cond.ra, "[deg]"), ("CRVAL2", cond.dec, "[deg]"),
            ("CD1_1", -pixel_scale / 3600.0, ""), ("CD1_2", 0.0, ""),
            ("CD2_1", 0.0, ""), ("CD2_2", pixel_scale / 3600.0, ""),
            ("CUNIT1", "deg", ""), ("CUNIT2", "deg", ""),
            ("FOVARC", view["fov_arcsec"], "Field of view (arcsec)"),
            ("DR", "mock", "HSC-SSP-like data release"),
            ("RERUN", "mock_wide", "HSC-SSP-like rerun"),
        ]
    cards += [
        ("RA", cond.ra, "insertion right ascension (centroid)"),
        ("DEC", cond.dec, "insertion declination (centroid)"),
        ("BGMEAN", cond.bg_offset[b], "residual background mean [nanomaggies]"),
        ("BGVAR", cond.sky_sigma[b] ** 2, "background variance [nanomaggies^2]"),
        ("VARSC", cond.var_scale, "variance scale (true / variance plane)"),
        ("PSFFWHM", cond.psf_fwhm[b], "PSF FWHM (arcsec), Moffat beta=3"),
    ]
    return tuple(cards)


def _galaxy_truth(gal: dict, view: dict) -> dict:
    """Truth row of one galaxy image: intrinsic properties plus this view's geometry."""
    row = {
        "stellar_mass": gal["log_mstar"],
        "sfr": gal["log_ssfr"] + gal["log_mstar"],
        "ssfr": gal["log_ssfr"],
    }
    for key in _TRUTH_GALAXY:
        if key not in row and key in gal:
            row[key] = gal[key]
    for key in ("inclination", "position_angle", "axis_ratio", "half_light_radius_arcsec", "g_mag",
                "r_mag", "i_mag", "npix", "fov_kpc", "fov_arcsec", "psf_fwhm_r", "n_neighbours", "dust_tau_v"):
        row[key] = view[key]
    return row


def _galaxy_dataset(dataset, sim, phys, code, population, clock, cosmo, instrument, size,
                    cameras, raw_root, illustris_root, seed):
    """Catalogues of one run; returns (tasks, truth rows, per-snapshot counts)."""
    sim_dir = illustris_root / sim
    img_dir = raw_root / dataset / "images"
    tasks, truth, counts = [], [], {}
    for snap in GALAXY_SNAPSHOTS:
        z, t = clock.redshift(snap), clock.time(snap)
        gals = physics.evaluate(population, phys, t, z, clock)
        cat = build_snapshot(gals, population, snap, clock, size.n_empty_groups,
                             np.random.default_rng([seed, code, snap, 2]), cosmo)
        _write_snapshot(sim_dir, cat, GALAXY_BOX, size.num_files)
        table = cat.table
        imaged = table[(table["kind"] != "dark") & (table["log_mstar"] >= IMAGING_LOG_MSTAR)]
        counts[snap] = {"subhalos": len(table), "groups": len(cat.groups["GroupMass"]), "imaged": len(imaged)}
        kpa = float(cosmo.kpc_per_arcsec(z))
        dm = float(cosmo.distance_modulus(z))
        for gal in imaged.to_dict("records"):
            sid = int(gal["subhalo_id"])
            for p, cam in enumerate(cameras):
                # the sky (conditions, neighbours) of a view is the same in both runs: same
                # camera, same patch of survey, so the runs differ by their physics only
                rng = np.random.default_rng([seed, FIELD_CODE, snap, sid, p])
                cond = instrument.sample_conditions(rng)
                scene, view = build_scene(gal, cam, kpa, dm, instrument, cond, rng, size.galaxy_npix,
                                          (seed, code, snap, sid, p, 1))
                polar, azim = geometry.camera_angles(cam)
                meta = {"simtag": sim, "snap": snap, "subhalo": sid, "proj": p, "cam_polar": polar,
                        "cam_azim": azim, "redshift": z}
                cards = tuple(_hsc_cards(band, meta, view, cond, b, scene.npix, instrument.pixel_scale,
                                         view[f"{band.name.lower()}_mag"], cosmo)
                              for b, band in enumerate(instrument.bands))
                fname = f"shalo_{snap:03d}-{sid}_v{p}_HSC_GRIZY.fits"
                tasks.append(GalaxyImageTask(str(img_dir / fname), scene, BANDS, cards))
                truth.append({
                    "file": fname, "object_id": sid, "snapshot": snap, "projection": p,
                    "simulation": sim, "subhalo_id": sid, "group_id": int(gal["group_id"]),
                    "root_descendant_id": int(gal["root_descendant_id"]),
                    "is_central": bool(gal["is_central"]), "subhalo_flag": int(gal["flag"]),
                    **_galaxy_truth(gal, view),
                })
    return tasks, truth, counts


def _survey_dataset(population, clock, cosmo, instrument, size, raw_root, seed):
    """Observed set: Fiducial physics at survey redshifts, random views; returns (tasks,
    truth rows, observing conditions per object for the catalogue's photometric errors)."""
    rng = np.random.default_rng([seed, SURVEY_CODE, 0, 3])
    lin = population.lineages
    z_all = survey.sample_redshifts(rng, len(lin))
    gals = physics.evaluate(population, physics.FIDUCIAL, cosmo.age_gyr(z_all), z_all, clock)
    cand = gals[(gals["kind"] == "galaxy") & (gals["flag"] == 1) & (gals["log_mstar"] >= IMAGING_LOG_MSTAR)]
    if len(cand) < size.n_hsc:
        raise RuntimeError(f"survey population too small: {len(cand)} galaxies for n_hsc={size.n_hsc}; "
                           "raise n_hsc_groups in scripts/mock/sizes.py")
    chosen = cand.iloc[np.sort(rng.choice(len(cand), size.n_hsc, replace=False))]
    ids = survey.object_ids(rng, size.n_hsc)
    img_dir = raw_root / SURVEY_DATASET / "images"
    tasks, truth, conds = [], [], []
    for oid, gal in zip(ids, chosen.to_dict("records")):
        r = np.random.default_rng([seed, SURVEY_CODE, 0, int(oid), 0])
        cam = r.standard_normal(3)
        cam /= np.linalg.norm(cam)
        z = gal["redshift"]
        cond = instrument.sample_conditions(r)
        scene, view = build_scene(gal, cam, float(cosmo.kpc_per_arcsec(z)), float(cosmo.distance_modulus(z)),
                                  instrument, cond, r, size.galaxy_npix, (seed, SURVEY_CODE, 0, int(oid), 0, 1))
        view["object_id"] = int(oid)
        cards = tuple(_hsc_cards(band, None, view, cond, b, scene.npix, instrument.pixel_scale, 0.0, cosmo)
                      for b, band in enumerate(instrument.bands))
        fname = f"{int(oid)}_HSC_GRIZY.fits"
        tasks.append(GalaxyImageTask(str(img_dir / fname), scene, BANDS, cards, measure_band=1))
        truth.append({"file": fname, "object_id": int(oid), "snapshot": -1, "projection": 0,
                      "is_central": bool(gal["is_central"]), **_galaxy_truth(gal, view)})
        conds.append(cond)
    return tasks, truth, conds


def _xray_dataset(clock, cosmo, size, cameras, cc_path, raw_root, illustris_root, seed):
    """MockTNG-Cluster catalogue, its CCcriteria file from real rows, and X-ray map tasks."""
    cc = cc_criteria.read_real_cc_criteria(cc_path)
    rows_ok = cc_criteria.usable_rows(cc, CLUSTER_SNAPSHOT)
    rng = np.random.default_rng([seed, XRAY_CODE, CLUSTER_SNAPSHOT, 1])
    t99, z99 = clock.time(CLUSTER_SNAPSHOT), clock.redshift(CLUSTER_SNAPSHOT)
    pop = sample_population(rng, size.n_clusters, t99, z99, log_m200_range=(14.0, 15.3), slope=1.5,
                            satellite_norm=0.015, box_size=CLUSTER_BOX, rho_crit_ref=float(cosmo.rho_crit(z99)),
                            merger_window=(float(cosmo.age_gyr(Z_FIRST_MERGERS)), t99))
    gals = physics.evaluate(pop, physics.FIDUCIAL, t99, z99, clock)
    cat = build_snapshot(gals, pop, CLUSTER_SNAPSHOT, clock, 2, np.random.default_rng([seed, XRAY_CODE, 99, 2]), cosmo)
    sim_dir = illustris_root / XRAY_SIM
    _write_snapshot(sim_dir, cat, CLUSTER_BOX, size.num_files)
    rows = cc_criteria.draw_rows(rng, rows_ok, size.n_clusters,
                                 source=f"{cc_path} at snapshot {CLUSTER_SNAPSHOT}")
    if size.n_clusters > len(rows_ok):
        log.info("%d clusters from the %d usable rows of %s: rows drawn with replacement",
                 size.n_clusters, len(rows_ok), cc_path)
    halo_ids = np.arange(size.n_clusters)
    cc_criteria.write_mock_cc_criteria(sim_dir / "postprocessing" / "CCcriteria.hdf5", cc, rows, halo_ids)

    h = cosmo.h
    m200 = cat.groups["Group_M_Crit200"].astype(float) * 1e10 / h
    r200 = cat.groups["Group_R_Crit200"].astype(float) / h  # a = 1 at z = 0
    m500 = cat.groups["Group_M_Crit500"].astype(float) * 1e10 / h
    img_dir = raw_root / XRAY_DATASET / "images"
    tasks, truth = [], []
    s = CLUSTER_SNAPSHOT
    for hid, row in zip(halo_ids, rows):
        tcool = float(cc["centralCoolingTime"][row, s])
        k0 = float(cc["centralEntropy"][row, s])
        cc_class = int(cc["centralCoolingTime_flag"][row, s])
        model = xray.cluster_model(np.random.default_rng([seed, XRAY_CODE, s, int(hid)]),
                                   float(np.log10(m200[hid])), float(r200[hid]), tcool, k0)
        for p, cam in enumerate(cameras):
            q, angle = geometry.project_ellipsoid(model.shape_matrix(), cam)
            fov = 2.0 * float(r200[hid])
            scene = xray.XrayScene(size.xray_npix, fov, model, q, angle, (seed, XRAY_CODE, s, int(hid), p, 1))
            polar, azim = geometry.camera_angles(cam)
            fname = f"xray_{s:03d}-{int(hid)}_v{p}_{xray.BAND}.fits"
            cards = (
                ("ORIGIN", "scripts.mock (beta model)", "Image origin"),
                ("SIMTAG", XRAY_SIM, "Simulation name"),
                ("SNAPNUM", s, "Simulation snapshot"),
                ("HALOID", int(hid), "FoF group ID"),
                ("CAMERA", f"v{p}", "Camera ID"),
                ("INCL", polar, "Camera polar angle [deg]"),
                ("AZIM", azim, "Camera azimuth [deg]"),
                ("REDSHIFT", float(z99), "Redshift"),
                ("EMIN", 0.5, "Band lower energy [keV]"),
                ("EMAX", 5.0, "Band upper energy [keV]"),
                ("BUNIT", "counts", "Photon counts per pixel (mock exposure)"),
                ("FOVKPC", fov, "Field of view (physical kpc) = 2 R200c"),
                ("KPCPIX", fov / size.xray_npix, "Pixel size (physical kpc)"),
                ("R200C", float(r200[hid]), "R200c (physical kpc)"),
                ("CRPIX1", size.xray_npix // 2, ""), ("CRPIX2", size.xray_npix // 2, ""),
                ("CDELT1", fov / size.xray_npix, ""), ("CDELT2", fov / size.xray_npix, ""),
                ("CTYPE1", "kpc", ""), ("CTYPE2", "kpc", ""),
            )
            tasks.append(XrayImageTask(str(img_dir / fname), scene, cards))
            truth.append({
                "file": fname, "object_id": int(hid), "snapshot": s, "projection": p, "simulation": XRAY_SIM,
                "halo_id": int(hid), "source_halo_id": int(cc["HaloIDs"][row]),
                "m200c": float(np.log10(m200[hid])), "m500c": float(np.log10(m500[hid])),
                "r200c_kpc": float(r200[hid]),
                "central_cooling_time": tcool, "central_entropy": k0,
                "central_density": float(cc["centraleNumDens"][row, s]),
                "cc_class": cc_class, "cool_core": int(cc_class == 0),
                "beta": model.beta, "core_radius_kpc": model.core_radius_kpc,
                "cusp_fraction": model.cusp_fraction, "cusp_radius_kpc": model.cusp_radius_kpc,
                "concentration": xray.concentration(model),
                "ellipticity": 1.0 - q, "position_angle": angle,
                "axis_ratio_ba": model.axis_ratios[0], "axis_ratio_ca": model.axis_ratios[1],
                "expected_counts": model.expected_counts, "redshift": float(z99),
                "fov_kpc": fov, "npix": size.xray_npix,
            })
    counts = {"subhalos": len(cat.table), "groups": len(cat.groups["GroupMass"]), "imaged": size.n_clusters}
    return tasks, truth, counts


@dataclass
class UniversePlan:
    """Catalogues written, images planned: render tasks and truth rows per dataset."""

    raw_root: Path
    illustris_root: Path
    size: str
    seed: int
    num_projections: int
    tasks: dict = field(default_factory=dict)
    truth: dict = field(default_factory=dict)
    survey_conditions: list = field(default_factory=list)
    simulations: dict = field(default_factory=dict)
    pixel_scale: float = HSCInstrument().pixel_scale

    def all_tasks(self) -> list:
        return [t for ds in self.tasks for t in self.tasks[ds]]


def plan_universe(raw_root: Path, illustris_root: Path, size: "str | UniverseSize" = "small", num_projections: int = 3,
                  seed: int = 0, cc_criteria_path: Path | None = None,
                  snapshot_redshifts_path: Path | None = None) -> UniversePlan:
    """Remove a previous build, write all catalogues and plan every image (no rendering)."""
    raw_root, illustris_root = Path(raw_root), Path(illustris_root)
    preset = get_size(size)
    if num_projections < 1:
        raise ValueError(f"num_projections must be ≥ 1, got {num_projections}")
    cc_path = Path(cc_criteria_path) if cc_criteria_path else default_cc_criteria_path()
    clock = SnapshotClock(load_snapshot_redshifts(snapshot_redshifts_path or default_snapshot_redshifts_path()))
    cosmo = clock.cosmology
    instrument = HSCInstrument()
    cameras = geometry.camera_directions(num_projections)
    _clean(raw_root, illustris_root)
    plan = UniversePlan(raw_root, illustris_root, preset.name, seed, num_projections,
                        pixel_scale=instrument.pixel_scale)

    early, late = GALAXY_SNAPSHOTS
    t_early, t_late = clock.time(early), clock.time(late)
    z_late = clock.redshift(late)
    t_first = float(cosmo.age_gyr(Z_FIRST_MERGERS))
    population = sample_population(np.random.default_rng([seed, 0, 1]), preset.n_groups, t_late, z_late,
                                   box_size=GALAXY_BOX, rho_crit_ref=float(cosmo.rho_crit(z_late)),
                                   merger_window=(t_first, t_late), secondary_after=t_early)
    for dataset, (sim, phys, code) in GALAXY_RUNS.items():
        plan.tasks[dataset], plan.truth[dataset], plan.simulations[sim] = _galaxy_dataset(
            dataset, sim, phys, code, population, clock, cosmo, instrument, preset, cameras,
            raw_root, illustris_root, seed)

    hsc_pop = sample_population(np.random.default_rng([seed, SURVEY_CODE, 1]), preset.n_hsc_groups, t_late, z_late,
                                box_size=GALAXY_BOX, rho_crit_ref=float(cosmo.rho_crit(z_late)),
                                merger_window=(t_first, float(cosmo.age_gyr(0.04))))
    plan.tasks[SURVEY_DATASET], plan.truth[SURVEY_DATASET], plan.survey_conditions = _survey_dataset(
        hsc_pop, clock, cosmo, instrument, preset, raw_root, seed)
    plan.tasks[XRAY_DATASET], plan.truth[XRAY_DATASET], counts = _xray_dataset(
        clock, cosmo, preset, cameras, cc_path, raw_root, illustris_root, seed)
    plan.simulations[XRAY_SIM] = {CLUSTER_SNAPSHOT: counts}
    return plan


def finish_universe(plan: UniversePlan, results: list[dict]) -> None:
    """Write truth tables and the survey catalogue once the images exist; ``results`` are
    the task results in :meth:`UniversePlan.all_tasks` order."""
    measured, offset = {}, 0
    for ds, tasks in plan.tasks.items():
        measured[ds] = results[offset:offset + len(tasks)]
        offset += len(tasks)
    conds = plan.survey_conditions
    catalogue = survey.observe_catalogue(
        np.random.default_rng([plan.seed, SURVEY_CODE, 0, 4]), pd.DataFrame(plan.truth[SURVEY_DATASET]),
        measured[SURVEY_DATASET], np.array([c.sky_sigma for c in conds]), plan.pixel_scale,
        np.array([c.ra for c in conds]), np.array([c.dec for c in conds]))
    catalogue.to_csv(plan.raw_root / SURVEY_DATASET / "catalogue.csv", index=False)
    for ds, rows in plan.truth.items():
        pd.DataFrame(rows).to_parquet(plan.raw_root / ds / "truth.parquet", index=False)


def build_universe(raw_root: Path, illustris_root: Path, size: str = "small", num_projections: int = 3,
                   seed: int = 0, n_jobs: int = 1, cc_criteria_path: Path | None = None,
                   snapshot_redshifts_path: Path | None = None) -> dict:
    """Write the mock universe; returns a summary (image counts per dataset, catalogue
    counts per simulation and snapshot, wall time in s). Reproducible for a given seed,
    whatever ``n_jobs`` (rendering processes)."""
    t0 = time.perf_counter()
    if n_jobs < 1:
        raise ValueError(f"n_jobs (workers) must be ≥ 1, got {n_jobs}")
    plan = plan_universe(raw_root, illustris_root, size, num_projections, seed, cc_criteria_path,
                         snapshot_redshifts_path)
    tasks = plan.all_tasks()
    log.info("rendering %d images with %d worker(s)", len(tasks), n_jobs)
    finish_universe(plan, run_tasks(tasks, n_jobs=n_jobs, desc="mock images"))
    observed_sets = {}
    for name, (layout, code) in OBSERVED_SETS.items():
        truth = observed.write_observed_set(plan.raw_root / name, layout, "sky", n=OBSERVED_SIZE,
                                            seed=seed * 100 + code)
        observed_sets[name] = len(truth)
    return {
        "size": plan.size, "seed": seed, "num_projections": num_projections, "n_jobs": n_jobs,
        "raw_root": str(plan.raw_root), "illustris_root": str(plan.illustris_root),
        "images": {ds: len(rows) for ds, rows in plan.truth.items()},
        "observed_sets": observed_sets,
        "simulations": plan.simulations,
        "seconds": round(time.perf_counter() - t0, 2),
    }
