"""A synthetic analysed run with a known conditional structure, for the posterior stage.

Written in the real formats of prepare (``splits.parquet``, ``scaler.json``) and analyse
(``reports/<run>/representation.parquet``, ``analogues.parquet``), so the stage runs
unchanged. Why synthetic rather than the mock universe: the calibration acceptance
(coverage within ±0.05 of nominal) needs a test split of ~1000 independent objects
(binomial error 0.015 at 68 %); the small mock universe has a few hundred images, three
projections per object. The physics mirrors the mock universe's:

- ``stellar_mass`` (log M☉) ~ N(10.2, 0.4); ``half_mass_radius_kpc`` log-normal, growing
  with mass; ``ssfr`` falling with mass; redshift ``z`` ~ U(0.05, 0.25);
- observables: ``z`` and ``mag_I = 18.4 − 2.5 (M − 10.2) + 5 log10(z / 0.15) + noise``;
- the "representation" (16 dims) is a fixed nonlinear mixing of noisy image-level
  features: apparent brightness, apparent size ∝ size / z, and colour (∝ sSFR).

So stellar mass is well determined by magnitude and redshift (R² ≈ 0.95), size and sSFR
only loosely by the representation. The observed set ``MOCK_HSC`` is drawn from the same
physics at higher redshift, with observables named ``photoz``/``i_cmodel_mag`` and
scaled with their own statistics (as prepare does), so a wrong positional mapping would
bias its posteriors; its true values are returned for the test, not written. Its photo-z
error is tiny (0.001): the flow is trained on true redshifts, so a realistic photo-z
error would (rightly) make the observed posteriors over-confident.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.preprocessing.scaling import FieldScaler
from tests.conftest import demo_raw_params

SIM, OBS = "MOCK_FIDUCIAL", "MOCK_HSC"
RUN = "synthetic"
TARGETS = ["stellar_mass", "half_mass_radius_kpc", "ssfr"]
DIM = 16


def _physics(rng, n, z_range):
    z = rng.uniform(*z_range, n)
    mass = rng.normal(10.2, 0.4, n)
    size = 10 ** (0.6 + 0.25 * (mass - 10.2) + 0.12 * rng.normal(size=n))
    ssfr = -10.7 - 0.8 * (mass - 10.2) + 0.6 * rng.normal(size=n)
    mag = 18.4 - 2.5 * (mass - 10.2) + 5 * np.log10(z / 0.15) + 0.1 * rng.normal(size=n)
    return z, mass, size, ssfr, mag


def _representation(rng, z, size, ssfr, mag):
    features = np.stack([-0.4 * (mag - 18.4) + 0.05 * rng.normal(size=len(z)),
                         np.log10(size / z) - 1.5 + 0.08 * rng.normal(size=len(z)),
                         (ssfr + 10.7) / 1.0 + 0.3 * rng.normal(size=len(z))], axis=1)
    mixing = np.random.default_rng(1234).normal(size=(3, DIM))
    return np.tanh(features @ mixing / 2) + 0.05 * rng.normal(size=(len(z), DIM))


def write_synthetic_run(root: Path, n_sim=(3000, 600, 1000), n_obs=400, seed=0,
                        nan_targets=5, nan_conditions=3) -> dict:
    """Write dataset/ and reports/<RUN>/ under ``root``; returns paths and the observed
    set's hidden truths. ``nan_targets`` training rows get a NaN stellar mass,
    ``nan_conditions`` observed rows a NaN representation."""
    rng = np.random.default_rng(seed)
    dataset_root, reports_root = root / "dataset", root / "reports"
    (reports_root / RUN).mkdir(parents=True, exist_ok=True)
    dataset_root.mkdir(parents=True, exist_ok=True)

    n = sum(n_sim)
    z, mass, size, ssfr, mag = _physics(rng, n, (0.05, 0.25))
    split = np.repeat(["train", "validation", "test"], n_sim)
    sim = pd.DataFrame({"dataset": SIM, "row": np.arange(n), "object_id": np.arange(n) + 10_000,
                        "snapshot": 91, "projection": 0, "split": split, "z": z, "mag_I": mag,
                        "stellar_mass": mass, "half_mass_radius_kpc": size, "ssfr": ssfr})
    sim_vec = _representation(rng, z, size, ssfr, mag)
    bad = np.flatnonzero(split == "train")[:nan_targets]
    sim.loc[bad, "stellar_mass"] = np.nan

    zo, mo, so, sso, mago = _physics(rng, n_obs, (0.1, 0.25))
    obs = pd.DataFrame({"dataset": OBS, "row": np.arange(n_obs), "object_id": np.arange(n_obs) + 1,
                        "snapshot": 0, "projection": 0, "split": "test",
                        "photoz": zo + 0.001 * rng.normal(size=n_obs), "i_cmodel_mag": mago})
    obs_vec = _representation(rng, zo, so, sso, mago)
    obs_vec[:nan_conditions] = np.nan

    # prepare's scaling: each field on the training split of the first set listing it
    train_sim = sim[sim["split"] == "train"]
    scalers = {f: FieldScaler().fit(train_sim, [f], dataset=SIM)
               for f in ["z", "mag_I", *TARGETS]}
    scalers.update({f: FieldScaler().fit(obs, [f], dataset=OBS) for f in ["photoz", "i_cmodel_mag"]})
    fields = {}
    for f, s in scalers.items():
        fields[f] = {"kind": "unobservables" if f in TARGETS else "observables",
                     "fitted_on": s.fitted_on, "mean": s.mean_[f], "scale": s.scale_[f], "n": s.n_[f]}
    (dataset_root / "scaler.json").write_text(json.dumps({"ddof": 0, "fields": fields}))
    parts = []
    for table, names in ((sim, ["z", "mag_I", *TARGETS]), (obs, ["photoz", "i_cmodel_mag"])):
        frame = table[["dataset", "row", "object_id", "snapshot", "projection", "split"]].copy()
        frame["split_group"] = frame["object_id"].astype(str)
        for f in names:
            frame[f + "_scaled"] = scalers[f].transform(table[[f]], fields=[f])[f + "_scaled"]
        parts.append(frame)
    pd.concat(parts, ignore_index=True).to_parquet(dataset_root / "splits.parquet", index=False)

    meta = pd.concat([sim, obs], ignore_index=True)[
        ["dataset", "row", "object_id", "snapshot", "projection", "split"]]
    vectors = np.concatenate([sim_vec, obs_vec]).astype(np.float32)
    rep = meta.copy()
    for j in range(DIM):
        rep[f"r{j}"] = vectors[:, j]
    rep.to_parquet(reports_root / RUN / "representation.parquet", index=False)
    # analogues: for each observed image, the 3 simulated images nearest in true mass/z
    sim_test = sim[sim["split"] == "test"].dropna()
    rows = []
    for r in range(n_obs):
        d = np.abs(sim_test["stellar_mass"].to_numpy() - mo[r]) + np.abs(sim_test["z"].to_numpy() - zo[r])
        for k, i in enumerate(np.argsort(d)[:3]):
            rows.append({"observed_dataset": OBS, "observed_row": r, "observed_object_id": r + 1,
                         "rank": k + 1, "simulated_dataset": SIM,
                         "simulated_row": int(sim_test["row"].iloc[i]),
                         "simulated_object_id": int(sim_test["object_id"].iloc[i]),
                         "simulated_snapshot": 91, "simulated_projection": 0, "distance": float(d[i])})
    pd.DataFrame(rows).to_parquet(reports_root / RUN / "analogues.parquet", index=False)
    (reports_root / RUN / "metrics.json").write_text(json.dumps({"run_name": RUN, "drivers": {}}))
    return {"dataset_root": dataset_root, "reports_root": reports_root, "models_root": root / "models",
            "observed_truth": pd.DataFrame({"stellar_mass": mo, "half_mass_radius_kpc": so,
                                            "ssfr": sso}), "nan_target_rows": bad}


#: The posterior stage's acceptance band on coverage (issue: posterior stage).
COVERAGE_TOL = 0.05


def assert_known_answers(post: dict) -> None:
    """The posterior acceptance on a synthetic run's test split (``metrics["posterior"][SIM]``):
    68 % and 95 % coverage within ±COVERAGE_TOL for every field, stellar-mass R² of the
    median ≥ 0.8."""
    for field, m in post.items():
        assert abs(m["coverage_68"] - 0.68) <= COVERAGE_TOL, (field, m["coverage_68"])
        assert abs(m["coverage_95"] - 0.95) <= COVERAGE_TOL, (field, m["coverage_95"])
    assert post["stellar_mass"]["r2_median"] >= 0.8


def synthetic_raw_params(**infer) -> dict:
    """The demo params file pointed at the synthetic run, with a small fast flow."""
    raw = copy.deepcopy(demo_raw_params())
    raw["train"]["RUN_NAME"] = RUN
    raw["analyse"]["OBSERVED_SETS"] = [OBS]
    raw["analyse"]["SIMULATED_SETS"] = [SIM]
    raw["tracking"]["BACKENDS"] = ["none"]
    # the observables this synthetic run writes, whatever the demo file conditions on
    names = [name for name, _ in raw["prepare"]["SETS"]]
    written = {OBS: ["photoz", "i_cmodel_mag"], SIM: ["z", "mag_I"], "MOCK_COMPACT": ["z", "mag_I"]}
    raw["prepare"]["OBSERVABLES"] = [written.get(n) for n in names]
    raw["infer"] = {"LOG_FIELDS": ["half_mass_radius_kpc"], "NUM_COUPLING_LAYERS": 3, "HIDDEN_UNITS": [32], "CLAMP": 1.0,
                    "CONDITION_EMBEDDING": [16, 8], "REPRESENTATION_COMPONENTS": 6,
                    "LEARNING_RATE": 3e-3, "BATCH_SIZE": 256, "EPOCHS": 60, "PATIENCE": 8,
                    "LR_DECAY_PATIENCE": 4, "NUM_SAMPLES": 300, "CHECKPOINT_EVERY": 5,
                    "CORNER_OBJECTS": 2, "SEED": 0, **infer}
    return raw
