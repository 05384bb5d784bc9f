"""Parse and validate ``params.yaml``: the only place the file is read.

Every stage calls :func:`load_params` once and receives typed, frozen objects
(:class:`Params` with one section object per stage); stages never read the YAML
themselves. Each rule fails with a :class:`ParamsError` whose message names the key path
(``extract.FRACTION[2]``), the value found and what was expected; unknown keys are
rejected with a "did you mean" suggestion, so a typo never silently becomes a default.

The schema is declared once, as dataclass fields carrying a :class:`Key` in their
metadata; the same declaration drives parsing, defaults and the README table
(``python -m scripts.params --doc``).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from scripts.params_rules import (MAX_COLOUR_JITTER_MAG, ParamsError, bands,
                                  boolean, extnames, fail, integer, list_of, mapping,
                                  number, optional, pair, ranges, regex, rotation_limit,
                                  shared_flux_scale, string, tracking_backends)
from scripts.preprocessing.kind_registry import KINDS, runs_petrosian_fit

logger = logging.getLogger(__name__)

REQUIRED = object()
#: Keys renamed since: section → {old YAML name: new YAML name}. The old name is read as the
#: new one with a warning; giving both is an error.
RENAMED_KEYS = {"extract": {"SPLIT_SEED": "SELECTION_SEED"}}
SPLITS = ("train", "validation", "test")
#: joblib backends extract runs its workers on (dask: a dask.distributed cluster).
JOBLIB_BACKENDS = ("loky", "dask")
NEIGHBOUR_MODES = ("keep", "mask", "remove")   # extract.NEIGHBOURS (see scripts/preprocessing/deblend.py)
#: Pixel types of an image store (extract.STORE_DTYPE; see scripts/image_store.py).
STORE_DTYPES = ("float32", "float16")
CROPPERS = ("petrosian", "r200c", "fraction", "none")
#: How a dataset's bands are stored: one multi-extension file per object with one HDU per
#: band (``extensions``), one file per object and band (``band_files``, e.g. the HSC-SSP
#: cutout service), or one HDU holding a (bands, H, W) cube (``cube``, Legacy Survey, DES).
FILE_LAYOUTS = ("extensions", "band_files", "cube")
#: How images are joined with a survey catalogue: by the object id in the file name, or by
#: sky position (the image's WCS centre or RA/DEC header keys) within MATCH_RADIUS_ARCSEC.
CATALOGUE_MATCHES = ("id", "sky")

#: ``train.METHOD`` choices.
TRAIN_METHODS = ("simclr", "nnclr")
#: Default NNCLR support queue (``train.NNCLR_QUEUE_SIZE: null``): this many global batches,
#: capped so that the float32 queue takes at most this many MiB (it is held on every replica).
NNCLR_QUEUE_BATCHES = 512
NNCLR_QUEUE_MIB = 64


def default_nnclr_queue_size(batch_size: int, output_dim: int) -> int:
    """NNCLR queue length for ``NNCLR_QUEUE_SIZE: null``: :data:`NNCLR_QUEUE_BATCHES` global
    batches, capped at :data:`NNCLR_QUEUE_MIB` MiB of float32 ``output_dim`` vectors, never
    shorter than one batch (a step enqueues one whole batch)."""
    cap = NNCLR_QUEUE_MIB * 2 ** 20 // (4 * output_dim)
    return max(batch_size, min(NNCLR_QUEUE_BATCHES * batch_size, cap))


def section(cls):
    def conv(value, path):
        return _parse_section(cls, {} if value is None else value, path)
    conv.describe = "mapping, see below"
    return conv


# --------------------------------------------------------------------------- schema helper

@dataclass(frozen=True)
class Key:
    """Schema of one params key: converter, default, documentation."""

    conv: Callable
    doc: str
    default: Any = REQUIRED
    example: str = ""
    per_dataset: bool = False  # one entry per extract.DATASETS
    per_set: bool = False  # one entry per prepare.SETS


def key(conv, doc, default=REQUIRED, example="", per_dataset=False, per_set=False):
    meta = {"key": Key(conv, doc, default, example, per_dataset, per_set)}
    if default is REQUIRED:
        return field(metadata=meta)
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


def _yaml_name(f: dataclasses.Field) -> str:
    return f.name.upper()


def _renamed(raw: dict, path: str) -> dict:
    """``raw`` with the old names of :data:`RENAMED_KEYS` replaced by the new ones."""
    renames = {old: new for old, new in RENAMED_KEYS.get(path, {}).items() if old in raw}
    if not renames:
        return raw
    raw = dict(raw)
    for old, new in renames.items():
        if new in raw:
            raise ParamsError(f"{path}.{old}: renamed {path}.{new}, which is also given; "
                              f"keep only {path}.{new}")
        logger.warning("%s.%s is now called %s.%s; read as such (rename it in the params file)",
                       path, old, path, new)
        raw[new] = raw.pop(old)
    return raw


def _parse_section(cls, raw: Any, path: str):
    if not isinstance(raw, dict):
        raise fail(path, raw, "a mapping of keys")
    known = {_yaml_name(f): f for f in dataclasses.fields(cls)}
    raw = _renamed(raw, path)
    for name in raw:
        if name not in known:
            hint = difflib.get_close_matches(str(name).upper(), known, n=1, cutoff=0.6)
            extra = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {sorted(known)}"
            raise ParamsError(f"{path}.{name}: unknown key{extra}")
    values = {}
    for name, f in known.items():
        spec: Key = f.metadata["key"]
        if name in raw:
            values[f.name] = spec.conv(raw[name], f"{path}.{name}")
        elif spec.default is REQUIRED:
            raise ParamsError(f"{path}.{name}: missing required key ({spec.doc})")
        else:
            values[f.name] = spec.default() if isinstance(spec.default, type) else spec.default
    return cls(**values)


def _check_lengths(obj, n: int, attr: str, what: str, path: str) -> None:
    for f in dataclasses.fields(obj):
        spec: Key = f.metadata["key"]
        if getattr(spec, attr):
            value = getattr(obj, f.name)
            if value is not None and len(value) != n:
                what_one = "dataset" if attr == "per_dataset" else "SETS entry"
                raise ParamsError(
                    f"{path}.{_yaml_name(f)}: has {len(value)} entries but {what} has {n}; "
                    f"give one entry per {what_one}, in the same order"
                )


# --------------------------------------------------------------------------- sections

@dataclass(frozen=True)
class DatasetSpec:
    """Everything extract needs to know about one dataset (one entry of each list)."""

    name: str
    extractor: str
    simulation: str | None
    snapshots: tuple[int, ...] | None
    fields: tuple[str, ...]
    load: bool
    fraction: float
    num_projections: int
    filters: tuple[str, ...]
    band_extnames: dict[str, str]
    file_pattern: str
    catalogue: str | None
    cropper: str
    file_layout: str = "extensions"
    cube_bands: tuple[str, ...] | None = None
    catalogue_match: str = "id"


@dataclass(frozen=True, kw_only=True)
class ExtractParams:
    datasets: tuple = key(list_of(string(pattern=r"[A-Za-z0-9_.\-]+"), min_length=1, unique=True),
                          "Dataset names; images are read from dataset_raw/<DATASET>/images/.",
                          example="[MOCK_FIDUCIAL, MOCK_HSC]")
    extractors: tuple = key(list_of(string(tuple(KINDS))),
                            "Extractor kind per dataset: "
                            + ", ".join(f"{k} ({v.description})" for k, v in KINDS.items()) + ".",
                            example="[tng_stellar, survey]", per_dataset=True)
    simulations: tuple | None = key(optional(list_of(optional(string()))),
                                    "TNG simulation folder under config.illustris_path per dataset "
                                    "(e.g. TNG50-1); null for survey datasets.", None,
                                    "[TNG50-1, null]", per_dataset=True)
    snapshots: tuple | None = key(optional(list_of(optional(list_of(integer(0))))),
                                  "Snapshots to use per dataset; null = every snapshot found.", None,
                                  "[[84, 91], null]", per_dataset=True)
    fields: tuple = key(list_of(list_of(string())),
                        "FIELDS (physical quantities) attached to every image, per dataset. "
                        "See 'FIELDS' in the README for the names and units.",
                        example="[[stellar_mass, sfr], [photoz, i_mag]]", per_dataset=True)
    load: tuple = key(list_of(boolean), "Extract this dataset in this run (false: keep what exists).",
                      example="[true, true]", per_dataset=True)
    fraction: tuple = key(list_of(number(0, 1, lo_open=True)),
                          "Fraction of objects to keep per dataset (seeded; all projections of "
                          "a chosen object are kept).", example="[1.0, 0.5]", per_dataset=True)
    num_projections: tuple = key(list_of(integer(1)),
                                 "Expected projections (viewing angles) per object per dataset; "
                                 "objects with fewer are reported.", example="[3, 1]", per_dataset=True)
    filters: tuple = key(bands,
                         "Bands to read, in channel order: one list for all datasets, or one "
                         "list per dataset (all datasets trained together need the same count).",
                         example="[G, R, I]")
    band_extnames: tuple | None = key(optional(list_of(optional(extnames))),
                                      "EXTNAME of each band per dataset: a template with {filter} "
                                      "or a mapping band → EXTNAME (band_files: also one name for "
                                      "every band's file); null = default of the extractor "
                                      "(SUBARU_HSC.{filter}, XRAY_{filter}; IMAGE for band_files).", None,
                                      "[SUBARU_HSC.{filter}, {G: HSC-G}]", per_dataset=True)
    file_patterns: tuple | None = key(optional(list_of(optional(regex))),
                                      "Regex per dataset mapping a file name to its identity with "
                                      "named groups object_id, snapshot, projection; null = the "
                                      "extractor default (real archive names).", None,
                                      r"['^shalo_(?P<snapshot>\d+)-(?P<object_id>\d+)_v(?P<projection>\d+)_.*\.fits$']",
                                      per_dataset=True)
    catalogues: tuple | None = key(optional(list_of(optional(string()))),
                                   "Per dataset: survey catalogue (csv/parquet, keyed by object_id) "
                                   "or, for tng_xray, the cool-core catalogue; relative paths are "
                                   "taken from dataset_raw/<DATASET>/ (survey) or "
                                   "<illustris_path>/<SIM>/postprocessing/ (tng_xray).", None,
                                   "[null, catalogue.csv]", per_dataset=True)
    croppers: tuple | None = key(optional(list_of(string(CROPPERS))),
                                 "Cropper per dataset: petrosian (PETRO_RADIUS_FACTOR × R90), r200c "
                                 "(R200C_FACTOR × R200c), fraction (central CROP_FRACTION of each "
                                 "frame), none; null = petrosian for galaxies, r200c for X-ray. "
                                 "Galaxies cropped by fraction or none still get their Petrosian "
                                 "magnitudes and radii (measured, not cropped by).", None,
                                 "[petrosian, petrosian]", per_dataset=True)
    file_layouts: tuple | None = key(optional(list_of(optional(string(FILE_LAYOUTS)))),
                                     "How bands are stored per dataset: extensions (one file per "
                                     "object, one HDU per band, found by BAND_EXTNAMES), band_files "
                                     "(one file per object and band: FILE_PATTERNS has a filter "
                                     "group; the band's HDU is BAND_EXTNAMES, default IMAGE), cube "
                                     "(one HDU holds (bands, H, W); order from CUBE_BANDS or the "
                                     "header's BAND0, BAND1, … or BANDS keywords); null = "
                                     "extensions.", None, "[extensions, band_files]",
                                     per_dataset=True)
    cube_bands: tuple | None = key(optional(list_of(optional(list_of(string(), min_length=1)))),
                                   "Per dataset with FILE_LAYOUTS cube: the band of each plane of "
                                   "the cube, in plane order; null = read from the header (BAND0, "
                                   "BAND1, … or BANDS).", None, "[null, [g, r, z]]",
                                   per_dataset=True)
    catalogue_match: tuple | None = key(optional(list_of(optional(string(CATALOGUE_MATCHES)))),
                                        "Per survey dataset: join images to the catalogue by the "
                                        "object_id in the file name (id) or by sky position (sky: "
                                        "the image's WCS centre, else its RA/DEC header keys, "
                                        "matched to the catalogue's CATALOGUE_RADEC columns within "
                                        "MATCH_RADIUS_ARCSEC); null = id.", None, "[id, sky]",
                                        per_dataset=True)
    match_radius_arcsec: float = key(number(0, lo_open=True),
                                     "Largest separation [arcsec] of a sky match "
                                     "(CATALOGUE_MATCH sky).", 1.0, "1.0")
    catalogue_radec: tuple = key(list_of(string(), length=2),
                                 "Catalogue columns holding RA and Dec in degrees (ICRS) for "
                                 "CATALOGUE_MATCH sky.", ("ra", "dec"), "[ra, dec]")
    image_size: int = key(integer(8, 4096), "Edge of the stored square images in pixels "
                          "(area-averaged resize after cropping).", example="64")
    petro_radius_factor: float = key(number(0, lo_open=True),
                                     "Crop half-size in units of the Petrosian R90.", 2.0, "2")
    petro_reference_band: str | None = key(optional(string()),
                                           "Band used for the Petrosian fit; null = middle band.",
                                           None, "I")
    r200c_factor: float = key(number(0, lo_open=True), "Crop half-size in units of R200c (X-ray).",
                              1.0, "1.0")
    crop_fraction: float = key(number(0, 1, lo_open=True),
                               "Central fraction of the frame kept by the fraction cropper.", 1.0, "0.8")
    mask_bits: int | None = key(optional(integer(1)),
                                "Bit mask: pixels of the reference band whose '<EXTNAME> MASK' HDU has "
                                "any of these bits are left out of the Petrosian fit (e.g. neighbours, "
                                "saturation); null: MASK/VARIANCE HDUs are not read.", None, "3")
    neighbours: str = key(string(NEIGHBOUR_MODES),
                          "Other sources in the frame, for the Petrosian fit and magnitudes: "
                          "mask (detected and deblended with sep, Source Extractor's method; the "
                          "fit centres on the source at the frame centre and their pixels are "
                          "filled with the annulus mean) or keep (their light is measured with "
                          "the galaxy, the behaviour before this key). With mask the stored "
                          "images are not changed, only where they are centred and cropped; "
                          "remove also replaces the other sources' pixels in the stored images "
                          "by the galaxy's annulus mean plus sky noise of the band's σ (the "
                          "presets' setting).",
                          "keep", "remove")
    min_stellar_mass: float = key(number(0), "Lower stellar-mass limit [M☉] for TNG galaxies.",
                                  1e9, "3e9")
    max_stellar_mass: float = key(number(0), "Upper stellar-mass limit [M☉].", 1e14, "1e13")
    min_halo_mass: float = key(number(0), "Lower M200c limit [M☉] for TNG groups/clusters.",
                               1e13, "1e14")
    max_halo_mass: float = key(number(0), "Upper M200c limit [M☉].", 1e16, "1e16")
    selection_seed: int = key(integer(0), "Seed of the FRACTION selection (which objects are "
                              "kept; prepare.SPLIT_SEED seeds the split draw). Formerly "
                              "extract.SPLIT_SEED, still read with a warning.", 42, "42")
    use_cache: bool = key(boolean, "Reuse finished chunks of an earlier (interrupted) run.", True, "true")
    num_workers: int = key(integer(1), "Parallel worker processes (loky); JOBLIB_BACKEND dask "
                           "uses every worker of the cluster instead.", 1, "8")
    joblib_backend: str = key(string(JOBLIB_BACKENDS),
                              "joblib backend of the workers: loky (processes on this machine) or "
                              "dask (the workers of a Dask cluster, see DASK_SCHEDULER and README "
                              "'Running at survey scale').", "loky", "dask")
    dask_scheduler: str | None = key(optional(string()),
                                     "Address of the Dask scheduler for JOBLIB_BACKEND dask; null "
                                     "= the DASK_SCHEDULER_ADDRESS environment variable (extract "
                                     "stops with an error when neither is set).", None,
                                     "tcp://10.0.0.5:8786")
    size_chunks: int = key(integer(1), "Images per committed chunk: the resume unit and the "
                           "memory bound.", 2000, "2000")
    shard_size: int | None = key(optional(integer(1)),
                                 "Images per shard file of a dataset's store: images.h5 becomes a "
                                 "small index (an HDF5 virtual dataset) over images-00000.h5, … "
                                 "which every reader opens transparently, and a rerun rewrites "
                                 "only the shards whose images changed; null = one images.h5.",
                                 None, "100000")
    store_dtype: str = key(string(STORE_DTYPES),
                           "Pixel type of the image store (every shard too): float16 halves disk "
                           "and page cache (about 3 significant digits, relative error 2^-11; "
                           "a pixel beyond ±65504 stops extract); readers always return float32. "
                           "Changing it rewrites the store without reprocessing images, except "
                           "float16 → float32, which reprocesses them.", "float32", "float16")

    def dataset_specs(self) -> tuple[DatasetSpec, ...]:
        """One :class:`DatasetSpec` per dataset, defaults resolved."""
        specs = []
        n = len(self.datasets)
        for i, name in enumerate(self.datasets):
            kind = self.extractors[i]
            filters = self.filters[i] if isinstance(self.filters[0], tuple) else self.filters
            layout = (self.file_layouts or [None] * n)[i] or "extensions"
            default_ext = "IMAGE" if layout == "band_files" else KINDS[kind].band_extname
            ext = (self.band_extnames or [None] * n)[i] or default_ext
            if isinstance(ext, str):
                band_map = {f: ext.format(filter=f) for f in filters}
            else:
                band_map = dict(ext)
            cropper = (self.croppers or [None] * n)[i] or KINDS[kind].cropper
            specs.append(DatasetSpec(
                name=name, extractor=kind,
                simulation=(self.simulations or [None] * n)[i],
                snapshots=(self.snapshots or [None] * n)[i],
                fields=self.fields[i], load=self.load[i], fraction=self.fraction[i],
                num_projections=self.num_projections[i], filters=tuple(filters),
                band_extnames=band_map,
                file_pattern=(self.file_patterns or [None] * n)[i] or KINDS[kind].file_pattern,
                catalogue=(self.catalogues or [None] * n)[i], cropper=cropper,
                file_layout=layout,
                cube_bands=(self.cube_bands or [None] * n)[i],
                catalogue_match=(self.catalogue_match or [None] * n)[i] or "id",
            ))
        return tuple(specs)

    def dataset(self, name: str) -> DatasetSpec:
        for spec in self.dataset_specs():
            if spec.name == name:
                return spec
        raise KeyError(f"dataset {name!r} is not in extract.DATASETS {list(self.datasets)}")


def _sets(value, path):
    """SETS entries: [NAME, [train, validation, test]]."""
    entries = list_of(list_of(lambda v, p: v, length=2), min_length=1)(value, path)
    out = []
    for i, (name, fractions) in enumerate(entries):
        name = string()(name, f"{path}[{i}][0]")
        fr = list_of(number(0, 1), length=3)(fractions, f"{path}[{i}][1]")
        if sum(fr) > 1 + 1e-9:
            raise fail(f"{path}[{i}][1]", list(fractions),
                        "train, validation, test fractions summing to at most 1 "
                        f"(they sum to {sum(fr):g})")
        out.append((name, fr))
    names = [n for n, _ in out]
    if len(set(names)) != len(names):
        raise fail(path, names, "each dataset at most once")
    return tuple(out)


_sets.describe = "list of [DATASET, [train, validation, test]]"


@dataclass(frozen=True, kw_only=True)
class PrepareParams:
    split_seed: int = key(integer(0), "Seed of the object-wise split draw.", example="42")
    sets: tuple = key(_sets, "Datasets to prepare with train/validation/test fractions (sum ≤ 1, the "
                      "rest unused). The first set's training split defines the scaling.",
                      example="[[MOCK_HSC, [0.8, 0.1, 0.1]]]")
    root_descendant_split: bool = key(boolean, "Keep all snapshots sharing a SubLink root "
                                      "descendant in one split (when the field exists).", True, "true")
    matching_source_sets: tuple = key(list_of(string()), "Sets that objects are drawn from when "
                                      "matching.", (), "[MOCK_HSC]")
    matching_target_sets: tuple = key(list_of(string()), "Sets that get one matched source object "
                                      "per object.", (), "[MOCK_FIDUCIAL]")
    matching_fields: tuple | None = key(optional(list_of(optional(list_of(string())))),
                                        "Per SETS entry: the matching columns in that dataset "
                                        "(names may differ, order must agree); null for sets "
                                        "not matched.", None, "[[photoz, i_mag], [z, i_mag]]",
                                        per_set=True)
    matching_uncertainties: tuple = key(list_of(number(0, lo_open=True)),
                                        "Half-width of the matching box per matching field.", (),
                                        "[0.01, 0.2]")
    observables: tuple | None = key(optional(list_of(optional(list_of(string())))),
                                    "Per SETS entry: observable fields to standardise.", None,
                                    "[[i_mag], [i_mag]]", per_set=True)
    unobservables: tuple | None = key(optional(list_of(optional(list_of(string())))),
                                      "Per SETS entry: unobservable (simulation-only) fields to "
                                      "standardise.", None, "[null, [stellar_mass]]", per_set=True)

    @property
    def set_names(self) -> tuple[str, ...]:
        return tuple(n for n, _ in self.sets)

    def fractions(self, name: str) -> tuple[float, float, float]:
        return dict(self.sets)[name]

    def per_set(self, attr: str, name: str):
        """Entry of a per-SETS list for dataset ``name`` (None where absent)."""
        value = getattr(self, attr)
        return None if value is None else value[self.set_names.index(name)]


@dataclass(frozen=True, kw_only=True)
class AugmentationParams:
    rotation: bool | float = key(rotation_limit, "Rotate by a uniform angle: true = any angle, false = "
                                 "none, or a number = up to ± that many degrees.", True, "true")
    flip: bool = key(boolean, "Random horizontal and vertical flips.", True, "true")
    zoom: tuple = key(pair(number(0, lo_open=True)), "Zoom factor range (>1 zooms in).",
                      (1.0, 1.3), "[1.0, 1.3]")
    translate: float = key(number(0, 0.5), "Maximum shift as a fraction of the image size.",
                           0.05, "0.05")
    blur_sigma: tuple = key(pair(number(0)), "PSF-like Gaussian blur σ range [px].",
                            (0.0, 1.0), "[0.0, 1.5]")
    noise_std: tuple = key(ranges(number(0)), "Gaussian noise σ range, in train.PIXEL_UNIT "
                           "(image units, e.g. nanomaggies, or the band's sky σ): added before "
                           "the normalisation stretch; one range for all bands or one per band.",
                           (0.0, 0.05), "[0.0, 0.05]")
    flux_scale: tuple = key(shared_flux_scale, "Flux scale range: one factor per image, drawn "
                            "log-uniformly and shared by all bands, so colours are kept "
                            "(calibration and surface-brightness uncertainty). [1, 1] turns it "
                            "off, as in the presets: the recipe bench measured total "
                            "brightness as an identity cue worth keeping (BENCHMARKS.md, "
                            "flux_scale_off).", (1.0, 1.0), "[0.9, 1.1]")
    colour_jitter_mag: float = key(number(0, MAX_COLOUR_JITTER_MAG), "Per-band calibration "
                                   "jitter [mag]: each band is multiplied by "
                                   "10^(-0.4·N(0, σ)) on top of FLUX_SCALE; at most "
                                   f"{MAX_COLOUR_JITTER_MAG:g} mag so colours stay "
                                   "informative.", 0.02, "0.02")


@dataclass(frozen=True, kw_only=True)
class NormalisationParams:
    stretch: str = key(string(("arcsinh", "log", "linear")), "Per-band stretch applied before "
                       "the network (stored with the model).", "arcsinh", "arcsinh")
    scale: Any = key(lambda v, p: list_of(number(0, lo_open=True))(v, p) if isinstance(v, (list, tuple))
                     else number(0, lo_open=True)(v, p),
                     "Stretch scale (arcsinh softening), in train.PIXEL_UNIT: one number, or "
                     "one per band.", 1.0, "0.05")
    clip: tuple | None = key(optional(pair(number())), "Clip range after the stretch; null: none.",
                             None, "[-1, 10]")


@dataclass(frozen=True, kw_only=True)
class TrainParams:
    run_name: str = key(string(pattern=r"[A-Za-z0-9_.\-]+"), "Run folder under models/.", "simclr", "simclr")
    train_sets: tuple | None = key(optional(list_of(string(), min_length=1)),
                                   "Datasets to train on; null = all prepare.SETS.", None, "[MOCK_FIDUCIAL]")
    train_splits: tuple = key(list_of(string(SPLITS), min_length=1), "Splits used for training.",
                              ("train",), "[train]")
    validation_split: str = key(string(SPLITS), "Split used for validation loss/accuracy.",
                                "validation", "validation")
    architecture: str = key(string(("resnet18", "resnet34", "resnet50")), "Encoder.", "resnet18", "resnet18")
    width_multiplier: float = key(number(0, lo_open=True), "Channel width multiplier.", 1.0, "1.0")
    stem: str = key(string(("standard", "small")), "standard: 7×7/2 conv + max-pool; small: 3×3/1, "
                    "no pool (≤ 64 px).", "standard", "standard")
    head_layers: int = key(integer(1), "Dense layers of the projection head.", 2, "2")
    head_hidden_dim: int = key(integer(1), "Hidden width of the projection head.", 512, "512")
    output_dim: int = key(integer(1), "Projection (loss) dimension.", 128, "128")
    temperature: float = key(number(0, lo_open=True), "NT-Xent temperature.", 0.1, "0.1")
    method: str = key(string(TRAIN_METHODS), "Contrastive method: simclr (the positive of a view "
                      "is the other view) or nnclr (its nearest neighbour in a queue of past "
                      "embeddings, Dwibedi et al. 2021).", "simclr", "nnclr")
    nnclr_queue_size: int | None = key(
        optional(integer(2)), "NNCLR support queue length in embeddings (≥ BATCH_SIZE); null = "
        f"min({NNCLR_QUEUE_BATCHES} batches, {NNCLR_QUEUE_MIB} MiB of float32 OUTPUT_DIM "
        "vectors), at least one batch.", None, "65536")
    positives: str = key(string(("augmentations", "projections")),
                         "Positive pairs: two augmentations of one image, or also another "
                         "projection of the same object.", "augmentations", "projections")
    batch_size: int = key(integer(2), "Global batch size (all replicas).", 256, "256")
    epochs: int = key(integer(1), "Maximum epochs.", 100, "100")
    steps_per_epoch: int | None = key(optional(integer(1)), "Steps per epoch; null = one pass.",
                                      None, "200")
    optimizer: str = key(string(("lars", "adam", "sgd")), "Optimiser.", "lars", "lars")
    learning_rate: float = key(number(0, lo_open=True), "Base learning rate (before batch scaling).",
                               0.3, "0.3")
    lr_scaling: str = key(string(("linear", "sqrt", "none")), "Batch scaling: linear lr·B/256, "
                          "sqrt lr·√B, none.", "linear", "linear")
    warmup_epochs: float = key(number(0), "Linear warm-up epochs before cosine decay.", 10.0, "10")
    weight_decay: float = key(number(0), "Weight decay (not on batch-norm and bias).", 1e-6, "1e-6")
    momentum: float = key(number(0, 1, hi_open=True), "Momentum (LARS, SGD).", 0.9, "0.9")
    pixel_unit: str = key(string(("image", "sky")), "Unit of NORMALISATION.SCALE and "
                          "AUGMENTATION.NOISE_STD: image (the stores' pixel units) or sky (each "
                          "band's sky noise σ, 1.4826·MAD of the border pixels of 512 training "
                          "images, measured at the start of training; stored with the model in "
                          "image units).", "image", "sky")
    augmentation: AugmentationParams = key(section(AugmentationParams), "Augmentations (below).",
                                           AugmentationParams)
    normalisation: NormalisationParams = key(section(NormalisationParams),
                                             "Per-band normalisation (below).", NormalisationParams)
    mixed_precision: str = key(string(("off", "mixed_float16", "mixed_bfloat16")),
                               "Keras mixed-precision policy: layers compute in bfloat16 / "
                               "float16, variables, NT-Xent and LARS stay float32; float16 "
                               "adds dynamic loss scaling. off: float32.", "off", "mixed_bfloat16")
    jit_compile: str = key(string(("auto", "on", "off")), "XLA-compile the train and validation "
                           "steps (augmentation stays outside): auto = on a GPU with one "
                           "replica, off on the CPU (slower there for full-size models; "
                           "bench.bench_train --jit-preset measures a preset).", "auto", "auto")
    cache_images: str = key(string(("off", "on", "auto")), "Hold the training image stores in "
                            "memory (raw pixels, read once): auto = when they take at most a "
                            "quarter of the available memory.", "off", "auto")
    seed: int = key(integer(0), "Seed for weights, shuffling and augmentations.", 0, "0")
    checkpoint_every: int = key(integer(1), "Checkpoint interval in steps.", 500, "500")
    patience: int = key(integer(1), "Early stopping: epochs without validation improvement.", 20, "20")
    max_runtime_seconds: float | None = key(optional(number(0, lo_open=True)),
                                            "Stop (after a checkpoint) past this wall time.", None, "43200")
    distribution: str = key(string(("auto", "default", "mirrored", "multi_worker")),
                            "tf.distribute strategy: auto = mirrored when several GPUs are "
                            "visible, multi_worker reads TF_CONFIG.", "auto", "mirrored")
    sync_batch_norm: bool = key(boolean, "Synchronised batch norm across replicas.", False, "true")


@dataclass(frozen=True, kw_only=True)
class UmapParams:
    n_neighbors: int = key(integer(2), "UMAP neighbours.", 15, "15")
    min_dist: float = key(number(0), "UMAP min_dist.", 0.1, "0.1")
    fit_subsample: int = key(integer(10), "Objects UMAP and the PCA map are fitted on (seeded); "
                             "the rest is transformed.",
                             50000, "50000")


@dataclass(frozen=True, kw_only=True)
class RealismParams:
    k: int = key(integer(1), "k of the k-th-neighbour distance ratio (Eisert et al. 2024).", 8, "8")
    percentile: float = key(number(0, 100, lo_open=True), "Calibration percentile.", 95.0, "95")
    subsample: int | None = key(optional(integer(10)), "Cap on objects per set; null: equal to the "
                                "smaller set.", None, "20000")
    cv_folds: int = key(integer(2), "Folds of the classifier two-sample test.", 5, "5")
    n_permutations: int = key(integer(10), "Permutations (of whole objects) of the MMD test.",
                              200, "200")
    c2st_permutations: int = key(integer(2), "Reruns of the classifier test with shuffled "
                                 "object labels (its null, interval and p-value).", 50, "50")
    mmd_max_samples: int = key(integer(10), "Cap on objects per set in the MMD test (memory "
                               "grows as N²).", 2000, "2000")
    num_workers: int = key(integer(1), "Processes that run the comparisons (each simulated "
                           "set against each observed set, on the representation and on each "
                           "baseline) side by side; the results do not depend on it.", 1, "4")


@dataclass(frozen=True, kw_only=True)
class AnalyseParams:
    run_name: str | None = key(optional(string()), "Trained run to analyse; null = train.RUN_NAME.",
                               None, "simclr")
    observed_sets: tuple = key(list_of(string()), "Observed datasets.", (), "[MOCK_HSC]")
    simulated_sets: tuple = key(list_of(string()), "Simulated datasets compared with them.", (),
                                "[MOCK_FIDUCIAL, MOCK_COMPACT]")
    splits: tuple = key(list_of(string(SPLITS), min_length=1), "Splits to embed and draw in the "
                        "maps and analogues.", SPLITS, "[train, validation, test]")
    evaluation_splits: tuple = key(list_of(string(SPLITS), min_length=1), "Splits the headline "
                                   "numbers (realism, drivers, permanence) are measured on: "
                                   "held out from training.", ("test",), "[test]")
    evaluation_max_objects: int | None = key(
        optional(integer(10)), "Cap on the objects per dataset whose images the headline numbers "
        "use: above it, a seeded subsample of objects (SEED), every image of each kept; so "
        "realism, drivers and permanence hold a bounded number of vectors at survey scale. "
        "null: every object.", None, "100000")
    batch_size: int = key(integer(1), "Embedding batch size.", 256, "256")
    pca_components: int = key(integer(2), "PCA components for the PCA map.", 2, "2")
    umap: UmapParams = key(section(UmapParams), "UMAP settings (below).", UmapParams)
    n_analogues: int = key(integer(1), "Simulated analogues per observed object.", 5, "5")
    analogue_objects: tuple | None = key(optional(list_of(integer(0))), "Observed object ids "
                                         "shown as image panels; null: a seeded random few.", None,
                                         "[1001, 1002]")
    realism: RealismParams = key(section(RealismParams), "Realism settings (below).", RealismParams)
    driver_fields: tuple | None = key(optional(list_of(string())), "FIELDS whose R² from the "
                                      "representation is measured; null: all numeric fields.",
                                      None, "[stellar_mass, ssfr]")
    knn_k: int = key(integer(1), "k of the kNN regression for physical drivers.", 10, "10")
    distance_fields: tuple = key(list_of(string()), "FIELDS that depend on distance (masses "
                                 "and luminosities through the flux, physical sizes through the "
                                 "angular scale): their driver R² is also reported with the "
                                 "redshift (z, photoz or redshift FIELD) added to every feature set.",
                                 ("stellar_mass", "mass_in_rad", "sfr", "halo_mass", "m200c",
                                  "half_mass_radius_kpc", "r200c_kpc"),
                                 "[stellar_mass, sfr]")
    driver_max_samples: int | None = key(optional(integer(10)), "Cap on images per dataset in the "
                                         "driver regressions (cost grows as N²); null: all.",
                                         20000, "20000")
    cv_folds: int = key(integer(2), "Folds of the driver regression.", 5, "5")
    thumbnail_grid: int = key(integer(2), "Cells per side of the thumbnail map.", 12, "12")
    rgb_bands: tuple | None = key(optional(list_of(string(), length=3)), "Bands shown as R, G, B "
                                  "in thumbnails; null: first band in grey.", None, "[I, R, G]")
    seed: int = key(integer(0), "Seed for subsamples.", 0, "0")


@dataclass(frozen=True, kw_only=True)
class InferParams:
    run_name: str | None = key(optional(string()), "Analysed run whose representation is read "
                               "(reports/<run>/); null = analyse.RUN_NAME.", None, "simclr")
    train_sets: tuple | None = key(optional(list_of(string(), min_length=1)),
                                   "Simulated sets the flow is trained on (their train split; "
                                   "validation split for early stopping, test split for the "
                                   "calibration); null = analyse.SIMULATED_SETS.", None,
                                   "[MOCK_FIDUCIAL]")
    infer_sets: tuple | None = key(optional(list_of(string(), min_length=1)),
                                   "Sets whose every embedded object gets posterior samples; "
                                   "null = analyse.OBSERVED_SETS + SIMULATED_SETS + TRAIN_SETS.",
                                   None, "[MOCK_HSC, MOCK_FIDUCIAL]")
    representation_components: int | None = key(
        optional(integer(1)), "Principal components of the standardised representation used "
        "in the condition (PCA fitted on the training rows); null = every dimension.", 8, "8")
    log_fields: tuple = key(list_of(string()), "UNOBSERVABLES modelled as log10 of their "
                            "physical value (positive quantities such as sizes: no negative "
                            "posterior samples).", (), "[half_mass_radius_kpc]")
    linear_mean: bool = key(boolean, "Fit a ridge regression of the targets on the condition "
                            "(training rows, penalty by leave-one-out CV) and train the flow on "
                            "its standardised residuals; samples get the ridge mean added back. "
                            "Stabilises the posterior median of small training sets "
                            "(scripts/posterior/linear_mean.py).", False, "true")
    recalibration: str = key(string(("none", "quantile")), "Post-hoc calibration of each field's "
                             "marginal posterior: quantile = the map of Kuleshov et al. (2018) "
                             "from held-out PIT values of RECALIBRATION_FOLDS flows cross-fitted "
                             "on the train and validation objects; the test split only measures "
                             "it (scripts/posterior/recalibration.py).", "none", "quantile")
    recalibration_folds: int = key(integer(2), "Folds (whole objects) of the cross-fit; each "
                                   "fold trains one more flow.", 5, "5")
    recalibration_splits: tuple = key(
        list_of(string(("train", "validation")), min_length=1, unique=True),
        "Splits whose held-out PIT values fit the recalibration map. validation: only images "
        "the encoder never trained on, like the test split and the observed sets (the "
        "representation of its own training images can be sharper, and a map fitted on them "
        "leaves the test posteriors over-confident); [train, validation]: more PIT values.",
        ("train", "validation"), "[validation]")
    num_coupling_layers: int = key(integer(1), "Flow layers (masked autoregressive transforms, "
                                   "each followed by a permutation): the original's "
                                   "model.NUM_COUPLING_LAYERS.", 4, "12")
    hidden_units: tuple = key(list_of(integer(1), min_length=1), "Hidden widths of each flow "
                              "layer's autoregressive network (MADE).", (64, 64), "[128, 128]")
    clamp: float = key(number(0, lo_open=True), "Soft clamp of each layer's log-scale: "
                       "CLAMP·tanh(s/CLAMP), the original's model.CLAMP.", 1.0, "1.0")
    condition_embedding: tuple = key(list_of(integer(1)), "Widths of the conditioning network "
                                     "(MLP on representation components + observables; the "
                                     "last width is the embedding fed to every flow layer); "
                                     "[] = the condition enters unembedded.", (64, 16), "[64, 16]")
    learning_rate: float = key(number(0, lo_open=True), "Adam learning rate.", 1e-3, "1e-3")
    lr_decay_factor: float = key(number(0, 1, lo_open=True, hi_open=True), "Learning-rate "
                                 "factor on a validation plateau.", 0.5, "0.5")
    lr_decay_patience: int = key(integer(1), "Epochs without validation improvement before the "
                                 "learning rate decays.", 5, "5")
    patience: int = key(integer(1), "Early stopping: epochs without validation improvement "
                        "(the best epoch's weights are kept).", 15, "15")
    batch_size: int = key(integer(2), "Training batch size.", 256, "256")
    epochs: int = key(integer(1), "Maximum epochs.", 200, "200")
    condition_noise: float = key(number(0), "σ of Gaussian noise added to the (whitened) "
                                 "conditions in training: regularises small training sets "
                                 "against over-confident posteriors; 0 = off.", 0.0, "0.2")
    weight_decay: float = key(number(0), "Decoupled weight decay (AdamW); 0 = Adam.", 0.0, "1e-4")
    num_samples: int = key(integer(10), "Posterior samples per object (the original's "
                           "sample_posterior.NUM_SAMPLES).", 400, "400")
    max_modes: int = key(integer(1), "Posterior modes kept per field by peak detection.", 3, "3")
    peak_min_height: float = key(number(0, 1, lo_open=True), "A mode's density relative to "
                                 "the highest mode, at least.", 0.2, "0.2")
    corner_objects: int = key(integer(0), "Observed galaxies shown as corner plots with their "
                              "analogues' true values.", 3, "3")
    checkpoint_every: int = key(integer(1), "Checkpoint interval in epochs.", 5, "5")
    num_workers: int = key(integer(1), "Processes that train the RECALIBRATION_FOLDS fold "
                           "flows side by side (the flows do not depend on it).", 1, "4")
    seed: int = key(integer(0), "Seed of weights, batches and samples.", 0, "0")


@dataclass(frozen=True, kw_only=True)
class TrackingParams:
    backends: tuple = key(tracking_backends, "Tracking backends, several allowed; none alone "
                          "logs nothing.", ("mlflow", "tensorboard"), "[mlflow, tensorboard]")
    experiment: str = key(string(), "MLflow experiment name.", "galaxy-clr", "galaxy-clr")
    tags: dict = key(mapping(string(), lambda v, p: str(v)), "Tags added to every run.", {},
                     "{survey: HSC}")
    mlflow_dir: str = key(string(), "Local MLflow store (relative to the project); "
                          "MLFLOW_TRACKING_URI in the environment wins.", "mlruns", "mlruns")
    tensorboard_dir: str = key(string(), "TensorBoard log folder.", "tb_logs", "tb_logs")


@dataclass(frozen=True, kw_only=True)
class Params:
    """The whole validated params file."""

    extract: ExtractParams
    prepare: PrepareParams
    train: TrainParams
    analyse: AnalyseParams
    tracking: TrackingParams
    infer: InferParams = field(default_factory=lambda: _parse_section(InferParams, {}, "infer"))
    source: Path | None = None

    def to_dict(self) -> dict:
        """Plain nested dict (YAML names) for logging the resolved parameters."""
        def plain(obj):
            if dataclasses.is_dataclass(obj):
                return {_yaml_name(f): plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                        if "key" in f.metadata}
            if isinstance(obj, (tuple, list)):
                return [plain(v) for v in obj]
            if isinstance(obj, dict):
                return {k: plain(v) for k, v in obj.items()}
            return obj
        return {name: plain(getattr(self, name)) for name in SECTIONS}


SECTIONS = {
    "extract": ExtractParams,
    "prepare": PrepareParams,
    "train": TrainParams,
    "analyse": AnalyseParams,
    "tracking": TrackingParams,
    "infer": InferParams,
}
#: sections that may be left out entirely (defaults apply)
OPTIONAL_SECTIONS = ("train", "analyse", "tracking", "infer")

NEPTUNE_MESSAGE = (
    "params: the 'neptune:' section is no longer supported. Neptune's hosted service shut "
    "down on 2026-03-05 and deleted all data; runs are now tracked locally with MLflow "
    "(`make dashboard` opens `mlflow ui`) and TensorBoard. Replace the section by\n"
    "  tracking:\n    BACKENDS: [mlflow, tensorboard]\n    EXPERIMENT: <name>\n"
    "and remove any API token from the file (credentials belong in the environment, e.g. "
    "MLFLOW_TRACKING_URI). Old Neptune runs can be moved to MLflow with Neptune's own exporter."
)


#: sections only the original pipeline's params files have (converted by
#: ``python -m scripts.params --migrate``, see scripts/params_migrate.py)
def parse_section(cls, raw: Any, path: str):
    """One schema section from a mapping (YAML names), e.g. a library config built from a
    dict (:meth:`scripts.model.augment.AugmentConfig.from_dict`); raises
    :class:`ParamsError` naming ``path`` and the key."""
    return _parse_section(cls, raw, path)


ORIGINAL_ONLY_SECTIONS = ("data", "train_clr", "train_cinn", "train_mlp", "model", "losses",
                          "params_opt", "sample_posterior", "peak_detection")


def original_format_reasons(raw: Any) -> list[str]:
    """Why ``raw`` looks like a params file of the original pipeline (empty: it does not)."""
    if not isinstance(raw, dict):
        return []
    reasons = [f"section '{name}:'" for name in ORIGINAL_ONLY_SECTIONS if name in raw]
    sets = (raw.get("prepare") or {}).get("SETS") if isinstance(raw.get("prepare"), dict) else None
    if isinstance(sets, list) and any(isinstance(s, (list, tuple)) and len(s) == 2
                                      and isinstance(s[1], (list, tuple)) and len(s[1]) == 4
                                      for s in sets):
        reasons.append("prepare.SETS with four fractions (train, domain, validation, test)")
    return reasons


def original_format_message(where: str, reasons: list[str]) -> str:
    shown = ", ".join(reasons[:4]) + (", …" if len(reasons) > 4 else "")
    return (f"{where}: this is a parameter file of the original pipeline ({shown}); convert it "
            f"with `python -m scripts.params --migrate {where}` (writes a file in today's format "
            "and prints what happened to every old key), review it, and pass the new file")


# --------------------------------------------------------------------------- cross checks

def _validate(p: Params) -> None:
    ex, pr = p.extract, p.prepare
    n = len(ex.datasets)
    _check_lengths(ex, n, "per_dataset", "extract.DATASETS", "extract")
    if isinstance(ex.filters[0], tuple) and len(ex.filters) != n:
        raise ParamsError(f"extract.FILTERS: has {len(ex.filters)} band lists but extract.DATASETS "
                          f"has {n}; give one list for all datasets or one per dataset")
    if ex.min_stellar_mass >= ex.max_stellar_mass:
        raise ParamsError(f"extract.MIN_STELLAR_MASS = {ex.min_stellar_mass:g}: expected less than "
                          f"MAX_STELLAR_MASS = {ex.max_stellar_mass:g}")
    if ex.min_halo_mass >= ex.max_halo_mass:
        raise ParamsError(f"extract.MIN_HALO_MASS = {ex.min_halo_mass:g}: expected less than "
                          f"MAX_HALO_MASS = {ex.max_halo_mass:g}")
    for spec in ex.dataset_specs():
        i = ex.datasets.index(spec.name)
        missing = [f for f in spec.filters if f not in spec.band_extnames]
        if missing:
            raise ParamsError(f"extract.BAND_EXTNAMES[{i}]: no EXTNAME for band(s) {missing} of "
                              f"dataset {spec.name}")
        names = [spec.band_extnames[f].strip().upper() for f in spec.filters]
        if spec.file_layout == "extensions" and len(set(names)) < len(names):
            raise ParamsError(f"extract.BAND_EXTNAMES[{i}]: dataset {spec.name} reads every band "
                              f"from one file but names the same EXTNAME for several bands "
                              f"({dict(spec.band_extnames)}); expected a template containing "
                              "{filter} or a mapping band → EXTNAME")
        groups = re.compile(spec.file_pattern).groupindex
        if spec.file_layout == "band_files" and "filter" not in groups:
            raise ParamsError(f"extract.FILE_PATTERNS[{i}]: dataset {spec.name} has FILE_LAYOUTS "
                              "band_files; its pattern needs a named group (?P<filter>…) giving "
                              "the band of each file")
        if spec.catalogue_match == "sky" and KINDS[spec.extractor].simulated:
            raise ParamsError(f"extract.CATALOGUE_MATCH[{i}]: sky matching needs a survey "
                              f"catalogue; dataset {spec.name} uses extractor {spec.extractor}")
        if spec.catalogue_match == "id" and not any(g.rstrip("0123456789") == "object_id"
                                                    for g in groups):
            raise ParamsError(f"extract.FILE_PATTERNS[{i}] = {spec.file_pattern!r}: expected a "
                              "regular expression with a named group (?P<object_id>…) (dataset "
                              f"{spec.name} joins its catalogue by id; or set CATALOGUE_MATCH to sky)")
        if spec.cube_bands is not None and spec.file_layout != "cube":
            raise ParamsError(f"extract.CUBE_BANDS[{i}]: dataset {spec.name} has FILE_LAYOUTS "
                              f"{spec.file_layout}; CUBE_BANDS only applies to cube")
        petrosian_fit = runs_petrosian_fit(spec.extractor, spec.cropper)
        if spec.file_layout == "cube" and ex.mask_bits is not None and petrosian_fit:
            raise ParamsError(f"extract.MASK_BITS = {ex.mask_bits}: dataset {spec.name} has "
                              "FILE_LAYOUTS cube, which has no mask planes; set MASK_BITS to null")
        if KINDS[spec.extractor].simulated and not spec.simulation:
            raise ParamsError(f"extract.SIMULATIONS[{i}]: dataset {spec.name} uses extractor "
                              f"{spec.extractor} and needs a TNG simulation folder name")
        if ex.petro_reference_band is not None and petrosian_fit \
                and ex.petro_reference_band not in spec.filters:
            raise ParamsError(f"extract.PETRO_REFERENCE_BAND = {ex.petro_reference_band!r}: "
                              f"expected one of dataset {spec.name}'s FILTERS {list(spec.filters)}")

    if ex.dask_scheduler is not None and ex.joblib_backend != "dask":
        raise ParamsError(f"extract.DASK_SCHEDULER = {ex.dask_scheduler!r}: only used with "
                          f"JOBLIB_BACKEND dask, but JOBLIB_BACKEND is {ex.joblib_backend!r}; "
                          "set JOBLIB_BACKEND to dask or DASK_SCHEDULER to null")

    names = pr.set_names
    for i, name in enumerate(names):
        if name not in ex.datasets:
            raise ParamsError(f"prepare.SETS[{i}][0] = {name!r}: expected a dataset of "
                              f"extract.DATASETS {list(ex.datasets)}")
    _check_lengths(pr, len(names), "per_set", "prepare.SETS", "prepare")
    for key_name in ("matching_source_sets", "matching_target_sets"):
        for i, name in enumerate(getattr(pr, key_name)):
            if name not in names:
                raise ParamsError(f"prepare.{key_name.upper()}[{i}] = {name!r}: expected a dataset "
                                  f"listed in prepare.SETS {list(names)}")
    if pr.matching_target_sets:
        if not pr.matching_source_sets:
            raise ParamsError("prepare.MATCHING_SOURCE_SETS: empty, but MATCHING_TARGET_SETS is "
                              "set; name the sets to draw matches from")
        if pr.matching_fields is None:
            raise ParamsError("prepare.MATCHING_FIELDS: missing; matching needs one list of "
                              "fields per SETS entry")
        for name in pr.matching_source_sets + pr.matching_target_sets:
            i = names.index(name)
            fields_ = pr.matching_fields[i]
            if not fields_:
                raise ParamsError(f"prepare.MATCHING_FIELDS[{i}]: dataset {name} takes part in "
                                  "matching and needs its list of matching fields")
            if len(fields_) != len(pr.matching_uncertainties):
                raise ParamsError(
                    f"prepare.MATCHING_UNCERTAINTIES: has {len(pr.matching_uncertainties)} "
                    f"entries but MATCHING_FIELDS[{i}] ({name}) has {len(fields_)}; give one "
                    "uncertainty per matching field")

    tr = p.train
    for i, name in enumerate(tr.train_sets or ()):
        if name not in names:
            raise ParamsError(f"train.TRAIN_SETS[{i}] = {name!r}: expected a dataset listed in "
                              f"prepare.SETS {list(names)}")
    trained = tr.train_sets or names
    bands = {len(ex.dataset(n).filters) for n in trained}
    if len(bands) > 1:
        raise ParamsError(f"train.TRAIN_SETS: datasets {list(trained)} have different band "
                          f"counts {sorted(bands)}; datasets trained together need the same FILTERS")
    if tr.method == "nnclr" and tr.nnclr_queue_size is not None \
            and tr.nnclr_queue_size < tr.batch_size:
        raise ParamsError(f"train.NNCLR_QUEUE_SIZE = {tr.nnclr_queue_size}: expected at least "
                          f"train.BATCH_SIZE = {tr.batch_size} (each step enqueues one global "
                          "batch), or null for the default")
    if isinstance(tr.normalisation.scale, tuple) and len(tr.normalisation.scale) not in bands:
        raise ParamsError(f"train.NORMALISATION.SCALE: {len(tr.normalisation.scale)} scales for "
                          f"{sorted(bands)} band(s); give one number or one per band")
    an = p.analyse
    for key_name in ("observed_sets", "simulated_sets"):
        for i, name in enumerate(getattr(an, key_name)):
            if name not in names:
                raise ParamsError(f"analyse.{key_name.upper()}[{i}] = {name!r}: expected a "
                                  f"dataset listed in prepare.SETS {list(names)}")
    for i, split in enumerate(an.evaluation_splits):
        if split not in an.splits:
            raise ParamsError(f"analyse.EVALUATION_SPLITS[{i}] = {split!r}: expected one of the "
                              f"embedded analyse.SPLITS {list(an.splits)}")
    inf = p.infer
    for key_name in ("train_sets", "infer_sets"):
        for i, name in enumerate(getattr(inf, key_name) or ()):
            if name not in names:
                raise ParamsError(f"infer.{key_name.upper()}[{i}] = {name!r}: expected a "
                                  f"dataset listed in prepare.SETS {list(names)}")
    for i, name in enumerate(inf.train_sets or ()):
        if not pr.per_set("unobservables", name):
            raise ParamsError(f"infer.TRAIN_SETS[{i}] = {name!r}: the flow learns its "
                              "prepare.UNOBSERVABLES, but it has none; list them there")


def parse_params(raw: Any, source: Path | None = None) -> Params:
    """Validate an already-loaded YAML mapping; see :func:`load_params`."""
    where = str(source) if source else "params"
    if not isinstance(raw, dict):
        raise ParamsError(f"{where}: expected a mapping with sections {list(SECTIONS)}")
    reasons = original_format_reasons(raw)
    if reasons:
        raise ParamsError(original_format_message(where, reasons))
    if "neptune" in raw:
        raise ParamsError(NEPTUNE_MESSAGE)
    for name in raw:
        if name not in SECTIONS:
            hint = difflib.get_close_matches(str(name), SECTIONS, n=1, cutoff=0.5)
            extra = f"; did you mean {hint[0]!r}?" if hint else f"; known sections: {list(SECTIONS)}"
            raise ParamsError(f"{name}: unknown section{extra}")
    sections = {}
    for name, cls in SECTIONS.items():
        if name not in raw and name not in OPTIONAL_SECTIONS:
            raise ParamsError(f"{name}: missing section (expected a mapping of {name} keys)")
        sections[name] = _parse_section(cls, raw.get(name) or {}, name)
    params = Params(**sections, source=source)
    _validate(params)
    if params.analyse.run_name is None:
        params = dataclasses.replace(
            params, analyse=dataclasses.replace(params.analyse, run_name=params.train.run_name))
    if params.infer.run_name is None:
        params = dataclasses.replace(
            params, infer=dataclasses.replace(params.infer, run_name=params.analyse.run_name))
    tr = params.train
    if tr.method == "nnclr" and tr.nnclr_queue_size is None:
        size = default_nnclr_queue_size(tr.batch_size, tr.output_dim)
        params = dataclasses.replace(
            params, train=dataclasses.replace(tr, nnclr_queue_size=size))
    return params


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate a params file; raises :class:`ParamsError` naming the bad key."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ParamsError(f"{path}: cannot read the params file ({err.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ParamsError(f"{path}: not valid YAML ({err})") from None
    return parse_params(raw, source=path)


def add_params_argument(parser: argparse.ArgumentParser) -> None:
    """The ``--params PATH`` option every stage takes."""
    parser.add_argument("--params", default="params.yaml", type=Path,
                        help="params file (default: params.yaml)")


def main(argv=None) -> int:
    """Validate a params file, print the key reference, or migrate an original-format file.
    Errors are printed as one message (no traceback) with exit status 2."""
    parser = argparse.ArgumentParser(description="Validate a params file or print its reference.")
    add_params_argument(parser)
    parser.add_argument("--doc", action="store_true", help="print the Markdown key reference")
    parser.add_argument("--migrate", type=Path, metavar="OLD.yaml",
                        help="convert a params file of the original pipeline to today's format")
    parser.add_argument("-o", "--output", type=Path, metavar="NEW.yaml",
                        help="with --migrate: file to write (default: OLD.migrated.yaml)")
    args = parser.parse_args(argv)
    if args.doc:
        from scripts.params_doc import markdown_reference
        print(markdown_reference())
        return 0
    try:
        if args.migrate is not None:
            from scripts.params_migrate import migrate_file, report
            migration, written, problem = migrate_file(args.migrate, args.output)
            print(report(migration, written, problem))
            return 0 if problem is None else 2
        if args.output is not None:
            parser.error("-o/--output goes with --migrate")
        load_params(args.params)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{args.params}: valid")
    return 0


if __name__ == "__main__":
    # run the importable module's main, so that its ParamsError is the one every module raises
    from scripts.params import main as _main
    raise SystemExit(_main())
