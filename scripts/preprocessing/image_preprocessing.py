"""Per-image preprocessing: read one object's bands, crop, resize to IMAGE_SIZE and measure.

One function, :func:`process_image`, shared by the extract stage (every image of a
dataset, in worker processes) and the analogue search of the analyse stage (an observed
file read exactly as extract would read it), so both see the same pixels. It never raises
for a bad file: the result carries the extract stage's skip reason instead.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np

from scripts.preprocessing.croppers import FractionCropper, PetrosianCropper, R200cCropper
from scripts.preprocessing.deblend import fill_masked, neighbour_mask
from scripts.preprocessing.fits_bands import load_bands, read_band_planes
from scripts.preprocessing.fits_file import BadImageError
from scripts.preprocessing.fits_layouts import load_band_files, load_cube
from scripts.preprocessing.noise import identity_seed, sky_sigma
from scripts.preprocessing.resize import resize_area

#: Bump when the per-image processing changes, so old caches are not reused.
#: 2: crops padded with sky noise instead of zeros; crop_outside_fraction and pad_sigma_*.
PROCESSING_VERSION = 2
#: AB zero point of images in nanomaggies.
NANOMAGGY_ZEROPOINT = 22.5


@dataclass
class ImageResult:
    """What processing one file gives: the image or the reason it was skipped."""

    file: str
    image: np.ndarray | None
    record: dict
    reason: str = ""
    detail: str = ""


def _aperture_fluxes(image: np.ndarray, center, radius: float) -> np.ndarray:
    """Sum of every band within a circular aperture (pixel centres inside)."""
    h, w = image.shape[:2]
    y, x = np.mgrid[0:h, 0:w]
    inside = (x - center[0]) ** 2 + (y - center[1]) ** 2 <= radius ** 2
    return image[inside].sum(axis=0)


def _remove_neighbours(image: np.ndarray, mask: np.ndarray, center, sigma, seed: int) -> np.ndarray:
    """``image`` with the other sources' pixels (``mask``) replaced by the galaxy's mean in
    the same annulus about ``center`` plus Gaussian sky noise of each band's ``sigma``, drawn
    from a generator seeded by the image's identity (``seed``; a different stream from the
    padding's), so the stored image keeps its noise texture where a neighbour was."""
    filled = fill_masked(image, mask, center).astype(np.float64)
    rng = np.random.default_rng([int(seed), 1])
    noise = rng.standard_normal((int(mask.sum()), image.shape[-1])) * np.asarray(sigma, np.float64)
    filled[mask] += noise
    return filled.astype(image.dtype, copy=False)


def _read(path: str, extnames: tuple[str, ...], filters: tuple[str, ...], layout: dict,
          variance: bool):
    """The bands of one object in its file layout (see :data:`scripts.params.FILE_LAYOUTS`)."""
    kind = layout.get("layout", "extensions")
    if kind == "cube":
        return load_cube(path, filters, layout.get("cube_bands"))
    if kind == "band_files":
        return load_band_files(layout["paths"], filters, extnames, variance=variance,
                               name=os.path.basename(path))
    return load_bands(path, extnames, variance=variance)


def _mask_plane(path: str, extnames: tuple[str, ...], layout: dict, band: int) -> np.ndarray:
    """MASK plane of band number ``band`` (the Petrosian reference band)."""
    if layout.get("layout") == "band_files":
        return read_band_planes(layout["paths"][band], extnames[band], ("mask",),
                                bare_planes=True)["mask"]
    return read_band_planes(path, extnames[band], ("mask",))["mask"]


