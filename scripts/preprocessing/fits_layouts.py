"""Read the band layouts other than one multi-extension file: a (bands, H, W) cube in one
HDU (Legacy Survey, DES) and one file per band (the HSC-SSP cutout service).

Both return the same :class:`~scripts.preprocessing.fits_bands.BandImage` as
:func:`~scripts.preprocessing.fits_bands.load_bands`, with the same repairs and the same
:class:`~scripts.preprocessing.fits_file.BadImageError` reasons, so extract treats every
layout alike.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from scripts.preprocessing.fits_bands import (NAN_FILLS, BandImage, check_band, load_bands,
                                              meta_from_header)
from scripts.preprocessing.fits_file import BadImageError, FitsFile

#: Relative difference of pixel scales above which band files of one object disagree.
PIXEL_SCALE_RTOL = 1e-3


def cube_band_order(header: Mapping[str, Any], n_planes: int) -> tuple[str, ...] | None:
    """Band of each cube plane from the header: ``BAND0``, ``BAND1``, … (Legacy Survey), else
    ``BANDS`` (``'g,r,z'`` or ``'grz'``); None when the header says neither."""
    numbered = []
    while header.get(f"BAND{len(numbered)}") is not None:
        numbered.append(str(header[f"BAND{len(numbered)}"]).strip())
    if numbered:
        return tuple(numbered)
    bands = header.get("BANDS")
    if bands is None or not str(bands).strip():
        return None
    text = str(bands).strip()
    parts = [p.strip() for p in text.split(",")] if "," in text else list(text.replace(" ", ""))
    return tuple(parts)


def _cube_index(f, path: Path, extname: str | None) -> int:
    """Index of the HDU holding the cube: ``extname`` if given, else the first 3-axis HDU."""
    if extname is not None:
        return f.index(extname)
    naxes = [f.header_value(i, "NAXIS") for i in range(len(f.names))]
    for i, n in enumerate(naxes):
        if n == 3:
            return i
    raise BadImageError(path, "wrong_shape",
                        f"no HDU holds a (bands, H, W) cube; NAXIS of each HDU: {naxes}")


def load_cube(path: str | os.PathLike, filters: Sequence[str],
              cube_bands: Sequence[str] | None = None, *, extname: str | None = None,
              nan_fill: str = "median", max_nan_fraction: float = 0.5) -> BandImage:
    """Read the bands ``filters`` from one HDU holding a (bands, H, W) cube (Legacy Survey,
    DES cut-outs) into (H, W, C) float32.

    Parameters
    ----------
    filters : bands wanted, in channel order; matched to the plane bands ignoring case.
    cube_bands : band of each plane in plane order (params ``CUBE_BANDS``); None reads it
        from the header (:func:`cube_band_order`).
    extname : EXTNAME of the cube HDU; None takes the first HDU with three axes.

    Raises
    ------
    BadImageError : the reasons of :func:`load_bands`, plus ``band_count`` (planes and
        band list differ in length), ``band_order_unknown`` (no band list anywhere) and
        ``missing_band`` (a wanted band is not among the planes).
    """
    if isinstance(filters, str) or len(filters) == 0:
        raise ValueError(f"filters must be a non-empty sequence of band names, got {filters!r}")
    if nan_fill not in NAN_FILLS:
        raise ValueError(f"nan_fill must be one of {NAN_FILLS}, got {nan_fill!r}")
    path = Path(path)
    with FitsFile(path) as f:
        index = _cube_index(f, path, extname)
        name = f.names[index] or f"HDU {index}"
        header = f.header_values(index)
        n_planes = header.get("NAXIS3")
        source = "extract.CUBE_BANDS"
        order = tuple(cube_bands) if cube_bands is not None else None
        if order is None:
            order, source = cube_band_order(header, n_planes or 0), "the header"
        if order is None:
            raise BadImageError(path, "band_order_unknown",
                                f"cube {name!r} has {n_planes} planes but neither BAND0, BAND1, … "
                                "nor BANDS in its header; give the plane order in "
                                "extract.CUBE_BANDS")
        if len(order) != n_planes:
            raise BadImageError(path, "band_count",
                                f"cube {name!r} has {n_planes} planes but {source} lists "
                                f"{len(order)} bands {list(order)}")
        upper = [b.strip().upper() for b in order]
        missing = [b for b in filters if b.strip().upper() not in upper]
        if missing:
            raise BadImageError(path, "missing_band",
                                f"cube {name!r} has no plane for band(s) {missing}; its planes "
                                f"are {list(order)} (from {source})")
        repeated = sorted({b for b in upper if upper.count(b) > 1})
        if repeated:
            raise BadImageError(path, "duplicate_band",
                                f"cube {name!r}: band(s) {repeated} name more than one plane")
        cube = f.data(index, name, ndim=3)
    bands, counts = [], []
    for band in filters:
        plane = upper.index(band.strip().upper())
        data, n_bad = check_band(path, f"{name}[{plane}] ({band})", cube[plane], nan_fill,
                                  max_nan_fraction)
        bands.append(data)
        counts.append(n_bad)
    meta = meta_from_header(header, str(path), f.names[index])
    data = np.stack(bands, axis=-1).astype(np.float32, copy=False)
    return BandImage(str(path), tuple(f"{name}[{upper.index(b.strip().upper())}]" for b in filters),
                     data, tuple(counts), meta, (None,) * len(filters),
                     (math.nan,) * len(filters))


def load_band_files(paths: Sequence[str | os.PathLike | None], filters: Sequence[str],
                    extnames: Sequence[str], *, variance: bool = False, nan_fill: str = "median",
                    max_nan_fraction: float = 0.5, name: str = "") -> BandImage:
    """Read one object stored as one file per band (HSC-SSP cutout service: an empty primary
    HDU, then IMAGE, MASK and VARIANCE) into (H, W, C) float32.

    ``paths[i]`` holds band ``filters[i]`` in HDU ``extnames[i]``; None where the object
    has no file for that band. ``name`` labels the object in messages.

    Raises
    ------
    BadImageError : ``missing_band`` (a band without a file, or without its HDU),
        ``wrong_shape`` (band files of different shapes), ``pixel_scale_mismatch`` (band
        files with different pixel scales), and every reason of :func:`load_bands`, the
        detail naming the band and file.
    """
    absent = [b for b, p in zip(filters, paths) if p is None]
    if absent:
        present = [f"{b}: {os.path.basename(p)}" for b, p in zip(filters, paths) if p is not None]
        raise BadImageError(name, "missing_band",
                            f"no file for band(s) {absent}; files present: "
                            f"{', '.join(present) or '<none>'}")
    loaded = []
    for band, path, ext in zip(filters, paths, extnames):
        try:
            loaded.append(load_bands(path, [ext], nan_fill=nan_fill,
                                     max_nan_fraction=max_nan_fraction, variance=variance,
                                     bare_planes=True))
        except BadImageError as err:
            raise BadImageError(err.path, err.reason, f"band {band} ({os.path.basename(path)}): "
                                                      f"{err.detail}") from None
    first = loaded[0]
    for band, image in zip(filters[1:], loaded[1:]):
        if image.data.shape != first.data.shape:
            raise BadImageError(image.path, "wrong_shape",
                                f"band {band} ({os.path.basename(image.path)}) is "
                                f"{image.data.shape[:2]} pixels, band {filters[0]} "
                                f"({os.path.basename(first.path)}) is {first.data.shape[:2]}")
        a, b = first.meta.arcsec_per_pixel, image.meta.arcsec_per_pixel
        if math.isfinite(a) != math.isfinite(b) or (
                math.isfinite(a) and abs(a - b) > PIXEL_SCALE_RTOL * max(abs(a), abs(b))):
            raise BadImageError(image.path, "pixel_scale_mismatch",
                                f"band {band} ({os.path.basename(image.path)}) has {b:.6g} "
                                f"arcsec/pixel, band {filters[0]} ({os.path.basename(first.path)}) "
                                f"has {a:.6g}; resample the cut-outs to one grid")
    data = np.concatenate([i.data for i in loaded], axis=-1)
    return BandImage(first.path, tuple(extnames), data, tuple(i.n_repaired[0] for i in loaded),
                     first.meta, tuple(p for i in loaded for p in i.variances),
                     tuple(s for i in loaded for s in i.var_scales))
