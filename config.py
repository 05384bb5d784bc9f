"""Paths and plot labels shared by every stage.

Each path can be overridden by an environment variable (named in brackets), so the same
checkout runs on a laptop with the embedded mock universe and on a cluster with the real
TNG archive, e.g. ``ILLUSTRIS_PATH=/virgo/simulations/IllustrisTNG``.
No credentials belong here: tracking URIs and tokens come from the environment only.
"""
from __future__ import annotations

import os
from pathlib import Path

root_path = Path(__file__).resolve().parent


def _path(env: str, default: Path) -> Path:
    value = os.environ.get(env)
    return Path(value).expanduser().resolve() if value else default


#: Raw inputs: ``<DATASET>/images/*.fits`` and survey catalogues [DATASET_RAW_PATH].
dataset_raw_path = _path("DATASET_RAW_PATH", root_path / "dataset_raw")
#: Base of the TNG archive, holding ``<SIMULATION>/output/groups_SSS/`` and
#: ``<SIMULATION>/postprocessing/`` [ILLUSTRIS_PATH]. The mock universe writes here too.
illustris_path = _path("ILLUSTRIS_PATH", dataset_raw_path / "TNG")
#: Outputs of extract and prepare [DATASET_PATH].
dataset_path = _path("DATASET_PATH", root_path / "dataset")
#: Trained runs: checkpoints and exported encoders [MODELS_PATH].
models_path = _path("MODELS_PATH", root_path / "models")
#: Figures [PLOTS_PATH].
plots_path = _path("PLOTS_PATH", root_path / "plots")
#: HTML/Markdown reports [REPORTS_PATH].
reports_path = _path("REPORTS_PATH", root_path / "reports")
#: Real files shipped with the repository (provenance and citations: data/README.md).
data_path = root_path / "data"
#: Snapshot → redshift table of IllustrisTNG (line n = redshift of snapshot n)
#: [SNAPSHOT_REDSHIFTS].
snapshot_redshifts_path = _path("SNAPSHOT_REDSHIFTS", data_path / "tng_snapshot_redshifts.txt")
#: Real TNG-Cluster cool-core catalogue (Lehle et al. 2024) the mock clusters draw from
#: [CC_CRITERIA].
cc_criteria_path = _path("CC_CRITERIA", data_path / "tng_cluster" / "CCcriteria.hdf5")
#: Real TNG50 SKIRT/HSC mock image (15 HDUs, G in the primary HDU), the format reference of
#: the band reader and the mock universe [REAL_HSC_MOCK].
real_hsc_mock_path = _path("REAL_HSC_MOCK",
                           data_path / "real_hsc_mock" / "shalo_084-97_v3_HSC_GRIZY.fits")

#: FIELD → axis label with units, used by every plot.
label_dict = {
    "stellar_mass": r"$\log_{10}\,M_\star\;[\mathrm{M}_\odot]$",
    "mass_in_rad": r"$\log_{10}\,M_{\star}(<2r_{1/2})\;[\mathrm{M}_\odot]$",
    "halo_mass": r"$\log_{10}\,M_\mathrm{halo}\;[\mathrm{M}_\odot]$",
    "m200c": r"$\log_{10}\,M_\mathrm{200c}\;[\mathrm{M}_\odot]$",
    "r200c_kpc": r"$R_\mathrm{200c}\;[\mathrm{kpc}]$",
    "sfr": r"$\log_{10}\,\mathrm{SFR}\;[\mathrm{M}_\odot\,\mathrm{yr}^{-1}]$",
    "ssfr": r"$\log_{10}\,\mathrm{sSFR}\;[\mathrm{yr}^{-1}]$",
    "half_mass_radius_kpc": r"$r_{1/2,\star}\;[\mathrm{kpc}]$",
    "exsitu_fraction": r"$f_\mathrm{ex\,situ}$",
    "lookback_last_major_merger": r"$t_\mathrm{lb,\,last\,major\,merger}\;[\mathrm{Gyr}]$",
    "snap_last_major_merger": r"snapshot of last major merger",
    "z": r"$z$",
    "lookback": r"$t_\mathrm{lookback}\;[\mathrm{Gyr}]$",
    "sersic_n": r"Sérsic index $n$",
    "bulge_fraction": r"$B/T$",
    "color_gr": r"$g-r\;[\mathrm{mag}]$",
    "i_mag": r"$m_i\;[\mathrm{mag}]$",
    "petro_r90_arcsec": r"$R_{90,\mathrm{Petro}}\;[\mathrm{arcsec}]$",
    "photoz": r"$z_\mathrm{phot}$",
    "central_cooling_time": r"$t_\mathrm{cool,0}\;[\mathrm{Gyr}]$",
    "central_entropy": r"$K_0\;[\mathrm{keV\,cm^2}]$",
    "concentration": r"$c_\mathrm{SB}$",
    "cool_core": r"cool core",
    "r_petrosian": r"$r_\mathrm{P}\;[\mathrm{px}]$",
    "r50": r"$R_{50}\;[\mathrm{px}]$",
    "r90": r"$R_{90}\;[\mathrm{px}]$",
}


def label(field: str) -> str:
    """Plot label of ``field``; the field name itself where none is defined."""
    return label_dict.get(field, field.replace("_", " "))
