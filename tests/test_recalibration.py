"""infer.RECALIBRATION: quantile — the cross-fitted quantile recalibration of the posterior.

Known answers: the map of held-out PIT values of an over-confident (or under-confident)
Gaussian posterior restores the nominal coverage of new objects; uniform PIT values
leave the samples as they are; the quantile average keeps a single member's width where
pooling widens it; folds never split an object. The stage test runs the whole cross-fit
on the synthetic analysed run (1000 independent test objects).
"""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from scripts import infer
from scripts.params import ParamsError, parse_params
from scripts.posterior import calibration as cal
from scripts.posterior.recalibration import (QuantileRecalibration, fold_of_groups,
                                             quantile_average)
from tests.posterior_fixtures import RUN, SIM, assert_known_answers, synthetic_raw_params, write_synthetic_run


def _gaussian_posteriors(rng, n, s, width):
    """Truth ~ N(mu, 1) for posteriors N(mu, width²): calibrated when width = 1."""
    mu = rng.normal(size=n)
    truth = mu + rng.normal(size=n)
    samples = mu[:, None, None] + width * rng.normal(size=(n, s, 1))
    return samples, truth


@pytest.mark.parametrize("width", [0.75, 1.5])
def test_map_of_held_out_pits_restores_the_coverage(width):
    rng = np.random.default_rng(1)
    held, held_truth = _gaussian_posteriors(rng, 2000, 400, width)
    pits = cal.pit(held[:, :, 0], held_truth)
    new, new_truth = _gaussian_posteriors(rng, 3000, 400, width)
    before = {lv: cal.coverage(new[:, :, 0], new_truth, lv) for lv in (0.68, 0.95)}
    assert abs(before[0.68] - 0.68) > 0.1             # the miscalibration is there to fix
    fixed = QuantileRecalibration().fit(pits[:, None]).transform(new)
    for lv in (0.68, 0.95):
        assert abs(cal.coverage(fixed[:, :, 0], new_truth, lv) - lv) <= 0.025, (width, lv)
    assert cal.pit_ks_pvalue(cal.pit(fixed[:, :, 0], new_truth)) > 0.01


def test_a_map_beyond_the_samples_is_reported():
    rng = np.random.default_rng(4)
    held, held_truth = _gaussian_posteriors(rng, 2000, 50, 0.3)   # truths far outside
    pits = cal.pit(held[:, :, 0], held_truth)
    recal = QuantileRecalibration().fit(pits)
    assert recal.saturated(50) == [0]
    ok, ok_truth = _gaussian_posteriors(rng, 2000, 400, 1.0)
    assert QuantileRecalibration().fit(cal.pit(ok[:, :, 0], ok_truth)).saturated(400) == []


def test_uniform_pits_leave_samples_unchanged_and_the_order_is_kept():
    rng = np.random.default_rng(2)
    samples = rng.normal(size=(50, 400, 2))
    pits = (np.arange(4000) + 0.5) / 4000
    out = QuantileRecalibration().fit(np.stack([pits, pits], axis=1)).transform(samples)
    np.testing.assert_allclose(out, samples, atol=0.02)
    # a real map moves values, never the within-object order of a field (the copula)
    skewed = QuantileRecalibration().fit(np.stack([pits ** 2, np.sqrt(pits)], axis=1))
    moved = skewed.transform(samples)
    assert np.abs(moved - samples).max() > 0.1
    in_old_order = np.take_along_axis(moved, np.argsort(samples, axis=1), axis=1)
    assert (np.diff(in_old_order, axis=1) >= 0).all()


def test_non_finite_rows_stay_and_too_few_pits_are_refused():
    samples = np.ones((3, 20, 1))
    samples[1, 4, 0] = np.nan
    out = QuantileRecalibration().fit(np.linspace(0.01, 0.99, 50)).transform(samples)
    assert np.isnan(out[1, 4, 0]) and np.isfinite(out[[0, 2]]).all()
    with pytest.raises(ValueError, match="fewer than 10"):
        QuantileRecalibration().fit(np.array([0.2, 0.5, np.nan]))


