"""Prepare stage: object-aware splits, cross-dataset matching and scaling.

``python -m scripts.preprocessing.prepare [--params P]``

Reads ``dataset/<DATASET>/objects.parquet`` of every SETS entry and writes

* ``dataset/splits.parquet``: one row per image (dataset, row, object identity, split,
  split group, matching flags and partner, scaled OBSERVABLES/UNOBSERVABLES) — what train
  and analyse read;
* ``dataset/scaler.json``: mean and scale of every scaled field (never a pickle);
* ``dataset/prepare_summary.json`` (counts, matching, and the split table's fingerprint,
  which train and analyse record to notice a split that changed under a trained run) and
  ``plots/prepare/*.png`` (raw vs matched).

Splits are drawn per object from its identity (see ``splits.py``), so growing the test
fraction out of the unused remainder never moves an object between train and validation.
Scaling statistics of each field come from the training split of the first SETS entry
that lists it, and the same mean and scale are applied wherever the field appears.
"""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pandas as pd

import config
from scripts.fingerprint import table_fingerprint
from scripts.params import PrepareParams
from scripts.preprocessing.matching import match
from scripts.preprocessing.prepare_plots import plot_matching
from scripts.preprocessing.scaling import FieldScaler
from scripts.preprocessing.splits import assign_splits, default_group_key, leaking_groups
from scripts.stage import run_stage

log = logging.getLogger("prepare")

OBJECT = ("snapshot", "object_id")
IDENTITY_COLUMNS = ["dataset", "row", "object_id", "snapshot", "projection", "file"]


def read_objects(dataset_root: Path, names) -> dict[str, pd.DataFrame]:
    tables = {}
    for name in names:
        path = dataset_root / name / "objects.parquet"
        if not path.exists():
            raise FileNotFoundError(f"prepare.SETS names {name}, but {path} does not exist; run "
                                    "the extract stage for it (extract.LOAD true)")
        tables[name] = pd.read_parquet(path)
    return tables


def split_all(tables: dict[str, pd.DataFrame], params: PrepareParams) -> dict[str, pd.DataFrame]:
    out = {}
    for name, table in tables.items():
        frame = table[[c for c in IDENTITY_COLUMNS if c in table.columns]].copy()
        frame["split_group"] = default_group_key(table, params.root_descendant_split).to_numpy()
        frame["split"] = assign_splits(table, name, params.fractions(name), params.split_seed,
                                       group_key=None, root_descendant_split=params.root_descendant_split).to_numpy()
        leaks = leaking_groups(frame["split_group"], frame["split"])
        if leaks:  # cannot happen by construction; a guard against future edits
            raise RuntimeError(f"{name}: split groups in several splits: {leaks[:5]}")
        out[name] = frame
    return out


def match_all(tables, frames, params: PrepareParams, plots_dir: Path) -> list[dict]:
    """Match every target set to every source set; annotate ``frames`` in place."""
    summary = []
    for frame_name, frame in frames.items():
        frame["matched"] = pd.array([pd.NA] * len(frame), dtype="boolean")
        frame["matched_set"] = pd.array([None] * len(frame), dtype="string")
        frame["matched_to"] = pd.array([pd.NA] * len(frame), dtype="Int64")
        frame["matched_to_snapshot"] = pd.array([pd.NA] * len(frame), dtype="Int64")
    for source in params.matching_source_sets:
        for target in params.matching_target_sets:
            if source == target:
                continue
            s_fields = params.per_set("matching_fields", source)
            t_fields = params.per_set("matching_fields", target)
            for name, fields_ in ((source, s_fields), (target, t_fields)):
                missing = [f for f in fields_ if f not in tables[name].columns]
                if missing:
                    raise KeyError(f"prepare.MATCHING_FIELDS: dataset {name} has no column(s) "
                                   f"{missing}; add them to extract.FIELDS of {name} (its columns: "
                                   f"{sorted(tables[name].columns)})")
            result = match(tables[source], tables[target], s_fields, t_fields,
                           params.matching_uncertainties, params.split_seed, group=OBJECT,
                           source_name=source, target_name=target)
            t_rows = result.target_rows(tables[target])
            tf = frames[target]
            first = tf["matched_set"].isna()
            tf.loc[first, "matched_set"] = source
            tf.loc[first, "matched_to"] = t_rows.loc[first, "source_object_id"].astype("Int64")
            tf.loc[first, "matched_to_snapshot"] = t_rows.loc[first, "source_snapshot"].astype("Int64")
            already = tf["matched"].fillna(True)
            tf["matched"] = (already & t_rows["matched"].to_numpy()).astype("boolean")
            s_rows = result.source_rows(tables[source])
            sf = frames[source]
            sf["matched"] = (sf["matched"].fillna(False) | s_rows["matched"].to_numpy()).astype("boolean")
            summary.append({"source": source, "target": target, "fields_source": list(s_fields),
                            "fields_target": list(t_fields), "matched_objects": result.n_matched,
                            "target_objects": int(len(result.pairs)),
                            "matched_fraction": round(result.matched_fraction, 4)})
            objects_t = tables[target].drop_duplicates(list(OBJECT))
            objects_s = tables[source].drop_duplicates(list(OBJECT))
            keys_t = tf.loc[tf["matched"].fillna(False).to_numpy()].drop_duplicates(list(OBJECT))
            matched_t = objects_t.merge(keys_t[list(OBJECT)], on=list(OBJECT))
            partners = keys_t[["matched_to_snapshot", "matched_to"]].rename(
                columns={"matched_to_snapshot": "snapshot", "matched_to": "object_id"}).astype("int64")
            matched_s = objects_s.merge(partners, on=list(OBJECT))
            plot_matching(objects_s, objects_t, matched_s, matched_t, s_fields, t_fields,
                          plots_dir, source_name=source, target_name=target, seed=params.split_seed)
    return summary


