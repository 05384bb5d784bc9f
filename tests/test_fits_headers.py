"""Header values read through fitsio (extract's per-image path) equal astropy's, and that
path imports neither astropy nor pandas, so an extract worker starts cheaply."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits

import config
from scripts.preprocessing import fits_bands, fits_file

ROOT = Path(__file__).resolve().parents[1]
HSC = [f"SUBARU_HSC.{b}" for b in "GRIZY"]


def _same(ours, theirs) -> bool:
    if isinstance(ours, float) and math.isnan(ours):
        return isinstance(theirs, float) and math.isnan(theirs)
    if isinstance(ours, str) and isinstance(theirs, str):
        return ours.strip() == theirs.strip()
    return type(ours) is type(theirs) and ours == theirs


def test_real_mock_header_values_equal_astropy_header():
    with fits_file.FitsFile(config.real_hsc_mock_path) as f:
        for index in range(len(f.names)):
            values = f.header_values(index)
            header = f.header(index) if index else fits.getheader(config.real_hsc_mock_path, 0)
            keys = [k for k in header.keys() if k not in ("COMMENT", "HISTORY", "")]
            assert keys
            for k in keys:
                assert _same(values.get(k), header.get(k)), (index, k, values.get(k), header.get(k))
                assert _same(f.header_value(index, k), header.get(k)), (index, k)
            assert values.get("NOT_A_KEY") is None and f.header_value(index, "NOT_A_KEY") is None


def test_long_string_and_meta_read_through_fitsio(tmp_path):
    header = fits.Header()
    header["LONGSTR"] = "x" * 100  # written as CONTINUE cards
    header["REDSHIFT"] = 0.25
    header["FOVKPC"] = 60.0
    path = tmp_path / "long.fits"
    image = fits.ImageHDU(np.arange(16, dtype=np.float32).reshape(4, 4), header=header, name="G")
    fits.HDUList([fits.PrimaryHDU(), image]).writeto(path)
    with fits_file.FitsFile(path) as f:
        values = f.header_values(1)
        assert values.get("LONGSTR") == "x" * 100 and values.get("REDSHIFT") == 0.25
    meta = fits_bands.load_bands(path, ["G"]).meta
    assert meta.redshift == 0.25 and meta.kpc_per_pixel == 15.0


def test_per_image_path_imports_neither_astropy_nor_pandas():
    """What an extract worker imports and runs for one image of the extensions layout."""
    code = ("import json, sys; from scripts.preprocessing.image_preprocessing import process_image; "
            f"r = process_image({str(config.real_hsc_mock_path)!r}, {tuple(HSC[:3])!r}, "
            "('G', 'R', 'I'), {'name': 'petrosian', 'petro_radius_factor': 2.0, "
            "'reference_band': 1}, 32, {}, pad_seed=1); "
            "print(json.dumps([r.reason, r.image.shape, [m for m in ('astropy', 'pandas', 'scipy') "
            "if m in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    reason, shape, imported = json.loads(out.splitlines()[-1])
    assert (reason, shape) == ("", [32, 32, 3])
    assert imported == []
