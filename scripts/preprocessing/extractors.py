"""Extractors: one class per dataset kind, turning raw files into identities and labels.

An extractor answers three questions for the extract stage, which does the rest (reading,
cropping, caching, parallelism, reports) the same way for every kind:

1. which image files exist and who they are (:meth:`Extractor.list_images`, from the file
   name through a regex with named groups ``object_id``, ``snapshot``, ``projection``);
2. which objects the catalogue selects and what their FIELDS are
   (:meth:`Extractor.catalogue`);
3. how each image is cropped (:meth:`Extractor.crop_spec`), including how a crop that
   leaves the frame is padded (:attr:`Extractor.pad_mode`).

Add your own dataset kind by subclassing :class:`Extractor` (see README, "Add your own
dataset") and registering it in :data:`EXTRACTORS`.
"""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.params import DatasetSpec, ExtractParams
from TNG.fields import UnknownFieldError

log = logging.getLogger(__name__)

#: Identity columns every row carries.
IDENTITY = ("object_id", "snapshot", "projection")
#: snapshot value of objects without one (observed surveys).
NO_SNAPSHOT = -1


def image_field_names(filters) -> list[str]:
    """FIELDS measured on the image itself, available for every dataset."""
    return ([f"mag_{b}" for b in filters] + [f"flux_{b}" for b in filters]
            + ["petro_r50_arcsec", "petro_r90_arcsec", "petro_r50_kpc", "petro_r90_kpc",
               "r_petrosian", "r50", "r90"])


@dataclass
class CatalogueMatch:
    """Result of joining the image identities with a catalogue.

    ``fields``: FIELDS of the selected objects, indexed by (snapshot, object_id);
    ``not_selected``: identities of images whose object the selection rejects (mass range,
    ``SubhaloFlag``); ``no_row``: identities of images with no catalogue row at all;
    ``without_image``: selected catalogue objects with no image file.
    """

    fields: pd.DataFrame
    not_selected: list[tuple[int, int]] = field(default_factory=list)
    no_row: list[tuple[int, int]] = field(default_factory=list)
    without_image: list[tuple[int, int]] = field(default_factory=list)


def _not_a_file(path: Path) -> str:
    """Why ``path`` (for which ``is_file()`` is False) is not a readable image file."""
    if path.is_symlink() and not path.exists():
        return f"dangling symlink to {os.readlink(path)}"
    if path.is_dir():
        return "a directory"
    return "not a regular file (device, FIFO or socket)"


