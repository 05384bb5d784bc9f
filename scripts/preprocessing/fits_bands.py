"""Read image bands from FITS files by EXTNAME, and reject broken files with a reason.

One reader for every image dataset (SKIRT/HSC galaxy mocks, survey cut-outs, X-ray maps):

* Bands are found by their ``EXTNAME`` keyword, **the primary HDU included** (the real TNG
  HSC mocks store the G image in the primary HDU with ``EXTNAME = 'SUBARU_HSC.G'``).
  Matching ignores case and surrounding blanks. ``MASK`` / ``VARIANCE`` HDUs are never read
  unless asked for with :func:`read_band_planes`.
* Files are opened by :class:`~scripts.preprocessing.fits_file.FitsFile` (fitsio, with an
  astropy fallback); every way a file can be unusable raises
  :class:`~scripts.preprocessing.fits_file.BadImageError` with a short ``reason`` code, so
  extract can skip the file, count skips by reason and write them to its report.
* Non-finite pixels (NaN, ±inf) in a partly bad band are repaired and counted
  (:attr:`BandImage.n_repaired`); a band that is entirely non-finite, or more than
  ``max_nan_fraction`` non-finite, rejects the file.

Units are whatever the file stores (nanomaggies for the HSC mocks); values are returned as
float32, shape ``(H, W, C)`` with the bands in the order requested.
"""
from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from scripts.preprocessing.fits_file import BadImageError, FitsFile

logger = logging.getLogger(__name__)

#: Suffix of the extra planes that accompany an image band (HSC / SKIRT mock layout).
PLANE_SUFFIX = {"image": "", "mask": " MASK", "variance": " VARIANCE"}
#: How non-finite pixels are handled by :func:`load_bands`.
NAN_FILLS = ("median", "zero", "raise")


@dataclass(frozen=True)
class BandImage:
    """Bands of one file: ``data`` (H, W, C) float32 plus what was repaired."""

    path: str
    extnames: tuple[str, ...]
    data: np.ndarray
    #: Non-finite pixels replaced, per band (same order as ``extnames``).
    n_repaired: tuple[int, ...] = field(default=())
    #: Header values of the first band (redshift, pixel scales), read in the same open.
    meta: "ImageMeta | None" = None
    #: With ``load_bands(variance=True)``: each band's VARIANCE plane (None where the file
    #: has none or it is unusable) and its header ``VARSC`` (NaN where absent).
    variances: tuple = field(default=())
    var_scales: tuple[float, ...] = field(default=())

    @property
    def repaired(self) -> bool:
        """True when at least one non-finite pixel was replaced."""
        return any(self.n_repaired)


@dataclass(frozen=True)
class ImageMeta:
    """Header values extract needs; NaN where the header lacks them.

    ``kpc_per_pixel`` comes from ``FOVKPC / NAXIS1``, else from ``CDELT1`` when ``CTYPE1``
    is ``pc`` or ``kpc`` (SKIRT convention); ``arcsec_per_pixel`` from ``FOVARC / NAXIS1``,
    else ``kpc_per_pixel / KPCARC``, else the celestial WCS (``CD1_1``/``CD2_1`` or
    ``CDELT1`` when ``CTYPE1`` starts with ``RA``).
    """

    path: str
    extname: str
    shape: tuple[int, int]          # (ny, nx) pixels
    redshift: float
    fov_kpc: float                  # field of view, physical kpc
    fov_arcsec: float               # field of view, arcsec
    kpc_per_arcsec: float           # angular scale at the object's redshift
    kpc_per_pixel: float
    arcsec_per_pixel: float


# --------------------------------------------------------------------------- repair


def fill_nonfinite(band: np.ndarray, how: str = "median") -> tuple[np.ndarray, int]:
    """Replace non-finite pixels of a 2-D band; returns (filled copy, number replaced).

    ``how='median'``: each bad pixel takes the median of the finite pixels in its 3×3
    neighbourhood, repeated outward (pixels filled in one pass feed the next) for up to
    ``max(H, W)`` passes; anything still unfilled becomes 0. ``how='zero'``: bad pixels
    become 0 (the sky level of a sky-subtracted image).
    """
    if how not in ("median", "zero"):
        raise ValueError(f"how must be 'median' or 'zero', got {how!r}")
    out = np.array(band, dtype=np.float64, copy=True)
    bad = ~np.isfinite(out)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return out, 0
    if how == "zero":
        out[bad] = 0.0
        return out, n_bad
    out[bad] = np.nan
    for _ in range(max(out.shape)):
        ys, xs = np.nonzero(np.isnan(out))
        if ys.size == 0:
            break
        padded = np.pad(out, 1, constant_values=np.nan)
        windows = sliding_window_view(padded, (3, 3))[ys, xs].reshape(ys.size, 9)
        has_finite = np.isfinite(windows).any(axis=1)
        if not has_finite.any():
            break
        out[ys[has_finite], xs[has_finite]] = np.nanmedian(windows[has_finite], axis=1)
    out[np.isnan(out)] = 0.0
    return out, n_bad


