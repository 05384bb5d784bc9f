"""Convert a parameter file of the original pipeline into today's format.

The original pipeline (ERGO-ML / icm-clr, PyTorch) read one ``params.yaml`` with the
sections ``neptune`` (tracking, often with an API token), ``extract``, ``prepare`` (SETS
with four fractions: train, domain, validation, test), ``data`` (a second FILTERS and
IMAGE_SIZE, VALID_RANGE, the DATASET class), ``train_clr`` (Adam, SimCLR or NNCLR,
AUGMENTATION_PARAMS), ``train_cinn``, ``model``, ``losses``, ``params_opt``,
``sample_posterior`` and ``peak_detection``, with ``None`` written as a string.

:func:`migrate` maps that mapping onto today's sections and returns the new mapping with
one :class:`Note` per old key: where it went, why it was dropped, or that it needs a
decision (no counterpart yet: NNCLR, domain adaption, …). The posterior stage (cINN keys)
goes to ``infer:`` by :mod:`scripts.params_migrate_posterior`. Every
value with a counterpart is kept; credentials are never copied, only reported as removed.
``python -m scripts.params --migrate OLD.yaml [-o NEW.yaml]`` is the command line.
"""
from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from scripts.params import (ORIGINAL_ONLY_SECTIONS, ParamsError, original_format_reasons,
                            parse_params)
from scripts.params_migrate_posterior import CINN_LOSS_KEYS, migrate_posterior
from scripts.params_rules import is_none

MAPPED, ADDED, DROPPED, DECIDE, REMOVED = "mapped", "added", "dropped", "decide", "removed"
#: how each kind of note is labelled in the report
LABELS = {MAPPED: "[mapped]", ADDED: "[added]", DROPPED: "[dropped]", DECIDE: "[decide]",
          REMOVED: "[removed]"}
#: key names that hold credentials: reported as removed, never copied (not even as comments)
CREDENTIAL = re.compile(r"(api|token|secret|password|passwd|credential|key$)", re.IGNORECASE)

#: original FIELD names → today's (TNG datasets; survey columns keep their names)
FIELD_RENAMES = {
    "snapshot_id": "snapshot",
    "half_mass_rad_physical": "half_mass_radius_kpc",
    "snap_num_last_maj_merger": "snap_last_major_merger",
    "mass_last_maj_merger": "mass_last_major_merger",
    "lookback_time_last_maj_merger": "lookback_last_major_merger",
    "petro_90_light": "r90",
    "petro_half_light": "r50",
    "i_band_mag_dust_apparent": "mag_I",
}
#: original names of quantities measured on the image (any dataset, surveys included)
IMAGE_FIELD_RENAMES = {k: v for k, v in FIELD_RENAMES.items() if k.startswith("petro_")}
#: original dataset names → (extractor, TNG simulation), from the original extractor factory
ORIGINAL_DATASETS = {
    "HSC_TNG50": ("tng_stellar", "TNG50-1"),
    "HSC_TNG50_Ideal": ("tng_stellar", "TNG50-1"),
    "HSC_TNG100": ("tng_stellar", "TNG100-1"),
    "HSC": ("survey", None),
}
#: whole sections without a counterpart → reason given for each of their keys
UNSUPPORTED_SECTIONS = {
    "params_opt": "no counterpart yet (no hyper-parameter search; run one job per setting)",
    "train_mlp": "no counterpart yet (no supervised MLP; analyse measures kNN R² of every FIELD)",
}
#: original Adam defaults, equal to Keras' (today's Adam takes no betas)
ADAM_BETAS = {"BETA_1": 0.9, "BETA_2": 0.999}


@dataclass(frozen=True)
class Note:
    """What happened to one key of the original file."""

    old: str
    kind: str
    text: str
    #: original value, repeated as a comment in the new file (DECIDE notes only)
    value: Any = None

    def line(self) -> str:
        return f"{LABELS[self.kind]:<10} {self.old}: {self.text}"


@dataclass
class Migration:
    """The new mapping (today's sections) and one note per old key."""

    params: dict
    notes: list[Note] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(n.kind == kind for n in self.notes)


def _none(value: Any) -> Any:
    """The original files wrote null as the string 'None'."""
    return None if is_none(value) else value


