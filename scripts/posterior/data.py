"""Inputs of the posterior stage: conditions and targets per embedded image.

- **Targets** are the simulated sets' ``prepare.UNOBSERVABLES`` in prepare's scaled units
  (``<field>_scaled`` of ``splits.parquet``); :class:`Units` turns them back into physical
  units with ``scaler.json``; :class:`TargetSpace` models ``infer.LOG_FIELDS`` in log10.
- **Conditions** are ``REPRESENTATION_COMPONENTS`` whitened principal components of the
  standardised representation (statistics and PCA fitted on the training rows) followed by
  the OBSERVABLES. The observables of the training sets define the names (e.g. ``z``,
  ``mag_I``); any other set's ``prepare.OBSERVABLES`` correspond **by position** (an
  observed ``[photoz, i_cmodel_mag]`` is read as ``[z, mag_I]``). prepare scales each
  field with its own statistics, so a mapped field is first put back into its physical
  units (its own scaler) and then scaled with the training field's mean and scale, so
  that photo-z and true z enter the flow on one scale.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scripts.preprocessing.scaling import SUFFIX, FieldScaler


@dataclass
class Units:
    """Scaled ↔ physical values of the target fields (from ``scaler.json``)."""

    scaler: FieldScaler

    def physical(self, scaled: np.ndarray, fields) -> np.ndarray:
        """``scaled[..., j]`` of field ``fields[j]`` in physical units."""
        out = np.empty(np.shape(scaled), np.float64)
        for j, f in enumerate(fields):
            out[..., j] = self.scaler.inverse_transform(scaled[..., j], f)
        return out


class TargetSpace:
    """The space the flow models the targets in: prepare's scaled values, except for the
    ``log_fields`` (positive quantities such as sizes), modelled as standardised log10 of
    their physical value so that no posterior sample is negative. Fitted on the training
    rows' physical values; :meth:`to_flow` and :meth:`to_physical` are inverses.
    A non-positive value of a log field becomes NaN (left out like any NaN target)."""

    def __init__(self, fields, units: Units, log_fields=()):
        unknown = [f for f in log_fields if f not in fields]
        if unknown:
            raise ValueError(f"infer.LOG_FIELDS: {unknown} are not UNOBSERVABLES of the training "
                             f"sets {list(fields)}")
        self.fields, self.units = list(fields), units
        self.log = np.array([f in log_fields for f in fields])

    def fit(self, physical) -> "TargetSpace":
        self.mean_ = np.zeros(len(self.fields))
        self.scale_ = np.ones(len(self.fields))
        for j in np.flatnonzero(self.log):
            v = physical[:, j]
            v = np.log10(v[np.isfinite(v) & (v > 0)])
            if len(v) < 2:
                raise ValueError(f"infer.LOG_FIELDS: {self.fields[j]} has fewer than two positive "
                                 "training values")
            self.mean_[j], self.scale_[j] = v.mean(), (v.std() or 1.0)
        return self

    def to_flow(self, physical) -> np.ndarray:
        physical = np.asarray(physical, np.float64)
        out = np.empty_like(physical)
        for j, f in enumerate(self.fields):
            v = physical[..., j]
            if self.log[j]:
                with np.errstate(divide="ignore", invalid="ignore"):
                    out[..., j] = (np.where(v > 0, np.log10(v), np.nan) - self.mean_[j]) / self.scale_[j]
            else:
                scaler = self.units.scaler
                out[..., j] = (v - scaler.mean_[f]) / scaler.scale_[f]
        return out

    def to_physical(self, flow_values) -> np.ndarray:
        flow_values = np.asarray(flow_values, np.float64)
        out = self.units.physical(flow_values, self.fields)
        for j in np.flatnonzero(self.log):
            out[..., j] = 10 ** (flow_values[..., j] * self.scale_[j] + self.mean_[j])
        return out


def training_fields(prepare, train_sets) -> tuple[list[str], list[str]]:
    """(observables, unobservables) shared by every training set; errors name the set."""
    first = train_sets[0]
    obs = list(prepare.per_set("observables", first) or ())
    unobs = list(prepare.per_set("unobservables", first) or ())
    if not unobs:
        raise ValueError(f"infer: training set {first} has no prepare.UNOBSERVABLES; the flow "
                         "has nothing to learn")
    for name in train_sets[1:]:
        o = list(prepare.per_set("observables", name) or ())
        u = list(prepare.per_set("unobservables", name) or ())
        if o != obs or u != unobs:
            raise ValueError(f"infer.TRAIN_SETS: {name} has OBSERVABLES {o} and UNOBSERVABLES {u}, "
                             f"but {first} has {obs} and {unobs}; sets trained together need "
                             "the same fields")
    return obs, unobs


def observable_columns(prepare, name: str, canonical, splits_columns) -> list[str]:
    """The ``splits.parquet`` columns holding set ``name``'s observables, in the order of
    the training sets' ``canonical`` names (positional mapping)."""
    own = list(prepare.per_set("observables", name) or ())
    cols = []
    for i, field in enumerate(canonical):
        if i >= len(own):
            raise ValueError(
                f"infer: set {name} lacks the OBSERVABLE {field!r} (position {i + 1} of the "
                f"training sets' {list(canonical)}); its prepare.OBSERVABLES are {own}. Add the "
                f"corresponding field of {name} there (names may differ, order must agree)")
        col = own[i] + SUFFIX
        if col not in splits_columns:
            raise ValueError(f"infer: set {name} lacks the OBSERVABLE {field!r}: splits.parquet "
                             f"has no column {col!r}; rerun the prepare stage")
        cols.append(own[i])
    return cols


