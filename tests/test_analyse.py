"""Analyse stage: representation table, and known answers on the mock universe.

Fast unit tests use tiny synthetic image stores. The science tests run the real chain on a
mock universe: build → extract → prepare → a SMALL FIXED encoder → analyse, all in
temporary folders, and check answers that the construction of the mock implies:

- the good simulation (MOCK_FIDUCIAL, same physics as the observed MOCK_HSC) is closer to
  the observed set than the bad one (MOCK_COMPACT, too compact and too blue) on every
  realism measure;
- stellar mass is predicted better from the representation than from the pixel baseline
  (on the observed set, whose catalogue the test extends with the true stellar mass as a
  stand-in for an SED-fitting mass: its 100 galaxies are independent, whereas at this size
  the simulated sets hold only ~25 independent merger trees, too few for a stable R^2);
- another projection of the same galaxy is among the nearest neighbours far more often
  than chance;
- the stage's analogues are the exact nearest neighbours (scikit-learn brute force) and the
  analogue command line reproduces them from the raw FITS files.

Why a fixed encoder and not a trained one: training even a tiny ResNet for long enough to
learn anything takes minutes on CI cores, and an untrained random network has no known
answers. :func:`bench.aperture_encoder.aperture_encoder` is a Keras model of simple image
statistics: the mean arcsinh-stretched surface brightness inside concentric circular
apertures in each band, and the differences between consecutive bands (colours). It is deterministic, needs no
training, goes through the same ``encoder.keras`` + ``normalisation.json`` loading path as
a trained run, and its properties are known: it is invariant to rotations about the
image centre (so projections of one galaxy, which differ in orientation and inclination,
stay close), and it measures exactly what the mock's physics changes (surface brightness
and concentration with mass and size, colour with star formation), compactly, where the
pixel baseline dilutes the same statistics among orientation-dependent pixel PCA
components.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

import config
from scripts.analysis.representation import (Embedder, StoreRows, compute_representations,
                                             read_representation, rows_to_embed, select_datasets,
                                             vector_columns)
from scripts.params import parse_params
from bench.aperture_encoder import APERTURE_RADII, aperture_encoder, save_run
from tests.conftest import demo_raw_params

RUN = "aperture"
OBS, GOOD, BAD, XRAY = "MOCK_HSC", "MOCK_FIDUCIAL", "MOCK_COMPACT", "MOCK_XRAY"
IMAGE_SIZE = 32
#: The observed catalogue plus the true stellar mass (written by the fixture).
SED_CATALOGUE = "catalogue_sed.csv"


class RecordingTracker:
    """A tracker that records every call (implements the scripts.tracking protocol)."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        if name.startswith("log_") or name in ("set_tags", "close"):
            return lambda *a, **k: self.calls.append((name, a, k))
        raise AttributeError(name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def of(self, name):
        return [c for c in self.calls if c[0] == name]


# --------------------------------------------------------------------------- unit tests
def _store(path: Path, images: np.ndarray):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images, chunks=(4,) + images.shape[1:])


