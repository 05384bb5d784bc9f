"""The posterior stage's known answers on the mock universe (issue: posterior stage).

The calibration acceptance — 68 % and 95 % coverage within ±0.05 of nominal for every
UNOBSERVABLE of the demo, R²(median) ≥ 0.8 for stellar mass, an over-confident posterior
caught by the coverage and PIT checks — measured on images, not on a synthetic table
(tests/test_infer.py):

* built by :mod:`bench.posterior_universe` (the same run the seeds bench measures):
  the mock universe at size ``posterior`` (1000 groups, :mod:`scripts.mock.sizes`), of which
  only MOCK_FIDUCIAL is rendered, one image per galaxy: snapshot 84 (z = 0.2) for galaxies
  with an even root descendant, 78 (z = 0.3) for odd ones, so the redshift observable varies
  as in the demo while every test object is independent. Its test split holds ~900 objects:
  the binomial error of a 68 % coverage is ±0.015 (the demo's 187 test objects give ±0.034,
  too coarse to judge ±0.05);
* extract and prepare with params.demo.yaml (extract's own Petrosian magnitudes and R90 are
  the OBSERVABLES), split by root descendant with fractions 0.4 / 0.1 / 0.5;
* the representation embedded by analyse's own code (:mod:`scripts.analysis.representation`)
  with the fixed aperture encoder of tests/test_analyse.py: the demo's trained encoder takes
  minutes to train, and calibration is a property of the flow and its recalibration given
  whatever representation conditions it;
* ``scripts.infer.run`` with params.demo.yaml's ``infer:`` section, but for the sets and
  ``NUM_WORKERS: 1`` (the fold flows are the same, tests/test_recalibration.py; worker
  processes would only add their TensorFlow imports to the suite).

About three minutes on one core (186–197 s measured; rendering ~2000 images is most of it).
"""
from __future__ import annotations

import copy

import h5py
import pandas as pd
import pytest

from bench.posterior_universe import RUN, SIM, build_run

TOL = 0.05


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    from scripts import infer
    from scripts.params import parse_params

    run = build_run(tmp_path_factory.mktemp("posterior_universe"))
    raw = copy.deepcopy(run["raw"])
    raw["infer"]["NUM_WORKERS"] = 1
    out = infer.run(parse_params(raw), run["dataset_root"], run["models_root"],
                    run["reports_root"])
    return {**run, "out": out, "raw": raw, "report": run["reports_root"] / RUN}


@pytest.mark.slow
def test_every_unobservable_is_calibrated_on_the_test_split(stage):
    post = stage["out"]["posterior"][SIM]
    fields = stage["raw"]["prepare"]["UNOBSERVABLES"][0]
    assert set(post) == set(fields)
    test = stage["splits"][stage["splits"]["split"] == "test"]
    # the statistical power the docstring promises: ~900 independent test objects
    assert test["split_group"].nunique() >= 850, test["split_group"].nunique()
    for field, m in post.items():
        assert m["n"] >= 850, (field, m["n"])
        assert abs(m["coverage_68"] - 0.68) <= TOL, (field, m["coverage_68"])
        assert abs(m["coverage_95"] - 0.95) <= TOL, (field, m["coverage_95"])
        assert m["width_ratio"] > 1.5, (field, m["width_ratio"])   # informative, not the prior
    assert post["stellar_mass"]["r2_median"] >= 0.8, post["stellar_mass"]["r2_median"]
    # the redshift observable varies (two snapshots), as in the demo
    assert set(stage["rendered"]["snapshot"]) == {78, 84}


@pytest.mark.slow
def test_an_over_confident_posterior_is_caught(stage):
    """The stage's samples of the test split, shrunk halfway towards each object's mean,
    fail the coverage and the PIT checks for every field."""
    from scripts import infer
    from scripts.posterior import calibration as cal

    summary = pd.read_parquet(stage["report"] / infer.SUMMARY_FILE)
    with h5py.File(stage["report"] / infer.SAMPLES_FILE) as h5:
        samples, fields = h5["samples"][:], list(h5.attrs["fields"])
    sel = ((summary["split"] == "test") & summary["posterior_ok"]).to_numpy()
    for j, field in enumerate(fields):
        s = samples[sel, :, j].astype(float)
        truth = summary.loc[sel, f"{field}_true"].to_numpy(float)
        centre = s.mean(axis=1, keepdims=True)
        shrunk = centre + 0.5 * (s - centre)
        assert cal.coverage(shrunk, truth, 0.68) < 0.68 - TOL, field
        assert cal.coverage(shrunk, truth, 0.95) < 0.95 - TOL, field
        assert cal.pit_ks_pvalue(cal.pit(shrunk, truth)) < 1e-3, field
