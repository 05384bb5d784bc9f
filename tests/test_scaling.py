"""Field standardisation stored as JSON (scripts/preprocessing/scaling.py)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from scripts.preprocessing.scaling import FieldScaler

FIELDS = ["stellar_mass", "half_mass_radius_kpc", "ssfr"]


def first_set(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "stellar_mass": rng.normal(10.3, 0.5, n),
        "half_mass_radius_kpc": rng.lognormal(1.0, 0.4, n),
        "ssfr": rng.normal(-10.5, 0.8, n),
        "split": rng.choice(["train", "validation", "test"], n, p=[0.7, 0.15, 0.15]),
    })
    df.loc[rng.choice(n, 20, replace=False), "ssfr"] = np.nan  # quenched: no sSFR
    return df


def test_known_answer_population_std():
    scaler = FieldScaler().fit(pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}), ["x"], dataset="D")
    assert scaler.mean_["x"] == 2.5
    assert scaler.scale_["x"] == pytest.approx(np.sqrt(1.25), rel=1e-15)  # ddof = 0
    out = scaler.transform(pd.DataFrame({"x": [2.5, 2.5 + np.sqrt(1.25)]}))
    np.testing.assert_allclose(out["x_scaled"], [0.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(scaler.inverse_transform(out["x_scaled"], "x"), [2.5, 2.5 + np.sqrt(1.25)])


def test_training_split_is_standardised_and_others_use_its_statistics():
    df = first_set()
    train = df[df["split"] == "train"]
    scaler = FieldScaler().fit(train, FIELDS, dataset="MOCK_FIDUCIAL")
    scaled = scaler.transform(df, dataset="MOCK_FIDUCIAL")
    for field in FIELDS:
        column = scaled.loc[df["split"] == "train", field + "_scaled"]
        assert abs(column.mean()) < 1e-12
        assert column.std(ddof=0) == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_array_equal(scaled[field], df[field])  # raw column kept
        # validation/test use the training statistics, not their own
        held_out = df.loc[df["split"] != "train", field]
        np.testing.assert_allclose(
            scaled.loc[df["split"] != "train", field + "_scaled"],
            (held_out - train[field].mean()) / train[field].std(ddof=0),
        )
    assert scaled["ssfr_scaled"].isna().sum() == df["ssfr"].isna().sum()
    assert scaler.n_["ssfr"] == train["ssfr"].notna().sum()


def test_json_round_trip_is_exact_and_human_readable(tmp_path):
    df = first_set()
    scaler = FieldScaler().fit(df[df["split"] == "train"], FIELDS, dataset="MOCK_FIDUCIAL")
    path = scaler.to_json(tmp_path / "dataset" / "scaler.json")
    data = json.loads(path.read_text())
    assert data["fitted_on"] == "MOCK_FIDUCIAL" and data["ddof"] == 0
    assert set(data["fields"]) == set(FIELDS)
    assert set(data["fields"]["ssfr"]) >= {"mean", "scale"}
    loaded = FieldScaler.from_json(path)
    assert loaded.mean_ == scaler.mean_ and loaded.scale_ == scaler.scale_
    assert loaded.fitted_on == "MOCK_FIDUCIAL" and loaded.fields == FIELDS
    pd.testing.assert_frame_equal(loaded.transform(df), scaler.transform(df))


def test_absent_fields_and_bad_files_give_clear_errors(tmp_path):
    df = first_set()
    scaler = FieldScaler().fit(df, FIELDS, dataset="MOCK_FIDUCIAL")
    observed = df.drop(columns=["half_mass_radius_kpc", "ssfr"])
    with pytest.raises(KeyError, match=r"half_mass_radius_kpc.*MOCK_HSC"):
        scaler.transform(observed, dataset="MOCK_HSC")
    partial = scaler.transform(observed, dataset="MOCK_HSC", missing="skip")
    assert "stellar_mass_scaled" in partial and "ssfr_scaled" not in partial
    with pytest.raises(KeyError, match="color_gr.*MOCK_FIDUCIAL"):
        FieldScaler().fit(df, ["color_gr"], dataset="MOCK_FIDUCIAL")
    with pytest.raises(RuntimeError, match="not fitted"):
        FieldScaler().transform(df)

    constant = FieldScaler().fit(pd.DataFrame({"c": [3.0, 3.0, 3.0]}), ["c"])
    assert constant.scale_["c"] == 1.0
    np.testing.assert_array_equal(constant.transform(pd.DataFrame({"c": [3.0, 4.0]}))["c_scaled"], [0.0, 1.0])

    bad = tmp_path / "scaler.json"
    bad.write_text(json.dumps({"fields": {"stellar_mass": {"mean": 10.0}}}))
    with pytest.raises(ValueError, match=r"scaler.json.*stellar_mass.*scale"):
        FieldScaler.from_json(bad)
    bad.write_text(json.dumps({"fields": {"x": {"mean": 1.0, "scale": 0.0}}}))
    with pytest.raises(ValueError, match="scale > 0"):
        FieldScaler.from_json(bad)
    bad.write_text("not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        FieldScaler.from_json(bad)