def test_representations_streamed_in_order_and_skips(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(23, 16, 16, 3)).astype(np.float32)
    b = rng.normal(size=(11, 16, 16, 3)).astype(np.float32)
    _store(tmp_path / "A" / "images.h5", a)
    _store(tmp_path / "B" / "images.h5", b)
    _store(tmp_path / "X" / "images.h5", rng.normal(size=(5, 16, 16, 1)).astype(np.float32))
    splits = pd.DataFrame({
        "dataset": ["A"] * 23 + ["B"] * 11 + ["X"] * 5,
        "row": list(range(23)) + list(range(11)) + list(range(5)),
        "object_id": np.arange(39) + 100, "snapshot": 84, "projection": 0,
        "split": rng.choice(["train", "validation", "test"], size=39)})
    splits = splits.sample(frac=1.0, random_state=1)          # order must not matter
    run = save_run(tmp_path / "models" / "run", 16, 3, scale=0.5)
    embedder = Embedder.from_run(run, batch_size=5)
    kept, skipped = select_datasets(["B", "A", "X", "A", "missing"], tmp_path, embedder.accepts)
    assert kept == ["B", "A"]
    assert "band" in skipped["X"] and "no image store" in skipped["missing"]
    todo = rows_to_embed(splits, kept, ["train", "test"])
    out = tmp_path / "representation.parquet"
    assert compute_representations(embedder, todo, tmp_path, out, batch_size=7,
                                   row_group_size=10) == len(todo)
    rep = read_representation(out)
    assert list(rep.meta["dataset"].unique()) == ["B", "A"]
    assert set(rep.meta["split"]) <= {"train", "test"}
    pd.testing.assert_frame_equal(rep.meta[["dataset", "row"]], todo[["dataset", "row"]])
    assert rep.vectors.dtype == np.float32 and rep.vectors.shape[1] == embedder.dim
    import pyarrow.parquet as pq
    assert pq.read_schema(out).names[-embedder.dim:] == vector_columns(embedder.dim)
    assert pq.ParquetFile(out).metadata.num_row_groups == -(-len(todo) // 14)  # 2 batches each
    # each vector is the encoder applied to the normalised image of that (dataset, row)
    source = {"A": a, "B": b}
    direct = np.concatenate([embedder(source[d][[r]]) for d, r in zip(rep.meta["dataset"], rep.meta["row"])])
    np.testing.assert_allclose(rep.vectors, direct, rtol=1e-5, atol=1e-5)
    only_a = read_representation(out, datasets=["A"], splits=["test"])
    assert (only_a.meta["dataset"] == "A").all() and (only_a.meta["split"] == "test").all()


def test_failed_embedding_leaves_no_table(tmp_path):
    images = np.ones((6, 8, 8, 3), np.float32)
    _store(tmp_path / "A" / "images.h5", images)
    todo = pd.DataFrame({"dataset": "A", "row": np.arange(6), "object_id": np.arange(6),
                         "snapshot": 0, "projection": 0, "split": "test"})
    out = tmp_path / "representation.parquet"

    def broken(batch):
        return np.full((len(batch), 4), np.nan, np.float32)

    with pytest.raises(ValueError, match="NaN"):
        compute_representations(broken, todo, tmp_path, out, batch_size=4)
    assert not out.exists() and not out.with_suffix(".tmp").exists()


def test_store_rows_reads_selected_rows(tmp_path):
    images = np.arange(10 * 2 * 2 * 1, dtype=np.float32).reshape(10, 2, 2, 1)
    _store(tmp_path / "S" / "images.h5", images)
    rows = np.array([1, 4, 5, 9])
    with StoreRows(tmp_path / "S" / "images.h5", rows) as view:
        assert len(view) == 4
        np.testing.assert_array_equal(view[1:3], images[[4, 5]])
        np.testing.assert_array_equal(view[np.array([3, 0, 3])], images[[9, 1, 9]])
        np.testing.assert_array_equal(view[2], images[5])


def test_missing_run_names_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="train stage"):
        Embedder.from_run(tmp_path / "nothing")


def test_aperture_encoder_is_rotation_invariant():
    """The property the permanence known answer rests on: quarter turns and flips of an
    image (exact pixel permutations about the centre) leave the representation unchanged."""
    model = aperture_encoder(IMAGE_SIZE, 3)
    x = np.random.default_rng(1).normal(size=(4, IMAGE_SIZE, IMAGE_SIZE, 3)).astype(np.float32)
    base = np.asarray(model(x))
    for turned in (np.rot90(x, 1, axes=(1, 2)), x[:, ::-1], x[:, :, ::-1]):
        np.testing.assert_allclose(np.asarray(model(np.ascontiguousarray(turned))), base, atol=1e-5)
    assert base.shape == (4, len(APERTURE_RADII) * 3 + len(APERTURE_RADII) * 2)


