"""TensorBoard backend: ``tf.summary`` event files plus Embedding Projector files.

One run = one folder ``<tensorboard_dir>/<experiment>/<run_name>`` (a ``-2``, ``-3``…
suffix when that folder is already used), so ``tensorboard --logdir <tensorboard_dir>``
lists runs as ``experiment/run``. Scalars go through ``tf.summary.scalar``, image grids
through ``tf.summary.image``, params and tags as markdown tables through
``tf.summary.text`` (TEXT tab), and embeddings as projector files next to the events.
TensorBoard keeps no artifacts: ``log_artifact(s)`` do nothing here (MLflow keeps them).
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from scripts.tracking.base import TrackerBase
from scripts.tracking.images import image_grid
from scripts.tracking.projector import safe_name, write_embedding_files, write_projector_config

logger = logging.getLogger(__name__)


def unique_run_dir(parent: Path, name: str) -> Path:
    """Create and return ``parent/name``, or ``name-2``, ``name-3``… if already there."""
    parent.mkdir(parents=True, exist_ok=True)
    for k in range(1, 10_000):
        candidate = parent / (name if k == 1 else f"{name}-{k}")
        try:
            candidate.mkdir()
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"no free run folder named {name}-N under {parent}")


def _markdown_table(items: Mapping[str, Any], key_title: str) -> str:
    def esc(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [f"| {key_title} | value |", "|---|---|"]
    lines += [f"| {esc(k)} | {esc(v)} |" for k, v in items.items()]
    return "\n".join(lines)


class TensorBoardTracker(TrackerBase):
    """Writes one TensorBoard run; ``location`` is its folder."""

    def __init__(self, log_dir: str | Path, experiment: str, run_name: str,
                 tags: Mapping[str, str] | None = None) -> None:
        import tensorflow as tf

        self._tf = tf
        self.run_dir = unique_run_dir(Path(log_dir) / safe_name(experiment), safe_name(run_name))
        self.location = str(self.run_dir)
        self._writer = tf.summary.create_file_writer(str(self.run_dir))
        self._embeddings: dict = {}  # tensor name → EmbeddingInfo, in logging order
        self._text_calls = 0
        if tags:
            self.set_tags(tags)

    def _text(self, name: str, markdown: str) -> None:
        with self._writer.as_default():
            self._tf.summary.text(name, markdown, step=self._text_calls)
        self._text_calls += 1

    def log_params(self, params: Mapping[str, Any]) -> None:
        self._text("params", _markdown_table(params, "parameter"))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self._text("tags", _markdown_table(tags, "tag"))

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        with self._writer.as_default():
            for key, value in metrics.items():
                self._tf.summary.scalar(key, value, step=step)

    def log_images(self, name: str, images: np.ndarray, step: int) -> None:
        grid = image_grid(images)
        with self._writer.as_default():
            self._tf.summary.image(name, grid[None], step=step, max_outputs=1)

    def log_embedding(self, vectors: np.ndarray, metadata=None, thumbnails=None,
                      name: str = "embedding") -> None:
        info = write_embedding_files(self.run_dir, vectors, metadata, thumbnails, name)
        self._embeddings[info.tensor_name] = info
        write_projector_config(self.run_dir, list(self._embeddings.values()))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        logger.debug("TensorBoard keeps no artifacts; %s not copied", path)

    def log_artifacts(self, directory: Path, artifact_path: str | None = None) -> None:
        logger.debug("TensorBoard keeps no artifacts; %s not copied", directory)

    def close(self, status: str = "FINISHED") -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.flush()
            writer.close()
