"""One test per params rule: every error names the key path and what was expected."""
import copy
import dataclasses
import re
from pathlib import Path

import pytest
import yaml

from scripts.params import ParamsError, load_params, parse_params
from scripts.params_doc import markdown_reference

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_raw():
    return yaml.safe_load((ROOT / "params.demo.yaml").read_text())


def bad(raw, mutate, *fragments):
    raw = copy.deepcopy(raw)
    mutate(raw)
    with pytest.raises(ParamsError) as err:
        parse_params(raw)
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("name", ["params.yaml", "params.demo.yaml", "params.demo.xray.yaml", "params.observed.yaml"])
def test_shipped_params_are_valid(name):
    params = load_params(ROOT / name)
    assert params.extract.datasets
    specs = params.extract.dataset_specs()
    assert [s.name for s in specs] == list(params.extract.datasets)
    assert all(set(s.band_extnames) == set(s.filters) for s in specs)


def test_frozen_and_typed():
    params = load_params(ROOT / "params.demo.yaml")
    with pytest.raises(AttributeError):
        params.extract.image_size = 3  # frozen
    assert isinstance(params.extract.fraction, tuple)
    assert params.extract.min_stellar_mass == pytest.approx(3e9)  # "3.0e9" from YAML
    spec = params.extract.dataset("MOCK_FIDUCIAL")
    assert spec.band_extnames == {"G": "SUBARU_HSC.G", "R": "SUBARU_HSC.R", "I": "SUBARU_HSC.I"}
    assert re.match(spec.file_pattern, "shalo_084-97_v3_HSC_GRIZY.fits")
    assert params.extract.dataset("MOCK_XRAY").band_extnames == {"0.5-5.0keV": "XRAY_0.5-5.0keV"}
    assert params.analyse.run_name == params.train.run_name  # null resolved once, in the loader
    assert params.to_dict()["extract"]["IMAGE_SIZE"] == params.extract.image_size


def test_bad_list_length(demo_raw):
    bad(demo_raw, lambda r: r["extract"]["FRACTION"].pop(), "extract.FRACTION", "3 entries",
        "extract.DATASETS has 4")


def test_bad_list_length_per_set(demo_raw):
    bad(demo_raw, lambda r: r["prepare"]["OBSERVABLES"].pop(), "prepare.OBSERVABLES", "prepare.SETS")


def test_unknown_key_suggests(demo_raw):
    bad(demo_raw, lambda r: r["extract"].update(FRACTON=[1, 1, 1, 1]), "extract.FRACTON",
        "did you mean 'FRACTION'")


def test_old_extract_seed_name_is_read_with_a_warning(demo_raw, caplog):
    """extract.SPLIT_SEED (the FRACTION selection seed) is now SELECTION_SEED, distinct
    from prepare.SPLIT_SEED: the old name still works, saying so; both at once fail."""
    raw = copy.deepcopy(demo_raw)
    raw["extract"]["SPLIT_SEED"] = 5
    with caplog.at_level("WARNING", logger="scripts.params"):
        params = parse_params(raw)
    assert params.extract.selection_seed == 5
    assert params.prepare.split_seed == demo_raw["prepare"]["SPLIT_SEED"]
    assert "extract.SPLIT_SEED is now called extract.SELECTION_SEED" in caplog.text
    bad(demo_raw, lambda r: r["extract"].update(SPLIT_SEED=5, SELECTION_SEED=6),
        "extract.SPLIT_SEED", "extract.SELECTION_SEED", "keep only")

def test_tracking_backends_and_augmentation_ranges(demo_raw):
    """Rules the tracker factory and the augmentations rely on live in the schema."""
    bad(demo_raw, lambda r: r.setdefault("tracking", {}).update(BACKENDS=["none", "mlflow"]),
        "tracking.BACKENDS", "'none' alone")
    raw = copy.deepcopy(demo_raw)
    raw.setdefault("tracking", {})["BACKENDS"] = ["mlflow", "mlflow", "tensorboard"]
    raw["train"]["AUGMENTATION"].update(ROTATION=30, NOISE_STD=[[0, 0.1], [0, 0.2], [0, 0.3]])
    params = parse_params(raw)
    assert params.tracking.backends == ("mlflow", "tensorboard")
    assert params.train.augmentation.rotation == 30.0
    assert params.train.augmentation.noise_std == ((0, 0.1), (0, 0.2), (0, 0.3))
    bad(demo_raw, lambda r: r["train"]["AUGMENTATION"].update(ROTATION=270),
        "train.AUGMENTATION.ROTATION", "degrees in [0, 180]")
    bad(demo_raw, lambda r: r["train"]["AUGMENTATION"].update(FLUX_SCALE=[[1, 2], [0, 1]]),
        "train.AUGMENTATION.FLUX_SCALE", "shared by all bands", "COLOUR_JITTER_MAG")
    bad(demo_raw, lambda r: r["train"]["AUGMENTATION"].update(FLUX_SCALE=[0, 1]),
        "train.AUGMENTATION.FLUX_SCALE[0]")
    bad(demo_raw, lambda r: r["train"]["AUGMENTATION"].update(COLOUR_JITTER_MAG=0.3),
        "train.AUGMENTATION.COLOUR_JITTER_MAG", "[0, 0.1]")

