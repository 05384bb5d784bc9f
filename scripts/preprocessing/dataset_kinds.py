"""Extractors: one class per dataset kind, turning raw files into identities and labels.

An extractor answers three questions for the extract stage, which does the rest (reading,
cropping, caching, parallelism, reports) the same way for every kind:

1. which image files exist and who they are (:meth:`Extractor.list_images`, from the file
   name through a regex with named groups ``object_id``, ``snapshot``, ``projection``, and
   ``filter`` for one-file-per-band layouts; with ``CATALOGUE_MATCH: sky`` the object id
   comes from the catalogue row nearest to the image's sky position);
2. which objects the catalogue selects and what their FIELDS are
   (:meth:`Extractor.catalogue`);
3. how each image is cropped (:meth:`Extractor.crop_spec`), including how a crop that
   leaves the frame is padded (:attr:`Extractor.pad_mode`).

Add your own dataset kind by subclassing :class:`Extractor` (see README, "Add your own
dataset") and registering it in :data:`scripts.preprocessing.kind_registry.KINDS`, the one
registry of kinds, which the params schema reads too.
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scripts.params import DatasetSpec, ExtractParams
from scripts.preprocessing.kind_registry import KINDS, extractor_class, runs_petrosian_fit
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
    """Base class; subclasses implement :meth:`catalogue` and are registered in
    :data:`~scripts.preprocessing.kind_registry.KINDS`."""

    #: catalogue columns the cropper needs besides the requested FIELDS
    crop_fields: tuple[str, ...] = ()
    #: padding of crops beyond the frame: sky noise of the image's σ (sky-subtracted
    #: images; see :mod:`scripts.preprocessing.croppers`) or a numpy.pad mode
    pad_mode = "noise"

    def __init__(self, spec: DatasetSpec, params: ExtractParams, raw_root: Path,
                 illustris_root: Path, snapshot_redshifts_path: Path):
        #: band_files layout: unit name (the first band's file) → file name per band or None
        self.units: dict[str, tuple[str | None, ...]] = {}
        #: what the identity step adds to extract_report.json (sky matching)
        self.identity_report: dict = {}
        self.spec = spec
        self.params = params
        self.raw_root = Path(raw_root)
        self.illustris_root = Path(illustris_root)
        self.snapshot_redshifts_path = Path(snapshot_redshifts_path)
        self.pattern = re.compile(spec.file_pattern)

    @property
    def kind(self) -> str:
        """The dataset kind (``extract.EXTRACTORS``) this extractor serves."""
        return self.spec.extractor

    @property
    def images_dir(self) -> Path:
        return self.raw_root / self.spec.name / "images"

    # ------------------------------------------------------------------ identities
    def parse_name(self, name: str) -> dict[str, int] | None:
        """Identity of one file name, or None when the pattern does not match.

        With ``CATALOGUE_MATCH: sky`` the name need not carry an object id (it is -1 until
        the sky match gives one). With ``FILE_LAYOUTS: band_files`` the result also has
        ``filter`` (the band, one of FILTERS, or None for a band not asked for) and
        ``unit`` (the name with the filter replaced by ``{filter}``: the files of one
        object share it).
        """
        match = self.pattern.search(name)
        if match is None:
            return None
        groups, spans = {}, {}
        for key, value in match.groupdict().items():
            if value is not None:  # alternations name their groups object_id2, …
                base = key.rstrip("0123456789")
                if base not in groups:
                    groups[base], spans[base] = value, match.span(key)
        sky = self.spec.catalogue_match == "sky"
        if "object_id" not in groups and not sky:
            return None
        out = {"object_id": int(groups["object_id"]) if "object_id" in groups else -1,
               "snapshot": int(groups.get("snapshot", 0 if KINDS[self.kind].simulated else NO_SNAPSHOT)),
               "projection": int(groups.get("projection", 0))}
        if self.spec.file_layout == "band_files":
            if "filter" not in groups:
                return None
            start, end = spans["filter"]
            out["filter"] = self.band_of(groups["filter"])
            out["unit"] = name[:start] + "{filter}" + name[end:]
        return out

    def band_of(self, value: str) -> str | None:
        """The band of FILTERS a file name's ``filter`` group names (``G``, ``g`` or
        ``HSC-G`` for band G), or None."""
        value = value.strip().upper()
        for band in self.spec.filters:
            b = band.strip().upper()
            if value == b or value.endswith(("-" + b, "_" + b, "." + b)):
                return band
        return None

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
        if self.spec.file_layout == "band_files":
            rows = self._group_band_files(rows)
        table = pd.DataFrame(rows, columns=["file", *IDENTITY])
        if self.spec.catalogue_match == "sky":
            table, bad = self.match_sky(table)
            irregular = irregular + bad
        if self.spec.snapshots is not None and KINDS[self.kind].simulated:
            table = table[table["snapshot"].isin(self.spec.snapshots)]
        table = table.astype({c: np.int64 for c in IDENTITY})
        table = table.sort_values(["snapshot", "object_id", "projection", "file"])
        return table.reset_index(drop=True), unmatched, irregular

    def _group_band_files(self, rows: list[dict]) -> list[dict]:
        """One row per object from one row per band file (band_files layout).

        The object's row is named after its first band's file present (in FILTERS order) and
        :attr:`units` keeps every band's file (None where missing: extract skips the object
        with reason ``missing_band``). Files of bands not in FILTERS are ignored.
        """
        filters = list(self.spec.filters)
        groups: dict[str, dict] = {}
        for row in rows:
            if row["filter"] is None:
                continue
            entry = groups.setdefault(row["unit"], {"files": [None] * len(filters), "ident": row})
            slot = filters.index(row["filter"])
            if entry["files"][slot] is None:
                entry["files"][slot] = row["file"]
        out = []
        self.units = {}
        for entry in groups.values():
            name = next(f for f in entry["files"] if f is not None)
            self.units[name] = tuple(entry["files"])
            out.append({"file": name, **{k: entry["ident"][k] for k in IDENTITY}})
        return out

    def band_paths(self, name: str) -> tuple[Path | None, ...]:
        """File of each band of the object named ``name`` (band_files layout)."""
        return tuple(None if f is None else self.images_dir / f for f in self.units[name])

    def unit_stat(self, name: str) -> tuple[int, int]:
        """(size, mtime_ns) that tells whether an object's files changed since a cached run:
        of its file, or for band_files the total size and latest mtime of its band files
        (with the missing bands' count folded into the size)."""
        if self.spec.file_layout != "band_files":
            st = (self.images_dir / name).stat()
            return st.st_size, st.st_mtime_ns
        size, mtime = 0, 0
        for path in self.band_paths(name):
            if path is None:
                size += 1 << 40
                continue
            st = path.stat()
            size, mtime = size + st.st_size, max(mtime, st.st_mtime_ns)
        return size, mtime

    def load_spec(self, name: str) -> dict:
        """How :func:`~scripts.preprocessing.image_preprocessing.process_image` reads the
        object named ``name``."""
        layout = self.spec.file_layout
        if layout == "band_files":
            return {"layout": layout, "paths": [None if p is None else str(p)
                                                for p in self.band_paths(name)]}
        if layout == "cube":
            return {"layout": layout, "cube_bands": None if self.spec.cube_bands is None
                    else list(self.spec.cube_bands)}
        return {"layout": layout}

    def position_source(self, name: str) -> tuple[Path, str | None]:
        """(file, HDU EXTNAME or None) whose header gives the sky position of ``name``."""
        layout = self.spec.file_layout
        first = self.spec.filters[0]
        if layout == "band_files":
            slot = next(i for i, f in enumerate(self.units[name]) if f is not None)
            return self.images_dir / self.units[name][slot], self.spec.band_extnames[self.spec.filters[slot]]
        if layout == "cube":
            return self.images_dir / name, None
        return self.images_dir / name, self.spec.band_extnames[first]

    def match_sky(self, table: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
        """Give each image the object id of the nearest catalogue row (CATALOGUE_MATCH sky)."""
        raise NotImplementedError(f"extractor {self.kind} has no sky matching")

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
        spec = {"name": self.spec.cropper, "petro_radius_factor": p.petro_radius_factor,
                "reference_band": reference, "r200c_factor": p.r200c_factor,
                "crop_fraction": p.crop_fraction, "mask_bits": p.mask_bits,
                "pad_mode": self.pad_mode}
        if p.neighbours != "keep":      # (keep: fingerprints of earlier runs stay valid)
            spec["neighbours"] = p.neighbours
        if self.spec.cropper != "petrosian" and runs_petrosian_fit(self.kind, self.spec.cropper):
            # Petrosian magnitudes and radii (the photometry baseline and OBSERVABLES),
            # measured without cropping by them
            spec["measure"] = "petrosian"
        return spec

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


    def reader(self, snapshot):
        from TNG.subhalo import SubhaloStellar
        return SubhaloStellar.from_simulation(self.illustris_root, self.spec.simulation, snapshot,
                                              snapshot_redshifts_path=self.snapshot_redshifts_path)

    def select(self, reader):
        return reader.select(self.params.min_stellar_mass, self.params.max_stellar_mass)


class TNGXrayExtractor(_TNGExtractor):
    """X-ray surface-brightness maps of TNG groups and clusters (FoF halos)."""

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


    def catalogue_path(self) -> Path:
        name = self.spec.catalogue or "catalogue.csv"
        path = Path(name)
        return path if path.is_absolute() else self.raw_root / self.spec.name / path

    def read_catalogue(self) -> pd.DataFrame:
        """The survey catalogue as stored; with sky matching and no ``object_id`` column,
        the row number is the object id."""
        path = self.catalogue_path()
        if not path.exists():
            raise FileNotFoundError(f"dataset {self.spec.name}: survey catalogue {path} does not "
                                    "exist (extract.CATALOGUES)")
        table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
        if "object_id" not in table.columns:
            if self.spec.catalogue_match == "sky":
                table.insert(0, "object_id", np.arange(len(table), dtype=np.int64))
            else:
                raise ValueError(f"survey catalogue {path} has no object_id column (columns: "
                                 f"{list(table.columns)})")
        return table

    def match_sky(self, table: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
        """Object ids by sky position (``CATALOGUE_MATCH: sky``).

        Each image's centre (:func:`fits_bands.sky_position`) is matched to the nearest catalogue
        row (``CATALOGUE_RADEC`` columns, degrees) with astropy's
        ``SkyCoord.match_to_catalog_sky``. Images farther than ``MATCH_RADIUS_ARCSEC`` from
        every row are dropped and listed (``images_without_sky_match``); when several images
        claim one row the nearest keeps it and all claims are listed
        (``duplicate_sky_matches``). Files whose position cannot be read are returned as
        skipped entries with their reason. Adds ``ra_image``, ``dec_image`` and
        ``match_sep_arcsec`` (the separation) to the table.
        """
        import astropy.units as u
        from astropy.coordinates import SkyCoord

        from scripts.preprocessing.fits_bands import sky_position
        from scripts.preprocessing.fits_file import BadImageError

        catalogue = self.read_catalogue()
        path = self.catalogue_path()
        ra_col, dec_col = self.params.catalogue_radec
        absent = [c for c in (ra_col, dec_col) if c not in catalogue.columns]
        if absent:
            raise ValueError(f"survey catalogue {path}: no column(s) {absent} for sky matching "
                             f"(extract.CATALOGUE_RADEC); columns: {list(catalogue.columns)}")
        radius = self.params.match_radius_arcsec
        bad, ra, dec, source = [], [], [], []
        for name in table["file"]:
            try:
                r, d, where = sky_position(*self.position_source(name))
            except BadImageError as err:
                bad.append({"file": name, "reason": err.reason, "detail": err.detail})
                r = d = math.nan
                where = ""
            ra.append(r), dec.append(d), source.append(where)
        table = table.assign(ra_image=ra, dec_image=dec)
        table = table[np.isfinite(table["ra_image"].to_numpy(float))].reset_index(drop=True)
        report = {"catalogue_match": "sky", "match_radius_arcsec": radius,
                  "images_without_sky_match": [], "duplicate_sky_matches": []}
        if len(table) == 0 or len(catalogue) == 0:
            report["images_without_sky_match"] = [{"file": f, "nearest_object_id": None,
                                                   "separation_arcsec": None} for f in table["file"]]
            self.identity_report = report
            return table.iloc[:0].assign(match_sep_arcsec=[]), bad
        images = SkyCoord(table["ra_image"].to_numpy(float) * u.deg,
                          table["dec_image"].to_numpy(float) * u.deg)
        rows = SkyCoord(catalogue[ra_col].to_numpy(float) * u.deg,
                        catalogue[dec_col].to_numpy(float) * u.deg)
        index, separation, _ = images.match_to_catalog_sky(rows)
        sep = separation.arcsec
        ids = catalogue["object_id"].to_numpy(np.int64)[index]
        table = table.assign(object_id=ids, match_sep_arcsec=sep)
        within = sep <= radius
        report["images_without_sky_match"] = [
            {"file": f, "ra": float(r), "dec": float(d), "nearest_object_id": int(o),
             "separation_arcsec": float(s)}
            for f, r, d, o, s in zip(table["file"][~within], table["ra_image"][~within],
                                     table["dec_image"][~within], ids[~within], sep[~within])]
        table = table[within]
        keep = np.ones(len(table), bool)
        for object_id, claims in table.groupby("object_id"):
            if len(claims) < 2:
                continue
            order = claims.sort_values(["match_sep_arcsec", "file"])
            report["duplicate_sky_matches"].append({
                "object_id": int(object_id), "kept": order["file"].iloc[0],
                "claims": [{"file": f, "separation_arcsec": float(s)}
                           for f, s in zip(order["file"], order["match_sep_arcsec"])]})
            keep[table.index.get_indexer(order.index[1:])] = False
        self.identity_report = report
        return table[keep].reset_index(drop=True), bad

    def catalogue(self, identities):
        path = self.catalogue_path()
        table = self.read_catalogue()
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


def make_extractor(spec: DatasetSpec, params: ExtractParams, raw_root: Path, illustris_root: Path,
                   snapshot_redshifts_path: Path) -> Extractor:
    """The extractor of ``spec``'s kind, from the registry of kinds."""
    try:
        cls = extractor_class(spec.extractor)
    except ValueError as err:
        raise ValueError(f"dataset {spec.name}: {err}") from None
    return cls(spec, params, raw_root, illustris_root, snapshot_redshifts_path)
