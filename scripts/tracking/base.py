"""The tracking interface shared by every backend, and the pieces that make it safe.

:class:`Tracker` is the protocol that train and analyse talk to. :class:`CompositeTracker`
fans each call out to several backends (MLflow, TensorBoard); each backend sits behind a
:class:`GuardedBackend`, so that a backend that raises (unwritable folder, unreachable
server, any exception) logs ONE warning, becomes a no-op and never stops the run nor the
other backends. Inputs are checked and normalised once here (params flattened to dotted
keys, metric values turned into floats), so backends receive clean values.
"""
from __future__ import annotations

import dataclasses
import logging
import numbers
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)

#: Run statuses accepted by :meth:`Tracker.close` (MLflow's RunStatus names).
RUN_STATUSES = ("FINISHED", "FAILED", "KILLED")


@runtime_checkable
class Tracker(Protocol):
    """What train and analyse log through; implemented by every backend and the composite."""

    def log_params(self, params: Any) -> None:
        """Log the resolved parameters (nested mappings/dataclasses, flattened to dotted keys)."""

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        """Log scalar metrics at an integer step (e.g. ``train/loss``, ``epoch/val_loss``)."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Store one file with the run (under ``artifact_path`` when given)."""

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        """Store every file of a folder with the run."""

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        """Attach string tags to the run."""

    def log_images(self, name: str, images: Any, step: int) -> None:
        """Log a grid of images (N×H×W[×C]) at a step, e.g. augmented views."""

    def log_embedding(self, vectors: Any, metadata: Any = None, thumbnails: Any = None,
                      name: str = "embedding") -> None:
        """Log an N×D embedding with N rows of metadata and optional N thumbnails."""

    def close(self, status: str = "FINISHED") -> None:
        """Flush and end the run."""

    def __enter__(self) -> "Tracker": ...

    def __exit__(self, exc_type, exc, tb) -> None: ...


class TrackerBase:
    """Context-manager behaviour shared by all trackers: ``with make_tracker(...) as t:``.

    Leaving the block normally closes the run as FINISHED, through an exception as FAILED
    (KILLED for KeyboardInterrupt); the exception itself is never swallowed.
    """

    location: str = ""

    def close(self, status: str = "FINISHED") -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            status = "FINISHED"
        elif issubclass(exc_type, KeyboardInterrupt):
            status = "KILLED"
        else:
            status = "FAILED"
        self.close(status=status)


class NullTracker(TrackerBase):
    """The ``none`` backend: accepts every call and records nothing."""

    location = ""

    def log_params(self, params: Any) -> None:
        return None

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        return None

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        return None

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        return None

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        return None

    def log_images(self, name: str, images: Any, step: int) -> None:
        return None

    def log_embedding(self, vectors: Any, metadata: Any = None, thumbnails: Any = None,
                      name: str = "embedding") -> None:
        return None

    def close(self, status: str = "FINISHED") -> None:
        return None


# --------------------------------------------------------------------------- normalisation

