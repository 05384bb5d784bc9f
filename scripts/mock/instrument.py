"""HSC-like observing model: bands, PSF, sky noise and the field around each galaxy.

Numbers follow the HSC-SSP wide layer and the real TNG–HSC mock in data/: pixel
scale 0.168″, PSF FWHM (Moffat β = 3) g 0.72″, r 0.68″, i 0.60″ with 10 % scatter between
images, sky noise per pixel σ = 5.2e-4, 7.0e-4, 7.4e-4 nanomaggies (the real file's
variance planes), sky brightness 22.1, 21.1, 20.3 mag/arcsec² (sets the Poisson gain:
gain = sky per pixel / σ², in 1/nanomaggy), 10 % depth scatter, a variance plane that
underestimates the true noise by VARSC ≈ 1.05–1.2 (correlated coadd noise) and a small
residual background. The field adds neighbours: galaxies (0.08 per arcsec², i = 19–27
with counts ∝ 10^(0.3 m), about the deep-field galaxy counts to i = 27; the faint ones are
undetected but add their light to the sky, as in real coadds) and stars (5e-4 per arcsec²,
i = 17–24), anywhere but the central 0.5″, so some overlap the galaxy. Detected at 3σ
(:mod:`scripts.mock.compare_real`), this gives ~55 sources per arcmin² against 147 in the
one real frame shipped (9 sources in 15″; its Poisson range is 98–196).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from scripts.mock.photometry import nanomaggies


@dataclass(frozen=True)
class Band:
    """One HSC band: ``name`` as in EXTNAME (SUBARU_HSC.<name>), pivot wavelength [μm]."""

    name: str
    filter_name: str
    wl_pivot: float
    psf_fwhm: float
    sky_sigma: float
    sky_mu: float


HSC_BANDS = (
    Band("G", "Subaru_HSC.g", 0.4798200148, 0.72, 5.2e-4, 22.1),
    Band("R", "Subaru_HSC.r", 0.6218442057, 0.68, 7.0e-4, 21.1),
    Band("I", "Subaru_HSC.i", 0.7727012394, 0.60, 7.4e-4, 20.3),
)


@dataclass(frozen=True)
class Conditions:
    """Per-image observing conditions; arrays are per band."""

    psf_fwhm: tuple[float, ...]
    sky_sigma: tuple[float, ...]
    gain: tuple[float, ...]
    bg_offset: tuple[float, ...]
    var_scale: float
    ra: float
    dec: float


@dataclass(frozen=True)
class Neighbour:
    """A field source: 'galaxy' (exponential) or 'star' (point); offsets in arcsec."""

    kind: str
    dx: float
    dy: float
    hlr: float
    q: float
    beta: float
    flux: tuple[float, ...]


@dataclass(frozen=True)
class HSCInstrument:
    bands: tuple[Band, ...] = HSC_BANDS
    pixel_scale: float = 0.168
    psf_beta: float = 3.0
    seeing_scatter: float = 0.10
    depth_scatter: float = 0.10
    galaxy_density: float = 0.08
    star_density: float = 5e-4

    def sky_per_pixel(self, band: Band) -> float:
        """Sky level [nanomaggies/pixel] of ``band``."""
        return float(nanomaggies(band.sky_mu) * self.pixel_scale ** 2)

    def sample_conditions(self, rng: np.random.Generator) -> Conditions:
        seeing = np.exp(self.seeing_scatter * rng.standard_normal())
        depth = np.exp(self.depth_scatter * rng.standard_normal(len(self.bands)))
        sigma = tuple(float(b.sky_sigma * d) for b, d in zip(self.bands, depth))
        gain = tuple(self.sky_per_pixel(b) / s ** 2 for b, s in zip(self.bands, sigma))
        return Conditions(
            psf_fwhm=tuple(float(b.psf_fwhm * seeing) for b in self.bands),
            sky_sigma=sigma,
            gain=gain,
            bg_offset=tuple(float(0.2 * s * rng.standard_normal()) for s in sigma),
            var_scale=float(rng.uniform(1.05, 1.2)),
            ra=float(rng.uniform(330.0, 345.0)),
            dec=float(rng.uniform(-1.0, 5.0)),
        )

    def sample_neighbours(self, rng: np.random.Generator, fov_arcsec: float) -> tuple[Neighbour, ...]:
        """Field galaxies and stars anywhere in the cut-out but the central 0.5″ (so that the
        subject stays the brightest source at the centre); some overlap the subject's light."""
        out = []
        area = fov_arcsec ** 2
        for kind, density in (("galaxy", self.galaxy_density), ("star", self.star_density)):
            for _ in range(rng.poisson(density * area)):
                while True:
                    dx, dy = rng.uniform(-0.5, 0.5, 2) * fov_arcsec
                    if dx * dx + dy * dy > 0.25:
                        break
                if kind == "galaxy":
                    u = rng.random()
                    lo, hi = 10 ** (0.3 * 19.0), 10 ** (0.3 * 27.0)
                    mag_i = np.log10(lo + u * (hi - lo)) / 0.3
                    gr, ri = rng.uniform(0.2, 1.2), rng.uniform(0.1, 0.6)
                    hlr, q, beta = rng.uniform(0.2, 0.9), rng.uniform(0.3, 1.0), rng.uniform(0, 180)
                else:
                    mag_i = rng.uniform(17.0, 24.0)
                    gr = rng.uniform(0.3, 1.4)
                    ri = 0.05 + 0.4 * gr
                    hlr, q, beta = 0.0, 1.0, 0.0
                mags = (mag_i + ri + gr, mag_i + ri, mag_i)
                out.append(Neighbour(kind, float(dx), float(dy), float(hlr), float(q), float(beta),
                                     tuple(float(f) for f in nanomaggies(mags))))
        return tuple(out)
