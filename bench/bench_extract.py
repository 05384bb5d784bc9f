"""Extract stage throughput: workers, memory bound and the naive loop, in one run.

``python -m bench.bench_extract [--n 3000] [--chunks 500]``

A survey dataset of ``n`` FITS files (copies of the mock universe's observed images with
new object ids, plus a catalogue) is extracted with Petrosian cropping:

1. images/s with NUM_WORKERS 1 and 2 (ratio);
2. peak RSS of the extract process at n and 4n images (ratio: must stay ~1, memory is
   bounded by SIZE_CHUNKS, not by the dataset);
3. the naive loop — open each file with astropy, fit the cropper, crop, resize and write
   one .npy file per image — against the stage at 1 worker (ratio).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

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


def params_file(path: Path, workers: int, chunks: int) -> Path:
    raw = {
        "extract": {"DATASETS": [DATASET], "EXTRACTORS": ["survey"], "FIELDS": [["photoz"]],
                    "LOAD": [True], "FRACTION": [1.0], "NUM_PROJECTIONS": [1],
                    "FILTERS": ["G", "R", "I"], "IMAGE_SIZE": 64, "PETRO_RADIUS_FACTOR": 2,
                    "USE_CACHE": False, "NUM_WORKERS": workers, "SIZE_CHUNKS": chunks},
        "prepare": {"SPLIT_SEED": 0, "SETS": [[DATASET, [0.8, 0.1, 0.1]]]},
        "tracking": {"BACKENDS": ["none"]},
    }
    path.write_text(yaml.safe_dump(raw))
    return path


def run_stage(params: Path, raw: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one extract process."""
    env = dict(os.environ, DATASET_RAW_PATH=str(raw), DATASET_PATH=str(out))
    code = ("import resource, sys, time; from scripts.preprocessing.extract import main; "
            "t = time.perf_counter(); rc = main(['--params', sys.argv[1]]); "
            "print('BENCH', time.perf_counter() - t, "
            "resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "
            "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(params)], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True)
    line = [l for l in proc.stdout.splitlines() if l.startswith("BENCH")][-1].split()
    return float(line[1]), max(float(line[2]), float(line[3]))


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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=3000, help="images of the smaller dataset")
    parser.add_argument("--chunks", type=int, default=500, help="SIZE_CHUNKS")
    args = parser.parse_args(argv)
    from scripts.mock.universe import build_universe

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        universe = tmp / "universe"
        build_universe(universe, universe / "TNG", size="small")
        results = {}
        raw_small, raw_large = tmp / "raw_small", tmp / "raw_large"
        make_dataset(raw_small, args.n, universe)
        make_dataset(raw_large, 4 * args.n, universe)
        p1 = params_file(tmp / "w1.yaml", 1, args.chunks)
        p2 = params_file(tmp / "w2.yaml", 2, args.chunks)
        run_stage(p1, raw_small, tmp / "warm")  # warm the file cache and imports
        shutil.rmtree(tmp / "warm")
        t1, rss_small = run_stage(p1, raw_small, tmp / "o1")
        t2, _ = run_stage(p2, raw_small, tmp / "o2")
        t_large, rss_large = run_stage(p1, raw_large, tmp / "o3")
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