# --------------------------------------------------------------------------- science
def _raw_params(run_name: str = RUN) -> dict:
    """The demo params on tiny images, without matching, analysing the three optical sets."""
    raw = demo_raw_params()
    raw["extract"].update(IMAGE_SIZE=IMAGE_SIZE, NUM_WORKERS=1, SIZE_CHUNKS=64)
    raw["prepare"].update(
        SETS=[[OBS, [0.7, 0.15, 0.15]], [GOOD, [0.7, 0.15, 0.15]], [BAD, [0.7, 0.15, 0.15]],
              [XRAY, [0.7, 0.15, 0.15]]],
        MATCHING_SOURCE_SETS=[], MATCHING_TARGET_SETS=[], MATCHING_FIELDS=None,
        MATCHING_UNCERTAINTIES=[], OBSERVABLES=None, UNOBSERVABLES=None)
    raw.pop("infer", None)      # no UNOBSERVABLES here: the posterior stage is not part of this test
    i = raw["extract"]["DATASETS"].index(OBS)
    raw["extract"]["CATALOGUES"][i] = SED_CATALOGUE
    raw["extract"]["FIELDS"][i] = [*raw["extract"]["FIELDS"][i], "stellar_mass"]
    raw["train"]["RUN_NAME"] = run_name
    # the fixed encoder never trained on any split, so every split is "held out" for it
    raw["analyse"].update(
        OBSERVED_SETS=[OBS], SIMULATED_SETS=[GOOD, BAD], SPLITS=["train", "validation", "test"],
        EVALUATION_SPLITS=["train", "validation", "test"],
        UMAP={"N_NEIGHBORS": 10, "MIN_DIST": 0.1, "FIT_SUBSAMPLE": 150},
        REALISM={"K": 8, "PERCENTILE": 95, "CV_FOLDS": 5, "N_PERMUTATIONS": 100},
        DRIVER_FIELDS=["stellar_mass", "ssfr", "half_mass_radius_kpc"], KNN_K=10, THUMBNAIL_GRID=6,
        N_ANALOGUES=5, ANALOGUE_OBJECTS=None, RGB_BANDS=["I", "R", "G"], SEED=0)
    return raw


def _params(run_name: str = RUN):
    return parse_params(_raw_params(run_name))


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """Mock universe → extract → prepare → fixed encoder → analyse, in temporary folders.

    The universe is the ``small`` preset with 100 observed galaxies instead of 16 and 15
    instead of 9 galaxy groups: the realism measures subsample both sets to the smaller
    one, and with 16 observed images the in-domain fractions of the two simulations are
    too noisy to order reliably (their binomial error alone is ~0.1).
    """
    from scripts import analyse
    from scripts.mock.universe import build_universe
    from scripts.preprocessing import extract, prepare

    root = tmp_path_factory.mktemp("analyse")
    raw, illustris = root / "dataset_raw", root / "dataset_raw" / "TNG"
    build_universe(raw, illustris, size="medium", num_projections=3, seed=0, n_jobs=1)
    catalogue = pd.read_csv(raw / OBS / "catalogue.csv")
    truth = pd.read_parquet(raw / OBS / "truth.parquet").drop_duplicates("object_id")
    catalogue.merge(truth[["object_id", "stellar_mass"]], on="object_id", how="left").to_csv(
        raw / OBS / SED_CATALOGUE, index=False)
    params = _params()
    dataset_root = root / "dataset"
    extract.run(params.extract, raw, illustris, dataset_root, config.snapshot_redshifts_path)
    prepare.run(params.prepare, dataset_root, root / "plots" / "prepare")
    save_run(root / "models" / RUN, IMAGE_SIZE, 3)
    tracker = RecordingTracker()
    metrics = analyse.run(params, dataset_root, root / "models", root / "reports", tracker=tracker)
    return {"root": root, "raw": raw, "illustris": illustris, "dataset": dataset_root,
            "params": params, "metrics": metrics, "tracker": tracker,
            "report": root / "reports" / RUN, "plots": root / "reports" / RUN / "plots"}


