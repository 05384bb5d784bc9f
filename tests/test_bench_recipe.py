"""bench.bench_recipe: the variant table's plumbing (one smoke variant on the small mock
universe), the emulation of the former per-band flux scale, and the difference columns."""
from __future__ import annotations

import math

import numpy as np
import pytest

from bench import bench_recipe
from tests.conftest import demo_raw_params


def test_per_band_equivalent_jitter_matches_the_former_draw():
    """The old augmentation drew log-uniform factors in FLUX_SCALE per band; the variant that
    emulates it must give the same colour scatter (std of -2.5 log10 of the factor ratio)."""
    lo, hi = 0.9, 1.1
    rng = np.random.default_rng(0)
    factors = np.exp(rng.uniform(math.log(lo), math.log(hi), size=(200_000, 2)))
    colour = -2.5 * np.log10(factors[:, 0] / factors[:, 1])
    jitter = bench_recipe.per_band_equivalent_jitter((lo, hi))
    assert colour.std() == pytest.approx(jitter * math.sqrt(2), rel=0.01)
    # it is a valid COLOUR_JITTER_MAG of the schema
    from scripts.params import parse_params
    raw = demo_raw_params()
    v = bench_recipe.variants(raw)["flux_per_band_old"]
    params = parse_params(bench_recipe.variant_raw(bench_recipe.bench_raw(raw, False), v, "x"))
    assert params.train.augmentation.colour_jitter_mag == pytest.approx(jitter, abs=1e-4)


def test_every_variant_is_valid_params_and_changes_something():
    from scripts.params import parse_params
    raw = demo_raw_params()
    base = bench_recipe.bench_raw(raw, smoke=False)
    reference = parse_params(bench_recipe.variant_raw(base, bench_recipe.variants(raw)["baseline"], "r"))
    for name, variant in bench_recipe.variants(raw).items():
        params = parse_params(bench_recipe.variant_raw(base, variant, "r"))
        assert params.analyse.driver_fields == bench_recipe.DRIVERS
        if name != bench_recipe.BASELINE:
            assert (params.train, params.extract) != (reference.train, reference.extract), name


def test_flux_scale_variant_is_the_alternative_to_the_params_file():
    """With no flux factor in the params file (the presets) the bench measures the former
    shared factor, and with one it measures turning it off, so each variant changes the
    recipe; the per-band emulation keeps the former range either way."""
    raw = demo_raw_params()
    assert tuple(raw["train"]["AUGMENTATION"]["FLUX_SCALE"]) == (1.0, 1.0)
    names = bench_recipe.variants(raw)
    assert {"flux_scale_on", "flux_scale_on_seed_1", "flux_scale_on_seed_2"} <= set(names)
    assert not any(n.startswith("flux_scale_off") for n in names)
    assert names["flux_scale_on"].train["AUGMENTATION"]["FLUX_SCALE"] == list(bench_recipe.FORMER_FLUX_SCALE)
    with_factor = bench_recipe._merge(raw, {"train": {"AUGMENTATION": {"FLUX_SCALE": [0.8, 1.25]}}})
    other = bench_recipe.variants(with_factor)
    assert other["flux_scale_off_seed_2"].train == {"AUGMENTATION": {"FLUX_SCALE": [1.0, 1.0]}, "SEED": 2}
    assert not any(n.startswith("flux_scale_on") for n in other)
    jitter = round(bench_recipe.per_band_equivalent_jitter(bench_recipe.FORMER_FLUX_SCALE), 4)
    assert other["flux_per_band_old"].train == names["flux_per_band_old"].train == \
        {"AUGMENTATION": {"COLOUR_JITTER_MAG": jitter}}


def test_each_extraction_of_a_variant_has_its_own_dataset_folder():
    """Variants that change extract settings train on their own extraction: the folder is
    named by every override and by a digest of the whole extract and prepare sections, so a
    changed --params file does not reuse a dataset made with its former settings."""
    raw = bench_recipe.bench_raw(demo_raw_params(), smoke=False)
    variants = bench_recipe.variants(demo_raw_params())

    def name(base, v):
        return bench_recipe.dataset_name(bench_recipe.variant_raw(base, variants[v], "x"),
                                         variants[v].extract)
    names = {v: name(raw, v) for v in ("baseline", "seed_1", "image_48", "crop_fraction")}
    size = raw["extract"]["IMAGE_SIZE"]
    assert names["baseline"].startswith(f"dataset_{size}_") and names["image_48"].startswith("dataset_48_")
    assert names["crop_fraction"].startswith(f"dataset_{size}_") and "fraction" in names["crop_fraction"]
    assert names["seed_1"] == names["baseline"]                      # a train setting: same images
    assert len(set(names.values())) == 3
    other = bench_recipe._merge(raw, {"extract": {"NEIGHBOURS": "keep"}})
    assert name(other, "baseline") != names["baseline"]
    other_splits = bench_recipe._merge(raw, {"prepare": {"SPLIT_SEED": 12345}})
    assert name(other_splits, "baseline") != names["baseline"]
    faster = bench_recipe._merge(raw, {"extract": {"NUM_WORKERS": 7, "SIZE_CHUNKS": 3}})
    assert name(faster, "baseline") == names["baseline"]


def test_table_shows_differences_from_the_baseline_of_the_same_feature_set():
    def metrics(r2, top1):
        return {"drivers": {"MOCK_FIDUCIAL": {f: {"representation": {"r2": r2},
                                                  "pixels": {"r2": 0.1}}
                                              for f in bench_recipe.DRIVERS}},
                "permanence": {"MOCK_FIDUCIAL": {"top1": top1, "top5": 0.9,
                                                 "baselines": {"pixels": {"top1": 0.2}}}}}
    results = {"baseline": {"metrics": metrics(0.50, 0.30), "train": {}, "seconds": {"total": 1}},
               "nnclr": {"metrics": metrics(0.65, 0.25), "train": {}, "seconds": {"total": 1}}}
    table = bench_recipe.format_table(bench_recipe.rows_of(results))
    nnclr = next(line for line in table.splitlines() if line.startswith("| nnclr | representation |"))
    assert "0.65 (+0.15)" in nnclr and "0.25 (-0.05)" in nnclr
    pixels = next(line for line in table.splitlines() if "| pixels |" in line)
    assert "0.20" in pixels and "0.10" in pixels and "(+" not in pixels


@pytest.mark.slow  # about 1 min of CPU (session fixtures, a TF model, UMAP's first compile)
def test_smoke_run_of_one_variant_prints_the_table(prepared_small, small_universe, tmp_path, capsys):
    """The whole path of one variant (train, analyse, read metrics.json, table) on the small
    mock universe, reusing the session's prepared dataset."""
    dataset, _ = prepared_small
    raw_root, _ = small_universe
    smoke = bench_recipe.bench_raw(demo_raw_params(), smoke=True)
    (tmp_path / bench_recipe.dataset_name(smoke, {})).symlink_to(dataset, target_is_directory=True)
    (tmp_path / "dataset_raw").symlink_to(raw_root, target_is_directory=True)
    assert bench_recipe.main(["--smoke", "--variants", "baseline", "--workdir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    rows = {tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
            for line in out.splitlines() if line.startswith("| ")}
    for key in [("baseline", "representation"), ("(analyse baseline)", "pixels"),
                ("(analyse baseline)", "photometry"), ("baseline", "representation+photometry")]:
        cells = rows[key].strip("|").split("|")[2:9]
        assert all(c.strip() not in ("", "–") for c in cells), rows[key]
    assert (tmp_path / "reports" / "recipe-smoke-baseline" / "metrics.json").exists()
