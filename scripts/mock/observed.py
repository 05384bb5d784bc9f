"""Small observed sets in the layouts of real survey cut-outs, with a catalogue keyed by RA/Dec.

Observed cut-outs rarely come as one multi-extension file per object named by catalogue id
(the layout of ``MOCK_HSC``). This module writes the same kind of galaxies as

* ``extensions``: ``{object_id}_HSC_GRIZY.fits``, one HDU per band (``SUBARU_HSC.<B>``);
* ``band_files``: one file per object and band as the HSC-SSP cutout service writes them,
  ``{n}-cutout-HSC-{B}-9813-pdr3_wide.fits`` (``n`` the line of the request list, not a
  catalogue id), an empty primary HDU then ``IMAGE``, ``MASK`` and ``VARIANCE``;
* ``cube``: one (bands, H, W) primary HDU per object, as Legacy Survey / DES cut-outs,
  ``cutout_{ra:.5f}_{dec:+.5f}.fits``, the plane order in ``BAND0``, ``BAND1``, … / ``BANDS``;

each with a celestial TAN WCS centred on the galaxy, and ``catalogue.csv`` with
``object_id``, ``ra``, ``dec`` (the galaxy's catalogue position, ``offset_arcsec`` from the
image centre), ``photoz`` and the true total flux per band. Galaxies are exponential discs
(random size, axis ratio, angle) on Gaussian sky noise, fluxes in nanomaggies; ``truth.csv``
repeats the catalogue with the file of each object. Small and fast: for tests and
``params.observed.yaml``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from scripts.mock.fits_io import write_band_file, write_cube, write_hsc_cutout

LAYOUTS = ("extensions", "band_files", "cube")
BANDS = ("G", "R", "I")
#: HSC-SSP pixel scale [arcsec].
PIXEL_SCALE = 0.168
#: Default file-name patterns of the sets (FILE_PATTERNS), by layout and by catalogue match.
PATTERNS = {
    ("extensions", "id"): r"^(?P<object_id>\d+)_HSC_GRIZY\.fits$",
    ("band_files", "id"): r"^(?P<object_id>\d+)-cutout-HSC-(?P<filter>[A-Z])-.*\.fits$",
    ("band_files", "sky"): r"^\d+-cutout-HSC-(?P<filter>[A-Z])-.*\.fits$",
    ("cube", "id"): r"^(?P<object_id>\d+)_cube\.fits$",
    ("cube", "sky"): r"^cutout_.*\.fits$",
}


def wcs_cards(ra: float, dec: float, size: int, pixel_scale: float = PIXEL_SCALE) -> list:
    """Header cards of a north-up TAN WCS whose central pixel is at (ra, dec) degrees."""
    centre = (size + 1) / 2  # FITS pixels are 1-based: the centre of a size-pixel frame
    return [("CTYPE1", "RA---TAN", "gnomonic projection"), ("CTYPE2", "DEC--TAN", "gnomonic projection"),
            ("CRVAL1", float(ra), "[deg] RA of the reference pixel"),
            ("CRVAL2", float(dec), "[deg] Dec of the reference pixel"),
            ("CRPIX1", centre, "reference pixel"), ("CRPIX2", centre, "reference pixel"),
            ("CD1_1", -pixel_scale / 3600, "[deg/pixel]"), ("CD1_2", 0.0, "[deg/pixel]"),
            ("CD2_1", 0.0, "[deg/pixel]"), ("CD2_2", pixel_scale / 3600, "[deg/pixel]"),
            ("RADESYS", "ICRS", "reference frame")]


def galaxies(rng: np.random.Generator, n: int, size: int, bands=BANDS, sky_sigma: float = 0.02):
    """(images (n, B, H, W), variances (n, B, H, W), total flux (n, B)) of exponential discs."""
    y, x = np.mgrid[0:size, 0:size] - (size - 1) / 2
    images = np.empty((n, len(bands), size, size))
    flux = np.empty((n, len(bands)))
    for i in range(n):
        r_d = rng.uniform(2.0, 5.0)
        q, angle = rng.uniform(0.4, 1.0), rng.uniform(0, np.pi)
        xr = x * np.cos(angle) + y * np.sin(angle)
        yr = (-x * np.sin(angle) + y * np.cos(angle)) / q
        profile = np.exp(-np.hypot(xr, yr) / r_d)
        profile /= profile.sum()
        colour = rng.uniform(0.5, 1.5)
        for b in range(len(bands)):
            flux[i, b] = rng.uniform(5, 20) * colour ** b
            images[i, b] = flux[i, b] * profile
    images += sky_sigma * rng.standard_normal(images.shape)
    return images, np.full(images.shape, sky_sigma ** 2, np.float32), flux


def write_observed_set(root: Path, layout: str, match: str = "sky", n: int = 8, size: int = 48,
                       seed: int = 0, offset_arcsec: float = 0.2, bands=BANDS) -> pd.DataFrame:
    """Write one observed set under ``root`` (``images/`` + ``catalogue.csv`` +
    ``truth.csv``); returns the truth table (one row per object, with its ``file``).

    ``match`` 'id' puts the catalogue object_id in the file names; 'sky' leaves it out
    (band files are named by request line, cubes by position).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    rng = np.random.default_rng(seed)
    root = Path(root)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    ids = np.sort(rng.choice(np.arange(10**15, 10**15 + 10**6), n, replace=False)).astype(np.int64)
    ra = rng.uniform(150.0, 150.5, n)
    dec = rng.uniform(2.0, 2.5, n)
    pixels, variances, flux = galaxies(rng, n, size, bands)
    angle = rng.uniform(0, 2 * np.pi, n)
    cat_ra = ra + offset_arcsec / 3600 * np.cos(angle) / np.cos(np.radians(dec))
    cat_dec = dec + offset_arcsec / 3600 * np.sin(angle)
    files = []
    for i in range(n):
        cards = wcs_cards(ra[i], dec[i], size)
        if layout == "extensions":
            name = f"{ids[i]}_HSC_GRIZY.fits"
            write_hsc_cutout(images_dir / name, list(bands), pixels[i],
                             np.zeros(pixels[i].shape, np.int32), variances[i],
                             [cards] * len(bands))
        elif layout == "band_files":
            lead = str(ids[i]) if match == "id" else str(i + 1)
            name = f"{lead}-cutout-HSC-{{filter}}-9813-pdr3_wide.fits"
            for b, band in enumerate(bands):
                write_band_file(images_dir / name.format(filter=band), pixels[i, b],
                                np.zeros(pixels[i, b].shape, np.int32), variances[i, b], cards)
            name = name.format(filter=bands[0])
        else:
            name = f"{ids[i]}_cube.fits" if match == "id" else f"cutout_{ra[i]:.5f}_{dec[i]:+.5f}.fits"
            write_cube(images_dir / name, [b.lower() for b in bands], pixels[i], cards)
        files.append(name)
    catalogue = pd.DataFrame({"object_id": ids, "ra": cat_ra, "dec": cat_dec,
                              "photoz": rng.uniform(0.05, 0.3, n)})
    for b, band in enumerate(bands):
        catalogue[f"flux_true_{band.lower()}"] = flux[:, b]
    catalogue.to_csv(root / "catalogue.csv", index=False)
    truth = catalogue.assign(file=files, ra_image=ra, dec_image=dec)
    truth.to_csv(root / "truth.csv", index=False)
    return truth
