"""Registry of named physical FIELDS computed from TNG catalogues.

A FIELD is a physical quantity in physical units (h and a applied) with a name used
across the project (``objects.parquet`` columns, plot labels in ``config.label_dict``).
Each FIELD declares the raw columns it needs (:class:`Requirement`: source + dataset
[+ component]), so a reader loads only those, and a function turning the raw columns into
the quantity.

Sources:

- ``subhalo``: ``Subhalo/<dataset>`` of the group catalogue at the selected subhalo ids;
- ``parent_group``: ``Group/<dataset>`` at the parent FoF group (``SubhaloGrNr``) of each
  selected subhalo;
- ``group``: ``Group/<dataset>`` at the selected group ids;
- ``stellar_assembly``, ``merger_history``, ``root_descendant``: supplementary files
  (``TNG.supplementary``) at the selected subhalo ids;
- ``cc_criteria``: ``CCcriteria.hdf5`` (``TNG.cccriteria``) at the selected group ids and
  the snapshot;
- ``snapshot_redshifts``: the snapshot → redshift table (``TNG.redshifts``).

The Header (z, a, h, cosmology) is always available.

Conventions:

- log10 of a non-positive mass is NaN (undefined), never −inf.
- ``sfr``: log10 of max(SFR, ``SFR_FLOOR`` = 1e-4 M☉/yr); ``ssfr``: log10 of
  max(SFR/M⋆, ``SSFR_FLOOR`` = 1e-13 /yr). SubFind writes SFR = 0 for galaxies without
  star-forming gas; the floors put them in one finite clump far below the quenched
  threshold (sSFR ~ 1e-11 /yr) instead of −inf.
- ``lookback_last_major_merger``: time from the last major merger to the galaxy's own
  snapshot (age(z_snap) − age(z_merger)), as in Eisert et al.'s ERGO-ML code; NaN if the
  galaxy never had one (``SnapNumLastMajorMerger`` = −1).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from astropy.cosmology import FlatLambdaCDM

from TNG import conversions
from TNG.redshifts import snapshot_to_redshift

logger = logging.getLogger(__name__)

SUBHALO = "subhalo"
PARENT_GROUP = "parent_group"
GROUP = "group"
STELLAR_ASSEMBLY = "stellar_assembly"
MERGER_HISTORY = "merger_history"
ROOT_DESCENDANT = "root_descendant"
CC_CRITERIA = "cc_criteria"
SNAPSHOT_REDSHIFTS = "snapshot_redshifts"

#: Floor of the star-formation rate before log10 [M☉/yr].
SFR_FLOOR = 1.0e-4
#: Floor of the specific star-formation rate before log10 [1/yr].
SSFR_FLOOR = 1.0e-13
#: Particle type index of stars in the ``*Type`` columns.
PARTTYPE_STARS = 4


class Requirement(NamedTuple):
    """A raw input of a FIELD: ``source`` (see module docstring), dataset name, and
    optionally the component of an (N, k) dataset."""

    source: str
    name: str
    component: int | None = None


class UnknownFieldError(KeyError):
    """A requested FIELD is not provided by this catalogue."""

    def __init__(self, names: Iterable[str], available: Iterable[str], where: str,
                 elsewhere: Mapping[str, str] | None = None):
        self.names = list(names)
        self.available = sorted(available)
        hint = ""
        if elsewhere:
            hint = "; " + ", ".join(f"{n!r} is provided by {w}" for n, w in elsewhere.items())
        self.message = (f"unknown FIELD(s) {self.names} for {where}; available: "
                        f"{self.available}{hint}")
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


@dataclass
class FieldInputs:
    """What a FIELD's function sees: ids, snapshot, Header constants and the raw columns
    it declared (asking for an undeclared column is a registry bug and raises)."""

    ids: np.ndarray
    snapshot: int
    redshift: float
    scale_factor: float
    hubble_param: float
    cosmology: FlatLambdaCDM
    columns: Mapping[Requirement, np.ndarray] = field(default_factory=dict)

    def __getitem__(self, requirement: Requirement) -> np.ndarray:
        try:
            return self.columns[requirement]
        except KeyError:
            raise KeyError(f"{requirement} was not declared by the FIELD asking for it") from None

    def full(self, value, dtype=np.float64) -> np.ndarray:
        """An array of len(ids) filled with ``value``."""
        return np.full(len(self.ids), value, dtype=dtype)


@dataclass(frozen=True)
class Field:
    """A named physical quantity: ``unit``, ``description``, ``level`` ("subhalo",
    "group" or "any"), raw inputs ``requires`` and ``compute(inputs) -> array``."""

    name: str
    unit: str
    description: str
    level: str
    requires: tuple[Requirement, ...]
    compute: Callable[[FieldInputs], np.ndarray]

    @property
    def sources(self) -> frozenset[str]:
        return frozenset(r.source for r in self.requires)


FIELDS: dict[str, Field] = {}


def register(name: str, unit: str, description: str, level: str,
             requires: Iterable[Requirement] = ()) -> Callable:
    """Decorator adding ``compute`` to :data:`FIELDS` under ``name``."""
    if level not in ("subhalo", "group", "any"):
        raise ValueError(f"FIELD {name}: level {level!r} not in subhalo/group/any")

    def decorate(compute: Callable[[FieldInputs], np.ndarray]) -> Callable:
        if name in FIELDS:
            raise ValueError(f"FIELD {name!r} registered twice")
        FIELDS[name] = Field(name, unit, description, level, tuple(requires), compute)
        return compute
    return decorate


def available_fields(level: str, sources: Iterable[str]) -> list[str]:
    """Names of the FIELDS of ``level`` computable from ``sources``."""
    sources = frozenset(sources)
    return sorted(n for n, f in FIELDS.items()
                  if f.level in (level, "any") and f.sources <= sources)


def describe(names: Iterable[str] | None = None) -> str:
    """A table "name [unit]: description" of FIELDS (all by default)."""
    names = sorted(FIELDS) if names is None else names
    return "\n".join(f"{n} [{FIELDS[n].unit}]: {FIELDS[n].description}" for n in names)


# ---------------------------------------------------------------------------- identity
@register("subhalo_id", "", "SubFind subhalo index in the snapshot's group catalogue",
          "subhalo")
def _subhalo_id(inp: FieldInputs) -> np.ndarray:
    return inp.ids.astype(np.int64)


@register("group_id", "", "FoF group (halo) index in the snapshot's group catalogue",
          "group")
def _group_id(inp: FieldInputs) -> np.ndarray:
    return inp.ids.astype(np.int64)


@register("snapshot", "", "snapshot number", "any")
def _snapshot(inp: FieldInputs) -> np.ndarray:
    return inp.full(inp.snapshot, np.int64)


@register("z", "", "redshift of the snapshot (Header Redshift)", "any")
def _z(inp: FieldInputs) -> np.ndarray:
    return inp.full(inp.redshift)


@register("lookback", "Gyr", "lookback time from z = 0 to the snapshot", "any")
def _lookback(inp: FieldInputs) -> np.ndarray:
    return inp.full(float(conversions.lookback_time_gyr(inp.redshift, inp.cosmology)))


# ---------------------------------------------------------------------------- subhalo
_MSTAR = Requirement(SUBHALO, "SubhaloMassType", PARTTYPE_STARS)
_MSTAR_IN_RAD = Requirement(SUBHALO, "SubhaloMassInRadType", PARTTYPE_STARS)
_SFR = Requirement(SUBHALO, "SubhaloSFR")
_RHALF_STARS = Requirement(SUBHALO, "SubhaloHalfmassRadType", PARTTYPE_STARS)
_GRNR = Requirement(SUBHALO, "SubhaloGrNr")
_PARENT_M200C = Requirement(PARENT_GROUP, "Group_M_Crit200")
_PARENT_FIRST_SUB = Requirement(PARENT_GROUP, "GroupFirstSub")


@register("stellar_mass", "log10 M☉",
          "total stellar mass bound to the subhalo (SubhaloMassType[:, 4])", "subhalo",
          [_MSTAR])
def _stellar_mass(inp: FieldInputs) -> np.ndarray:
    return conversions.log10_positive(conversions.mass_to_msun(inp[_MSTAR], inp.hubble_param))


@register("mass_in_rad", "log10 M☉",
          "stellar mass within twice the stellar half-mass radius (SubhaloMassInRadType[:, 4])",
          "subhalo", [_MSTAR_IN_RAD])
def _mass_in_rad(inp: FieldInputs) -> np.ndarray:
    return conversions.log10_positive(
        conversions.mass_to_msun(inp[_MSTAR_IN_RAD], inp.hubble_param))


@register("halo_mass", "log10 M☉",
          "M200c of the parent FoF group (Group_M_Crit200 at SubhaloGrNr); NaN if 0",
          "subhalo", [_GRNR, _PARENT_M200C])
def _halo_mass(inp: FieldInputs) -> np.ndarray:
    return conversions.log10_positive(
        conversions.mass_to_msun(inp[_PARENT_M200C], inp.hubble_param))


@register("sfr", "log10 M☉/yr",
          f"instantaneous star-formation rate (SubhaloSFR), floored at {SFR_FLOOR:g} M☉/yr",
          "subhalo", [_SFR])
def _sfr(inp: FieldInputs) -> np.ndarray:
    return np.log10(np.maximum(inp[_SFR].astype(np.float64), SFR_FLOOR))


@register("ssfr", "log10 1/yr",
          f"specific SFR = SubhaloSFR / stellar mass, floored at {SSFR_FLOOR:g} /yr; NaN "
          "without stars", "subhalo", [_SFR, _MSTAR])
def _ssfr(inp: FieldInputs) -> np.ndarray:
    mstar = conversions.mass_to_msun(inp[_MSTAR], inp.hubble_param)
    out = np.full(len(mstar), np.nan)
    good = mstar > 0
    out[good] = np.log10(np.maximum(inp[_SFR][good] / mstar[good], SSFR_FLOOR))
    return out


@register("half_mass_radius_kpc", "kpc",
          "stellar half-mass radius (SubhaloHalfmassRadType[:, 4] × a / h), physical",
          "subhalo", [_RHALF_STARS])
def _half_mass_radius(inp: FieldInputs) -> np.ndarray:
    return conversions.length_to_kpc(inp[_RHALF_STARS], inp.scale_factor, inp.hubble_param)


@register("is_central", "", "True if the subhalo is its FoF group's first (central) "
          "subhalo: GroupFirstSub[SubhaloGrNr] == id", "subhalo",
          [_GRNR, _PARENT_FIRST_SUB])
def _is_central(inp: FieldInputs) -> np.ndarray:
    return inp[_PARENT_FIRST_SUB].astype(np.int64) == inp.ids.astype(np.int64)


# ---------------------------------------------------------------------------- supplementary
_EXSITU = Requirement(STELLAR_ASSEMBLY, "StellarMassExSitu")
_INSITU = Requirement(STELLAR_ASSEMBLY, "StellarMassInSitu")
_SNAP_LMM = Requirement(MERGER_HISTORY, "SnapNumLastMajorMerger")
_MASS_LMM = Requirement(MERGER_HISTORY, "MassLastMajorMerger")
_ROOT_DESC = Requirement(ROOT_DESCENDANT, "RootDescendantID")
_Z_TABLE = Requirement(SNAPSHOT_REDSHIFTS, "redshift")


@register("exsitu_fraction", "",
          "fraction of stellar mass formed outside the galaxy: StellarMassExSitu / "
          "(StellarMassExSitu + StellarMassInSitu); NaN without stars", "subhalo",
          [_EXSITU, _INSITU])
def _exsitu_fraction(inp: FieldInputs) -> np.ndarray:
    ex = inp[_EXSITU].astype(np.float64)
    total = ex + inp[_INSITU].astype(np.float64)
    out = np.full(len(total), np.nan)
    good = total > 0
    out[good] = ex[good] / total[good]
    return out


def _last_major_merger_snapshot(inp: FieldInputs) -> np.ndarray:
    snap = inp[_SNAP_LMM].astype(np.float64)
    snap[snap < 0] = np.nan
    return snap


@register("snap_last_major_merger", "",
          "snapshot of the last major merger (SnapNumLastMajorMerger); NaN = never "
          "(stored −1)", "subhalo", [_SNAP_LMM])
def _snap_last_major_merger(inp: FieldInputs) -> np.ndarray:
    return _last_major_merger_snapshot(inp)


@register("lookback_last_major_merger", "Gyr",
          "time from the last major merger to the galaxy's snapshot, age(z) − "
          "age(z_merger) with z_merger from the snapshot→redshift table; NaN = never",
          "subhalo", [_SNAP_LMM, _Z_TABLE])
def _lookback_last_major_merger(inp: FieldInputs) -> np.ndarray:
    z_merger = snapshot_to_redshift(_last_major_merger_snapshot(inp), inp[_Z_TABLE])
    return conversions.time_between_gyr(z_merger, np.full(len(z_merger), inp.redshift),
                                        inp.cosmology)


@register("mass_last_major_merger", "log10 M☉",
          "stellar mass of the secondary in the last major merger (MassLastMajorMerger); "
          "NaN = never", "subhalo", [_MASS_LMM, _SNAP_LMM])
def _mass_last_major_merger(inp: FieldInputs) -> np.ndarray:
    out = conversions.log10_positive(conversions.mass_to_msun(inp[_MASS_LMM], inp.hubble_param))
    out[inp[_SNAP_LMM] < 0] = np.nan
    return out


@register("root_descendant_id", "",
          "SubLink RootDescendantID: shared by all snapshots of one galaxy's main branch",
          "subhalo", [_ROOT_DESC])
def _root_descendant_id(inp: FieldInputs) -> np.ndarray:
    return inp[_ROOT_DESC].astype(np.int64)


# ---------------------------------------------------------------------------- groups
_M200C = Requirement(GROUP, "Group_M_Crit200")
_R200C = Requirement(GROUP, "Group_R_Crit200")
_TCOOL = Requirement(CC_CRITERIA, "centralCoolingTime")
_TCOOL_FLAG = Requirement(CC_CRITERIA, "centralCoolingTime_flag")
_K0 = Requirement(CC_CRITERIA, "centralEntropy")
_NE0 = Requirement(CC_CRITERIA, "centraleNumDens")
_CPHYS = Requirement(CC_CRITERIA, "concentrationPhys")
_CSCALED = Requirement(CC_CRITERIA, "concentrationScaled")
_SLOPE = Requirement(CC_CRITERIA, "slopeeNumDens")


@register("m200c", "log10 M☉", "group mass within R200c (Group_M_Crit200); NaN if 0",
          "group", [_M200C])
def _m200c(inp: FieldInputs) -> np.ndarray:
    return conversions.log10_positive(conversions.mass_to_msun(inp[_M200C], inp.hubble_param))


@register("r200c_kpc", "kpc", "radius enclosing 200 × the critical density "
          "(Group_R_Crit200 × a / h), physical", "group", [_R200C])
def _r200c(inp: FieldInputs) -> np.ndarray:
    return conversions.length_to_kpc(inp[_R200C], inp.scale_factor, inp.hubble_param)


def _cc_value(requirement: Requirement) -> Callable[[FieldInputs], np.ndarray]:
    return lambda inp: inp[requirement].astype(np.float64)


for _name, _unit, _req, _text in [
        ("central_cooling_time", "Gyr", _TCOOL, "central cooling time t_cool,0"),
        ("central_entropy", "keV cm²", _K0, "central entropy K_0"),
        ("central_electron_density", "cm⁻³", _NE0, "central electron number density n_e,0"),
        ("concentration", "", _CPHYS, "X-ray surface-brightness concentration "
         "SB(<40 kpc)/SB(<400 kpc) (concentrationPhys)"),
        ("concentration_scaled", "", _CSCALED, "X-ray surface-brightness concentration "
         "SB(<0.04 R500)/SB(<0.4 R500) (concentrationScaled)"),
        ("density_slope", "", _SLOPE, "logarithmic slope of the electron density profile "
         "at 0.04 R500 (slopeeNumDens)")]:
    register(_name, _unit, f"{_text} at the snapshot (CCcriteria, Lehle et al. 2024); NaN "
             "if not measured", "group", [_req])(_cc_value(_req))


@register("cool_core_class", "", "Lehle et al. (2024) class by central cooling time "
          "(centralCoolingTime_flag): 0 = strong (t_cool,0 < 1 Gyr), 1 = weak (1–7.7 Gyr), "
          "2 = non-cool core (≥ 7.7 Gyr); NaN if not measured", "group", [_TCOOL_FLAG])
def _cool_core_class(inp: FieldInputs) -> np.ndarray:
    return inp[_TCOOL_FLAG].astype(np.float64)


@register("cool_core", "", "strong cool core by Lehle et al. (2024): 1.0 if "
          "centralCoolingTime_flag == 0 (t_cool,0 < 1 Gyr), else 0.0; NaN if not measured",
          "group", [_TCOOL_FLAG])
def _cool_core(inp: FieldInputs) -> np.ndarray:
    flag = inp[_TCOOL_FLAG].astype(np.float64)
    return np.where(np.isnan(flag), np.nan, (flag == 0).astype(np.float64))

del _name, _unit, _req, _text
