"""Per-band intensity normalisation, stored as a named, JSON-serialisable choice.

Galaxy and X-ray images span orders of magnitude in flux; a network sees them better
after a compressive stretch. Training stores the chosen :class:`Normalisation` (``to_dict``
→ JSON) beside the model so analyse and inference apply exactly the same transform, in
numpy (:meth:`Normalisation.apply_np`) or inside a TensorFlow graph
(:meth:`Normalisation.apply_tf`); both compute in float32 with the same formulas.

For a pixel value ``x`` of band ``b`` (image units, e.g. nanomaggies), with per-band
``offset[b]`` (e.g. a sky level, same units as ``x``) and ``scale[b] > 0`` (same units):

- ``"linear"``:  ``y = (x - offset) / scale``
- ``"arcsinh"``: ``y = arcsinh((x - offset) / scale)`` — linear for ``|x - offset| ≪ scale``
  (keeps the noise Gaussian-like, sign included), logarithmic for ``x - offset ≫ scale``
  (Lupton et al. 1999 "asinh magnitudes"); ``scale`` is the softening, typically ~ the
  sky noise.
- ``"log"``:     ``y = log10(1 + max(x - offset, 0) / scale)`` — zero for non-positive
  values, ``log10`` of the flux in units of ``scale`` for bright pixels.

Then, when ``clip = (lo, hi)`` is set, ``y`` is clipped to ``[lo, hi]`` (in stretched units).
Images are channels-last (``…, H, W, C``); a scalar ``scale``/``offset`` applies to every
band, a sequence must have one entry per band.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)

STRETCHES = ("linear", "arcsinh", "log")


def _as_band_values(value: float | Sequence[float], key: str) -> float | tuple[float, ...]:
    if np.ndim(value) == 0:
        return float(value)
    values = tuple(float(v) for v in np.asarray(value, dtype=np.float64).ravel())
    if not values:
        raise ValueError(f"normalisation.{key} must be a number or a non-empty list (one per band)")
    return values


@dataclass(frozen=True)
class Normalisation:
    """A per-band stretch ``y = clip(stretch((x - offset) / scale))`` (see module docstring).

    Attributes:
        stretch: ``"linear"``, ``"arcsinh"`` or ``"log"``.
        scale: softening/scale per band (tuple) or for all bands (float), > 0, image units.
        offset: value subtracted first (e.g. sky level), per band or scalar, image units.
        clip: ``(lo, hi)`` bounds on the stretched value, or ``None`` for no clipping.
        name: label stored with the model (e.g. ``"hsc_arcsinh"``), for reports.
    """

    stretch: str = "arcsinh"
    scale: float | tuple[float, ...] = 1.0
    offset: float | tuple[float, ...] = 0.0
    clip: tuple[float, float] | None = None
    name: str = "default"

    def __post_init__(self):
        if self.stretch not in STRETCHES:
            raise ValueError(f"normalisation.stretch must be one of {STRETCHES}, got {self.stretch!r}")
        scale = _as_band_values(self.scale, "scale")
        offset = _as_band_values(self.offset, "offset")
        if np.any(np.asarray(scale) <= 0) or not np.all(np.isfinite(scale)):
            raise ValueError(f"normalisation.scale must be finite and > 0 (per band), got {self.scale!r}")
        if not np.all(np.isfinite(offset)):
            raise ValueError(f"normalisation.offset must be finite, got {self.offset!r}")
        clip = self.clip
        if clip is not None:
            clip = tuple(float(c) for c in clip)
            if len(clip) != 2 or not clip[0] < clip[1]:
                raise ValueError(f"normalisation.clip must be [lo, hi] with lo < hi, or null; got {self.clip!r}")
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "offset", offset)
        object.__setattr__(self, "clip", clip)
        object.__setattr__(self, "name", str(self.name))

    # ---------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict; ``Normalisation.from_dict(n.to_dict()) == n``."""
        return {
            "name": self.name,
            "stretch": self.stretch,
            "scale": list(self.scale) if isinstance(self.scale, tuple) else self.scale,
            "offset": list(self.offset) if isinstance(self.offset, tuple) else self.offset,
            "clip": list(self.clip) if self.clip is not None else None,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Normalisation":
        """Inverse of :meth:`to_dict`; unknown keys are an error (typos must not pass silently)."""
        allowed = set(cls.__dataclass_fields__)
        unknown = set(data) - allowed
        if unknown:
            raise ValueError(f"normalisation: unknown key(s) {sorted(unknown)}; expected some of {sorted(allowed)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_dict` as JSON to ``path``."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "Normalisation":
        """Read a JSON file written by :meth:`save`."""
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON for a normalisation ({err})") from err
        return cls.from_dict(data)

    # ---------------------------------------------------------------- helpers
    def _band_arrays(self, n_bands: int) -> tuple[np.ndarray, np.ndarray]:
        """``(scale, offset)`` as float32 arrays of length ``n_bands``."""
        out = []
        for key in ("scale", "offset"):
            value = getattr(self, key)
            if isinstance(value, tuple):
                if len(value) != n_bands:
                    raise ValueError(
                        f"normalisation '{self.name}': {key} has {len(value)} entries but the images "
                        f"have {n_bands} bands (last axis); give one value per band or a scalar"
                    )
                out.append(np.asarray(value, dtype=np.float32))
            else:
                out.append(np.full(n_bands, value, dtype=np.float32))
        return out[0], out[1]

    # ---------------------------------------------------------------- transforms
    def apply_np(self, images: np.ndarray) -> np.ndarray:
        """Normalise channels-last ``images`` (numpy), returning float32."""
        x = np.asarray(images, dtype=np.float32)
        scale, offset = self._band_arrays(x.shape[-1])
        z = (x - offset) / scale
        if self.stretch == "arcsinh":
            y = np.arcsinh(z)
        elif self.stretch == "log":
            y = np.log1p(np.maximum(z, np.float32(0.0))) / np.float32(np.log(10.0))
        else:
            y = z
        if self.clip is not None:
            y = np.clip(y, np.float32(self.clip[0]), np.float32(self.clip[1]))
        return y.astype(np.float32, copy=False)

    def apply_tf(self, images):
        """Normalise channels-last ``images`` (a tensor; works in graph mode), returning float32."""
        import tensorflow as tf

        x = tf.cast(images, tf.float32)
        n_bands = x.shape[-1]
        if n_bands is None:
            raise ValueError(f"normalisation '{self.name}': the band axis (last) must have a static size")
        scale, offset = self._band_arrays(int(n_bands))
        z = (x - tf.constant(offset)) / tf.constant(scale)
        if self.stretch == "arcsinh":
            y = tf.math.asinh(z)
        elif self.stretch == "log":
            y = tf.math.log1p(tf.maximum(z, 0.0)) / tf.math.log(tf.constant(10.0, tf.float32))
        else:
            y = z
        if self.clip is not None:
            y = tf.clip_by_value(y, self.clip[0], self.clip[1])
        return y

    def inverse_np(self, values: np.ndarray) -> np.ndarray:
        """Undo the stretch (for display). Exact where no clipping happened and, for ``"log"``,
        where ``x > offset``; clipped or zeroed values come back as the bound's pre-image."""
        y = np.asarray(values, dtype=np.float64)
        scale, offset = self._band_arrays(y.shape[-1])
        if self.stretch == "arcsinh":
            z = np.sinh(y)
        elif self.stretch == "log":
            z = np.power(10.0, y) - 1.0
        else:
            z = y
        return (z * scale.astype(np.float64) + offset.astype(np.float64)).astype(np.float32)


def robust_band_scale(images: np.ndarray, min_scale: float = 1e-12) -> np.ndarray:
    """Per-band robust noise level ``1.4826 · MAD`` over all pixels of ``images`` (…, C).

    A natural ``scale`` for the ``"arcsinh"`` stretch (softening ≈ sky noise). Floored at
    ``min_scale`` so an empty band does not yield a zero scale.
    """
    x = np.asarray(images, dtype=np.float64)
    flat = x.reshape(-1, x.shape[-1])
    median = np.nanmedian(flat, axis=0)
    mad = np.nanmedian(np.abs(flat - median), axis=0)
    return np.maximum(1.4826 * mad, min_scale)
