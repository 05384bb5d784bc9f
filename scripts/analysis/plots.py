"""Figures of the analyse stage (matplotlib, Agg backend, PNG files).

Every function takes arrays/tables that the stage already computed and a path, draws one
figure and returns the path; no numbers are computed here beyond what the drawing needs
(binning, contour levels, display stretch). Axis labels of FIELDS come from
``config.label`` (units included).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402

import config  # noqa: E402

logger = logging.getLogger(__name__)

DPI = 110
#: Colours of datasets in maps (cycled).
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    logger.debug("wrote %s", path)
    return path


def _marker_size(n: int) -> float:
    """Scatter marker area shrinking with the number of points (readable from 1e2 to 1e6)."""
    return float(np.clip(2000.0 / max(n, 1), 0.3, 12.0))


def dataset_colours(names: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(dict.fromkeys(names))}


# --------------------------------------------------------------------------- display
def noise_level(values) -> float:
    """Robust noise level ``1.4826 MAD`` of pixel values, ignoring exact zeros (padding
    outside the field of view of a crop); where that is 0 (noiseless images), 1 per cent of
    the 99th percentile of the absolute values; never below 1e-12."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v) & (v != 0)]
    if len(v) == 0:
        return 1e-12
    sigma = 1.4826 * float(np.median(np.abs(v - np.median(v))))
    if sigma <= 0:
        sigma = 0.01 * float(np.percentile(np.abs(v), 99))
    return max(sigma, 1e-12)


def arcsinh_rgb(images, band_index: Sequence[int] | None = None, softening: float | None = None,
                vmax: float | None = None) -> np.ndarray:
    """Display images (N, H, W, 3) in [0, 1] with a colour-preserving arcsinh stretch.

    ``images`` (N, H, W, C) in flux units; ``band_index`` picks the bands shown as R, G, B
    (None: the first band, in grey). Following Lupton et al. (2004), each pixel's bands are
    scaled by ``arcsinh(I / b) / (I / b)`` with ``I`` the mean of the shown bands, so
    colours keep their ratios while the intensity is compressed; ``b`` (``softening``,
    flux units) defaults to the robust noise level ``1.4826 MAD`` of ``I`` over all given
    images, and the result is divided by ``vmax`` (default: the 99.5th percentile of the
    stretched intensity). Negative values are clipped to 0 and a pixel whose brightest
    band exceeds 1 is scaled down as a whole (saturated pixels keep their colour).
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4:
        raise ValueError(f"images must be (N, H, W, C), got shape {x.shape}")
    if band_index is None:
        x = np.repeat(x[..., :1], 3, axis=-1)
    else:
        x = x[..., list(band_index)]
    intensity = x.mean(axis=-1, keepdims=True)
    b = noise_level(intensity) if softening is None else max(float(softening), 1e-12)
    z = intensity / b
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(np.abs(z) > 1e-9, np.arcsinh(z) / z, 1.0)
    stretched = x / b * factor
    if vmax is None:
        vmax = float(np.percentile(np.arcsinh(np.clip(z, 0, None)), 99.5))
    rgb = np.clip(stretched / max(vmax, 1e-12), 0.0, None)
    peak = rgb.max(axis=-1, keepdims=True)
    rgb = np.where(peak > 1.0, rgb / np.maximum(peak, 1e-12), rgb)
    return rgb.astype(np.float32)


def display_common(images: Sequence[np.ndarray], band_index: Sequence[Sequence[int] | None]) -> list[np.ndarray]:
    """:func:`arcsinh_rgb` of several images (H, W, C) with ONE softening and ``vmax``
    (taken from all of them), so their brightness can be compared; each image has its own
    ``band_index`` (its dataset may order bands differently)."""
    shown = [np.asarray(im, dtype=np.float64)[..., list(bi) if bi is not None else [0, 0, 0]]
             for im, bi in zip(images, band_index)]
    intensity = np.concatenate([s.mean(axis=-1).ravel() for s in shown])
    softening = noise_level(intensity)
    vmax = float(np.percentile(np.arcsinh(np.clip(intensity / softening, 0, None)), 99.5))
    return [arcsinh_rgb(s[None], [0, 1, 2], softening, vmax)[0] for s in shown]


def band_indices(filters: Sequence[str], rgb_bands: Sequence[str] | None) -> list[int] | None:
    """Positions of ``rgb_bands`` in a dataset's ``filters``; None (grey) when not all exist."""
    if rgb_bands is None or not all(b in filters for b in rgb_bands):
        return None
    return [list(filters).index(b) for b in rgb_bands]


