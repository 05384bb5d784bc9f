"""Mock universe against real TNG–HSC images: the quantities that make a set easy or hard.

Every image, mock or real, is measured by the extract stage's own code: the band reader
(:func:`scripts.preprocessing.fits_bands.load_bands`, with the variance planes), the sky σ of
:mod:`scripts.preprocessing.noise` and the :class:`~scripts.preprocessing.croppers.PetrosianCropper`
fit on the R band. Per image:

* ``snr_r``: S/N of the Petrosian flux in R (the cropper's ``petrosian_snr``);
* ``r90_frame``: Petrosian R90 over the frame edge (how much of the frame the galaxy fills);
* ``crop_frame``: the crop the default ``PETRO_RADIUS_FACTOR`` (2) asks for over the frame
  edge (> 1: the crop is padded beyond the frame);
* ``mag_r``: AB magnitude of the Petrosian flux in R;
* ``sky_sigma_<B>``: pixel noise σ per band [nanomaggies] (variance plane × VARSC, as extract);
* ``psf_fwhm_<B>``: PSF FWHM [arcsec] from the header key ``PSFFWHM`` (NaN where absent:
  the real TNG–HSC files do not carry it);
* ``neighbours_arcmin2``: detected sources other than the galaxy per arcmin², and
  ``neighbour_in_crop``: whether one of them lies inside the crop (2 R90 of the centre);
* ``redshift``, ``fov_kpc``: from the header where present.

The mock side is a seeded sample of a planned universe (default: the demo preset), rendered
into a temporary directory, so the comparison needs no prior build. Its rows also carry the
truth behind each image (``stellar_mass`` in log10 M☉, ``true_r_mag``), so that the S/N can
be read per stellar-mass bin (:func:`snr_by_mass`) and the population's stellar masses set
against an observed mass function (:func:`smf_quantiles`).

Why the medians alone mislead for S/N: a stellar-mass-selected sample's median S/N is set by
its mass function, the one real file by where that galaxy happens to sit. The real file is
compared at the same magnitude (:func:`snr_at_magnitude`) or at the mass cut (:func:`snr_by_mass`).
"""
from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import ndimage

from scripts.mock.photometry import magnitude
from scripts.preprocessing.fits_bands import header_float, load_bands, read_header_values
from scripts.preprocessing.croppers import PetrosianCropper
from scripts.preprocessing.noise import outer_strip, robust_sigma, sky_sigma

log = logging.getLogger(__name__)

BANDS = ("G", "R", "I")
EXTNAMES = tuple(f"SUBARU_HSC.{b}" for b in BANDS)
#: Band of the Petrosian fit (index into :data:`BANDS`).
REFERENCE_BAND = 1
#: Extract's default crop half-size in R90 (``PETRO_RADIUS_FACTOR``).
CROP_FACTOR = 2.0
#: Detection of neighbours: Gaussian smoothing σ [px], threshold in smoothed-noise σ,
#: smallest footprint [px].
DETECT_SMOOTH_PX = 1.0
DETECT_THRESHOLD = 3.0
DETECT_MIN_PIXELS = 6
#: The mock datasets compared by default.
MOCK_DATASETS = ("MOCK_FIDUCIAL", "MOCK_COMPACT", "MOCK_HSC")
#: Stellar-mass bin edges [log10 M☉] of :func:`snr_by_mass`; the first starts at the mock's
#: imaging cut (:data:`scripts.mock.population.IMAGING_LOG_MSTAR`).
MASS_BIN_WIDTH = 0.25
#: GAMA galaxy stellar mass function at z < 0.06 (Baldry et al. 2012, MNRAS 421, 621, eq. 6
#: and Table 1; Chabrier IMF, H0 = 70): double Schechter with knee log10 M* [M☉], φ*₁, φ*₂
#: [Mpc⁻³; only their ratio matters for the shape] and slopes α₁, α₂.
GAMA_SMF = {"log_mstar_knee": 10.66, "phi1": 3.96e-3, "alpha1": -0.35, "phi2": 0.79e-3, "alpha2": -1.47}
#: Quantities compared by medians (the calibration test and the printed table).
QUANTITIES = ("snr_r", "r90_frame", "crop_frame", "mag_r", "sky_sigma_G", "sky_sigma_R",
              "sky_sigma_I", "psf_fwhm_G", "psf_fwhm_R", "psf_fwhm_I", "neighbours_arcmin2",
              "neighbour_in_crop", "redshift", "fov_kpc")


