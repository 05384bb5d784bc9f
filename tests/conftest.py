"""Shared fixtures: the small mock universe and params pointing at temporary folders."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def demo_raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.demo.yaml").read_text())


def write_params(path: Path, raw: dict) -> Path:
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


@pytest.fixture(scope="session")
def small_universe(tmp_path_factory):
    """The mock universe at size 'small': (raw_root, illustris_root), built once."""
    from scripts.mock.universe import build_universe

    root = tmp_path_factory.mktemp("universe")
    raw, illustris = root / "dataset_raw", root / "dataset_raw" / "TNG"
    build_universe(raw_root=raw, illustris_root=illustris, size="small", num_projections=3,
                   seed=0, n_jobs=1)
    return raw, illustris


@pytest.fixture()
def small_params():
    """Raw params dict for the small universe (the demo file with tiny sizes)."""
    raw = copy.deepcopy(demo_raw_params())
    raw["extract"].update(IMAGE_SIZE=32, NUM_WORKERS=1, SIZE_CHUNKS=16)
    return raw


def stage_env(raw_root: Path, illustris_root: Path, dataset_root: Path, **extra) -> dict:
    """Environment for running a stage as a subprocess on temporary folders."""
    env = dict(os.environ)
    env.update(DATASET_RAW_PATH=str(raw_root), ILLUSTRIS_PATH=str(illustris_root),
               DATASET_PATH=str(dataset_root), TF_CPP_MIN_LOG_LEVEL="2", **extra)
    return env


@pytest.fixture(scope="session")
def extracted_small(small_universe, tmp_path_factory):
    """The small universe through the extract stage: (dataset_root, raw params dict)."""
    import config
    from scripts.params import parse_params
    from scripts.preprocessing import extract

    raw = copy.deepcopy(demo_raw_params())
    raw["extract"].update(IMAGE_SIZE=32, NUM_WORKERS=1, SIZE_CHUNKS=64)
    out = tmp_path_factory.mktemp("dataset_small")
    raw_root, illustris = small_universe
    extract.run(parse_params(raw).extract, raw_root, illustris, out, config.snapshot_redshifts_path)
    return out, raw


@pytest.fixture(scope="session")
def prepared_small(extracted_small, tmp_path_factory):
    """The small universe through extract and prepare: (dataset_root, raw params dict)."""
    import shutil

    from scripts.params import parse_params
    from scripts.preprocessing import prepare

    source, raw = extracted_small
    out = tmp_path_factory.mktemp("prepared_small") / "dataset"
    shutil.copytree(source, out)
    prepare.run(parse_params(raw).prepare, out, out.parent / "plots")
    return out, raw
