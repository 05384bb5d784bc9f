"""Mock step 5, rendering: per-image work items and their parallel execution (joblib).

Each task holds a scene of step 4 (:mod:`scripts.mock.scene`); the loky backend runs them.

A task carries everything its image needs, including its own noise seed, and writes its
FITS file in the worker; results come back in task order. The same tasks therefore give
identical files with any number of workers (or on a Dask/Ray cluster through joblib's
backends).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from joblib import Parallel, delayed
from tqdm.auto import tqdm

from scripts.mock import fits_io, measure, render, xray
from scripts.mock.fits_io import Card
from scripts.mock.render import GalaxyScene

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GalaxyImageTask:
    """Render a multi-band HSC-like cut-out; ``measure_band`` ≥ 0 measures Petrosian radii
    [px] on that band's noiseless subject model with the extract stage's fit
    (:func:`scripts.mock.measure.petrosian_radii`, for survey catalogues)."""

    path: str
    scene: GalaxyScene
    bands: tuple[str, ...]
    cards: tuple[tuple[Card, ...], ...]
    measure_band: int = -1


@dataclass(frozen=True)
class XrayImageTask:
    path: str
    scene: xray.XrayScene
    cards: tuple[Card, ...]


def run_task(task) -> dict:
    """Execute one task; returns measurements (empty for plain renders)."""
    if isinstance(task, GalaxyImageTask):
        out = render.render_scene(task.scene)
        fits_io.write_hsc_cutout(task.path, list(task.bands), out.image, out.mask, out.variance,
                                 [list(c) for c in task.cards])
        if task.measure_band >= 0:
            return measure.petrosian_radii(out.subject[task.measure_band])
        return {}
    if isinstance(task, XrayImageTask):
        image, _ = xray.render_xray(task.scene)
        fits_io.write_xray_map(task.path, image, list(task.cards), xray.EXTNAME)
        return {}
    raise TypeError(f"unknown task type {type(task).__name__}")


def run_tasks(tasks: list, n_jobs: int = 1, desc: str = "rendering") -> list[dict]:
    """Run ``tasks`` on ``n_jobs`` loky workers (1: in this process), in order."""
    if n_jobs == 1:
        return [run_task(t) for t in tqdm(tasks, desc=desc, leave=False, disable=None)]
    parallel = Parallel(n_jobs=n_jobs, backend="loky", return_as="generator", batch_size=8)
    results = []
    for res in tqdm(parallel(delayed(run_task)(t) for t in tasks), total=len(tasks), desc=desc, leave=False, disable=None):
        results.append(res)
    return results
