"""Draw a :class:`GalaxyScene` (built by :mod:`scene`) with GalSim: PSF-convolved light, sky and Poisson noise.

Per band: subject components and field neighbours convolved with a Moffat PSF, drawn on
``npix``² pixels of ``pixel_scale``″ (nanomaggies per pixel); noise is Gaussian with the
variance of sky + source Poisson counts (variance plane = σ_sky² + model/gain, true noise
= VARSC × plane) from a per-image seed, so a file never depends on which worker drew it.
The mask marks HSC's DETECTED bit (32) where the noiseless model exceeds 2 σ_sky.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import galsim
import numpy as np

from scripts.mock.instrument import Conditions, Neighbour

DETECTED = 32


@dataclass(frozen=True)
class SersicComponent:
    """A sheared, shifted Sérsic profile; hlr/dx/dy in arcsec, beta in deg, flux per band."""

    n: float
    hlr: float
    q: float
    beta: float
    dx: float
    dy: float
    flux: tuple[float, ...]


@dataclass(frozen=True)
class GalaxyScene:
    """Everything needed to draw one multi-band cut-out deterministically."""

    npix: int
    pixel_scale: float
    psf_beta: float
    subject: tuple[SersicComponent, ...]
    neighbours: tuple[Neighbour, ...]
    conditions: Conditions
    seed: tuple[int, ...]


@lru_cache(maxsize=1)
def gsparams() -> galsim.GSParams:
    """Accuracy: GalSim's default folding (0.5 %), maxk threshold 2e-3 instead of 1e-3
    (smaller FFTs; the lost high-k power is far below the HSC-like noise)."""
    return galsim.GSParams(folding_threshold=5e-3, maxk_threshold=2e-3)


@dataclass
class RenderedScene:
    """image, subject (noiseless subject only), model (noiseless incl. neighbours): (B, H, W)
    float64 nanomaggies; variance (B, H, W) float32; mask (B, H, W) int32."""

    image: np.ndarray
    subject: np.ndarray
    model: np.ndarray
    variance: np.ndarray
    mask: np.ndarray


def _shape(c) -> galsim.GSObject:
    gsp = gsparams()
    if c.n == 1.0:
        prof = galsim.Exponential(half_light_radius=c.hlr, gsparams=gsp)
    else:
        prof = galsim.Sersic(n=c.n, half_light_radius=c.hlr, gsparams=gsp)
    if c.q < 1.0:
        prof = prof.shear(q=c.q, beta=c.beta * galsim.degrees)
    return prof.shift(c.dx, c.dy)


def _neighbour_shape(nb) -> galsim.GSObject:
    gsp = gsparams()
    if nb.kind == "star":
        prof = galsim.DeltaFunction(gsparams=gsp)
    else:
        prof = galsim.Exponential(half_light_radius=nb.hlr, gsparams=gsp).shear(q=nb.q, beta=nb.beta * galsim.degrees)
    return prof.shift(nb.dx, nb.dy)


def _draw(shapes, fluxes, psf, npix, scale) -> np.ndarray:
    parts = [s.withFlux(f) for s, f in zip(shapes, fluxes) if f > 0]
    if not parts:
        return np.zeros((npix, npix))
    prof = galsim.Convolve(galsim.Add(parts) if len(parts) > 1 else parts[0], psf, gsparams=gsparams())
    return prof.drawImage(nx=npix, ny=npix, scale=scale).array.astype(np.float64)


def render_scene(scene: GalaxyScene) -> RenderedScene:
    cond = scene.conditions
    nb = len(cond.psf_fwhm)
    n = scene.npix
    shapes = [_shape(c) for c in scene.subject]
    nshapes = [_neighbour_shape(x) for x in scene.neighbours]
    rng = np.random.default_rng(list(scene.seed))
    out = RenderedScene(*(np.zeros((nb, n, n)) for _ in range(3)),
                        variance=np.zeros((nb, n, n), np.float32), mask=np.zeros((nb, n, n), np.int32))
    for b in range(nb):
        psf = galsim.Moffat(beta=scene.psf_beta, fwhm=cond.psf_fwhm[b], gsparams=gsparams())
        subject = _draw(shapes, [c.flux[b] for c in scene.subject], psf, n, scene.pixel_scale)
        model = subject + _draw(nshapes, [x.flux[b] for x in scene.neighbours], psf, n, scene.pixel_scale)
        var = cond.sky_sigma[b] ** 2 + np.clip(model, 0.0, None) / cond.gain[b]
        noise = rng.standard_normal((n, n)) * np.sqrt(cond.var_scale * var)
        out.subject[b] = subject
        out.model[b] = model
        out.image[b] = model + cond.bg_offset[b] + noise
        out.variance[b] = var.astype(np.float32)
        out.mask[b] = np.where(model > 2.0 * cond.sky_sigma[b], DETECTED, 0).astype(np.int32)
    return out