# --------------------------------------------------------------------------- maps
def plot_map_by_dataset(coords, datasets, path, title: str, axis_names=("1", "2")) -> Path:
    """All objects on a 2-D map, coloured by dataset."""
    coords = np.asarray(coords)
    datasets = np.asarray(datasets)
    colours = dataset_colours(datasets)
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for name, colour in colours.items():
        sel = datasets == name
        ax.scatter(*coords[sel].T, s=_marker_size(len(coords)), c=colour, alpha=0.7,
                   label=f"{name} ({sel.sum()})", rasterized=True, linewidths=0)
    ax.set_xlabel(f"{title} {axis_names[0]}")
    ax.set_ylabel(f"{title} {axis_names[1]}")
    ax.set_title(f"{title}: all analysed images")
    ax.legend(markerscale=3, fontsize=8, loc="best")
    return _save(fig, path)


def plot_field_panels(coords, table: pd.DataFrame, fields_by_dataset: dict[str, list[str]],
                      path, title: str) -> Path:
    """One panel per (dataset, FIELD): that dataset's objects coloured by the field, the
    other analysed objects in grey behind. ``table`` is row-aligned with ``coords`` and
    holds ``dataset`` and the field columns."""
    coords = np.asarray(coords)
    panels = [(d, f) for d, fields in fields_by_dataset.items() for f in fields]
    if not panels:
        raise ValueError("no (dataset, field) pair to plot")
    ncol = min(4, len(panels))
    nrow = math.ceil(len(panels) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.7 * nrow), squeeze=False,
                             layout="constrained")
    size = _marker_size(len(coords))
    ds = table["dataset"].to_numpy()
    for ax, (name, field) in zip(axes.flat, panels):
        values = pd.to_numeric(table[field], errors="coerce").to_numpy(dtype=np.float64)
        sel = (ds == name) & np.isfinite(values)
        ax.scatter(*coords.T, s=size, c="0.85", rasterized=True, linewidths=0)
        if sel.any():
            lo, hi = np.percentile(values[sel], [2, 98])
            art = ax.scatter(*coords[sel].T, s=size * 1.5, c=values[sel], cmap="viridis",
                             vmin=lo, vmax=hi if hi > lo else lo + 1, rasterized=True, linewidths=0)
            fig.colorbar(art, ax=ax, label=config.label(field), shrink=0.9)
        ax.set_title(f"{name}: {field}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"{title} coloured by FIELD")
    return _save(fig, path)


def density_levels(hist: np.ndarray, fractions=(0.5, 0.9)) -> list[float]:
    """Density thresholds enclosing the given fractions of the total (highest-density
    regions), increasing, for ``contour``."""
    flat = np.sort(hist.ravel())[::-1]
    cum = np.cumsum(flat)
    if cum[-1] <= 0:
        return []
    levels = [float(flat[min(np.searchsorted(cum, f * cum[-1]), len(flat) - 1)]) for f in fractions]
    return sorted(set(levels))


def plot_density_contours(coords, datasets, observed: Sequence[str], simulated: Sequence[str],
                          path, title: str, bins: int = 80, smooth: float = 1.5) -> Path:
    """Density contours (50 and 90 per cent highest-density regions) of each set on one
    map: observed sets filled in grey, simulated sets as coloured lines."""
    coords = np.asarray(coords)
    datasets = np.asarray(datasets)
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    pad = 0.05 * np.where(hi > lo, hi - lo, 1.0)
    xe = np.linspace(lo[0] - pad[0], hi[0] + pad[0], bins + 1)
    ye = np.linspace(lo[1] - pad[1], hi[1] + pad[1], bins + 1)
    xc, yc = 0.5 * (xe[1:] + xe[:-1]), 0.5 * (ye[1:] + ye[:-1])
    colours = dataset_colours(list(simulated))
    fig, ax = plt.subplots(figsize=(6, 5.5))
    handles = []
    for kind, names in (("observed", observed), ("simulated", simulated)):
        for name in names:
            sel = datasets == name
            if sel.sum() < 3:
                continue
            hist, _, _ = np.histogram2d(*coords[sel].T, bins=[xe, ye])
            hist = gaussian_filter(hist / sel.sum(), smooth)
            levels = density_levels(hist)
            if len(levels) < 1:
                continue
            if kind == "observed":
                ax.contourf(xc, yc, hist.T, levels=levels + [hist.max() * 1.001], cmap="Greys",
                            alpha=0.6)
                handles.append(plt.Rectangle((0, 0), 1, 1, color="0.5", label=f"{name} (observed)"))
            else:
                ax.contour(xc, yc, hist.T, levels=levels, colors=[colours[name]],
                           linewidths=[1.0, 1.8][:len(levels)])
                handles.append(plt.Line2D([], [], color=colours[name], label=f"{name} (simulated)"))
    ax.set_title(f"{title}: 50% and 90% density contours")
    ax.set_xticks([])
    ax.set_yticks([])
    if handles:
        ax.legend(handles=handles, fontsize=8, loc="best")
    return _save(fig, path)


def plot_thumbnail_map(coords, picks, thumbnails, n_grid: int, path, title: str) -> Path:
    """Images placed on the cells of an ``n_grid`` x ``n_grid`` grid over the map.

    ``picks`` = [((ix, iy), index), ...] from :func:`scripts.analysis.embedding_maps.thumbnail_grid`;
    ``thumbnails`` (len(picks), h, w, 3) display images in [0, 1] in the same order.
    The map's points are drawn faintly beneath.
    """
    coords = np.asarray(coords, dtype=np.float64)
    lo, hi = coords.min(axis=0), coords.max(axis=0)
    width = np.where(hi > lo, (hi - lo) / n_grid, 1.0)
    fig, ax = plt.subplots(figsize=(9, 9))
    ax.scatter(*coords.T, s=_marker_size(len(coords)) * 0.5, c="0.8", rasterized=True, linewidths=0)
    for ((ix, iy), _), thumb in zip(picks, thumbnails):
        x0, y0 = lo + np.array([ix, iy]) * width
        ax.imshow(thumb, extent=(x0, x0 + width[0], y0, y0 + width[1]), origin="upper",
                  interpolation="nearest", zorder=2)
    ax.set_xlim(lo[0], lo[0] + n_grid * width[0])
    ax.set_ylim(lo[1], lo[1] + n_grid * width[1])
    ax.set_aspect("auto")
    ax.set_title(f"{title}: one image per cell ({len(picks)} cells)")
    ax.set_xticks([])
    ax.set_yticks([])
    return _save(fig, path)


# --------------------------------------------------------------------------- analogues
def plot_analogue_panels(queries: list[dict], path, title: str) -> Path:
    """Rows of image panels: a query image followed by its analogues.

    Each entry of ``queries``: ``{"image": (h, w, 3), "label": str, "analogues":
    [(image, label), ...]}`` (display images in [0, 1]).
    """
    if not queries:
        raise ValueError("no query to plot")
    ncol = 1 + max(len(q["analogues"]) for q in queries)
    nrow = len(queries)
    fig, axes = plt.subplots(nrow, ncol, figsize=(1.9 * ncol, 2.1 * nrow), squeeze=False)
    for r, q in enumerate(queries):
        axes[r, 0].imshow(q["image"], interpolation="nearest")
        axes[r, 0].set_title(q["label"], fontsize=7, color="k", fontweight="bold")
        for c, (image, lab) in enumerate(q["analogues"], start=1):
            axes[r, c].imshow(image, interpolation="nearest")
            axes[r, c].set_title(lab, fontsize=7)
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[r, 1 + len(q["analogues"]):]:
            ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


# --------------------------------------------------------------------------- realism
def _log_hist(ax, values, bins, **kw):
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values) & (values > 0)]
    if len(values):
        ax.hist(np.log10(values), bins=bins, **kw)


