"""Posterior stage: calibrated posteriors of the UNOBSERVABLES from the representation.

``python -m scripts.infer [--params P]``

The successor of the original pipeline's cINN. After the analyse stage, for the run
``infer.RUN_NAME`` (default ``analyse.RUN_NAME``):

1. reads ``reports/<run>/representation.parquet`` and prepare's ``dataset/splits.parquet``
   and ``scaler.json``; conditions = whitened principal components of the representation +
   the OBSERVABLES, targets = the UNOBSERVABLES, in prepare's scaled units (see
   :mod:`scripts.posterior.data` for the positional mapping of an observed set's
   observables onto the simulated ones);
2. trains a conditional masked autoregressive flow (:mod:`scripts.posterior.flow`) on the
   train split of ``infer.TRAIN_SETS``, early stopping on their validation split, with
   checkpoints in ``models/<run>/posterior/`` (a killed run resumes to the same flow);
   rows with NaN in a condition or a target are left out, counted and listed
   (``posterior_excluded.parquet``);
3. draws ``NUM_SAMPLES`` posterior samples for every embedded image of ``infer.INFER_SETS``
   (observed sets included; NaN conditions give NaN posteriors, counted) and writes
   ``posterior_samples.h5`` (physical units) and ``posterior_summary.parquet`` (median,
   16/84 and 2.5/97.5 percentiles, modes by peak detection);
4. measures the calibration on the simulated sets' test split (coverage of the 68 % and
   95 % intervals and the coverage curve, PIT histogram and KS p-value, TARP, R² and bias
   of the median, prior/posterior width ratio) into ``metrics.json`` under
   ``posterior.<DATASET>.<FIELD>``, and writes ``posterior_report.html`` (+ ``.md``) with
   the coverage curves, PIT histograms and corner plots of observed galaxies with their
   simulated analogues' true values.

Everything goes to ``reports/<run>/`` and to the experiment tracker.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

import config
from scripts.analysis.report import Section, flat_metrics, write_report
from scripts.analysis.representation import (REPRESENTATION_FILE, read_representation,
                                             representation_metadata)
from scripts.fingerprint import file_fingerprint
from scripts.params import Params
from scripts.posterior.data import (RepresentationPCA, TargetSpace, Units, observable_columns,
                                    observables_in_training_scale, training_fields)
from scripts.preprocessing.scaling import SUFFIX, FieldScaler
from scripts.posterior.outputs import (COVERAGE_TOLERANCE, IDENTITY, calibrate, corner_figures,
                                       headline_text, merge_metrics, summarise, write_samples)
from scripts.posterior.recalibration import quantile_average
from scripts.stage import run_stage

log = logging.getLogger("infer")

SUMMARY_FILE = "posterior_summary.parquet"
SAMPLES_FILE = "posterior_samples.h5"
EXCLUDED_FILE = "posterior_excluded.parquet"
REPORT_STEM = "posterior_report"
POSTERIOR_DIR = "posterior"
RECALIBRATION_DIR = "recalibration"
SAMPLE_CHUNK = 256                   # rows per stateless seed of ConditionalFlow.sample
AVERAGE_BLOCK = 64 * SAMPLE_CHUNK    # rows per block of the fold flows' quantile average


# --------------------------------------------------------------------------- inputs
def resolve_sets(params: Params) -> tuple[list[str], list[str]]:
    """(training sets, inferred sets) with the defaults of the ``infer:`` section."""
    inf, an = params.infer, params.analyse
    train = list(inf.train_sets or an.simulated_sets)
    if not train:
        raise ValueError("infer.TRAIN_SETS is null and analyse.SIMULATED_SETS is empty: name "
                         "the simulated sets the flow learns from")
    for name in train:
        if not params.prepare.per_set("unobservables", name):
            raise ValueError(f"infer: training set {name} has no prepare.UNOBSERVABLES")
    infer = list(inf.infer_sets or dict.fromkeys([*an.observed_sets, *an.simulated_sets, *train]))
    return train, infer


def build_table(params: Params, dataset_root: Path, report_dir: Path, train_sets, infer_sets):
    """Rows of the representation table of the inferred sets with their conditions and
    targets: returns (meta, vectors, observables, targets, obs_fields, target_fields, scaler)."""
    rep = read_representation(report_dir / REPRESENTATION_FILE)
    missing = [n for n in set(train_sets) | set(infer_sets) if not (rep.meta["dataset"] == n).any()]
    if missing:
        raise ValueError(f"infer: {report_dir / REPRESENTATION_FILE} holds no image of {missing}; "
                         "list them in analyse.OBSERVED_SETS/SIMULATED_SETS (or prepare.SETS) "
                         "and rerun the analyse stage")
    rep = rep.subset(rep.meta["dataset"].isin(infer_sets).to_numpy())
    splits_path = dataset_root / "splits.parquet"
    if not splits_path.exists():
        raise FileNotFoundError(f"{splits_path} does not exist; run the prepare stage first")
    splits = pd.read_parquet(splits_path)
    scaler = FieldScaler.from_json(dataset_root / "scaler.json")
    obs_fields, target_fields = training_fields(params.prepare, train_sets)
    keyed = splits.set_index(["dataset", "row"])
    index = pd.MultiIndex.from_frame(rep.meta[["dataset", "row"]])
    joined = keyed.reindex(index).reset_index(drop=True)
    observables = np.full((len(rep.meta), len(obs_fields)), np.nan)
    targets = np.full((len(rep.meta), len(target_fields)), np.nan)
    datasets = rep.meta["dataset"].to_numpy()
    for name in infer_sets:
        sel = datasets == name
        own = observable_columns(params.prepare, name, obs_fields, splits.columns)
        observables[sel] = observables_in_training_scale(joined[sel], scaler, own, obs_fields)
        unobs = params.prepare.per_set("unobservables", name) or ()
        for j, f in enumerate(target_fields):
            if f in unobs and f + SUFFIX in joined.columns:
                targets[sel, j] = joined.loc[sel, f + SUFFIX].to_numpy(np.float64)
    meta = rep.meta.copy()
    meta["split_group"] = (joined["split_group"].astype(str).to_numpy()
                           if "split_group" in joined.columns else meta["object_id"].astype(str))
    return meta, rep.vectors, observables, targets, obs_fields, target_fields, scaler


def excluded_rows(meta: pd.DataFrame, cond_ok, target_ok, mask) -> pd.DataFrame:
    """The rows of ``mask`` left out of training/validation, with the reason."""
    bad = mask & ~(cond_ok & target_ok)
    out = meta.loc[bad, [c for c in IDENTITY if c in meta.columns]].copy()
    reason = np.where(~cond_ok[bad] & ~target_ok[bad], "condition and target",
                      np.where(~cond_ok[bad], "condition", "target"))
    out["nan_in"] = reason
    return out.reset_index(drop=True)


def config_fingerprint(params: Params, report_dir: Path, n_train: int) -> str:
    """What the flow's checkpoints depend on: the representation (encoder and splits), the
    flow's parameters and the training rows. A change starts training afresh."""
    meta = representation_metadata(report_dir / REPRESENTATION_FILE)
    inf = params.to_dict()["infer"]
    keep = {k: v for k, v in inf.items() if k not in ("NUM_SAMPLES", "MAX_MODES", "PEAK_MIN_HEIGHT",
                                                       "CORNER_OBJECTS", "INFER_SETS", "EPOCHS",
                                                       "CHECKPOINT_EVERY", "NUM_WORKERS")}
    blob = json.dumps({"representation": meta, "infer": keep, "n_train": n_train,
                       "prepare": params.to_dict()["prepare"]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def prepare_checkpoints(ckpt_root: Path, fingerprint: str) -> Path:
    """``models/<run>/posterior/`` for this configuration; stale checkpoints are removed."""
    stamp = ckpt_root / "config.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") != fingerprint:
        log.warning("%s holds a flow of another configuration or representation; training "
                    "afresh", ckpt_root)
        shutil.rmtree(ckpt_root)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"fingerprint": fingerprint}))
    return ckpt_root / "checkpoints"


