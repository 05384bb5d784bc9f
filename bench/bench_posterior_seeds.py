"""Benchmark: how the posterior's calibration varies with the flow's seed, with and without
``infer.RECALIBRATION: quantile`` (issue 12).

A small training set makes one flow's coverage depend on its seed by more than the ±0.05
the issue allows, so a single run says little about a configuration. This bench reruns the
posterior stage on an analysed run's representation for several seeds and both methods,
each in a scratch copy (the run's own reports and models are not touched), and prints the
68 % / 95 % coverage of every test-split field, the largest deviation from nominal per
method, and how many (seed, field) pairs fall within the band. ``none`` is the baseline
measured in the same run.

    python -m bench.bench_posterior_seeds                         # demo run, seeds 0 1 2
    python -m bench.bench_posterior_seeds --params params.demo.xray.yaml --seeds 0 1 2
    python -m bench.bench_posterior_seeds --methods quantile quantile-validation

It needs the analysed run (``make demo``): ``reports/<run>/representation.parquet`` and
prepare's ``dataset/``. Paths come from ``config`` (``DATASET_PATH``, ``REPORTS_PATH``).
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

import config
from scripts.params import parse_params

#: variant name → infer overrides; ``none`` is the baseline of every comparison
VARIANTS = {"none": {"RECALIBRATION": "none"},
            "quantile": {"RECALIBRATION": "quantile", "RECALIBRATION_SPLITS": ["train", "validation"]},
            "quantile-validation": {"RECALIBRATION": "quantile",
                                    "RECALIBRATION_SPLITS": ["validation"]}}
METHODS = ("none", "quantile")
COPIED = ("representation.parquet", "analogues.parquet")


def scratch_run(reports_root: Path, run: str, scratch: Path) -> None:
    """Copy what the posterior stage reads of ``reports/<run>/`` into ``scratch/reports``;
    analyse's metrics are kept without any posterior of an earlier run."""
    src, dst = reports_root / run, scratch / "reports" / run
    if not (src / "representation.parquet").exists():
        raise FileNotFoundError(f"{src / 'representation.parquet'} does not exist; run the "
                                "analyse stage (make demo) first")
    dst.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    metrics = json.loads((src / "metrics.json").read_text()) if (src / "metrics.json").exists() else {}
    for key in ("posterior", "posterior_flow"):
        metrics.pop(key, None)
    (dst / "metrics.json").write_text(json.dumps(metrics))


def measure(raw: dict, seeds, dataset_root: Path, reports_root: Path, methods=METHODS) -> list[dict]:
    """One row per (method, seed, dataset, field) with the test-split coverage."""
    from scripts import infer

    rows = []
    for method in methods:
        for seed in seeds:
            variant = copy.deepcopy(raw)
            variant.setdefault("infer", {}).update(**VARIANTS[method], SEED=int(seed))
            variant.setdefault("tracking", {})["BACKENDS"] = ["none"]
            params = parse_params(variant)
            with tempfile.TemporaryDirectory(prefix="bench_posterior_") as tmp:
                scratch = Path(tmp)
                scratch_run(reports_root, params.infer.run_name, scratch)
                t0 = time.perf_counter()
                out = infer.run(params, dataset_root, scratch / "models", scratch / "reports")
                seconds = time.perf_counter() - t0
            for dataset, fields in out["posterior"].items():
                for field, m in fields.items():
                    rows.append({"method": method, "seed": int(seed), "dataset": dataset,
                                 "field": field, "coverage_68": m["coverage_68"],
                                 "coverage_95": m["coverage_95"], "pit_ks_p": m["pit_ks_p"],
                                 "r2_median": m["r2_median"], "seconds": seconds})
    return rows


def summarise(rows: list[dict], datasets) -> list[dict]:
    """Per method: the largest |coverage − nominal| and the (seed, field) pairs in the band,
    over ``datasets`` (the calibrated simulations; a misspecified one is meant to fail)."""
    from scripts.posterior.outputs import within_tolerance

    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method and r["dataset"] in datasets]
        if not mine:
            continue
        dev68 = max(abs(r["coverage_68"] - 0.68) for r in mine)
        dev95 = max(abs(r["coverage_95"] - 0.95) for r in mine)
        inside = sum(within_tolerance(r["coverage_68"], 0.68)
                     and within_tolerance(r["coverage_95"], 0.95) for r in mine)
        out.append({"method": method, "max_dev_68": dev68, "max_dev_95": dev95,
                    "in_band": inside, "pairs": len(mine),
                    "seconds": float(np.mean([r["seconds"] for r in mine]))})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="params.demo.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(VARIANTS),
                        help="variants compared (quantile-validation: the map from the "
                             "validation split's PIT values only)")
    parser.add_argument("--datasets", nargs="+", default=None,
                        help="sets judged (default: infer.TRAIN_SETS, the calibrated ones)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    raw = yaml.safe_load(Path(args.params).read_text())
    params = parse_params(raw)
    from scripts.infer import resolve_sets

    judged = args.datasets or resolve_sets(params)[0]
    rows = measure(raw, args.seeds, config.dataset_path, config.reports_path, args.methods)
    print(f"posterior coverage on the test split, {args.params}, seeds {args.seeds}")
    print("| method | seed | dataset | field | 68 % | 95 % | PIT p | R² median |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['seed']} | {r['dataset']} | {r['field']} | "
              f"{r['coverage_68']:.3f} | {r['coverage_95']:.3f} | {r['pit_ks_p']:.2g} | "
              f"{r['r2_median']:.3f} |")
    print(f"\nover {judged}: largest |coverage − nominal| and (seed, field) pairs within ±0.05")
    print("| method | max dev 68 % | max dev 95 % | in band | stage seconds (mean) |")
    print("|---|---|---|---|---|")
    for s in summarise(rows, judged):
        print(f"| {s['method']} | {s['max_dev_68']:.3f} | {s['max_dev_95']:.3f} | "
              f"{s['in_band']} / {s['pairs']} | {s['seconds']:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
