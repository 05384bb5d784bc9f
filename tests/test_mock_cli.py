"""The mock CLI takes projections and workers from a params file; explicit options win."""
from __future__ import annotations


from scripts.mock.__main__ import build_kwargs, parse_args
from tests.conftest import demo_raw_params, write_params


def test_params_file_sets_projections_and_workers(tmp_path):
    raw = demo_raw_params()
    raw["extract"]["NUM_PROJECTIONS"] = [4, 2, 1, 3]
    raw["extract"]["NUM_WORKERS"] = 3
    path = write_params(tmp_path / "p.yaml", raw)
    kwargs = build_kwargs(parse_args(["--params", str(path), "--size", "demo"]))
    assert kwargs["num_projections"] == 4 and kwargs["n_jobs"] == 3 and kwargs["size"] == "demo"
    explicit = build_kwargs(parse_args(["--params", str(path), "--num-projections", "2", "--workers", "1"]))
    assert explicit["num_projections"] == 2 and explicit["n_jobs"] == 1
    plain = build_kwargs(parse_args([]))
    assert plain["num_projections"] == 3 and plain["n_jobs"] == 1
