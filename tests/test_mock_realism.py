"""The mock universe against the real TNG–HSC mock shipped in data/ (issue: mock calibration).

Both sides are measured with the extract stage's own code (scripts.mock.compare_real). The
mock's medians, over a seeded sample of the demo preset, must sit within a factor 1.5 of
the reference values below.

Reference numbers and where they come from:

* Petrosian S/N in R 67.2, R90 / frame edge 0.128, sky σ per pixel G/R/I 5.49e-4 /
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
def mock_medians(tmp_path_factory):
    table = compare_real.mock_sample("demo", n_per_set=20, seed=0,
                                     workdir=tmp_path_factory.mktemp("mock-compare"))
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


@pytest.mark.xfail(strict=True, reason="not met: the mock's median galaxy is brighter than the one "
                   "real file (a near-threshold galaxy at r = 21.9); see the mock calibration note")
@pytest.mark.parametrize("dataset", MOCK_SETS)
def test_mock_petrosian_snr_matches_the_real_file(mock_medians, dataset):
    assert within(mock_medians[dataset]["snr_r"], REAL_SNR_R), mock_medians[dataset]["snr_r"]


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
    with pytest.raises(SystemExit, match="no such file"):
        main(["--compare-real", str(tmp_path / "missing.fits")])
