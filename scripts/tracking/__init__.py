"""Experiment tracking for train and analyse: MLflow (default), TensorBoard, or none.

Use::

    from scripts.tracking import make_tracker_from_params
    with make_tracker_from_params(params.tracking, run_name=params.train.run_name) as tracker:
        tracker.log_params(params)                    # whole resolved params, dotted keys
        tracker.log_metrics({"train/loss": 1.2}, step=10)
        tracker.log_images("augmentations", views, step=0)
        tracker.log_embedding(vectors, metadata_df, thumbnails, name="representation")
        tracker.log_artifact("reports/run/report.html")

Modules: ``base`` (the :class:`Tracker` protocol, :class:`NullTracker`, the fail-safe
composite), ``factory`` (:func:`make_tracker`), ``mlflow_backend``,
``tensorboard_backend``, ``projector`` (Embedding Projector files), ``images`` (grids and
sprites). Importing this package is cheap: MLflow and TensorFlow are imported only by the
backends that need them. A ``neptune:`` section in params is refused by the params loader
(:data:`scripts.params.NEPTUNE_MESSAGE`, the one explanation of Neptune's shutdown).

Dashboard: ``python -m scripts.tracking dashboard`` runs ``mlflow ui`` on the local store
(:func:`dashboard_command`); ``tensorboard --logdir tb_logs`` shows the TensorBoard runs.
"""
from __future__ import annotations

from scripts.tracking.base import CompositeTracker, NullTracker, Tracker, flatten_params
from scripts.tracking.factory import BACKENDS, make_tracker, make_tracker_from_params
from scripts.tracking.mlflow_backend import dashboard_command, local_tracking_uri

__all__ = [
    "BACKENDS",
    "CompositeTracker",
    "NullTracker",
    "Tracker",
    "dashboard_command",
    "flatten_params",
    "local_tracking_uri",
    "make_tracker",
    "make_tracker_from_params",
]

