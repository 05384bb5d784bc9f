"""Analyse stage: what the trained representation says about simulations and observations.

``python -m scripts.analyse [--params P]``

For the run ``analyse.RUN_NAME`` (default ``train.RUN_NAME``) under ``models/``, with every
output under ``reports/<run>/`` (two runs never overwrite each other):

1. embeds every image of ``analyse.SPLITS`` of the observed and simulated sets (and of
   any other prepared dataset whose images fit the encoder; the others are skipped with
   a note) → ``representation.parquet``, which records the encoder's fingerprint;
2. maps: UMAP (fitted on a subsample, the rest transformed) and PCA of the standardised
   representation, coloured by dataset and by each FIELD, density contours of simulated
   vs observed sets, and a thumbnail map → ``plots/*.png``, ``map_coordinates.parquet``;
3. analogues: the ``N_ANALOGUES`` nearest simulated images of every observed image →
   ``analogues.parquet`` and image panels;
4. realism of each simulated set against each observed set (OOD score of Eisert et al.
   2024 in both directions, classifier two-sample test, MMD), each treating the images of
   one object (prepare's ``split_group``) as one unit;
5. physical drivers: cross-validated kNN R^2 of each FIELD from the representation and
   from a pixel baseline (folds keep each object's images together), with maps of the
   fields over the UMAP plane;
6. object permanence: how often another projection of the same galaxy is among an
   image's nearest neighbours (top-1, top-5, chance);
7. ``report.html`` (self-contained), ``report.md``, ``metrics.json`` (with the
   ``headline`` that ``make demo`` prints), all also sent to the experiment tracker.

Steps 4–6 — the headline numbers — use only the images of ``analyse.EVALUATION_SPLITS``
(default: the test split, which the encoder never trained on); the maps and analogues
show every embedded split. The report names the splits of every number.

Every step takes explicit folders (:func:`run`), so tests run it on temporary ones.
"""
from __future__ import annotations

import logging
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

import config
from scripts.analysis import plots
from scripts.analysis.analogues import (analogue_shares, choose_queries, find_analogues,
                                        panel_entries)
from scripts.analysis.baselines import (FEATURE_SETS, WITH_Z, combine, filled, photometry_columns,
                                        photometry_features, pooled_pixel_pca, with_redshift)
from scripts.analysis.drivers import driver_r2, pixel_baseline_features
from scripts.analysis.interactive_map import INTERACTIVE_MAP, write_interactive_map
from scripts.analysis.embedding_maps import fit_pca, fit_umap, thumbnail_grid
from scripts.analysis.permanence import object_permanence
from scripts.analysis.realism import compare_sets, summarise
from scripts.analysis.report import Section, flat_metrics, write_metrics, write_report
from scripts.analysis.representation import (REPRESENTATION_FILE, Embedder, Representation,
                                             StoreRows, compute_representations,
                                             read_representation, rows_to_embed,
                                             representation_metadata, select_datasets,
                                             standardiser, store_path)
from scripts.fingerprint import (check_splits_unchanged, encoder_fingerprint,
                                 read_run_fingerprints, splits_fingerprint)
from scripts.params import Params
from scripts.preprocessing.croppers import outside_summary
from scripts.stage import run_stage

log = logging.getLogger("analyse")

#: Analogue panels drawn per observed set when analyse.ANALOGUE_OBJECTS is null.
N_PANEL_OBJECTS = 4
#: Rows of the analogue table shown in the report.
ANALOGUE_HEAD = 20
#: Images sent to the Embedding Projector (seeded subsample).
PROJECTOR_ROWS = 1000


@contextmanager
def _timed(name: str, seconds: dict):
    start = time.perf_counter()
    log.info("%s …", name)
    yield
    seconds[name] = round(time.perf_counter() - start, 2)
    log.info("%s done in %.1f s", name, seconds[name])


# --------------------------------------------------------------------------- inputs
def _objects_columns(dataset_root: Path, name: str) -> list[str]:
    path = dataset_root / name / "objects.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the extract stage for {name}")
    return pq.read_schema(path).names


