"""Mock-universe rendering: the same fixed set of images on 1 worker, then on N workers.

``.venv/bin/python -m bench.bench_mock [--size small|demo] [--images K] [--workers N]``

Plans the universe (catalogues + image tasks) in a temporary folder, then renders and
writes the first K images (default: all of the preset) serially (baseline) and with N
joblib/loky workers, after a warm-up that starts the worker pool (pool start-up is
reported separately). Reports wall time, images/s and the speed-up ratio, and checks that
both runs wrote identical pixels.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from joblib import Parallel, delayed

from scripts.mock.jobs import run_task, run_tasks
from scripts.mock.universe import plan_universe

log = logging.getLogger("bench.bench_mock")


def _pixels(paths) -> list[np.ndarray]:
    out = []
    for p in paths:
        with fits.open(p) as h:
            out.append(h[0].data.copy())
    return out


def _timed(task) -> float:
    """Run one task and return the CPU seconds it used in its process."""
    c0 = time.process_time()
    run_task(task)
    return time.process_time() - c0


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(prog="python -m bench.bench_mock", description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="small", choices=["small", "demo"])
    ap.add_argument("--images", type=int, default=0, help="number of images (0: all of the preset)")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)

    with tempfile.TemporaryDirectory(prefix="bench_mock_") as tmp:
        raw = Path(tmp) / "raw"
        t0 = time.perf_counter()
        plan = plan_universe(raw, raw / "TNG", size=args.size)
        t_plan = time.perf_counter() - t0
        tasks = plan.all_tasks()
        if args.images:
            tasks = tasks[:args.images]
        paths = [t.path for t in tasks]

        load_before = os.getloadavg()[0]
        t0, c0 = time.perf_counter(), time.process_time()
        run_tasks(tasks, n_jobs=1, desc="1 worker")
        t_serial, c_serial = time.perf_counter() - t0, time.process_time() - c0
        reference = _pixels(paths)

        t0 = time.perf_counter()
        run_tasks(tasks[:2 * args.workers], n_jobs=args.workers, desc="warm-up")
        t_pool = time.perf_counter() - t0
        t0 = time.perf_counter()
        run_tasks(tasks, n_jobs=args.workers, desc=f"{args.workers} workers")
        t_par = time.perf_counter() - t0
        # CPU actually spent in the workers: parallel efficiency independent of other load
        t0 = time.perf_counter()
        cpu_workers = sum(Parallel(n_jobs=args.workers, backend="loky", batch_size=8)(delayed(_timed)(t) for t in tasks))
        t_par_timed = time.perf_counter() - t0
        same = all(np.array_equal(a, b) for a, b in zip(reference, _pixels(paths)))

    n = len(tasks)
    result = {"images": n, "plan_s": t_plan, "serial_s": t_serial, "serial_cpu_s": c_serial,
              "pool_start_s": t_pool, "parallel_s": t_par, "speedup": t_serial / t_par,
              "identical_pixels": same, "load_average": load_before, "cpus": os.cpu_count(),
              "worker_cpu_s": cpu_workers, "worker_cpu_share": cpu_workers / (args.workers * t_par_timed)}
    log.info("mock rendering benchmark (size=%s, %d images: galaxy cut-outs + X-ray maps)", args.size, n)
    log.info("  catalogues + planning:         %7.2f s", t_plan)
    log.info("  machine: %d CPUs, load average %.1f before the baseline", os.cpu_count(), load_before)
    log.info("  1 worker  (baseline):          %7.2f s  %6.1f images/s  (CPU %.2f s: %.0f %% of one core)",
             t_serial, n / t_serial, c_serial, 100 * c_serial / t_serial)
    log.info("  %d workers (pool warm):         %7.2f s  %6.1f images/s", args.workers, t_par, n / t_par)
    log.info("  pool start-up + warm-up:       %7.2f s", t_pool)
    log.info("  CPU in the workers (rerun):    %7.2f s  = %.0f %% of %d cores during %.2f s wall; "
             "serial CPU %.2f s", cpu_workers, 100 * result["worker_cpu_share"], args.workers, t_par_timed, c_serial)
    log.info("  speed-up %d vs 1 worker:        %7.2f x   identical pixels: %s", args.workers, result["speedup"], same)
    return result


if __name__ == "__main__":
    main()
