"""Band reader: real TNG/HSC mock, synthetic multi-HDU files, and the bad-input battery."""
from __future__ import annotations

import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

import config
from scripts.preprocessing import fits_bands as bands
from scripts.preprocessing import fits_file
from scripts.preprocessing.fits_file import BadImageError

REAL = config.real_hsc_mock_path
HSC = [f"SUBARU_HSC.{b}" for b in "GRIZY"]

pytestmark = pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")


def _astropy_by_extname(path: Path) -> dict[str, np.ndarray]:
    """Independent read: every HDU's data keyed by its EXTNAME, straight from astropy."""
    with fits.open(path) as hdul:
        return {h.header.get("EXTNAME", ""): None if h.data is None else np.array(h.data)
                for h in hdul}


def _write(path: Path, hdus: list) -> Path:
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path


def _synthetic(tmp_path: Path, name: str = "synth.fits", **bands_data) -> Path:
    """A primary HDU without data, then one ImageHDU per keyword (EXTNAME = key)."""
    hdus = [fits.PrimaryHDU()]
    for extname, data in bands_data.items():
        hdus.append(fits.ImageHDU(data=data, name=extname))
    return _write(tmp_path / name, hdus)


# --------------------------------------------------------------------------- real file


def test_real_mock_bands_equal_astropy_and_g_is_primary():
    reference = _astropy_by_extname(REAL)
    with fits.open(REAL) as hdul:
        assert hdul[0].header["EXTNAME"] == "SUBARU_HSC.G"  # the case that needs the primary HDU
    cube = bands.read_bands(REAL, HSC)
    assert cube.shape == (88, 88, 5) and cube.dtype == np.float32
    for c, name in enumerate(HSC):
        np.testing.assert_array_equal(cube[..., c], reference[name].astype(np.float32))
    # order follows the request, matching ignores case and blanks
    swapped = bands.read_bands(REAL, [" subaru_hsc.y", "Subaru_HSC.G "])
    np.testing.assert_array_equal(swapped, cube[..., [4, 0]])
    loaded = bands.load_bands(REAL, HSC)
    assert loaded.n_repaired == (0,) * 5 and not loaded.repaired


def test_real_mock_planes_and_extnames():
    reference = _astropy_by_extname(REAL)
    planes = bands.read_band_planes(REAL, "SUBARU_HSC.I")
    np.testing.assert_array_equal(planes["image"], reference["SUBARU_HSC.I"].astype(np.float32))
    np.testing.assert_array_equal(planes["mask"], reference["SUBARU_HSC.I MASK"])
    assert planes["mask"].dtype.kind == "i"
    np.testing.assert_array_equal(planes["variance"], reference["SUBARU_HSC.I VARIANCE"])
    only_mask = bands.read_band_planes(REAL, "SUBARU_HSC.G", planes=["mask"])
    assert list(only_mask) == ["mask"]
    assert bands.list_extnames(REAL) == [k.upper() for k in reference]
    with pytest.raises(ValueError, match="unknown planes"):
        bands.read_band_planes(REAL, "SUBARU_HSC.G", planes=["psf"])


