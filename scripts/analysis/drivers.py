"""Physical drivers of the representation: how well does it predict each FIELD?

`driver_r2` scores each physical property (FIELD: stellar mass, size, colour, merger
flag, ...) by the cross-validated R^2 of a k-nearest-neighbour regression from the
representation: a property that organises the representation is predicted by the
neighbours of an object. The same function applied to `pixel_baseline_features` (PCA of
downsampled pixels plus flux, concentration and colours) says how much the learned
representation adds over simple image statistics.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from sklearn.decomposition import PCA
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, KFold
from sklearn.neighbors import KNeighborsRegressor
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from tqdm import tqdm

logger = logging.getLogger(__name__)


def scale_columns(X, weights) -> np.ndarray:
    """``X`` with each column multiplied by its weight (a pipeline step after scaling)."""
    return np.asarray(X) * weights


def driver_r2(features, fields_df: pd.DataFrame, fields, k: int = 10, folds: int = 5,
              seed: int = 0, groups=None, max_samples: int | None = None,
              weights=None) -> pd.DataFrame:
    """Cross-validated kNN-regression R^2 of each field from ``features``.

    Parameters
    ----------
    features : (N, d) array, row-aligned with ``fields_df``.
    fields_df : DataFrame holding the target columns (N rows).
    fields : column names of ``fields_df`` to predict.
    k : neighbours of `KNeighborsRegressor` (uniform weights, Euclidean distance on
        features standardised within each training fold).
    folds : number of cross-validation folds (`KFold`, shuffled with ``seed``).
    groups : optional (N,) labels (e.g. object id): all rows of a group fall in the same
        fold (`GroupKFold`, shuffled), so that other projections of the same galaxy
        cannot act as its neighbours; without them R^2 is inflated.
    max_samples : optional cap on the rows used per field (seeded subsample), as kNN
        cross-validation costs O(N^2 d).
    weights : optional (d,) column weights applied after the standardisation (blocks of a
        combined feature set, :func:`scripts.analysis.baselines.feature_weights`).

    Rows whose target is NaN/inf are dropped per field. Returns a DataFrame with one row
    per field: ``field``, ``r2`` (mean over folds of the held-out R^2; 1 = perfect,
    0 = no better than the mean, < 0 worse), ``r2_std`` (std over folds), ``n`` (rows
    used). Fields with fewer than ``2 * folds`` usable rows or a constant target get NaN.
    """
    X = np.asarray(features, dtype=np.float64)
    if X.ndim != 2 or len(X) != len(fields_df):
        raise ValueError(f"features must be (N, d) with N = len(fields_df) = {len(fields_df)}, "
                         f"got shape {X.shape}")
    missing = [f for f in fields if f not in fields_df.columns]
    if missing:
        raise KeyError(f"fields {missing} not in the table; available: {list(fields_df.columns)}")
    if groups is not None:
        groups = np.asarray(groups)
        if len(groups) != len(X):
            raise ValueError(f"groups has {len(groups)} entries, features {len(X)} rows")
    if weights is not None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.shape != (X.shape[1],):
            raise ValueError(f"weights must have one entry per feature ({X.shape[1]}), "
                             f"got shape {weights.shape}")
    finite_rows = np.all(np.isfinite(X), axis=1)
    rows = []
    for name in tqdm(list(fields), desc="driver R2", leave=False, disable=None):
        y_all = pd.to_numeric(fields_df[name], errors="coerce").to_numpy(dtype=np.float64)
        use = np.flatnonzero(np.isfinite(y_all) & finite_rows)
        if max_samples is not None and len(use) > max_samples:
            rng = np.random.default_rng(seed)
            use = np.sort(rng.choice(use, size=max_samples, replace=False))
        n = len(use)
        n_groups = len(np.unique(groups[use])) if groups is not None else n
        if n < 2 * folds or n_groups < folds or np.ptp(y_all[use]) == 0:
            logger.warning("field %s: %d usable rows (%d groups) or constant target; R2 not computed",
                           name, n, n_groups)
            rows.append({"field": name, "r2": np.nan, "r2_std": np.nan, "n": n})
            continue
        Xf, y = X[use], y_all[use]
        if groups is None:
            splits = KFold(n_splits=folds, shuffle=True, random_state=seed).split(Xf)
        else:
            splits = GroupKFold(n_splits=folds, shuffle=True, random_state=seed).split(
                Xf, groups=groups[use])
        scores = []
        for train, test in splits:
            scaling = [StandardScaler()]
            if weights is not None:
                scaling.append(FunctionTransformer(scale_columns, kw_args={"weights": weights}))
            model = make_pipeline(*scaling, KNeighborsRegressor(n_neighbors=min(k, len(train))))
            model.fit(Xf[train], y[train])
            scores.append(r2_score(y[test], model.predict(Xf[test])))
        rows.append({"field": name, "r2": float(np.mean(scores)),
                     "r2_std": float(np.std(scores, ddof=1)), "n": n})
        logger.info("driver %s: R2 = %.3f +- %.3f (n=%d)", name, rows[-1]["r2"],
                    rows[-1]["r2_std"], n)
    return pd.DataFrame(rows, columns=["field", "r2", "r2_std", "n"])


# --------------------------------------------------------------------------- baseline
def block_mean(images: np.ndarray, factor: int) -> np.ndarray:
    """Downsample (n, H, W, C) by averaging ``factor`` x ``factor`` blocks (edges cropped)."""
    if factor <= 1:
        return images
    n, h, w, c = images.shape
    h2, w2 = h // factor, w // factor
    cut = images[:, :h2 * factor, :w2 * factor]
    return cut.reshape(n, h2, factor, w2, factor, c).mean(axis=(2, 4))


def asinh_magnitude(flux, softening: float) -> np.ndarray:
    """Lupton et al. (1999) asinh magnitude up to the zero point, defined for flux <= 0.

    ``-2.5 / ln 10 * (asinh(flux / (2 b)) + ln b)``; equals ``-2.5 log10(flux)`` for
    flux >> b (``softening`` b in the image's flux units).
    """
    b = float(softening)
    return -2.5 / np.log(10.0) * (np.arcsinh(np.asarray(flux) / (2.0 * b)) + np.log(b))


def image_statistics(images, softening: float = 1.0) -> np.ndarray:
    """Simple per-image statistics of an (n, H, W, C) batch, around the image centre.

    Columns: asinh magnitude of the total flux per band (C), half-light radius r50 in
    pixels and concentration ``C = 5 log10(r80 / r20)`` (Bershady et al. 2000) of the
    band-summed light (r_f: radius of the circle about the image centre enclosing the
    fraction f of the positive flux), and asinh colours of consecutive bands (C - 1).
    Shape (n, 2C + 1).
    """
    images = np.asarray(images, dtype=np.float64)
    n, h, w, c = images.shape
    total = images.sum(axis=(1, 2))                                   # (n, C)
    mags = asinh_magnitude(total, softening)
    yy, xx = np.mgrid[0:h, 0:w]
    radius = np.hypot(yy - (h - 1) / 2.0, xx - (w - 1) / 2.0).ravel()
    order = np.argsort(radius, kind="stable")
    light = np.clip(images.sum(axis=3), 0.0, None).reshape(n, -1)[:, order]
    growth = np.cumsum(light, axis=1)
    flux = growth[:, -1:]
    flux = np.where(flux > 0, flux, 1.0)
    r_sorted = radius[order]
    r20 = r_sorted[np.argmax(growth >= 0.2 * flux, axis=1)]
    r50 = r_sorted[np.argmax(growth >= 0.5 * flux, axis=1)]
    r80 = r_sorted[np.argmax(growth >= 0.8 * flux, axis=1)]
    concentration = 5.0 * np.log10(np.maximum(r80, 0.5) / np.maximum(r20, 0.5))
    colours = mags[:, :-1] - mags[:, 1:]
    return np.column_stack([mags, r50, concentration, colours])


def pixel_baseline_features(images, n_components: int = 16, downsample: int = 4,
                            statistics: bool = True, softening: float = 1.0,
                            fit_subsample: int = 20_000, batch_size: int = 4096,
                            seed: int = 0) -> np.ndarray:
    """Baseline features from raw pixels, to run `driver_r2` on next to the representation.

    ``images`` is any (N, H, W, C) array-like sliceable by rows (a NumPy array or an
    open ``h5py`` dataset: it is read in batches of ``batch_size`` rows, so N may exceed
    memory). Each image is downsampled by ``downsample`` x ``downsample`` block means and
    flattened; a PCA with ``n_components`` (fitted on a seeded subsample of
    ``fit_subsample`` images) gives the first columns. With ``statistics`` the columns of
    `image_statistics` (total asinh magnitudes, half-light radius, concentration,
    colours) follow. Returns an (N, n_components [+ 2C + 1]) float32 array.
    """
    n = len(images)
    if n == 0:
        raise ValueError("no images given")
    shape = images[0:1].shape
    if len(shape) != 4:
        raise ValueError(f"images must be (N, H, W, C), got rows of shape {shape[1:]}")
    rng = np.random.default_rng(seed)
    fit_rows = np.sort(rng.choice(n, size=min(n, fit_subsample), replace=False))
    flat_fit = block_mean(np.asarray(images[fit_rows], dtype=np.float64), downsample)
    flat_fit = flat_fit.reshape(len(fit_rows), -1)
    n_comp = min(n_components, *flat_fit.shape)
    pca = PCA(n_components=n_comp, random_state=seed).fit(flat_fit)
    logger.info("pixel baseline: PCA of %d downsampled pixels on %d images keeps %.1f%% of variance",
                flat_fit.shape[1], len(fit_rows), 100 * pca.explained_variance_ratio_.sum())
    width = n_comp + (2 * shape[3] + 1 if statistics else 0)
    out = np.empty((n, width), dtype=np.float32)
    for start in tqdm(range(0, n, batch_size), desc="pixel baseline", leave=False, disable=None):
        batch = np.asarray(images[start:start + batch_size], dtype=np.float64)
        out[start:start + len(batch), :n_comp] = pca.transform(
            block_mean(batch, downsample).reshape(len(batch), -1))
        if statistics:
            out[start:start + len(batch), n_comp:] = image_statistics(batch, softening)
    return out
