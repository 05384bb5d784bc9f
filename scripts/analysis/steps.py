"""The analyse stage's measuring steps over one representation: UMAP/PCA maps, analogues,
realism of each simulated set against each observed set, physical drivers and object
permanence. Each returns its table, its metrics (for ``metrics.json``) and its figures;
the stage (:mod:`scripts.analyse`) decides which rows each step sees.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.analysis import plots
from scripts.analysis.analogues import (analogue_shares, choose_queries, find_analogues,
                                        panel_entries)
from scripts.analysis.baselines import FEATURE_SETS, WITH_Z, feature_weights, filled, with_redshift
from scripts.analysis.drivers import driver_r2, pixel_baseline_features
from scripts.analysis.embedding_maps import stream_maps, thumbnail_grid
from scripts.analysis.inputs import ImageAccess, driver_fields_for
from scripts.analysis.permanence import object_permanence
from scripts.analysis.realism import compare_sets, summarise
from scripts.analysis.representation import (Representation, StoreRows, VectorSource, standardiser,
                                             store_path)
from scripts.params import Params

log = logging.getLogger("analyse")

#: Analogue panels drawn per observed set when analyse.ANALOGUE_OBJECTS is null.
N_PANEL_OBJECTS = 4


def _r2_entry(row: pd.Series) -> dict:
    return {"r2": row["r2"], "r2_std": row["r2_std"], "n": int(row["n"])}


def step_maps(source: VectorSource, meta: pd.DataFrame, table: pd.DataFrame, fields_by: dict,
              params: Params, plots_dir: Path, images: ImageAccess, observed,
              simulated) -> tuple[dict, dict, pd.DataFrame]:
    """UMAP and PCA maps and their figures; returns (figures, metrics, coordinates).

    The vectors are streamed from ``source`` (rows of ``meta``): standardised with
    moments accumulated chunk by chunk, UMAP and PCA fitted on the seeded
    ``analyse.UMAP.FIT_SUBSAMPLE`` rows (all rows when there are fewer), every other row
    transformed chunk by chunk, so only the fit rows and the coordinates are held."""
    an = params.analyse
    n = len(meta)
    umap_xy, pca_xy, pca, fit_rows = stream_maps(
        source, n, n_neighbors=an.umap.n_neighbors, min_dist=an.umap.min_dist,
        fit_subsample=an.umap.fit_subsample, pca_components=an.pca_components, seed=an.seed)
    n_pca = pca_xy.shape[1]
    coords = meta[["dataset", "row"]].copy()
    coords["umap_1"], coords["umap_2"] = umap_xy[:, 0], umap_xy[:, 1]
    for i in range(n_pca):
        coords[f"pca_{i + 1}"] = pca_xy[:, i]
    ds = meta["dataset"].to_numpy()
    figures = {}
    panel_fields = {d: f for d, f in fields_by.items() if f}
    for name, xy in (("UMAP", umap_xy), ("PCA", pca_xy[:, :2])):
        key = name.lower()
        figures[f"{key}_datasets"] = plots.plot_map_by_dataset(
            xy, ds, plots_dir / f"map_{key}_datasets.png", name)
        if panel_fields:
            figures[f"{key}_fields"] = plots.plot_field_panels(
                xy, table, panel_fields, plots_dir / f"map_{key}_fields.png", name)
        if observed and simulated:
            figures[f"{key}_contours"] = plots.plot_density_contours(
                xy, ds, observed, simulated, plots_dir / f"map_{key}_contours.png", name)
    picks = thumbnail_grid(umap_xy, an.thumbnail_grid)
    idx = np.array([i for _, i in picks])
    thumbs = images.display(ds[idx], meta["row"].to_numpy()[idx])
    figures["umap_thumbnails"] = plots.plot_thumbnail_map(
        umap_xy, picks, thumbs, an.thumbnail_grid, plots_dir / "map_umap_thumbnails.png", "UMAP")
    metrics = {"pca_explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
               "umap_fit_rows": int(len(fit_rows)), "pca_fit_rows": int(len(fit_rows)),
               "n_rows": int(n)}
    return figures, metrics, coords


def step_analogues(source: VectorSource, meta: pd.DataFrame, params: Params, observed, simulated,
                   report_dir: Path, plots_dir: Path,
                   images: ImageAccess) -> tuple[pd.DataFrame, dict, dict]:
    """Analogue table of every observed set, panels, and summary numbers (vectors streamed
    from ``source``, rows of ``meta``: :func:`find_analogues`)."""
    an = params.analyse
    tables, metrics, figures = [], {}, {}
    for obs in observed:
        table = find_analogues(source, meta, obs, simulated, an.n_analogues, seed=an.seed)
        tables.append(table)
        first = table[table["rank"] == 1]
        metrics[obs] = {"n_queries": int(table["observed_row"].nunique()), "k": int(table["rank"].max()),
                        "share": analogue_shares(table),
                        "median_distance_rank1": float(first["distance"].median())}
        chosen = choose_queries(table["observed_object_id"], an.analogue_objects, N_PANEL_OBJECTS, an.seed)
        if not chosen:
            continue
        rows = (table[table["observed_object_id"].isin(chosen)]
                .drop_duplicates("observed_object_id")["observed_row"].to_numpy())
        sub = table[table["observed_row"].isin(rows)].assign(query=lambda t: t["observed_row"])
        query_images = {r: (obs, images.read(obs, [r])[0]) for r in rows}
        obj = table.drop_duplicates("observed_row").set_index("observed_row")["observed_object_id"]
        labels = {r: f"{obs}\n#{obj[r]} (observed)" for r in rows}
        entries = panel_entries(sub, query_images, labels, images.read, images.band_index)
        figures[f"analogues_{obs}"] = plots.plot_analogue_panels(
            entries, plots_dir / f"analogues_{obs}.png",
            f"{obs}: nearest simulated images (standardised representation, L2)")
    analogues = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    report_dir.mkdir(parents=True, exist_ok=True)
    analogues.to_parquet(report_dir / "analogues.parquet", index=False)
    return analogues, metrics, figures


def _compare_task(sim_vectors, sim_groups, obs_vectors, obs_groups, settings: dict,
                  weights=None) -> dict:
    return compare_sets(sim_vectors, obs_vectors, sim_groups=sim_groups, obs_groups=obs_groups,
                        weights=weights, **settings)


def _returning_value_error(fn, *args):
    try:
        return fn(*args)
    except ValueError as err:
        return err


def run_side_by_side(fn, tasks: list[tuple], workers: int) -> list:
    """``fn(*task)`` for every task, in ``workers`` processes when more than one, in order;
    a ValueError raised by a task is returned in its place (the caller reports it). Each
    task must be seeded by its own arguments, so the results do not depend on ``workers``."""
    if workers <= 1 or len(tasks) <= 1:
        return [_returning_value_error(fn, *t) for t in tasks]
    from joblib import Parallel, delayed

    return Parallel(n_jobs=min(workers, len(tasks)), backend="loky")(
        delayed(_returning_value_error)(fn, *t) for t in tasks)


def step_realism(rep: Representation, table: pd.DataFrame, params: Params, observed, simulated,
                 plots_dir: Path, mmd_max_samples: int,
                 sets: dict | None = None) -> tuple[pd.DataFrame, dict, dict]:
    """compare_sets for every (simulated, observed) pair, each image grouped with the other
    images of its object (``split_group``), on the representation and (``sets``) on each
    baseline feature set; table, metrics, figures."""
    r = params.analyse.realism
    seed = params.analyse.seed
    groups = table["split_group"].to_numpy() if "split_group" in table.columns else None
    datasets = rep.meta["dataset"].to_numpy()

    def of(name, features="representation"):
        mask = datasets == name
        vectors = rep.vectors[mask] if features == "representation" else filled(sets[name][features])
        return vectors, (groups[mask] if groups is not None else None)

    cap = r.subsample
    settings = dict(seed=seed, k=r.k, percentile=r.percentile, ood_max_samples=cap,
                    n_splits=r.cv_folds, c2st_max_samples=cap,
                    mmd_max_samples=min(cap or mmd_max_samples, mmd_max_samples),
                    n_permutations=r.n_permutations, c2st_permutations=r.c2st_permutations)
    feature_names = FEATURE_SETS if sets else FEATURE_SETS[:1]
    tasks = [(sim, obs, features) for sim in simulated for obs in observed
             for features in feature_names]
    inputs = [(*of(sim, features), *of(obs, features), settings,
               feature_weights(features, sets[obs]) if sets else None)
              for sim, obs, features in tasks]
    done = dict(zip(tasks, run_side_by_side(_compare_task, inputs, r.num_workers)))
    rows, metrics, figures = [], {}, {}
    for sim in simulated:
        metrics[sim] = {}
        for obs in observed:
            for features in feature_names:
                comparison = done[sim, obs, features]
                if isinstance(comparison, ValueError):  # too few objects for k, the folds or the halves
                    err = comparison
                    log.warning("realism of %s against %s skipped (%s): %s", sim, obs, features, err)
                    if features == "representation":
                        metrics[sim][obs] = {"skipped": str(err)}
                        rows.append({"simulated": sim, "observed": obs, "features": features,
                                     "note": f"skipped: {err}"})
                        break
                    continue
                summary = {name: res.summary() for name, res in comparison.items()}
                if features == "representation":
                    metrics[sim][obs] = summary
                    figures[f"realism_{sim}_{obs}"] = plots.plot_realism(
                        comparison, sim, obs, plots_dir / f"realism_{sim}_vs_{obs}.png")
                else:
                    metrics[sim][obs].setdefault("baselines", {})[features] = summary
                flat = summarise(comparison)
                rows.append({
                    "simulated": sim, "observed": obs, "features": features,
                    "in-domain (sim in obs)": flat["ood_sim.in_domain_fraction"],
                    "in-domain (obs in sim)": flat["ood_obs.in_domain_fraction"],
                    "calibration sim": flat["ood_sim.calibration"],
                    "calibration obs": flat["ood_obs.calibration"],
                    "C2ST AUC": flat["c2st.auc"], "AUC low": flat["c2st.ci_low"],
                    "AUC high": flat["c2st.ci_high"], "C2ST p": flat["c2st.p_value"],
                    "MMD²": flat["mmd.mmd2"], "MMD p": flat["mmd.p_value"],
                    "objects per set (OOD)": flat["ood_sim.n_subsample"],
                    "sim images / objects": f"{int(flat['mmd.n_x'])} / {int(flat['mmd.n_groups_x'])} (MMD)",
                })
    return pd.DataFrame(rows), metrics, figures


def _baseline_softening(images: StoreRows, n: int = 256, seed: int = 0) -> float:
    """Flux softening for the asinh magnitudes of the pixel baseline: the noise of a
    whole-image sum, ``sigma_pixel * sqrt(H W)``, with ``sigma_pixel`` the robust pixel
    noise (:func:`scripts.analysis.plots.noise_level`) of a seeded sample of images."""
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(images), size=min(n, len(images)), replace=False))
    pixels = images[sample]
    return plots.noise_level(pixels) * np.sqrt(pixels.shape[1] * pixels.shape[2])


def step_drivers(rep: Representation, table: pd.DataFrame, fields_by: dict, params: Params,
                 dataset_root: Path, plots_dir: Path, umap_xy: np.ndarray,
                 max_samples: int | None, sets: dict, redshifts: dict) -> tuple[pd.DataFrame, dict, dict]:
    """Driver R^2 per dataset from the representation, the pixel baseline (binned-pixel PCA
    + image statistics, per dataset) and each honest baseline feature set (``sets``, from
    `feature_sets`); distance-dependent FIELDS also with the redshift added."""
    an = params.analyse
    rows, metrics, figures = [], {}, {}
    splits_groups = table["split_group"].to_numpy() if "split_group" in table.columns else None
    for name in pd.unique(rep.meta["dataset"]):
        fields = driver_fields_for(params, fields_by.get(name, []), name)
        if not fields:
            continue
        sel = rep.meta["dataset"].to_numpy() == name
        part = table[sel].reset_index(drop=True)
        groups = splits_groups[sel] if splits_groups is not None else None
        if len(part) < 2 * an.cv_folds:
            log.warning("%s: %d images, too few for %d-fold driver regression", name, len(part), an.cv_folds)
            continue
        with StoreRows(store_path(dataset_root, name), part["row"].to_numpy()) as images:
            baseline = pixel_baseline_features(images, softening=_baseline_softening(images, seed=an.seed),
                                               seed=an.seed)
        features = {"representation": sets[name]["representation"], "baseline": baseline,
                    **{set_name: sets[name][set_name] for set_name in FEATURE_SETS[1:]}}
        cv = dict(k=an.knn_k, folds=an.cv_folds, seed=an.seed, groups=groups, max_samples=max_samples)
        weights = {set_name: feature_weights(set_name, sets[name]) for set_name in FEATURE_SETS}
        r2 = {set_name: driver_r2(X, part, fields, weights=weights.get(set_name), **cv)
              for set_name, X in features.items()}
        distance = [f for f in fields if f in an.distance_fields]
        if distance and redshifts.get(name) is not None:
            for set_name in FEATURE_SETS:
                r2[set_name + WITH_Z] = driver_r2(with_redshift(sets[name][set_name], redshifts[name]),
                                                  part, distance,
                                                  weights=feature_weights(set_name, sets[name], with_z=True),
                                                  **cv)
        both = r2["representation"].merge(r2["baseline"], on="field", suffixes=("_representation", "_baseline"))
        metrics[name] = {}
        for field in fields:
            metrics[name][field] = {
                set_name: _r2_entry(frame.set_index("field").loc[field])
                for set_name, frame in r2.items() if field in set(frame["field"])}
            entry = metrics[name][field]
            row = {"dataset": name, "field": field,
                   "r2_representation": entry["representation"]["r2"],
                   "r2_representation_std": entry["representation"]["r2_std"],
                   "r2_baseline": entry["baseline"]["r2"], "r2_baseline_std": entry["baseline"]["r2_std"],
                   "n": entry["representation"]["n"]}
            for set_name in [k for k in entry if k not in ("representation", "baseline")]:
                row[f"r2_{set_name}"] = entry[set_name]["r2"]
            rows.append(row)
        values = {f: part[f].to_numpy(dtype=np.float64) for f in fields}
        figures[f"drivers_{name}"] = plots.plot_driver_maps(
            umap_xy[sel], values, both, name, plots_dir / f"drivers_{name}.png", "UMAP")
    out = pd.DataFrame(rows)
    if not len(out):
        out = pd.DataFrame(columns=["dataset", "field", "r2_representation", "r2_representation_std",
                                    "r2_baseline", "r2_baseline_std", "n"])
    if len(out):
        figures["drivers_r2"] = plots.plot_driver_bars(out, plots_dir / "drivers_r2.png")
    return out, metrics, figures


def step_permanence(rep: Representation, datasets, seed: int,
                    sets: dict | None = None) -> tuple[pd.DataFrame, dict]:
    """Top-1/top-5 same-object neighbour rates per dataset with several projections, for the
    representation and (``sets``) each baseline feature set."""
    rows, metrics = [], {}
    for name in datasets:
        part = rep.of(name)
        groups = (part.meta["snapshot"].astype(str) + ":" + part.meta["object_id"].astype(str)).to_numpy()
        sizes = pd.Series(groups).value_counts()
        if len(part.meta) < 3 or sizes.max() < 2:
            log.info("%s: no object with several projections; object permanence not measured", name)
            continue
        mean, std = standardiser(part.vectors)
        ks = [k for k in (1, 5) if k <= len(part.meta) - 1]
        result = object_permanence((part.vectors - mean) / std, groups, ks=ks, seed=seed)
        metrics[name] = {k: v for k, v in result.items() if k not in ("hits", "scored_rows")}
        row = {"dataset": name, **metrics[name]}
        baselines = {}
        for set_name in FEATURE_SETS[1:] if sets and name in sets else ():
            X = filled(sets[name][set_name])
            m, sd = standardiser(X)
            w = feature_weights(set_name, sets[name])
            other = object_permanence((X - m) / sd * (1.0 if w is None else w), groups, ks=ks, seed=seed)
            baselines[set_name] = {f"top{k}": other[f"top{k}"] for k in ks}
            row.update({f"top{k} ({set_name})": other[f"top{k}"] for k in ks})
        if baselines:
            metrics[name]["baselines"] = baselines
        rows.append(row)
    return pd.DataFrame(rows), metrics