def test_representation_covers_analysed_splits(analysed):
    splits = pd.read_parquet(analysed["dataset"] / "splits.parquet")
    rep = read_representation(analysed["report"] / "representation.parquet")
    expected = splits[splits["dataset"].isin([OBS, GOOD, BAD])]
    assert len(rep.meta) == len(expected)
    merged = rep.meta.merge(expected, on=["dataset", "row"], suffixes=("", "_splits"))
    for col in ("object_id", "snapshot", "projection", "split"):
        assert (merged[col] == merged[f"{col}_splits"]).all(), col
    assert np.isfinite(rep.vectors).all()
    # the X-ray maps (one band) do not fit a three-band encoder: skipped, with the reason
    skipped = analysed["metrics"]["skipped_datasets"]
    assert list(skipped) == [XRAY] and "band" in skipped[XRAY]


def test_good_simulation_is_closer_than_bad_on_every_realism_measure(analysed):
    realism = analysed["metrics"]["realism"]
    good, bad = realism[GOOD][OBS], realism[BAD][OBS]
    assert good["ood_sim"]["in_domain_fraction"] > bad["ood_sim"]["in_domain_fraction"]
    assert good["ood_obs"]["in_domain_fraction"] > bad["ood_obs"]["in_domain_fraction"]
    assert good["c2st"]["auc"] < bad["c2st"]["auc"]
    assert good["mmd"]["mmd2"] < bad["mmd"]["mmd2"]
    # the bad simulation is detected, not just ranked second
    assert bad["c2st"]["ci_low"] > 0.5
    assert bad["mmd"]["p_value"] < 0.05
    assert good["c2st"]["auc"] < bad["c2st"]["ci_low"]


def test_stellar_mass_better_from_representation_than_pixels(analysed):
    drivers = analysed["metrics"]["drivers"]
    sm = drivers[OBS]["stellar_mass"]
    assert sm["representation"]["n"] == sm["baseline"]["n"] == 100
    assert sm["representation"]["r2"] > sm["baseline"]["r2"]
    assert sm["representation"]["r2"] > 0.1            # and the mass is really predicted
    # the simulated sets are scored on the same rows for both feature sets
    for name in (GOOD, BAD):
        for field in ("stellar_mass", "ssfr", "half_mass_radius_kpc"):
            entry = drivers[name][field]
            assert entry["representation"]["n"] == entry["baseline"]["n"] == \
                analysed["metrics"]["images"][name]["train"] + \
                analysed["metrics"]["images"][name]["validation"] + \
                analysed["metrics"]["images"][name]["test"]
    head = json.loads((analysed["report"] / "metrics.json").read_text())["headline"]
    assert head["stellar_mass_r2"][OBS] == {"representation": pytest.approx(sm["representation"]["r2"]),
                                            "baseline": pytest.approx(sm["baseline"]["r2"])}


def test_object_permanence_well_above_chance(analysed):
    perm = analysed["metrics"]["permanence"]
    assert set(perm) == {GOOD, BAD}         # the observed set has one view per object
    for name, p in perm.items():
        assert p["chance_top5"] < 0.15
        assert p["top5"] > 0.5 and p["top5"] > 5 * p["chance_top5"], name
        assert p["top1"] > 10 * p["chance_top1"], name


def test_analogues_are_exact_nearest_neighbours(analysed):
    from sklearn.neighbors import NearestNeighbors

    table = pd.read_parquet(analysed["report"] / "analogues.parquet")
    rep = read_representation(analysed["report"] / "representation.parquet")
    obs = rep.of(OBS)
    sims = rep.subset(rep.meta["dataset"].isin([GOOD, BAD]).to_numpy())
    mean, std = obs.vectors.mean(axis=0), obs.vectors.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    nn = NearestNeighbors(n_neighbors=5, algorithm="brute").fit((sims.vectors - mean) / std)
    dist, idx = nn.kneighbors((obs.vectors - mean) / std)
    assert len(table) == 5 * len(obs.meta)
    table = table.sort_values(["observed_row", "rank"])
    order = np.argsort(obs.meta["row"].to_numpy(), kind="stable")
    np.testing.assert_allclose(table["distance"].to_numpy().reshape(-1, 5), dist[order], rtol=1e-4)
    got = table["simulated_dataset"] + ":" + table["simulated_row"].astype(str)
    want = (sims.meta["dataset"] + ":" + sims.meta["row"].astype(str)).to_numpy()[idx[order]].ravel()
    # ties aside (none expected with continuous features), the same simulated images
    assert (got.to_numpy() == want).mean() > 0.99
    shares = analysed["metrics"]["analogues"][OBS]["share"]
    assert shares[GOOD] > shares[BAD]        # observed galaxies look like the good run


