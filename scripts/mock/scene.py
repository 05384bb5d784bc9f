"""A galaxy seen by one camera: its light components on the sky, ready to render.

Converts intrinsic properties (physical kpc, fluxes from :mod:`photometry`) and a camera
direction into Sérsic components in arcsec: an exponential disk whose projected axis ratio
and position angle come from projecting its 3-D oblate shape (thickness ``disk_q0``) along
the line of sight, a Sérsic bulge (intrinsic axis ratio 0.75, same spin axis), and, after a
recent major merger, either a second nucleus (n = 2, half-light radius 0.6 R √μ, carrying
0.45 μ/(1+μ) of the light, approaching the centre as the merger ages) or a one-sided tidal
tail (exponential, q = 0.25 foreshortened by projection, offset 1.2 R, 3–18 % of the light
fading over 2 Gyr). Both sit along the merger's fixed 3-D direction, so all projections of
one galaxy agree. The disk is dimmed by dust (:mod:`dust`). The cut-out covers 15 stellar
half-mass radii, but at least 50 and at most 100 kpc as in the real TNG–HSC archive (header
FOVKPC), clipped to the size preset's pixel range: the extract stage's default crop (4 R90, ``PETRO_RADIUS_FACTOR`` 2)
spans 9.5 half-mass radii for the median galaxy and 12.5 at the 90th percentile, so with
the former 10 (and the demo's 96-px cap) half of the simulated images were padded beyond
their frame; the real TNG–HSC mocks frame each galaxy generously too (the example in
data/: 50 kpc on 88 px). Larger frames cost disk and I/O, not render time (the
FFT size is set by the profiles).
"""
from __future__ import annotations

import numpy as np

from scripts.mock import dust, geometry
from scripts.mock.instrument import Conditions, HSCInstrument
from scripts.mock.photometry import component_fluxes, magnitude
from scripts.mock.physics import COMPANION_PHASE_GYR, RECENT_MERGER_GYR
from scripts.mock.render import GalaxyScene, SersicComponent

BULGE_Q0 = 0.75
#: Cut-out side in stellar half-mass radii (see the module docstring) ...
FOV_HALF_MASS_RADII = 15.0
#: ... kept within the real TNG–HSC archive's fields of view (header FOVKPC, 50–100 kpc).
FOV_KPC_RANGE = (50.0, 100.0)


def cutout_npix(half_mass_radius_kpc: float, kpc_per_arcsec: float, pixel_scale: float,
                npix_range: tuple[int, int]) -> int:
    """Even cut-out side [px] covering :data:`FOV_HALF_MASS_RADII` half-mass radii, at least
    and at most :data:`FOV_KPC_RANGE`, clipped to ``npix_range``."""
    fov_kpc = float(np.clip(FOV_HALF_MASS_RADII * half_mass_radius_kpc, *FOV_KPC_RANGE))
    want = fov_kpc / kpc_per_arcsec / pixel_scale
    npix = 2 * int(round(want / 2.0))
    return int(np.clip(npix, npix_range[0], npix_range[1]))


def build_scene(gal, camera, kpc_per_arcsec: float, distance_modulus: float,
                instrument: HSCInstrument, conditions: Conditions, rng: np.random.Generator,
                npix_range: tuple[int, int], seed: tuple[int, ...]):
    """Scene and per-view truth of galaxy ``gal`` (a mapping of :func:`physics.evaluate`
    columns) seen along unit vector ``camera``; ``rng`` draws the field neighbours."""
    spin = np.array([gal["spin_x"], gal["spin_y"], gal["spin_z"]])
    q_disk, pa = geometry.project_ellipsoid(geometry.oblate_matrix(spin, gal["disk_q0"]), camera)
    q_bulge, _ = geometry.project_ellipsoid(geometry.oblate_matrix(spin, BULGE_Q0), camera)
    incl = geometry.inclination(spin, camera)

    bulge_f, disk_f = component_fluxes(gal["log_mstar"], gal["color_gr"], gal["color_ri"],
                                       gal["bulge_fraction"], distance_modulus)
    tau_v = dust.face_on_tau_v(gal["log_mstar"], gal["log_ssfr"])
    disk_f = disk_f * dust.disk_transmission(tau_v, incl, [b.wl_pivot for b in instrument.bands])
    total = bulge_f + disk_f
    r_arc = gal["half_light_radius_kpc"] / kpc_per_arcsec
    to_arc = 1.0 / kpc_per_arcsec

    extra = []
    main_scale = 1.0
    feature = gal["merger_feature"]
    if feature != "none":
        d3 = np.array([gal["feature_dx"], gal["feature_dy"], gal["feature_dz"]])
        px, py = geometry.project_vector(d3, camera)
        age = gal["lookback_last_major_merger"]
        mu = gal["mass_ratio_last_major_merger"]
        if feature == "companion":
            frac = 0.45 * mu / (1.0 + mu)
            sep = gal["feature_sep_kpc"] * (1.0 - 0.6 * age / COMPANION_PHASE_GYR) * to_arc
            extra.append(SersicComponent(2.0, 0.6 * r_arc * np.sqrt(mu), 0.8, (pa + 60.0) % 180.0,
                                         px * sep, py * sep, tuple(frac * total)))
        else:
            frac = 0.03 + 0.15 * (1.0 - (age - COMPANION_PHASE_GYR) / (RECENT_MERGER_GYR - COMPANION_PHASE_GYR))
            proj = float(np.hypot(px, py))
            q_tail = max(0.25, 1.0 - 0.75 * proj)
            angle = float(np.degrees(np.arctan2(py, px)) % 180.0)
            disk_colour = disk_f / max(disk_f[1], 1e-30)
            tail = frac * total[1] * disk_colour
            extra.append(SersicComponent(1.0, 1.5 * r_arc, q_tail, angle, 1.2 * r_arc * px,
                                         1.2 * r_arc * py, tuple(tail)))
        main_scale = 1.0 - frac

    comps = [SersicComponent(1.0, gal["disk_hlr_kpc"] * to_arc, q_disk, pa, 0.0, 0.0,
                             tuple(main_scale * disk_f))]
    if gal["bulge_fraction"] > 0:
        comps.append(SersicComponent(float(gal["sersic_n_bulge"]), gal["bulge_hlr_kpc"] * to_arc,
                                     q_bulge, pa, 0.0, 0.0, tuple(main_scale * bulge_f)))
    comps.extend(extra)
    subject_flux = np.sum([c.flux for c in comps], axis=0)

    npix = cutout_npix(gal["half_mass_radius_kpc"], kpc_per_arcsec, instrument.pixel_scale, npix_range)
    fov_arcsec = npix * instrument.pixel_scale
    neighbours = instrument.sample_neighbours(rng, fov_arcsec)
    scene = GalaxyScene(npix, instrument.pixel_scale, instrument.psf_beta, tuple(comps),
                        neighbours, conditions, tuple(int(s) for s in seed))
    view = {
        "inclination": incl,
        "position_angle": pa,
        "axis_ratio": q_disk,
        "npix": npix,
        "fov_arcsec": fov_arcsec,
        "fov_kpc": fov_arcsec * kpc_per_arcsec,
        "kpc_per_arcsec": kpc_per_arcsec,
        "half_light_radius_arcsec": r_arc,
        "g_mag": float(magnitude(subject_flux[0])),
        "r_mag": float(magnitude(subject_flux[1])),
        "i_mag": float(magnitude(subject_flux[2])),
        "psf_fwhm_r": conditions.psf_fwhm[1],
        "n_neighbours": len(neighbours),
        "dust_tau_v": tau_v,
    }
    return scene, view