class Extractor:
    """Base class; subclasses set :attr:`kind` and implement :meth:`catalogue`."""

    kind = ""
    #: catalogue columns the cropper needs besides the requested FIELDS
    crop_fields: tuple[str, ...] = ()
    #: padding of crops beyond the frame: sky noise of the image's σ (sky-subtracted
    #: images; see :mod:`scripts.preprocessing.croppers`) or a numpy.pad mode
    pad_mode = "noise"

    def __init__(self, spec: DatasetSpec, params: ExtractParams, raw_root: Path,
                 illustris_root: Path, snapshot_redshifts_path: Path):
        self.spec = spec
        self.params = params
        self.raw_root = Path(raw_root)
        self.illustris_root = Path(illustris_root)
        self.snapshot_redshifts_path = Path(snapshot_redshifts_path)
        self.pattern = re.compile(spec.file_pattern)

    @property
    def images_dir(self) -> Path:
        return self.raw_root / self.spec.name / "images"

    # ------------------------------------------------------------------ identities
    def parse_name(self, name: str) -> dict[str, int] | None:
        """Identity of one file name, or None when the pattern does not match."""
        match = self.pattern.search(name)
        if match is None:
            return None
        groups = {}
        for key, value in match.groupdict().items():
            if value is not None:  # alternations name their groups object_id2, …
                groups.setdefault(key.rstrip("0123456789"), value)
        if "object_id" not in groups:
            return None
        return {"object_id": int(groups["object_id"]),
                "snapshot": int(groups.get("snapshot", NO_SNAPSHOT if self.kind == "survey" else 0)),
                "projection": int(groups.get("projection", 0))}

    def list_images(self) -> tuple[pd.DataFrame, list[str], list[dict]]:
        """(table of file, object_id, snapshot, projection sorted by identity; names that
        do not match the pattern; entries named like an image that are not regular files,
        as ``{"file", "reason": "not_a_regular_file", "detail"}``).

        A directory or a dangling symlink named like an image is reported rather than
        dropped: it usually means an image that failed to copy or was moved away.
        """
        if not self.images_dir.is_dir():
            raise FileNotFoundError(f"dataset {self.spec.name}: image folder {self.images_dir} "
                                    "does not exist")
        rows, unmatched, irregular = [], [], []
        for path in sorted(self.images_dir.iterdir()):
            if path.name.startswith("."):
                continue
            ident = self.parse_name(path.name)
            if not path.is_file():
                if ident is not None:
                    irregular.append({"file": path.name, "reason": "not_a_regular_file",
                                      "detail": _not_a_file(path)})
                continue
            if ident is None:
                unmatched.append(path.name)
                continue
            rows.append({"file": path.name, **ident})
        table = pd.DataFrame(rows, columns=["file", *IDENTITY])
        if self.spec.snapshots is not None and self.kind != "survey":
            table = table[table["snapshot"].isin(self.spec.snapshots)]
        table = table.astype({c: np.int64 for c in IDENTITY})
        table = table.sort_values(["snapshot", "object_id", "projection", "file"])
        return table.reset_index(drop=True), unmatched, irregular

    # ------------------------------------------------------------------ catalogue
    def catalogue_fields(self) -> list[str]:
        """Requested FIELDS that the catalogue (not the image) provides."""
        measured = set(image_field_names(self.spec.filters))
        return [f for f in self.spec.fields if f not in measured and f not in IDENTITY]

    def catalogue(self, identities: pd.DataFrame) -> CatalogueMatch:
        raise NotImplementedError

    # ------------------------------------------------------------------ cropping
    def crop_spec(self) -> dict:
        """Cropper name and settings (the same for every image of the dataset)."""
        p = self.params
        filters = list(self.spec.filters)
        if p.petro_reference_band is not None and p.petro_reference_band in filters:
            reference = filters.index(p.petro_reference_band)
        else:
            reference = len(filters) // 2
        return {"name": self.spec.cropper, "petro_radius_factor": p.petro_radius_factor,
                "reference_band": reference, "r200c_factor": p.r200c_factor,
                "crop_fraction": p.crop_fraction, "mask_bits": p.mask_bits,
                "pad_mode": self.pad_mode}

    def crop_inputs(self, fields: pd.DataFrame) -> pd.DataFrame:
        """Per-object cropper inputs (e.g. r200c_kpc), indexed like ``fields``."""
        return pd.DataFrame(index=fields.index)


class _TNGExtractor(Extractor):
    """Shared catalogue logic of TNG-based kinds: one reader per snapshot."""

    def reader(self, snapshot: int):
        raise NotImplementedError

    def select(self, reader) -> np.ndarray:
        raise NotImplementedError

    def catalogue(self, identities: pd.DataFrame) -> CatalogueMatch:
        wanted = self.catalogue_fields()
        extra = [f for f in self.crop_fields if f not in wanted]
        frames, result = [], CatalogueMatch(fields=pd.DataFrame())
        for snapshot, group in identities.groupby("snapshot", sort=True):
            reader = self.reader(int(snapshot))
            ids = np.unique(group["object_id"].to_numpy())
            in_range = ids[(ids >= 0) & (ids < reader.count)]
            result.no_row += [(int(snapshot), int(i)) for i in np.setdiff1d(ids, in_range)]
            selected = self.select(reader)
            with_image = np.intersect1d(in_range, selected)
            result.not_selected += [(int(snapshot), int(i)) for i in np.setdiff1d(in_range, selected)]
            result.without_image += [(int(snapshot), int(i)) for i in np.setdiff1d(selected, ids)]
            try:
                values = reader.fields(wanted + extra, with_image) if len(with_image) else None
            except UnknownFieldError as err:
                measured = image_field_names(self.spec.filters)
                raise UnknownFieldError(err.names, list(err.available) + measured,
                                        f"dataset {self.spec.name} (extract.FIELDS)") from None
            if values is None:
                continue
            values = values.reset_index(drop=True)
            values.insert(0, "object_id", with_image)
            values.insert(1, "snapshot", int(snapshot))
            frames.append(values)
        if frames:
            result.fields = pd.concat(frames, ignore_index=True).set_index(["snapshot", "object_id"])
        else:
            result.fields = pd.DataFrame(columns=wanted + extra,
                                         index=pd.MultiIndex.from_arrays([[], []], names=["snapshot", "object_id"]))
        return result


