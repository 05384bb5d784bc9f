"""What the analyse steps read beside the representation, row-aligned with it: each
embedded image's FIELDS (from ``objects.parquet``), how much of its crop was padding, its
honest baseline feature sets (pixels, photometry) with its redshift, and its pixels.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from scripts.analysis import plots
from scripts.analysis.baselines import (combine, photometry_columns, photometry_features,
                                        pooled_pixel_pca)
from scripts.analysis.representation import Representation, StoreRows, store_path
from scripts.params import Params
from scripts.preprocessing.croppers import outside_summary

log = logging.getLogger("analyse")


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


def evaluation_rows(datasets, groups, held_out, max_objects: int | None,
                    seed: int) -> tuple[np.ndarray, dict]:
    """Which rows the headline steps (realism, drivers, permanence) see: the ``held_out``
    ones, and where a dataset has more than ``max_objects`` objects (``groups``: prepare's
    ``split_group``; a row without one is an object of its own) among them, only the
    images of a seeded draw of ``max_objects`` of its objects (one ``default_rng(seed)``,
    drawn from once per subsampled dataset, in order of first appearance). Every image of a kept object is kept,
    so grouped statistics stay grouped. Returns the row mask and, per subsampled dataset,
    ``{"objects": kept, "of": available, "images": kept images}``."""
    datasets, held_out = np.asarray(datasets), np.asarray(held_out, dtype=bool)
    keep = held_out.copy()
    info = {}
    if max_objects is None:
        return keep, info
    rng = np.random.default_rng(seed)
    groups = pd.Series(np.asarray(groups, dtype=object))
    for name in pd.unique(datasets[held_out]):
        rows = np.flatnonzero(held_out & (datasets == name))
        labels = groups.iloc[rows].reset_index(drop=True)
        missing = labels.isna().to_numpy()
        labels = labels.astype(str).to_numpy()
        labels[missing] = [f"\0row{r}" for r in rows[missing]]   # ungrouped: an object alone
        objects, code = np.unique(labels, return_inverse=True)
        if len(objects) <= max_objects:
            continue
        chosen = np.zeros(len(objects), dtype=bool)
        chosen[rng.choice(len(objects), size=max_objects, replace=False)] = True
        keep[rows[~chosen[code]]] = False
        info[str(name)] = {"objects": int(max_objects), "of": int(len(objects)),
                           "images": int(chosen[code].sum())}
        log.info("%s: headline numbers on a seeded %d of its %d held-out objects "
                 "(analyse.EVALUATION_MAX_OBJECTS)", name, max_objects, len(objects))
    return keep, info


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
