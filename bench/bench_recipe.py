"""Benchmark: which training recipe gives a representation that learns physics (issue 11).

Trains several variants of a params file (``--params``: ``params.demo.yaml`` by default,
``params.science.yaml`` with ``--size science``) on the mock universe, analyses each one
with the analyse stage, and prints one table: object permanence top-1/top-5 and the kNN
R² of each physical driver on the **test** split of MOCK_FIDUCIAL, for the representation
of every variant, beside the baselines the analyse stage computes in the same run
(``pixels``, ``photometry``, and ``representation+photometry`` of every variant). Each
cell also shows its difference from the ``baseline`` variant measured in the same bench
run.

    python -m bench.bench_recipe                          # every variant, demo scale
    python -m bench.bench_recipe --variants baseline,nnclr,temperature_0.5
    python -m bench.bench_recipe --list                   # the variants and what they change
    python -m bench.bench_recipe --smoke                  # small mock, a few steps: plumbing
    python -m bench.bench_recipe --params params.science.yaml --size science   # science scale

Everything goes to a bench folder (``--workdir``, default ``/tmp/bench_recipe/<scale>``):
the mock universe is rendered once, and extracted + prepared once per set of extract
and prepare settings (``dataset_<size>[_<overrides>]_<digest of both sections>``; reused
when present), every variant trains into ``models/recipe-<name>``
and is analysed into ``reports/recipe-<name>``, so the demo's own ``dataset/`` and
``models/`` are never touched. A variant whose ``metrics.json`` exists from the same
settings is reused (``--rerun`` trains it again). Each variant trains in its own process.

The analyse settings of the bench differ from the demo's in what is measured, not how:
only MOCK_FIDUCIAL is embedded (no observed set, so no realism test, which the recipe
does not need), on its test split, with every driver of issue 11 (the ``pixels`` PCA is
therefore fitted on MOCK_FIDUCIAL alone).
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger("bench.bench_recipe")

DATASET = "MOCK_FIDUCIAL"
DRIVERS = ("stellar_mass", "ssfr", "half_mass_radius_kpc", "exsitu_fraction",
           "lookback_last_major_merger")
SHORT = {"stellar_mass": "M*", "ssfr": "sSFR", "half_mass_radius_kpc": "r_half",
         "exsitu_fraction": "f_exsitu", "lookback_last_major_merger": "t_merger"}
BASELINE = "baseline"


#: (NOISE_STD upper bound, NORMALISATION.SCALE) in sky σ tried around the demo's; the one
#: equal to params.demo.yaml is its baseline and is skipped.
SKY_GRID = ((1.0, 1.0), (1.0, 3.0), (1.0, 10.0), (1.0, 30.0), (1.0, 100.0), (0.0, 3.0), (3.0, 3.0))


def per_band_equivalent_jitter(flux_scale: tuple[float, float]) -> float:
    """COLOUR_JITTER_MAG whose colour scatter equals that of the former augmentation, which
    drew an independent log-uniform factor in ``flux_scale`` for every band: the standard
    deviation of ``2.5·log10(U)`` for log-uniform ``U`` is ``2.5·ln(hi/lo) / (ln 10·√12)``."""
    lo, hi = flux_scale
    return 2.5 * math.log(hi / lo) / (math.log(10.0) * math.sqrt(12.0))


@dataclasses.dataclass(frozen=True)
class Variant:
    """One recipe: overrides of ``train`` (and of ``extract``, for the image size)."""

    name: str
    doc: str
    train: dict = dataclasses.field(default_factory=dict)
    extract: dict = dataclasses.field(default_factory=dict)


def _with_seeds(variant: Variant, seed: int) -> list[Variant]:
    """``variant`` and its copies ``<name>_seed_1`` and ``<name>_seed_2`` at train.SEED
    ``seed`` + 1 and + 2: the seed spread that any difference from the baseline must exceed."""
    return [variant] + [dataclasses.replace(variant, name=f"{variant.name}_seed_{k}",
                                            doc=f"{variant.name} with train.SEED {seed + k}: its "
                                                "seed spread",
                                            train={**variant.train, "SEED": seed + k})
                        for k in (1, 2)]


def _neighbour_variants(preset: str, seed: int) -> list[Variant]:
    """``neighbours_removed`` and ``neighbours_masked`` (each with two more seeds), except
    the one the params file already uses (the presets remove since 2026-12-04)."""
    docs = {"remove": "the other sources detected in each frame are replaced in the stored "
                      "images by the galaxy's annulus mean plus sky noise, so the projections of "
                      "a galaxy no longer differ by their neighbours",
            "mask": "the other sources are left out of the Petrosian fit only and stay in the "
                    "stored images, as they are on the sky"}
    out = []
    for mode, name in (("remove", "neighbours_removed"), ("mask", "neighbours_masked")):
        if mode == preset:
            continue
        out += _with_seeds(Variant(name, f"extract.NEIGHBOURS {mode}: {docs[mode]} (own dataset)",
                                   extract={"NEIGHBOURS": mode}), seed)
    return out


#: The presets' shared flux-scale range before 2026-12-05, when they turned it off; the
#: former per-band draw (``flux_per_band_old``) used the same range for each band.
FORMER_FLUX_SCALE = (0.9, 1.1)


def _flux_scale_variants(flux_scale: list, seed: int) -> list[Variant]:
    """``flux_scale_off`` (FLUX_SCALE [1, 1]) with two more seeds or, when the params file
    already has no flux factor (the presets since 2026-12-05), ``flux_scale_on``: the
    former presets' FORMER_FLUX_SCALE, so the choice stays measured against its alternative."""
    if tuple(flux_scale) == (1.0, 1.0):
        name, value, doc = ("flux_scale_on", list(FORMER_FLUX_SCALE), "one shared flux factor per "
                            "image, as the presets had before, so the total brightness is partly "
                            "augmented away")
    else:
        name, value, doc = ("flux_scale_off", [1.0, 1.0], "no shared flux factor, so the total "
                            "brightness (the oracle's strongest identity cue) is not augmented away")
    return _with_seeds(Variant(name, f"FLUX_SCALE {value}: {doc}",
                               {"AUGMENTATION": {"FLUX_SCALE": value}}), seed)


