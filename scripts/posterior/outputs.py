"""What the posterior stage writes from its samples: the per-object summaries (medians,
credible intervals, modes) in physical units, the samples in HDF5, the calibration metrics
of the simulated test split, the corner figures and the headline text.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from scripts.analysis.report import write_metrics
from scripts.posterior import calibration as cal
from scripts.posterior.peaks import posterior_modes

log = logging.getLogger("infer")

#: a field is called calibrated when both coverages are within this of nominal
COVERAGE_TOLERANCE = 0.05
#: identity columns of every object row
IDENTITY = ["dataset", "row", "object_id", "snapshot", "projection", "split"]
#: summary percentiles written per field
QUANTILES = {"p2.5": 0.025, "p16": 0.16, "median": 0.5, "p84": 0.84, "p97.5": 0.975}


def summarise(meta: pd.DataFrame, samples: np.ndarray, truth: np.ndarray, fields, inf) -> pd.DataFrame:
    """One row per image: identity, per field the quantiles, modes and (when known) the truth."""
    out = meta[[c for c in IDENTITY if c in meta.columns]].copy().reset_index(drop=True)
    ok = np.isfinite(samples).all(axis=(1, 2))
    out["posterior_ok"] = ok
    for j, f in enumerate(fields):
        q = np.full((len(meta), len(QUANTILES)), np.nan)
        if ok.any():
            q[ok] = np.quantile(samples[ok, :, j], list(QUANTILES.values()), axis=1).T
        for k, name in enumerate(QUANTILES):
            out[f"{f}_{name}"] = q[:, k]
        modes = posterior_modes(samples[:, :, j], inf.max_modes, inf.peak_min_height)
        for m in range(inf.max_modes):
            out[f"{f}_mode{m + 1}"] = modes[:, m]
        out[f"{f}_true"] = truth[:, j]
    return out


def write_samples(path: Path, meta: pd.DataFrame, samples: np.ndarray, fields, inf) -> Path:
    """``posterior_samples.h5``: ``samples`` (N, NUM_SAMPLES, D) float32 in physical units,
    row-aligned with ``posterior_summary.parquet`` and with the identity datasets."""
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as h5:
        h5.create_dataset("samples", data=samples.astype(np.float32), compression="gzip",
                          chunks=(min(256, max(len(samples), 1)),) + samples.shape[1:])
        for c in IDENTITY:
            if c in meta.columns:
                values = meta[c].to_numpy()
                if values.dtype == object or pd.api.types.is_string_dtype(meta[c]):
                    h5.create_dataset(c, data=values.astype(str).astype("S"))
                else:
                    h5.create_dataset(c, data=values.astype(np.int64))
        h5.attrs["fields"] = [str(f) for f in fields]
        h5.attrs["units"] = "physical: prepare's scaling undone with dataset/scaler.json"
        h5.attrs["num_samples"] = inf.num_samples
        h5.attrs["seed"] = inf.seed
    tmp.replace(path)
    return path


def within_tolerance(coverage: float, nominal: float) -> bool:
    """|coverage − nominal| ≤ COVERAGE_TOLERANCE, the bound included: 1.0 at 95 % is in
    (1.0 − 0.95 is 0.05000000000000004 in floating point)."""
    return bool(abs(coverage - nominal) <= COVERAGE_TOLERANCE + 1e-9)


def calibrate(meta, samples_phys, truth_phys, samples_scaled, truth_scaled, prior_phys,
              fields, datasets, seed, groups=None) -> tuple[dict, dict]:
    """Per dataset with truths, on its test split: per-field figures and joint TARP.
    ``groups`` (prepare's split_group per row) makes the coverage intervals resample
    whole objects."""
    per, tarp = {}, {}
    is_test = meta["split"].to_numpy() == "test"
    for name in datasets:
        sel = is_test & (meta["dataset"].to_numpy() == name) & np.isfinite(truth_phys).all(axis=1)
        if not sel.any():
            continue
        per[name] = {}
        for j, f in enumerate(fields):
            m = cal.field_calibration(samples_phys[sel, :, j], truth_phys[sel, j], prior_phys[:, j],
                                      seed=seed, groups=None if groups is None else groups[sel])
            m["calibrated"] = bool(within_tolerance(m["coverage_68"], 0.68)
                                   and within_tolerance(m["coverage_95"], 0.95))
            per[name][f] = m
        tarp[name] = cal.tarp(samples_scaled[sel], truth_scaled[sel], seed=seed)
    return per, tarp


def corner_figures(meta, samples_phys, truth_lookup, fields, observed, report_dir, plots_dir,
                   n_objects, seed) -> list[tuple[str, Path]]:
    """Corner plots of a seeded few observed images, with their analogues' true values."""
    from scripts.posterior.plots import plot_corner

    path = report_dir / "analogues.parquet"
    analogues = pd.read_parquet(path) if path.exists() else pd.DataFrame()
    figures = []
    rng = np.random.default_rng(seed)
    ok = np.isfinite(samples_phys).all(axis=(1, 2))
    for obs in observed:
        rows = np.flatnonzero((meta["dataset"].to_numpy() == obs) & ok)
        if not len(rows) or not n_objects:
            continue
        for i in np.sort(rng.choice(rows, size=min(n_objects, len(rows)), replace=False)):
            row = int(meta["row"].iloc[i])
            ana = None
            if len(analogues):
                mine = analogues[(analogues["observed_dataset"] == obs) & (analogues["observed_row"] == row)]
                vals = [truth_lookup.get((d, int(r))) for d, r in
                        zip(mine["simulated_dataset"], mine["simulated_row"])]
                vals = [v for v in vals if v is not None]
                ana = np.array(vals) if vals else None
            title = (f"{obs} #{meta['object_id'].iloc[i]} (row {row}): posterior; red: true values "
                     "of its simulated analogues")
            fig = plot_corner(samples_phys[i], fields, title, plots_dir / f"corner_{obs}_{row}.png",
                              analogues=ana)
            figures.append((title, fig))
    return figures


def merge_metrics(path: Path, posterior: dict, extra: dict) -> Path:
    """Add ``posterior`` (and ``posterior_flow``) to the analyse stage's metrics.json."""
    metrics = json.loads(path.read_text()) if path.exists() else {}
    metrics.pop("headline", None)
    metrics["posterior"] = posterior
    metrics["posterior_flow"] = extra
    return write_metrics(metrics, path)


def headline_text(posterior: dict) -> str:
    lines = []
    for ds, fields in posterior.items():
        for f, m in fields.items():
            lo68, hi68 = m["coverage_68_interval"]
            lo95, hi95 = m["coverage_95_interval"]
            lines.append(f"{ds}/{f}: coverage 68% {m['coverage_68']:.3f} [{lo68:.2f}, {hi68:.2f}], "
                         f"95% {m['coverage_95']:.3f} [{lo95:.2f}, {hi95:.2f}], "
                         f"PIT KS p {m['pit_ks_p']:.2g}, R²(median) {m['r2_median']:.3f}, "
                         f"width ratio {m['width_ratio']:.2f}"
                         + ("" if m["calibrated"] else "  [NOT calibrated]"))
    return "\n".join(lines)
