"""Stellar mass and colours → HSC g, r, i fluxes (AB nanomaggies, zero point 22.5).

Mass-to-light ratio from colour: log10(M/L_r) = −0.306 + 1.097 (g−r) − 0.1 (Bell et al.
2003, shifted from their "diet Salpeter" to a Chabrier-like IMF); M_r,☉ = 4.65 (AB,
Willmer 2018). Apparent magnitudes add the distance modulus of the TNG cosmology; no
k-correction (rest-frame colours are used as observed colours, for simulations and survey
alike). A bulge is redder than its disk: g−r_bulge = g−r + 0.12 (1 − B/T),
r−i_bulge = r−i + 0.04 (1 − B/T), with the galaxy totals kept exact.
"""
from __future__ import annotations

import numpy as np

ZERO_POINT = 22.5
M_SUN_R = 4.65


def nanomaggies(mag) -> np.ndarray:
    return 10.0 ** (-0.4 * (np.asarray(mag, dtype=float) - ZERO_POINT))


def magnitude(flux_nmgy) -> np.ndarray:
    f = np.asarray(flux_nmgy, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(f > 0, ZERO_POINT - 2.5 * np.log10(np.where(f > 0, f, 1.0)), np.nan)


def log_mass_to_light_r(color_gr) -> np.ndarray:
    return -0.306 + 1.097 * np.asarray(color_gr) - 0.1


def apparent_magnitudes(log_mstar, color_gr, color_ri, distance_modulus) -> np.ndarray:
    """(N, 3) apparent g, r, i AB magnitudes."""
    abs_r = M_SUN_R - 2.5 * (np.asarray(log_mstar) - log_mass_to_light_r(color_gr))
    r = abs_r + np.asarray(distance_modulus)
    return np.stack([r + np.asarray(color_gr), r, r - np.asarray(color_ri)], axis=-1)


def component_fluxes(log_mstar, color_gr, color_ri, bulge_fraction, distance_modulus):
    """Bulge and disk fluxes (N, 3) in g, r, i nanomaggies; B/T is defined in r."""
    total = nanomaggies(apparent_magnitudes(log_mstar, color_gr, color_ri, distance_modulus))
    b = np.asarray(bulge_fraction, dtype=float)
    red = 1.0 - b
    bulge_r = b * total[..., 1]
    bulge = np.stack([
        bulge_r * 10.0 ** (-0.4 * (np.asarray(color_gr) + 0.12 * red)),
        bulge_r,
        bulge_r * 10.0 ** (0.4 * (np.asarray(color_ri) + 0.04 * red)),
    ], axis=-1)
    disk = total - bulge
    return bulge, disk
