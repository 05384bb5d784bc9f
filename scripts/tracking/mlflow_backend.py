"""MLflow backend, through ``mlflow.MlflowClient`` only.

The fluent API (``mlflow.start_run``) keeps one active run per process, so two trackers
(say train, then analyse in the same process, or tests) would clash; an explicit client
bound to one run id does not.

Where runs go
    ``MLFLOW_TRACKING_URI`` from the environment when set (a shared server, credentials
    also from the environment, e.g. ``MLFLOW_TRACKING_USERNAME``/``_PASSWORD``: never
    from files in the repo). Otherwise a local store in ``mlflow_dir``:
    ``sqlite:///<mlflow_dir>/mlflow.db`` with artifacts in ``<mlflow_dir>/artifacts/``.
    MLflow ≥ 3.7 refuses the old plain-folder ``file:`` store unless
    ``MLFLOW_ALLOW_FILE_STORE=true`` (it is in maintenance mode), hence SQLite.
    ``mlflow ui`` must be given the same URI: see :func:`dashboard_command`.

Remote URIs get short HTTP limits unless the environment already sets them
(``MLFLOW_HTTP_REQUEST_MAX_RETRIES``=1, ``MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR``=0.5,
``MLFLOW_HTTP_REQUEST_BACKOFF_JITTER``=0.1, ``MLFLOW_HTTP_REQUEST_TIMEOUT``=5 s), so an
unreachable server costs a few seconds once (then this backend is switched off) rather
than MLflow's default minutes of retries.

Limits: MLflow's own (``mlflow.utils.validation``, read when a run starts, so they follow
the installed version). Parameter and tag values longer than its limit are cut with a
``…[truncated]`` mark, and the full flattened parameters are also stored as the
``params.json`` artifact; names are cleaned to MLflow's allowed characters. MLflow's client
splits batches to its per-request counts. Per-step metrics go through MLflow's
asynchronous logging (``synchronous=False``): its queue batches them in a background
thread and ending the run waits for it, so the training loop never waits on the store.
"""
from __future__ import annotations

import importlib.metadata
import logging
import os
import platform
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scripts.tracking.base import TrackerBase
from scripts.tracking.images import image_grid, save_png
from scripts.tracking.projector import safe_name, write_embedding_files, write_projector_config

logger = logging.getLogger(__name__)

#: Distributions whose versions are recorded as ``version.<name>`` tags on every run.
VERSION_PACKAGES = (
    "tensorflow", "keras", "numpy", "pandas", "scikit-learn", "scipy", "astropy", "h5py",
    "galsim", "umap-learn", "faiss-cpu", "photutils", "mlflow", "tensorboard",
)
#: HTTP limits applied to remote tracking URIs when the environment does not set them.
REMOTE_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "0.5",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "5",
}
DB_NAME = "mlflow.db"
ARTIFACTS_DIR = "artifacts"
TRUNCATION_MARK = "…[truncated]"



def local_tracking_uri(mlflow_dir: str | Path) -> str:
    """The SQLite tracking URI of the local store in ``mlflow_dir`` (absolute)."""
    return "sqlite:///" + (Path(mlflow_dir).expanduser().resolve() / DB_NAME).as_posix()


