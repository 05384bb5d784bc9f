"""Croppers: pick the square region of an image kept for training (scikit-learn shape).

Every cropper follows the estimator pattern: parameters in ``__init__``, ``fit(image, …)``
measures the per-image quantities (radii, centre) and returns ``self``, ``transform(image)``
cuts the crop, ``__call__`` / ``fit_transform`` do both. After ``fit`` the cropper exposes
``center`` (x, y), ``crop_size`` (pixels), ``failed`` / ``failure_reason`` and
:meth:`record` (the per-image columns extract stores in ``objects.parquet``).

Conventions
-----------
* Images are (H, W) or (H, W, C) arrays; the crop is the same for every band.
* Pixel ``(row i, column j)`` covers ``[i - 0.5, i + 0.5] × [j - 0.5, j + 0.5]``; centres are
  ``(x, y) = (column, row)`` in these coordinates (the photutils convention), so the
  centre of an 88-pixel frame is 43.5.
* The crop is a square of ``crop_size`` whole pixels whose centre is the pixel-grid
  position nearest to ``center`` (within half a pixel), so the output is always
  ``crop_size`` square. ``record()['crop_outside_fraction']`` is the fraction of its
  pixels that lie outside the frame.

Padding beyond the frame
------------------------
Where the crop leaves the frame it is padded with **sky noise** (``pad_mode='noise'``,
the default): white Gaussian noise of mean 0 and the image's own σ per band (from the
variance plane, else a robust estimate from the frame's outer strip; see :mod:`noise`), from a generator seeded with
the image's identity (``transform(image, noise_sigma=…, seed=…)``). Padding with exact
zeros (``pad_mode='constant'``, what this module used to do) leaves a noiseless border
around every galaxy larger than its frame — half of a simulated set in the demo — which
the network and the realism measures pick up instead of physics. Capping the crop at the
frame (the original pipeline) avoids the border but shrinks the crop of exactly those
galaxies, so their apparent size after the resize to ``IMAGE_SIZE`` no longer follows
``PETRO_RADIUS_FACTOR × R90``; noise keeps the crop the size the fit asks for and makes
the border look like more sky, which is what a larger frame would have shown at the
noise level (the light of the galaxy beyond the frame, ≲ a few per cent at 2 R90, is
lost either way). A band with σ = 0 (a noiseless model image) is padded with zeros, which
is then no artefact.
* A failed fit never raises: ``failed`` is set, ``failure_reason`` says why, and
  ``transform`` returns the full frame unchanged (the extract stage counts these).

Petrosian radii (:class:`PetrosianCropper`)
-------------------------------------------
Assumes **sky-subtracted** images (the SKIRT/HSC mocks and HSC cut-outs are): no background
is fitted; a residual positive sky makes η flatten and may leave no root (→ ``failed``).
On the reference band the light is binned in circular annuli of width ``dr`` about the
centre, each pixel split into ``oversample``² sub-pixels (so annuli and apertures are
area-exact to ~1/oversample² per boundary pixel). Within an annulus the surface
brightness μ is taken as constant (its mean over valid pixels), so masked pixels and the
parts of annuli outside the frame are filled with their annulus mean; the curve of growth
L(<r) follows exactly from that piecewise-constant profile. The Petrosian ratio

    η(r) = μ(r) / [L(<r) / (π r²)]

is evaluated at each annulus's area-midpoint radius, and the Petrosian radius r_P is the
first downward crossing of ``eta`` (0.2, the SDSS value; linear interpolation). The
Petrosian flux is F_P = L(< N_P r_P) with N_P = ``petrosian_aperture`` (2, SDSS), and
R50 / R90 are the radii enclosing 50 % / 90 % of F_P. The fit fails (``failed=True``) when
the centre holds no flux, L turns negative before the root, η never drops below ``eta``
inside the frame, or the Petrosian flux is not detected at ``min_snr`` against the pixel
noise (robust MAD of the reference band) — the last one rejects blank and noise-only
frames.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from scripts.preprocessing.noise import MAD_TO_SIGMA, border_sigma, robust_sigma  # noqa: F401

if TYPE_CHECKING:  # pandas only types outside_summary: extract's workers never import it
    import pandas as pd

logger = logging.getLogger(__name__)

CENTER_METHODS = ("centroid", "peak", "frame")
#: ``'noise'`` (sky noise, default) or any :func:`numpy.pad` mode ('constant' = zeros).
DEFAULT_PAD_MODE = "noise"


# --------------------------------------------------------------------------- geometry


def frame_center(shape: tuple[int, ...]) -> tuple[float, float]:
    """Geometric centre (x, y) of an (H, W, …) frame."""
    return (shape[1] - 1) / 2.0, (shape[0] - 1) / 2.0


def crop_origin(center: tuple[float, float], size: int) -> tuple[int, int]:
    """(row, column) of the first pixel of a ``size`` square centred on ``center`` (x, y)."""
    cx, cy = center
    return math.floor(cy - size / 2.0 + 1.0), math.floor(cx - size / 2.0 + 1.0)


def _inside_span(origin: int, size: int, length: int) -> tuple[int, int]:
    """(first, end) indices within a crop of ``size`` starting at ``origin`` that fall
    inside ``[0, length)``."""
    first = min(size, max(0, -origin))
    return first, max(first, min(size, length - origin))


def outside_fraction(frame_shape: tuple[int, ...], center: tuple[float, float], size: int) -> float:
    """Fraction of the pixels of a ``size`` square crop about ``center`` outside the frame."""
    size = int(size)
    y0, x0 = crop_origin(center, size)
    r0, r1 = _inside_span(y0, size, frame_shape[0])
    c0, c1 = _inside_span(x0, size, frame_shape[1])
    return 1.0 - (r1 - r0) * (c1 - c0) / float(size * size)


def crop_square(image: np.ndarray, center: tuple[float, float], size: int,
                pad_mode: str = "constant", *, noise_sigma=None, seed: int | None = None
                ) -> np.ndarray:
    """``size`` × ``size`` crop of ``image`` about ``center`` (x, y), padded beyond the frame.

    ``pad_mode`` is ``'noise'`` or a :func:`numpy.pad` mode ('constant' pads with zeros).
    With ``'noise'`` the pixels outside the frame are Gaussian noise of mean 0 and σ
    ``noise_sigma`` (scalar or one per band; default: :func:`noise.border_sigma` of each band) from
    ``numpy.random.default_rng(seed)`` (seed None = 0: pass the image's identity seed);
    the noise at a crop pixel depends only on (seed, crop shape, σ). Returns a copy.
    """
    size = int(size)
    if size < 1:
        raise ValueError(f"crop size must be >= 1 pixel, got {size}")
    if pad_mode == "noise":
        return _noise_padded(image, center, size, noise_sigma, seed)
    H, W = image.shape[:2]
    y0, x0 = crop_origin(center, size)
    y1, x1 = y0 + size, x0 + size
    pad = ((max(0, -y0), max(0, y1 - H)), (max(0, -x0), max(0, x1 - W)))
    if any(p for pair in pad for p in pair):
        pad_width = pad + ((0, 0),) * (image.ndim - 2)
        image = np.pad(image, pad_width, mode=pad_mode)
        y0, y1, x0, x1 = y0 + pad[0][0], y1 + pad[0][0], x0 + pad[1][0], x1 + pad[1][0]
    return image[y0:y1, x0:x1].copy()


def _noise_padded(image: np.ndarray, center: tuple[float, float], size: int, noise_sigma,
                  seed: int | None) -> np.ndarray:
    crop = crop_square(image, center, size, "constant")
    y0, x0 = crop_origin(center, size)
    r0, r1 = _inside_span(y0, size, image.shape[0])
    c0, c1 = _inside_span(x0, size, image.shape[1])
    if (r1 - r0) * (c1 - c0) == size * size:
        return crop
    bands = 1 if image.ndim == 2 else image.shape[2]
    if noise_sigma is None:
        cube = image[..., None] if image.ndim == 2 else image
        noise_sigma = [border_sigma(cube[..., c]) for c in range(bands)]
    sigma = np.broadcast_to(np.nan_to_num(np.asarray(noise_sigma, dtype=np.float64)), (bands,))
    if (sigma < 0).any():
        raise ValueError(f"noise_sigma must be >= 0, got {noise_sigma}")
    if not sigma.any():
        return crop
    noise = np.random.default_rng(0 if seed is None else seed).standard_normal(crop.shape)
    noise *= sigma if image.ndim == 3 else sigma[0]
    outside = np.ones((size, size), dtype=bool)
    outside[r0:r1, c0:c1] = False
    crop[outside] = noise[outside]
    return crop


def _reference(image: np.ndarray, band: int) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 2:
        return image
    if image.ndim == 3:
        return image[..., band]
    raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")


# --------------------------------------------------------------------------- centre


def find_center(image: np.ndarray, method: str = "centroid", radius: float | None = None,
                valid: np.ndarray | None = None, min_radius: float = 3.0, max_iter: int = 50,
                tol: float = 1e-3) -> tuple[float, float]:
    """Centre (x, y) of the light near the frame centre of a 2-D image.

    ``'centroid'``: light-weighted centroid of the positive pixels within a circular window
    about the current estimate, iterated from the frame centre until it moves less than
    ``tol`` pixels; the window radius starts at ``radius`` and is then halved down to
    ``min_radius`` (re-iterating each time), so the final centre is set by the core of the
    central object rather than by noise or neighbours in a wide window. ``'peak'``:
    brightest pixel of the 3×3 box-smoothed image within ``radius`` of the frame centre.
    ``'frame'``: geometric centre. ``radius`` defaults to a quarter of the smaller frame
    edge, so neighbours near the frame edge do not pull the centre. Pixels outside
    ``valid`` (and non-finite ones) carry no weight.
    """
    if method not in CENTER_METHODS:
        raise ValueError(f"center method must be one of {CENTER_METHODS}, got {method!r}")
    H, W = image.shape
    cx, cy = frame_center(image.shape)
    if method == "frame":
        return cx, cy
    radius = 0.25 * min(H, W) if radius is None else float(radius)
    ys, xs = np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64)
    ok = np.isfinite(image) if valid is None else valid & np.isfinite(image)
    data = np.where(ok, image, 0.0)
    if method == "peak":
        padded = np.pad(data, 1)
        smooth = sum(padded[i:i + H, j:j + W] for i in range(3) for j in range(3)) / 9.0
        inside = (ys[:, None] - cy) ** 2 + (xs[None, :] - cx) ** 2 <= radius ** 2
        row, col = np.unravel_index(np.argmax(np.where(inside, smooth, -np.inf)), smooth.shape)
        return float(col), float(row)
    weight = np.clip(data, 0.0, None)
    windows = [radius]
    while windows[-1] / 2.0 >= min_radius:
        windows.append(windows[-1] / 2.0)
    for window in windows:
        for _ in range(max_iter):
            y0, y1 = max(0, math.floor(cy - window)), min(H, math.ceil(cy + window) + 1)
            x0, x1 = max(0, math.floor(cx - window)), min(W, math.ceil(cx + window) + 1)
            yb, xb = ys[y0:y1], xs[x0:x1]
            inside = (yb[:, None] - cy) ** 2 + (xb[None, :] - cx) ** 2 <= window ** 2
            w = weight[y0:y1, x0:x1] * inside
            total = w.sum()
            if not total > 0:  # no light in this window: keep the last estimate
                return float(cx), float(cy)
            ncx, ncy = w.sum(axis=0) @ xb / total, w.sum(axis=1) @ yb / total
            moved = math.hypot(ncx - cx, ncy - cy)
            cx, cy = ncx, ncy
            if moved < tol:
                break
    return float(cx), float(cy)


# --------------------------------------------------------------------------- profile


@dataclass(frozen=True)
class RadialProfile:
    """Piecewise-constant surface-brightness profile in annuli ``[edges[k], edges[k+1])``.

    ``mu``: mean surface brightness per annulus (image units per pixel area);
    ``cum``: curve of growth L(<edges[k]) (image units), ``cum[0] = 0``;
    ``coverage``: fraction of each annulus's area on valid pixels;
    ``frame_coverage``: fraction inside the frame, ignoring the mask.
    """

    edges: np.ndarray
    mu: np.ndarray
    cum: np.ndarray
    coverage: np.ndarray
    frame_coverage: np.ndarray

    @property
    def area(self) -> np.ndarray:
        """Geometric area of each annulus (pixels²)."""
        return np.pi * np.diff(self.edges ** 2)

    @property
    def r_mid(self) -> np.ndarray:
        """Radius halving each annulus's area (pixels)."""
        return np.sqrt(0.5 * (self.edges[:-1] ** 2 + self.edges[1:] ** 2))

    def flux_within(self, radius: float) -> float:
        """L(<radius); constant beyond the outermost annulus."""
        k = int(np.searchsorted(self.edges, radius, side="right")) - 1
        if k >= self.mu.size:
            return float(self.cum[-1])
        if k < 0:
            return 0.0
        return float(self.cum[k] + self.mu[k] * np.pi * (radius ** 2 - self.edges[k] ** 2))

    def radius_enclosing(self, flux: float) -> float:
        """Smallest radius with L(<r) = ``flux`` (> 0); NaN when never reached."""
        if not flux > 0:
            return math.nan
        above = np.nonzero(self.cum[1:] >= flux)[0]
        if above.size == 0:
            return math.nan
        k = int(above[0])  # cum[k] < flux <= cum[k+1], hence mu[k] > 0
        r2 = self.edges[k] ** 2 + (flux - self.cum[k]) / (np.pi * self.mu[k])
        return float(math.sqrt(max(r2, 0.0)))


def radial_profile(image: np.ndarray, center: tuple[float, float], *, dr: float = 1.0,
                   oversample: int = 4, valid: np.ndarray | None = None,
                   max_radius: float | None = None,
                   min_bin_coverage: float = 0.05) -> RadialProfile:
    """Annulus profile of a 2-D image about ``center`` (x, y).

    Pixels are split into ``oversample``² sub-pixels of equal flux. The profile reaches the
    farthest frame corner, or only ``max_radius`` (rounded up to whole annuli; only the
    pixels of the enclosing box are then touched, which is what keeps a fit fast). Annuli
    with less than ``min_bin_coverage`` of their area on valid pixels take μ interpolated
    from their neighbours.
    """
    H, W = image.shape
    s = int(oversample)
    cx, cy = center
    ok = np.isfinite(image) if valid is None else (valid & np.isfinite(image))
    inscribed = min(cx + 0.5, W - 0.5 - cx, cy + 0.5, H - 0.5 - cy)  # largest circle in frame
    nbins = None
    if max_radius is not None:
        nbins = max(1, int(math.ceil(max_radius / dr)))
        reach = nbins * dr
        y0, y1 = max(0, math.floor(cy - reach)), min(H, math.ceil(cy + reach) + 1)
        x0, x1 = max(0, math.floor(cx - reach)), min(W, math.ceil(cx + reach) + 1)
        image, ok = image[y0:y1, x0:x1], ok[y0:y1, x0:x1]
        cx, cy = cx - x0, cy - y0
        H, W = image.shape
    off = (np.arange(s) + 0.5) / s - 0.5
    ys = (np.arange(H)[:, None] + off[None, :] - cy).ravel().astype(np.float32)
    xs = (np.arange(W)[:, None] + off[None, :] - cx).ravel().astype(np.float32)
    radius = np.sqrt(ys[:, None] ** 2 + xs[None, :] ** 2)
    radius *= np.float32(1.0 / dr)
    index = radius.astype(np.intp).ravel()
    values = np.repeat(np.repeat(np.where(ok, image, 0.0), s, axis=0), s, axis=1).ravel()
    if nbins is None:
        nbins = int(index.max()) + 1
    else:
        np.minimum(index, nbins, out=index)  # sub-pixels beyond max_radius go to a spare bin
    flux = np.bincount(index, weights=values, minlength=nbins + 1)[:nbins] / s ** 2
    frame_area = np.bincount(index, minlength=nbins + 1)[:nbins] / s ** 2
    if ok.all():
        valid_area = frame_area
    else:
        weights = np.repeat(np.repeat(ok.astype(np.float64), s, axis=0), s, axis=1).ravel()
        valid_area = np.bincount(index, weights=weights, minlength=nbins + 1)[:nbins] / s ** 2
    edges = np.arange(nbins + 1) * dr
    area = np.pi * np.diff(edges ** 2)
    # Annuli inside the largest circle that fits in the frame are fully covered by
    # definition; using their geometric area makes L(<r) the exact sub-pixel aperture sum.
    frame_coverage = np.where(edges[1:] <= inscribed, 1.0, frame_area / area)
    with np.errstate(divide="ignore", invalid="ignore"):
        valid_fraction = np.where(frame_area > 0, valid_area / frame_area, 0.0)
    coverage = frame_coverage * valid_fraction
    good = coverage >= min_bin_coverage
    mu = np.zeros(nbins)
    mu[good] = flux[good] / (coverage[good] * area[good])
    if good.any() and not good.all():
        r_mid = np.sqrt(0.5 * (edges[:-1] ** 2 + edges[1:] ** 2))
        mu[~good] = np.interp(r_mid[~good], r_mid[good], mu[good])
    cum = np.concatenate([[0.0], np.cumsum(mu * area)])
    return RadialProfile(edges, mu, cum, coverage, frame_coverage)


def petrosian_radius(profile: RadialProfile, eta: float = 0.2,
                     min_frame_coverage: float = 0.5) -> tuple[float, str]:
    """(r_P, '') at the first downward crossing of η(r) = ``eta``; (NaN, reason) if none.

    The search stops at the first annulus less than ``min_frame_coverage`` inside the
    frame. Reasons: 'no_flux' (no positive light at the centre), 'negative_flux' (L(<r)
    drops to ≤ 0 before the root), 'no_root'.
    """
    r_mid, mu = profile.r_mid, profile.mu
    inside = np.nonzero(profile.frame_coverage < min_frame_coverage)[0]
    n = int(inside[0]) if inside.size else mu.size
    if n < 2:
        return math.nan, "no_root"
    l_mid = profile.cum[:n] + 0.5 * mu[:n] * profile.area[:n]
    if not (mu[0] > 0 and l_mid[0] > 0):
        return math.nan, "no_flux"
    with np.errstate(divide="ignore", invalid="ignore"):
        eta_r = mu[:n] * np.pi * r_mid[:n] ** 2 / l_mid
    stop = np.nonzero((eta_r < eta) | (l_mid <= 0))[0]
    if stop.size == 0:
        return math.nan, "no_root"
    k = int(stop[0])
    if l_mid[k] <= 0:
        return math.nan, "negative_flux"
    t = (eta_r[k - 1] - eta) / (eta_r[k - 1] - eta_r[k])
    return float(r_mid[k - 1] + t * (r_mid[k] - r_mid[k - 1])), ""


# --------------------------------------------------------------------------- croppers


class _SquareCropper:
    """Shared ``transform`` / ``fit_transform`` / ``record`` of the croppers."""

    def __init__(self, min_size: int = 4, pad_mode: str = DEFAULT_PAD_MODE):
        if int(min_size) < 1:
            raise ValueError(f"min_size must be >= 1 pixel, got {min_size}")
        self.min_size = int(min_size)
        self.pad_mode = pad_mode

    def _reset(self, image: np.ndarray) -> None:
        image = np.asarray(image)
        if image.ndim not in (2, 3):
            raise ValueError(f"expected an (H, W) or (H, W, C) image, got shape {image.shape}")
        self.frame_shape_ = image.shape[:2]
        self.center = frame_center(image.shape)
        self.crop_size = int(min(image.shape[:2]))
        self.failed = False
        self.failure_reason = ""

    def _fail(self, reason: str) -> None:
        self.failed = True
        self.failure_reason = reason
        self.crop_size = int(min(self.frame_shape_))
        logger.debug("%s: fit failed (%s); keeping the full frame", type(self).__name__, reason)

    def _size_from_half(self, half_size: float) -> int:
        return max(self.min_size, int(math.floor(2.0 * half_size + 0.5)))

    def transform(self, image: np.ndarray, *, noise_sigma=None, seed: int | None = None
                  ) -> np.ndarray:
        """The crop of ``image`` (same frame shape as in ``fit``); full frame if failed.

        ``noise_sigma`` (per band) and ``seed`` set the noise padding (``pad_mode='noise'``,
        see :func:`crop_square`); σ defaults to :func:`noise.border_sigma` of each band.
        """
        if not hasattr(self, "frame_shape_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit(image) first")
        image = np.asarray(image)
        if image.shape[:2] != self.frame_shape_:
            raise ValueError(f"image frame {image.shape[:2]} differs from the fitted frame "
                             f"{self.frame_shape_}")
        if self.failed:
            return image.copy()
        return crop_square(image, self.center, self.crop_size, self.pad_mode,
                           noise_sigma=noise_sigma, seed=seed)

    @property
    def outside_fraction(self) -> float:
        """Fraction of the crop's pixels outside the frame (0 for a failed fit)."""
        if self.failed:
            return 0.0
        return outside_fraction(self.frame_shape_, self.center, self.crop_size)

    def fit_transform(self, image: np.ndarray, **fit_kwargs) -> np.ndarray:
        return self.fit(image, **fit_kwargs).transform(image)

    def __call__(self, image: np.ndarray, **fit_kwargs) -> np.ndarray:
        """Fit on ``image`` and return its crop."""
        return self.fit_transform(image, **fit_kwargs)

    def record(self) -> dict[str, Any]:
        """Per-image columns for ``objects.parquet`` (radii in pixels of the input frame)."""
        return {"crop_size": self.crop_size, "crop_failed": self.failed,
                "crop_failure": self.failure_reason,
                "crop_outside_fraction": self.outside_fraction}


class PetrosianCropper(_SquareCropper):
    """Crop to a square of half-size ``factor`` × R90 (Petrosian) about the galaxy centre.

    Parameters
    ----------
    factor : crop half-size in units of R90 (``PETRO_RADIUS_FACTOR``).
    eta : Petrosian ratio defining r_P (0.2, SDSS).
    reference_band : channel of an (H, W, C) image on which radii are measured.
    petrosian_aperture : N_P, the Petrosian flux is measured within N_P r_P (2, SDSS).
    center : 'centroid', 'peak' or 'frame' (see :func:`find_center`), or a fixed (x, y).
    center_radius : search radius of the centre (pixels); None = ¼ of the smaller edge.
    dr : annulus width (pixels). oversample : sub-pixels per pixel edge.
    min_snr : minimum S/N of the Petrosian flux against the pixel noise.
    min_frame_coverage : the η root is searched only where annuli are at least this
        fraction inside the frame.
    min_size, pad_mode : smallest crop edge (pixels) and padding beyond the frame
        ('noise' or a :func:`numpy.pad` mode; see the module docstring).

    Attributes after ``fit`` (pixels; NaN when failed): ``r_petrosian``, ``r50``, ``r90``;
    also ``flux_petrosian`` (image units) and ``snr`` (kept for diagnosis when the S/N
    test fails), ``center``, ``crop_size``, ``failed``, ``failure_reason``, ``profile_``
    (:class:`RadialProfile`, None if not reached).
    """

    def __init__(self, factor: float = 2.0, eta: float = 0.2, reference_band: int = 0, *,
                 petrosian_aperture: float = 2.0, center: str | tuple[float, float] = "centroid",
                 center_radius: float | None = None, dr: float = 1.0, oversample: int = 4,
                 min_snr: float = 5.0, min_frame_coverage: float = 0.5, min_size: int = 4,
                 pad_mode: str = DEFAULT_PAD_MODE):
        super().__init__(min_size, pad_mode)
        if not factor > 0:
            raise ValueError(f"factor must be > 0, got {factor}")
        if not 0 < eta < 1:
            raise ValueError(f"eta must be in (0, 1), got {eta}")
        if isinstance(center, str) and center not in CENTER_METHODS:
            raise ValueError(f"center must be one of {CENTER_METHODS} or (x, y), got {center!r}")
        if not dr > 0 or int(oversample) < 1:
            raise ValueError(f"need dr > 0 and oversample >= 1, got dr={dr}, "
                             f"oversample={oversample}")
        self.factor = float(factor)
        self.eta = float(eta)
        self.reference_band = int(reference_band)
        self.petrosian_aperture = float(petrosian_aperture)
        self.center_method = center
        self.center_radius = center_radius
        self.dr = float(dr)
        self.oversample = int(oversample)
        self.min_snr = float(min_snr)
        self.min_frame_coverage = float(min_frame_coverage)

    def fit(self, image: np.ndarray, mask: np.ndarray | None = None) -> "PetrosianCropper":
        """Measure r_P, R50, R90 on the reference band; ``mask`` (H, W) True = ignore pixel."""
        self._reset(image)
        self.r_petrosian = self.r50 = self.r90 = math.nan
        self.flux_petrosian = self.snr = math.nan
        self.profile_ = None
        ref = np.asarray(_reference(image, self.reference_band), dtype=np.float64)
        valid = np.isfinite(ref)
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != ref.shape:
                raise ValueError(f"mask shape {mask.shape} differs from the image frame "
                                 f"{ref.shape}")
            valid &= ~mask
        if not valid.any():
            self._fail("no_valid_pixels")
            return self
        if isinstance(self.center_method, str):
            self.center = find_center(ref, self.center_method, self.center_radius, valid)
        else:
            self.center = tuple(float(c) for c in self.center_method)
        profile, r_p, reason = self._petrosian(ref, valid)
        self.profile_ = profile
        if reason:
            self._fail(reason)
            return self
        flux = profile.flux_within(self.petrosian_aperture * r_p)
        sigma = robust_sigma(ref[valid])
        n_pix = min(math.pi * (self.petrosian_aperture * r_p) ** 2, float(valid.sum()))
        noise = sigma * math.sqrt(n_pix)
        self.snr = flux / noise if noise > 0 else (math.inf if flux > 0 else math.nan)
        self.flux_petrosian = flux
        if not flux > 0:
            self._fail("negative_flux")
            return self
        if not self.snr >= self.min_snr:
            self._fail("low_snr")
            return self
        self.r_petrosian = r_p
        self.r50 = profile.radius_enclosing(0.5 * flux)
        self.r90 = profile.radius_enclosing(0.9 * flux)
        if not (self.r90 > 0):
            self._fail("no_r90")
            return self
        self.crop_size = self._size_from_half(self.factor * self.r90)
        return self

    def _petrosian(self, ref: np.ndarray, valid: np.ndarray) -> tuple[RadialProfile, float, str]:
        """Profile and r_P, touching only the pixels the answer depends on.

        A pixel-centre profile (oversample 1) of the whole frame gives a first r_P; the
        exact profile is then computed out to a margin beyond N_P × that r_P. The result
        is the one of the full-frame exact profile whenever N_P r_P lies inside the
        computed radius (checked); otherwise, or when the first pass fails, the whole frame
        is profiled exactly.
        """
        kwargs = dict(dr=self.dr, valid=valid)
        first = radial_profile(ref, self.center, oversample=1, **kwargs)
        guess, reason = petrosian_radius(first, self.eta, self.min_frame_coverage)
        if not reason and self.oversample > 1:
            reach = 1.25 * max(self.petrosian_aperture, 1.0) * guess + 2.0 * self.dr + 1.0
            if reach < float(first.edges[-1]):
                profile = radial_profile(ref, self.center, oversample=self.oversample,
                                         max_radius=reach, **kwargs)
                r_p, reason = petrosian_radius(profile, self.eta, self.min_frame_coverage)
                if not reason and self.petrosian_aperture * r_p <= profile.edges[-1]:
                    return profile, r_p, ""
        if self.oversample == 1:
            return first, guess, reason
        profile = radial_profile(ref, self.center, oversample=self.oversample, **kwargs)
        r_p, reason = petrosian_radius(profile, self.eta, self.min_frame_coverage)
        return profile, r_p, reason

    def record(self) -> dict[str, Any]:
        out = {"r_petrosian": self.r_petrosian, "r50": self.r50, "r90": self.r90,
               "petrosian_snr": self.snr}
        out.update(super().record())
        return out


class R200cCropper(_SquareCropper):
    """Crop to a square of half-size ``factor`` × R200c about the frame centre (X-ray maps).

    ``fit(image, r200c_kpc=…, kpc_per_pixel=…)``; afterwards ``r200c`` is R200c in pixels.
    Non-finite or non-positive inputs fail the fit (full frame kept).
    """

    def __init__(self, factor: float = 1.0, *, min_size: int = 4, pad_mode: str = DEFAULT_PAD_MODE):
        super().__init__(min_size, pad_mode)
        if not factor > 0:
            raise ValueError(f"factor must be > 0, got {factor}")
        self.factor = float(factor)

    def fit(self, image: np.ndarray, *, r200c_kpc: float, kpc_per_pixel: float) -> "R200cCropper":
        self._reset(image)
        self.r200c = math.nan
        r200c_kpc, kpc_per_pixel = float(r200c_kpc), float(kpc_per_pixel)
        if not (math.isfinite(kpc_per_pixel) and kpc_per_pixel > 0):
            self._fail("invalid_pixel_scale")
            return self
        if not (math.isfinite(r200c_kpc) and r200c_kpc > 0):
            self._fail("invalid_r200c")
            return self
        self.r200c = r200c_kpc / kpc_per_pixel
        self.crop_size = self._size_from_half(self.factor * self.r200c)
        return self

    def record(self) -> dict[str, Any]:
        out = {"r200c_px": self.r200c}
        out.update(super().record())
        return out


class FractionCropper(_SquareCropper):
    """Keep the central ``fraction`` of the frame: a square of round(fraction × shorter edge)."""

    def __init__(self, fraction: float = 1.0, *, min_size: int = 1,
                 pad_mode: str = DEFAULT_PAD_MODE):
        super().__init__(min_size, pad_mode)
        if not 0 < fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.fraction = float(fraction)

    def fit(self, image: np.ndarray) -> "FractionCropper":
        self._reset(image)
        self.crop_size = self._size_from_half(0.5 * self.fraction * min(self.frame_shape_))
        return self


def outside_summary(table: pd.DataFrame) -> dict:
    """Distribution of ``crop_outside_fraction`` over the kept images, and how they were
    padded: n, fraction of images with any padding, mean, median, p90, p99, max, pad mode
    and σ source counts (the analyse report shows the same)."""
    values = table["crop_outside_fraction"].to_numpy(np.float64) if "crop_outside_fraction" in table \
        else np.zeros(0)
    out = {"n": int(values.size)}
    if values.size:
        out.update({"padded_fraction": float((values > 0).mean()),
                    "mean": float(values.mean()), "median": float(np.median(values)),
                    "p90": float(np.quantile(values, 0.9)), "p99": float(np.quantile(values, 0.99)),
                    "max": float(values.max())})
    if "pad_sigma_source" in table:
        out["pad_sigma_source"] = {str(k): int(v) for k, v in
                                   table["pad_sigma_source"].value_counts().sort_index().items()}
    return out
