"""Diagnostic figures of the matching step: raw versus matched distributions.

For each matching field, a histogram figure (left: raw samples, right: matched samples;
source and target overlaid, density-normalised, shared bins); for each pair of
consecutive fields, a scatter figure laid out the same way. Figures are drawn with the
object-oriented Matplotlib API on the Agg canvas (no pyplot state, no display needed).
"""
from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

import config

logger = logging.getLogger(__name__)

SOURCE_COLOR, TARGET_COLOR = "tab:blue", "tab:orange"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def _axis_label(source_field: str, target_field: str, label: Callable[[str], str]) -> str:
    if source_field == target_field:
        return label(target_field)
    return f"{label(source_field)} / {label(target_field)}"


def _values(df: pd.DataFrame, field: str, what: str) -> np.ndarray:
    if field not in df.columns:
        raise KeyError(f"field {field!r} not in the {what} table; columns are {list(df.columns)}")
    values = pd.to_numeric(df[field], errors="coerce").to_numpy(dtype=np.float64)
    return values[np.isfinite(values)]


def _subsample(df: pd.DataFrame, max_points: int, seed: int) -> pd.DataFrame:
    if len(df) <= max_points:
        return df
    return df.iloc[np.sort(np.random.default_rng(seed).choice(len(df), max_points, replace=False))]


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=110)
    return path


def plot_matching(
    source_raw: pd.DataFrame,
    target_raw: pd.DataFrame,
    source_matched: pd.DataFrame,
    target_matched: pd.DataFrame,
    source_fields: Sequence[str],
    target_fields: Sequence[str],
    out_dir: str | Path,
    *,
    source_name: str = "source",
    target_name: str = "target",
    label: Callable[[str], str] = config.label,
    bins: int = 40,
    max_points: int = 20000,
    seed: int = 0,
) -> list[Path]:
    """Write raw-vs-matched histograms and scatter plots; return the PNG paths.

    ``source_raw``/``target_raw`` are the samples before matching, ``source_matched``/
    ``target_matched`` the matched objects (one row per object). Fields are aligned
    pairwise (their names may differ between datasets). Scatter plots show at most
    ``max_points`` points per sample (seeded random subsample). Axis labels come from
    ``label`` (default :func:`config.label`).
    """
    if len(source_fields) != len(target_fields) or not len(target_fields):
        raise ValueError(
            f"source_fields {list(source_fields)} and target_fields {list(target_fields)} "
            "must be non-empty and aligned pairwise"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"match_{_slug(source_name)}_to_{_slug(target_name)}"
    panels = (
        ("raw", source_raw, target_raw),
        ("matched", source_matched, target_matched),
    )
    paths: list[Path] = []

    for s_field, t_field in zip(source_fields, target_fields):
        data = [
            (title, _values(s, s_field, f"{title} source"), _values(t, t_field, f"{title} target"))
            for title, s, t in panels
        ]
        pooled = np.concatenate([v for _, s, t in data for v in (s, t)])
        edges = (np.histogram_bin_edges(pooled, bins=bins) if pooled.size
                 else np.linspace(0.0, 1.0, bins + 1))
        fig = Figure(figsize=(9.0, 3.6), layout="constrained")
        axes = fig.subplots(1, 2, sharex=True)
        for ax, (title, s, t) in zip(axes, data):
            for values, name, color in ((s, source_name, SOURCE_COLOR), (t, target_name, TARGET_COLOR)):
                if values.size:
                    ax.hist(values, bins=edges, density=True, histtype="stepfilled",
                            alpha=0.45, color=color, label=f"{name} ({values.size})")
            ax.set_title(title)
            ax.set_xlabel(_axis_label(s_field, t_field, label))
            ax.set_ylabel("density")
            ax.legend(fontsize="small")
        paths.append(_save(fig, out_dir / f"{stem}_hist_{_slug(t_field)}.png"))

    for (sx, tx), (sy, ty) in zip(
        zip(source_fields, target_fields), list(zip(source_fields, target_fields))[1:]
    ):
        fig = Figure(figsize=(9.0, 4.2), layout="constrained")
        axes = fig.subplots(1, 2, sharex=True, sharey=True)
        for ax, (title, s, t) in zip(axes, panels):
            for df, fx, fy, name, color in (
                (s, sx, sy, source_name, SOURCE_COLOR),
                (t, tx, ty, target_name, TARGET_COLOR),
            ):
                for f in (fx, fy):
                    if f not in df.columns:
                        raise KeyError(f"field {f!r} not in the {title} {name} table")
                shown = _subsample(df, max_points, seed)
                ax.scatter(shown[fx], shown[fy], s=2, alpha=0.4, color=color, rasterized=True,
                           label=f"{name} ({len(df)})", linewidths=0)
            ax.set_title(title)
            ax.set_xlabel(_axis_label(sx, tx, label))
            ax.set_ylabel(_axis_label(sy, ty, label))
            ax.legend(fontsize="small", markerscale=4)
        paths.append(_save(fig, out_dir / f"{stem}_scatter_{_slug(tx)}_{_slug(ty)}.png"))

    logger.info("wrote %d matching plots for %s → %s in %s", len(paths), source_name, target_name, out_dir)
    return paths