def test_unknown_nested_key(demo_raw):
    bad(demo_raw, lambda r: r["train"]["AUGMENTATION"].update(ROTATON=True),
        "train.AUGMENTATION.ROTATON", "did you mean 'ROTATION'")


def test_unknown_section_suggests(demo_raw):
    bad(demo_raw, lambda r: r.update(analyze={}), "analyze", "did you mean 'analyse'")


def test_wrong_type(demo_raw):
    bad(demo_raw, lambda r: r["extract"].update(IMAGE_SIZE="big"), "extract.IMAGE_SIZE", "'big'",
        "integer")
    bad(demo_raw, lambda r: r["extract"]["LOAD"].__setitem__(1, "yes"), "extract.LOAD[1]",
        "true or false")


def test_fraction_out_of_range(demo_raw):
    bad(demo_raw, lambda r: r["extract"]["FRACTION"].__setitem__(2, 1.5), "extract.FRACTION[2]",
        "1.5", "(0, 1]")
    bad(demo_raw, lambda r: r["extract"]["FRACTION"].__setitem__(0, 0), "extract.FRACTION[0]")


def test_split_fractions_sum(demo_raw):
    bad(demo_raw, lambda r: r["prepare"]["SETS"][1].__setitem__(1, [0.8, 0.2, 0.1]),
        "prepare.SETS[1][1]", "at most 1")
    bad(demo_raw, lambda r: r["prepare"]["SETS"][1].__setitem__(1, [0.8, -0.1, 0.1]),
        "prepare.SETS[1][1][1]")


def test_missing_section(demo_raw):
    bad(demo_raw, lambda r: r.pop("prepare"), "prepare: missing section")


def test_optional_sections_default(demo_raw):
    raw = copy.deepcopy(demo_raw)
    for name in ("analyse", "tracking"):
        raw.pop(name)
    raw["train"] = {"TRAIN_SETS": ["MOCK_HSC"]}  # the X-ray set has one band, the others three
    raw["analyse"] = None
    params = parse_params(raw)
    assert params.train.optimizer == "lars" and params.tracking.backends == ("mlflow", "tensorboard")


def test_missing_required_key(demo_raw):
    bad(demo_raw, lambda r: r["extract"].pop("IMAGE_SIZE"), "extract.IMAGE_SIZE: missing required key")


def test_dataset_not_in_extract(demo_raw):
    bad(demo_raw, lambda r: r["prepare"]["SETS"][0].__setitem__(0, "NOPE"), "prepare.SETS[0][0]",
        "'NOPE'", "extract.DATASETS")


def test_matching_set_not_in_sets(demo_raw):
    bad(demo_raw, lambda r: r["prepare"].update(MATCHING_TARGET_SETS=["MOCK_HSC", "OTHER"]),
        "prepare.MATCHING_TARGET_SETS[1]", "'OTHER'")


def test_matching_lengths(demo_raw):
    bad(demo_raw, lambda r: r["prepare"].update(MATCHING_UNCERTAINTIES=[0.1]),
        "prepare.MATCHING_UNCERTAINTIES", "1 entries", "MATCHING_FIELDS")


def test_matching_fields_missing_for_matched_set(demo_raw):
    bad(demo_raw, lambda r: r["prepare"]["MATCHING_FIELDS"].__setitem__(1, None),
        "prepare.MATCHING_FIELDS[1]", "MOCK_FIDUCIAL")


def test_choice_suggests(demo_raw):
    bad(demo_raw, lambda r: r["train"].update(OPTIMIZER="lasr"), "train.OPTIMIZER",
        "did you mean 'lars'")


