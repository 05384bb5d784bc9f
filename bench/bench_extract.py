"""Extract stage throughput: workers, memory bound and the naive loop, in one run.

``python -m bench.bench_extract [--n 3000] [--chunks 500]``

A survey dataset of ``n`` FITS files (copies of the mock universe's observed images with
new object ids, plus a catalogue) is extracted with Petrosian cropping:

1. images/s with NUM_WORKERS 1 and 2 (ratio);
2. peak RSS of the extract process at n and 4n images (ratio: must stay ~1, memory is
   bounded by SIZE_CHUNKS, not by the dataset);
3. the naive loop — open each file with astropy, fit the cropper, crop, resize and write
   one .npy file per image — against the stage at 1 worker (ratio).

``python -m bench.bench_extract --scaling ROUNDS [--rev REV] [--neighbours mask]`` studies
2 workers against 1 alone (``--neighbours mask``: with the neighbour mask every preset
uses): ROUNDS alternating rounds (ratios per round, so a shared machine's load hits both
alike), the code of git revision REV in the same rounds for a before/after, a cProfile of
the main process at 1 and 2 workers split by part (chunk commits, final store, waiting for
workers), the CPU seconds of the main process and of the workers, the start-up of two
workers, the cost of moving one result from a worker to the main process, and one image's
CPU inside the call in the main process alone against two workers computing at once.

``python -m bench.bench_extract --neighbours-cost ROUNDS [--n N]`` measures what
``extract.NEIGHBOURS: mask`` costs: CPU per image of the per-image work (read, Petrosian
fit, crop, resize, photometry) with ``keep`` and with ``mask``, alternating over ROUNDS
rounds on the same N files, and the ratio mask / keep per round.
"""
from __future__ import annotations

import argparse
import json
import os
import pickle
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import yaml
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
DATASET = "BENCH_SURVEY"


def make_dataset(raw: Path, n: int, universe: Path) -> None:
    src = sorted((universe / "MOCK_HSC" / "images").glob("*.fits"))
    images = raw / DATASET / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        target = images / f"{i + 1}_HSC_GRIZY.fits"
        if not target.exists():
            os.link(src[i % len(src)], target)
    pd.DataFrame({"object_id": np.arange(1, n + 1), "photoz": 0.1}).to_csv(
        raw / DATASET / "catalogue.csv", index=False)