class TNGStellarExtractor(_TNGExtractor):
    """SKIRT/HSC-like stellar-light mocks of TNG galaxies (subhalos)."""

    kind = "tng_stellar"

    def reader(self, snapshot):
        from TNG.subhalo import SubhaloStellar
        return SubhaloStellar.from_simulation(self.illustris_root, self.spec.simulation, snapshot,
                                              snapshot_redshifts_path=self.snapshot_redshifts_path)

    def select(self, reader):
        return reader.select(self.params.min_stellar_mass, self.params.max_stellar_mass)


class TNGXrayExtractor(_TNGExtractor):
    """X-ray surface-brightness maps of TNG groups and clusters (FoF halos)."""

    kind = "tng_xray"
    crop_fields = ("r200c_kpc",)
    #: count maps are not sky-subtracted: zero-mean Gaussian padding would add negative
    #: counts, while zeros sit at their faint background. The maps span 2 R200c, so the
    #: default R200C_FACTOR = 1 never pads (crop_outside_fraction says when it does).
    pad_mode = "constant"

    def reader(self, snapshot):
        from TNG.group import Group
        cc = self.spec.catalogue
        if cc is not None and not Path(cc).is_absolute():
            cc = self.illustris_root / self.spec.simulation / "postprocessing" / cc
        return Group.from_simulation(self.illustris_root, self.spec.simulation, snapshot,
                                     cc_criteria_path=cc)

    def select(self, reader):
        return reader.select(self.params.min_halo_mass, self.params.max_halo_mass)

    def crop_inputs(self, fields):
        return fields[["r200c_kpc"]]


class SurveyExtractor(Extractor):
    """Observed cut-outs with a catalogue of observed quantities keyed by ``object_id``."""

    kind = "survey"

    def catalogue_path(self) -> Path:
        name = self.spec.catalogue or "catalogue.csv"
        path = Path(name)
        return path if path.is_absolute() else self.raw_root / self.spec.name / path

    def catalogue(self, identities):
        path = self.catalogue_path()
        if not path.exists():
            raise FileNotFoundError(f"dataset {self.spec.name}: survey catalogue {path} does not "
                                    "exist (extract.CATALOGUES)")
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        if "object_id" not in table.columns:
            raise ValueError(f"survey catalogue {path} has no object_id column (columns: "
                             f"{list(table.columns)})")
        wanted = self.catalogue_fields()
        missing = [f for f in wanted if f not in table.columns]
        if missing:
            raise UnknownFieldError(missing, [c for c in table.columns if c != "object_id"]
                                    + image_field_names(self.spec.filters),
                                    f"survey catalogue {path} (extract.FIELDS of {self.spec.name})")
        duplicated = table["object_id"].duplicated()
        if duplicated.any():
            raise ValueError(f"survey catalogue {path}: object_id repeated "
                             f"{table.loc[duplicated, 'object_id'].head().tolist()}…")
        table = table.set_index("object_id")[wanted]
        ids = np.unique(identities["object_id"].to_numpy())
        known = np.intersect1d(ids, table.index.to_numpy())
        fields = table.loc[known].copy()
        fields.index = pd.MultiIndex.from_arrays([np.full(len(known), NO_SNAPSHOT), known],
                                                 names=["snapshot", "object_id"])
        return CatalogueMatch(
            fields=fields,
            no_row=[(NO_SNAPSHOT, int(i)) for i in np.setdiff1d(ids, known)],
            without_image=[(NO_SNAPSHOT, int(i)) for i in np.setdiff1d(table.index.to_numpy(), ids)],
        )


EXTRACTORS: dict[str, type[Extractor]] = {
    cls.kind: cls for cls in (TNGStellarExtractor, SurveyExtractor, TNGXrayExtractor)
}


def make_extractor(spec: DatasetSpec, params: ExtractParams, raw_root: Path, illustris_root: Path,
                   snapshot_redshifts_path: Path) -> Extractor:
    try:
        cls = EXTRACTORS[spec.extractor]
    except KeyError:
        raise ValueError(f"dataset {spec.name}: no extractor {spec.extractor!r}; known: "
                         f"{sorted(EXTRACTORS)}") from None
    return cls(spec, params, raw_root, illustris_root, snapshot_redshifts_path)
