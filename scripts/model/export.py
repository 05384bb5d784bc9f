"""Export of a finished run: ``encoder.keras``, a SavedModel servable without this package,
``normalisation.json`` and ``train_summary.json`` in ``models/<run>/``."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import keras
import tensorflow as tf

from scripts.model.inference import ENCODER_FILE, NORMALISATION_FILE
from scripts.model.normalise import Normalisation

log = logging.getLogger(__name__)

SAVED_MODEL_DIR = "saved_model"
SUMMARY_FILE = "train_summary.json"


def export_run(encoder: keras.Model, normalisation: Normalisation, run_dir: str | Path,
               summary: dict | None = None) -> dict[str, Path]:
    """Write ``encoder.keras``, ``saved_model/`` (serving: raw images → representation,
    normalisation included), ``normalisation.json`` and (given) ``train_summary.json``;
    returns ``{kind: path}``."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    out = {"normalisation": run_dir / NORMALISATION_FILE}
    normalisation.save(out["normalisation"])
    out["encoder"] = run_dir / ENCODER_FILE
    encoder.save(out["encoder"])
    out["saved_model"] = run_dir / SAVED_MODEL_DIR
    export_saved_model(encoder, normalisation, out["saved_model"])
    if summary is not None:
        out["summary"] = write_summary(run_dir, summary)
    log.info("exported %s", ", ".join(str(p) for p in out.values()))
    return out


def export_saved_model(encoder: keras.Model, normalisation: Normalisation, path: str | Path) -> Path:
    """A SavedModel whose ``serve`` endpoint (also ``serving_default``) maps raw images
    ``(N, H, W, C)`` float32 to float32 representations, applying ``normalisation`` first —
    servable without this package (``tf.saved_model.load(path).serve(images)``)."""
    shape = (None,) + tuple(int(s) for s in encoder.input_shape[1:])

    def serve(images):
        x = normalisation.apply_tf(images)
        return tf.cast(encoder(x, training=False), tf.float32)

    archive = keras.export.ExportArchive()
    archive.track(encoder)
    archive.add_endpoint("serve", serve, input_signature=[tf.TensorSpec(shape, tf.float32, name="images")])
    archive.write_out(str(path), verbose=False)
    return Path(path)


def write_summary(run_dir: str | Path, summary: dict) -> Path:
    """``run_dir/train_summary.json`` (indented JSON)."""
    path = Path(run_dir) / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    return path
