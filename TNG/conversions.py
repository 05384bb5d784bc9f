"""Physical unit conversions for TNG catalogues, in one place.

TNG group catalogues store comoving, little-h units: masses in 1e10 M☉/h, lengths in
ckpc/h. Physical values need the scale factor ``a`` (the Header attribute ``Time`` of a
cosmological run, equal to 1/(1+z)) and the Hubble parameter ``h`` (Header
``HubbleParam``, 0.6774 for TNG). Every FIELD converts through these functions so the
convention is written down once.
"""
from __future__ import annotations

import logging

import numpy as np
from astropy.cosmology import FlatLambdaCDM

logger = logging.getLogger(__name__)

#: Code mass unit of TNG catalogues, in M☉/h.
MASS_UNIT_MSUN_PER_H = 1.0e10

#: TNG cosmology (Planck 2015, Planck Collaboration XIII 2016, Table 4): h and Ωm.
TNG_HUBBLE_PARAM = 0.6774
TNG_OMEGA0 = 0.3089


def scale_factor(time: float, redshift: float | None = None, tol: float = 1e-4) -> float:
    """Scale factor ``a`` from the Header attribute ``Time``.

    For cosmological runs Gadget/AREPO write ``Time = a``. When ``redshift`` is given the
    two are cross-checked (``a = 1/(1+z)``); a mismatch above ``tol`` is logged because it
    means a non-cosmological header or a corrupted file.
    """
    a = float(time)
    if not 0.0 < a <= 1.0 + tol:
        raise ValueError(f"Header Time={time!r} is not a scale factor in (0, 1]")
    if redshift is not None and abs(a - 1.0 / (1.0 + float(redshift))) > tol:
        logger.warning("Header Time=%g differs from 1/(1+Redshift)=%g; using Time",
                       a, 1.0 / (1.0 + float(redshift)))
    return a


def mass_to_msun(mass, hubble_param: float) -> np.ndarray:
    """Catalogue mass [1e10 M☉/h] → physical mass [M☉]."""
    return np.asarray(mass, dtype=np.float64) * (MASS_UNIT_MSUN_PER_H / hubble_param)


def msun_to_mass(msun, hubble_param: float) -> np.ndarray:
    """Physical mass [M☉] → catalogue mass [1e10 M☉/h] (inverse of :func:`mass_to_msun`)."""
    return np.asarray(msun, dtype=np.float64) * (hubble_param / MASS_UNIT_MSUN_PER_H)


def length_to_kpc(length, a: float, hubble_param: float) -> np.ndarray:
    """Catalogue length [ckpc/h] → physical length [kpc] (× a / h)."""
    return np.asarray(length, dtype=np.float64) * (a / hubble_param)


def log10_positive(x) -> np.ndarray:
    """log10 of ``x`` with NaN (not −inf) where ``x ≤ 0`` or is NaN: an undefined value."""
    x = np.asarray(x, dtype=np.float64)
    out = np.full(x.shape, np.nan)
    good = x > 0
    out[good] = np.log10(x[good])
    return out


def cosmology(hubble_param: float = TNG_HUBBLE_PARAM,
              omega0: float = TNG_OMEGA0) -> FlatLambdaCDM:
    """Flat ΛCDM of the simulation (Planck15-like; TNG: H0 = 67.74, Ωm = 0.3089).

    No radiation term (``Tcmb0 = 0``), as in the TNG runs, so ΩΛ = 1 − Ωm = 0.6911
    matches the Header ``OmegaLambda``.
    """
    return FlatLambdaCDM(H0=100.0 * hubble_param, Om0=omega0)


def lookback_time_gyr(z, cosmo: FlatLambdaCDM) -> np.ndarray:
    """Lookback time from z = 0 to redshift ``z`` [Gyr]; NaN stays NaN."""
    z = np.asarray(z, dtype=np.float64)
    out = np.full(z.shape, np.nan)
    good = np.isfinite(z)
    out[good] = cosmo.lookback_time(z[good]).to_value("Gyr")
    return out


def time_between_gyr(z_early, z_late, cosmo: FlatLambdaCDM) -> np.ndarray:
    """Cosmic time elapsed from redshift ``z_early`` to ``z_late`` [Gyr] (age difference).

    NaN where either redshift is NaN (e.g. an event that never happened).
    """
    return lookback_time_gyr(z_early, cosmo) - lookback_time_gyr(z_late, cosmo)