def process_image(path: str, extnames: tuple[str, ...], filters: tuple[str, ...], crop: dict,
                  image_size: int, crop_inputs: dict, pad_seed: int | None = None,
                  layout: dict | None = None) -> ImageResult:
    """Read, crop, resize and measure one file. Never raises for a bad file.

    ``layout`` says how the object's bands are stored (``{"layout": "extensions"}``, the
    default; ``{"layout": "cube", "cube_bands": …}``; ``{"layout": "band_files", "paths":
    [file per band or None]}``, where ``path`` names the object).

    Crops leaving the frame are padded as ``crop['pad_mode']`` says (default sky noise of
    the image's σ per band, recorded as ``pad_sigma_<band>``; see :mod:`croppers`), from
    a generator seeded with ``pad_seed`` (extract passes the image's identity; None: the
    file name).
    """
    name = os.path.basename(path)
    layout = layout or {"layout": "extensions"}
    pad_mode = crop.get("pad_mode", "noise")
    try:
        bands = _read(path, extnames, filters, layout, variance=pad_mode == "noise")
    except BadImageError as err:
        return ImageResult(name, None, {}, err.reason, err.detail)
    image, meta = bands.data, bands.meta
    kind = crop["name"]
    neighbours = mask = petrosian = None    # neighbours: other sources' pixels (NEIGHBOURS mask)
    if kind == "petrosian" or crop.get("measure") == "petrosian":
        petrosian = PetrosianCropper(crop["petro_radius_factor"], reference_band=crop["reference_band"],
                                     pad_mode=pad_mode)
        if crop.get("mask_bits"):
            try:
                plane = _mask_plane(path, extnames, layout, crop["reference_band"])
            except BadImageError as err:
                return ImageResult(name, None, {}, err.reason, f"extract.MASK_BITS is set: {err.detail}")
            mask = (plane.astype(np.int64) & int(crop["mask_bits"])) != 0
        if crop.get("neighbours", "keep") in ("mask", "remove"):
            valid = None if mask is None else ~mask
            neighbours = neighbour_mask(image[..., crop["reference_band"]], valid=valid)
            mask = neighbours.mask if mask is None else (mask | neighbours.mask)
        petrosian.fit(image, mask=mask)
    if kind == "petrosian":
        cropper = petrosian
    elif kind == "r200c":
        cropper = R200cCropper(crop["r200c_factor"], pad_mode=pad_mode)
        cropper.fit(image, r200c_kpc=crop_inputs.get("r200c_kpc", math.nan),
                    kpc_per_pixel=meta.kpc_per_pixel)
    elif kind == "fraction":
        cropper = FractionCropper(crop["crop_fraction"], pad_mode=pad_mode).fit(image)
    else:
        cropper = FractionCropper(1.0, pad_mode=pad_mode).fit(image)
    record = cropper.record()
    if petrosian is not None and petrosian is not cropper:   # measured only: the crop is fixed
        record.update({k: v for k, v in petrosian.record().items() if not k.startswith("crop_")})
        record["petrosian_failure"] = petrosian.failure_reason
    record["nan_repaired"] = int(sum(bands.n_repaired))
    if pad_mode == "noise":
        sigma, sources = sky_sigma(image, bands.variances, bands.var_scales)
    else:
        sigma, sources = np.zeros(image.shape[-1]), ("none",) * image.shape[-1]
    for band, value in zip(filters, sigma):
        record[f"pad_sigma_{band}"] = float(value)
    record["pad_sigma_source"] = ",".join(sorted(set(sources)))
    # image-derived FIELDS: Petrosian radii in arcsec/kpc and magnitudes within 2 r_P
    measure = petrosian if petrosian is not None else cropper
    r_p = getattr(measure, "r_petrosian", math.nan)
    record.setdefault("r_petrosian", r_p)
    record.setdefault("r50", math.nan)
    record.setdefault("r90", math.nan)
    if neighbours is not None:
        record["neighbours_detected"] = max(neighbours.n_sources - int(neighbours.central_found), 0)
        record["neighbour_mask_fraction"] = float(neighbours.mask.mean())
    if math.isfinite(r_p) and not measure.failed:
        measured = image if neighbours is None else fill_masked(image, mask, measure.center)
        fluxes = _aperture_fluxes(measured, measure.center, 2.0 * r_p)
    else:
        fluxes = image.reshape(-1, image.shape[-1]).sum(axis=0)
    for band, flux in zip(filters, fluxes):
        record[f"flux_{band}"] = float(flux)
        record[f"mag_{band}"] = (NANOMAGGY_ZEROPOINT - 2.5 * math.log10(flux)) if flux > 0 else math.nan
    for r in ("50", "90"):
        radius = record[f"r{r}"]
        record[f"petro_r{r}_arcsec"] = radius * meta.arcsec_per_pixel
        record[f"petro_r{r}_kpc"] = radius * meta.kpc_per_pixel
    record["redshift_header"] = meta.redshift
    seed = identity_seed(name) if pad_seed is None else pad_seed
    if neighbours is not None and crop.get("neighbours") == "remove" and neighbours.mask.any():
        image = _remove_neighbours(image, neighbours.mask, measure.center, sigma, seed)
    try:
        out = resize_area(cropper.transform(image, noise_sigma=sigma, seed=seed), image_size)
    except ValueError as err:
        return ImageResult(name, None, {}, "wrong_shape", str(err))
    if not np.isfinite(out).all():
        return ImageResult(name, None, {}, "has_nan", "non-finite pixels after cropping")
    return ImageResult(name, out.astype(np.float32), record)