def _is_dataclass_instance(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def _children(obj: Any) -> Mapping[str, Any] | None:
    """The named children of a nested parameter container, or None for a leaf."""
    if isinstance(obj, Mapping):
        return {str(k): v for k, v in obj.items()}
    if _is_dataclass_instance(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if isinstance(obj, tuple) and hasattr(obj, "_asdict"):  # namedtuple
        return dict(obj._asdict())
    return None


def _leaf(value: Any) -> Any:
    """A parameter leaf as a loggable scalar: numbers and bools kept, the rest as text."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.ndarray):
        return str(value.tolist())
    if isinstance(value, (list, tuple, set, frozenset)):
        items = sorted(value, key=str) if isinstance(value, (set, frozenset)) else value
        return "[" + ", ".join(str(_leaf(v)) for v in items) + "]"
    return str(value)


def flatten_params(params: Any, prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings / dataclasses / namedtuples into ``{"a.b.c": leaf}``.

    Leaves are kept as bool/int/float/str/None; lists become their text form
    (``[1, 2]``). An empty container is kept as ``"{}"`` so that the key is not lost.
    """
    children = _children(params)
    if children is None:
        if not prefix:
            raise TypeError(
                "log_params expected a mapping or dataclass of parameters, "
                f"got {type(params).__name__}"
            )
        return {prefix: _leaf(params)}
    if not children and prefix:
        return {prefix: "{}"}
    flat: dict[str, Any] = {}
    for key, value in children.items():
        full = f"{prefix}.{key}" if prefix else key
        if _children(value) is not None:
            flat.update(flatten_params(value, full))
        else:
            flat[full] = _leaf(value)
    return flat


def as_float(value: Any) -> float:
    """A metric value (python/numpy scalar, 0-d array or tensor) as a python float."""
    if isinstance(value, (str, bytes)):
        raise TypeError(f"metric values must be numbers, got the string {value!r}")
    arr = np.asarray(value)
    if arr.size != 1:
        raise TypeError(f"metric values must be scalars, got an array of shape {arr.shape}")
    return float(arr.reshape(()))


# --------------------------------------------------------------------------- safety

class GuardedBackend:
    """Runs a backend's calls; the first exception logs one warning and switches it off.

    ``name`` is the backend name shown in the warning (``mlflow``, ``tensorboard``).
    After a failure every later call is a no-op, so a broken backend costs one warning and
    nothing else; the others keep logging.
    """

    def __init__(self, name: str, backend: Any) -> None:
        self.name = name
        self._backend = backend

    @property
    def active(self) -> bool:
        return self._backend is not None

    @property
    def location(self) -> str:
        return getattr(self._backend, "location", "") if self._backend is not None else ""

    def call(self, method: str, *args: Any, **kwargs: Any) -> None:
        backend = self._backend
        if backend is None:
            return
        try:
            getattr(backend, method)(*args, **kwargs)
        except Exception as exc:  # a tracking backend must never stop the run
            self._backend = None
            logger.warning(
                "Tracking backend %r failed in %s (%s: %s); it is switched off for the rest "
                "of this run, which goes on (other backends keep logging).",
                self.name, method, type(exc).__name__, short_error(exc),
            )
            if method != "close":
                _close_quietly(self.name, backend)


def short_error(exc: BaseException, limit: int = 500) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _close_quietly(name: str, backend: Any) -> None:
    """Release a failed backend's resources; its own errors are only logged at debug level."""
    try:
        backend.close(status="FAILED")
    except Exception as exc:  # already reported once; do not warn again
        logger.debug("closing the failed %s backend also failed: %s", name, exc)


class CompositeTracker(TrackerBase):
    """Fans every call out to several guarded backends (the object ``make_tracker`` returns).

    Inputs are validated here once: a bad input (a non-numeric metric, mismatched
    embedding rows) logs a warning and is dropped instead of switching backends off.
    ``locations`` maps each working backend to where it writes (MLflow run id and URI,
    TensorBoard run folder).
    """

    def __init__(self, backends: list[GuardedBackend]) -> None:
        self._backends = list(backends)
        self._closed = False
        self._bad_metric_keys: set[str] = set()

    @property
    def backends(self) -> list[str]:
        """Names of the backends still recording."""
        return [b.name for b in self._backends if b.active]

    @property
    def locations(self) -> dict[str, str]:
        return {b.name: b.location for b in self._backends if b.active}

    @property
    def location(self) -> str:
        return "; ".join(f"{k}: {v}" for k, v in self.locations.items())

    def _dispatch(self, method: str, *args: Any, **kwargs: Any) -> None:
        if self._closed:
            logger.debug("tracker already closed; %s ignored", method)
            return
        for backend in self._backends:
            backend.call(method, *args, **kwargs)

    def log_params(self, params: Any) -> None:
        try:
            flat = flatten_params(params)
        except TypeError as exc:
            logger.warning("log_params skipped: %s", exc)
            return
        self._dispatch("log_params", flat)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> None:
        clean: dict[str, float] = {}
        for key, value in metrics.items():
            try:
                clean[str(key)] = as_float(value)
            except (TypeError, ValueError) as exc:
                if key not in self._bad_metric_keys:
                    self._bad_metric_keys.add(key)
                    logger.warning("metric %r not logged: %s", key, exc)
        if clean:
            self._dispatch("log_metrics", clean, int(step))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        if not Path(path).is_file():
            logger.warning("log_artifact skipped: %s is not a file", path)
            return
        self._dispatch("log_artifact", Path(path), artifact_path)

    def log_artifacts(self, directory: str | Path, artifact_path: str | None = None) -> None:
        if not Path(directory).is_dir():
            logger.warning("log_artifacts skipped: %s is not a folder", directory)
            return
        self._dispatch("log_artifacts", Path(directory), artifact_path)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        self._dispatch("set_tags", {str(k): str(v) for k, v in tags.items()})

    def log_images(self, name: str, images: Any, step: int) -> None:
        arr = np.asarray(images)
        if arr.ndim not in (3, 4) or arr.shape[0] == 0:
            logger.warning(
                "log_images(%r) skipped: expected N×H×W or N×H×W×C images, got shape %s",
                name, arr.shape,
            )
            return
        self._dispatch("log_images", str(name), arr, int(step))

    def log_embedding(self, vectors: Any, metadata: Any = None, thumbnails: Any = None,
                      name: str = "embedding") -> None:
        vec = np.asarray(vectors, dtype=np.float32)
        problem = _embedding_problem(vec, metadata, thumbnails)
        if problem:
            logger.warning("log_embedding(%r) skipped: %s", name, problem)
            return
        thumbs = None if thumbnails is None else np.asarray(thumbnails)
        self._dispatch("log_embedding", vec, metadata, thumbs, str(name))

    def close(self, status: str = "FINISHED") -> None:
        if self._closed:
            return
        if status not in RUN_STATUSES:
            raise ValueError(f"close(status=...) expects one of {RUN_STATUSES}, got {status!r}")
        self._dispatch("close", status=status)
        self._closed = True


def _embedding_problem(vec: np.ndarray, metadata: Any, thumbnails: Any) -> str:
    """Why an embedding cannot be logged ('' when it can)."""
    if vec.ndim != 2 or vec.shape[0] == 0 or vec.shape[1] == 0:
        return f"vectors must be N×D with N, D ≥ 1, got shape {vec.shape}"
    if not np.all(np.isfinite(vec)):
        return "vectors contain NaN or infinite values"
    n = vec.shape[0]
    if metadata is not None and len(metadata) != n:
        return f"metadata has {len(metadata)} rows for {n} vectors"
    if thumbnails is not None:
        thumbs = np.asarray(thumbnails)
        if thumbs.ndim not in (3, 4) or thumbs.shape[0] != n:
            return f"thumbnails must be N×H×W[×C] with N={n}, got shape {thumbs.shape}"
    return ""

