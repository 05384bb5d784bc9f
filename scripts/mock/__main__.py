"""Command line: ``python -m scripts.mock [--params P] [--size small|demo] [--num-projections N]
[--seed S] [--workers N] [--raw-root DIR] [--illustris-root DIR] [--cc-criteria FILE]``.

Paths default to ``config.dataset_raw_path`` and ``config.illustris_path``. With
``--params``, the number of projections of the simulated galaxies is taken from
``extract.NUM_PROJECTIONS`` (largest over the tng_stellar datasets) and the workers from
``extract.NUM_WORKERS``; explicit options win.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from scripts.mock.sizes import SIZES
from scripts.mock.universe import build_universe

log = logging.getLogger("scripts.mock")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m scripts.mock", description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small", help="size preset (default: small)")
    p.add_argument("--params", type=Path, default=None, help="params file to take projections/workers from")
    p.add_argument("--num-projections", type=int, default=None,
                   help="camera views per simulated object (default 3, or from --params)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the whole universe")
    p.add_argument("--workers", type=int, default=None,
                   help="parallel rendering processes (joblib/loky; default 1, or from --params)")
    p.add_argument("--raw-root", type=Path, default=None, help="image datasets (default: config.dataset_raw_path)")
    p.add_argument("--illustris-root", type=Path, default=None,
                   help="TNG-layout simulations (default: config.illustris_path)")
    p.add_argument("--cc-criteria", type=Path, default=None,
                   help="real TNG-Cluster CCcriteria.hdf5 (default: config.cc_criteria_path, data/tng_cluster/; env CC_CRITERIA)")
    return p.parse_args(argv)


def build_kwargs(ns: argparse.Namespace) -> dict:
    """Map parsed options (or any namespace with these attributes) to build_universe arguments."""
    import config
    projections, workers = 3, 1
    if getattr(ns, "params", None) is not None:
        from scripts.params import load_params
        extract = load_params(ns.params).extract
        stellar = [s.num_projections for s in extract.dataset_specs() if s.extractor == "tng_stellar"]
        projections = max(stellar) if stellar else projections
        workers = extract.num_workers
    return {
        "raw_root": ns.raw_root if ns.raw_root is not None else config.dataset_raw_path,
        "illustris_root": ns.illustris_root if ns.illustris_root is not None else config.illustris_path,
        "size": ns.size,
        "num_projections": ns.num_projections if ns.num_projections is not None else projections,
        "seed": ns.seed,
        "n_jobs": ns.workers if ns.workers is not None else workers,
        "cc_criteria_path": getattr(ns, "cc_criteria", None),
    }


def main(argv=None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    summary = build_universe(**build_kwargs(parse_args(argv)))
    log.info("mock universe written:\n%s", json.dumps(summary, indent=2, default=str))
    return summary


if __name__ == "__main__":
    main()