def check_band(path: Path, extname: str, band: np.ndarray, nan_fill: str,
                max_nan_fraction: float) -> tuple[np.ndarray, int]:
    """Validate one band and return it as float32 with non-finite pixels repaired."""
    with np.errstate(over="ignore", invalid="ignore"):
        band32 = band.astype(np.float32)
    finite = np.isfinite(band32)
    if not np.array_equal(finite, np.isfinite(band)):
        # Finite values beyond float32 range: in practice data read at a wrong offset.
        raise BadImageError(path, "unreadable_data",
                            f"band {extname!r}: values beyond the float32 range "
                            f"(max |value| {np.nanmax(np.abs(band[np.isfinite(band)])):.3g}); "
                            "corrupt header or data?")
    band = band32
    n_bad = band.size - int(finite.sum())
    if n_bad == band.size:
        raise BadImageError(path, "all_nan", f"band {extname!r}: no finite pixel")
    if n_bad:
        fraction = n_bad / band.size
        if fraction > max_nan_fraction:
            raise BadImageError(path, "too_many_nan",
                                f"band {extname!r}: {fraction:.1%} non-finite pixels, more than "
                                f"max_nan_fraction={max_nan_fraction:.1%}")
        if nan_fill == "raise":
            raise BadImageError(path, "has_nan", f"band {extname!r}: {n_bad} non-finite pixels")
    values = band[finite] if n_bad else band
    if values.min() == values.max():
        raise BadImageError(path, "constant",
                            f"band {extname!r}: every finite pixel equals {values.flat[0]!r}")
    if n_bad:
        band = fill_nonfinite(band, nan_fill)[0].astype(np.float32)
        logger.debug("%s: band %s: repaired %d non-finite pixels (%s)", path, extname, n_bad,
                     nan_fill)
    return band, n_bad


# --------------------------------------------------------------------------- public API


def load_bands(path: str | os.PathLike, extnames: Sequence[str], *, nan_fill: str = "median",
               max_nan_fraction: float = 0.5,
               shape: tuple[int, int] | None = None, variance: bool = False,
               bare_planes: bool = False) -> BandImage:
    """Read the image HDUs named ``extnames`` into one (H, W, C) float32 cube.

    Parameters
    ----------
    path : FITS file.
    extnames : EXTNAME of each band, in channel order (case-insensitive; the primary HDU
        counts like any other).
    nan_fill : ``'median'`` (local 3×3 median of finite neighbours), ``'zero'``, or
        ``'raise'`` (any non-finite pixel rejects the file with reason ``has_nan``).
    max_nan_fraction : a band with a larger fraction of non-finite pixels is rejected
        (``too_many_nan``); an entirely non-finite band is always rejected (``all_nan``).
    shape : expected (H, W); ``None`` accepts any shape common to all bands.
    variance : also read each band's ``EXTNAME VARIANCE`` plane and ``VARSC`` header value
        in the same open (:attr:`BandImage.variances`, :attr:`BandImage.var_scales`; the
        sky noise that pads crops). A missing or unusable plane is None, never an error.
    bare_planes : a file of one band (HSC cutout service): when ``EXTNAME VARIANCE`` is
        absent, the plane is the HDU named ``VARIANCE``.

    Raises
    ------
    BadImageError : with ``reason`` in :data:`BadImageError.REASONS`.
    """
    if isinstance(extnames, str) or len(extnames) == 0:
        raise ValueError(f"extnames must be a non-empty sequence of EXTNAMEs, got {extnames!r}")
    if nan_fill not in NAN_FILLS:
        raise ValueError(f"nan_fill must be one of {NAN_FILLS}, got {nan_fill!r}")
    path = Path(path)
    bands, counts = [], []
    with FitsFile(path) as f:
        indices = [f.index(name) for name in extnames]  # all missing bands before any data
        for name, index in zip(extnames, indices):
            band = f.data(index, name)
            if bands and band.shape != bands[0].shape:
                raise BadImageError(path, "wrong_shape",
                                    f"band {name!r} has shape {band.shape}, band "
                                    f"{extnames[0]!r} has {bands[0].shape}")
            if shape is not None and band.shape != tuple(shape):
                raise BadImageError(path, "wrong_shape",
                                    f"band {name!r} has shape {band.shape}; "
                                    f"expected {tuple(shape)}")
            band, n_bad = check_band(path, name, band, nan_fill, max_nan_fraction)
            bands.append(band)
            counts.append(n_bad)
        meta = meta_from_header(f.header_values(indices[0]), str(path), f.names[indices[0]])
        planes, scales = (_variance_planes(f, extnames, indices, bands[0].shape, bare_planes)
                          if variance else ((), ()))
    data = np.stack(bands, axis=-1).astype(np.float32, copy=False)
    return BandImage(str(path), tuple(extnames), data, tuple(counts), meta, planes, scales)