def test_real_mock_header_values_and_pixel_scale():
    header = fits.getheader(REAL, 0)
    meta = bands.read_image_meta(REAL)
    assert meta.extname == "SUBARU_HSC.G" and meta.shape == (88, 88)
    assert meta.redshift == header["REDSHIFT"]
    # two independent header routes to the pixel scale agree: FOVKPC/NAXIS1 and CDELT1 [pc]
    assert header["CTYPE1"].strip() == "pc"
    assert meta.kpc_per_pixel == pytest.approx(header["CDELT1"] / 1e3, rel=1e-9)
    # angular and physical scales are tied by KPCARC
    assert meta.arcsec_per_pixel * meta.kpc_per_arcsec == pytest.approx(meta.kpc_per_pixel,
                                                                          rel=1e-6)
    snap, sub, proj = re.match(r"shalo_(\d+)-(\d+)_v(\d+)_", REAL.name).groups()
    values = bands.read_header_values(REAL, ["SNAPNUM", "SUBHALO", "CAMERA", "NOT_A_KEY"],
                                      extname="SUBARU_HSC.R")
    assert values == {"SNAPNUM": int(snap), "SUBHALO": int(sub), "CAMERA": f"v{proj}",
                      "NOT_A_KEY": None}
    # without FOVKPC the scale falls back to CDELT1 with its unit
    stripped = header.copy()
    del stripped["FOVKPC"], stripped["FOVSIZE"]
    assert bands.meta_from_header(stripped).kpc_per_pixel == pytest.approx(meta.kpc_per_pixel)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_multi_hdu_reads_only_requested_image_hdus(tmp_path):
    rng = np.random.default_rng(1)
    alpha = rng.normal(size=(16, 12))
    beta = rng.integers(-500, 500, size=(16, 12)).astype(np.int16)
    hdus = [fits.PrimaryHDU(),
            fits.ImageHDU(alpha, name="ALPHA"),
            fits.ImageHDU(rng.integers(0, 9, size=(3, 16, 12)).astype(np.int32),
                          name="ALPHA MASK"),  # 3-D, never requested: must be ignored
            fits.ImageHDU(beta, name="BETA"),
            fits.BinTableHDU.from_columns([fits.Column("x", "E", array=np.arange(3.0))],
                                          name="CAT")]
    path = _write(tmp_path / "multi.fits", hdus)
    cube = bands.read_bands(path, ["beta", "ALPHA"])
    assert cube.shape == (16, 12, 2) and cube.dtype == np.float32
    np.testing.assert_array_equal(cube[..., 0], beta.astype(np.float32))
    np.testing.assert_array_equal(cube[..., 1], alpha.astype(np.float32))
    assert bands.list_extnames(path) == ["", "ALPHA", "ALPHA MASK", "BETA", "CAT"]
    with pytest.raises(BadImageError) as err:
        bands.read_bands(path, ["CAT"])
    assert err.value.reason == "wrong_shape" and "BinTableHDU" in err.value.detail
    with pytest.raises(BadImageError) as err:
        bands.read_bands(path, ["ALPHA", "ALPHA MASK"])
    assert err.value.reason == "wrong_shape" and "(3, 16, 12)" in err.value.detail
    with pytest.raises(ValueError, match="non-empty"):
        bands.read_bands(path, "ALPHA")


def test_tile_compressed_hdu(tmp_path):
    image = np.random.default_rng(4).normal(size=(64, 48)).astype(np.float32)
    path = _write(tmp_path / "rice.fits", [fits.PrimaryHDU(), fits.CompImageHDU(image, name="A")])
    with fits.open(path) as hdul:
        expected = np.array(hdul["A"].data)  # lossy (quantised) on write: compare to astropy
    np.testing.assert_array_equal(bands.read_bands(path, ["A"])[..., 0], expected)
    np.testing.assert_allclose(expected, image, atol=0.05)
    cut = tmp_path / "rice_cut.fits"
    cut.write_bytes(path.read_bytes()[:-2880])
    with pytest.raises(BadImageError) as err:
        bands.read_bands(cut, ["A"])
    assert err.value.reason == "truncated"


# --------------------------------------------------------------------------- bad input


def _cut(tmp_path, nbytes):
    data = REAL.read_bytes()[:nbytes]
    path = tmp_path / "cut.fits"
    path.write_bytes(data)
    return path


def _patched(tmp_path, find: bytes, new: bytes):
    raw = bytearray(REAL.read_bytes())
    at = raw.index(find)
    raw[at:at + len(new)] = new
    path = tmp_path / "patched.fits"
    path.write_bytes(bytes(raw))
    assert path.stat().st_size == REAL.stat().st_size
    return path


def _case_truncated_in_data(tmp_path):
    return _cut(tmp_path, 80 * 2880), HSC            # whole blocks, mid-way through HDU 4


def _case_truncated_odd(tmp_path):
    return _cut(tmp_path, 100_003), HSC[:1]         # G itself is complete, file is not


def _case_truncated_header(tmp_path):
    return _cut(tmp_path, 1000), HSC[:1]


def _case_truncated_magic(tmp_path):
    return _cut(tmp_path, 4), HSC[:1]


def _case_not_fits(tmp_path):
    path = tmp_path / "readme.fits"
    path.write_text("this is a text file that someone named .fits\n" * 80)
    return path, HSC[:1]


def _case_not_fits_binary(tmp_path):
    path = tmp_path / "image.fits"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20)
    return path, HSC[:1]