def _flow(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def _float(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


class _Migrator:
    """One pass over an original file; fills ``new`` and ``notes``."""

    def __init__(self, raw: dict):
        self.raw = raw
        self.new: dict[str, dict] = {"extract": {}, "prepare": {}, "train": {}, "analyse": {}, "tracking": {}}
        self.notes: list[Note] = []
        self.kinds: dict[str, str] = {}
        self.done: set[str] = set()

    # ------------------------------------------------------------------ helpers
    def note(self, old: str, kind: str, text: str, value: Any = None) -> None:
        self.notes.append(Note(old, kind, text, value if kind == DECIDE else None))
        self.done.add(old)

    def get(self, section: str, key: str, default: Any = None) -> Any:
        return (self.raw.get(section) or {}).get(key, default)

    def has(self, section: str, key: str) -> bool:
        return key in (self.raw.get(section) or {})

    def put(self, old: str, section: str, key: str, value: Any, comment: str = "") -> None:
        self.new[section][key] = value
        extra = f" ({comment})" if comment else ""
        self.note(old, MAPPED, f"-> {section}.{key} = {_flow(value)}{extra}")

    def drop(self, old: str, why: str) -> None:
        self.note(old, DROPPED, why)

    def decide(self, old: str, why: str, value: Any) -> None:
        self.note(old, DECIDE, why, value)

    def drop_or_decide(self, old: str, value: Any, as_today: bool, dropped: str, undecided: str) -> None:
        """Drop ``old`` when its ``value`` gives today's behaviour (``as_today``), else ask
        for a decision: the key has no counterpart either way."""
        if as_today:
            self.drop(old, dropped)
        else:
            self.decide(old, undecided, value)

    def adam_betas(self, section: str, used_by: str) -> None:
        """``section``'s BETA_1/BETA_2: dropped at Adam's defaults (which ``used_by`` uses),
        else a decision, as today's optimisers take no betas."""
        values = self.raw.get(section) or {}
        for key, default in ADAM_BETAS.items():
            if key in values:
                self.drop_or_decide(f"{section}.{key}", values[key], _float(values[key]) == default,
                                    f"{values[key]} is Keras' Adam default, used by {used_by}",
                                    f"{values[key]}: no key for Adam's betas (Keras default "
                                    f"{default} is used)")

    def add(self, section: str, key: str, value: Any, why: str) -> None:
        self.new[section][key] = value
        self.notes.append(Note(f"{section}.{key}", ADDED, f"{_flow(value)} ({why})"))

    # ------------------------------------------------------------------ fields
    def _tng_fields(self) -> set[str]:
        from TNG import FIELDS
        from scripts.preprocessing.dataset_kinds import image_field_names
        return set(FIELDS) | set(image_field_names(self.new["extract"].get("FILTERS") or []))

    def rename_fields(self, names, dataset: str | None, where: str, unknown: dict) -> list | None:
        """Today's names of a list of original FIELDS of ``dataset``; names without a
        counterpart are kept as they are and collected in ``unknown`` for the report."""
        names = _none(names)
        if names is None:
            return None
        known = self._tng_fields()
        out = []
        for name in names:
            new = FIELD_RENAMES.get(name, name)
            if self.kinds.get(dataset) == "survey":
                # any column of the survey catalogue, or a quantity measured on the image
                new = new if new in IMAGE_FIELD_RENAMES.values() else name
            elif new not in known:
                unknown.setdefault(name, []).append(where)
            out.append(new)
        return out

    # ------------------------------------------------------------------ sections
    def neptune(self) -> None:
        section = self.raw.get("neptune") or {}
        for key, value in section.items():
            old = f"neptune.{key}"
            if key == "project_name":
                self.put(old, "tracking", "EXPERIMENT", str(value), "the MLflow experiment replaces the "
                         "Neptune project; Neptune's hosted service shut down on 2026-03-05")
            elif key == "tags":
                tags = {str(t): "true" for t in (value or [])}
                self.put(old, "tracking", "TAGS", tags, "MLflow tags are key: value")
            else:
                self.note(old, REMOVED, "a credential or Neptune connection setting; not copied. "
                          "Tokens belong in the environment (e.g. MLFLOW_TRACKING_URI), never in a "
                          "params file; revoke a token that was ever committed")

    def extract(self) -> None:
        ex = self.raw.get("extract") or {}
        datasets = [str(d) for d in ex.get("DATASETS") or []]
        n = len(datasets)
        if "DATASETS" in ex:
            self.put("extract.DATASETS", "extract", "DATASETS", datasets)
        extractors, simulations, guessed = [], [], []
        for name in datasets:
            kind, sim = ORIGINAL_DATASETS.get(name, (None, None))
            if kind is None:
                match = re.search(r"TNG(50|100|300)(-\d)?", name)
                if "cluster" in name.lower():
                    kind, sim = "tng_xray", "TNG-Cluster"
                elif match:
                    kind, sim = "tng_stellar", f"TNG{match.group(1)}{match.group(2) or '-1'}"
                else:
                    kind, sim = "survey", None
                guessed.append(name)
            extractors.append(kind)
            simulations.append(sim)
            self.kinds[name] = kind
        if n:
            why = "the original chose the extractor from the dataset name"
            if guessed:
                why += f"; guessed for {guessed}: check"
            self.add("extract", "EXTRACTORS", extractors, why)
            self.add("extract", "SIMULATIONS", simulations, "TNG folder under ILLUSTRIS_PATH per dataset")

        # bands and image size: data.FILTERS / data.IMAGE_SIZE are what the network saw
        data = self.raw.get("data") or {}
        if "FILTERS" in data:
            self.put("data.FILTERS", "extract", "FILTERS", list(data["FILTERS"]),
                     "the bands trained on, in channel order; today one list chooses both")
            if "FILTERS" in ex:
                if set(ex["FILTERS"] or []) >= set(data["FILTERS"]):
                    self.note("extract.FILTERS", DROPPED, f"{_flow(ex['FILTERS'])} superseded by "
                              "data.FILTERS: bands are read from the raw FITS in training order")
                else:
                    self.note("extract.FILTERS", DECIDE, f"{_flow(ex['FILTERS'])} does not contain "
                              f"every band of data.FILTERS {_flow(data['FILTERS'])}; the new file "
                              "uses data.FILTERS", ex["FILTERS"])
        elif "FILTERS" in ex:
            self.put("extract.FILTERS", "extract", "FILTERS", ex["FILTERS"])
        if "IMAGE_SIZE" in data:
            self.put("data.IMAGE_SIZE", "extract", "IMAGE_SIZE", data["IMAGE_SIZE"],
                     "the network's input size; images are stored at the size they are trained at")
            if "IMAGE_SIZE" in ex and ex["IMAGE_SIZE"] != data["IMAGE_SIZE"]:
                self.note("extract.IMAGE_SIZE", DECIDE, f"{ex['IMAGE_SIZE']} px (the original "
                          f"stored crops at this size and resized them to data.IMAGE_SIZE = "
                          f"{data['IMAGE_SIZE']} for training; today there is one size, the new "
                          f"file uses {data['IMAGE_SIZE']})", ex["IMAGE_SIZE"])
            elif "IMAGE_SIZE" in ex:
                self.note("extract.IMAGE_SIZE", DROPPED, "same as data.IMAGE_SIZE")
        elif "IMAGE_SIZE" in ex:
            self.put("extract.IMAGE_SIZE", "extract", "IMAGE_SIZE", ex["IMAGE_SIZE"])

        for old, new in (("MIN_STELLAR_MASS", "MIN_STELLAR_MASS"), ("MAX_STELLAR_MASS", "MAX_STELLAR_MASS"),
                         ("MIN_MASS", "MIN_HALO_MASS"), ("MAX_MASS", "MAX_HALO_MASS")):
            if old in ex:
                self.put(f"extract.{old}", "extract", new, _float(ex[old]),
                         "M200c of groups/clusters [M☉]" if "HALO" in new else "")
        snapshots = _none(ex.get("SNAPSHOTS"))
        if "SNAPSHOTS" in ex:
            if snapshots is None:
                self.note("extract.SNAPSHOTS", DROPPED, "None: every snapshot found (today's default)")
            else:
                self.put("extract.SNAPSHOTS", "extract", "SNAPSHOTS", [_none(s) for s in snapshots])
        if "MIN_SNAPSHOT" in ex:
            if snapshots is None and _none(ex["MIN_SNAPSHOT"]) is not None:
                first = int(ex["MIN_SNAPSHOT"])
                self.put("extract.MIN_SNAPSHOT", "extract", "SNAPSHOTS",
                         [list(range(first, 100)) if k != "survey" else None for k in extractors],
                         f"snapshots {first}-99 of every TNG dataset")
            else:
                self.note("extract.MIN_SNAPSHOT", DROPPED, "SNAPSHOTS is given and wins, as in the original")

        if "FIELDS" in ex:
            unknown: dict[str, list] = {}
            fields = [self.rename_fields(f, d, "extract.FIELDS", unknown) or []
                      for f, d in zip(ex["FIELDS"], datasets)]
            renamed = sorted({o for f in ex["FIELDS"] if _none(f) for o in f if o in FIELD_RENAMES})
            self.put("extract.FIELDS", "extract", "FIELDS", fields,
                     "renamed: " + ", ".join(f"{o} -> {FIELD_RENAMES[o]}" for o in renamed) if renamed else "")
            self._unknown_fields(unknown)
        for key in ("LOAD", "FRACTION"):
            if key in ex:
                self.put(f"extract.{key}", "extract", key, list(ex[key]))
        if "NUM_PROJECTIONS" in ex and _none(ex["NUM_PROJECTIONS"]) is not None:
            value = ex["NUM_PROJECTIONS"]
            value = list(value) if isinstance(value, list) else \
                [int(value) if k != "survey" else 1 for k in extractors]
            self.put("extract.NUM_PROJECTIONS", "extract", "NUM_PROJECTIONS", value,
                     "one entry per dataset; survey sets have one view")
        elif n:
            self.add("extract", "NUM_PROJECTIONS", [4 if k == "tng_stellar" else 3 if k == "tng_xray" else 1
                                                    for k in extractors],
                     "expected views per object: the SKIRT/HSC archive has cameras v0-v3; check")
        if "PETRO_RADIUS_FACTOR" in ex:
            value = _none(ex["PETRO_RADIUS_FACTOR"])
            if value is None:
                self.note("extract.PETRO_RADIUS_FACTOR", DECIDE, "None (no Petrosian crop): today "
                          "extract.CROPPERS chooses per dataset (default petrosian for galaxies, "
                          "r200c for X-ray maps; 'none' keeps the full frame)", "None")
            else:
                self.put("extract.PETRO_RADIUS_FACTOR", "extract", "PETRO_RADIUS_FACTOR", _float(value),
                         "check: today the crop half-size is this factor times the Petrosian R90")
        if any(k != "tng_xray" for k in extractors) and "R" in (self.new["extract"].get("FILTERS") or []):
            self.add("extract", "PETRO_REFERENCE_BAND", "R", "the original fitted the Petrosian radius in R")
        for key in ("USE_CACHE", "NUM_WORKERS", "SIZE_CHUNKS"):
            if key in ex:
                self.put(f"extract.{key}", "extract", key, ex[key])
        if "SPLIT_SEED" in ex:
            self.put("extract.SPLIT_SEED", "extract", "SELECTION_SEED", ex["SPLIT_SEED"],
                     "seed of the FRACTION selection, renamed apart from prepare.SPLIT_SEED")

    def _unknown_fields(self, unknown: dict) -> None:
        for name, places in unknown.items():
            places = sorted(set(places))
            self.notes.append(Note(f"FIELD {name}", DECIDE, f"no TNG FIELD of that name today (used in "
                                   f"{', '.join(places)}); kept as written, so extract stops with the "
                                   "list of available FIELDS until it is renamed or removed (README "
                                   "'FIELDS')", places))

    def prepare(self) -> None:
        pr = self.raw.get("prepare") or {}
        if "SPLIT_SEED" in pr:
            self.put("prepare.SPLIT_SEED", "prepare", "SPLIT_SEED", pr["SPLIT_SEED"])
        names: list[str] = []
        if "SETS" in pr:
            sets, domain = [], {}
            for name, fractions in pr["SETS"]:
                fractions = [float(f) for f in fractions]
                if len(fractions) == 4:
                    train, dom, val, test = fractions
                    if dom:
                        domain[str(name)] = dom
                    fractions = [train, val, test]
                sets.append([str(name), fractions])
                names.append(str(name))
            self.put("prepare.SETS", "prepare", "SETS", sets,
                     "[train, domain, validation, test] -> [train, validation, test]")
            if domain:
                self.notes.append(Note("prepare.SETS (domain fraction)", DECIDE,
                                       f"{domain}: no domain split yet (domain training and adaption "
                                       "are not implemented); those objects stay unused", domain))
        if "ROOT_DESCENDANT_SPLIT" in pr:
            self.put("prepare.ROOT_DESCENDANT_SPLIT", "prepare", "ROOT_DESCENDANT_SPLIT",
                     bool(pr["ROOT_DESCENDANT_SPLIT"]))
        for key in ("MATCHING_SOURCE_SETS", "MATCHING_TARGET_SETS"):
            if key in pr:
                value = [str(s) for s in (_none(pr[key]) or []) if _none(s) is not None]
                if value:
                    self.put(f"prepare.{key}", "prepare", key, value)
                else:
                    self.note(f"prepare.{key}", DROPPED, "None: no matching")
        unknown: dict[str, list] = {}
        matching = _none(pr.get("MATCHING_FIELDS"))
        if "MATCHING_FIELDS" in pr:
            if matching is None or not self.new["prepare"].get("MATCHING_TARGET_SETS"):
                self.note("prepare.MATCHING_FIELDS", DROPPED, "no matching (None, or no target sets)")
            else:
                self.put("prepare.MATCHING_FIELDS", "prepare", "MATCHING_FIELDS",
                         [self.rename_fields(f, s, "prepare.MATCHING_FIELDS", unknown)
                          for f, s in zip(matching, names)])
        if "MATCHING_UNCERTAINTIES" in pr:
            value = _none(pr["MATCHING_UNCERTAINTIES"])
            if value and isinstance(value[0], list):  # the original wrote [[...]] and read entry 0
                value = value[0]
            if value and "MATCHING_FIELDS" in self.new["prepare"]:
                self.put("prepare.MATCHING_UNCERTAINTIES", "prepare", "MATCHING_UNCERTAINTIES",
                         [_float(v) for v in value], "the original's [[...]] read as its first entry")
            else:
                self.note("prepare.MATCHING_UNCERTAINTIES", DROPPED, "no matching")
        for key in ("OBSERVABLES", "UNOBSERVABLES"):
            if key in pr:
                value = [self.rename_fields(f, s, f"prepare.{key}", unknown) for f, s in zip(pr[key], names)]
                if any(v is not None for v in value):
                    self.put(f"prepare.{key}", "prepare", key, value, "standardised with the first "
                             "set's training statistics")
                else:
                    self.note(f"prepare.{key}", DROPPED, "None for every set (today's default)")
        self._unknown_fields(unknown)
        if "LABELS" in pr:
            self.note("prepare.LABELS", DROPPED, f"{_flow(pr['LABELS'])}: standardised columns keep "
                      "their FIELD names today (LABELS renamed them for the cINN)")

    def data(self) -> None:
        data = self.raw.get("data") or {}
        if "VALID_RANGE" in data:
            value = [_none(v) for v in data["VALID_RANGE"] or []]
            if all(v is None for v in value):
                self.note("data.VALID_RANGE", DROPPED, "None for every set; it only served the "
                          "posterior stage (out-of-range unobservables treated as categorical)")
            else:
                self.note("data.VALID_RANGE", DECIDE, "no counterpart: infer models every "
                          "UNOBSERVABLE as continuous (the original's cINN treated values out of "
                          "this range as categorical)", data["VALID_RANGE"])
        if "DATASET" in data:
            self.note("data.DATASET", DECIDE, f"{data['DATASET']!r} chose how images were loaded and "
                      "stretched; today train.NORMALISATION (STRETCH arcsinh/log/linear, SCALE, CLIP) "
                      "does that, and the new file keeps its default (arcsinh)", data["DATASET"])
        if "NUM_WORKERS" in data:
            self.note("data.NUM_WORKERS", DROPPED, "tf.data tunes its own parallelism (AUTOTUNE)")

    def train_clr(self) -> None:
        tc = self.raw.get("train_clr") or {}
        if not tc:
            return
        self.add("train", "OPTIMIZER", "adam", "the original trained with Adam")
        if "LEARNING_RATE" in tc:
            self.put("train_clr.LEARNING_RATE", "train", "LEARNING_RATE", _float(tc["LEARNING_RATE"]))
            self.add("train", "LR_SCALING", "none", "the original did not scale the rate with the batch")
            self.add("train", "WARMUP_EPOCHS", 0, "the original had no warm-up")
        if "L2_DECAY" in tc:
            self.put("train_clr.L2_DECAY", "train", "WEIGHT_DECAY", _float(tc["L2_DECAY"]),
                     "today not applied to batch-norm and bias variables")
        self.adam_betas("train_clr", "the encoder's optimiser")
        for key in ("LR_PATIENCE", "LR_DECAY"):
            if key in tc:
                self.note(f"train_clr.{key}", DROPPED, f"{tc[key]}: no reduce-on-plateau here; the "
                          "rate follows linear warm-up then cosine decay")
        for old, new in (("BATCH_SIZE", "BATCH_SIZE"), ("NUM_EPOCHS", "EPOCHS"),
                         ("MAX_NUM_BATCHES_PER_EPOCH", "STEPS_PER_EPOCH"),
                         ("MAX_RUNTIME_SECONDS", "MAX_RUNTIME_SECONDS"), ("PATIENCE", "PATIENCE")):
            if old in tc:
                self.put(f"train_clr.{old}", "train", new, _none(tc[old]))
        if "PARALLEL_TRAINING" in tc:
            self.put("train_clr.PARALLEL_TRAINING", "train", "DISTRIBUTION",
                     "mirrored" if tc["PARALLEL_TRAINING"] else "default",
                     "tf.distribute instead of torch.nn.DataParallel")
        for key, what in (("DOMAIN_TRAINING", "training on the domain split"),
                          ("DOMAIN_ADAPTION", "domain adaption during training")):
            if key in tc:
                self.drop_or_decide(f"train_clr.{key}", tc[key], not tc[key],
                                    "false, which is today's behaviour",
                                    f"true: no counterpart yet ({what} is not implemented; the "
                                    "domain split does not exist)")
        clr_type = str(tc.get("CLR_TYPE", "SIMCLR")).upper()
        if "CLR_TYPE" in tc:
            self.drop_or_decide("train_clr.CLR_TYPE", tc["CLR_TYPE"], clr_type == "SIMCLR",
                                "SIMCLR is the method here",
                                f"{tc['CLR_TYPE']}: no counterpart yet (NNCLR is not "
                                "implemented); the new file trains SimCLR")
        if "NNCLR_QUEUE_SIZE" in tc:
            self.drop_or_decide("train_clr.NNCLR_QUEUE_SIZE", tc["NNCLR_QUEUE_SIZE"],
                                clr_type != "NNCLR", "only used by NNCLR, which was off",
                                f"{tc['NNCLR_QUEUE_SIZE']}: no counterpart yet (NNCLR is not "
                                "implemented)")
        if "AUGMENTATION_PARAMS" in tc:
            self.augmentation(tc["AUGMENTATION_PARAMS"] or {}, "train_clr.AUGMENTATION_PARAMS")

    def augmentation(self, aug: dict, prefix: str) -> None:
        new: dict[str, Any] = {}

        def put(old, key, value, comment=""):
            new[key] = value
            self.note(f"{prefix}.{old}", MAPPED, f"-> train.AUGMENTATION.{key} = {_flow(value)}"
                      + (f" ({comment})" if comment else ""))

        for key, value in aug.items():
            if key == "ROTATION":
                put(key, "ROTATION", bool(_float(value)), f"was ±{value}°; today the angle is uniform "
                    "in [0, 360°), there is no maximum")
            elif key == "TRANSLATE":
                if 0 <= float(value) <= 0.5:
                    put(key, "TRANSLATE", float(value), "fraction of the image size")
                else:
                    self.note(f"{prefix}.{key}", DECIDE, f"{value}: today's TRANSLATE allows at most "
                              "0.5 of the image size", value)
            elif key == "SCALE":
                put(key, "ZOOM", [1.0, float(value)], "maximum zoom-in -> zoom range")
            elif key == "FLIP":
                put(key, "FLIP", bool(value))
            elif key == "GAUSSIAN_BLUR_SIGMA":
                put(key, "BLUR_SIGMA", [float(v) for v in value], "σ in pixels")
            elif key == "NOISE_STD":
                put(key, "NOISE_STD", [float(v) for v in value], "check: today σ is in image units "
                    "before the stretch; the original added it to images normalised to 1")
            elif key == "CLIP_MIN":
                self.note(f"{prefix}.{key}", DECIDE, f"{value}: today clipping is "
                          "train.NORMALISATION.CLIP [low, high], applied after the stretch", value)
            else:
                self.note(f"{prefix}.{key}", DECIDE, "unknown augmentation of the original format; "
                          "not migrated", value)
        if new:
            self.new["train"]["AUGMENTATION"] = new

    def model(self) -> None:
        model = self.raw.get("model") or {}
        filters = self.new["extract"].get("FILTERS") or []
        for key, value in model.items():
            old = f"model.{key}"
            if old in self.done:  # cINN keys, see migrate_posterior
                continue
            if key == "RESNET_PROJECTION_DIM":
                self.put(old, "train", "OUTPUT_DIM", value, "projection (loss) dimension")
            elif key == "RESNET_PROJECTION_DEPTH":
                self.put(old, "train", "HEAD_LAYERS", value, "layers of the projection head")
            elif key == "RESNET_NUM_CHANNELS":
                if value == len(filters):
                    self.note(old, DROPPED, f"{value}: the band count follows extract.FILTERS")
                else:
                    self.note(old, DECIDE, f"{value} channels but extract.FILTERS has {len(filters)} "
                              "bands; the band count follows FILTERS", value)
            elif key.startswith("RESNET_"):
                self.note(old, DECIDE, f"{value}: no counterpart yet (the encoder is a ResNet-18/34/50 "
                          "with train.ARCHITECTURE, WIDTH_MULTIPLIER and STEM, not the original "
                          "E(2)-equivariant wide ResNet)", value)
            elif key == "PATIENCE":
                self.note(old, DROPPED, f"{value}: early stopping is train.PATIENCE")
            else:
                self.note(old, DECIDE, f"{_flow(value)}: unknown key of the original model:", value)

    def losses(self) -> None:
        losses = self.raw.get("losses") or {}
        for key, value in losses.items():
            old = f"losses.{key}"
            if key in CINN_LOSS_KEYS:  # see migrate_posterior
                continue
            if key == "nce_temperature":
                self.put(old, "train", "TEMPERATURE", _float(value), "NT-Xent temperature")
            elif key == "lambd_clr_train":
                self.drop_or_decide(old, value, _float(value) == 1.0,
                                    "1: the contrastive loss is the only loss, with weight 1",
                                    f"{value}: the contrastive loss has weight 1 here")
            elif key in ("lambd_clr_domain", "lambd_clr_adaption", "mmd_kernel_type", "mmd_kernels",
                         "adaption_type"):
                self.drop_or_decide(old, value, key.startswith("lambd") and _float(value) == 0.0,
                                    "0: off, as today (no domain terms)",
                                    f"{_flow(value)}: no counterpart yet (domain training and "
                                    "adaption are not implemented)")
            else:
                self.note(old, DECIDE, f"{_flow(value)}: unknown loss of the original format", value)

    def unsupported(self, section: str, reason: str) -> None:
        for key, value in (self.raw.get(section) or {}).items():
            self.note(f"{section}.{key}", DECIDE, f"{_flow(value)}: {reason}", value)

    def analyse(self) -> None:
        sets = [s for s, _ in self.new["prepare"].get("SETS", [])]
        observed = [s for s in sets if self.kinds.get(s) == "survey"]
        simulated = [s for s in sets if self.kinds.get(s, "").startswith("tng_stellar")]
        if observed and simulated:
            self.add("analyse", "OBSERVED_SETS", observed, "survey datasets of prepare.SETS")
            self.add("analyse", "SIMULATED_SETS", simulated, "TNG datasets compared with them")

    def leftovers(self) -> None:
        """Every old key not handled above is reported, never silently lost."""
        for section, content in self.raw.items():
            if content is None:
                continue
            if not isinstance(content, dict):
                self.note(str(section), DECIDE, "not a section of the original format; not migrated",
                          content)
                continue
            for key, value in content.items():
                old = f"{section}.{key}"
                if old in self.done:
                    continue
                if CREDENTIAL.search(str(key)):
                    self.note(old, REMOVED, "looks like a credential; not copied")
                elif key == "AUGMENTATION_PARAMS" or any(n.old.startswith(old + ".") for n in self.notes):
                    continue
                else:
                    self.note(old, DECIDE, "unknown key of the original format; not migrated", value)

    def run(self) -> Migration:
        self.neptune()
        self.extract()
        self.prepare()
        self.data()
        self.train_clr()
        for section, reason in UNSUPPORTED_SECTIONS.items():
            self.unsupported(section, reason)
        migrate_posterior(self)
        self.model()
        self.losses()
        self.analyse()
        self.leftovers()
        params = {k: v for k, v in self.new.items() if v}
        return Migration(params, self.notes)


def is_original_format(raw: Any) -> bool:
    """True for a mapping written for the original pipeline (see ``ORIGINAL_ONLY_SECTIONS``)."""
    return bool(original_format_reasons(raw))


def migrate(raw: dict) -> Migration:
    """Today's params mapping for an original-format mapping, with one note per old key."""
    if not isinstance(raw, dict):
        raise ParamsError("expected a mapping of sections")
    return _Migrator(raw).run()


def render(migration: Migration, source: Path | str) -> str:
    """The new file: a header, today's sections, and the values that need a decision as
    comments (credentials never appear)."""
    today = datetime.date.today().isoformat()
    head = [f"# Migrated from {source} by `python -m scripts.params --migrate` on {today}.",
            "# Every key is documented in README 'params.yaml'. Review the lines below marked",
            "# 'needs a decision' (no counterpart yet) before relying on this file.", ""]
    body = yaml.safe_dump(migration.params, sort_keys=False, default_flow_style=None, width=100,
                          allow_unicode=True)
    decide = [n for n in migration.notes if n.kind == DECIDE]
    tail = []
    if decide:
        tail = ["", "# Needs a decision: original keys with no counterpart yet (values kept for reference)."]
        tail += [f"#   {n.old}: {_flow(n.value)}" for n in decide]
    return "\n".join(head) + body + "\n".join(tail) + ("\n" if tail else "")


def migrate_file(src: Path, dst: Path | None = None) -> tuple[Migration, Path, str | None]:
    """Read ``src``, write the migrated file to ``dst`` (default: ``<src stem>.migrated.yaml``
    beside it, never over ``src``); returns the migration, the path written and the
    validation error of the new file (None when today's loader accepts it)."""
    src = Path(src)
    try:
        raw = yaml.safe_load(src.read_text())
    except OSError as err:
        raise ParamsError(f"{src}: cannot read the params file ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ParamsError(f"{src}: not valid YAML ({err})") from None
    if not is_original_format(raw):
        raise ParamsError(f"{src}: not a parameter file of the original pipeline (none of the "
                          f"sections {list(ORIGINAL_ONLY_SECTIONS)} and no four-fraction "
                          "prepare.SETS); validate it with `python -m scripts.params --params FILE`")
    dst = Path(dst) if dst is not None else src.with_name(src.stem + ".migrated.yaml")
    if dst.resolve() == src.resolve():
        raise ParamsError(f"{dst}: the output would overwrite the original file; choose another -o")
    migration = migrate(raw)
    text = render(migration, src.name)
    try:
        parse_params(yaml.safe_load(text), source=dst)
        problem = None
    except ParamsError as err:
        problem = str(err)
    dst.write_text(text, encoding="utf-8")
    return migration, dst, problem


def report(migration: Migration, dst: Path, problem: str | None) -> str:
    """The lines printed by ``--migrate``: one per old key, then a summary."""
    lines = [n.line() for n in migration.notes]
    summary = (f"wrote {dst}: {migration.count(MAPPED)} mapped, {migration.count(ADDED)} added, "
               f"{migration.count(DROPPED)} dropped, {migration.count(DECIDE)} need a decision, "
               f"{migration.count(REMOVED)} credential(s) removed; ")
    summary += ("it validates with today's loader" if problem is None
                else f"it does not validate yet: {problem}")
    return "\n".join(lines + [summary])