def observables_in_training_scale(splits: pd.DataFrame, scaler: FieldScaler, own, canonical) -> np.ndarray:
    """(N, len(canonical)) observables of ``splits`` rows, each in the scale of its
    canonical (training-set) field."""
    out = np.empty((len(splits), len(canonical)), np.float64)
    for j, (mine, theirs) in enumerate(zip(own, canonical)):
        scaled = splits[mine + SUFFIX].to_numpy(np.float64)
        if mine == theirs:
            out[:, j] = scaled
        else:
            raw = scaler.inverse_transform(scaled, mine)
            out[:, j] = (raw - scaler.mean_[theirs]) / scaler.scale_[theirs]
    return out


class RepresentationPCA:
    """Standardise, project on the first ``n_components`` principal components, whiten.
    Fitted on finite rows only (scikit-learn style ``fit``/``transform``)."""

    def __init__(self, n_components: int | None):
        self.n_components = n_components

    def fit(self, vectors) -> "RepresentationPCA":
        x = np.asarray(vectors, np.float64)
        x = x[np.isfinite(x).all(axis=1)]
        if len(x) < 2:
            raise ValueError("infer: fewer than two training rows with a finite representation")
        self.mean_ = x.mean(axis=0)
        std = x.std(axis=0)
        self.std_ = np.where(std > 0, std, 1.0)
        z = (x - self.mean_) / self.std_
        _, sing, vt = np.linalg.svd(z, full_matrices=False)
        k = min(self.n_components or z.shape[1], z.shape[1], len(z))
        # fix the sign of each component (largest loading positive): reproducible output
        signs = np.sign(vt[np.arange(len(vt)), np.abs(vt).argmax(axis=1)])
        self.components_ = (vt * signs[:, None])[:k]
        var = sing[:k] ** 2 / max(len(z) - 1, 1)
        self.scale_ = np.sqrt(np.where(var > 0, var, 1.0))
        self.explained_variance_ratio_ = (sing ** 2 / np.sum(sing ** 2))[:k]
        return self

    def transform(self, vectors) -> np.ndarray:
        z = (np.asarray(vectors, np.float64) - self.mean_) / self.std_
        return (z @ self.components_.T) / self.scale_
