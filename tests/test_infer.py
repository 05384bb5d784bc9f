"""The posterior stage on a synthetic analysed run with known answers.

The run is synthetic (tests/posterior_fixtures.py: real prepare/analyse file formats, a
representation with a known conditional structure, 1000 independent test objects) rather
than the small mock universe, whose test split is too small and too correlated (three
projections per object) for coverage to be judged to ±0.05. One flow is trained for the
module (~20-50 s on 2 cores); every test reads its outputs.
"""
from __future__ import annotations

import copy
import json

import h5py
import numpy as np
import pandas as pd
import pytest

from scripts import infer
from scripts.params import parse_params
from scripts.posterior import calibration as cal
from scripts.tracking import NullTracker
from tests.posterior_fixtures import (COVERAGE_TOL, OBS, RUN, SIM, TARGETS, assert_known_answers,
                                      synthetic_raw_params, write_synthetic_run)

TOL = COVERAGE_TOL


class RecordingTracker(NullTracker):
    def __init__(self):
        self.calls = []

    def log_params(self, params):
        self.calls.append(("params", params))

    def log_metrics(self, metrics, step):
        self.calls.append(("metrics", dict(metrics), step))

    def log_images(self, name, images, step):
        self.calls.append(("images", name, np.shape(images)))


@pytest.fixture(scope="module")
def stage(tmp_path_factory):
    root = tmp_path_factory.mktemp("infer")
    info = write_synthetic_run(root)
    params = parse_params(synthetic_raw_params())
    tracker = RecordingTracker()
    out = infer.run(params, info["dataset_root"], info["models_root"], info["reports_root"],
                    tracker=tracker)
    info["tracker"] = tracker
    return info, out, info["reports_root"] / RUN


def test_posteriors_are_calibrated_on_the_test_split(stage):
    _, out, report = stage
    metrics = json.loads((report / "metrics.json").read_text())
    assert metrics["run_name"] == RUN and metrics["drivers"] == {}     # analyse's keys kept
    post = metrics["posterior"][SIM]
    assert set(post) == set(TARGETS)
    assert_known_answers(post)
    for field, m in post.items():
        # (the KS test on 1000 objects also flags slight shape errors; the coverage is the
        # acceptance, and a truly miscalibrated flow gives p < 1e-3: see below)
        assert 0 <= m["pit_ks_p"] <= 1
        assert m["width_ratio"] > 1.0 and m["calibrated"]
        assert m["n"] == 1000
    assert abs(post["stellar_mass"]["bias_median"]) < 0.05              # dex
    tarp = metrics["posterior_flow"]["tarp"][SIM]
    assert tarp["max_deviation"] < 0.08
    assert metrics["headline"]["posterior_calibration"][SIM]["stellar_mass"]["coverage_68"] \
        == post["stellar_mass"]["coverage_68"]


def _test_rows(report):
    summary = pd.read_parquet(report / infer.SUMMARY_FILE)
    with h5py.File(report / infer.SAMPLES_FILE) as h5:
        samples = h5["samples"][:]
        assert [d.decode() for d in h5["dataset"][:]] == summary["dataset"].tolist()
        assert list(h5.attrs["fields"]) == TARGETS
    sel = ((summary["dataset"] == SIM) & (summary["split"] == "test")).to_numpy()
    truth = summary.loc[sel, [f"{f}_true" for f in TARGETS]].to_numpy()
    return samples[sel], truth


def test_a_shrunk_posterior_is_detected(stage):
    """The stage's own samples pass; the same samples shrunk halfway towards their mean
    (an over-confident flow) fail both the coverage and the PIT check."""
    _, _, report = stage
    samples, truth = _test_rows(report)
    for j, field in enumerate(TARGETS):
        s = samples[:, :, j].astype(float)
        shrunk = s.mean(axis=1, keepdims=True) + 0.5 * (s - s.mean(axis=1, keepdims=True))
        assert abs(cal.coverage(s, truth[:, j], 0.68) - 0.68) <= TOL
        assert cal.coverage(shrunk, truth[:, j], 0.68) < 0.68 - TOL, field
        assert cal.coverage(shrunk, truth[:, j], 0.95) < 0.95 - TOL, field
        assert cal.pit_ks_pvalue(cal.pit(shrunk, truth[:, j])) < 1e-3, field
    assert cal.tarp(0.5 * samples, 0.5 * truth)["max_deviation"] < 0.08
    centre = samples.mean(axis=1, keepdims=True)
    assert cal.tarp(centre + 0.5 * (samples - centre), truth)["max_deviation"] > 0.1


def test_observed_set_is_inferred_through_the_positional_mapping(stage):
    """MOCK_HSC's photoz/i_cmodel_mag (scaled with their own statistics) enter as z/mag_I:
    its stellar-mass medians match the hidden truths as well as the simulated ones do."""
    info, _, report = stage
    summary = pd.read_parquet(report / infer.SUMMARY_FILE)
    obs = summary[summary["dataset"] == OBS].reset_index(drop=True)
    truth = info["observed_truth"]
    ok = obs["posterior_ok"].to_numpy()
    assert cal.r2(obs.loc[ok, "stellar_mass_median"], truth.loc[ok, "stellar_mass"]) >= 0.8
    assert abs(cal.bias(obs.loc[ok, "stellar_mass_median"], truth.loc[ok, "stellar_mass"])) < 0.05
    inside = (truth["stellar_mass"] >= obs["stellar_mass_p16"]) & (truth["stellar_mass"] <= obs["stellar_mass_p84"])
    assert abs(inside[ok].mean() - 0.68) <= 0.08
    assert obs[[f"{f}_true" for f in TARGETS]].isna().all().all()