def numeric_fields(table: pd.DataFrame, fields) -> list[str]:
    """FIELDS of ``table`` usable as numbers (numeric or boolean), leaving out identifiers
    (names ending in ``_id``, e.g. ``root_descendant_id``), which are labels, not quantities."""
    out = []
    for f in fields:
        if f not in table.columns or f.endswith("_id"):
            continue
        dtype = table[f].dtype
        if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_numeric_dtype(dtype):
            out.append(f)
    return out


def attach_fields(meta: pd.DataFrame, params: Params, dataset_root: Path) -> tuple[pd.DataFrame, dict]:
    """``meta`` with the FIELDS of every dataset joined by (dataset, row), as float64.

    Returns ``(table, fields_by_dataset)`` where ``fields_by_dataset[name]`` lists the
    numeric FIELDS (``extract.FIELDS`` of that dataset, identifiers excluded) present in
    its ``objects.parquet``.
    """
    parts, fields_by = [], {}
    for name, part in meta.groupby("dataset", sort=False):
        declared = params.extract.dataset(name).fields
        columns = _objects_columns(dataset_root, name)
        wanted = [f for f in declared if f in columns]
        objects = pd.read_parquet(dataset_root / name / "objects.parquet", columns=["row", *wanted])
        fields = numeric_fields(objects, wanted)
        fields_by[name] = fields
        values = objects.set_index("row")[fields].astype(np.float64)
        joined = values.reindex(part["row"].to_numpy())
        joined.index = part.index
        parts.append(joined)
    fields_table = pd.concat(parts).reindex(meta.index) if parts else pd.DataFrame(index=meta.index)
    return pd.concat([meta, fields_table], axis=1), fields_by


def crop_padding(meta: pd.DataFrame, dataset_root: Path) -> dict:
    """Per embedded dataset, the distribution of the fraction of each image's crop that lay
    outside its frame (extract's ``crop_outside_fraction``; padded with sky noise), over the
    embedded images: a set that is padded far more often than another can be told apart by
    its borders rather than its galaxies."""
    out = {}
    for name, part in meta.groupby("dataset", sort=False):
        columns = [c for c in ("crop_outside_fraction", "pad_sigma_source")
                   if c in _objects_columns(dataset_root, name)]
        if "crop_outside_fraction" not in columns:
            continue
        objects = pd.read_parquet(dataset_root / name / "objects.parquet", columns=["row", *columns])
        rows = objects.set_index("row").reindex(part["row"].to_numpy())
        out[name] = outside_summary(rows)
    return out


def driver_fields_for(params: Params, fields: list[str], dataset: str) -> list[str]:
    """``analyse.DRIVER_FIELDS`` present in ``dataset`` (all its numeric FIELDS when null)."""
    wanted = params.analyse.driver_fields
    if wanted is None:
        return list(fields)
    absent = [f for f in wanted if f not in fields]
    if absent:
        log.info("%s: driver field(s) %s not among its numeric FIELDS; skipped there", dataset, absent)
    return [f for f in wanted if f in fields]