def default_real_files() -> list[Path]:
    """The real TNG–HSC mock shipped in data/ (``config.real_hsc_mock_path``)."""
    import config
    return [Path(config.real_hsc_mock_path)]


def _smoothed(band: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(np.asarray(band, dtype=np.float64), DETECT_SMOOTH_PX)


def _detect(smooth: np.ndarray, center: tuple[float, float]) -> tuple[np.ndarray, int, list[int]]:
    """:func:`segment` on an already smoothed band."""
    sigma = robust_sigma(smooth[outer_strip(smooth.shape)])
    if not (math.isfinite(sigma) and sigma > 0):
        return np.zeros(smooth.shape, dtype=np.int32), 0, []
    labels, n = ndimage.label(smooth > DETECT_THRESHOLD * sigma)
    index = np.arange(1, n + 1)
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=index) if n else []
    h, w = labels.shape
    x, y = int(round(center[0])), int(round(center[1]))
    own = int(labels[min(max(y, 0), h - 1), min(max(x, 0), w - 1)])
    others = [int(k) for k, size in zip(index, sizes) if size >= DETECT_MIN_PIXELS and k != own]
    return labels, own, others


def segment(band: np.ndarray, center: tuple[float, float]) -> tuple[np.ndarray, int, list[int]]:
    """Detection map of a 2-D band: (labels, label of the source at ``center`` (0: none),
    labels of the other sources).

    The band is smoothed by a Gaussian of :data:`DETECT_SMOOTH_PX` and thresholded at
    :data:`DETECT_THRESHOLD` times the smoothed image's own robust σ in the outer strip (so
    correlated noise, as in real coadds, does not inflate the counts); sources are
    connected regions of at least :data:`DETECT_MIN_PIXELS` pixels.
    """
    return _detect(_smoothed(band), center)


def detect_neighbours(band: np.ndarray, center: tuple[float, float], radius: float) -> tuple[int, int]:
    """(sources other than the one at ``center``, how many of them have their centroid
    within ``radius`` px of it) on a 2-D band (detection: :func:`segment`)."""
    smooth = _smoothed(band)
    labels, _, others = _detect(smooth, center)
    if not others:
        return 0, 0
    centroids = ndimage.center_of_mass(np.clip(smooth, 0.0, None), labels, others)
    near = sum(1 for cy, cx in centroids if math.hypot(cx - center[0], cy - center[1]) <= radius)
    return len(others), near


def measure_file(path: str | Path) -> dict:
    """The quantities of :data:`QUANTITIES` for one HSC-layout FITS file (G, R, I bands)."""
    path = Path(path)
    image = load_bands(path, EXTNAMES, variance=True)
    cube = np.asarray(image.data, dtype=np.float64)
    sigma, _ = sky_sigma(cube, image.variances, image.var_scales)
    cropper = PetrosianCropper(factor=CROP_FACTOR, reference_band=REFERENCE_BAND).fit(cube)
    frame = float(min(cube.shape[:2]))
    # REDSHIFT, FOVKPC and FOVARC come with the bands (ImageMeta); only PSFFWHM is per band
    psf = [header_float(read_header_values(path, ("PSFFWHM",), extname=e)["PSFFWHM"]) for e in EXTNAMES]
    fov_arcsec = image.meta.fov_arcsec
    crop_half = CROP_FACTOR * cropper.r90 if math.isfinite(cropper.r90) else 0.0
    n_nb, n_near = detect_neighbours(cube[..., REFERENCE_BAND], cropper.center, crop_half)
    area_arcmin2 = (fov_arcsec / 60.0) ** 2 if math.isfinite(fov_arcsec) else math.nan
    flux = cropper.flux_petrosian
    row = {
        "file": path.name,
        "snr_r": cropper.snr,
        "r90_frame": cropper.r90 / frame,
        "crop_frame": cropper.crop_size / frame if not cropper.failed else math.nan,
        "mag_r": float(magnitude(flux)),
        "neighbours_arcmin2": n_nb / area_arcmin2 if area_arcmin2 > 0 else math.nan,
        "neighbour_in_crop": float(n_near > 0),
        "redshift": image.meta.redshift,
        "fov_kpc": image.meta.fov_kpc,
        "frame_px": frame,
        "petrosian_failed": cropper.failure_reason if cropper.failed else "",
    }
    for b, band in enumerate(BANDS):
        row[f"sky_sigma_{band}"] = float(sigma[b])
        row[f"psf_fwhm_{band}"] = psf[b]
    return row


