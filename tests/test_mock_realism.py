"""The mock universe against the real TNG–HSC mock shipped in data/ (issue: mock calibration).

Both sides are measured with the extract stage's own code (scripts.mock.compare_real). The
mock's medians, over a seeded sample of the demo preset, must sit within a factor 1.5 of
the reference values below.

Reference numbers and where they come from:

* Petrosian S/N in R 67.2 at Petrosian r = 21.9, R90 / frame edge 0.128, sky σ per pixel G/R/I 5.49e-4 /
  7.58e-4 / 8.03e-4 nanomaggies: measured on data/real_hsc_mock/shalo_084-97_v3_HSC_GRIZY.fits
  (TNG50-1, snapshot 84, subhalo 97; Bottrell et al. 2024) by this code; the test re-measures
  the file and checks it still gives these numbers.
* PSF FWHM: the real file carries no PSF. HSC-SSP Wide median seeing: i 0.6″ (Aihara et al.
  2019, PASJ 71, 114, the PDR2 paper's abstract); g and r 0.7″, the middle of the 0.6–0.8″
  that the ERGO-ML mocks were inserted with (Bottrell et al. 2024; Eisert et al. 2024).
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from scripts.mock import compare_real

REAL_SNR_R = 67.2
REAL_R90_FRAME = 0.128
REAL_SKY_SIGMA = {"G": 5.49e-4, "R": 7.58e-4, "I": 8.03e-4}
HSC_PSF_FWHM = {"G": 0.7, "R": 0.7, "I": 0.6}
FACTOR = 1.5
MOCK_SETS = ("MOCK_FIDUCIAL", "MOCK_COMPACT", "MOCK_HSC")


@pytest.fixture(scope="module")
def real():
    return compare_real.measure_files(compare_real.default_real_files(), "real").iloc[0]


@pytest.fixture(scope="module")
def demo_plan(tmp_path_factory):
    from scripts.mock.universe import plan_universe
    root = tmp_path_factory.mktemp("mock-compare")
    return plan_universe(root / "raw", root / "illustris", size="demo", seed=0)


@pytest.fixture(scope="module")
def mock_medians(demo_plan):
    table = compare_real.mock_sample(n_per_set=20, seed=0, plan=demo_plan)
    assert set(table["source"]) == set(MOCK_SETS)
    assert (table.groupby("source").size() == 20).all()
    return compare_real.summary(table)


def within(value: float, reference: float) -> bool:
    return math.isfinite(value) and reference / FACTOR <= value <= reference * FACTOR


def test_reference_numbers_are_those_of_the_shipped_real_file(real):
    assert real["snr_r"] == pytest.approx(REAL_SNR_R, rel=0.01)
    assert real["r90_frame"] == pytest.approx(REAL_R90_FRAME, rel=0.01)
    for band, sigma in REAL_SKY_SIGMA.items():
        assert real[f"sky_sigma_{band}"] == pytest.approx(sigma, rel=0.01)
    assert math.isnan(real["psf_fwhm_R"])  # no PSF key in the real file: see the docstring


@pytest.mark.parametrize("dataset", MOCK_SETS)
def test_mock_framing_noise_and_psf_match_the_real_archive(mock_medians, dataset):
    m = mock_medians[dataset]
    assert within(m["r90_frame"], REAL_R90_FRAME), m["r90_frame"]
    for band in ("G", "R", "I"):
        assert within(m[f"sky_sigma_{band}"], REAL_SKY_SIGMA[band]), (band, m[f"sky_sigma_{band}"])
        assert within(m[f"psf_fwhm_{band}"], HSC_PSF_FWHM[band]), (band, m[f"psf_fwhm_{band}"])


@pytest.mark.xfail(strict=True, reason="not met: the one real file is a faint galaxy (r = 21.9), the "
                   "mock's median galaxy that of a mass function like GAMA's above 10^9.5 M☉ "
                   "(test_mock_stellar_masses_follow_the_observed_mass_function); see the README's "
                   "calibration note and `--compare-real`'s S/N per stellar-mass bin")
@pytest.mark.parametrize("dataset", MOCK_SETS)
def test_mock_petrosian_snr_matches_the_real_file(mock_medians, dataset):
    assert within(mock_medians[dataset]["snr_r"], REAL_SNR_R), mock_medians[dataset]["snr_r"]


@pytest.fixture(scope="module")
def mock_sample_60(demo_plan):
    return compare_real.mock_sample(n_per_set=60, seed=0, plan=demo_plan)


def test_mock_snr_at_the_real_files_magnitude(real, mock_sample_60):
    """At the real file's own brightness (Petrosian r = 21.9), a line of log10 S/N against r
    through 60 images per set gives the Fiducial run and the observed set the real file's S/N
    within a factor 1.5: sky noise, PSF and surface brightness are calibrated; what the
    median test above misses is the sample's brightness. Compact, the known answer, is
    brighter per area, so its S/N at the same magnitude is higher."""
    at = compare_real.snr_at_magnitude(mock_sample_60, float(real["mag_r"]))
    assert real["mag_r"] == pytest.approx(21.9, abs=0.05)
    for dataset in ("MOCK_FIDUCIAL", "MOCK_HSC"):
        assert within(at.loc[dataset, "snr_r"], REAL_SNR_R), at
        # measured there, not extrapolated: inside the fitted range, images within 0.5 mag
        assert at.loc[dataset, "mag_min"] < real["mag_r"] < at.loc[dataset, "mag_max"], at
        assert at.loc[dataset, "n_near"] >= 3, at
    assert at.loc["MOCK_COMPACT", "snr_r"] > 1.3 * at.loc["MOCK_FIDUCIAL", "snr_r"], at


def test_snr_at_magnitude_recovers_a_known_line():
    mag = np.linspace(18.0, 23.0, 11)
    table = pd.DataFrame({"source": "A", "mag_r": mag, "snr_r": 10 ** (9.0 - 0.35 * mag)})
    table.loc[3, "snr_r"] = np.nan                                       # a failed fit is skipped
    out = compare_real.snr_at_magnitude(table, 21.0)
    assert out.loc["A", "snr_r"] == pytest.approx(10 ** (9.0 - 0.35 * 21.0))
    assert out.loc["A", "slope"] == pytest.approx(-0.35)
    assert (out.loc["A", "n"], out.loc["A", "n_near"]) == (10, 3)


@pytest.mark.parametrize("dataset", MOCK_SETS)
def test_mock_stellar_masses_follow_the_observed_mass_function(demo_plan, dataset):
    """The imaged galaxies of the demo universe (every image, truth M★) have the 10th, 50th
    and 90th percentiles of log M★ of the GAMA mass function (Baldry et al. 2012) above the
    imaging cut, within 0.15 dex: the population is stellar-mass selected like the archive
    and its median is where a realistic mass function puts it."""
    from scripts.mock.population import IMAGING_LOG_MSTAR
    masses = np.array([row["stellar_mass"] for row in demo_plan.truth[dataset]])
    assert masses.min() >= IMAGING_LOG_MSTAR
    q = (0.1, 0.5, 0.9)
    expected = compare_real.smf_quantiles(IMAGING_LOG_MSTAR, q)
    np.testing.assert_allclose(np.quantile(masses, q), expected, atol=0.15)


def test_smf_quantiles_of_a_single_power_law():
    """Without the exponential cut-off (knee far above) and a single slope α, dN/dlog M ∝
    M^(α+1): the median above ``lo`` is lo + log10(2)/|α+1|."""
    smf = {"log_mstar_knee": 30.0, "phi1": 1.0, "alpha1": -1.5, "phi2": 0.0, "alpha2": -1.0}
    median = compare_real.smf_quantiles(9.0, (0.5,), smf=smf, hi=20.0)[0]
    assert median == pytest.approx(9.0 + np.log10(2.0) / 0.5, abs=1e-3)


def test_snr_by_mass_bins_from_the_imaging_cut():
    table = pd.DataFrame({"source": ["A", "A", "A", "B", "real"],
                          "stellar_mass": [9.55, 9.6, 11.9, 9.7, np.nan],
                          "snr_r": [10.0, 30.0, 500.0, 7.0, 67.0], "mag_r": [22.0, 21.0, 18.0, 22.5, 21.9]})
    out = compare_real.snr_by_mass(table, lo=9.5)
    assert out["n"].sum() == 4  # the real row has no truth
    first = out.loc[("A", out.loc["A"].index[0])]
    assert (first["n"], first["snr_r"], first["mag_r"]) == (2, 20.0, 21.5)
    assert out.loc["A"].index[-1].right == np.inf and out.loc["A", "snr_r"].iloc[-1] == 500.0


def test_mock_keeps_its_known_answer_differences(mock_medians):
    """Compact stays more compact (smaller R90 in a frame set by the half-mass radius
    floor) and its galaxies are brighter at the same S/N noise: the known answers of the
    realism tests survive the calibration."""
    assert mock_medians["MOCK_COMPACT"]["snr_r"] > mock_medians["MOCK_FIDUCIAL"]["snr_r"]
    assert mock_medians["MOCK_COMPACT"]["r90_frame"] < mock_medians["MOCK_FIDUCIAL"]["r90_frame"]


def test_detect_neighbours_counts_sources_and_those_inside_the_crop():
    rng = np.random.default_rng(1)
    image = rng.normal(0.0, 1.0, (80, 80))
    yy, xx = np.mgrid[:80, :80]
    for (x, y, amp) in ((40, 40, 50.0), (51, 40, 20.0), (10, 70, 20.0)):
        image += amp * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 1.5 ** 2))
    n, near = compare_real.detect_neighbours(image, (40.0, 40.0), radius=12.0)
    assert (n, near) == (2, 1)
    assert compare_real.detect_neighbours(rng.normal(0.0, 1.0, (80, 80)), (40.0, 40.0), 12.0)[0] <= 1


def test_compare_real_cli_prints_medians_and_writes_the_plot(tmp_path, capsys):
    from scripts.mock.__main__ import main
    plot = tmp_path / "mock_vs_real.png"
    medians = main(["--compare-real", "--size", "small", "--n", "2", "--plot", str(plot)])
    assert list(medians.columns) == ["real", *MOCK_SETS]
    assert plot.stat().st_size > 10_000
    out = capsys.readouterr().out
    assert "snr_r" in out and "MOCK_COMPACT" in out
    assert "S/N per stellar-mass bin" in out and "GAMA mass function" in out
    with pytest.raises(SystemExit, match="no such file"):
        main(["--compare-real", str(tmp_path / "missing.fits")])