def test_bad_regex(demo_raw):
    bad(demo_raw, lambda r: r["extract"].update(FILE_PATTERNS=[r"(\d+", None, None, None]),
        "extract.FILE_PATTERNS[0]", "regular expression")
    bad(demo_raw, lambda r: r["extract"].update(FILE_PATTERNS=[r"(?P<id>\d+)", None, None, None]),
        "extract.FILE_PATTERNS[0]", "object_id")


def test_band_count_of_trained_sets(demo_raw):
    bad(demo_raw, lambda r: r["train"].update(TRAIN_SETS=["MOCK_HSC", "MOCK_XRAY"]),
        "train.TRAIN_SETS", "band counts")


def test_filters_per_dataset_length(demo_raw):
    bad(demo_raw, lambda r: r["extract"]["FILTERS"].pop(), "extract.FILTERS", "3 band lists")


def test_reference_band_must_exist(demo_raw):
    bad(demo_raw, lambda r: r["extract"].update(PETRO_REFERENCE_BAND="Z"),
        "extract.PETRO_REFERENCE_BAND", "'Z'")


def test_mass_range_order(demo_raw):
    bad(demo_raw, lambda r: r["extract"].update(MIN_STELLAR_MASS=1e12, MAX_STELLAR_MASS=1e10),
        "extract.MIN_STELLAR_MASS")


def test_neptune_section_explains_shutdown(demo_raw):
    message = bad(demo_raw, lambda r: r.update(neptune={"project_name": "x", "api": "y"}),
                  "neptune", "2026-03-05", "MLflow", "tracking:")
    assert "BACKENDS" in message


def test_neptune_message_gives_a_tracking_section_that_parses(demo_raw):
    """The one Neptune message (scripts.params) shows a replacement that today's loader
    accepts: the same file with that section instead of 'neptune:' validates."""
    message = bad(demo_raw, lambda r: r.update(neptune={"project_name": "x"}), "neptune")
    snippet = message[message.index("  tracking:"):message.index("and remove")]
    raw = copy.deepcopy(demo_raw)
    raw.pop("tracking", None)
    raw.update(yaml.safe_load(snippet.replace("<name>", "galaxy-clr")))
    params = parse_params(raw)
    assert params.tracking.backends == ("mlflow", "tensorboard")
    assert params.tracking.experiment == "galaxy-clr"


def test_none_string_accepted_like_original(demo_raw):
    raw = copy.deepcopy(demo_raw)
    raw["extract"]["SNAPSHOTS"][2] = "None"
    assert parse_params(raw).extract.snapshots[2] is None


def test_unreadable_and_invalid_yaml(tmp_path):
    with pytest.raises(ParamsError, match="cannot read"):
        load_params(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("extract: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(broken)


def test_readme_documents_every_key():
    """The README's params reference is the one generated from the schema."""
    readme = (ROOT / "README.md").read_text()
    reference = markdown_reference()
    assert reference in readme, "README params reference is stale: run `python -m scripts.params --doc`"


def test_xray_demo_shares_the_demo_stores():
    """The X-ray demo trains on the stores the galaxy demo extracted and prepared."""
    demo, xray = load_params(ROOT / "params.demo.yaml"), load_params(ROOT / "params.demo.xray.yaml")
    assert demo.extract == xray.extract and demo.prepare == xray.prepare
    assert xray.train.train_sets == ("MOCK_XRAY",) and xray.train.run_name != demo.train.run_name


def test_science_preset_is_the_demo_trained_longer():
    """params.science.yaml (make science) runs the demo's pipeline on its own, larger mock
    universe: the same sets, cuts and analysis, with more training and its own run name."""
    demo, science = load_params(ROOT / "params.demo.yaml"), load_params(ROOT / "params.science.yaml")
    assert demo.extract == science.extract and demo.prepare == science.prepare
    same_run = lambda section: dataclasses.replace(section, run_name=None)  # noqa: E731
    assert same_run(demo.analyse) == same_run(science.analyse)
    assert same_run(demo.infer) == same_run(science.infer)
    assert science.analyse.run_name == science.infer.run_name == "science"
    d, s = demo.train, science.train
    assert s.run_name == "science" != d.run_name
    assert s.batch_size * s.epochs * s.steps_per_epoch >= 8 * d.batch_size * d.epochs * d.steps_per_epoch
    assert s.pixel_unit == d.pixel_unit == "sky" and s.augmentation == d.augmentation