def _plane_name(f, extname: str, plane: str, bare: bool) -> str:
    """Upper-case EXTNAME of ``extname``'s ``plane`` in an open file: ``EXTNAME MASK`` etc.,
    or with ``bare`` and that HDU absent, ``MASK`` / ``VARIANCE`` alone."""
    key = (extname + PLANE_SUFFIX[plane]).strip().upper()
    if bare and key not in f.names:
        return PLANE_SUFFIX[plane].strip().upper() or key
    return key


def _variance_planes(f, extnames: Sequence[str], indices: Sequence[int],
                     shape: tuple[int, ...], bare: bool = False) -> tuple[tuple, tuple[float, ...]]:
    """(VARIANCE plane or None, VARSC or NaN) per band of an open file."""
    planes, scales = [], []
    for name, index in zip(extnames, indices):
        key = _plane_name(f, name, "variance", bare)
        plane = None
        if f.names.count(key) == 1:
            try:
                plane = f.data(f.names.index(key), key)
            except BadImageError as err:
                logger.debug("%s: variance plane %s unusable (%s); sky noise from the band",
                             f.path, key, err.detail)
            if plane is not None and plane.shape != tuple(shape):
                logger.debug("%s: variance plane %s has shape %s, band %s", f.path, key,
                             plane.shape, shape)
                plane = None
        planes.append(plane)
        scales.append(header_float(f.header_value(index, "VARSC")) if plane is not None else math.nan)
    return tuple(planes), tuple(scales)


def read_bands(path: str | os.PathLike, extnames: Sequence[str], **kwargs) -> np.ndarray:
    """(H, W, C) float32 bands of ``path`` by EXTNAME; see :func:`load_bands` for options."""
    return load_bands(path, extnames, **kwargs).data


def read_band_planes(path: str | os.PathLike, extname: str,
                     planes: Iterable[str] = ("image", "mask", "variance"),
                     bare_planes: bool = False) -> dict[str, np.ndarray]:
    """Image, mask and/or variance planes of one band, as stored (no repair).

    The planes live in HDUs ``EXTNAME``, ``EXTNAME + ' MASK'`` and
    ``EXTNAME + ' VARIANCE'`` (HSC / SKIRT mock layout). Returns ``{plane: array}`` with
    the image and variance as float32 and the mask as stored (an integer bit mask). With
    ``bare_planes`` (a file of one band) an absent ``EXTNAME MASK`` falls back to ``MASK``.
    """
    planes = tuple(planes)
    unknown = [p for p in planes if p not in PLANE_SUFFIX]
    if unknown:
        raise ValueError(f"unknown planes {unknown}; expected some of {tuple(PLANE_SUFFIX)}")
    out: dict[str, np.ndarray] = {}
    with FitsFile(path) as f:
        for plane in planes:
            name = _plane_name(f, extname, plane, bare_planes) if plane != "image" else extname
            data = f.data(f.index(name), name)
            out[plane] = data if plane == "mask" else data.astype(np.float32, copy=False)
    shapes = {p: a.shape for p, a in out.items()}
    if len(set(shapes.values())) > 1:
        raise BadImageError(path, "wrong_shape", f"planes of {extname!r} differ in shape: {shapes}")
    return out


def list_extnames(path: str | os.PathLike) -> list[str]:
    """EXTNAME of every HDU in file order (upper-case; '' where an HDU has none)."""
    with FitsFile(path) as f:
        return list(f.names)


def read_header_values(path: str | os.PathLike, keys: Sequence[str],
                       extname: str | None = None) -> dict[str, Any]:
    """``{key: value}`` from the header of HDU ``extname`` (default: primary); None if absent."""
    with FitsFile(path) as f:
        header = f.header(0 if extname is None else f.index(extname))
        return {key: header.get(key) for key in keys}


