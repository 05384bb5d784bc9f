"""Embed images with a trained encoder, applying the normalisation it was trained with.

A run folder (``models/<run>/``, written by the train stage) holds ``encoder.keras`` and
``normalisation.json``; :func:`load_encoder` returns both, and :func:`embed` turns *raw*
images (the units stored in ``images.h5``) into representations::

    from scripts.model.inference import embed, load_encoder
    vectors = embed("models/simclr", images, batch_size=256)      # (N, D) float32
    trained = load_encoder("models/simclr")                       # reuse for several sets
    vectors = embed(trained, h5file["images"], batch_size=256)    # streams an HDF5 dataset

The same representation is served, without this package, by the run's SavedModel:
``tf.saved_model.load("models/simclr/saved_model").serve(images)``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from scripts.model.normalise import Normalisation

log = logging.getLogger(__name__)

ENCODER_FILE = "encoder.keras"
NORMALISATION_FILE = "normalisation.json"


@dataclass
class TrainedEncoder:
    """An encoder and the normalisation its inputs need (raw images → representation)."""

    encoder: Any  # keras.Model, (N, H, W, C) normalised → (N, D)
    normalisation: Normalisation
    run_dir: Path | None = None

    def __post_init__(self):
        import tensorflow as tf

        encoder, normalisation = self.encoder, self.normalisation

        @tf.function(reduce_retracing=True)
        def forward(images):
            return tf.cast(encoder(normalisation.apply_tf(images), training=False), tf.float32)
        self._forward = forward

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """``(H, W, C)`` of the encoder's inputs (None where any size is accepted)."""
        return tuple(None if s is None else int(s) for s in self.encoder.input_shape[1:])

    @property
    def dim(self) -> int:
        return int(self.encoder.output_shape[-1])

    def __call__(self, images) -> np.ndarray:
        """Representations of one batch of raw images, float32 ``(n, D)``."""
        return self._forward(np.asarray(images, dtype=np.float32)).numpy()


def load_encoder(run_dir: str | Path) -> TrainedEncoder:
    """Load ``run_dir/encoder.keras`` and ``run_dir/normalisation.json``."""
    import keras

    import scripts.model.simclr  # noqa: F401  (registers the package's Keras objects)

    run_dir = Path(run_dir)
    paths = {"encoder": run_dir / ENCODER_FILE, "normalisation": run_dir / NORMALISATION_FILE}
    for what, path in paths.items():
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: {run_dir} holds no exported {what}; "
                                    "run the train stage to the end (python -m scripts.train)")
    encoder = keras.saving.load_model(paths["encoder"], compile=False)
    normalisation = Normalisation.load(paths["normalisation"])
    log.info("loaded encoder %s (%s → %d) with normalisation %s", paths["encoder"],
             tuple(encoder.input_shape[1:]), encoder.output_shape[-1], normalisation.name)
    return TrainedEncoder(encoder, normalisation, run_dir)


def embed(run_dir_or_encoder, images, batch_size: int = 256,
          normalisation: Normalisation | None = None, progress: bool = False) -> np.ndarray:
    """Representations ``(N, D)`` float32 of raw ``images``.

    Args:
        run_dir_or_encoder: a run folder, a :class:`TrainedEncoder`, or a bare Keras encoder
            together with ``normalisation``.
        images: ``(N, H, W, C)`` raw images — a numpy array, an ``h5py`` dataset or anything
            sliceable with ``len`` (read ``batch_size`` rows at a time, never all at once) —
            or an iterable of such batches (e.g. :func:`scripts.model.input_pipeline.ordered_dataset`).
        batch_size: images per forward pass.
        normalisation: only with a bare encoder: the normalisation it was trained with.
        progress: show a tqdm bar.
    """
    if batch_size < 1:
        raise ValueError(f"embed: batch_size must be >= 1, got {batch_size}")
    if isinstance(run_dir_or_encoder, TrainedEncoder):
        model = run_dir_or_encoder
    elif isinstance(run_dir_or_encoder, (str, Path)):
        model = load_encoder(run_dir_or_encoder)
    else:
        if normalisation is None:
            raise ValueError("embed: a bare encoder needs the normalisation it was trained with "
                             "(normalisation=…); or pass the run folder / load_encoder(run_dir)")
        model = TrainedEncoder(run_dir_or_encoder, normalisation)

    from tqdm.auto import tqdm

    out = []
    if hasattr(images, "__len__") and hasattr(images, "__getitem__") and np.ndim(images[:0]) == 4:
        n = len(images)
        for start in tqdm(range(0, n, batch_size), disable=not progress, unit="batch"):
            out.append(model(images[start:start + batch_size]))
    else:
        for batch in tqdm(_batches(images), disable=not progress, unit="batch"):
            out.append(model(batch))
    if not out:
        return np.zeros((0, model.dim), np.float32)
    return np.concatenate(out, axis=0)


def _batches(images: Iterable) -> Iterable[np.ndarray]:
    for batch in images:
        yield batch.numpy() if hasattr(batch, "numpy") else np.asarray(batch)
