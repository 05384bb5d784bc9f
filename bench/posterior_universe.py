"""The posterior stage's runs on the mock universe, for its known-answer tests and the seeds bench.

A run folder whose test split is large enough to judge calibration to ±0.05 (~1300
independent test galaxies or ~1750 clusters: the binomial error of a 68 % coverage is
±0.013 or ±0.011), for one of two kinds of object:

* ``galaxy``: the mock universe at size ``posterior`` (or ``--groups`` groups), of which only
  MOCK_FIDUCIAL is rendered, one image per galaxy (snapshot 84 for an even root descendant,
  78 for an odd one, so redshift varies while every object is independent), with
  ``params.demo.yaml``;
* ``xray``: size ``posterior_xray`` (or ``--clusters`` clusters), of which only MOCK_XRAY is
  rendered, one map per cluster, with ``params.demo.xray.yaml``. The clusters outnumber the
  352 real CCcriteria rows, which are drawn with replacement: independent draws from the
  real catalogue's distribution of central cooling times, each with its own mass, shape
  and noise (:func:`scripts.mock.cc_criteria.draw_rows`).

Each goes through extract and prepare with its demo params (root-descendant splits
0.4 / 0.1 / 0.5) and is embedded by analyse's own code with the fixed aperture encoder of
:mod:`bench.aperture_encoder` (no training). The infer stage then runs on it as on any
analysed run:

    python -m bench.posterior_universe --root /tmp/post [--kind xray]     # ~2 min on 2 cores
    DATASET_PATH=/tmp/post/dataset REPORTS_PATH=/tmp/post/reports MODELS_PATH=/tmp/post/models \\
        python -m bench.bench_posterior_seeds --params /tmp/post/params.yaml --seeds 0 1 2

``tests/test_infer_mock_calibration.py`` builds the same folders and runs the stage once.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

RUN = "aperture"
FRACTIONS = [0.4, 0.1, 0.5]


@dataclass(frozen=True)
class Kind:
    """One kind of calibration run: the set it renders and the demo params it follows."""

    dataset: str
    params_file: str
    size: str
    n_bands: int
    count_field: str    # the UniverseSize count that ``--groups`` / ``--clusters`` sets


KINDS = {
    "galaxy": Kind("MOCK_FIDUCIAL", "params.demo.yaml", "posterior", 3, "n_groups"),
    "xray": Kind("MOCK_XRAY", "params.demo.xray.yaml", "posterior_xray", 1, "n_clusters"),
}


def raw_params(kind: str = "galaxy") -> dict:
    """The kind's demo params restricted to its set, one projection, splits ``FRACTIONS``;
    the ``infer:`` section unchanged but for the sets."""
    import config

    spec = KINDS[kind]
    sim = spec.dataset
    raw = yaml.safe_load((config.root_path / spec.params_file).read_text())
    extract = raw["extract"]
    index = extract["DATASETS"].index(sim)
    extract["LOAD"] = [name == sim for name in extract["DATASETS"]]
    extract["NUM_PROJECTIONS"][index] = 1
    extract.update(NUM_WORKERS=1, SIZE_CHUNKS=256)
    prepare = raw["prepare"]
    index = [name for name, _ in prepare["SETS"]].index(sim)
    prepare["SETS"] = [[sim, FRACTIONS]]
    for key in ("MATCHING_FIELDS", "OBSERVABLES", "UNOBSERVABLES"):
        prepare[key] = [prepare[key][index]]
    prepare.update(MATCHING_SOURCE_SETS=[], MATCHING_TARGET_SETS=[])
    raw["train"].update(RUN_NAME=RUN, TRAIN_SETS=[sim])
    raw["analyse"].update(OBSERVED_SETS=[], SIMULATED_SETS=[sim])
    raw["infer"]["INFER_SETS"] = [sim]
    raw["tracking"]["BACKENDS"] = ["none"]
    return raw


def _size(kind: str, count: int | None):
    from scripts.mock.sizes import get_size

    spec = KINDS[kind]
    size = get_size(spec.size)
    if count is None:
        return size
    return dataclasses.replace(size, **{spec.count_field: int(count)})


def render_one_image_per_object(raw_root: Path, illustris_root: Path, kind: str = "galaxy",
                                count: int | None = None, seed: int = 0,
                                n_jobs: int = 1) -> pd.DataFrame:
    """Plan the kind's universe (``count`` groups or clusters if given) and render one image
    of each of its objects; returns the truth rows of the rendered images."""
    from scripts.mock.jobs import run_tasks
    from scripts.mock.universe import GALAXY_SNAPSHOTS, plan_universe

    sim = KINDS[kind].dataset
    plan = plan_universe(raw_root, illustris_root, size=_size(kind, count), num_projections=1, seed=seed)
    truth = pd.DataFrame(plan.truth[sim])
    if kind == "galaxy":
        early, late = GALAXY_SNAPSHOTS
        wanted = np.where(truth["root_descendant_id"].to_numpy() % 2 == 0, late, early)
        keep = np.flatnonzero(truth["snapshot"].to_numpy() == wanted)
    else:                                   # one snapshot and one projection per cluster
        keep = np.arange(len(truth))
    run_tasks([plan.tasks[sim][i] for i in keep], n_jobs=n_jobs, desc="mock images")
    return truth.iloc[keep].reset_index(drop=True)


def build_run(root: Path, count: int | None = None, seed: int = 0, n_jobs: int = 1,
              kind: str = "galaxy") -> dict:
    """Write ``root/{dataset_raw,dataset,models,reports,params.yaml}``: the analysed run
    ``aperture`` ready for the infer stage. Returns its paths, raw params and rendered truth."""
    import config
    from bench.aperture_encoder import save_run
    from scripts.analysis.representation import (REPRESENTATION_FILE, Embedder,
                                                 compute_representations, rows_to_embed)
    from scripts.params import parse_params
    from scripts.preprocessing import extract, prepare

    spec = KINDS[kind]
    root = Path(root)
    raw_root, illustris = root / "dataset_raw", root / "dataset_raw" / "TNG"
    rendered = render_one_image_per_object(raw_root, illustris, kind, count, seed, n_jobs)
    raw = raw_params(kind)
    params = parse_params(raw)
    dataset_root = root / "dataset"
    extract.run(params.extract, raw_root, illustris, dataset_root, config.snapshot_redshifts_path)
    prepare.run(params.prepare, dataset_root, root / "plots")
    splits = pd.read_parquet(dataset_root / "splits.parquet")
    run_dir = save_run(root / "models" / RUN, raw["extract"]["IMAGE_SIZE"], spec.n_bands)
    compute_representations(Embedder.from_run(run_dir),
                            rows_to_embed(splits, [spec.dataset], ["train", "validation", "test"]),
                            dataset_root, root / "reports" / RUN / REPRESENTATION_FILE)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return {"root": root, "dataset_root": dataset_root, "models_root": root / "models",
            "reports_root": root / "reports", "raw": raw, "splits": splits, "rendered": rendered,
            "dataset": spec.dataset}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder to write the run into")
    parser.add_argument("--kind", choices=sorted(KINDS), default="galaxy",
                        help="galaxies (MOCK_FIDUCIAL) or clusters (MOCK_XRAY)")
    parser.add_argument("--groups", "--clusters", dest="count", type=int, default=None,
                        help="FoF groups (galaxy) or clusters (xray) of the universe "
                             "(default: size 'posterior', 1500 groups, or 'posterior_xray', 3600 clusters)")
    parser.add_argument("--seed", type=int, default=0, help="the mock universe's seed")
    parser.add_argument("--jobs", type=int, default=2, help="rendering processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = build_run(args.root, args.count, args.seed, args.jobs, args.kind)
    test = out["splits"][out["splits"]["split"] == "test"]
    print(f"{len(out['rendered'])} images; test split {len(test)} images of "
          f"{test['split_group'].nunique()} objects; params in {out['root'] / 'params.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