def _case_empty(tmp_path):
    path = tmp_path / "empty.fits"
    path.touch()
    return path, HSC[:1]


def _case_not_found(tmp_path):
    return tmp_path / "does_not_exist.fits", HSC[:1]


def _case_directory(tmp_path):
    path = tmp_path / "galaxy.fits"
    path.mkdir()
    return path, HSC[:1]


def _case_dangling_symlink(tmp_path):
    path = tmp_path / "galaxy.fits"
    path.symlink_to(tmp_path / "moved_away.fits")
    return path, HSC[:1]


def _case_missing_band(tmp_path):
    return REAL, ["SUBARU_HSC.G", "SUBARU_HSC.U"]


def _case_duplicate_band(tmp_path):
    a = np.arange(16.0).reshape(4, 4)
    return _synthetic(tmp_path, A=a, B=a + 1, **{"a ": a + 2}), ["A"]


def _case_all_nan(tmp_path):
    return _synthetic(tmp_path, A=np.arange(64.0).reshape(8, 8),
                      B=np.full((8, 8), np.nan)), ["A", "B"]


def _case_too_many_nan(tmp_path):
    b = np.arange(64.0).reshape(8, 8)
    b[:6] = np.nan
    return _synthetic(tmp_path, B=b), ["B"]


def _case_constant(tmp_path):
    return _synthetic(tmp_path, A=np.arange(64.0).reshape(8, 8), B=np.zeros((8, 8))), ["A", "B"]


def _case_wrong_shape_3d(tmp_path):
    return _synthetic(tmp_path, A=np.random.default_rng(0).normal(size=(2, 8, 8))), ["A"]


def _case_wrong_shape_mismatch(tmp_path):
    rng = np.random.default_rng(0)
    return _synthetic(tmp_path, A=rng.normal(size=(8, 8)), B=rng.normal(size=(8, 9))), ["A", "B"]


def _case_no_data(tmp_path):
    return _write(tmp_path / "nodata.fits", [fits.PrimaryHDU(), fits.ImageHDU(name="A")]), ["A"]


def _case_corrupt_header_value(tmp_path):
    return _patched(tmp_path, b"NAXIS1  =", b"NAXIS1  = 'eighty-eight'".ljust(80)), HSC[:1]


def _case_corrupt_header_bytes(tmp_path):
    return _patched(tmp_path, b"BITPIX  =", bytes(range(128, 208)) * 3), HSC[:1]


def _case_corrupt_bscale(tmp_path):
    # astropy reads BSCALE when it opens the HDU: an unparsable value breaks the open
    return _patched(tmp_path, b"ORIGIN  =", b"BSCALE  = abc".ljust(80)), HSC[:1]


def _case_header_without_end(tmp_path):
    # With END blanked astropy reads the next header's cards into the primary header and
    # the G data from the wrong offset: garbage far beyond any float32 value.
    return _patched(tmp_path, b"END" + b" " * 77, b" " * 80), HSC[:1]