# --------------------------------------------------------------------------- flow
def train_folds_in_workers(inf, condition, targets, folds) -> None:
    """With ``infer.NUM_WORKERS`` > 1, train the fold flows side by side in that many
    processes; each leaves its final checkpoint, which
    :func:`~scripts.posterior.training.fit_posterior` then resumes in this process. A fold flow is a small network whose steps leave most of a core idle, so
    folds in parallel finish sooner; the flows are those of the sequential loop (same seeds,
    rows and checkpoints; a test compares them on the CPU; on a GPU machine the workers
    compute on the CPU, so their float rounding may differ from a sequential GPU run)."""
    workers = min(inf.num_workers, inf.recalibration_folds)
    if workers <= 1:
        return
    from joblib import Parallel, delayed
    from joblib.externals.loky import get_reusable_executor

    from scripts.posterior.training import train_fold

    log.info("training %d fold flows in %d worker processes", inf.recalibration_folds, workers)
    # fresh workers: loky restarts a reused worker, with a warning, once its memory grew by
    # 300 MB since its first task, as importing TensorFlow does in a worker that ran an
    # earlier stage's tasks (scripts.demo runs the stages in one process)
    get_reusable_executor().shutdown(wait=True)
    best = Parallel(n_jobs=workers, backend="loky")(
        delayed(train_fold)(inf, condition, targets, fit_rows, val_rows, ckpt)
        for fit_rows, val_rows, _, ckpt in folds)
    log.info("fold flows trained; best epochs %s", best)