def header_float(value: Any) -> float:
    """A header value as a finite float, NaN when absent, non-numeric or not finite."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def meta_from_header(header: Mapping[str, Any], path: str = "", extname: str = "") -> ImageMeta:
    """:class:`ImageMeta` from a FITS header (see the class for the rules; observed
    cut-outs without FOVARC take ``arcsec_per_pixel`` from their celestial WCS)."""
    nx, ny = int(header.get("NAXIS1", 0)), int(header.get("NAXIS2", 0))
    fov_kpc = header_float(header.get("FOVKPC", header.get("FOVSIZE")))
    fov_arcsec = header_float(header.get("FOVARC"))
    kpc_per_arcsec = header_float(header.get("KPCARC"))
    kpc_per_pixel = fov_kpc / nx if nx else math.nan
    if not math.isfinite(kpc_per_pixel):
        ctype = str(header.get("CTYPE1", "")).strip().lower()
        scale = {"pc": 1e-3, "kpc": 1.0}.get(ctype)
        kpc_per_pixel = abs(header_float(header.get("CDELT1"))) * scale if scale else math.nan
    arcsec_per_pixel = fov_arcsec / nx if nx else math.nan
    if not math.isfinite(arcsec_per_pixel) and kpc_per_arcsec > 0:
        arcsec_per_pixel = kpc_per_pixel / kpc_per_arcsec
    if not math.isfinite(arcsec_per_pixel):
        arcsec_per_pixel = wcs_arcsec_per_pixel(header)
    return ImageMeta(path=path, extname=extname, shape=(ny, nx),
                     redshift=header_float(header.get("REDSHIFT")), fov_kpc=fov_kpc,
                     fov_arcsec=fov_arcsec, kpc_per_arcsec=kpc_per_arcsec,
                     kpc_per_pixel=kpc_per_pixel, arcsec_per_pixel=arcsec_per_pixel)


def read_image_meta(path: str | os.PathLike, extname: str | None = None) -> ImageMeta:
    """Redshift, field of view and pixel scales of one image HDU (default: primary)."""
    with FitsFile(path) as f:
        index = 0 if extname is None else f.index(extname)
        return meta_from_header(f.header(index), str(path), f.names[index])


# --------------------------------------------------------------------------- sky position

def wcs_arcsec_per_pixel(header: Mapping[str, Any]) -> float:
    """Pixel scale [arcsec] along axis 1 of a celestial WCS (``CTYPE1`` = ``RA---…``):
    ``hypot(CD1_1, CD2_1)`` or ``|CDELT1|`` in degrees × 3600; NaN without one."""
    if not str(header.get("CTYPE1", "")).strip().upper().startswith("RA"):
        return math.nan
    cd11, cd21 = header_float(header.get("CD1_1")), header_float(header.get("CD2_1"))
    if math.isfinite(cd11) or math.isfinite(cd21):
        scale = math.hypot(cd11 if math.isfinite(cd11) else 0.0, cd21 if math.isfinite(cd21) else 0.0)
    else:
        scale = abs(header_float(header.get("CDELT1")))
    return scale * 3600.0 if scale > 0 else math.nan


def sky_position(path: str | os.PathLike, extname: str | None = None) -> tuple[float, float, str]:
    """(RA, Dec) in degrees of an image's centre and where it came from.

    The celestial WCS of HDU ``extname`` (default: the first HDU with data) evaluated at
    the central pixel, else its ``RA``/``DEC`` keys, else the primary header's
    (``'wcs'``, ``'header'``). Raises BadImageError ``no_sky_position`` without either.
    """
    from astropy.wcs import WCS
    from astropy.wcs.utils import pixel_to_skycoord

    path = Path(path)
    with FitsFile(path) as f:
        if extname is not None:
            index = f.index(extname)
        else:
            index = next((i for i in range(len(f.names)) if (f.header_value(i, "NAXIS") or 0) >= 2), 0)
        header = f.header(index)
        primary = f.header(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            wcs = WCS(header).celestial
            if wcs.has_celestial and wcs.naxis == 2:
                nx, ny = header.get("NAXIS1", 1), header.get("NAXIS2", 1)
                sky = pixel_to_skycoord((nx - 1) / 2, (ny - 1) / 2, wcs).icrs
                if np.isfinite(sky.ra.deg) and np.isfinite(sky.dec.deg):
                    return float(sky.ra.deg), float(sky.dec.deg), "wcs"
        except Exception as exc:  # astropy.wcs raises many kinds on odd headers
            logger.debug("%s: no usable WCS (%s)", path, exc)
    for h in (header, primary):
        ra, dec = header_float(h.get("RA")), header_float(h.get("DEC"))
        if math.isfinite(ra) and math.isfinite(dec):
            return ra, dec, "header"
    raise BadImageError(path, "no_sky_position",
                        "the image has neither a celestial WCS nor RA/DEC header keys; "
                        "sky matching (extract.CATALOGUE_MATCH sky) needs one of them")