def plot_realism(comparison: dict, sim: str, obs: str, path) -> Path:
    """Histograms of one (simulated, observed) comparison from
    :func:`scripts.analysis.realism.compare_sets`: the normalised OOD scores of each
    direction next to the calibration scores, and the MMD permutation null."""
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    for ax, key, scored, other in ((axes[0], "ood_sim", sim, obs), (axes[1], "ood_obs", obs, sim)):
        res = comparison[key]
        scores = np.asarray(res.scores)
        calib = np.asarray(res.calibration_scores) / res.calibration
        finite = np.log10(np.concatenate([scores[np.isfinite(scores) & (scores > 0)],
                                          calib[np.isfinite(calib) & (calib > 0)]]))
        bins = np.linspace(finite.min() - 0.05, finite.max() + 0.05, 30) if len(finite) else 30
        _log_hist(ax, calib, bins, alpha=0.5, color="0.5", density=True,
                  label=f"calibration ({scored} halves)")
        _log_hist(ax, scores, bins, alpha=0.6, color="C0", density=True,
                  label=f"{scored} vs {other}")
        ax.axvline(0.0, color="k", ls="--", lw=1)
        ax.set_xlabel(r"$\log_{10}$ normalised OOD score $s_k / s_{k,\mathrm{cal}}$")
        ax.set_ylabel("density")
        ax.set_title(f"{scored} in domain of {other}: {res.in_domain_fraction:.2f}", fontsize=9)
        ax.legend(fontsize=7)
    mmd = comparison["mmd"]
    axes[2].hist(mmd.null_mmd2, bins=30, color="0.6", label="permutation null")
    axes[2].axvline(mmd.mmd2, color="C3", lw=2, label=f"observed (p = {mmd.p_value:.3g})")
    axes[2].set_xlabel(r"MMD$^2$ (standardised representation)")
    axes[2].set_title(f"MMD {sim} vs {obs}", fontsize=9)
    axes[2].legend(fontsize=7)
    c2st = comparison["c2st"]
    fig.suptitle(f"{sim} vs {obs}: classifier AUC {c2st.auc:.3f} "
                 f"[{c2st.ci_low:.3f}, {c2st.ci_high:.3f}]", fontsize=10)
    return _save(fig, path)