def variants(demo: dict) -> dict[str, Variant]:
    """The variants of issue 11, derived from the demo params ``demo`` (raw YAML mapping)."""
    tr = demo["train"]
    aug = tr["AUGMENTATION"]
    steps, seed = tr["STEPS_PER_EPOCH"], tr.get("SEED", 0)
    old_jitter = round(per_band_equivalent_jitter(FORMER_FLUX_SCALE), 4)
    out = [
        Variant(BASELINE, "the --params file as it is (params.demo.yaml by default)"),
        Variant("seed_1", "the baseline with train.SEED 1: the seed-to-seed spread that "
                "any other difference must exceed", {"SEED": seed + 1}),
        Variant("seed_2", "the baseline with train.SEED 2: a third point of the seed spread",
                {"SEED": seed + 2}),
        Variant("flux_per_band_old", "colour scatter of the former independent per-band "
                f"FLUX_SCALE {list(FORMER_FLUX_SCALE)} (COLOUR_JITTER_MAG {old_jitter})",
                {"AUGMENTATION": {"COLOUR_JITTER_MAG": old_jitter}}),
        Variant("colour_jitter_0", "shared flux scale only, no per-band jitter",
                {"AUGMENTATION": {"COLOUR_JITTER_MAG": 0.0}}),
        *_flux_scale_variants(aug["FLUX_SCALE"], seed),
        Variant("zoom_off", "ZOOM [1, 1]: no zoom, so the galaxy's extent in the crop is not "
                "augmented away", {"AUGMENTATION": {"ZOOM": [1.0, 1.0]}}),
        Variant("photometry_kept", "FLUX_SCALE [1, 1], COLOUR_JITTER_MAG 0, ZOOM [1, 1], "
                "BLUR_SIGMA [0, 0]: only rotation, flips, shifts and sky noise, so brightness, "
                "colour, extent and concentration are left to the projections to vary",
                {"AUGMENTATION": {"FLUX_SCALE": [1.0, 1.0], "COLOUR_JITTER_MAG": 0.0,
                                  "ZOOM": [1.0, 1.0], "BLUR_SIGMA": [0.0, 0.0]}}),
        Variant("nnclr", "METHOD nnclr (nearest-neighbour positives)", {"METHOD": "nnclr"}),
        Variant("temperature_0.1", "TEMPERATURE 0.1", {"TEMPERATURE": 0.1}),
        Variant("temperature_0.5", "TEMPERATURE 0.5", {"TEMPERATURE": 0.5}),
        Variant("positives_augmentations", "POSITIVES augmentations (two views of one image, "
                "not another projection)", {"POSITIVES": "augmentations"}),
        Variant("wide_half_steps", f"WIDTH_MULTIPLIER {2 * tr['WIDTH_MULTIPLIER']:g} with half the "
                "steps (about the same CPU time)",
                {"WIDTH_MULTIPLIER": 2 * tr["WIDTH_MULTIPLIER"], "STEPS_PER_EPOCH": max(1, steps // 2)}),
        *_with_seeds(Variant("wide", f"WIDTH_MULTIPLIER {2 * tr['WIDTH_MULTIPLIER']:g} with all "
                             "the steps (about twice the CPU time)",
                             {"WIDTH_MULTIPLIER": 2 * tr["WIDTH_MULTIPLIER"]}), seed),
        Variant("deep_half_steps", "resnet34 with half the steps (about the same CPU time)",
                {"ARCHITECTURE": "resnet34", "STEPS_PER_EPOCH": max(1, steps // 2)}),
        Variant("epochs_x2", f"EPOCHS {2 * tr['EPOCHS']} (twice the steps and CPU time)",
                {"EPOCHS": 2 * tr["EPOCHS"]}),
        Variant("batch_x2", f"BATCH_SIZE {2 * tr['BATCH_SIZE']} (twice the negatives and CPU time)",
                {"BATCH_SIZE": 2 * tr["BATCH_SIZE"]}),
        Variant("lr_x0.3", f"LEARNING_RATE {tr['LEARNING_RATE'] * 0.3:g} (LARS)",
                {"LEARNING_RATE": tr["LEARNING_RATE"] * 0.3}),
        *_with_seeds(Variant("lr_x3", f"LEARNING_RATE {tr['LEARNING_RATE'] * 3:g} (LARS)",
                             {"LEARNING_RATE": tr["LEARNING_RATE"] * 3}), seed),
        Variant("adam", "OPTIMIZER adam, LEARNING_RATE 4e-3 (1e-3 after linear batch scaling "
                "at batch 64)", {"OPTIMIZER": "adam", "LEARNING_RATE": 4e-3}),
        Variant("image_units_former", "PIXEL_UNIT image with the former demo's NOISE_STD [0, 0.05] "
                "and SCALE 0.1 nanomaggies (~70 and ~150 sky σ of the calibrated mock)",
                {"PIXEL_UNIT": "image", "AUGMENTATION": {"NOISE_STD": [0.0, 0.05]},
                 "NORMALISATION": {"SCALE": 0.1}}),
        *(Variant(f"sky_noise{hi:g}_scale{scale:g}", f"PIXEL_UNIT sky: NOISE_STD [0, {hi:g}] σ, "
                  f"NORMALISATION.SCALE {scale:g} σ (σ: each band's measured sky noise)",
                  {"PIXEL_UNIT": "sky", "AUGMENTATION": {"NOISE_STD": [0.0, hi]},
                   "NORMALISATION": {"SCALE": scale}})
          for hi, scale in SKY_GRID
          if (tr.get("PIXEL_UNIT"), [0.0, hi], scale) != ("sky", list(aug["NOISE_STD"]),
                                                         tr["NORMALISATION"]["SCALE"])),
        Variant("crop_fraction", "extract.CROPPERS fraction for the galaxy sets (CROP_FRACTION "
                "0.5, about the Petrosian crop's mean framing): every projection of a galaxy is "
                "cut at the same scale (its frame's), not at its own measured R90 (own dataset)",
                extract={"CROPPERS": [c if c != "petrosian" else "fraction"
                                      for c in demo["extract"].get("CROPPERS") or []],
                         "CROP_FRACTION": 0.5}),
        *_neighbour_variants(demo["extract"].get("NEIGHBOURS", "keep"), seed),
        *_with_seeds(Variant("full_schedule", f"PATIENCE {tr['EPOCHS']} (= EPOCHS): no early stop, "
                             "so every run follows the whole cosine schedule down to a learning "
                             "rate of zero instead of stopping on a plateau of the noisy "
                             "validation loss", {"PATIENCE": tr["EPOCHS"]}), seed),
        Variant("image_48", "extract.IMAGE_SIZE 48 (its own extracted dataset)",
                extract={"IMAGE_SIZE": 48}),
        Variant("image_64", "extract.IMAGE_SIZE 64 (its own extracted dataset)",
                extract={"IMAGE_SIZE": 64}),
    ]
    return {v.name: v for v in out}


# --------------------------------------------------------------------------- params
def _merge(base: dict, overrides: dict) -> dict:
    """``base`` with ``overrides`` merged in, nested mappings key by key."""
    out = copy.deepcopy(base)
    for k, v in overrides.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def bench_raw(demo: dict, smoke: bool) -> dict:
    """The demo params with the bench's analyse settings (and tiny sizes with ``smoke``)."""
    raw = _merge(demo, {"analyse": {
        "OBSERVED_SETS": [], "SIMULATED_SETS": [DATASET], "SPLITS": ["test"],
        "EVALUATION_SPLITS": ["test"], "DRIVER_FIELDS": list(DRIVERS)}})
    raw["tracking"] = {"BACKENDS": ["none"]}
    if smoke:
        raw = _merge(raw, {
            "extract": {"NUM_WORKERS": 1, "SIZE_CHUNKS": 64},
            "train": {"EPOCHS": 1, "STEPS_PER_EPOCH": 2, "BATCH_SIZE": 16, "WARMUP_EPOCHS": 0,
                      "CHECKPOINT_EVERY": 1000},
            "analyse": {"CV_FOLDS": 2, "KNN_K": 3, "UMAP": {"N_NEIGHBORS": 5, "FIT_SUBSAMPLE": 50},
                        "BATCH_SIZE": 64}})
    return raw


def variant_raw(base: dict, variant: Variant, run_name: str) -> dict:
    return _merge(base, {"extract": variant.extract,
                         "train": {**variant.train, "RUN_NAME": run_name}})


# --------------------------------------------------------------------------- dataset
def _env(work: Path, dataset: Path) -> dict:
    env = dict(os.environ)
    env.update(DATASET_RAW_PATH=str(work / "dataset_raw"), ILLUSTRIS_PATH=str(work / "dataset_raw" / "TNG"),
               DATASET_PATH=str(dataset), MODELS_PATH=str(work / "models"),
               REPORTS_PATH=str(work / "reports"), PLOTS_PATH=str(work / "plots"),
               TF_CPP_MIN_LOG_LEVEL="2")
    return env


def _stage(module: str, args: list[str], env: dict) -> None:
    log.info("running %s %s", module, " ".join(args))
    subprocess.run([sys.executable, "-m", module, *args], check=True, env=env, cwd=ROOT)


#: extract keys that change how fast a dataset is made, not its images
_SPEED_KEYS = ("NUM_WORKERS", "SIZE_CHUNKS", "USE_CACHE")


def dataset_name(raw: dict, extract: dict) -> str:
    """Folder of the dataset a variant trains on: ``dataset_<IMAGE_SIZE>``, the variant's
    other extract overrides (``extract``), then a digest of the whole extract and prepare
    sections, so that each extraction has its own folder and a changed --params file (e.g.
    its NEIGHBOURS or its splits) never reuses a dataset made with the former settings."""
    extra = "_".join(f"{k.lower()}-{'-'.join(map(str, v)) if isinstance(v, (list, tuple)) else v}"
                     for k, v in sorted(extract.items()) if k != "IMAGE_SIZE")
    settings = {"extract": {k: v for k, v in raw["extract"].items() if k not in _SPEED_KEYS},
                "prepare": raw.get("prepare")}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"dataset_{raw['extract']['IMAGE_SIZE']}" + (f"_{extra}" if extra else "") + f"_{digest}"


def ensure_dataset(raw: dict, work: Path, size: str, extract: dict | None = None) -> Path:
    """The extracted and prepared dataset for ``raw``'s extract settings (``extract``: the
    variant's overrides, which name the folder), built with the stages' own command lines
    (mock universe ``size``, extract, prepare) when missing."""
    name = dataset_name(raw, extract or {})
    dataset = work / name
    if (dataset / "splits.parquet").exists():
        return dataset
    params_file = work / f"params_{name}.yaml"
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    env = _env(work, dataset)
    if not (work / "dataset_raw" / DATASET).exists():
        _stage("scripts.mock", ["--params", str(params_file), "--size", size], env)
    _stage("scripts.preprocessing.extract", ["--params", str(params_file)], env)
    _stage("scripts.preprocessing.prepare", ["--params", str(params_file)], env)
    return dataset


# --------------------------------------------------------------------------- one variant
def _settings(raw: dict) -> dict:
    """What decides a variant's result: its train, extract and analyse sections."""
    return json.loads(json.dumps({k: raw[k] for k in ("train", "extract", "analyse")}))


def saved_result(variant: Variant, base: dict, work: Path, prefix: str) -> dict | None:
    """The result an earlier run of this variant left with the same settings, else None."""
    run_name = f"{prefix}-{variant.name}"
    report = work / "reports" / run_name
    if not (report / "bench_variant.json").exists() or not (report / "metrics.json").exists():
        return None
    saved = json.loads((report / "bench_variant.json").read_text())
    if saved["settings"] != _settings(variant_raw(base, variant, run_name)):
        return None
    return {"metrics": json.loads((report / "metrics.json").read_text()), "train": saved["train"],
            "seconds": saved["seconds"], "date": saved["date"]}


def train_and_analyse(variant: Variant, base: dict, work: Path, size: str, prefix: str) -> None:
    """Train and analyse one variant from scratch; the result is left in its report folder
    (``metrics.json`` and ``bench_variant.json``) for :func:`saved_result`."""
    from scripts.model import onednn
    from scripts.params import parse_params

    run_name = f"{prefix}-{variant.name}"
    raw = variant_raw(base, variant, run_name)
    # before TensorFlow is imported (by the stages below): the 48/64 px variants crash in
    # TF 2.21's oneDNN kernels otherwise (scripts/model/onednn.py)
    params = parse_params(raw)
    onednn.configure(params.train.width_multiplier, params.extract.image_size)
    from scripts import analyse
    from scripts.train import run_training

    models, reports = work / "models", work / "reports"
    dataset = ensure_dataset(raw, work, size, variant.extract)
    for folder in (models / run_name, reports / run_name):
        shutil.rmtree(folder, ignore_errors=True)
    log.info("%s: training %s", variant.name, variant.doc)
    start = time.perf_counter()
    summary = run_training(params, dataset, models, progress=False)
    train_seconds = time.perf_counter() - start
    analyse.run(params, dataset, models, reports,
                driver_max_samples=params.analyse.driver_max_samples,
                mmd_max_samples=params.analyse.realism.mmd_max_samples)
    seconds = {"train": train_seconds, "total": time.perf_counter() - start}
    train = {k: summary.get(k) for k in ("steps", "final_val_accuracy", "final_val_loss",
                                         "stopping_reason", "images_per_second")}
    (reports / run_name / "bench_variant.json").write_text(json.dumps(
        {"settings": _settings(raw), "train": train, "seconds": seconds,
         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, indent=2))


def run_variant(name: str, args: argparse.Namespace, work: Path) -> int:
    """Train and analyse variant ``name`` in its own process (TensorFlow state does not
    build up across variants, and a crash loses only this variant); its exit status."""
    command = [sys.executable, "-m", "bench.bench_recipe", "--only", name, "--workdir", str(work),
               "--params", str(args.params), "--size", args.size] + (["--smoke"] if args.smoke else [])
    return subprocess.run(command, cwd=ROOT).returncode


# --------------------------------------------------------------------------- table
def rows_of(results: dict[str, dict]) -> list[dict]:
    """Table rows: ``{"variant", "features", "top1", "top5", <driver>: r2}``: the
    representation of every variant, then the baselines of the baseline variant's analysis
    (they do not depend on the network), then representation+photometry of every variant."""
    def drivers(metrics, feature_set):
        entries = metrics.get("drivers", {}).get(DATASET, {})
        return {f: entries.get(f, {}).get(feature_set, {}).get("r2") for f in DRIVERS}

    def permanence(metrics, feature_set):
        perm = metrics.get("permanence", {}).get(DATASET, {})
        source = perm if feature_set == "representation" else perm.get("baselines", {}).get(feature_set, {})
        return {"top1": source.get("top1"), "top5": source.get("top5")}

    rows = []
    for name, res in results.items():
        rows.append({"variant": name, "features": "representation",
                     **permanence(res["metrics"], "representation"),
                     **drivers(res["metrics"], "representation"), "val_acc": res["train"].get("final_val_accuracy"),
                     "seconds": res["seconds"]["total"]})
    reference = results.get(BASELINE) or next(iter(results.values()))
    for feature_set in ("pixels", "photometry"):
        rows.append({"variant": "(analyse baseline)", "features": feature_set,
                     **permanence(reference["metrics"], feature_set),
                     **drivers(reference["metrics"], feature_set)})
    for name, res in results.items():
        rows.append({"variant": name, "features": "representation+photometry",
                     **permanence(res["metrics"], "representation+photometry"),
                     **drivers(res["metrics"], "representation+photometry")})
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table; each value of a variant other than the baseline also shows its
    difference from the baseline variant's row of the same feature set."""
    keys = ["top1", "top5", *DRIVERS]
    base = {r["features"]: r for r in rows if r["variant"] == BASELINE}

    def cell(row, k):
        v = row.get(k)
        if v is None:
            return "–"
        ref = base.get(row["features"], {}).get(k)
        if row["variant"] in (BASELINE, "(analyse baseline)") or ref is None:
            return f"{v:.2f}"
        return f"{v:.2f} ({v - ref:+.2f})"

    head = ["variant", "features", "top-1", "top-5", *(f"R² {SHORT[d]}" for d in DRIVERS),
            "val acc", "train+analyse s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        extra = [f"{r['val_acc']:.2f}" if r.get("val_acc") is not None else "",
                 f"{r['seconds']:.0f}" if r.get("seconds") is not None else ""]
        lines.append("| " + " | ".join([r["variant"], r["features"], *(cell(r, k) for k in keys),
                                        *extra]) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line
def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=ROOT / "params.demo.yaml",
                        help="params the variants start from (default: params.demo.yaml)")
    parser.add_argument("--variants", help="comma-separated variant names (default: all); "
                        f"{BASELINE} is always run first")
    parser.add_argument("--list", action="store_true", help="list the variants and exit")
    parser.add_argument("--size", choices=("demo", "science"), default="demo",
                        help="mock universe size (scripts.mock --size): 'science' with "
                        "--params params.science.yaml measures the science preset's recipe")
    parser.add_argument("--smoke", action="store_true",
                        help="small mock universe and 2 training steps: checks the plumbing only")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="bench folder (default: /tmp/bench_recipe/demo or .../smoke)")
    parser.add_argument("--rerun", action="store_true", help="train variants again even if "
                        "a result with the same settings exists")
    parser.add_argument("--only", choices=None, help=argparse.SUPPRESS)  # one variant, no table
    parser.add_argument("--json", type=Path, help="also write the table rows to this JSON file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    demo = yaml.safe_load(args.params.read_text())
    all_variants = variants(demo)
    if args.list:
        for v in all_variants.values():
            print(f"{v.name:26s} {v.doc}")
        return 0
    names = list(all_variants) if not args.variants else [n.strip() for n in args.variants.split(",")]
    unknown = [n for n in names + ([args.only] if args.only else []) if n not in all_variants]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; see --list")
    names = [BASELINE] + [n for n in names if n != BASELINE]
    scale = "smoke" if args.smoke else args.size
    work = (args.workdir or Path("/tmp/bench_recipe") / scale).resolve()
    work.mkdir(parents=True, exist_ok=True)
    base = bench_raw(demo, args.smoke)
    prefix = f"recipe-{scale}"
    if args.only:
        train_and_analyse(all_variants[args.only], base, work, "small" if args.smoke else args.size, prefix)
        return 0
    results, failed = {}, {}
    for name in names:
        result = None if args.rerun else saved_result(all_variants[name], base, work, prefix)
        if result is not None:
            log.info("%s: reusing the result of %s", name, result["date"])
            result["reused"] = True
        else:
            status = run_variant(name, args, work)
            result = saved_result(all_variants[name], base, work, prefix)
            if status != 0 or result is None:
                log.error("%s: failed (exit status %d); left out of the table", name, status)
                failed[name] = status
                continue
        results[name] = result
    if BASELINE not in results:
        log.error("the baseline variant failed; no table")
        return 1
    rows = rows_of(results)
    print(f"\nRepresentation recipe, {DATASET} test split ({scale} scale, {work}); "
          "kNN R² per driver, object permanence; (±x.xx) = difference from the baseline variant\n")
    print(format_table(rows))
    for name in (n for n in names if n in results):
        print(f"- {name}: {all_variants[name].doc}"
              + (" [reused]" if results[name].get("reused") else ""))
    for name, status in failed.items():
        print(f"- {name}: FAILED (exit status {status}): {all_variants[name].doc}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
