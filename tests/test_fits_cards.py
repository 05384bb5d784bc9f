"""fits_cards gives astropy's values for plain cards and refuses the rest; extract's per-image
path imports neither astropy nor pandas."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import config
from scripts.preprocessing import fits_bands, fits_cards, fits_file

ROOT = Path(__file__).resolve().parents[1]
HSC = [f"SUBARU_HSC.{b}" for b in "GRIZY"]

PLAIN = ["1", "007", "-3", "+4", "1.", ".5", "1.5E3", "-.5D+2", "1.0E+05", "1E400", "T", "F",
         "12345678901234567890", "'abc'", "'ab''c'", "'it''s'''", "''", "'   '", "'x   '",
         "'  x'", "'RA---TAN'", "'SUBARU_HSC.G'", "'/'", "' / '", "'a'' / x'", "'a'/c", "1/c",
         "T / comment", "'x&'", "'a' b'"]
NOT_PLAIN = ["1.5e3", "1 .5", "- 2", "TRUE", "(1, 2)", "", "nan", "3 4", "'AXIS.1: 2'",
             "'abc"]


def _card(keyword: str, value: str, indicator: str = "= ") -> bytes:
    return (f"{keyword:<8}" + indicator + value).encode("ascii").ljust(80)


def _same(ours, theirs) -> bool:
    if isinstance(ours, float) and math.isnan(ours):
        return isinstance(theirs, float) and math.isnan(theirs)
    return type(ours) is type(theirs) and ours == theirs


@pytest.mark.parametrize("value", PLAIN)
def test_plain_card_values_are_astropys(value):
    for padding in ("", " " * 11):
        card = _card("KEY", padding + value)
        assert _same(fits_cards.card_value(card), fits.Card.fromstring(card.decode()).value)


@pytest.mark.parametrize("value", NOT_PLAIN)
def test_other_cards_are_left_to_astropy(value):
    with pytest.raises(fits_cards.NotPlain):
        fits_cards.card_value(_card("KEY", value))


@pytest.mark.parametrize("card", [_card("CONTINUE", "'x'"), _card("COMMENT", "1"),
                                  _card("redshift", "1"), _card("A B", "1"),
                                  _card("HIERARCH", "A = 1"), _card("KEY", "1", " ="),
                                  b"KEY     = '\xe9'".ljust(80)])
def test_special_keywords_and_odd_cards_are_not_plain(card):
    with pytest.raises(fits_cards.NotPlain):
        fits_cards.card_value(card)


def test_header_values_equal_astropys_header_first_card_wins():
    cards = [_card("SIMPLE", "T"), _card("REDSHIFT", "0.1 / z"), _card("NAME", "'gal''s  '"),
             b"COMMENT a comment".ljust(80), b"HISTORY done".ljust(80), b" " * 80,
             _card("REDSHIFT", "0.2"), b"END".ljust(80), _card("AFTER", "1")]
    raw = b"".join(cards)
    values = fits_cards.header_values(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        header = fits.Header.fromstring(raw.decode())
    assert values == {"SIMPLE": True, "REDSHIFT": 0.1, "NAME": "gal's"}
    assert all(_same(v, header.get(k)) for k, v in values.items())
    with pytest.raises(fits_cards.NotPlain):  # no END card
        fits_cards.header_values(b"".join(cards[:3]))
    with pytest.raises(fits_cards.NotPlain):
        fits_cards.header_values(_card("CONTINUE", "'x'") + b"END".ljust(80))


def test_real_mock_header_values_equal_astropy_header():
    with fits_file.FitsFile(config.real_hsc_mock_path) as f:
        for index in range(len(f.names)):
            values = f.header_values(index)
            assert isinstance(values, dict)  # every card of the real mock is plain
            header = f.header(index)
            keys = [k for k in header.keys() if k not in ("COMMENT", "HISTORY", "")]
            assert sorted(values) == sorted(set(keys))
            assert all(_same(values[k], header.get(k)) for k in keys)


def test_not_plain_header_falls_back_to_astropy(tmp_path):
    header = fits.Header()
    header["LONGSTR"] = "x" * 100  # written as CONTINUE cards
    header["REDSHIFT"] = 0.25
    path = tmp_path / "long.fits"
    image = fits.ImageHDU(np.arange(16, dtype=np.float32).reshape(4, 4), header=header, name="G")
    fits.HDUList([fits.PrimaryHDU(), image]).writeto(path)
    with fits_file.FitsFile(path) as f:
        values = f.header_values(1)
        assert isinstance(values, fits.Header)
        assert values["LONGSTR"] == "x" * 100 and values.get("REDSHIFT") == 0.25
    assert fits_bands.load_bands(path, ["G"]).meta.redshift == 0.25


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