BAD_CASES = {
    "truncated_in_data": ("truncated", _case_truncated_in_data),
    "truncated_odd_size": ("truncated", _case_truncated_odd),
    "truncated_header": ("truncated", _case_truncated_header),
    "truncated_magic": ("truncated", _case_truncated_magic),
    "not_fits_text": ("not_fits", _case_not_fits),
    "not_fits_binary": ("not_fits", _case_not_fits_binary),
    "zero_bytes": ("empty_file", _case_empty),
    "not_found": ("not_found", _case_not_found),
    "directory": ("not_a_regular_file", _case_directory),
    "dangling_symlink": ("not_a_regular_file", _case_dangling_symlink),
    "missing_band": ("missing_band", _case_missing_band),
    "duplicate_band": ("duplicate_band", _case_duplicate_band),
    "all_nan": ("all_nan", _case_all_nan),
    "too_many_nan": ("too_many_nan", _case_too_many_nan),
    "constant": ("constant", _case_constant),
    "wrong_shape_3d": ("wrong_shape", _case_wrong_shape_3d),
    "wrong_shape_mismatch": ("wrong_shape", _case_wrong_shape_mismatch),
    "no_data": ("wrong_shape", _case_no_data),
    "corrupt_header_value": ("unreadable_header", _case_corrupt_header_value),
    "corrupt_header_bytes": ("unreadable_header", _case_corrupt_header_bytes),
    "corrupt_bscale": ("unreadable_header", _case_corrupt_bscale),
    "header_without_end": ("unreadable_data", _case_header_without_end),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_input_raises_with_reason_and_file(tmp_path, case):
    reason, make = BAD_CASES[case]
    path, extnames = make(tmp_path)
    with pytest.raises(BadImageError) as err:
        bands.read_bands(path, extnames)
    assert err.value.reason == reason, err.value
    assert err.value.path == str(path)
    assert str(path) in str(err.value) and reason in str(err.value)
    assert err.value.reason in BadImageError.REASONS


def test_missing_band_names_the_band_and_what_is_present():
    with pytest.raises(BadImageError) as err:
        bands.read_bands(REAL, ["SUBARU_HSC.G", "SUBARU_HSC.U"])
    detail = err.value.detail
    assert "SUBARU_HSC.U" in detail
    for present in HSC + ["SUBARU_HSC.G MASK"]:
        assert present in detail


def test_expected_shape_is_enforced(tmp_path):
    path = _synthetic(tmp_path, A=np.arange(64.0).reshape(8, 8))
    assert bands.read_bands(path, ["A"], shape=(8, 8)).shape == (8, 8, 1)
    with pytest.raises(BadImageError) as err:
        bands.read_bands(path, ["A"], shape=(16, 16))
    assert err.value.reason == "wrong_shape" and "(16, 16)" in err.value.detail


def test_bad_image_error_survives_pickling():
    err = BadImageError("/data/x.fits", "missing_band", "no HDU with EXTNAME 'Q'")
    back = pickle.loads(pickle.dumps(err))
    assert (back.path, back.reason, back.detail, str(back)) == (err.path, err.reason,
                                                                err.detail, str(err))
    with pytest.raises(ValueError, match="unknown BadImageError reason"):
        BadImageError("/data/x.fits", "cosmic_rays")


# --------------------------------------------------------------------------- NaN repair


def test_isolated_nonfinite_pixels_take_the_local_median(tmp_path):
    rng = np.random.default_rng(3)
    good = rng.normal(size=(12, 12))
    band = good.copy()
    holes = [(0, 0), (5, 7), (11, 4)]
    band[holes[0]] = np.nan
    band[holes[1]] = np.inf
    band[holes[2]] = -np.inf
    path = _synthetic(tmp_path, A=good, B=band)
    loaded = bands.load_bands(path, ["A", "B"])
    assert loaded.n_repaired == (0, 3) and loaded.repaired
    out = loaded.data[..., 1]
    padded = np.pad(np.where(np.isfinite(band), band, np.nan), 1, constant_values=np.nan)
    for (y, x) in holes:
        expected = np.nanmedian(padded[y:y + 3, x:x + 3])  # 3×3 window around (y, x)
        assert out[y, x] == pytest.approx(expected, rel=1e-6)
    untouched = np.ones(band.shape, bool)
    for hole in holes:
        untouched[hole] = False
    np.testing.assert_array_equal(out[untouched], band[untouched].astype(np.float32))


def test_nan_block_is_filled_from_its_border_and_other_policies(tmp_path):
    yy, xx = np.mgrid[:20, :20]
    band = (yy + 2.0 * xx).astype(np.float64)
    band[6:11, 8:13] = np.nan  # 5×5 hole: inner pixels have no finite neighbour at first
    path = _synthetic(tmp_path, B=band)
    filled = bands.load_bands(path, ["B"])
    assert filled.n_repaired == (25,)
    hole = filled.data[6:11, 8:13, 0]
    assert np.isfinite(hole).all()
    border = np.concatenate([band[5, 7:14], band[11, 7:14], band[6:11, 7], band[6:11, 13]])
    assert border.min() <= hole.min() and hole.max() <= border.max()
    zero = bands.read_bands(path, ["B"], nan_fill="zero")
    assert (zero[6:11, 8:13] == 0).all()
    with pytest.raises(BadImageError) as err:
        bands.read_bands(path, ["B"], nan_fill="raise")
    assert err.value.reason == "has_nan" and "25" in err.value.detail
    with pytest.raises(BadImageError) as err:
        bands.read_bands(path, ["B"], max_nan_fraction=0.05)  # 25/400 = 6.25 % > 5 %
    assert err.value.reason == "too_many_nan"
    with pytest.raises(ValueError, match="nan_fill"):
        bands.read_bands(path, ["B"], nan_fill="mean")


def test_load_bands_returns_header_meta_of_the_first_band():
    """One open gives pixels and pixel scales (extract reads each file once)."""
    from scripts.preprocessing.fits_bands import load_bands, read_image_meta

    real = REAL
    bands = load_bands(real, ["SUBARU_HSC.G", "SUBARU_HSC.I"])
    assert bands.meta == read_image_meta(real, "SUBARU_HSC.G")
    assert bands.meta.kpc_per_pixel > 0 and bands.meta.redshift > 0.19


# --------------------------------------------------------------------------- fitsio reader
# fitsio locates HDUs and reads image data; files it cannot read (or not to their end) go
# through astropy. These tests pin the fitsio path to astropy.


def _reader(path: Path) -> str:
    """Which reader handles ``path``: '_FitsioFits' or '_AstropyFits' (fallback)."""
    with fits_file.FitsFile(path) as f:
        return type(f).__name__


def _raw_image_file(path: Path, data: np.ndarray, bitpix: int, extname: str,
                    **keys) -> Path:
    """A one-HDU file written byte by byte (not by astropy's writer): header + raw data."""
    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = bitpix
    header["NAXIS"] = data.ndim
    for axis, length in enumerate(reversed(data.shape), start=1):
        header[f"NAXIS{axis}"] = length
    header["EXTNAME"] = extname
    for key, value in keys.items():
        header[key] = value
    body = header.tostring().encode("ascii") + data.astype(data.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(body + b"\0" * (-len(body) % FITS_BLOCK))
    return path


FITS_BLOCK = fits_file.FITS_BLOCK


def test_fitsio_locates_every_hdu_like_astropy(tmp_path):
    rng = np.random.default_rng(7)
    heap = fits.BinTableHDU.from_columns(  # variable-length column: PCOUNT > 0 (a heap)
        [fits.Column("v", "PJ()", array=[np.arange(n) for n in (3, 70, 500)])], name="HEAP")
    mixed = _write(tmp_path / "mixed.fits", [
        fits.PrimaryHDU(), heap, fits.ImageHDU(rng.normal(size=(5, 7)), name="Img"),
        fits.TableHDU.from_columns([fits.Column(name="t", format="E12.4",
                                                array=np.arange(4.0))], name="ASCII"),
        fits.ImageHDU(rng.integers(0, 9, size=(3, 4, 5)).astype(np.int16)),
        fits.ImageHDU(name="EMPTY")])
    types = {"BINARY_TBL": "BinTableHDU", "ASCII_TBL": "TableHDU", "IMAGE_HDU": "ImageHDU"}
    for path in (REAL, mixed):
        with fits_file.FitsFile(path) as f:
            layout = [(o["header_start"], o["data_start"], f._unpadded_end(i) - o["data_start"],
                       "PrimaryHDU" if i == 0 else types[h.get_exttype()], name)
                      for i, (o, h, name) in enumerate(zip(f.offsets, f.hdus, f.names))]
        with fits.open(path) as hdul:
            expected = [(h.fileinfo()["hdrLoc"], h.fileinfo()["datLoc"], h.size,
                         type(h).__name__, str(h.header.get("EXTNAME", "")).upper())
                        for h in hdul]
        assert layout == expected
        assert _reader(path) == "_FitsioFits"
    assert heap.header["PCOUNT"] > 0


SCALINGS = {  # (BITPIX, stored dtype, header keys): each astropy rule for scaled data
    "int16_scaled_to_float32": (16, np.int16, {"BSCALE": 2.5, "BZERO": 10}),
    "int32_scaled_to_float64_with_blank": (32, np.int32, {"BSCALE": 0.1, "BZERO": 0,
                                                          "BLANK": 7}),
    "int16_blank_unscaled": (16, np.int16, {"BLANK": 7}),
    "int32_blank_zero_not_applied": (32, np.int32, {"BSCALE": 1, "BZERO": 0, "BLANK": 0}),
    "uint16": (16, np.int16, {"BSCALE": 1, "BZERO": 32768}),
    "uint32": (32, np.int32, {"BSCALE": 1, "BZERO": 2 ** 31}),
    "uint64": (64, np.int64, {"BZERO": 2 ** 63}),
    "int8": (8, np.uint8, {"BZERO": -128}),
    "uint8_scaled": (8, np.uint8, {"BSCALE": 3, "BZERO": -1.5}),
    "float32_scaled": (-32, np.float32, {"BSCALE": 2.0, "BZERO": 1.5}),
    "float64_blank_ignored": (-64, np.float64, {"BLANK": 7}),
}


@pytest.mark.parametrize("case", sorted(SCALINGS))
def test_scaled_images_equal_astropy(tmp_path, case):
    bitpix, dtype, keys = SCALINGS[case]
    rng = np.random.default_rng(11)
    if np.issubdtype(dtype, np.integer):  # spread over half the type's range
        info = np.iinfo(dtype)
        raw = rng.integers(info.min // 2, info.max // 2, size=(9, 6), endpoint=True).astype(dtype)
    else:
        raw = (100 * rng.normal(size=(9, 6))).astype(dtype)
    raw.flat[:3] = keys.get("BLANK", 7)  # pixels equal to BLANK, where one is set
    path = _raw_image_file(tmp_path / f"{case}.fits", raw, bitpix, "S MASK", **keys)
    with fits.open(path) as hdul:
        expected = np.array(hdul[0].data)
    assert _reader(path) == "_FitsioFits"
    stored = bands.read_band_planes(path, "S", planes=["mask"])["mask"]  # as stored
    assert stored.dtype == expected.dtype.newbyteorder("=")
    np.testing.assert_array_equal(stored, expected)
    loaded = bands.load_bands(path, ["S MASK"], nan_fill="zero")
    n_nan = int(np.isnan(expected).sum())
    assert loaded.n_repaired == (n_nan,)
    if case in ("int32_scaled_to_float64_with_blank", "int16_blank_unscaled"):
        assert n_nan == 3
    np.testing.assert_array_equal(loaded.data[..., 0],
                                  np.nan_to_num(expected, nan=0.0).astype(np.float32))


def test_image_after_bintable_and_ascii_table(tmp_path):
    rng = np.random.default_rng(2)
    image = rng.normal(size=(11, 13)).astype(np.float32)
    path = _write(tmp_path / "after_table.fits", [
        fits.PrimaryHDU(),
        fits.BinTableHDU.from_columns([fits.Column("v", "PE()", array=[np.arange(n, dtype=float)
                                                                       for n in (5, 90)]),
                                       fits.Column("x", "D", array=[1.0, 2.0])], name="CAT"),
        fits.ImageHDU(image, name="A"),
        fits.TableHDU.from_columns([fits.Column(name="t", format="E12.4",
                                                array=np.arange(4.0))], name="ASC"),
        fits.ImageHDU(image * 2, name="B")])
    assert _reader(path) == "_FitsioFits"
    reference = _astropy_by_extname(path)
    cube = bands.read_bands(path, ["B", "a"])
    np.testing.assert_array_equal(cube[..., 0], reference["B"])
    np.testing.assert_array_equal(cube[..., 1], reference["A"])
    for table, kind in (("CAT", "BinTableHDU"), ("ASC", "TableHDU")):
        with pytest.raises(BadImageError) as err:
            bands.read_bands(path, [table])
        assert err.value.reason == "wrong_shape" and kind in err.value.detail


def test_compressed_image_equals_astropy(tmp_path):
    """cfitsio decompresses tile-compressed HDUs itself; pixels and meta equal astropy's."""
    rng = np.random.default_rng(4)
    plain = rng.normal(size=(20, 16))
    rice = fits.CompImageHDU(rng.normal(size=(20, 16)).astype(np.float32), name="RICE")
    rice.header["FOVKPC"] = 32.0
    path = _write(tmp_path / "mixed_rice.fits", [
        fits.PrimaryHDU(), fits.ImageHDU(plain, name="PLAIN"), rice])
    assert _reader(path) == "_FitsioFits"
    meta = bands.read_image_meta(path, "RICE")  # the image's header, not the BINTABLE's
    assert (meta.shape, meta.kpc_per_pixel) == ((20, 16), 2.0)
    reference = _astropy_by_extname(path)
    cube = bands.read_bands(path, ["PLAIN", "RICE"])
    np.testing.assert_array_equal(cube[..., 0], reference["PLAIN"].astype(np.float32))
    np.testing.assert_array_equal(cube[..., 1], reference["RICE"])
    assert bands.list_extnames(path) == ["", "PLAIN", "RICE"]


def test_files_fitsio_cannot_read_to_the_end_go_through_astropy(tmp_path):
    """Bytes after the last HDU that fitsio finds (it stops there without a word) and files
    cfitsio refuses are read by astropy, which decides what they mean."""
    assert _reader(REAL) == "_FitsioFits"
    tail = tmp_path / "tail.fits"
    tail.write_bytes(REAL.read_bytes() + b"garbage" * 10)
    assert _reader(tail) == "_AstropyFits"
    np.testing.assert_array_equal(bands.read_bands(tail, HSC), bands.read_bands(REAL, HSC))
    end_blanked = _case_header_without_end(tmp_path)[0]  # cfitsio fails to open it
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _reader(end_blanked) == "_AstropyFits"


@pytest.mark.parametrize("tail", [b"garbage" * 10, b"\0" * FITS_BLOCK,
                                  bytes(range(256)) * 12], ids=["text", "zero_block", "binary"])
def test_trailing_garbage_is_ignored_like_astropy(tmp_path, tail):
    path = tmp_path / "tail.fits"
    path.write_bytes(REAL.read_bytes() + tail)
    reference = _astropy_by_extname(REAL)
    cube = bands.read_bands(path, HSC[:3])
    for c, name in enumerate(HSC[:3]):
        np.testing.assert_array_equal(cube[..., c], reference[name].astype(np.float32))
    assert bands.list_extnames(path) == bands.list_extnames(REAL)
    # the extra bytes may be a band's HDU cut short: a missing band is reported as truncation
    with pytest.raises(BadImageError) as err:
        bands.read_bands(path, ["SUBARU_HSC.U"])
    assert err.value.reason == "truncated"


def test_header_cut_short_after_complete_hdus(tmp_path):
    """Cut inside band R's header: G is complete and readable, R is reported truncated."""
    raw = REAL.read_bytes()
    with fits.open(REAL) as hdul:
        r_header = hdul["SUBARU_HSC.R"].fileinfo()["hdrLoc"]
    for cut in (r_header + 400, r_header + 1861):
        path = tmp_path / f"cut{cut}.fits"
        path.write_bytes(raw[:cut])
        g = bands.read_bands(path, ["SUBARU_HSC.G"])
        np.testing.assert_array_equal(g, bands.read_bands(REAL, ["SUBARU_HSC.G"]))
        with pytest.raises(BadImageError) as err:
            bands.read_bands(path, ["SUBARU_HSC.R"])
        assert err.value.reason == "truncated" and "SUBARU_HSC.R" in err.value.detail
    # cut on a block boundary inside the header: astropy finds no END card
    path = tmp_path / "cut_block.fits"
    path.write_bytes(raw[:r_header + FITS_BLOCK])
    with pytest.raises(BadImageError) as err:
        bands.read_bands(path, ["SUBARU_HSC.G"])
    assert err.value.reason == "unreadable_header" and "END" in err.value.detail


def test_data_cut_short_in_a_requested_band_and_after_it(tmp_path):
    raw = REAL.read_bytes()
    with fits.open(REAL) as hdul:
        r_data = hdul["SUBARU_HSC.R"].fileinfo()["datLoc"]
    for cut, where in ((r_data + 1000, "inside R"), (len(raw) - 2 * FITS_BLOCK, "in Y VARIANCE")):
        path = tmp_path / "cut_data.fits"
        path.write_bytes(raw[:cut])
        with pytest.raises(BadImageError) as err:
            bands.read_bands(path, ["SUBARU_HSC.G"])
        assert err.value.reason == "truncated", where
        assert "needs" in err.value.detail and str(cut) in err.value.detail


def test_missing_end_card_in_an_extension_reads_what_astropy_reads(tmp_path):
    """END blanked in G MASK's header: astropy reads on to the next END; so do we."""
    raw = bytearray(REAL.read_bytes())
    with fits.open(REAL) as hdul:
        mask_header = hdul["SUBARU_HSC.G MASK"].fileinfo()["hdrLoc"]
    at = raw.index(b"END" + b" " * 77, mask_header)
    raw[at:at + 80] = b" " * 80
    path = tmp_path / "no_end.fits"
    path.write_bytes(bytes(raw))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with fits.open(path) as hdul:
            names = [str(h.header.get("EXTNAME", "")).upper() for h in hdul]
            g = np.array(hdul["SUBARU_HSC.G"].data)
    assert bands.list_extnames(path) == names and "SUBARU_HSC.G VARIANCE" not in names
    np.testing.assert_array_equal(bands.read_bands(path, ["SUBARU_HSC.G"])[..., 0],
                                  g.astype(np.float32))
    with pytest.raises(BadImageError) as err:
        bands.read_bands(path, ["SUBARU_HSC.G VARIANCE"])
    assert err.value.reason == "missing_band"


def test_header_values_equal_astropy_including_extend(tmp_path):
    """Header values come from astropy's own parser; EXTEND is added on open as astropy does."""
    rng = np.random.default_rng(8)
    primary = fits.PrimaryHDU(rng.normal(size=(6, 6)))
    primary.header["EXTNAME"] = "P"
    primary.header["REDSHIFT"] = 0.0815
    primary.header["FOVKPC"] = 30.0
    path = _write(tmp_path / "no_extend.fits", [primary, fits.ImageHDU(rng.normal(size=(6, 6)),
                                                                        name="A")])
    raw = bytearray(path.read_bytes())  # astropy's writer adds EXTEND: blank it on disk
    at = raw.index(b"EXTEND  =")
    raw[at:at + 80] = b"COMMENT EXTEND removed".ljust(80)
    path.write_bytes(bytes(raw))
    assert "EXTEND" not in fits.Header.fromstring(bytes(raw[:FITS_BLOCK]).decode("ascii"))
    keys = ["EXTEND", "NAXIS", "REDSHIFT", "FOVKPC", "EXTNAME", "NOT_A_KEY"]
    with fits.open(path) as hdul:
        expected = {k: hdul[0].header.get(k) for k in keys}
    assert _reader(path) == "_FitsioFits"
    assert bands.read_header_values(path, keys) == expected and expected["EXTEND"] is True
    meta = bands.read_image_meta(path)
    assert (meta.extname, meta.redshift, meta.kpc_per_pixel) == ("P", 0.0815, 5.0)


def test_trailing_block_starting_with_end_is_a_reason_not_a_crash(tmp_path):
    """astropy raises AttributeError on such a file; the reader turns it into a reason."""
    from scripts.preprocessing.fits_bands import load_bands
    from scripts.preprocessing.fits_file import BadImageError

    path = tmp_path / "trailing_end.fits"
    data = REAL.read_bytes()
    path.write_bytes(data + b"END".ljust(2880, b" "))
    try:
        bands = load_bands(path, ["SUBARU_HSC.G", "SUBARU_HSC.R"])
    except BadImageError as err:
        assert err.reason in BadImageError.REASONS
    else:
        assert bands.data.shape[-1] == 2


def test_variance_planes_and_varsc_come_with_the_bands_on_request(tmp_path):
    """load_bands(variance=True) reads each band's VARIANCE plane and VARSC in the same
    open (the sky noise that pads crops); a band without one gets None / NaN, no error."""
    loaded = bands.load_bands(REAL, HSC, variance=True)
    raw = _astropy_by_extname(REAL)
    with fits.open(REAL) as hdul:
        varsc = [hdul[name].header["VARSC"] for name in HSC]
    for name, plane, scale, want in zip(HSC, loaded.variances, loaded.var_scales, varsc):
        np.testing.assert_array_equal(plane, raw[f"{name} VARIANCE"])
        assert scale == want
    assert bands.load_bands(REAL, HSC).variances == ()
    rng = np.random.default_rng(0)
    path = _synthetic(tmp_path, A=rng.normal(size=(8, 8)), B=rng.normal(size=(8, 8)),
                      **{"B VARIANCE": np.full((8, 8), 4.0, np.float32)})
    partial = bands.load_bands(path, ["A", "B"], variance=True)
    assert partial.variances[0] is None and np.isnan(partial.var_scales[0])
    assert (partial.variances[1] == 4.0).all() and np.isnan(partial.var_scales[1])
