"""Experiment tracking for train and analyse: MLflow (default), TensorBoard, or none.

Use::

    from scripts.tracking import make_tracker_from_params
    with make_tracker_from_params(params.tracking, run_name=params.train.run_name) as tracker:
        tracker.log_params(params)                    # whole resolved params, dotted keys
        tracker.log_metrics({"train/loss": 1.2}, step=10)
        model.fit(..., callbacks=[KerasTrackingCallback(tracker)])
        tracker.log_images("augmentations", views, step=0)
        tracker.log_embedding(vectors, metadata_df, thumbnails, name="representation")
        tracker.log_artifact("reports/run/report.html")

Modules: ``base`` (the :class:`Tracker` protocol, :class:`NullTracker`, the fail-safe
composite), ``factory`` (:func:`make_tracker`), ``mlflow_backend``,
``tensorboard_backend``, ``projector`` (Embedding Projector files), ``images`` (grids and
sprites), ``keras_callback``. Importing this package is cheap: MLflow, TensorFlow and
Keras are imported only by the backends that need them.

Dashboard: ``python -m scripts.tracking dashboard`` runs ``mlflow ui`` on the local store
(:func:`dashboard_command`); ``tensorboard --logdir tb_logs`` shows the TensorBoard runs.
"""
from __future__ import annotations

from typing import Any

from scripts.tracking.base import CompositeTracker, NullTracker, Tracker, flatten_params
from scripts.tracking.factory import BACKENDS, make_tracker, make_tracker_from_params
from scripts.tracking.mlflow_backend import dashboard_command, local_tracking_uri

#: Shown by scripts.params when a params file still has the old ``neptune:`` section.
NEPTUNE_SHUTDOWN_MESSAGE = (
    "The 'neptune:' section is no longer supported: Neptune's hosted service (neptune.ai) "
    "shut down on 2026-03-05 and the data stored there was deleted. Runs are now tracked "
    "locally with MLflow (and optionally TensorBoard). Replace the 'neptune:' section of "
    "params.yaml by:\n"
    "  tracking:\n"
    "    BACKENDS: [mlflow, tensorboard]\n"
    "    EXPERIMENT: <your experiment name>\n"
    "and view runs with 'make dashboard' (runs 'mlflow ui'). Runs exported earlier can be "
    "migrated with Neptune's own exporter, which writes them to MLflow. No Neptune API "
    "token is needed any more; remove it from your environment."
)

__all__ = [
    "BACKENDS",
    "CompositeTracker",
    "KerasTrackingCallback",
    "NEPTUNE_SHUTDOWN_MESSAGE",
    "NullTracker",
    "Tracker",
    "dashboard_command",
    "flatten_params",
    "local_tracking_uri",
    "make_tracker",
    "make_tracker_from_params",
]


def __getattr__(name: str) -> Any:
    # KerasTrackingCallback subclasses a Keras class: import Keras only when asked for it
    if name == "KerasTrackingCallback":
        from scripts.tracking.keras_callback import KerasTrackingCallback

        return KerasTrackingCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