def test_analogue_command_reproduces_stage_analogues(analysed, tmp_path, monkeypatch):
    from scripts.analysis import analogues

    table = pd.read_parquet(analysed["report"] / "analogues.parquet")
    objects = pd.read_parquet(analysed["dataset"] / OBS / "objects.parquet")
    chosen = objects.iloc[[0, 5]]
    fits = [analysed["raw"] / OBS / "images" / f for f in chosen["file"]]
    params_path = tmp_path / "params.yaml"
    import yaml
    params_path.write_text(yaml.safe_dump(_raw_params()))
    monkeypatch.setattr(config, "dataset_path", analysed["dataset"])
    monkeypatch.setattr(config, "models_path", analysed["root"] / "models")
    monkeypatch.setattr(config, "reports_path", analysed["root"] / "reports")
    monkeypatch.setattr(config, "dataset_raw_path", analysed["raw"])
    monkeypatch.setattr(config, "illustris_path", analysed["illustris"])
    out = tmp_path / "new"
    assert analogues.main(["--params", str(params_path), "--out", str(out), *map(str, fits)]) == 0
    new = pd.read_csv(out / "analogues.csv")
    assert (out / "analogues.png").stat().st_size > 0
    for i, row in enumerate(chosen.itertuples()):
        mine = new[new["file"] == str(fits[i])].sort_values("rank")
        stage = table[table["observed_row"] == row.row].sort_values("rank")
        assert list(mine["simulated_dataset"] + mine["simulated_row"].astype(str)) == \
            list(stage["simulated_dataset"] + stage["simulated_row"].astype(str))
        np.testing.assert_allclose(mine["distance"], stage["distance"], rtol=1e-4, atol=1e-5)
    assert analogues.main(["--params", str(params_path), str(tmp_path / "nope.fits")]) == 2


def test_report_metrics_and_tracker(analysed):
    report, plots_dir = analysed["report"], analysed["plots"]
    metrics = json.loads((report / "metrics.json").read_text())   # strict JSON (no NaN)
    head = metrics["headline"]
    assert set(head["realism"]) == {GOOD, BAD}
    for sim in (GOOD, BAD):
        entry = head["realism"][sim][OBS]
        for key in ("in_domain_fraction_sim", "in_domain_fraction_obs", "c2st_auc", "mmd2"):
            assert isinstance(entry[key], float) and math.isfinite(entry[key])
        assert head["permanence_top5"][sim]["top5"] == metrics["permanence"][sim]["top5"]
    for ds, fields in metrics["drivers"].items():  # every driver FIELD in the headline
        assert set(head["driver_r2"][ds]) == set(fields)
        for field, entry in fields.items():
            assert head["driver_r2"][ds][field]["representation"] == entry["representation"]["r2"]
    pngs = sorted(p.name for p in plots_dir.glob("*.png"))
    for name in ("map_umap_datasets.png", "map_umap_fields.png", "map_umap_contours.png",
                 "map_umap_thumbnails.png", "map_pca_datasets.png", f"analogues_{OBS}.png",
                 f"realism_{GOOD}_vs_{OBS}.png", f"realism_{BAD}_vs_{OBS}.png",
                 f"drivers_{GOOD}.png", "drivers_r2.png"):
        assert name in pngs
    md = (report / "report.md").read_text()
    linked = [line.split("](")[1].rstrip(")") for line in md.splitlines() if line.startswith("![")]
    assert linked and all((report / link).exists() for link in linked)
    html_text = (report / "report.html").read_text()
    assert html_text.count("data:image/png;base64,") == len(linked)
    coords = pd.read_parquet(report / "map_coordinates.parquet")
    assert {"umap_1", "umap_2", "pca_1", "pca_2"} <= set(coords.columns)
    tracker = analysed["tracker"]
    folders = {str(c[1][0]) for c in tracker.of("log_artifacts")}
    assert str(report) in folders and plots_dir.parent == report
    (vectors, meta, thumbs), = [c[1][:3] for c in tracker.of("log_embedding")]
    assert len(vectors) == len(meta) == len(thumbs) and thumbs.shape[-1] == 3
    assert "stellar_mass" in meta.columns
    assert any(name.startswith("realism/") for c in tracker.of("log_metrics") for name in c[1][0])


