"""Dust in the mock's disks: attenuation that grows with star formation, mass and inclination.

The real TNG–HSC images are SKIRT radiative-transfer mocks, so their star-forming disks are
dimmed and reddened by dust, most strongly edge-on; a mock without dust is too bright by a
few tenths of a magnitude and shows disks at every inclination alike. The model is the
uniform slab of stars mixed with dust (Disney, Davies & Phillipps 1989): along a sight line
through optical depth τ the disk keeps (1 − e^−τ)/τ of its light, and τ = τ_λ / cos i for
inclination i (cos i floored at 0.1, where a real disk's finite thickness takes over). The
face-on V-band depth rises with sSFR and mass, τ_V = 0.7 · (M★ / 10^10.5 M☉)^0.3 for a
star-forming galaxy, falling smoothly to ~0 once quenched (a logistic in log sSFR at −11,
width 0.3 dex), and scales with wavelength as λ^−0.7 (Charlot & Fall 2000). A typical
10^10.5 M☉ star-forming disk loses ≈ 0.35 mag in r face-on and ≈ 1.1 mag at i = 75°; the
bulge, above the dust layer, is not attenuated. The images and the per-view magnitudes of
the truth tables (``g_mag``, ``r_mag``, ``i_mag``) are attenuated; colours, masses and
sizes stay intrinsic, and ``dust_tau_v`` records each galaxy's face-on depth.
"""
from __future__ import annotations

import numpy as np

#: Face-on V-band optical depth of a star-forming disk of 10^10.5 M☉.
TAU_V_STAR_FORMING = 0.7
TAU_MASS_SLOPE = 0.3
V_BAND_UM = 0.55
#: Attenuation curve slope, τ_λ ∝ λ^−0.7.
CURVE_SLOPE = 0.7
MIN_COS_INCLINATION = 0.1


def face_on_tau_v(log_mstar: float, log_ssfr: float) -> float:
    """Face-on V-band optical depth of a disk (see the module docstring)."""
    star_forming = 1.0 / (1.0 + np.exp(-(log_ssfr + 11.0) / 0.3))
    return float(TAU_V_STAR_FORMING * 10.0 ** (TAU_MASS_SLOPE * (log_mstar - 10.5)) * star_forming)


def disk_transmission(tau_v: float, inclination_deg: float, wavelengths_um) -> np.ndarray:
    """Fraction of a disk's light that escapes, per wavelength [μm]."""
    cos_i = max(float(np.cos(np.radians(inclination_deg))), MIN_COS_INCLINATION)
    tau = tau_v * (np.asarray(wavelengths_um, dtype=float) / V_BAND_UM) ** -CURVE_SLOPE / cos_i
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(tau > 1e-8, -np.expm1(-tau) / np.where(tau > 1e-8, tau, 1.0), 1.0)
    return out
