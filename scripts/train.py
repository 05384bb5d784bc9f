"""Train stage: contrastive (SimCLR) pre-training of the encoder on the prepared sets.

``python -m scripts.train [--params P] [--dataset-path D] [--models-path M]``

Reads ``dataset/splits.parquet`` and ``dataset/<DATASET>/images.h5`` of ``train.TRAIN_SETS``
(all ``prepare.SETS`` when null) and writes ``models/<RUN_NAME>/``:

- ``checkpoints/`` (every ``train.CHECKPOINT_EVERY`` steps; rerunning the same command
  after an interruption, even ``kill -9``, resumes from the last one and ends with the same
  weights as an uninterrupted run);
- at the end: ``encoder.keras`` (the encoder), ``saved_model/`` (serving endpoint
  ``serve``: raw images → representation, normalisation included), ``normalisation.json``,
  ``train_summary.json`` (steps, epochs, validation loss/accuracy, images/s, why it
  stopped), ``params_used.yaml`` and ``fingerprints.json`` (of the split table trained
  on; a rerun, and analyse, warn when the split table changed since; and of the extract
  settings of its images: a rerun on images extracted another way stops, exit status 2);
- metrics and parameters to the ``tracking.BACKENDS`` (MLflow, TensorBoard).

Exit status: 0 finished (all epochs, or early stopping), 2 bad parameters or missing
inputs, 3 stopped by ``train.MAX_RUNTIME_SECONDS`` (checkpoint written: rerun to go on),
4 the loss became NaN/infinite (the last good checkpoint is kept).

The training loop itself is :class:`scripts.model.trainer.Trainer`.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import yaml

import config
from scripts.fingerprint import (check_splits_unchanged, check_stores_unchanged,
                                 read_run_fingerprints, splits_fingerprint, stores_fingerprint,
                                 update_run_fingerprints)
from scripts.params import Params, ParamsError, add_params_argument, load_params
from scripts.stage import configure_logging

log = logging.getLogger("train")

EXIT_OK = 0
EXIT_INPUT = 2
EXIT_RUNTIME = 3
EXIT_NON_FINITE = 4
PARAMS_USED = "params_used.yaml"
SPLITS_FILE = "splits.parquet"
IMAGES_FILE = "images.h5"


def training_sets(params: Params) -> tuple[str, ...]:
    """Datasets trained on: ``train.TRAIN_SETS`` or, when null, every ``prepare.SETS`` entry."""
    return tuple(params.train.train_sets or params.prepare.set_names)


def read_inputs(params: Params, dataset_path: Path):
    """The splits rows of the training sets and ``{dataset: images.h5}``; errors name the
    missing file and the stage that writes it."""
    import pandas as pd

    sets = training_sets(params)
    splits_path = dataset_path / SPLITS_FILE
    if not splits_path.exists():
        raise FileNotFoundError(f"{splits_path} does not exist; run the prepare stage "
                                "(python -m scripts.preprocessing.prepare) first")
    splits = pd.read_parquet(splits_path)
    absent = [s for s in sets if s not in set(splits["dataset"])]
    if absent:
        raise FileNotFoundError(f"{splits_path} has no rows of dataset(s) {absent} named in "
                                "train.TRAIN_SETS / prepare.SETS; rerun the prepare stage")
    stores = {}
    for name in sets:
        path = dataset_path / name / IMAGES_FILE
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; run the extract stage for {name}")
        stores[name] = path
    return splits[splits["dataset"].isin(sets)].reset_index(drop=True), stores


def record_params(params: Params, run_dir: Path) -> None:
    """Write ``params_used.yaml``; on a resumed run, warn about changed ``train`` keys."""
    path = run_dir / PARAMS_USED
    current = params.to_dict()
    if path.exists():
        before = (yaml.safe_load(path.read_text()) or {}).get("train", {})
        changed = sorted(k for k in set(before) | set(current["train"])
                         if before.get(k) != current["train"].get(k))
        if changed:
            log.warning("resuming %s with changed train keys %s (was %s); delete %s or pick a new "
                        "train.RUN_NAME for a fresh run", run_dir, changed,
                        {k: before.get(k) for k in changed}, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(current, sort_keys=False))


def run_training(params: Params, dataset_path: Path, models_path: Path, tracker=None,
                 strategy=None, progress: bool = True,
                 step_callback: Callable[[int, dict], None] | None = None,
                 deterministic: bool = False, augment_on: str = "input",
                 export: bool = True) -> dict[str, Any]:
    """Train (or resume) ``models_path/<RUN_NAME>`` and export it when finished (``export``).

    Returns the summary written to ``train_summary.json``. Raises
    :class:`scripts.model.train_errors.NonFiniteLossError` after recording it in the summary.
    """
    from scripts.model.export import write_summary
    from scripts.model.train_errors import NonFiniteLossError, TrainInputError
    from scripts.model.trainer import Trainer

    run_dir = Path(models_path) / params.train.run_name
    table, stores = read_inputs(params, Path(dataset_path))
    splits_fp = splits_fingerprint(dataset_path)
    stores_fp = stores_fingerprint(dataset_path, sorted(table["dataset"].unique()))
    recorded_fps = read_run_fingerprints(run_dir)
    try:
        check_stores_unchanged(recorded_fps.get("stores"), stores_fp, run_dir)
    except ValueError as err:
        raise TrainInputError(str(err)) from None
    trainer = Trainer(params.train, stores, table, run_dir, tracker=tracker, strategy=strategy,
                      progress=progress, step_callback=step_callback, deterministic=deterministic,
                      augment_on=augment_on)
    if trainer.chief:
        record_params(params, run_dir)
        recorded = recorded_fps.get("splits")
        check_splits_unchanged(recorded, splits_fp, f"run {run_dir.name} started training")
        if recorded is None:
            update_run_fingerprints(run_dir, splits=splits_fp)
        update_run_fingerprints(run_dir, stores=stores_fp)
    try:
        summary = trainer.fit()
    except NonFiniteLossError as err:
        if trainer.chief:
            write_summary(run_dir, {"run": run_dir.name, "stopping_reason": "non_finite_loss",
                                    "finished": False, "failed_step": err.step,
                                    "last_checkpoint": err.last_checkpoint, "message": str(err)})
        raise
    previous = run_dir / "train_summary.json"
    if summary["steps"] == summary["resumed_from_step"] and previous.exists():
        # a rerun of a stopped run trained nothing: keep what the training process measured
        old = json.loads(previous.read_text())
        summary.update({k: old[k] for k in ("images_per_second", "wall_seconds", "resumed_from_step")
                        if k in old})
    if summary["finished"] and export:
        trainer.export(summary)
    elif trainer.chief:
        write_summary(run_dir, summary)
    if tracker is not None and trainer.chief:
        final = {f"final/{k}": v for k, v in summary.items()
                 if k in ("final_val_loss", "final_val_accuracy", "best_val_loss",
                          "best_val_accuracy", "images_per_second") and v is not None}
        tracker.log_metrics(final, step=summary["steps"])
        tracker.set_tags({"stopping_reason": summary["stopping_reason"]})
        for name in ("train_summary.json", "normalisation.json", PARAMS_USED):
            if (run_dir / name).exists():
                tracker.log_artifact(run_dir / name)
    return summary


def make_run_tracker(params: Params):
    """The tracker of ``tracking:`` for this run (relative folders from the project root),
    tagged ``stage: train``."""
    from scripts.tracking import make_tracker_from_params

    tracker = make_tracker_from_params(params.tracking, run_name=params.train.run_name)
    tracker.set_tags({"stage": "train"})
    return tracker


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Contrastive (SimCLR) training stage.")
    add_params_argument(parser)
    parser.add_argument("--dataset-path", type=Path, default=None,
                        help=f"folder with splits.parquet and <DATASET>/images.h5 "
                             f"(default: {config.dataset_path})")
    parser.add_argument("--models-path", type=Path, default=None,
                        help=f"folder of the run folders (default: {config.models_path})")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--deterministic", action="store_true",
                        help="TensorFlow op determinism (bit-exact resume on GPUs; slower)")
    parser.add_argument("--augment-on", choices=("input", "device"), default="input",
                        help="augment in the tf.data pipeline (CPU, default) or inside the "
                             "train step (accelerator)")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        params = load_params(args.params)
    except ParamsError as err:
        log.error("%s", err)
        return EXIT_INPUT

    from scripts.model import onednn
    onednn.configure(params.train.width_multiplier, params.extract.image_size)
    # the strategy first: MultiWorkerMirroredStrategy must exist before other TF ops
    from scripts.model.distribute import make_strategy
    from scripts.model.train_errors import NonFiniteLossError, TrainInputError

    strategy = make_strategy(params.train.distribution)
    tracker = make_run_tracker(params)
    tracker.log_params(params.to_dict())
    status = "FAILED"
    try:
        summary = run_training(params, args.dataset_path or config.dataset_path,
                               args.models_path or config.models_path, tracker=tracker,
                               strategy=strategy, progress=not args.no_progress,
                               deterministic=args.deterministic, augment_on=args.augment_on)
        status = "FINISHED" if summary["finished"] else "KILLED"
    except (FileNotFoundError, TrainInputError) as err:
        log.error("%s", err)
        return EXIT_INPUT
    except NonFiniteLossError as err:
        log.error("%s", err)
        return EXIT_NON_FINITE
    finally:
        tracker.close(status=status)
    log.info("%s: %s after %d/%d steps (%d epochs); validation loss %s, accuracy %s (best %s); "
             "%s images/s", summary["run"], summary["stopping_reason"], summary["steps"],
             summary["total_steps"], summary["epochs"], _fmt(summary["final_val_loss"]),
             _fmt(summary["final_val_accuracy"]), _fmt(summary["best_val_loss"]),
             _fmt(summary["images_per_second"], ".0f"))
    return EXIT_OK if summary["finished"] else EXIT_RUNTIME


def _fmt(value, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


if __name__ == "__main__":
    sys.exit(main())