def cross_fit_recalibration(inf, condition, targets, train, val, groups, root: Path):
    """The quantile recalibration map from held-out PIT values of ``RECALIBRATION_FOLDS``
    flows, each trained on the other folds of the train and validation objects
    (:mod:`scripts.posterior.recalibration`); the map is fitted on the PIT values of the
    held-out rows of ``RECALIBRATION_SPLITS`` only. Returns (map, the fold flows, summary
    for metrics.json)."""
    from scripts.posterior import calibration as cal
    from scripts.posterior.recalibration import QuantileRecalibration, fold_of_groups
    from scripts.posterior.training import fit_posterior

    usable = train | val
    mapped = np.zeros(len(targets), bool)    # rows whose held-out PIT values fit the map
    if "train" in inf.recalibration_splits:
        mapped |= train
    if "validation" in inf.recalibration_splits:
        mapped |= val
    fold = np.full(len(targets), -1)
    fold[usable] = fold_of_groups(groups[usable], inf.recalibration_folds, inf.seed)
    folds = []  # (training rows, validation rows, held-out rows, checkpoints) of each fold flow
    for k in range(inf.recalibration_folds):
        held = fold == k
        rest = usable & ~held
        if not (train & rest).any() or not held.any():
            raise ValueError(f"infer.RECALIBRATION_FOLDS={inf.recalibration_folds}: fold {k} "
                             "leaves no training or no held-out object; use fewer folds")
        log.info("recalibration fold %d/%d: flow on %d rows, PIT of %d held-out rows", k + 1,
                 inf.recalibration_folds, int((train & rest).sum()), int(held.sum()))
        folds.append((train & rest, val & rest, held, root / f"fold{k}" / "checkpoints"))
    train_folds_in_workers(inf, condition, targets, folds)
    pits, posteriors = [], []
    for k, (fit_rows, val_rows, held, ckpt) in enumerate(folds):
        # resumes the fold's finished checkpoint when a worker trained it
        fitted = fit_posterior(inf, condition, targets, fit_rows, val_rows, ckpt)
        posteriors.append(fitted)
        samples = fitted.sample(condition[held], inf.num_samples, inf.seed + 1 + k)
        kept = mapped[held]
        pits.append(np.stack([cal.pit(samples[:, :, j], targets[held, j], seed=inf.seed + k)
                              for j in range(targets.shape[1])], axis=1)[kept])
    pits = np.concatenate(pits)
    log.info("recalibration map from %d held-out PIT values (%s)", len(pits),
             " + ".join(inf.recalibration_splits))
    recalibration = QuantileRecalibration().fit(pits)
    for j in recalibration.saturated(inf.num_samples):
        log.warning("recalibration: held-out truths of target %d fall outside all %d samples so "
                    "often that its 95 %% interval cannot be widened enough; raise "
                    "infer.NUM_SAMPLES", j, inf.num_samples)
    info = {"method": "quantile", "folds": inf.recalibration_folds,
            "splits": list(inf.recalibration_splits),
            "held_out_pit_ks_p": [cal.pit_ks_pvalue(p) for p in pits.T],
            **recalibration.summary()}
    return recalibration, posteriors, info