def params_file(path: Path, workers: int, chunks: int, neighbours: str = "keep") -> Path:
    raw = {
        "extract": {"DATASETS": [DATASET], "EXTRACTORS": ["survey"], "FIELDS": [["photoz"]],
                    "LOAD": [True], "FRACTION": [1.0], "NUM_PROJECTIONS": [1],
                    "FILTERS": ["G", "R", "I"], "IMAGE_SIZE": 64, "PETRO_RADIUS_FACTOR": 2,
                    "NEIGHBOURS": neighbours,
                    "USE_CACHE": False, "NUM_WORKERS": workers, "SIZE_CHUNKS": chunks},
        "prepare": {"SPLIT_SEED": 0, "SETS": [[DATASET, [0.8, 0.1, 0.1]]]},
        "tracking": {"BACKENDS": ["none"]},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


@dataclass
class StageRun:
    """One extract process: wall seconds of ``main``, peak RSS, CPU of the main process."""

    seconds: float
    peak_rss_mib: float
    main_cpu_s: float  # every thread of the main process, not its workers
    workers_cpu_s: float  # the (still running) loky workers, start-up included


def run_stage(params: Path, raw: Path, out: Path, profile: Path | None = None,
              root: Path = ROOT) -> StageRun:
    """One extract process (``main`` only, not the imports); with ``profile``, the main
    process runs under cProfile and dumps its stats there. ``root``: the checkout whose
    code runs (another revision, for a before/after)."""
    env = dict(os.environ, DATASET_RAW_PATH=str(raw), DATASET_PATH=str(out))
    call = ("cProfile.run(\"rc = main(['--params', sys.argv[1]])\", sys.argv[2])" if profile
            else "rc = main(['--params', sys.argv[1]])")
    code = ("import cProfile, psutil, resource, sys, time; from scripts.preprocessing.extract import main; "
            f"t, c = time.perf_counter(), time.process_time(); {call}; "
            "print('BENCH', time.perf_counter() - t, "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "
            "time.process_time() - c, sum(sum(p.cpu_times()[:2]) for p in "
            "psutil.Process().children(recursive=True))); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(params), str(profile)], cwd=root,
                          env=env, capture_output=True, text=True, check=True)
    line = [l for l in proc.stdout.splitlines() if l.startswith("BENCH")][-1].split()
    return StageRun(float(line[1]), max(float(line[2]), float(line[3])), float(line[4]),
                    float(line[5]))


def naive_loop(raw: Path, out: Path, image_size: int = 64) -> float:
    """Open → crop → resize → write one file at a time; returns seconds."""
    from astropy.io import fits

    from scripts.preprocessing.croppers import PetrosianCropper
    from scripts.preprocessing.resize import resize_area

    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for path in sorted((raw / DATASET / "images").glob("*.fits")):
        with fits.open(path) as hdul:
            cube = np.stack([hdul[f"SUBARU_HSC.{b}"].data for b in "GRI"], axis=-1).astype(np.float32)
        crop = PetrosianCropper(2.0, reference_band=1)(cube)
        np.save(out / (path.stem + ".npy"), resize_area(crop, image_size))
    return time.perf_counter() - start


def worker_startup(root: Path = ROOT) -> dict[str, float]:
    """Wall seconds until two fresh loky workers have imported what extract's tasks need
    (``process_image`` is pickled by reference, so a worker imports its module,
    ``image_preprocessing``), and the CPU seconds the two spent, timed in a process that has
    imported the extract stage already (as the stage has). The task is defined in
    ``__main__``, so loky sends it by value and the worker imports nothing else for it."""
    code = ("import os, time, joblib, psutil; import scripts.preprocessing.extract\n"
            "def task(_):\n    import scripts.preprocessing.image_preprocessing\n"
            "    return os.getpid()\n"
            "t = time.perf_counter(); "
            "pids = joblib.Parallel(n_jobs=2)(joblib.delayed(task)(i) for i in range(2)); "
            "print('BENCH', time.perf_counter() - t, sum(sum(psutil.Process(p).cpu_times()[:2]) "
            "for p in set(pids)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                          check=True)
    line = [l for l in proc.stdout.splitlines() if l.startswith("BENCH")][-1].split()
    return {"wall_s": float(line[1]), "cpu_s_two_workers": float(line[2])}


def transfer_seconds_per_image(raw: Path, image_size: int = 64) -> float:
    """Pickle + unpickle of one image's result (what crosses from a worker to the main
    process), per image, over the first 50 files."""
    from scripts.preprocessing.image_preprocessing import process_image

    files = sorted((raw / DATASET / "images").glob("*.fits"))[:50]
    crop = {"name": "petrosian", "petro_radius_factor": 2.0, "reference_band": 1}
    results = [process_image(str(f), ("SUBARU_HSC.G", "SUBARU_HSC.R", "SUBARU_HSC.I"),
                             ("G", "R", "I"), crop, image_size, {}) for f in files]
    start = time.perf_counter()
    for _ in range(10):
        pickle.loads(pickle.dumps(results))
    return (time.perf_counter() - start) / (10 * len(results))


def _process_image_cpu(path: str) -> float:
    """CPU seconds of :func:`process_image` on one file, in whatever process runs it."""
    from scripts.preprocessing.image_preprocessing import process_image

    start = time.process_time()
    process_image(path, ("SUBARU_HSC.G", "SUBARU_HSC.R", "SUBARU_HSC.I"), ("G", "R", "I"),
                  {"name": "petrosian", "petro_radius_factor": 2.0, "reference_band": 1}, 64, {})
    return time.process_time() - start


def image_cpu_main_and_workers(raw: Path, rounds: int, n: int = 600) -> dict[str, list[float]]:
    """Mean CPU milliseconds of one image's processing, measured inside the call: in this
    process alone (one BLAS thread, as extract runs NUM_WORKERS 1), and in two loky workers
    computing at once (warm), alternating rounds. The difference is what two processes
    computing together cost each other (shared caches, memory bandwidth, the host), not
    dispatch or transfer."""
    files = [str(p) for p in sorted((raw / DATASET / "images").glob("*.fits"))[:n]]
    joblib.Parallel(n_jobs=2)(joblib.delayed(_process_image_cpu)(f) for f in files[:20])
    out: dict[str, list[float]] = {"main_ms": [], "two_workers_ms": []}
    for r in range(rounds):
        for mode in (("main_ms", "two_workers_ms") if r % 2 == 0 else ("two_workers_ms", "main_ms")):
            if mode == "main_ms":  # one BLAS thread, as extract runs one worker (workers.py)
                with threadpool_limits(limits=1, user_api="blas"):
                    cpu = [_process_image_cpu(f) for f in files]
            else:
                cpu = joblib.Parallel(n_jobs=2)(joblib.delayed(_process_image_cpu)(f) for f in files)
            out[mode].append(1e3 * float(np.mean(cpu)))
    return out


def profile_breakdown(path: Path) -> dict[str, float]:
    """Seconds of the main thread in each part of extract, from its cProfile dump.

    Work done in joblib's own threads of the main process (dispatching the next tasks,
    receiving results) is not in the main thread's profile; it is in ``main_cpu_s``.
    """
    stats = pstats.Stats(str(path)).stats

    def cumulative(func: str, module: str) -> float:
        return sum(v[3] for (file, _, name), v in stats.items()
                   if name == func and file.endswith(module))

    parts = {
        "listing_and_catalogue": cumulative("list_images", "dataset_kinds.py")
        + cumulative("catalogue", "dataset_kinds.py") + cumulative("unit_stat", "dataset_kinds.py"),
        "task_arguments": cumulative("task", "extract.py"),
        "process_image_in_main": cumulative("process_image", "image_preprocessing.py"),
        "chunk_commits": cumulative("write", "chunk_cache.py"),
        "final_store": cumulative("_assemble", "extract.py"),
    }
    total = cumulative("extract_dataset", "extract.py")
    parts["other_incl_waiting_for_workers"] = total - sum(parts.values())
    return {"extract_dataset_s": total, **parts}


def scaling(args, tmp: Path, universe: Path) -> dict:
    """NUM_WORKERS 1 against 2 in alternating rounds (the order flips every round, so a
    load that changes slowly hits both alike), optionally against the code of ``--rev``;
    then one profiled run of each and the start-up and transfer costs."""
    raw = tmp / "raw_small"
    make_dataset(raw, args.n, universe)
    params = {w: params_file(tmp / f"w{w}.yaml", w, args.chunks, args.neighbours) for w in (1, 2)}
    roots = {"new": ROOT}
    if args.rev:
        roots["rev"] = tmp / "rev"
        roots["rev"].mkdir()
        archive = subprocess.run(["git", "archive", args.rev], cwd=ROOT, capture_output=True,
                                 check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(roots["rev"])], input=archive, check=True)
    run_stage(params[1], raw, tmp / "warm")  # warm the file cache
    shutil.rmtree(tmp / "warm")
    runs = [(code, w) for code in roots for w in (1, 2)]
    seconds: dict[str, list[float]] = {f"{c}_w{w}": [] for c, w in runs}
    main_cpu: dict[str, list[float]] = {f"{c}_w{w}": [] for c, w in runs}
    workers_cpu: dict[str, list[float]] = {f"{c}_w{w}": [] for c, w in runs}
    for r in range(args.scaling):
        for code, w in (runs if r % 2 == 0 else runs[::-1]):
            out = tmp / f"o_{code}_{w}"
            run = run_stage(params[w], raw, out, root=roots[code])
            shutil.rmtree(out)
            seconds[f"{code}_w{w}"].append(run.seconds)
            main_cpu[f"{code}_w{w}"].append(run.main_cpu_s)
            workers_cpu[f"{code}_w{w}"].append(run.workers_cpu_s)
    result = {"images": args.n, "size_chunks": args.chunks, "rounds": args.scaling,
              "neighbours": args.neighbours,
              "seconds": seconds, "main_process_cpu_s": main_cpu, "workers_cpu_s": workers_cpu}
    for code in roots:
        ratios = [a / b for a, b in zip(seconds[f"{code}_w1"], seconds[f"{code}_w2"])]
        result[f"{code}_ratios_w2_over_w1"] = ratios
        result[f"{code}_median_ratio"] = float(np.median(ratios))
        # what 2 idle cores could give at best: all the CPU work of the 2-worker run packed
        # perfectly on both cores, against the 1-worker run's CPU (one core, no idling)
        one = np.median(main_cpu[f"{code}_w1"])
        two = np.median([m + w for m, w in zip(main_cpu[f"{code}_w2"], workers_cpu[f"{code}_w2"])])
        result[f"{code}_cpu_bound_ratio"] = float(one / (two / 2))
    for code in roots:
        for w in (1, 2):
            dump = tmp / f"{code}_w{w}.prof"
            run = run_stage(params[w], raw, tmp / "prof", profile=dump, root=roots[code])
            shutil.rmtree(tmp / "prof")
            result[f"profile_{code}_w{w}"] = {"wall_s": run.seconds, "main_cpu_s": run.main_cpu_s,
                                              "workers_cpu_s": run.workers_cpu_s,
                                              **profile_breakdown(dump)}
    result["worker_startup"] = [worker_startup() for _ in range(3)]
    result["transfer_s_per_image"] = transfer_seconds_per_image(raw)
    result["image_cpu"] = image_cpu_main_and_workers(raw, max(args.scaling, 2))
    result["load_average"] = os.getloadavg()
    return result


def neighbour_mask_cost(raw: Path, rounds: int, image_size: int = 64) -> dict:
    """CPU ms per image of :func:`process_image` with NEIGHBOURS keep and mask, alternating
    rounds over the same files, and the mask / keep ratio of each round."""
    from scripts.preprocessing.image_preprocessing import process_image

    files = [str(f) for f in sorted((raw / DATASET / "images").glob("*.fits"))]
    keep = {"name": "petrosian", "petro_radius_factor": 2.0, "reference_band": 1}
    crops = {"keep": keep, "mask": {**keep, "neighbours": "mask"}}
    ms = {mode: [] for mode in crops}
    for _ in range(rounds):
        for mode, crop in crops.items():
            start = time.process_time()
            for f in files:
                process_image(f, ("SUBARU_HSC.G", "SUBARU_HSC.R", "SUBARU_HSC.I"), ("G", "R", "I"),
                              crop, image_size, {}, pad_seed=1)
            ms[mode].append(1e3 * (time.process_time() - start) / len(files))
    ratios = [m / k for k, m in zip(ms["keep"], ms["mask"])]
    return {"images": len(files), "cpu_ms_per_image": ms, "mask_over_keep": ratios,
            "median_mask_over_keep": float(np.median(ratios))}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="images of the smaller dataset")
    parser.add_argument("--chunks", type=int, default=500, help="SIZE_CHUNKS")
    parser.add_argument("--scaling", type=int, default=0, metavar="ROUNDS",
                        help="only the 1-against-2-workers study: ROUNDS alternating rounds, "
                             "then profiles")
    parser.add_argument("--rev", help="with --scaling: also time the code of this git revision")
    parser.add_argument("--neighbours", choices=("keep", "mask"), default="keep",
                        help="with --scaling: extract.NEIGHBOURS of both runs (default keep; "
                             "every preset uses mask)")
    parser.add_argument("--neighbours-cost", type=int, default=0, metavar="ROUNDS",
                        help="only the CPU cost of extract.NEIGHBOURS: mask against keep, per "
                             "image, in ROUNDS alternating rounds over --n files")
    args = parser.parse_args(argv)
    from scripts.mock.universe import build_universe

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        universe = tmp / "universe"
        build_universe(universe, universe / "TNG", size="small")
        if args.scaling:
            print(json.dumps(scaling(args, tmp, universe), indent=2))
            return
        if args.neighbours_cost:
            make_dataset(tmp / "raw", args.n, universe)
            print(json.dumps(neighbour_mask_cost(tmp / "raw", args.neighbours_cost), indent=2))
            return
        results = {}
        raw_small, raw_large = tmp / "raw_small", tmp / "raw_large"
        make_dataset(raw_small, args.n, universe)
        make_dataset(raw_large, 4 * args.n, universe)
        p1 = params_file(tmp / "w1.yaml", 1, args.chunks)
        p2 = params_file(tmp / "w2.yaml", 2, args.chunks)
        run_stage(p1, raw_small, tmp / "warm")  # warm the file cache and imports
        shutil.rmtree(tmp / "warm")
        one, two = run_stage(p1, raw_small, tmp / "o1"), run_stage(p2, raw_small, tmp / "o2")
        large = run_stage(p1, raw_large, tmp / "o3")
        t1, t2, rss_small, rss_large = one.seconds, two.seconds, one.peak_rss_mib, large.peak_rss_mib
        t_naive = naive_loop(raw_small, tmp / "naive")
        n = args.n
        results = {
            "images": n,
            "stage_1_worker_img_s": n / t1, "stage_2_workers_img_s": n / t2,
            "workers_2_over_1": t1 / t2,
            "naive_loop_img_s": n / t_naive, "stage_1_worker_over_naive": t_naive / t1,
            "stage_2_workers_over_naive": t_naive / t2,
            "peak_rss_mib": {str(n): rss_small, str(4 * n): rss_large},
            "peak_rss_ratio_4n_over_n": rss_large / rss_small,
            "size_chunks": args.chunks, "cpus": os.cpu_count(),
        }
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
