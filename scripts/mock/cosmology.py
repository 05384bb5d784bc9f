"""TNG cosmology and the snapshot clock of the mock universe.

IllustrisTNG uses Planck 2015 parameters (h = 0.6774, Ωm = 0.3089, ΩΛ = 0.6911,
Ωb = 0.0486). Every distance, angle and time in the mock universe comes from here, so the
mock images have the same kpc/arcsec scale as the real TNG–HSC mocks (e.g. 3.369 kpc/″ at
snapshot 84, z = 0.1973). Snapshot redshifts come from the real TNG table,
read by :func:`TNG.redshifts.load_snapshot_redshifts`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
import numpy as np
from astropy import units as u
from astropy.cosmology import FlatLambdaCDM

#: TNG (Planck 2015) parameters as written in every group-catalogue Header.
HUBBLE_PARAM = 0.6774
OMEGA_M = 0.3089
OMEGA_L = 0.6911
OMEGA_B = 0.0486


@dataclass(frozen=True)
class TNGCosmology:
    """Flat ΛCDM with TNG parameters; units: kpc, Mpc, Gyr, M☉."""

    h: float = HUBBLE_PARAM
    omega_m: float = OMEGA_M
    omega_b: float = OMEGA_B

    @cached_property
    def astropy(self) -> FlatLambdaCDM:
        return FlatLambdaCDM(H0=100.0 * self.h, Om0=self.omega_m, Ob0=self.omega_b)

    def kpc_per_arcsec(self, z) -> np.ndarray:
        """Proper kpc per arcsec at redshift ``z`` (z > 0)."""
        return np.asarray(self.astropy.kpc_proper_per_arcmin(z).to_value(u.kpc / u.arcmin)) / 60.0

    def luminosity_distance_mpc(self, z) -> np.ndarray:
        return np.asarray(self.astropy.luminosity_distance(z).to_value(u.Mpc))

    def distance_modulus(self, z) -> np.ndarray:
        """5 log10(D_L / 10 pc) in mag."""
        return 5.0 * np.log10(self.luminosity_distance_mpc(z) * 1e5)

    def age_gyr(self, z) -> np.ndarray:
        """Cosmic time (age of the universe) at redshift ``z`` in Gyr."""
        return np.asarray(self.astropy.age(z).to_value(u.Gyr))

    def rho_crit(self, z) -> np.ndarray:
        """Critical density at ``z`` in M☉ / kpc³ (physical)."""
        return np.asarray(self.astropy.critical_density(z).to_value(u.Msun / u.kpc**3))

    def omega_m_z(self, z) -> np.ndarray:
        return np.asarray(self.astropy.Om(z))


@dataclass(frozen=True)
class SnapshotClock:
    """Snapshot numbers ↔ redshift ↔ cosmic time (Gyr)."""

    redshifts: np.ndarray
    cosmology: TNGCosmology = field(default_factory=TNGCosmology)

    @cached_property
    def times(self) -> np.ndarray:
        """Cosmic time of every snapshot in Gyr."""
        return self.cosmology.age_gyr(self.redshifts)

    def redshift(self, snap: int) -> float:
        return float(self.redshifts[snap])

    def scale_factor(self, snap: int) -> float:
        return 1.0 / (1.0 + self.redshift(snap))

    def time(self, snap: int) -> float:
        return float(self.times[snap])

    def snapshot_at_or_after(self, t_gyr) -> np.ndarray:
        """First snapshot whose cosmic time is ≥ ``t_gyr`` (where an event is first seen)."""
        t = np.atleast_1d(np.asarray(t_gyr, dtype=float))
        idx = np.searchsorted(self.times, t - 1e-9, side="left")
        return np.minimum(idx, len(self.times) - 1).astype(np.int32)