def measure_files(paths: Iterable[str | Path], source: str) -> pd.DataFrame:
    """One row per file (see :func:`measure_file`) with a ``source`` column."""
    rows = [dict(measure_file(p), source=source) for p in paths]
    return pd.DataFrame(rows)


def mock_sample(size: str = "demo", n_per_set: int = 60, seed: int = 0,
                datasets: Sequence[str] = MOCK_DATASETS, workdir: str | Path | None = None,
                plan=None) -> pd.DataFrame:
    """Measure ``n_per_set`` images of each mock dataset, drawn with ``seed`` from the
    universe of preset ``size`` (planned and rendered in ``workdir``, a temporary
    directory by default; or rendered from an existing ``plan`` of
    :func:`scripts.mock.universe.plan_universe`, whose size and seed then apply). Each row
    adds the image's truth: ``stellar_mass`` [log10 M☉] and ``true_r_mag`` (the subject's
    total r magnitude)."""
    from scripts.mock.jobs import run_task
    from scripts.mock.universe import plan_universe

    with tempfile.TemporaryDirectory(prefix="mock-compare-") as tmp:
        if plan is None:
            root = Path(workdir) if workdir is not None else Path(tmp)
            plan = plan_universe(root / "raw", root / "illustris", size=size, seed=seed)
        rng = np.random.default_rng(seed)
        frames = []
        for ds in datasets:
            tasks, truth = plan.tasks[ds], plan.truth[ds]
            pick = np.sort(rng.choice(len(tasks), min(n_per_set, len(tasks)), replace=False))
            paths = []
            for i in pick:
                run_task(tasks[i])
                paths.append(tasks[i].path)
            frame = measure_files(paths, ds)
            frame["stellar_mass"] = [float(truth[i]["stellar_mass"]) for i in pick]
            frame["true_r_mag"] = [float(truth[i]["r_mag"]) for i in pick]
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)


def snr_by_mass(table: pd.DataFrame, lo: float | None = None, width: float = MASS_BIN_WIDTH) -> pd.DataFrame:
    """Median Petrosian S/N, Petrosian r and image count per source and stellar-mass bin
    (``width`` dex from ``lo``, default the imaging cut; the last bin takes the rest)."""
    from scripts.mock.population import IMAGING_LOG_MSTAR

    lo = IMAGING_LOG_MSTAR if lo is None else lo
    mock = table[np.isfinite(table["stellar_mass"].to_numpy(dtype=float))]
    edges = [lo + k * width for k in range(5)] + [np.inf]
    bins = pd.cut(mock["stellar_mass"], edges, right=False)
    out = mock.groupby(["source", bins], observed=True, sort=False).agg(
        n=("snr_r", "size"), snr_r=("snr_r", "median"), mag_r=("mag_r", "median"))
    return out.sort_index()


def snr_at_magnitude(table: pd.DataFrame, mag: float) -> pd.DataFrame:
    """Petrosian S/N of each source at Petrosian r = ``mag``, from a least-squares line of
    log10 S/N against r over its images: the comparison with a real file at its own
    brightness, which a median over a mass-selected sample is not. Also ``n`` (images
    fitted), ``n_near`` (within 0.5 mag of ``mag``), ``mag_min``/``mag_max`` (the fitted range:
    outside it the value is an extrapolation) and ``slope`` (d log10 S/N / d r)."""
    rows = {}
    for source, group in table.groupby("source", sort=False):
        x = group["mag_r"].to_numpy(dtype=float)
        y = np.log10(group["snr_r"].to_numpy(dtype=float))
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.sum() < 3:
            continue
        slope, intercept = np.polyfit(x[ok], y[ok], 1)
        rows[source] = {"snr_r": 10.0 ** (slope * mag + intercept), "n": int(ok.sum()),
                        "n_near": int((np.abs(x[ok] - mag) <= 0.5).sum()),
                        "mag_min": float(x[ok].min()), "mag_max": float(x[ok].max()),
                        "slope": float(slope)}
    return pd.DataFrame.from_dict(rows, orient="index")