# --------------------------------------------------------------------------- drivers
def plot_driver_maps(coords, values: dict[str, np.ndarray], r2: pd.DataFrame, dataset: str,
                     path, title: str, gridsize: int = 30) -> Path:
    """Mean of each FIELD in hexagonal cells of the map (one panel per field), titled with
    the cross-validated R^2 from the representation and from the pixel baseline.

    ``values`` maps field → (N,) values row-aligned with ``coords`` (the dataset's objects);
    ``r2`` has columns ``field``, ``r2_representation``, ``r2_baseline``.
    """
    coords = np.asarray(coords)
    fields = list(values)
    ncol = min(4, len(fields))
    nrow = math.ceil(len(fields) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.3 * ncol, 3.8 * nrow), squeeze=False,
                             layout="constrained")
    scores = r2.set_index("field")
    for ax, field in zip(axes.flat, fields):
        v = np.asarray(values[field], dtype=np.float64)
        ok = np.isfinite(v)
        if ok.sum() > 0:
            art = ax.hexbin(*coords[ok].T, C=v[ok], reduce_C_function=np.mean, gridsize=gridsize,
                            cmap="viridis", mincnt=1)
            fig.colorbar(art, ax=ax, label=config.label(field), shrink=0.9)
        if field in scores.index:
            row = scores.loc[field]
            ax.set_title(f"$R^2$ repr. {row['r2_representation']:.2f}, "
                         f"pixels {row['r2_baseline']:.2f}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[len(fields):]:
        ax.axis("off")
    fig.suptitle(f"{dataset}: physical drivers over the {title} map")
    return _save(fig, path)


def plot_driver_bars(r2: pd.DataFrame, path) -> Path:
    """Cross-validated kNN R^2 per (dataset, FIELD): representation vs pixel baseline."""
    labels = [f"{d}\n{config.label(f)}" for d, f in zip(r2["dataset"], r2["field"])]
    x = np.arange(len(r2))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(r2)), 4))
    ax.bar(x - 0.2, r2["r2_representation"], 0.4, yerr=r2["r2_representation_std"],
           label="representation", color="C0")
    ax.bar(x + 0.2, r2["r2_baseline"], 0.4, yerr=r2["r2_baseline_std"], label="pixel baseline",
           color="0.6")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, fontsize=7, rotation=45, ha="right")
    ax.set_ylabel(r"cross-validated $R^2$ (kNN)")
    ax.legend(fontsize=8)
    ax.set_title("Physical drivers (error bars: standard deviation over folds)")
    return _save(fig, path)
