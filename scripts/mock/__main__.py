"""Command line: ``python -m scripts.mock [--params P] [--size small|demo] [--num-projections N]
[--seed S] [--workers N] [--raw-root DIR] [--illustris-root DIR] [--cc-criteria FILE]``.

``python -m scripts.mock --compare-real [FITS …] [--size demo] [--n N] [--plot PNG]`` builds
nothing: it measures a seeded sample of N images per mock set (default preset ``demo``) and
the given real TNG–HSC files (default: the one shipped in data/) with the extract stage's
own code, prints the medians side by side and plots the distributions
(:mod:`scripts.mock.compare_real`; default ``docs/mock_vs_real.png``).

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
    p.add_argument("--size", choices=sorted(SIZES), default=None,
                   help="size preset (default: small; demo with --compare-real)")
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
    p.add_argument("--compare-real", nargs="*", type=Path, default=None, metavar="FITS",
                   help="compare the mock with real TNG–HSC files (default: the one in data/) "
                        "instead of building")
    p.add_argument("--n", type=int, default=100, help="mock images per set for --compare-real (default 100)")
    p.add_argument("--plot", type=Path, default=Path("docs/mock_vs_real.png"),
                   help="figure written by --compare-real (default docs/mock_vs_real.png)")
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
        "size": ns.size or "small",
        "num_projections": ns.num_projections if ns.num_projections is not None else projections,
        "seed": ns.seed,
        "n_jobs": ns.workers if ns.workers is not None else workers,
        "cc_criteria_path": getattr(ns, "cc_criteria", None),
    }


def compare(ns: argparse.Namespace) -> "pd.DataFrame":
    """Measure mock and real images, print the medians, write the plot; returns the medians."""
    import numpy as np
    import pandas as pd

    from scripts.mock import compare_real
    from scripts.mock.population import IMAGING_LOG_MSTAR

    real_files = ns.compare_real or compare_real.default_real_files()
    missing = [str(p) for p in real_files if not Path(p).is_file()]
    if missing:
        raise SystemExit(f"--compare-real: no such file: {', '.join(missing)}")
    size = ns.size or "demo"
    real = compare_real.measure_files(real_files, "real")
    mock = compare_real.mock_sample(size, n_per_set=ns.n, seed=ns.seed)
    table = pd.concat([real, mock], ignore_index=True)
    medians = compare_real.summary(table)
    with pd.option_context("display.width", 160, "display.float_format", "{:.4g}".format):
        print(f"medians ({len(real)} real file(s), {ns.n} mock images per set, preset "
              f"{size}, seed {ns.seed}; neighbour_in_crop: fraction of images)")
        print(medians.to_string())
        print(f"\nmock S/N per stellar-mass bin (medians; the real file(s): "
              f"{', '.join(f'{v:.3g}' for v in real['snr_r'])})")
        print(compare_real.snr_by_mass(mock).to_string())
        real_mag = float(np.nanmedian(real["mag_r"]))
        print(f"\nmock S/N at the real file(s)' Petrosian r = {real_mag:.2f} (line of log10 S/N "
              "against r per set)")
        print(compare_real.snr_at_magnitude(mock, real_mag).to_string())
        cut = IMAGING_LOG_MSTAR
        q = (0.1, 0.5, 0.9)
        print(f"\nlog10 M★ quantiles {q} of the sample vs the GAMA mass function above {cut:.2f}: "
              f"{np.round(compare_real.smf_quantiles(cut, q), 2).tolist()}")
        for source, group in mock.groupby("source", sort=False):
            print(f"{source}: log10 M★ {np.round(np.quantile(group['stellar_mass'], q), 2).tolist()}, "
                  f"Petrosian r {np.round(np.nanquantile(group['mag_r'], q), 2).tolist()}")
    path = compare_real.plot(table, ns.plot)
    log.info("plot written to %s", path)
    return medians


def main(argv=None):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    ns = parse_args(argv)
    if ns.compare_real is not None:
        return compare(ns)
    summary = build_universe(**build_kwargs(ns))
    log.info("mock universe written:\n%s", json.dumps(summary, indent=2, default=str))
    return summary


if __name__ == "__main__":
    main()
