"""The posterior stage's run on the mock universe, for its known-answer test and the seeds bench.

A run folder whose test split is large enough to judge calibration to ±0.05: the mock
universe at size ``posterior`` (or ``--groups`` groups), of which only MOCK_FIDUCIAL is
rendered, one image per galaxy (snapshot 84 for an even root descendant, 78 for an odd one,
so redshift varies while every object is independent), through extract and prepare with
``params.demo.yaml`` (root-descendant splits 0.4 / 0.1 / 0.5), embedded by analyse's own
code with a fixed aperture encoder (tests/test_analyse.py: no training). The infer stage
then runs on it as on any analysed run:

    python -m bench.posterior_universe --root /tmp/post            # ~2 min on 2 cores
    DATASET_PATH=/tmp/post/dataset REPORTS_PATH=/tmp/post/reports MODELS_PATH=/tmp/post/models \\
        python -m bench.bench_posterior_seeds --params /tmp/post/params.yaml --seeds 0 1 2

``tests/test_infer_mock_calibration.py`` builds the same folder and runs the stage once.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

SIM = "MOCK_FIDUCIAL"
RUN = "aperture"
FRACTIONS = [0.4, 0.1, 0.5]


def raw_params() -> dict:
    """params.demo.yaml restricted to MOCK_FIDUCIAL, one projection, splits ``FRACTIONS``;
    its ``infer:`` section unchanged but for the sets."""
    from tests.conftest import demo_raw_params

    raw = copy.deepcopy(demo_raw_params())
    extract = raw["extract"]
    index = extract["DATASETS"].index(SIM)
    extract["LOAD"] = [name == SIM for name in extract["DATASETS"]]
    extract["NUM_PROJECTIONS"][index] = 1
    extract.update(NUM_WORKERS=1, SIZE_CHUNKS=256)
    prepare = raw["prepare"]
    index = [name for name, _ in prepare["SETS"]].index(SIM)
    prepare["SETS"] = [[SIM, FRACTIONS]]
    for key in ("MATCHING_FIELDS", "OBSERVABLES", "UNOBSERVABLES"):
        prepare[key] = [prepare[key][index]]
    prepare.update(MATCHING_SOURCE_SETS=[], MATCHING_TARGET_SETS=[])
    raw["train"].update(RUN_NAME=RUN, TRAIN_SETS=[SIM])
    raw["analyse"].update(OBSERVED_SETS=[], SIMULATED_SETS=[SIM])
    raw["infer"]["INFER_SETS"] = [SIM]
    raw["tracking"]["BACKENDS"] = ["none"]
    return raw


def render_one_image_per_galaxy(raw_root: Path, illustris_root: Path, groups: int | None = None,
                                seed: int = 0, n_jobs: int = 1) -> pd.DataFrame:
    """Plan the ``posterior`` universe (with ``groups`` groups if given) and render one
    MOCK_FIDUCIAL image per galaxy; returns the truth rows of the rendered images."""
    from scripts.mock.jobs import run_tasks
    from scripts.mock.sizes import get_size
    from scripts.mock.universe import GALAXY_SNAPSHOTS, plan_universe

    size = get_size("posterior")
    if groups is not None:
        size = dataclasses.replace(size, n_groups=int(groups))
    plan = plan_universe(raw_root, illustris_root, size=size, num_projections=1, seed=seed)
    truth = pd.DataFrame(plan.truth[SIM])
    early, late = GALAXY_SNAPSHOTS
    wanted = np.where(truth["root_descendant_id"].to_numpy() % 2 == 0, late, early)
    keep = np.flatnonzero(truth["snapshot"].to_numpy() == wanted)
    run_tasks([plan.tasks[SIM][i] for i in keep], n_jobs=n_jobs, desc="mock images")
    return truth.iloc[keep].reset_index(drop=True)


def build_run(root: Path, groups: int | None = None, seed: int = 0, n_jobs: int = 1) -> dict:
    """Write ``root/{dataset_raw,dataset,models,reports,params.yaml}``: the analysed run
    ``aperture`` ready for the infer stage. Returns its paths, raw params and rendered truth."""
    import config
    from scripts.analysis.representation import (REPRESENTATION_FILE, Embedder,
                                                 compute_representations, rows_to_embed)
    from scripts.params import parse_params
    from scripts.preprocessing import extract, prepare
    from tests.test_analyse import save_run

    root = Path(root)
    raw_root, illustris = root / "dataset_raw", root / "dataset_raw" / "TNG"
    rendered = render_one_image_per_galaxy(raw_root, illustris, groups, seed, n_jobs)
    raw = raw_params()
    params = parse_params(raw)
    dataset_root = root / "dataset"
    extract.run(params.extract, raw_root, illustris, dataset_root, config.snapshot_redshifts_path)
    prepare.run(params.prepare, dataset_root, root / "plots")
    splits = pd.read_parquet(dataset_root / "splits.parquet")
    run_dir = save_run(root / "models" / RUN, raw["extract"]["IMAGE_SIZE"], 3)
    compute_representations(Embedder.from_run(run_dir),
                            rows_to_embed(splits, [SIM], ["train", "validation", "test"]),
                            dataset_root, root / "reports" / RUN / REPRESENTATION_FILE)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return {"root": root, "dataset_root": dataset_root, "models_root": root / "models",
            "reports_root": root / "reports", "raw": raw, "splits": splits, "rendered": rendered}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, required=True, help="folder to write the run into")
    parser.add_argument("--groups", type=int, default=None,
                        help="FoF groups of the universe (default: size 'posterior', 1000)")
    parser.add_argument("--seed", type=int, default=0, help="the mock universe's seed")
    parser.add_argument("--jobs", type=int, default=2, help="rendering processes")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    out = build_run(args.root, args.groups, args.seed, args.jobs)
    test = out["splits"][out["splits"]["split"] == "test"]
    print(f"{len(out['rendered'])} images; test split {len(test)} images of "
          f"{test['split_group'].nunique()} objects; params in {out['root'] / 'params.yaml'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