def scale_all(tables, frames, params: PrepareParams) -> dict:
    """Standardise OBSERVABLES and UNOBSERVABLES; returns the scaler JSON content.

    Each field is fitted on the training split of the first SETS entry that lists it
    (for the usual case, the observed set for observables and the first simulation for
    unobservables), then applied to every set that lists it, so a field has one scale
    across datasets.
    """
    fitted: dict[str, dict] = {}
    scalers: dict[str, FieldScaler] = {}
    for kind in ("observables", "unobservables"):
        for name in params.set_names:
            own = params.per_set(kind, name) or ()
            missing = [f for f in own if f not in tables[name].columns]
            if missing:
                raise KeyError(f"prepare.{kind.upper()}: dataset {name} has no column(s) {missing}; "
                               f"add them to extract.FIELDS of {name}")
            new = [f for f in own if f not in fitted]
            if not new:
                continue
            train = tables[name][frames[name]["split"].to_numpy() == "train"]
            if not len(train):
                raise ValueError(f"prepare.SETS: the training split of {name} is empty; scaling "
                                 f"{new} needs it")
            scaler = FieldScaler().fit(train, new, dataset=name)
            for f in new:
                scalers[f] = scaler
                fitted[f] = {"kind": kind, "fitted_on": name, "mean": scaler.mean_[f],
                             "scale": scaler.scale_[f], "n": scaler.n_[f]}
    for name in params.set_names:
        for kind in ("observables", "unobservables"):
            for f in params.per_set(kind, name) or ():
                scaled = scalers[f].transform(tables[name][[f]], dataset=name, fields=[f])
                frames[name][f + scalers[f].suffix] = scaled[f + scalers[f].suffix].to_numpy()
    return {"ddof": FieldScaler.ddof, "fields": fitted}


def run(params: PrepareParams, dataset_root: Path, plots_dir: Path) -> pd.DataFrame:
    tables = read_objects(dataset_root, params.set_names)
    frames = split_all(tables, params)
    plots_dir.mkdir(parents=True, exist_ok=True)
    summary = match_all(tables, frames, params, plots_dir)
    scalers = scale_all(tables, frames, params)
    splits = pd.concat(frames.values(), ignore_index=True)
    out = dataset_root / "splits.parquet"
    tmp = out.with_suffix(".tmp")
    splits.to_parquet(tmp, index=False)
    tmp.replace(out)
    (dataset_root / "scaler.json").write_text(json.dumps(scalers, indent=1))
    counts = splits.groupby(["dataset", "split"]).size().unstack(fill_value=0)
    objects = splits.drop_duplicates(["dataset", "split_group"]).groupby(["dataset", "split"]).size()
    fingerprint = table_fingerprint(splits)
    (dataset_root / "prepare_summary.json").write_text(json.dumps({
        "splits_fingerprint": fingerprint,
        "images": {d: row.to_dict() for d, row in counts.iterrows()},
        "split_groups": {f"{d}/{s}": int(n) for (d, s), n in objects.items()},
        "matching": summary}, indent=1, default=int))
    log.info("images per dataset and split (split fingerprint %s):\n%s", fingerprint, counts.to_string())
    for entry in summary:
        log.info("matched %s → %s: %d of %d objects (%.1f%%)", entry["target"], entry["source"],
                 entry["matched_objects"], entry["target_objects"], 100 * entry["matched_fraction"])
    return splits


def main(argv=None) -> int:
    return run_stage("Prepare stage: splits, matching, scaling.",
                     lambda params: run(params.prepare, config.dataset_path, config.plots_path / "prepare"),
                     argv, log)


if __name__ == "__main__":
    sys.exit(main())