# --------------------------------------------------------------------------- images
class ImageAccess:
    """Raw images of the analysed datasets by (dataset, row), and their display form."""

    def __init__(self, dataset_root: Path, names, params: Params):
        from scripts.model.input_pipeline import HDF5Images

        self.names = list(names)
        self.reader = HDF5Images({n: store_path(dataset_root, n) for n in self.names})
        self.params = params

    def read(self, dataset: str, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        return self.reader.read(np.full(len(rows), self.names.index(dataset)), rows)

    def band_index(self, dataset: str):
        return plots.band_indices(self.params.extract.dataset(dataset).filters,
                                  self.params.analyse.rgb_bands)

    def display(self, datasets, rows) -> np.ndarray:
        """RGB display images (N, H, W, 3) with one stretch per dataset."""
        datasets, rows = np.asarray(datasets), np.asarray(rows)
        out = None
        for name in pd.unique(datasets):
            where = np.flatnonzero(datasets == name)
            raw = self.read(name, rows[where])
            shown = np.stack(plots.display_common(list(raw), [self.band_index(name)] * len(raw)))
            if out is None:
                out = np.zeros((len(rows),) + shown.shape[1:], np.float32)
            out[where] = shown
        return out

    def close(self):
        self.reader.close()


# --------------------------------------------------------------------------- baselines
#: FIELDS tried, in order, as an image's redshift for the "+z" feature sets.
REDSHIFT_FIELDS = ("z", "photoz", "redshift")


def feature_sets(rep: Representation, table: pd.DataFrame, params: Params,
                 dataset_root: Path) -> tuple[dict, dict]:
    """The representation and its honest baselines (:mod:`scripts.analysis.baselines`) for
    every dataset of ``rep``, row-aligned with ``rep.of(dataset)``: ``{dataset: {set: (n, d)}}``,
    and each dataset's redshift column (None without one)."""
    datasets = list(pd.unique(rep.meta["dataset"]))
    rows = {n: rep.meta.loc[rep.meta["dataset"] == n, "row"].to_numpy() for n in datasets}
    stores = {n: StoreRows(store_path(dataset_root, n), rows[n]) for n in datasets}
    try:
        pixels = pooled_pixel_pca(stores, seed=params.analyse.seed)
    finally:
        for store in stores.values():
            store.close()
    sets, redshifts = {}, {}
    for name in datasets:
        sel = rep.meta["dataset"].to_numpy() == name
        filters = params.extract.dataset(name).filters
        columns = photometry_columns(_objects_columns(dataset_root, name), filters)
        objects = pd.read_parquet(dataset_root / name / "objects.parquet", columns=["row", *columns])
        photometry = photometry_features(objects.set_index("row").reindex(rows[name]), filters)
        sets[name] = {"representation": rep.vectors[sel].astype(np.float64), "pixels": pixels[name],
                      "photometry": photometry,
                      "representation+photometry": combine(rep.vectors[sel], photometry)}
        part = table[sel]
        z = next((c for c in REDSHIFT_FIELDS if c in part.columns and part[c].notna().any()), None)
        redshifts[name] = part[z].to_numpy(np.float64) if z else None
    return sets, redshifts


def _r2_entry(row: pd.Series) -> dict:
    return {"r2": row["r2"], "r2_std": row["r2_std"], "n": int(row["n"])}


# --------------------------------------------------------------------------- steps
def step_maps(rep: Representation, table: pd.DataFrame, fields_by: dict, params: Params,
              plots_dir: Path, images: ImageAccess, observed, simulated) -> tuple[dict, dict, pd.DataFrame]:
    """UMAP and PCA maps and their figures; returns (figures, metrics, coordinates)."""
    an = params.analyse
    mean, std = standardiser(rep.vectors)
    z = ((rep.vectors - mean) / std).astype(np.float32)
    umap_xy, _ = fit_umap(z, n_neighbors=an.umap.n_neighbors, min_dist=an.umap.min_dist,
                          fit_subsample=an.umap.fit_subsample, seed=an.seed)
    n_pca = min(an.pca_components, z.shape[1], len(z))
    pca_xy, pca = fit_pca(z, n_components=n_pca, seed=an.seed)
    coords = rep.meta[["dataset", "row"]].copy()
    coords["umap_1"], coords["umap_2"] = umap_xy[:, 0], umap_xy[:, 1]
    for i in range(n_pca):
        coords[f"pca_{i + 1}"] = pca_xy[:, i]
    ds = rep.meta["dataset"].to_numpy()
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
    thumbs = images.display(ds[idx], rep.meta["row"].to_numpy()[idx])
    figures["umap_thumbnails"] = plots.plot_thumbnail_map(
        umap_xy, picks, thumbs, an.thumbnail_grid, plots_dir / "map_umap_thumbnails.png", "UMAP")
    metrics = {"pca_explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
               "umap_fit_rows": int(min(an.umap.fit_subsample, len(z))), "n_rows": int(len(z))}
    return figures, metrics, coords


def step_analogues(rep: Representation, params: Params, observed, simulated, report_dir: Path,
                   plots_dir: Path, images: ImageAccess) -> tuple[pd.DataFrame, dict, dict]:
    """Analogue table of every observed set, panels, and summary numbers."""
    an = params.analyse
    tables, metrics, figures = [], {}, {}
    for obs in observed:
        table = find_analogues(rep, obs, simulated, an.n_analogues, seed=an.seed)
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

    def compare(sim, obs, features):
        cap = r.subsample
        (sim_vectors, sim_groups), (obs_vectors, obs_groups) = of(sim, features), of(obs, features)
        return compare_sets(
            sim_vectors, obs_vectors, seed=seed, k=r.k,
            percentile=r.percentile, ood_max_samples=cap, n_splits=r.cv_folds,
            c2st_max_samples=cap, mmd_max_samples=min(cap or mmd_max_samples, mmd_max_samples),
            n_permutations=r.n_permutations, c2st_permutations=r.c2st_permutations,
            sim_groups=sim_groups, obs_groups=obs_groups)

    feature_names = FEATURE_SETS if sets else FEATURE_SETS[:1]
    rows, metrics, figures = [], {}, {}
    for sim in simulated:
        metrics[sim] = {}
        for obs in observed:
            for features in feature_names:
                try:
                    comparison = compare(sim, obs, features)
                except ValueError as err:  # too few objects for k, the folds or the halves
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
        r2 = {set_name: driver_r2(X, part, fields, **cv) for set_name, X in features.items()}
        distance = [f for f in fields if f in an.distance_fields]
        if distance and redshifts.get(name) is not None:
            for set_name in FEATURE_SETS:
                r2[set_name + WITH_Z] = driver_r2(with_redshift(sets[name][set_name], redshifts[name]),
                                                  part, distance, **cv)
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
            other = object_permanence((X - m) / sd, groups, ks=ks, seed=seed)
            baselines[set_name] = {f"top{k}": other[f"top{k}"] for k in ks}
            row.update({f"top{k} ({set_name})": other[f"top{k}"] for k in ks})
        if baselines:
            metrics[name]["baselines"] = baselines
        rows.append(row)
    return pd.DataFrame(rows), metrics


# --------------------------------------------------------------------------- report
def _realism_text(splits) -> list[str]:
    on = ", ".join(splits)
    return [
        f"Measured on the {on} split(s) only. Every measure treats the images of one object "
        "(its projections, snapshots and root-descendant tree: prepare's split_group) as one "
        "unit, since they are not independent samples.",
        "Out-of-distribution score (Eisert et al. 2024): s_k(x) = d_k(x, B) / d_k(x, A∖group(x)) "
        "with L1 distances to the k-th neighbour, on representations standardised with the "
        "observed set. Both sets are cut to the same number of objects, and the neighbour sets "
        "hold one image per object, so that no sibling projection of x is its neighbour. "
        "Normalised by the 95th percentile of the same score between two halves of A split by "
        "object. 'sim in obs' = fraction of simulated images inside the observed distribution; "
        "'obs in sim' = fraction of observed images the simulation reproduces (both ≈ 0.95 for "
        "identical populations).",
        "C2ST: AUC of a logistic classifier telling the sets apart, cross-validated with folds "
        "that keep each object's images together (0.5 = indistinguishable). Interval and "
        "p-value from rerunning it with the set labels of whole objects shuffled "
        "(permutation null).",
        "MMD: squared maximum mean discrepancy (Gaussian kernel, median bandwidth) leaving out "
        "pairs of images of one object from the within-set sums; p-value from permutations of "
        "whole objects between the sets.",
    ]


def build_sections(params: Params, counts: pd.DataFrame, skipped: dict, dim: int, figures: dict,
                   realism: pd.DataFrame, drivers: pd.DataFrame, permanence: pd.DataFrame,
                   analogues: pd.DataFrame, analogue_metrics: dict, seconds: dict,
                   padding: dict | None = None) -> list[Section]:
    an = params.analyse
    sections = []
    summary = Section("Summary", [
        f"Run {an.run_name}: representation of dimension {dim}. Maps and analogues show the "
        f"{', '.join(an.splits)} split(s); every number below (realism, drivers, permanence) is "
        f"measured on the held-out {', '.join(an.evaluation_splits)} split(s) only."])
    if len(realism):
        wanted = ["simulated", "observed", "in-domain (sim in obs)", "in-domain (obs in sim)",
                  "C2ST AUC", "MMD²", "MMD p", "note"]
        own = realism[realism["features"] == "representation"] if "features" in realism else realism
        summary.tables.append(("Realism of each simulated set against each observed set",
                               own[[c for c in wanted if c in own.columns]]))
    sm = drivers[drivers["field"] == "stellar_mass"] if len(drivers) else drivers
    if len(sm):
        columns = ["dataset", "r2_representation", "r2_representation_std", "r2_baseline",
                   "r2_baseline_std", *[f"r2_{f}" for f in FEATURE_SETS[1:]],
                   *[f"r2_{f}{WITH_Z}" for f in FEATURE_SETS], "n"]
        summary.tables.append(("Stellar mass from the representation vs the baselines "
                               "(cross-validated kNN R², ± spread over folds; +z: with the redshift)",
                               sm[[c for c in columns if c in sm.columns]]))
    if len(permanence):
        summary.tables.append(("Object permanence", permanence[[c for c in ("dataset", "top1", "top5",
                                                                            "chance_top5")
                                                                 if c in permanence.columns]]))
    sections.append(summary)
    data = Section("Data", tables=[("Images embedded per dataset and split", counts)])
    if padding:
        data.text.append("Crops that reach beyond their frame are padded with the image's own sky "
                         "noise (extract stage); the share of such crops per dataset shows whether "
                         "a set's borders differ from another's.")
        data.tables.append(("Fraction of each crop outside its frame (embedded images)", pd.DataFrame([
            {"dataset": name, "images": v["n"], "padded": v.get("padded_fraction"),
             "median": v.get("median"), "p90": v.get("p90"), "max": v.get("max")}
            for name, v in padding.items()])))
    if skipped:
        data.tables.append(("Datasets not embedded", pd.DataFrame(
            [{"dataset": k, "reason": v} for k, v in skipped.items()])))
    data.tables.append(("Stage timings [s]", pd.DataFrame(list(seconds.items()), columns=["step", "seconds"])))
    sections.append(data)
    maps = Section("Maps", [f"UMAP (n_neighbors {an.umap.n_neighbors}, min_dist {an.umap.min_dist}, "
                            f"fitted on at most {an.umap.fit_subsample} images, the rest transformed) "
                            "and PCA of the standardised representation."],
                   links=[("Interactive map: hover a point for its thumbnail (opens from disk; "
                           "python -m scripts.explore serves the full explorer)", INTERACTIVE_MAP)])
    for key, caption in (("umap_datasets", "UMAP by dataset"), ("umap_contours", "UMAP density contours: "
                         "simulated (lines) vs observed (grey)"), ("umap_thumbnails", "UMAP thumbnail map"),
                         ("umap_fields", "UMAP coloured by FIELD"), ("pca_datasets", "PCA by dataset"),
                         ("pca_contours", "PCA density contours"), ("pca_fields", "PCA coloured by FIELD")):
        if key in figures:
            maps.figures.append((caption, figures[key]))
    sections.append(maps)
    if len(realism):
        sec = Section("Realism", _realism_text(an.evaluation_splits) + [
            "Each measure is also computed on the baseline feature sets (column 'features': "
            "pixels = PCA of binned pixels fitted on all compared sets pooled, photometry = the "
            "extract stage's magnitudes, colours, R50, R90 and concentration, and the "
            "representation beside the photometry), to show what the network sees that "
            "standard measurements do not."], tables=[("All realism measures", realism)])
        sec.figures += [(f"{k[len('realism_'):].replace('_', ' ')}: OOD scores and MMD null", v)
                        for k, v in figures.items() if k.startswith("realism_")]
        sections.append(sec)
    if len(drivers):
        sec = Section("Physical drivers", [
            f"On the {', '.join(an.evaluation_splits)} split(s): cross-validated ({an.cv_folds}-fold, "
            "all images of one object in one fold; ± is the spread over folds) R² of a "
            f"{an.knn_k}-nearest-neighbour regression of each FIELD, from the representation and "
            "from honest baselines: 'baseline' = PCA of 4×4-binned pixels (per dataset) + "
            "image-sum magnitudes, r50, concentration and colours; 'pixels' = PCA of binned pixels "
            "fitted on all datasets pooled; 'photometry' = the extract stage's magnitudes, "
            "colours, Petrosian R50/R90 and concentration; 'representation+photometry' = both "
            "side by side (does the network add information beyond standard measurements?). "
            f"For distance-dependent FIELDS ({', '.join(an.distance_fields)}) every set is also "
            "scored with the redshift added (+z), as with spectroscopic redshifts."],
            tables=[("R² per dataset and FIELD", drivers)])
        sec.figures += [(f"{k.replace('_', ' ')}", v) for k, v in figures.items()
                        if k.startswith("drivers_")]
        sections.append(sec)
    if len(permanence):
        sections.append(Section("Object permanence", [
            f"On the {', '.join(an.evaluation_splits)} split(s): fraction of images whose nearest "
            "(top-1) or any of whose 5 nearest (top-5) "
            "neighbours is another projection of the same galaxy, with the chance level for "
            "the same group sizes."], tables=[("Object permanence", permanence)]))
    if len(analogues):
        shares = pd.DataFrame([{"observed": o, "simulated": s, "share of analogues": v}
                               for o, m in analogue_metrics.items() for s, v in m["share"].items()])
        sec = Section("Analogues", [f"The {an.n_analogues} nearest simulated images of every observed "
                                    "image (L2 on representations standardised with the observed set); "
                                    "full table in analogues.parquet."],
                      tables=[("Share of analogues per simulated set", shares),
                              (f"First {ANALOGUE_HEAD} rows of analogues.parquet",
                               analogues.head(ANALOGUE_HEAD))])
        sec.figures += [(k.replace("_", " "), v) for k, v in figures.items() if k.startswith("analogues_")]
        sections.append(sec)
    return sections


def _log_projector(tracker, rep: Representation, table: pd.DataFrame, images: ImageAccess, seed: int):
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(rep.meta), size=min(PROJECTOR_ROWS, len(rep.meta)), replace=False))
    meta = table.iloc[take].reset_index(drop=True)
    thumbs = images.display(meta["dataset"].to_numpy(), meta["row"].to_numpy())
    tracker.log_embedding(rep.vectors[take], meta, thumbs, name="representation")


