"""Honest baselines: what the representation is measured against.

Every learned result is reported beside feature sets an astronomer has without a network:

- ``pixels``: a PCA of 4x4-binned pixels, fitted once on the images of all compared
  datasets pooled (so its axes mean the same in every set, which the realism measures
  need), `pooled_pixel_pca`;
- ``photometry``: the extract stage's own measurements of each image — magnitude per
  band, colours of consecutive bands, Petrosian R50 and R90 (arcsec) and the
  concentration 5 log10(R90/R50) — `photometry_features`;
- ``representation`` and ``representation+photometry`` (side by side, as two blocks):
  does the network add information beyond the standard measurements?

For FIELDS that depend on distance (stellar mass, SFR, halo mass), `with_redshift` adds the
redshift column, as a user with spectroscopic redshifts would.

A set made of blocks (the representation and the photometry; any set and the redshift) is
compared with `feature_weights`: after the per-column standardisation every measure applies,
each block is scaled to the same total variance. Without it the 64 columns of a
representation outweigh the 8 photometric ones, and the one redshift column, in every
Euclidean distance, and a combination scores below its own better part (on the demo,
stellar mass from representation+photometry+z 0.69 against photometry+z 0.81).

Nothing here reads files except through the array-likes it is given.
"""
from __future__ import annotations

import logging
from typing import Mapping

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA

from scripts.analysis.drivers import block_mean

logger = logging.getLogger(__name__)

#: The feature sets reported beside the representation, in report order.
FEATURE_SETS = ("representation", "pixels", "photometry", "representation+photometry")
#: Suffix of a feature set with the redshift added.
WITH_Z = "+z"


def photometry_columns(columns, filters) -> list[str]:
    """The extract measurements used as photometry, in order: ``mag_<band>`` of each band,
    ``petro_r50_arcsec``, ``petro_r90_arcsec`` (those present)."""
    wanted = [f"mag_{band}" for band in filters] + ["petro_r50_arcsec", "petro_r90_arcsec"]
    return [c for c in wanted if c in set(columns)]


def photometry_features(objects: pd.DataFrame, filters) -> np.ndarray:
    """(N, F) photometry of each row of ``objects`` (extract's objects.parquet rows):
    magnitudes, colours of consecutive bands, R50 and R90 in arcsec and the concentration
    5 log10(R90/R50). Failed measurements stay NaN (the caller drops those rows); a quantity
    measured on no image at all (e.g. Petrosian radii of X-ray maps cropped at R200c) is left
    out."""
    mags = [objects[f"mag_{b}"].to_numpy(np.float64) for b in filters if f"mag_{b}" in objects]
    columns = list(mags)
    columns += [a - b for a, b in zip(mags[:-1], mags[1:])]
    if {"petro_r50_arcsec", "petro_r90_arcsec"} <= set(objects.columns):
        r50 = objects["petro_r50_arcsec"].to_numpy(np.float64)
        r90 = objects["petro_r90_arcsec"].to_numpy(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            concentration = np.where((r50 > 0) & (r90 > 0), 5.0 * np.log10(r90 / r50), np.nan)
        columns += [r50, r90, concentration]
    columns = [c for c in columns if np.isfinite(c).any()]
    if not columns:
        raise ValueError("no photometry (mag_<band>, petro_r50_arcsec, petro_r90_arcsec) in the table")
    return np.column_stack(columns)


def combine(*parts) -> np.ndarray:
    """Feature sets side by side, as measured. Every measure standardises the columns itself,
    with statistics shared by the sets it compares (realism: the observed set's), then weighs
    the blocks (`feature_weights`). Standardising here, within each dataset, would remove
    the very offsets between a simulated and an observed set that realism measures: on the
    demo the two-sample AUC of representation+photometry fell to 0.22 for Fiducial (below
    chance) and 0.54 for Compact, where each part alone gives 0.96 for Compact."""
    return np.hstack([np.asarray(p, dtype=np.float64) for p in parts])


def filled(X) -> np.ndarray:
    """``X`` with NaN replaced by its column medians (a failed photometric measurement, ~0.1 %
    of images), for the neighbour searches that cannot skip a row."""
    X = np.asarray(X, dtype=np.float64)
    if np.isnan(X).any():
        X = np.where(np.isnan(X), np.nanmedian(X, axis=0), X)
    return X


#: Feature sets made of other sets side by side, and their blocks in column order.
BLOCKS = {"representation+photometry": ("representation", "photometry")}


def block_weights(widths) -> np.ndarray:
    """Per-column weights giving each block of standardised columns (``widths``: its number
    of columns, in order) the same total variance: 1/√d for each column of a block of d."""
    widths = [int(w) for w in widths]
    if any(w < 1 for w in widths):
        raise ValueError(f"block widths must be ≥ 1, got {widths}")
    return np.concatenate([np.full(w, 1.0 / np.sqrt(w)) for w in widths])


def feature_weights(set_name: str, sets_of_dataset: Mapping[str, np.ndarray],
                    with_z: bool = False) -> np.ndarray | None:
    """Column weights of feature set ``set_name`` (with the redshift column appended when
    ``with_z``) for the standardised distances of drivers, permanence and realism; None for a
    single block, whose columns keep equal weights."""
    widths = [np.shape(sets_of_dataset[part])[1] for part in BLOCKS.get(set_name, (set_name,))]
    if with_z:
        widths.append(1)
    return block_weights(widths) if len(widths) > 1 else None


def with_redshift(features, redshift) -> np.ndarray:
    """``features`` with the redshift column appended (standardised by the measure, then
    weighted as a block of its own by `feature_weights` with ``with_z=True``)."""
    return combine(features, np.asarray(redshift, dtype=np.float64)[:, None])


def pooled_pixel_pca(images: Mapping[str, object], n_components: int = 16, downsample: int = 4,
                     fit_subsample: int = 20_000, batch_size: int = 4096,
                     seed: int = 0) -> dict[str, np.ndarray]:
    """PCA of ``downsample``-binned pixels, fitted once on a seeded subsample of the images of
    every dataset pooled (each in proportion to its size) and applied to each.

    ``images`` maps dataset → (N, H, W, C) array-like sliceable by rows (e.g.
    :class:`scripts.analysis.representation.StoreRows`), all of one shape. Returns dataset →
    (N, n_components) float32.
    """
    sizes = {name: len(arr) for name, arr in images.items()}
    total = sum(sizes.values())
    if total == 0:
        raise ValueError("no images given")
    rng = np.random.default_rng(seed)
    fit = []
    for name, arr in images.items():
        take = min(sizes[name], max(1, round(fit_subsample * sizes[name] / total)))
        rows = np.sort(rng.choice(sizes[name], size=take, replace=False))
        binned = block_mean(np.asarray(arr[rows], dtype=np.float64), downsample)
        fit.append(binned.reshape(len(rows), -1))
    fit = np.vstack(fit)
    pca = PCA(n_components=min(n_components, *fit.shape), random_state=seed).fit(fit)
    logger.info("pixels baseline: PCA fitted on %d images of %s keeps %.1f%% of the variance",
                len(fit), list(images), 100 * pca.explained_variance_ratio_.sum())
    out = {}
    for name, arr in images.items():
        parts = []
        for start in range(0, sizes[name], batch_size):
            batch = np.asarray(arr[start:start + batch_size], dtype=np.float64)
            parts.append(pca.transform(block_mean(batch, downsample).reshape(len(batch), -1)))
        out[name] = np.vstack(parts).astype(np.float32) if parts else np.empty((0, pca.n_components_))
    return out
