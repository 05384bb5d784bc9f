"""Standardisation of catalogue fields, stored as JSON (never pickle).

The prepare stage fits one :class:`FieldScaler` on the training split of the FIRST set
and applies it to every dataset, so scaled values are comparable across datasets and no
validation or test object leaks into the statistics.

Convention (as scikit-learn's ``StandardScaler``): ``scale`` is the population standard
deviation (ddof = 0), so the scaled fitting sample has mean 0 and ``std(ddof=0)`` 1;
a constant field gets ``scale = 1`` (it is only centred). Missing values (NaN) are
ignored when fitting and stay NaN when transforming.

File format (``scaler.json``)::

    {"ddof": 0, "fitted_on": "MOCK_FIDUCIAL",
     "fields": {"stellar_mass": {"mean": 10.2, "scale": 0.61, "n": 1234}, ...}}
"""
from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

SUFFIX = "_scaled"


class FieldScaler:
    """Per-field ``(x - mean) / scale``, fitted on a table, saved as JSON.

    Attributes after :meth:`fit` (or :meth:`from_json`): ``mean_`` and ``scale_``
    (field → float, in the field's own units), ``n_`` (field → finite values used) and
    ``fitted_on`` (dataset name, for provenance).
    """

    ddof = 0

    def __init__(self, suffix: str = SUFFIX):
        self.suffix = suffix
        self.mean_: dict[str, float] = {}
        self.scale_: dict[str, float] = {}
        self.n_: dict[str, int] = {}
        self.fitted_on: str | None = None

    @property
    def fields(self) -> list[str]:
        return list(self.mean_)

    def fit(self, df: pd.DataFrame, fields: Sequence[str], dataset: str | None = None) -> "FieldScaler":
        """Mean and population std of each field over the finite values of ``df``."""
        if isinstance(fields, str):
            fields = [fields]
        _require(df, fields, dataset)
        mean, scale, n = {}, {}, {}
        for field in fields:
            values = pd.to_numeric(df[field], errors="coerce").to_numpy(dtype=np.float64)
            values = values[np.isfinite(values)]
            if values.size == 0:
                raise ValueError(
                    f"field {field!r} of dataset {dataset or '<unnamed>'} has no finite value "
                    "to fit the scaler on"
                )
            std = float(values.std(ddof=self.ddof))
            mean[field] = float(values.mean())
            scale[field] = std if std > 0.0 else 1.0
            n[field] = int(values.size)
            if std == 0.0:
                logger.warning("field %r of %s is constant; it is centred, not scaled",
                               field, dataset or "<unnamed>")
        self.mean_, self.scale_, self.n_, self.fitted_on = mean, scale, n, dataset
        logger.info("scaler fitted on %s (%s)", dataset or "<unnamed>",
                    ", ".join(f"{f}: mean {mean[f]:.4g}, scale {scale[f]:.4g}" for f in fields))
        return self

    def _check_fitted(self) -> None:
        if not self.mean_:
            raise RuntimeError("FieldScaler is not fitted: call fit() or from_json() first")

    def transform(
        self,
        df: pd.DataFrame,
        dataset: str | None = None,
        fields: Sequence[str] | None = None,
        missing: str = "error",
    ) -> pd.DataFrame:
        """Copy of ``df`` with a ``<field><suffix>`` column per fitted field.

        ``fields`` restricts the columns (default: all fitted fields). A field absent
        from ``df`` raises ``KeyError`` naming the field and ``dataset`` when ``missing``
        is ``"error"``; with ``"skip"`` it is left out and logged.
        """
        self._check_fitted()
        if missing not in ("error", "skip"):
            raise ValueError(f"missing must be 'error' or 'skip'; got {missing!r}")
        fields = self.fields if fields is None else list(fields)
        unknown = [f for f in fields if f not in self.mean_]
        if unknown:
            raise KeyError(f"field(s) {unknown} were not fitted; the scaler knows {self.fields}")
        absent = [f for f in fields if f not in df.columns]
        if absent and missing == "error":
            _require(df, fields, dataset)
        if absent:
            logger.info("%s lacks field(s) %s; not scaled", dataset or "<unnamed>", absent)
        out = df.copy()
        for field in fields:
            if field in absent:
                continue
            values = pd.to_numeric(df[field], errors="coerce").astype(np.float64)
            out[field + self.suffix] = (values - self.mean_[field]) / self.scale_[field]
        return out

    def fit_transform(self, df: pd.DataFrame, fields: Sequence[str], dataset: str | None = None) -> pd.DataFrame:
        return self.fit(df, fields, dataset).transform(df, dataset)

    def inverse_transform(self, values: np.ndarray, field: str) -> np.ndarray:
        """Scaled values of ``field`` back to its own units."""
        self._check_fitted()
        if field not in self.mean_:
            raise KeyError(f"field {field!r} was not fitted; the scaler knows {self.fields}")
        return np.asarray(values, dtype=np.float64) * self.scale_[field] + self.mean_[field]

    def to_dict(self) -> dict:
        self._check_fitted()
        return {
            "ddof": self.ddof,
            "fitted_on": self.fitted_on,
            "fields": {
                f: {"mean": self.mean_[f], "scale": self.scale_[f], "n": self.n_.get(f)}
                for f in self.fields
            },
        }

    def to_json(self, path: str | Path) -> Path:
        """Write the fitted statistics to ``path`` (parents created)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        logger.info("scaler written to %s", path)
        return path

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "<dict>", suffix: str = SUFFIX) -> "FieldScaler":
        fields = data.get("fields") if isinstance(data, Mapping) else None
        if not isinstance(fields, Mapping) or not fields:
            raise ValueError(
                f"{source}: expected a JSON object with a non-empty 'fields' mapping "
                "field → {\"mean\": float, \"scale\": float}"
            )
        if data.get("ddof", cls.ddof) != cls.ddof:
            raise ValueError(f"{source}: 'ddof' must be {cls.ddof}; got {data.get('ddof')!r}")
        scaler = cls(suffix=suffix)
        for field, stats in fields.items():
            try:
                mean, scale = float(stats["mean"]), float(stats["scale"])
            except (KeyError, TypeError, ValueError) as err:
                raise ValueError(
                    f"{source}: fields.{field} must hold numbers 'mean' and 'scale'; got {stats!r}"
                ) from err
            if not (math.isfinite(mean) and math.isfinite(scale) and scale > 0):
                raise ValueError(
                    f"{source}: fields.{field} needs a finite mean and a finite scale > 0; "
                    f"got mean {mean}, scale {scale}"
                )
            scaler.mean_[field], scaler.scale_[field] = mean, scale
            if stats.get("n") is not None:
                scaler.n_[field] = int(stats["n"])
        scaler.fitted_on = data.get("fitted_on")
        return scaler

    @classmethod
    def from_json(cls, path: str | Path, suffix: str = SUFFIX) -> "FieldScaler":
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err})") from err
        return cls.from_dict(data, source=str(path), suffix=suffix)

    def __repr__(self) -> str:
        return f"FieldScaler(fields={self.fields}, fitted_on={self.fitted_on!r})"


def _require(df: pd.DataFrame, fields: Sequence[str], dataset: str | None) -> None:
    absent = [f for f in fields if f not in df.columns]
    if absent:
        raise KeyError(
            f"field(s) {absent} not found in dataset {dataset or '<unnamed>'}; "
            f"its columns are {list(df.columns)}"
        )
