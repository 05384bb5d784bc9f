"""FITS writers in the layouts of the real archives.

HSC-like cut-outs follow the real TNG–HSC mock (data/real_hsc_mock): for each band
an image HDU (float64, AB nanomaggies, EXTNAME ``SUBARU_HSC.<B>``; the first band is the
PRIMARY HDU), then ``SUBARU_HSC.<B> MASK`` (int32 bit mask) and ``SUBARU_HSC.<B> VARIANCE``
(float32). X-ray maps are a single primary image HDU named ``XRAY_0.5-5.0keV``. Header
cards are (key, value, comment) triples; values must be finite so every file passes
``astropy.io.fits`` verification.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from astropy.io import fits

Card = tuple[str, object, str]


def _card(key: str, value, comment: str) -> fits.Card:
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(float(value)):
            raise ValueError(f"FITS header card {key} must be finite, got {value}")
        value = float(value)
    elif isinstance(value, (bool, np.bool_)):
        value = bool(value)
    elif isinstance(value, np.integer):
        value = int(value)
    return fits.Card(key, value, comment)


def _header(cards: list[Card]) -> fits.Header:
    """Header from (key, value, comment) triples (built in one go: astropy's per-card
    updates dominate the write time otherwise)."""
    return fits.Header([_card(*c) for c in cards])


def _write(hdul: fits.HDUList, path: Path) -> None:
    """Write atomically (temporary file + rename) so a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    hdul.writeto(tmp, overwrite=True, output_verify="ignore")  # cards are validated when built
    os.replace(tmp, path)


def write_hsc_cutout(path: Path, bands: list[str], images: np.ndarray, masks: np.ndarray,
                     variances: np.ndarray, cards_per_band: list[list[Card]]) -> None:
    """Write a multi-band cut-out; ``bands`` like ['G', 'R', 'I'], arrays (B, H, W)."""
    hdus = []
    for b, name in enumerate(bands):
        extname = f"SUBARU_HSC.{name}"
        header = _header([("EXTNAME", extname, "extension name"), *cards_per_band[b]])
        data = np.ascontiguousarray(images[b], dtype=np.float64)
        hdus.append(fits.PrimaryHDU(data=data, header=header) if b == 0 else fits.ImageHDU(data=data, header=header))
        hdus.append(fits.ImageHDU(data=np.ascontiguousarray(masks[b], dtype=np.int32), name=f"{extname} MASK"))
        hdus.append(fits.ImageHDU(data=np.ascontiguousarray(variances[b], dtype=np.float32),
                                  name=f"{extname} VARIANCE"))
    _write(fits.HDUList(hdus), path)


def write_xray_map(path: Path, image: np.ndarray, cards: list[Card], extname: str) -> None:
    """Write a single-band X-ray map as the primary HDU named ``extname``."""
    header = _header([("EXTNAME", extname, "extension name"), *cards])
    _write(fits.HDUList([fits.PrimaryHDU(data=np.ascontiguousarray(image, dtype=np.float32), header=header)]), path)


def write_band_file(path: Path, image: np.ndarray, mask: np.ndarray, variance: np.ndarray,
                    cards: list[Card]) -> None:
    """One band of one object as the HSC-SSP cutout service writes it: an empty primary
    HDU, then ``IMAGE`` (float32, with the celestial WCS in ``cards``), ``MASK`` (int32) and
    ``VARIANCE`` (float32)."""
    header = _header(cards)
    _write(fits.HDUList([
        fits.PrimaryHDU(),
        fits.ImageHDU(data=np.ascontiguousarray(image, dtype=np.float32), header=header, name="IMAGE"),
        fits.ImageHDU(data=np.ascontiguousarray(mask, dtype=np.int32), name="MASK"),
        fits.ImageHDU(data=np.ascontiguousarray(variance, dtype=np.float32), name="VARIANCE"),
    ]), path)


def write_cube(path: Path, bands: list[str] | None, images: np.ndarray, cards: list[Card]) -> None:
    """A (bands, H, W) cube in the primary HDU, as Legacy Survey cut-outs: the band of each
    plane in ``BAND0``, ``BAND1``, … and ``BANDS`` (omitted when ``bands`` is None)."""
    band_cards: list[Card] = []
    if bands is not None:
        band_cards = [("BANDS", "".join(bands) if all(len(b) == 1 for b in bands) else ",".join(bands),
                       "bands of the planes")]
        band_cards += [(f"BAND{i}", b, f"band of plane {i}") for i, b in enumerate(bands)]
    header = _header([*cards, *band_cards])
    _write(fits.HDUList([fits.PrimaryHDU(data=np.ascontiguousarray(images, dtype=np.float32),
                                         header=header)]), path)