def test_outputs_nan_rows_and_modes(stage):
    _, out, report = stage
    summary = pd.read_parquet(report / infer.SUMMARY_FILE)
    for f in TARGETS:
        for col in ("median", "p16", "p84", "p2.5", "p97.5", "mode1", "true"):
            assert f"{f}_{col}" in summary.columns
    ok = summary["posterior_ok"]
    assert (~ok).sum() == 3 and (summary.loc[~ok, "dataset"] == OBS).all()
    assert summary.loc[~ok, "stellar_mass_median"].isna().all()
    assert summary.loc[ok, "stellar_mass_mode1"].notna().all()
    good = summary[ok]
    assert (good["half_mass_radius_kpc_p2.5"] > 0).all()          # modelled in log10 (LOG_FIELDS)
    assert (good["stellar_mass_p16"] <= good["stellar_mass_median"]).all()
    assert (good["stellar_mass_median"] <= good["stellar_mass_p84"]).all()
    flow = out["posterior_flow"]
    assert flow["nan_condition_at_inference"] == {OBS: 3, SIM: 0}
    assert flow["excluded_from_training"]["count"] == 5
    excluded = pd.read_parquet(report / infer.EXCLUDED_FILE)
    assert excluded["row"].tolist() == [0, 1, 2, 3, 4] and set(excluded["nan_in"]) == {"target"}
    assert (report / f"{infer.REPORT_STEM}.html").exists()
    assert len(list((report / "plots" / "posterior").glob("corner_*.png"))) == 2
    assert (report / "plots" / "posterior" / "coverage.png").exists()


def test_observed_set_without_an_observable_is_named(stage, tmp_path):
    info, _, _ = stage
    raw = synthetic_raw_params()
    raw["prepare"]["OBSERVABLES"][0] = ["photoz"]            # MOCK_HSC is the first SETS entry
    with pytest.raises(ValueError, match=r"MOCK_HSC lacks the OBSERVABLE 'mag_I'"):
        infer.run(parse_params(raw), info["dataset_root"], tmp_path / "models", info["reports_root"])


def test_params_defaults_and_checks():
    raw = synthetic_raw_params()
    raw.pop("infer")
    params = parse_params(raw)
    assert params.infer.run_name == RUN and params.infer.num_samples == 400
    bad = copy.deepcopy(synthetic_raw_params(TRAIN_SETS=["MOCK_HSC"]))
    with pytest.raises(ValueError, match="infer.TRAIN_SETS"):
        parse_params(bad)


def test_tracking_gets_parameters_losses_and_calibration(stage):
    info, out, _ = stage
    calls = info["tracker"].calls
    assert any(c[0] == "params" and c[1]["infer"]["NUM_COUPLING_LAYERS"] == 3 for c in calls)
    epochs = [c for c in calls if c[0] == "metrics" and "flow/val_nll" in c[1]]
    assert len(epochs) == out["posterior_flow"]["training"]["epochs"]
    assert [c[2] for c in epochs] == list(range(1, len(epochs) + 1))
    final = [c[1] for c in calls if c[0] == "metrics" and any("coverage_68" in k for k in c[1])]
    assert final and f"posterior/{SIM}/stellar_mass/coverage_68" in final[0]
    assert {c[1] for c in calls if c[0] == "images"} >= {"posterior/coverage", "posterior/pit"}


def test_linear_mean_residuals_and_restore():
    """LinearMean recovers a linear conditional mean, standardises what it leaves, and
    restore() inverts residual() exactly; NaN conditions stay NaN."""
    from scripts.posterior.linear_mean import LinearMean

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 4))
    coef = np.array([[1.0, -0.5], [0.0, 2.0], [0.3, 0.0], [0.0, 0.0]])
    y = x @ coef + np.array([0.5, -1.0]) + rng.normal(scale=[0.2, 0.5], size=(2000, 2))
    model = LinearMean().fit(x, y)
    np.testing.assert_allclose(model.ridge_.coef_.T, coef, atol=0.03)
    resid = model.residual(y, x)
    np.testing.assert_allclose(resid.std(axis=0), 1.0, atol=1e-9)
    np.testing.assert_allclose(model.scale_, [0.2, 0.5], rtol=0.05)
    back = model.restore(resid[:, None, :], x)[:, 0, :]
    np.testing.assert_allclose(back, y, atol=1e-9)
    x_nan = x[:3].copy()
    x_nan[1, 2] = np.nan
    assert np.isnan(model.predict(x_nan)[1]).all() and np.isfinite(model.predict(x_nan)[[0, 2]]).all()


def test_linear_mean_stage_keeps_the_known_answers(tmp_path):
    """infer.LINEAR_MEAN: true (the flow on ridge residuals) passes the same acceptance as
    the plain flow on the synthetic run: coverage within ±0.05 at 68/95 % for every field
    and stellar-mass R² ≥ 0.8 on 1000 independent test objects."""
    info = write_synthetic_run(tmp_path)
    params = parse_params(synthetic_raw_params(LINEAR_MEAN=True))
    out = infer.run(params, info["dataset_root"], info["models_root"], info["reports_root"])
    assert_known_answers(out["posterior"][SIM])
