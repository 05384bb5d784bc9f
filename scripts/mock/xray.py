"""X-ray surface-brightness maps (0.5–5.0 keV) of mock clusters.

Each cluster is a projected β-model, S(r) ∝ (1 + r²/r_c²)^(−3β + 1/2), plus a cool-core
cusp: a second β-model with a small core (0.012 R200c) carrying a fraction
f_cusp = 0.5 / (1 + (t_cool / 1 Gyr)^1.5) of the emission, so clusters with a short
central cooling time (real TNG-Cluster values) are cuspier. The main core radius grows with
central entropy: r_c = 0.035 R200c (K0 / 30 keV cm²)^0.5 ± 0.08 dex, clipped to
0.01–0.25 R200c; β = 0.67 ± 0.05 in [0.55, 0.85]. The gas is a triaxial ellipsoid
(b/a 0.65–0.95, c/b 0.75–0.97) in a random orientation; each camera sees its projection
(axis ratio q, angle), the cusp being half as flattened. Expected source counts
4000 (M200c / 10^14.5 M☉)^1.3 (1 + 2 f_cusp) over the whole plane plus a background of
3e-4 counts/kpc², Poisson noise from a per-image seed. The map spans 2 R200c (physical kpc;
the clusters are at z = 0, snapshot 99). The concentration c_SB is F(<40 kpc)/F(<400 kpc)
of the circularised model (the definition of the real catalogue's ``concentrationPhys``).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scripts.mock import geometry

BAND = "0.5-5.0keV"
EXTNAME = f"XRAY_{BAND}"
BACKGROUND_PER_KPC2 = 3e-4
CUSP_CORE_R200 = 0.012


@dataclass(frozen=True)
class ClusterModel:
    """Intrinsic X-ray model of one cluster (radii in physical kpc, counts per map)."""

    beta: float
    core_radius_kpc: float
    cusp_fraction: float
    cusp_radius_kpc: float
    axis_ratios: tuple[float, float]
    rotation: tuple[tuple[float, ...], ...]
    expected_counts: float

    def shape_matrix(self) -> np.ndarray:
        return geometry.triaxial_matrix(np.asarray(self.rotation), self.axis_ratios)


@dataclass(frozen=True)
class XrayScene:
    """One projection: the cluster model as seen by a camera, on an npix² grid of 2 R200c."""

    npix: int
    fov_kpc: float
    model: ClusterModel
    q: float
    angle: float
    seed: tuple[int, ...]


def cusp_fraction(central_cooling_time_gyr) -> np.ndarray:
    return 0.5 / (1.0 + np.asarray(central_cooling_time_gyr, dtype=float) ** 1.5)


def cluster_model(rng: np.random.Generator, log_m200c: float, r200c_kpc: float,
                  central_cooling_time: float, central_entropy: float) -> ClusterModel:
    beta = float(np.clip(0.67 + 0.05 * rng.standard_normal(), 0.55, 0.85))
    rc = r200c_kpc * float(np.clip(0.035 * (central_entropy / 30.0) ** 0.5 * 10 ** (0.08 * rng.standard_normal()),
                                   0.01, 0.25))
    f_cusp = float(cusp_fraction(central_cooling_time))
    b_a = rng.uniform(0.65, 0.95)
    c_a = b_a * rng.uniform(0.75, 0.97)
    rot = geometry.random_rotation(rng)
    counts = 4000.0 * 10 ** (1.3 * (log_m200c - 14.5)) * (1.0 + 2.0 * f_cusp)
    return ClusterModel(beta, rc, f_cusp, CUSP_CORE_R200 * r200c_kpc, (float(b_a), float(c_a)),
                        tuple(tuple(float(v) for v in row) for row in rot), float(counts))


def beta_enclosed(radius_kpc, core_kpc, beta) -> np.ndarray:
    """Fraction of a projected β-model's flux inside a circle of ``radius_kpc`` (β > 1/2)."""
    return 1.0 - (1.0 + (np.asarray(radius_kpc) / core_kpc) ** 2) ** (1.5 - 3.0 * beta)


def concentration(model: ClusterModel, inner_kpc: float = 40.0, outer_kpc: float = 400.0) -> float:
    """c_SB = F(<40 kpc) / F(<400 kpc) of the circularised model."""
    def flux(r):
        return ((1 - model.cusp_fraction) * beta_enclosed(r, model.core_radius_kpc, model.beta)
                + model.cusp_fraction * beta_enclosed(r, model.cusp_radius_kpc, model.beta))
    return float(flux(inner_kpc) / flux(outer_kpc))


def _surface_density(x, y, core, beta, q, angle_deg):
    """Unit-total projected β-model [1/kpc²] with major axis at ``angle_deg``, axis ratio q."""
    a = np.radians(angle_deg)
    xp = x * np.cos(a) + y * np.sin(a)
    yp = -x * np.sin(a) + y * np.cos(a)
    r2 = xp ** 2 + (yp / q) ** 2
    p = 3.0 * beta - 0.5
    return (1.0 + r2 / core ** 2) ** (-p) * (p - 1.0) / (np.pi * core ** 2 * q)


def expected_map(scene: XrayScene, oversample: int = 3) -> np.ndarray:
    """Expected counts per pixel (source + background), pixel-integrated by sub-sampling."""
    n, m = scene.npix, scene.model
    pix = scene.fov_kpc / n
    sub = (np.arange(oversample) + 0.5) / oversample - 0.5
    c = (np.arange(n)[:, None] + sub[None, :]).ravel() - (n - 1) / 2.0
    y, x = np.meshgrid(c * pix, c * pix, indexing="ij")
    q_cusp = 1.0 - 0.5 * (1.0 - scene.q)
    dens = ((1 - m.cusp_fraction) * _surface_density(x, y, m.core_radius_kpc, m.beta, scene.q, scene.angle)
            + m.cusp_fraction * _surface_density(x, y, m.cusp_radius_kpc, m.beta, q_cusp, scene.angle))
    dens = dens.reshape(n, oversample, n, oversample).mean(axis=(1, 3))
    return m.expected_counts * dens * pix ** 2 + BACKGROUND_PER_KPC2 * pix ** 2


def render_xray(scene: XrayScene) -> tuple[np.ndarray, np.ndarray]:
    """(counts image float32, expected map float64)."""
    lam = expected_map(scene)
    rng = np.random.default_rng(list(scene.seed))
    return rng.poisson(lam).astype(np.float32), lam