def test_evaluation_cap_measures_a_seeded_subsample_of_whole_objects(analysed, tmp_path):
    """analyse.EVALUATION_MAX_OBJECTS: the headline steps see every image of a seeded draw
    of objects per dataset, the maps still show every row, and the report says so."""
    from scripts import analyse

    splits = pd.read_parquet(analysed["dataset"] / "splits.parquet")
    objects = splits[splits["dataset"].isin([OBS, GOOD, BAD])].groupby("dataset")["split_group"].nunique()
    cap = int(objects.min()) - 3               # every set subsampled, all but a few objects kept
    raw = _raw_params()
    raw["analyse"]["EVALUATION_MAX_OBJECTS"] = cap
    metrics = analyse.run(parse_params(raw), analysed["dataset"], analysed["root"] / "models",
                          tmp_path / "reports")
    full = analysed["metrics"]
    sub = metrics["evaluation_subsample"]
    assert full["evaluation_subsample"] == {} and set(sub) == {OBS, GOOD, BAD}
    for name, entry in sub.items():
        assert (entry["objects"], entry["of"]) == (cap, objects[name])
    for field in metrics["drivers"][GOOD].values():
        assert field["representation"]["n"] == sub[GOOD]["images"]
    assert metrics["maps"]["n_rows"] == full["maps"]["n_rows"]
    assert metrics["maps"]["pca_explained_variance_ratio"] == full["maps"]["pca_explained_variance_ratio"]
    assert metrics["realism"][GOOD][OBS]["mmd"]["n_groups_x"] <= cap
    md = (tmp_path / "reports" / RUN / "report.md").read_text()
    assert "EVALUATION_MAX_OBJECTS" in md and f"{GOOD} {cap} of {sub[GOOD]['of']} objects" in md


def test_stage_report_renders_in_chromium(analysed, tmp_path):
    from tests.test_report_render import render_check

    loaded, total = render_check(analysed["report"] / "report.html", tmp_path)
    assert total >= 10 and loaded == total


def test_every_measure_is_reported_beside_the_honest_baselines(analysed):
    metrics = analysed["metrics"]
    sets = ("representation", "pixels", "photometry", "representation+photometry")
    for name, fields in metrics["drivers"].items():
        for field, entry in fields.items():
            assert set(sets) <= set(entry), (name, field)
            assert entry["photometry"]["n"] <= entry["representation"]["n"]
    # stellar mass (flux) and size in kpc (angular scale) depend on distance: every set is
    # also scored with the redshift added
    for field in ("stellar_mass", "half_mass_radius_kpc"):
        entry = metrics["drivers"][GOOD][field]
        assert all(f"{s}+z" in entry for s in sets), field
    for name in (GOOD, BAD):
        assert set(metrics["permanence"][name]["baselines"]) == set(sets[1:])
        assert set(metrics["realism"][name][OBS]["baselines"]) == set(sets[1:])
    # the wrong physics is flagged from the standard measurements too (size and colour),
    # and from both side by side: combining the parts keeps the offsets between the sets
    for features in ("photometry", "representation+photometry"):
        bad = metrics["realism"][BAD][OBS]["baselines"][features]["c2st"]["auc"]
        good = metrics["realism"][GOOD][OBS]["baselines"][features]["c2st"]["auc"]
        assert bad > good and bad > 0.75, (features, bad, good)
    head = json.loads((analysed["report"] / "metrics.json").read_text())["headline"]
    assert set(sets) <= set(head["driver_r2"][GOOD]["stellar_mass"])