def test_quantile_average_keeps_one_members_width():
    rng = np.random.default_rng(3)
    a = rng.normal(0.0, 1.0, size=(200, 400, 1))
    b = rng.normal(2.0, 1.0, size=(200, 400, 1))
    avg = quantile_average([a, b])
    assert abs(avg.mean() - 1.0) < 0.02
    width = cal.interval_width(avg[:, :, 0], axis=1).mean()
    pooled = cal.interval_width(np.concatenate([a, b], axis=1)[:, :, 0], axis=1).mean()
    assert abs(width - 2.0) < 0.08 and pooled > 2.8     # 68 % width of N(·, 1) is 1.99
    np.testing.assert_array_equal(np.argsort(avg, axis=1), np.argsort(a, axis=1))
    np.testing.assert_array_equal(quantile_average([a]), a)
    with pytest.raises(ValueError, match="different shapes"):
        quantile_average([a, b[:, :10]])


def test_folds_deal_whole_objects_evenly_and_reproducibly():
    groups = np.repeat(np.arange(100), 3).astype(str)
    fold = fold_of_groups(groups, 5, seed=0)
    for g in np.unique(groups):
        assert len(set(fold[groups == g])) == 1
    assert np.bincount(fold).tolist() == [60] * 5
    np.testing.assert_array_equal(fold, fold_of_groups(groups, 5, seed=0))
    assert (fold != fold_of_groups(groups, 5, seed=1)).any()


def test_keys_are_validated():
    p = parse_params(synthetic_raw_params())
    assert p.infer.recalibration == "none" and p.infer.recalibration_folds == 5
    with pytest.raises(ParamsError, match="RECALIBRATION"):
        parse_params(synthetic_raw_params(RECALIBRATION="isotonic"))
    with pytest.raises(ParamsError, match="RECALIBRATION_FOLDS"):
        parse_params(synthetic_raw_params(RECALIBRATION_FOLDS=1))
    assert p.infer.recalibration_splits == ("train", "validation")
    with pytest.raises(ParamsError, match="RECALIBRATION_SPLITS"):
        parse_params(synthetic_raw_params(RECALIBRATION_SPLITS=["test"]))


def test_map_from_the_validation_split_only(tmp_path):
    """RECALIBRATION_SPLITS: [validation] fits the map on the held-out PIT values of the
    validation rows alone (images an encoder never trained on)."""
    info = write_synthetic_run(tmp_path, n_sim=(400, 120, 100), n_obs=20)
    raw = synthetic_raw_params(EPOCHS=4, NUM_SAMPLES=40, CORNER_OBJECTS=0, RECALIBRATION="quantile",
                               RECALIBRATION_FOLDS=2, RECALIBRATION_SPLITS=["validation"])
    out = infer.run(parse_params(raw), info["dataset_root"], info["models_root"],
                    info["reports_root"])
    recal = out["posterior_flow"]["recalibration"]
    assert recal["splits"] == ["validation"]
    assert recal["n_pit"] == [out["posterior_flow"]["rows"]["validation"]] * 3


def test_stage_with_recalibration_keeps_the_known_answers_and_reruns_the_same(tmp_path):
    """The whole cross-fit on the synthetic run: coverage within ±0.05 at 68/95 % for every
    field and stellar-mass R² ≥ 0.8 on 1000 independent test objects, the map and the
    figures before it in metrics; a rerun after losing a fold's checkpoints (as after a
    kill), with the fold flows trained in two worker processes (``NUM_WORKERS: 2``, which
    keeps the other folds' checkpoints), retrains that fold to the same posterior samples."""
    info = write_synthetic_run(tmp_path, n_sim=(1500, 400, 1000))
    raw = synthetic_raw_params(LINEAR_MEAN=True, RECALIBRATION="quantile", RECALIBRATION_FOLDS=3,
                               NUM_SAMPLES=200, CORNER_OBJECTS=0)
    params = parse_params(raw)
    out = infer.run(params, info["dataset_root"], info["models_root"], info["reports_root"])
    post = out["posterior"][SIM]
    assert_known_answers(post)
    recal = out["posterior_flow"]["recalibration"]
    assert recal["method"] == "quantile" and recal["folds"] == 3
    assert sum(recal["n_pit"]) == 3 * out["posterior_flow"]["rows"]["train"] + \
        3 * out["posterior_flow"]["rows"]["validation"]
    assert set(recal["before_map"][SIM]) == set(post)

    samples_file = info["reports_root"] / RUN / infer.SAMPLES_FILE
    with h5py.File(samples_file) as h:
        first = h["samples"][:]
    fold_dir = info["models_root"] / RUN / infer.POSTERIOR_DIR / infer.RECALIBRATION_DIR / "fold1"
    assert fold_dir.is_dir()
    import shutil
    shutil.rmtree(fold_dir)
    raw["infer"]["NUM_WORKERS"] = 2
    infer.run(parse_params(raw), info["dataset_root"], info["models_root"], info["reports_root"])
    with h5py.File(samples_file) as h:
        np.testing.assert_array_equal(h["samples"][:], first)