def resolve_tracking_uri(mlflow_dir: str | Path, environ: Mapping[str, str] | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` from the environment if set, else the local store's URI."""
    env = os.environ if environ is None else environ
    uri = env.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or local_tracking_uri(mlflow_dir)


def is_remote(uri: str) -> bool:
    return uri.split(":", 1)[0].lower() in ("http", "https", "databricks")


def dashboard_command(root: str | Path, mlflow_dir: str | Path = "mlruns",
                      host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """``mlflow ui`` over the local store (``mlflow_dir`` relative to the project ``root``)."""
    store = Path(mlflow_dir)
    if not store.is_absolute():
        store = Path(root) / store
    return ["mlflow", "ui", "--backend-store-uri", local_tracking_uri(store),
            "--host", str(host), "--port", str(int(port))]


def package_versions(packages: tuple[str, ...] = VERSION_PACKAGES) -> dict[str, str]:
    """``{"version.python": ..., "version.<pkg>": ...}`` for the installed packages."""
    versions = {"version.python": platform.python_version()}
    for name in packages:
        try:
            versions[f"version.{name}"] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_\-. :/]+")


def clean_key(key: str) -> str:
    """A metric/param/tag name MLflow accepts: other characters → ``_``, at most MLflow's
    key length (a long name keeps a hash of its end, so names stay distinct)."""
    from mlflow.utils.validation import MAX_ENTITY_KEY_LENGTH

    cleaned = _BAD_NAME_CHARS.sub("_", str(key)).strip() or "_"
    if len(cleaned) > MAX_ENTITY_KEY_LENGTH:
        import hashlib

        digest = hashlib.sha1(cleaned.encode()).hexdigest()[:8]
        cleaned = cleaned[: MAX_ENTITY_KEY_LENGTH - 9] + "~" + digest
    return cleaned


def truncate(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, the cut marked by :data:`TRUNCATION_MARK`."""
    return value if len(value) <= limit else value[: limit - len(TRUNCATION_MARK)] + TRUNCATION_MARK


class MlflowTracker(TrackerBase):
    """One MLflow run; ``location`` is ``<tracking uri>#<run id>``, ``run_id`` the id."""

    def __init__(self, tracking_uri: str, experiment: str, run_name: str | None,
                 tags: Mapping[str, str] | None = None, artifact_root: str | Path | None = None) -> None:
        if is_remote(tracking_uri):
            # MLflow reads these at each request; the user's own settings win
            for key, value in REMOTE_HTTP_DEFAULTS.items():
                os.environ.setdefault(key, value)
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH

        self._Metric, self._Param, self._RunTag = Metric, Param, RunTag
        self._max_param, self._max_tag = MAX_PARAM_VAL_LENGTH, MAX_TAG_VAL_LENGTH
        self.tracking_uri = tracking_uri
        self._client = MlflowClient(tracking_uri=tracking_uri)
        experiment_id = self._experiment_id(experiment, artifact_root)
        all_tags = self._context_tags()
        all_tags.update(package_versions())
        all_tags.update({str(k): str(v) for k, v in (tags or {}).items()})
        run = self._client.create_run(
            experiment_id,
            run_name=run_name,
            tags={clean_key(k): truncate(v, self._max_tag) for k, v in all_tags.items()},
        )
        self.run_id = run.info.run_id
        self.artifact_uri = run.info.artifact_uri
        self.location = f"{tracking_uri}#{self.run_id}"
        self._params: dict[str, str] = {}
        self._full_params: dict[str, Any] = {}
        self._refused_param_keys: set[str] = set()
        self._closed = False
        logger.info("MLflow run %s in experiment %r at %s", self.run_id, experiment, tracking_uri)

    # ------------------------------------------------------------------ setup
    def _experiment_id(self, name: str, artifact_root: str | Path | None) -> str:
        from mlflow.exceptions import MlflowException

        experiment = self._client.get_experiment_by_name(name)
        if experiment is None:
            location = None
            if artifact_root is not None:
                location = (Path(artifact_root).resolve() / safe_name(name)).as_uri()
            try:
                return self._client.create_experiment(name, artifact_location=location)
            except MlflowException:
                # another process may have created it meanwhile
                experiment = self._client.get_experiment_by_name(name)
                if experiment is None:
                    raise
        if experiment.lifecycle_stage == "deleted":
            raise RuntimeError(
                f"MLflow experiment {name!r} is deleted; restore it "
                f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or set "
                "another tracking.EXPERIMENT in params.yaml"
            )
        return experiment.experiment_id

    @staticmethod
    def _context_tags() -> dict[str, str]:
        """MLflow's standard run-context tags (user, source script, git commit)."""
        try:
            from mlflow.tracking.context.registry import resolve_tags

            return {str(k): str(v) for k, v in resolve_tags().items()}
        except Exception as exc:  # optional context; a plain run is still useful
            logger.debug("MLflow context tags unavailable: %s", exc)
            return {}

    # ------------------------------------------------------------------ logging
    def log_params(self, params: Mapping[str, Any]) -> None:
        new: dict[str, str] = {}
        changed: list[str] = []
        for key, value in params.items():
            k = clean_key(key)
            v = truncate(str(value), self._max_param)
            if k in self._params:
                if self._params[k] != v and k not in self._refused_param_keys:
                    changed.append(k)
                continue
            new[k] = v
        if changed:
            self._refused_param_keys.update(changed)
            logger.warning(
                "MLflow keeps the first value of a parameter; new values of %s not logged "
                "(they are in params.json)", ", ".join(sorted(changed)),
            )
        self._client.log_batch(self.run_id, params=[self._Param(k, v) for k, v in new.items()])
        self._params.update(new)
        self._full_params.update(params)
        self._client.log_dict(self.run_id, self._full_params, "params.json")

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Queued on MLflow's asynchronous logging; the call returns at once."""
        now = int(time.time() * 1000)
        self._client.log_batch(
            self.run_id,
            metrics=[self._Metric(clean_key(k), float(v), now, int(step)) for k, v in metrics.items()],
            synchronous=False,
        )

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._client.log_batch(self.run_id, tags=[self._RunTag(clean_key(k), truncate(str(v), self._max_tag))
                                                  for k, v in tags.items()])

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        self._client.log_artifacts(self.run_id, str(directory), artifact_path)

    def log_images(self, name: str, images: np.ndarray, step: int) -> None:
        """The grid as ``images/<name>/step_<step>.png`` (name's ``/`` kept as folders)."""
        folder = "/".join(safe_name(part) for part in str(name).split("/") if part) or "images"
        with tempfile.TemporaryDirectory(prefix="track_img_") as tmp:
            png = Path(tmp) / f"step_{int(step):07d}.png"
            save_png(image_grid(images), png)
            self._client.log_artifact(self.run_id, str(png), f"images/{folder}")

    def log_embedding(self, vectors: np.ndarray, metadata=None, thumbnails=None,
                      name: str = "embedding") -> None:
        """Projector files as artifacts under ``embeddings/<name>/``: a ready TensorBoard
        log dir (``projector_config.pbtxt`` + ``projector/<name>/`` files)."""
        with tempfile.TemporaryDirectory(prefix="track_emb_") as tmp:
            info = write_embedding_files(tmp, vectors, metadata, thumbnails, name)
            write_projector_config(tmp, [info])
            self._client.log_artifacts(self.run_id, tmp, f"embeddings/{info.tensor_name}")

    def close(self, status: str = "FINISHED") -> None:
        if self._closed:
            return
        self._closed = True
        # ends the run after MLflow's asynchronous queue has written every metric
        self._client.set_terminated(self.run_id, status=status)