# --------------------------------------------------------------------------- stage
def announce_run_folder(report_dir: Path, run_name: str, encoder_fp: str) -> None:
    """Say in the log when an existing run folder is reused, and louder when it holds the
    analysis of another encoder (e.g. two params files sharing one ``train.RUN_NAME``)."""
    previous = report_dir / REPRESENTATION_FILE
    if previous.exists():
        before = representation_metadata(previous).get("encoder_fingerprint")
        if before and before != encoder_fp:
            log.warning("reports/%s holds the analysis of another encoder (fingerprint %s, now %s): "
                        "it is replaced. Give each configuration its own train.RUN_NAME to keep "
                        "both.", run_name, before, encoder_fp)
            return
    if report_dir.exists() and any(report_dir.iterdir()):
        log.info("reusing the run folder %s (encoder fingerprint %s): its outputs are replaced",
                 report_dir, encoder_fp)


def run(params: Params, dataset_root: Path, models_root: Path, reports_root: Path,
        tracker=None, embedder: Embedder | None = None, driver_max_samples: int | None = 20_000,
        mmd_max_samples: int = 2000) -> dict:
    """Run the whole stage; returns the metrics dict (also written to metrics.json).

    Folders: ``dataset_root`` (splits, image stores), ``models_root/<run>`` (encoder),
    ``reports_root/<run>`` (everything this stage writes: representation, map coordinates,
    analogue table, ``plots/``, report, metrics). ``embedder`` overrides the run's encoder
    (tests). ``driver_max_samples`` caps the images per dataset in the kNN regressions
    (cost O(N^2)); ``mmd_max_samples`` caps each set in the MMD test (memory O(N^2)).
    """
    from scripts.tracking import NullTracker

    an = params.analyse
    tracker = tracker or NullTracker()
    dataset_root, models_root = Path(dataset_root), Path(models_root)
    report_dir = Path(reports_root) / an.run_name
    plots_dir = report_dir / "plots"
    seconds: dict[str, float] = {}
    observed, simulated = list(an.observed_sets), list(an.simulated_sets)

    embedder = embedder or Embedder.from_run(models_root / an.run_name, an.batch_size)
    encoder_fp = encoder_fingerprint(embedder.encoder, embedder.normalisation)
    splits_path = dataset_root / "splits.parquet"
    if not splits_path.exists():
        raise FileNotFoundError(f"{splits_path} does not exist; run the prepare stage first")
    splits = pd.read_parquet(splits_path)
    splits_fp = splits_fingerprint(dataset_root)
    trained_on = read_run_fingerprints(models_root / an.run_name).get("splits")
    splits_ok = check_splits_unchanged(trained_on, splits_fp, f"run {an.run_name} was trained")
    announce_run_folder(report_dir, an.run_name, encoder_fp)
    plots_dir.mkdir(parents=True, exist_ok=True)
    for stale in plots_dir.glob("*.png"):       # a figure of an earlier analysis must not linger
        stale.unlink()
    candidates = [*observed, *simulated, *params.prepare.set_names]
    kept, skipped = select_datasets(candidates, dataset_root, embedder.accepts)
    unusable = {n: skipped[n] for n in observed + simulated if n in skipped}
    if unusable:
        raise ValueError("analyse.OBSERVED_SETS/SIMULATED_SETS name dataset(s) that cannot be "
                         f"embedded: {unusable}")

    rep_path = report_dir / REPRESENTATION_FILE
    with _timed("embedding", seconds):
        todo = rows_to_embed(splits, kept, an.splits)
        compute_representations(embedder, todo, dataset_root, rep_path, an.batch_size,
                                metadata={"encoder_fingerprint": encoder_fp,
                                          "splits_fingerprint": splits_fp or "",
                                          "run_name": an.run_name})
    rep = read_representation(rep_path)
    empty = [n for n in observed + simulated if not (rep.meta["dataset"] == n).any()]
    if empty:
        raise ValueError(f"no image of dataset(s) {empty} in analyse.SPLITS {list(an.splits)}; "
                         "check prepare.SETS fractions")
    table, fields_by = attach_fields(rep.meta, params, dataset_root)
    groups = splits.set_index(["dataset", "row"])["split_group"]
    table["split_group"] = groups.reindex(pd.MultiIndex.from_frame(rep.meta[["dataset", "row"]])).to_numpy()
    counts = rep.meta.groupby(["dataset", "split"], sort=False).size().unstack(fill_value=0)
    counts = counts.reindex(columns=[s for s in an.splits if s in counts.columns]).reset_index()
    padding = crop_padding(rep.meta, dataset_root)
    held_out = rep.meta["split"].isin(list(an.evaluation_splits)).to_numpy()
    rep_eval, table_eval = rep.subset(held_out), table[held_out].reset_index(drop=True)
    missing = [n for n in observed + simulated if not (rep_eval.meta["dataset"] == n).any()]
    if missing:
        log.warning("no image of %s in analyse.EVALUATION_SPLITS %s: no headline numbers for them; "
                    "widen the split fractions in prepare.SETS", missing, list(an.evaluation_splits))

    images = ImageAccess(dataset_root, kept, params)
    try:
        with _timed("maps", seconds):
            map_figs, map_metrics, coords = step_maps(rep, table, fields_by, params, plots_dir, images,
                                                      observed, simulated)
            coords.to_parquet(report_dir / "map_coordinates.parquet", index=False)
            write_interactive_map(coords, table, images, report_dir / INTERACTIVE_MAP,
                                  fields=[f for fs in fields_by.values() for f in fs], seed=an.seed)
        with _timed("analogues", seconds):
            if observed and simulated:
                analogues, analogue_metrics, ana_figs = step_analogues(
                    rep, params, observed, simulated, report_dir, plots_dir, images)
            else:
                analogues, analogue_metrics, ana_figs = pd.DataFrame(), {}, {}
        with _timed("baselines", seconds):
            sets, redshifts = (feature_sets(rep_eval, table_eval, params, dataset_root)
                               if len(rep_eval.meta) else ({}, {}))
        with _timed("realism", seconds):
            realism, realism_metrics, real_figs = step_realism(
                rep_eval, table_eval, params, [o for o in observed if o not in missing],
                [s for s in simulated if s not in missing], plots_dir, mmd_max_samples, sets)
        with _timed("drivers", seconds):
            umap_xy = coords[["umap_1", "umap_2"]].to_numpy()[held_out]
            drivers, driver_metrics, drv_figs = step_drivers(rep_eval, table_eval, fields_by, params,
                                                             dataset_root, plots_dir, umap_xy,
                                                             driver_max_samples, sets, redshifts)
        with _timed("permanence", seconds):
            others = [n for n in kept if n not in observed]
            permanence, perm_metrics = step_permanence(rep_eval, others, an.seed, sets)
        with _timed("projector", seconds):
            _log_projector(tracker, rep, table, images, an.seed)
    finally:
        images.close()

    metrics = {
        "run_name": an.run_name,
        "evaluation_splits": list(an.evaluation_splits),
        "embedded_splits": list(an.splits),
        "fingerprints": {"encoder": encoder_fp, "splits": splits_fp,
                         "splits_at_training": trained_on, "splits_unchanged": splits_ok},
        "representation_dim": int(rep.vectors.shape[1]),
        "images": {str(r["dataset"]): {k: int(v) for k, v in r.items() if k != "dataset"}
                   for r in counts.to_dict("records")},
        "skipped_datasets": skipped,
        "crop_outside": padding,
        "maps": map_metrics,
        "realism": realism_metrics,
        "drivers": driver_metrics,
        "permanence": perm_metrics,
        "analogues": analogue_metrics,
        "seconds": seconds,
    }
    figures = {**map_figs, **ana_figs, **real_figs, **drv_figs}
    sections = build_sections(params, counts, skipped, rep.vectors.shape[1], figures, realism, drivers,
                              permanence, analogues, analogue_metrics, seconds, padding)
    metrics_path = write_metrics(metrics, report_dir / "metrics.json")
    html_path, md_path = write_report(report_dir, f"Analyse report: run {an.run_name}", sections,
                                      params.to_dict())
    tracker.log_params(params.to_dict())
    tracker.log_metrics(flat_metrics({k: metrics[k] for k in ("realism", "drivers", "permanence")}), step=0)
    tracker.log_artifacts(report_dir, "analyse/report")     # report, metrics, tables, plots/
    log.info("report: %s (Markdown %s, metrics %s)", html_path, md_path, metrics_path)
    return metrics


def make_stage_tracker(params: Params):
    """The experiment tracker of an analyse run (``tracking:`` section), tagged with the
    stage and the analysed run."""
    from scripts.tracking import make_tracker_from_params

    tracker = make_tracker_from_params(params.tracking, run_name=f"analyse-{params.analyse.run_name}")
    tracker.set_tags({"stage": "analyse", "run": params.analyse.run_name})
    return tracker


def main(argv=None) -> int:
    def body(params: Params) -> None:
        with make_stage_tracker(params) as tracker:
            run(params, config.dataset_path, config.models_path, config.reports_path,
                tracker=tracker,
                driver_max_samples=params.analyse.driver_max_samples,
                mmd_max_samples=params.analyse.realism.mmd_max_samples)

    return run_stage("Analyse stage: maps, analogues, realism, drivers, report.", body, argv, log)


if __name__ == "__main__":
    sys.exit(main())
