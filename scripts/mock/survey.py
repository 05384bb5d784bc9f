"""The observed survey set MOCK_HSC: galaxies with Fiducial physics seen like HSC-SSP.

Redshifts follow a normal distribution (mean 0.25, σ 0.07) clipped to 0.1–0.4, the range
of the real TNG–HSC archive (snapshots 72–91), around the simulated snapshots (z = 0.20 and
0.30); orientations are random. Object ids
look like HSC-SSP ``object_id`` (17-digit integers). The catalogue has observables only:
``photoz`` (σ_z = 0.03 (1+z), 3 % outliers), cModel-like g/r/i magnitudes (true flux plus
sky noise in an aperture of 2 Petrosian radii and 1 % calibration scatter) with errors, and
Petrosian R50/R90 in arcsec measured on the noiseless, PSF-convolved r-band image of the
galaxy (deblended: neighbours excluded) by the extract stage's own Petrosian fit
(:mod:`scripts.mock.measure`); empty where that fit fails.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from scripts.mock.photometry import ZERO_POINT, nanomaggies

OBJECT_ID_RANGE = (36_000_000_000_000_000, 44_000_000_000_000_000)


def sample_redshifts(rng: np.random.Generator, n: int, mean: float = 0.25, sigma: float = 0.07,
                     lo: float = 0.1, hi: float = 0.4) -> np.ndarray:
    z = mean + sigma * rng.standard_normal(n)
    bad = (z < lo) | (z > hi)
    while bad.any():
        z[bad] = mean + sigma * rng.standard_normal(bad.sum())
        bad = (z < lo) | (z > hi)
    return z


def object_ids(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` distinct HSC-like object ids, sorted."""
    ids = np.unique(rng.integers(*OBJECT_ID_RANGE, size=n, dtype=np.int64))
    while len(ids) < n:
        ids = np.unique(np.concatenate([ids, rng.integers(*OBJECT_ID_RANGE, size=n - len(ids), dtype=np.int64)]))
    return ids


def observe_catalogue(rng: np.random.Generator, truth: pd.DataFrame, measurements: list[dict],
                      sky_sigma: np.ndarray, pixel_scale: float, ra: np.ndarray, dec: np.ndarray,
                      outlier_fraction: float = 0.03, sigma_z: float = 0.03) -> pd.DataFrame:
    """Survey catalogue rows for ``truth`` (object_id, redshift, g/r/i_mag columns);
    ``measurements`` are :func:`scripts.mock.measure.petrosian_radii` per object (radii and
    photometric aperture [px]), ``sky_sigma`` (N, 3) per band."""
    n = len(truth)
    z = truth["redshift"].to_numpy()
    photoz = z + sigma_z * (1 + z) * rng.standard_normal(n)
    out = rng.random(n) < outlier_fraction
    photoz = np.where(out, rng.uniform(0.0, 1.0, n), photoz)
    photoz = np.clip(photoz, 0.01, None)
    rp = np.array([m["r_petro"] for m in measurements])
    area = np.pi * np.array([m["aperture_px"] for m in measurements]) ** 2
    cat = {
        "object_id": truth["object_id"].to_numpy().astype(np.int64),
        "ra": ra,
        "dec": dec,
        "photoz": photoz,
        "photoz_err": sigma_z * (1 + photoz),
    }
    for b, band in enumerate("gri"):
        flux = nanomaggies(truth[f"{band}_mag"].to_numpy())
        err = np.hypot(sky_sigma[:, b] * np.sqrt(area), 0.01 * flux)
        obs = np.clip(flux + err * rng.standard_normal(n), 1e-6, None)
        cat[f"{band}_cmodel_mag"] = ZERO_POINT - 2.5 * np.log10(obs)
        cat[f"{band}_cmodel_magerr"] = 2.5 / np.log(10) * err / obs
    cat["petro_r50_arcsec"] = np.array([m["r50"] for m in measurements]) * pixel_scale
    cat["petro_r90_arcsec"] = np.array([m["r90"] for m in measurements]) * pixel_scale
    cat["petro_radius_arcsec"] = rp * pixel_scale
    return pd.DataFrame(cat)
