"""Build the tracker a run uses from the ``tracking:`` params: one composite over backends.

A backend that cannot start (unwritable folder, unreachable server, missing package)
logs one warning and is left out; the run goes on with the others (or with nothing).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from scripts.params_rules import TRACKING_BACKENDS as BACKENDS
from scripts.params_rules import tracking_backends
from scripts.tracking.base import CompositeTracker, GuardedBackend, short_error

logger = logging.getLogger(__name__)


def default_run_name() -> str:
    """``run-YYYYmmdd-HHMMSS`` (local time), shared by all backends of one run."""
    return time.strftime("run-%Y%m%d-%H%M%S")


def _start(name: str, experiment: str, run_name: str, tags: Mapping[str, str],
           mlflow_dir: Path, tensorboard_dir: Path, environ: Mapping[str, str] | None) -> Any:
    if name == "mlflow":
        from scripts.tracking.mlflow_backend import (
            ARTIFACTS_DIR,
            MlflowTracker,
            local_tracking_uri,
            resolve_tracking_uri,
        )

        uri = resolve_tracking_uri(mlflow_dir, environ)
        artifact_root = None
        if uri == local_tracking_uri(mlflow_dir):
            mlflow_dir.mkdir(parents=True, exist_ok=True)
            artifact_root = mlflow_dir / ARTIFACTS_DIR
        return MlflowTracker(uri, experiment, run_name, tags, artifact_root=artifact_root)
    if name == "tensorboard":
        from scripts.tracking.tensorboard_backend import TensorBoardTracker

        return TensorBoardTracker(tensorboard_dir, experiment, run_name, tags)
    raise ValueError(f"unknown tracking backend {name!r}")  # the schema's rule prevents this


def make_tracker(backends: Sequence[str] | str, experiment: str, run_name: str | None = None,
                 tags: Mapping[str, Any] | None = None, mlflow_dir: str | Path = "mlruns",
                 tensorboard_dir: str | Path = "tb_logs",
                 environ: Mapping[str, str] | None = None) -> CompositeTracker:
    """A tracker logging to every backend in ``backends`` (``mlflow``, ``tensorboard``; or ``none``).

    ``run_name`` defaults to :func:`default_run_name`; ``tags`` are strings attached to the
    run. ``mlflow_dir`` is the local MLflow store (ignored when ``MLFLOW_TRACKING_URI`` is
    set in ``environ``, default ``os.environ``); ``tensorboard_dir`` the TensorBoard log
    root. Relative paths are taken from the current folder. A backend failing to start
    logs one warning and is skipped. After start the run is cross-referenced: tags
    ``tracking.<backend>`` give each backend's location. ``backends`` are checked by the
    params schema's rule for ``tracking.BACKENDS`` (an empty list logs nothing).
    """
    if isinstance(backends, str):
        backends = [backends]
    names = tracking_backends(list(backends), "tracking.BACKENDS") if backends else ()
    return _open(names, experiment, run_name, tags, mlflow_dir, tensorboard_dir, environ)


def _open(names: Sequence[str], experiment: str, run_name: str | None,
          tags: Mapping[str, Any] | None, mlflow_dir: str | Path, tensorboard_dir: str | Path,
          environ: Mapping[str, str] | None) -> CompositeTracker:
    """The composite over backends ``names``, already checked by the params schema."""
    names = [n for n in names if n != "none"]
    run = run_name or default_run_name()
    str_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    guarded: list[GuardedBackend] = []
    for name in names:
        try:
            backend = _start(name, str(experiment), run, str_tags,
                             Path(mlflow_dir).expanduser().resolve(),
                             Path(tensorboard_dir).expanduser().resolve(), environ)
        except Exception as exc:  # a tracking backend must never stop the run
            logger.warning(
                "Tracking backend %r could not start (%s: %s); this run goes on without it.",
                name, type(exc).__name__, short_error(exc),
            )
            continue
        guarded.append(GuardedBackend(name, backend))
    tracker = CompositeTracker(guarded)
    if tracker.locations:
        tracker.set_tags({f"tracking.{k}": v for k, v in tracker.locations.items()})
    return tracker


def make_tracker_from_params(section: Any, run_name: str | None = None, root: Any = None,
                             environ: Mapping[str, str] | None = None) -> CompositeTracker:
    """:func:`make_tracker` from the parsed ``tracking:`` section
    (``scripts.params.TrackingParams``: backends, experiment, tags, mlflow_dir,
    tensorboard_dir), whose backends the schema has checked. Relative folders are taken
    from ``root`` (default: the project root, ``config.root_path``), so a stage run from
    elsewhere still logs to the project.
    """
    from pathlib import Path

    import config

    base = Path(root) if root is not None else config.root_path
    return _open(section.backends, section.experiment, run_name, dict(section.tags or {}),
                 str(base / section.mlflow_dir), str(base / section.tensorboard_dir), environ)