def test_seed_bench_runs_in_scratch_and_summarises(tmp_path):
    """bench/bench_posterior_seeds.py on a small synthetic run: one row per method, seed and
    field, the analysed run's own reports untouched, a summary per method."""
    from bench.bench_posterior_seeds import measure, summarise

    info = write_synthetic_run(tmp_path, n_sim=(400, 100, 300), n_obs=30)
    own = sorted(p.name for p in (info["reports_root"] / RUN).iterdir())
    raw = synthetic_raw_params(EPOCHS=4, NUM_SAMPLES=40, CORNER_OBJECTS=0, RECALIBRATION_FOLDS=2)
    rows = measure(raw, [1], info["dataset_root"], info["reports_root"])
    assert sorted(p.name for p in (info["reports_root"] / RUN).iterdir()) == own
    assert not (info["models_root"] / RUN).exists()
    assert {(r["method"], r["seed"]) for r in rows} == {("none", 1), ("quantile", 1)}
    assert len(rows) == 2 * 3              # (method, seed) × 3 fields of the simulated set
    summary = summarise(rows, [SIM])
    assert [s["method"] for s in summary] == ["none", "quantile"]
    for s in summary:
        assert s["pairs"] == 3 and 0 <= s["in_band"] <= 3 and 0 <= s["max_dev_68"] <= 0.68


def test_flow_samples_depend_only_on_seed_and_position():
    """ConditionalFlow.sample(first_chunk=…) of a block of whole chunks gives that block's
    rows of one call over the whole table: what the blockwise quantile average relies on."""
    from scripts.posterior.flow import ConditionalFlow

    flow = ConditionalFlow(2, 3, num_layers=1, hidden_units=(8,), embedding=(4,), seed=0)
    cond = np.random.default_rng(0).normal(size=(600, 3)).astype(np.float32)
    whole = flow.sample(cond, 5, seed=3, chunk=100)
    part = flow.sample(cond[200:], 5, seed=3, chunk=100, first_chunk=2)
    np.testing.assert_array_equal(part, whole[200:])
    assert not np.array_equal(flow.sample(cond[200:], 5, seed=3, chunk=100), whole[200:])


class _ChunkSeeded:
    """A stand-in fold posterior with the flow's contract: chunk k of 256 rows is drawn
    with the seed (seed, first_chunk + k)."""

    def __init__(self, shift):
        self.shift = shift

    def sample(self, condition, n, seed, first_chunk=0):
        out = []
        for k, start in enumerate(range(0, len(condition), 256)):
            rows = condition[start:start + 256]
            rng = np.random.default_rng([seed, first_chunk + k])
            out.append(rows[:, None, :1] + self.shift + rng.normal(size=(len(rows), n, 1)))
        return np.concatenate(out)


def test_blockwise_ensemble_average_equals_the_whole_table(monkeypatch):
    from types import SimpleNamespace

    inf = SimpleNamespace(num_samples=20, seed=4)
    cond = np.random.default_rng(1).normal(size=(1000, 2))
    own = np.random.default_rng(2).normal(size=(1000, 20, 1))
    folds = [_ChunkSeeded(0.5), _ChunkSeeded(-0.2)]
    expected = quantile_average([own] + [f.sample(cond, 20, 4 + 1 + k) for k, f in enumerate(folds)])
    monkeypatch.setattr(infer, "AVERAGE_BLOCK", 512)      # two blocks, the second partial
    np.testing.assert_allclose(infer.ensemble_average(own, folds, cond, inf), expected, rtol=1e-6)
