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
(default: the test split, which the encoder never trained on), and of at most
``analyse.EVALUATION_MAX_OBJECTS`` objects per dataset (a seeded subsample above it); the
maps and analogues show every embedded split. The report names the splits of every number.

The stage holds the identity table of every row and the map coordinates, not the vectors:
the maps and analogues stream them from ``representation.parquet`` chunk by chunk
(:class:`~scripts.analysis.representation.VectorSource`), and only the evaluation rows are
read whole, so memory at survey scale is bounded by the evaluation cap.

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

import config
from scripts.analysis.inputs import (ImageAccess, attach_fields, crop_padding, evaluation_rows,
                                     feature_sets)
from scripts.analysis.interactive_map import INTERACTIVE_MAP, write_interactive_map
from scripts.analysis.report import flat_metrics, kept_posterior, write_metrics, write_report
from scripts.analysis.report_sections import build_sections
from scripts.analysis.representation import (REPRESENTATION_FILE, Embedder, Representation,
                                             VectorSource, compute_representations, read_meta,
                                             rows_to_embed, representation_metadata, select_datasets)
from scripts.analysis.steps import (step_analogues, step_drivers, step_maps, step_permanence,
                                    step_realism)
from scripts.fingerprint import (check_splits_unchanged, encoder_fingerprint, file_fingerprint,
                                 read_run_fingerprints, splits_fingerprint)
from scripts.params import Params
from scripts.stage import run_stage

log = logging.getLogger("analyse")

#: Images sent to the Embedding Projector (seeded subsample).
PROJECTOR_ROWS = 1000


@contextmanager
def _timed(name: str, seconds: dict):
    start = time.perf_counter()
    log.info("%s …", name)
    yield
    seconds[name] = round(time.perf_counter() - start, 2)
    log.info("%s done in %.1f s", name, seconds[name])


def _log_projector(tracker, source: VectorSource, table: pd.DataFrame, images: ImageAccess, seed: int):
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(table), size=min(PROJECTOR_ROWS, len(table)), replace=False))
    meta = table.iloc[take].reset_index(drop=True)
    thumbs = images.display(meta["dataset"].to_numpy(), meta["row"].to_numpy())
    tracker.log_embedding(source.take(take), meta, thumbs, name="representation")


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
    meta = read_meta(rep_path)          # identity rows only; the vectors stay on disk
    source = VectorSource(rep_path)
    empty = [n for n in observed + simulated if not (meta["dataset"] == n).any()]
    if empty:
        raise ValueError(f"no image of dataset(s) {empty} in analyse.SPLITS {list(an.splits)}; "
                         "check prepare.SETS fractions")
    table, fields_by = attach_fields(meta, params, dataset_root)
    groups = splits.set_index(["dataset", "row"])["split_group"]
    table["split_group"] = groups.reindex(pd.MultiIndex.from_frame(meta[["dataset", "row"]])).to_numpy()
    counts = meta.groupby(["dataset", "split"], sort=False).size().unstack(fill_value=0)
    counts = counts.reindex(columns=[s for s in an.splits if s in counts.columns]).reset_index()
    padding = crop_padding(meta, dataset_root)
    held_out = meta["split"].isin(list(an.evaluation_splits)).to_numpy()
    evaluated, eval_subsample = evaluation_rows(meta["dataset"].to_numpy(), table["split_group"],
                                                held_out, an.evaluation_max_objects, an.seed)
    rep_eval = Representation(meta[evaluated].reset_index(drop=True),
                              source.take(np.flatnonzero(evaluated)))
    table_eval = table[evaluated].reset_index(drop=True)
    missing = [n for n in observed + simulated if not (rep_eval.meta["dataset"] == n).any()]
    if missing:
        log.warning("no image of %s in analyse.EVALUATION_SPLITS %s: no headline numbers for them; "
                    "widen the split fractions in prepare.SETS", missing, list(an.evaluation_splits))

    images = ImageAccess(dataset_root, kept, params)
    try:
        with _timed("maps", seconds):
            map_figs, map_metrics, coords = step_maps(source, meta, table, fields_by, params,
                                                      plots_dir, images, observed, simulated)
            coords.to_parquet(report_dir / "map_coordinates.parquet", index=False)
            write_interactive_map(coords, table, images, report_dir / INTERACTIVE_MAP,
                                  fields=[f for fs in fields_by.values() for f in fs], seed=an.seed)
        with _timed("analogues", seconds):
            if observed and simulated:
                analogues, analogue_metrics, ana_figs = step_analogues(
                    source, meta, params, observed, simulated, report_dir, plots_dir, images)
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
            umap_xy = coords[["umap_1", "umap_2"]].to_numpy()[evaluated]
            drivers, driver_metrics, drv_figs = step_drivers(rep_eval, table_eval, fields_by, params,
                                                             dataset_root, plots_dir, umap_xy,
                                                             driver_max_samples, sets, redshifts)
        with _timed("permanence", seconds):
            others = [n for n in kept if n not in observed]
            permanence, perm_metrics = step_permanence(rep_eval, others, an.seed, sets)
        with _timed("projector", seconds):
            _log_projector(tracker, source, table, images, an.seed)
    finally:
        images.close()

    metrics = {
        "run_name": an.run_name,
        "evaluation_splits": list(an.evaluation_splits),
        "evaluation_subsample": eval_subsample,
        "embedded_splits": list(an.splits),
        "fingerprints": {"encoder": encoder_fp, "splits": splits_fp,
                         "splits_at_training": trained_on, "splits_unchanged": splits_ok},
        "representation_dim": int(source.dim),
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
    sections = build_sections(params, counts, skipped, source.dim, figures, realism, drivers,
                              permanence, analogues, analogue_metrics, seconds, padding,
                              eval_subsample)
    metrics.update(kept_posterior(report_dir / "metrics.json", file_fingerprint(rep_path)))
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