def smf_quantiles(lo: float, quantiles: Sequence[float] = (0.1, 0.5, 0.9), smf: dict = GAMA_SMF,
                  hi: float = 12.5) -> np.ndarray:
    """log10 M★ quantiles of the galaxies above ``lo`` for a double-Schechter mass function
    (default: :data:`GAMA_SMF`), by numerical integration of dN/dlog M★."""
    x = np.linspace(lo, hi, 20001)
    m = 10.0 ** (x - smf["log_mstar_knee"])
    dn = np.exp(-m) * m * (smf["phi1"] * m ** smf["alpha1"] + smf["phi2"] * m ** smf["alpha2"])
    cdf = np.concatenate([[0.0], np.cumsum(0.5 * (dn[1:] + dn[:-1]) * np.diff(x))])
    return np.interp(np.asarray(quantiles, dtype=float), cdf / cdf[-1], x)


def summary(table: pd.DataFrame, quantities: Sequence[str] = QUANTITIES) -> pd.DataFrame:
    """Median of each quantity per source (rows: quantities, columns: sources); ``neighbour_in_crop``
    is a fraction of images (its mean)."""
    grouped = table.groupby("source", sort=False)
    out = grouped[list(quantities)].median().T
    if "neighbour_in_crop" in out.index:
        out.loc["neighbour_in_crop"] = grouped["neighbour_in_crop"].mean()
    return out


def plot(table: pd.DataFrame, path: str | Path, real_source: str = "real") -> Path:
    """Histograms of the mock sets' quantities with the real files' values marked."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("snr_r", "Petrosian S/N (R)", True), ("r90_frame", "R90 / frame edge", False),
              ("mag_r", "Petrosian r [AB mag]", False), ("sky_sigma_R", "sky σ, R [nanomaggies]", False),
              ("psf_fwhm_R", "PSF FWHM, R [arcsec]", False),
              ("neighbours_arcmin2", "neighbours per arcmin²", False),
              ("stellar_mass", "log10 M★ [M☉] (mock truth)", False)]
    fig, axes = plt.subplots(2, 4, figsize=(16, 6.5))
    mock = table[table["source"] != real_source]
    real = table[table["source"] == real_source]
    for ax, (col, label, logx) in zip(axes.ravel(), panels):
        if col not in table:
            ax.set_axis_off()
            continue
        values = mock[col].to_numpy(dtype=float)
        finite = values[np.isfinite(values) & ((values > 0) if logx else True)]
        if finite.size:
            bins = (np.geomspace(finite.min(), finite.max(), 25) if logx and finite.min() > 0
                    else np.linspace(finite.min(), finite.max() + 1e-12, 25))
            for source, group in mock.groupby("source", sort=False):
                ax.hist(group[col].dropna(), bins=bins, histtype="step", lw=1.5, label=source)
        for v in real[col].dropna():
            ax.axvline(v, color="k", ls="--", lw=1.2)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(label)
    if "stellar_mass" in mock and np.isfinite(mock["stellar_mass"]).any():
        # the GAMA mass function's median above the sample's cut, and S/N against mass
        from scripts.mock.population import IMAGING_LOG_MSTAR
        cut = IMAGING_LOG_MSTAR
        axes[1, 2].axvline(float(smf_quantiles(cut, (0.5,))[0]), color="grey", ls=":", lw=1.5,
                           label="GAMA SMF median")
        axes[1, 2].legend(fontsize=8)
        ax = axes[1, 3]
        for source, group in mock.groupby("source", sort=False):
            ax.scatter(group["stellar_mass"], group["snr_r"], s=8, alpha=0.6, label=source)
        for v in real["snr_r"].dropna():
            ax.axhline(v, color="k", ls="--", lw=1.2)
        ax.set_yscale("log")
        ax.set_xlabel("log10 M★ [M☉] (mock truth)")
        ax.set_ylabel("Petrosian S/N (R)")
    else:
        axes[1, 3].set_axis_off()
    axes[0, 0].plot([], [], "k--", label=f"{real_source} ({len(real)} file{'s' * (len(real) != 1)})")
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Mock universe vs real TNG–HSC images (extract's own measurements)")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
