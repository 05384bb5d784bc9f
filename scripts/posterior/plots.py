"""Figures of the posterior stage: coverage curves, PIT histograms, corner plots."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from scripts.analysis.plots import _save  # noqa: E402
from scripts.posterior.calibration import CURVE_LEVELS  # noqa: E402


def plot_coverage(calibration: dict, tarp: dict, path: Path) -> Path:
    """Empirical vs nominal coverage per dataset (one panel each): every field's central
    intervals, and the joint TARP expected coverage."""
    names = list(calibration)
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 4), squeeze=False)
    for ax, name in zip(axes[0], names):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
        for field, m in calibration[name].items():
            ax.plot(CURVE_LEVELS, m["coverage_curve"], marker=".", label=field)
        if name in tarp and tarp[name].get("n"):
            ax.plot(tarp[name]["levels"], tarp[name]["ecp"], color="k", lw=2, label="TARP (joint)")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="credible level", ylabel="empirical coverage",
               title=f"{name} (test split)")
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_pit(calibration: dict, path: Path) -> Path:
    """PIT histograms, datasets × fields; the dashed line is the calibrated level."""
    names = list(calibration)
    fields = list(next(iter(calibration.values())))
    fig, axes = plt.subplots(len(names), len(fields), figsize=(3 * len(fields), 2.8 * len(names)),
                             squeeze=False)
    fig.subplots_adjust(hspace=0.7, wspace=0.3)
    for r, name in enumerate(names):
        for c, field in enumerate(fields):
            ax = axes[r][c]
            m = calibration[name][field]
            counts = np.asarray(m["pit_histogram"], float)
            edges = np.linspace(0, 1, len(counts) + 1)
            ax.bar(edges[:-1], counts, width=np.diff(edges), align="edge", color="C0", alpha=0.7)
            ax.axhline(counts.sum() / len(counts), color="k", ls="--", lw=1)
            ax.set_title(f"{name}: {field}\nKS p = {m['pit_ks_p']:.3g}", fontsize=8)
            ax.set_xlim(0, 1)
            ax.tick_params(labelsize=7)
    return _save(fig, path)


def plot_corner(samples: np.ndarray, fields, title: str, path: Path, analogues=None,
                truth=None) -> Path:
    """Corner plot of one object's samples (S, D); ``analogues`` (K, D) true values of its
    simulated analogues (red crosses / ticks), ``truth`` (D,) its own truth when known."""
    d = len(fields)
    fig, axes = plt.subplots(d, d, figsize=(2.2 * d, 2.2 * d), squeeze=False)
    for i in range(d):
        for j in range(d):
            ax = axes[i][j]
            if j > i:
                ax.axis("off")
                continue
            if i == j:
                ax.hist(samples[:, i], bins=30, color="C0", alpha=0.7)
                if analogues is not None:
                    for v in analogues[:, i]:
                        ax.axvline(v, color="C3", lw=1)
                if truth is not None:
                    ax.axvline(truth[i], color="k", lw=1.5)
            else:
                ax.scatter(samples[:, j], samples[:, i], s=2, alpha=0.3, color="C0")
                if analogues is not None:
                    ax.scatter(analogues[:, j], analogues[:, i], marker="x", color="C3", s=25)
                if truth is not None:
                    ax.scatter([truth[j]], [truth[i]], marker="*", color="k", s=60)
            if i == d - 1:
                ax.set_xlabel(fields[j], fontsize=8)
            if j == 0 and i > 0:
                ax.set_ylabel(fields[i], fontsize=8)
            ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)
