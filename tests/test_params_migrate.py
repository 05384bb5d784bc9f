"""Parameter files of the original pipeline: `python -m scripts.params --migrate` converts
them (one report line per old key, every value with a counterpart kept, no credential
copied) and every stage given one stops with one message pointing to --migrate."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scripts import params as params_module
from scripts.params import ParamsError, load_params, parse_params
from scripts.params_migrate import DECIDE, DROPPED, MAPPED, REMOVED, migrate
from scripts.stage import EXIT_INPUT, run_stage

ROOT = Path(__file__).resolve().parents[1]
ORIGINAL = ROOT / "tests" / "data" / "params_original.yaml"
TOKEN = "FAKE-NEPTUNE-TOKEN"


@pytest.fixture(scope="module")
def raw():
    return yaml.safe_load(ORIGINAL.read_text())


@pytest.fixture(scope="module")
def migrated(tmp_path_factory):
    """(exit status, stdout, stderr, path) of the CLI run on the original-format file."""
    out = tmp_path_factory.mktemp("migrate") / "params.new.yaml"
    done = subprocess.run([sys.executable, "-m", "scripts.params", "--migrate", str(ORIGINAL), "-o", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout, done.stderr, out


def test_the_test_file_covers_every_original_section(raw):
    assert set(raw) == {"neptune", "extract", "prepare", "data", "params_opt", "train_clr", "train_cinn",
                        "model", "losses", "sample_posterior", "peak_detection"}
    assert all(len(fr) == 4 for _, fr in raw["prepare"]["SETS"])
    assert raw["train_clr"]["CLR_TYPE"] == "NNCLR" and "NNCLR_QUEUE_SIZE" in raw["train_clr"]
    assert raw["data"]["VALID_RANGE"] == ["None"] * 3 and "FILTERS" in raw["data"]
    assert TOKEN in raw["neptune"]["api"]


def test_migrated_file_validates_with_todays_loader(migrated):
    status, stdout, stderr, out = migrated
    assert status == 0, stderr
    assert "validates with today's loader" in stdout.splitlines()[-1]
    params = load_params(out)
    assert params.extract.datasets == ("HSC_TNG50", "HSC_TNG100", "HSC")
    assert params.extract.extractors == ("tng_stellar", "tng_stellar", "survey")
    assert params.extract.simulations == ("TNG50-1", "TNG100-1", None)


def test_values_with_a_counterpart_are_kept(migrated):
    p = load_params(migrated[3])
    ex, pr, tr = p.extract, p.prepare, p.train
    assert ex.filters == ("I", "R", "G") and ex.image_size == 96          # data.FILTERS / IMAGE_SIZE
    assert ex.min_stellar_mass == 3e9 and ex.max_stellar_mass == 1e13
    assert ex.snapshots == ((84, 85, 86), (84, 91), None)
    assert ex.load == (True, False, True) and ex.fraction == (1.0, 0.5, 0.75)
    assert ex.petro_radius_factor == 3 and ex.num_workers == 6 and ex.size_chunks == 1500
    assert "half_mass_radius_kpc" in ex.fields[0] and "snapshot" in ex.fields[0]   # renamed FIELDS
    assert ex.fields[2] == ("photoz", "petroR90_r", "i_cmodel_mag_ge")              # survey columns as-is
    assert pr.split_seed == 7 and pr.root_descendant_split
    assert dict(pr.sets) == {"HSC": (0.7, 0.15, 0.15), "HSC_TNG100": (0.6, 0.1, 0.1),
                             "HSC_TNG50": (0.8, 0.1, 0.1)}
    assert pr.matching_source_sets == ("HSC",) and pr.matching_target_sets == ("HSC_TNG100", "HSC_TNG50")
    assert pr.matching_uncertainties == (0.02, 0.2, 4.0)
    assert pr.matching_fields[1] == ("z", "mag_I", "r90")
    assert tr.optimizer == "adam" and tr.learning_rate == 0.00025 and tr.lr_scaling == "none"
    assert tr.weight_decay == 4e-5 and tr.batch_size == 48 and tr.epochs == 300
    assert tr.steps_per_epoch == 150 and tr.patience == 30 and tr.max_runtime_seconds == 36000
    assert tr.temperature == 0.05 and tr.output_dim == 48 and tr.head_layers == 2
    aug = tr.augmentation
    assert aug.rotation and aug.flip and aug.translate == 0.3 and aug.zoom == (1.0, 1.6)
    assert aug.blur_sigma == (0.01, 4.5) and aug.noise_std == (0.02, 0.07)
    assert p.tracking.experiment == "someone/simclr-test"
    assert set(p.tracking.tags) == {"nnclr", "test", "TNG50"}


def _old_keys(raw) -> set[str]:
    keys = set()
    for section, content in raw.items():
        for key, value in content.items():
            if section == "train_clr" and key == "AUGMENTATION_PARAMS":
                keys |= {f"{section}.{key}.{k}" for k in value}
            else:
                keys.add(f"{section}.{key}")
    return keys


def test_one_report_line_per_old_key(raw, migrated):
    lines = migrated[1].splitlines()[:-1]
    reported = [line.split()[1].rstrip(":") for line in lines]
    missing = _old_keys(raw) - set(reported)
    assert not missing, f"old keys without a report line: {sorted(missing)}"
    notes = migrate(raw).notes
    assert len([n for n in notes if n.old in _old_keys(raw)]) == len(_old_keys(raw))  # exactly one each


def test_no_credential_is_copied(migrated):
    _, stdout, stderr, out = migrated
    assert TOKEN not in out.read_text() and TOKEN not in stdout and TOKEN not in stderr
    assert any(line.startswith("[removed]") and "neptune.api:" in line for line in stdout.splitlines())


@pytest.mark.parametrize("key, fragment", [
    ("train_clr.CLR_TYPE", "NNCLR is not implemented"),
    ("train_clr.NNCLR_QUEUE_SIZE", "NNCLR is not implemented"),
    ("train_clr.DOMAIN_TRAINING", "no counterpart yet"),
    ("prepare.SETS (domain fraction)", "HSC_TNG100"),
    ("train_cinn.NUM_MODELS", "no ensemble"),
    ("train_cinn.AUGMENTATION_PARAMS", "no augmentation"),
    ("model.DROPOUT", "no dropout"),
    ("model.NUM_HIDDEN_NODES_MLP", "MLP"),
    ("model.RESNET_DEPTH", "ResNet-18/34/50"),
    ("peak_detection.MIN_PEAK_HEIGHT", "PEAK_MIN_HEIGHT"),
    ("peak_detection.EVAL_BINS", "64 bins"),
    ("params_opt.NUM_TRIALS", "no counterpart yet"),
    ("data.DATASET", "NORMALISATION"),
    ("extract.IMAGE_SIZE", "160"),
    ("FIELD fraction_disk_stars", "extract.FIELDS"),
])
def test_what_has_no_counterpart_needs_a_decision(raw, key, fragment):
    notes = {n.old: n for n in migrate(raw).notes}
    assert notes[key].kind == DECIDE and fragment in notes[key].text


def test_cinn_keys_land_in_infer(migrated):
    """README 'infer' maps the original cINN keys onto the flow's: the example's values."""
    inf = load_params(migrated[3]).infer
    assert inf.learning_rate == 0.003 and inf.epochs == 150 and inf.patience == 15
    assert inf.batch_size == 64 and inf.weight_decay == 3e-4
    assert inf.lr_decay_factor == 0.4 and inf.lr_decay_patience == 5     # torch's patience 4 + 1
    assert inf.num_coupling_layers == 10 and inf.clamp == 1.5
    assert inf.hidden_units == (96,) * 4                                 # 96 nodes, input + 3 layers
    assert inf.condition_embedding == (96, 96, 96, 96)                   # 96 × (2 + 1), then 96
    assert inf.num_samples == 300
    assert inf.train_sets == ("HSC_TNG100", "HSC_TNG50")                 # simulated, with UNOBSERVABLES
    assert inf.infer_sets == ("HSC", "HSC_TNG100", "HSC_TNG50")
    assert inf.max_modes == 3 and inf.peak_min_height == 0.2              # defaults: units differ


def test_cinn_keys_report_where_they_went(raw):
    notes = {n.old: n for n in migrate(raw).notes}
    for old, new in (("train_cinn.LEARNING_RATE", "infer.LEARNING_RATE"),
                     ("train_cinn.LR_PATIENCE", "infer.LR_DECAY_PATIENCE"),
                     ("train_cinn.LR_DECAY", "infer.LR_DECAY_FACTOR"),
                     ("model.NUM_HIDDEN_LAYERS", "infer.HIDDEN_UNITS"),
                     ("model.NUM_COND_NODES", "infer.CONDITION_EMBEDDING"),
                     ("model.CLAMP", "infer.CLAMP"),
                     ("sample_posterior.NUM_SAMPLES", "infer.NUM_SAMPLES")):
        assert notes[old].kind == MAPPED and new in notes[old].text
    for old in ("train_cinn.BETA_1", "train_cinn.FIX_RESNET_PARAMS", "train_cinn.NOISE",
                "model.BATCH_NORM", "losses.lambd_max_likelihood", "losses.lambd_mmd_forw"):
        assert notes[old].kind == DROPPED and len(notes[old].text) > 20


def test_file_without_posterior_sections_has_no_infer_section(raw):
    old = {k: v for k, v in raw.items()
           if k not in ("train_cinn", "sample_posterior", "peak_detection", "model")}
    result = migrate(old)
    assert "infer" not in result.params
    assert not any(n.old.startswith("infer.") for n in result.notes)
    params = parse_params(yaml.safe_load(yaml.safe_dump(result.params)))
    assert params.infer.train_sets is None and params.infer.num_samples == 400


def test_training_sets_with_different_fields_need_a_decision(raw):
    old = dict(raw, prepare=dict(raw["prepare"], UNOBSERVABLES=[["photoz"], ["z"], ["z", "stellar_mass"]]))
    result = migrate(old)
    notes = {n.old: n for n in result.notes}
    assert notes["infer.TRAIN_SETS"].kind == DECIDE and "same" in notes["infer.TRAIN_SETS"].text
    assert "TRAIN_SETS" not in result.params["infer"]


def test_decisions_are_kept_as_comments_in_the_new_file(migrated):
    text = migrated[3].read_text()
    assert "#   train_clr.CLR_TYPE: NNCLR" in text and "#   train_cinn.NUM_MODELS: 2" in text


def test_dropped_keys_say_why(raw):
    notes = {n.old: n for n in migrate(raw).notes}
    for key in ("train_clr.LR_DECAY", "data.NUM_WORKERS", "prepare.LABELS", "extract.FILTERS"):
        assert notes[key].kind == DROPPED and len(notes[key].text) > 20


def test_cluster_template_variant_migrates():
    """The X-ray template's spellings: MIN_MASS/MAX_MASS, one NUM_PROJECTIONS for all, 'None'
    strings for matching, api_token, three-fraction SETS, unknown keys."""
    raw = {
        "neptune": {"project_name": "p/x", "api_token": "FAKE-TOKEN-2", "tags": ["gas"]},
        "extract": {"MIN_MASS": "5e14", "MAX_MASS": "5e15", "DATASETS": ["TNG_Cluster_Xray"],
                    "SNAPSHOTS": [[99]], "FIELDS": [["z", "m200c", "weird_field"]], "LOAD": [True],
                    "FRACTION": [1.0], "IMAGE_SIZE": 64, "NUM_PROJECTIONS": 3, "FILTERS": ["soft"],
                    "PETRO_RADIUS_FACTOR": "None", "SECRET_KEY": "nope", "MYSTERY": 1,
                    "SPLIT_SEED": 3},
        "prepare": {"SPLIT_SEED": 1, "SETS": [["TNG_Cluster_Xray", [0.8, 0.1, 0.1]]],
                    "MATCHING_SOURCE_SETS": ["None"], "MATCHING_TARGET_SETS": ["None"],
                    "MATCHING_FIELDS": "None", "MATCHING_UNCERTAINTIES": "None",
                    "OBSERVABLES": ["None"], "UNOBSERVABLES": [["m200c"]]},
        "train_clr": {"LEARNING_RATE": 0.001, "BATCH_SIZE": 16, "CLR_TYPE": "SIMCLR"},
        "train_mlp": {"LEARNING_RATE": 0.001},
    }
    result = migrate(raw)
    params = parse_params(yaml.safe_load(yaml.safe_dump(result.params)))
    assert params.extract.extractors == ("tng_xray",) and params.extract.num_projections == (3,)
    assert params.extract.min_halo_mass == 5e14 and params.extract.max_halo_mass == 5e15
    assert params.prepare.matching_target_sets == () and params.train.batch_size == 16
    assert params.extract.selection_seed == 3 and params.prepare.split_seed == 1
    notes = {n.old: n for n in result.notes}
    assert notes["neptune.api_token"].kind == REMOVED and notes["extract.SECRET_KEY"].kind == REMOVED
    assert "FAKE-TOKEN-2" not in yaml.safe_dump(result.params) and "nope" not in str(result.notes)
    assert notes["extract.MYSTERY"].kind == DECIDE and "unknown key" in notes["extract.MYSTERY"].text
    assert notes["extract.PETRO_RADIUS_FACTOR"].kind == DECIDE
    assert notes["FIELD weird_field"].kind == DECIDE
    assert notes["train_clr.CLR_TYPE"].kind == DROPPED
    assert notes["train_mlp.LEARNING_RATE"].kind == DECIDE
    assert notes["prepare.UNOBSERVABLES"].kind == MAPPED
    assert notes["extract.SPLIT_SEED"].kind == MAPPED and "extract.SELECTION_SEED" in notes["extract.SPLIT_SEED"].text


def test_stage_given_an_old_file_fails_with_one_message_pointing_to_migrate(caplog):
    with pytest.raises(ParamsError) as err:
        load_params(ORIGINAL)
    assert "--migrate" in str(err.value) and str(ORIGINAL) in str(err.value)
    caplog.set_level("ERROR")
    assert run_stage("any stage", lambda p: 0, ["--params", str(ORIGINAL)]) == EXIT_INPUT
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and "python -m scripts.params --migrate" in errors[0].getMessage()


def test_validator_cli_prints_errors_without_traceback():
    done = subprocess.run([sys.executable, "-m", "scripts.params", "--params", str(ORIGINAL)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.startswith("error: ")
    assert len(done.stderr.strip().splitlines()) == 1 and "--migrate" in done.stderr


@pytest.mark.parametrize("argv_tail, fragment", [
    (["--params", "does-not-exist.yaml"], "cannot read"),
    (["--migrate", "params.demo.yaml"], "not a parameter file of the original pipeline"),
])
def test_validator_errors_exit_2(capsys, argv_tail, fragment):
    assert params_module.main(argv_tail) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and fragment in err


def test_migrate_never_overwrites_the_original(capsys):
    assert params_module.main(["--migrate", str(ORIGINAL), "-o", str(ORIGINAL)]) == 2
    assert "overwrite" in capsys.readouterr().err