def ensemble_average(samples, fold_posteriors, condition, inf) -> np.ndarray:
    """Quantile average of the stage flow's ``samples`` (N, S, D) and the fold flows' samples
    of the same rows, block by block so that memory stays that of one block of members."""
    out = np.empty(samples.shape, np.float32)
    for start in range(0, len(samples), AVERAGE_BLOCK):
        stop = min(start + AVERAGE_BLOCK, len(samples))
        members = [samples[start:stop]] + [
            f.sample(condition[start:stop], inf.num_samples, inf.seed + 1 + k,
                     first_chunk=start // SAMPLE_CHUNK) for k, f in enumerate(fold_posteriors)]
        out[start:stop] = quantile_average(members)
    return out


# --------------------------------------------------------------------------- stage
def run(params: Params, dataset_root: Path, models_root: Path, reports_root: Path,
        tracker=None, epoch_callback=None) -> dict:
    """Run the whole stage; returns the ``posterior`` metrics (also in metrics.json)."""
    from scripts.posterior.plots import plot_coverage, plot_pit
    from scripts.posterior.training import fit_posterior
    from scripts.tracking import NullTracker

    inf = params.infer
    tracker = tracker or NullTracker()
    seconds = {}
    report_dir = Path(reports_root) / inf.run_name
    plots_dir = report_dir / "plots" / "posterior"
    train_sets, infer_sets = resolve_sets(params)
    meta, vectors, observables, targets_scaled, obs_fields, fields, scaler = build_table(
        params, Path(dataset_root), report_dir, train_sets, infer_sets)
    datasets, split = meta["dataset"].to_numpy(), meta["split"].to_numpy()
    units = Units(scaler)
    truth_phys = units.physical(targets_scaled, fields)
    space = TargetSpace(fields, units, inf.log_fields).fit(
        truth_phys[np.isin(datasets, train_sets) & (split == "train")])
    targets = space.to_flow(truth_phys)     # the flow's space: scaled, log10 for LOG_FIELDS
    groups = (meta["dataset"] + ":" + meta["split_group"]).to_numpy()
    in_train_sets = np.isin(datasets, train_sets)

    pca = RepresentationPCA(inf.representation_components).fit(
        vectors[in_train_sets & (split == "train")])
    condition = np.concatenate([pca.transform(vectors), observables], axis=1).astype(np.float32)
    cond_ok = np.isfinite(condition).all(axis=1)
    target_ok = np.isfinite(targets).all(axis=1)
    fit_rows = in_train_sets & np.isin(split, ["train", "validation"])
    excluded = excluded_rows(meta, cond_ok, target_ok, fit_rows)
    report_dir.mkdir(parents=True, exist_ok=True)
    plots_dir.mkdir(parents=True, exist_ok=True)
    for stale in plots_dir.glob("*.png"):       # figures of an earlier run must not linger
        stale.unlink()
    excluded.to_parquet(report_dir / EXCLUDED_FILE, index=False)
    if len(excluded):
        log.warning("%d training/validation row(s) with NaN left out (listed in %s): %s",
                    len(excluded), report_dir / EXCLUDED_FILE,
                    ", ".join(f"{r.dataset}:{r.row}" for r in excluded.head(10).itertuples())
                    + (" …" if len(excluded) > 10 else ""))
    train = fit_rows & (split == "train") & cond_ok & target_ok
    val = fit_rows & (split == "validation") & cond_ok & target_ok
    if train.sum() < 2:
        raise ValueError(f"infer: {int(train.sum())} usable training row(s) in {train_sets}; the "
                         "flow needs more (check the train split fractions and NaN values)")
    log.info("flow p(%s | %d representation components + %s): %d training, %d validation rows "
             "(%s), condition dim %d", fields, pca.components_.shape[0], obs_fields, train.sum(),
             val.sum(), ", ".join(train_sets), condition.shape[1])

    t0 = time.perf_counter()
    fingerprint = config_fingerprint(params, report_dir, int(train.sum()))
    ckpt_dir = prepare_checkpoints(Path(models_root) / inf.run_name / POSTERIOR_DIR, fingerprint)
    posterior = fit_posterior(inf, condition, targets, train, val, ckpt_dir, tracker,
                              epoch_callback)
    fit = posterior.fit
    seconds["training"] = round(time.perf_counter() - t0, 2)
    recalibration, recal_info = None, {"method": inf.recalibration}
    if inf.recalibration == "quantile":
        t2 = time.perf_counter()
        recalibration, fold_posteriors, recal_info = cross_fit_recalibration(
            inf, condition, targets, train, val, groups, ckpt_dir.parent / RECALIBRATION_DIR)
        seconds["recalibration"] = round(time.perf_counter() - t2, 2)

    t1 = time.perf_counter()
    samples_scaled = np.full((len(meta), inf.num_samples, len(fields)), np.nan, np.float32)
    samples_scaled[cond_ok] = posterior.sample(condition[cond_ok], inf.num_samples, inf.seed)
    if recalibration is not None:
        raw_scaled = np.full_like(samples_scaled, np.nan)
        raw_scaled[cond_ok] = ensemble_average(samples_scaled[cond_ok], fold_posteriors,
                                               condition[cond_ok], inf)
        for start in range(0, len(raw_scaled), AVERAGE_BLOCK):
            block = slice(start, start + AVERAGE_BLOCK)
            samples_scaled[block] = recalibration.transform(raw_scaled[block])
        raw_calib, _ = calibrate(meta, space.to_physical(raw_scaled), truth_phys, raw_scaled,
                                 targets, truth_phys[train], fields, infer_sets, inf.seed,
                                 groups=groups)
        recal_info["before_map"] = {d: {f: {k: m[k] for k in ("coverage_68", "coverage_95",
                                                           "pit_ks_p", "r2_median")}
                                        for f, m in fs.items()} for d, fs in raw_calib.items()}
    n_nan = {name: int((~cond_ok & (datasets == name)).sum()) for name in infer_sets}
    if any(n_nan.values()):
        log.warning("NaN in the condition of %s image(s): their posteriors are NaN",
                    {k: v for k, v in n_nan.items() if v})
    samples_phys = space.to_physical(samples_scaled)
    seconds["sampling"] = round(time.perf_counter() - t1, 2)

    summary = summarise(meta, samples_phys, truth_phys, fields, inf)
    summary.to_parquet(report_dir / SUMMARY_FILE, index=False)
    write_samples(report_dir / SAMPLES_FILE, meta, samples_phys, fields, inf)

    prior_phys = truth_phys[train]
    calib, tarp = calibrate(meta, samples_phys, truth_phys, samples_scaled, targets, prior_phys,
                            fields, infer_sets, inf.seed, groups=groups)
    if not calib:
        log.warning("no test-split image with known UNOBSERVABLES: no calibration measured")
    extra = {
        "run_name": inf.run_name, "train_sets": train_sets, "infer_sets": infer_sets,
        # an analyse rerun keeps these numbers only while they describe its representation
        "representation_fingerprint": file_fingerprint(report_dir / REPRESENTATION_FILE),
        "fields": fields, "observables": obs_fields,
        "representation_components": int(pca.components_.shape[0]),
        "pca_explained_variance_ratio": pca.explained_variance_ratio_.tolist(),
        "rows": {"train": int(train.sum()), "validation": int(val.sum()),
                 "inferred": int(len(meta))},
        "excluded_from_training": {"count": int(len(excluded)),
                                   "rows": excluded.head(100).to_dict("records")},
        "nan_condition_at_inference": n_nan,
        "tarp": tarp, "coverage_tolerance": COVERAGE_TOLERANCE,
        "recalibration": recal_info,
        "training": {k: v for k, v in fit.items() if k != "history"},
        "seconds": seconds,
    }
    merge_metrics(report_dir / "metrics.json", calib, extra)

    # figures and the report page
    figures = []
    if calib:
        figures.append(("Coverage of central credible intervals (test split) and TARP",
                        plot_coverage(calib, tarp, plots_dir / "coverage.png")))
        figures.append(("PIT histograms (test split)", plot_pit(calib, plots_dir / "pit.png")))
    lookup = {(d, int(r)): truth_phys[i] for i, (d, r) in
              enumerate(zip(meta["dataset"], meta["row"])) if np.isfinite(truth_phys[i]).all()}
    corners = corner_figures(meta, samples_phys, lookup, fields,
                             [o for o in params.analyse.observed_sets if o in infer_sets],
                             report_dir, plots_dir, inf.corner_objects, inf.seed)
    def shown(value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]" if isinstance(value, (tuple, list)) else value

    table = pd.DataFrame([{"dataset": ds, "field": f, **{k: shown(m[k]) for k in (
        "n", "coverage_68", "coverage_68_interval", "coverage_95", "coverage_95_interval",
        "pit_ks_p", "r2_median", "bias_median", "width_ratio", "calibrated")}}
        for ds, fs in calib.items() for f, m in fs.items()])
    sections = [
        Section("Posterior calibration", [
            f"Conditional masked autoregressive flow ({inf.num_coupling_layers} layers, MADE "
            f"{list(inf.hidden_units)}, clamp {inf.clamp}, conditioning network "
            f"{list(inf.condition_embedding)}"
            f"{'; on the residuals of a ridge mean, LINEAR_MEAN' if inf.linear_mean else ''}) "
            f"of {fields} given {pca.components_.shape[0]} "
            f"principal components of the representation and the observables {obs_fields}; "
            f"trained on the train split of {train_sets} ({int(train.sum())} images, early "
            f"stopping on {int(val.sum())} validation images, best epoch {fit['best_epoch']})"
            + (f"; recalibrated (RECALIBRATION: quantile): the quantile average of this flow and "
               f"{inf.recalibration_folds} fold flows, each trained on the other folds of the "
               "train and validation objects, mapped by the distribution of the fold flows' "
               "held-out PIT values (Kuleshov et al. 2018)." if recalibration is not None
               else "."),
            "Measured on the test split: coverage = share of true values inside the central "
            "credible interval (nominal 0.68 / 0.95), with a 90 % bootstrap interval that "
            "resamples whole objects (prepare's split_group); PIT = rank of the truth among the "
            f"{inf.num_samples} samples (uniform when calibrated); TARP = joint coverage of "
            "Lemos et al. (2023); width ratio = prior (training set) 68 % width over the "
            "median posterior 68 % width.",
            f"Rows left out of training for NaN: {len(excluded)}; NaN conditions at inference: "
            f"{sum(n_nan.values())}."],
            tables=[("Calibration per dataset and field", table)] if len(table) else [],
            figures=figures),
        Section("Observed galaxies", ["Posterior samples of a few observed images; red: the "
                                      "true values of their simulated analogues "
                                      "(analogues.parquet)."], figures=corners),
    ]
    write_report(report_dir, f"Posterior report: run {inf.run_name}", sections,
                 {"infer": params.to_dict()["infer"]}, stem=REPORT_STEM)
    tracker.log_params({"infer": params.to_dict()["infer"]})
    tracker.log_metrics(flat_metrics({"posterior": {d: {f: {k: v for k, v in m.items()
                                                            if not isinstance(v, list)}
                                                        for f, m in fs.items()}
                                                    for d, fs in calib.items()}}),
                        step=fit["epochs"])
    for caption, fig in figures:            # TensorBoard keeps no artifacts: the figures as images
        tracker.log_images(f"posterior/{Path(fig).stem}", _png(fig), step=fit["epochs"])
    for path in [plots_dir, report_dir / f"{REPORT_STEM}.html", report_dir / SUMMARY_FILE]:
        if path.is_dir():
            tracker.log_artifacts(path, "infer/plots")
        elif path.exists():
            tracker.log_artifact(path, "infer")
    if calib:
        log.info("posterior calibration (test split):\n%s", headline_text(calib))
    log.info("posterior outputs in %s (%s, %s, %s.html)", report_dir, SUMMARY_FILE, SAMPLES_FILE,
             REPORT_STEM)
    return {"posterior": calib, "posterior_flow": extra, "history": fit["history"]}


def _png(path: Path) -> np.ndarray:
    """A PNG as a (1, H, W, 3) float image batch for the tracker."""
    import matplotlib.image

    return matplotlib.image.imread(path)[None, :, :, :3].astype(np.float32)


def make_stage_tracker(params: Params):
    from scripts.tracking import make_tracker_from_params

    tracker = make_tracker_from_params(params.tracking, run_name=f"infer-{params.infer.run_name}")
    tracker.set_tags({"stage": "infer", "run": params.infer.run_name})
    return tracker


def main(argv=None) -> int:
    logging.getLogger("absl").setLevel(logging.WARNING)   # one line per checkpoint otherwise

    def body(params: Params) -> None:
        with make_stage_tracker(params) as tracker:
            run(params, config.dataset_path, config.models_path, config.reports_path, tracker=tracker)

    return run_stage("Posterior stage: conditional flow, posterior samples, calibration.", body,
                     argv, log)


if __name__ == "__main__":
    sys.exit(main())
