"""Extract on observed-cut-out layouts (issue #18): one HDU per band (extensions), one file
per band (band_files), a (bands, H, W) cube (cube); join by id or by sky position.

The sets are written here by :mod:`scripts.mock.observed` (small, seconds), then damaged
file by file to see every skip reason in the report."""
from __future__ import annotations

import copy
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits

import config
from scripts.mock import observed
from scripts.params import ParamsError, parse_params
from scripts.preprocessing import extract
from scripts.preprocessing.chunk_cache import ChunkCache
from scripts.preprocessing.fits_file import BadImageError
from scripts.preprocessing.fits_layouts import load_band_files, load_cube
from tests.conftest import ROOT, demo_raw_params, stage_env, write_params

NAME = "OBS"
BANDS = ["G", "R", "I"]


def obs_params(layout: str, match: str = "id", **extract_overrides) -> dict:
    """Demo params with one more dataset, OBS (the only one loaded), in ``layout``."""
    raw = copy.deepcopy(demo_raw_params())
    ex = raw["extract"]
    n = len(ex["DATASETS"])
    entry = {"DATASETS": NAME, "EXTRACTORS": "survey", "SIMULATIONS": None, "SNAPSHOTS": None,
             "FIELDS": ["photoz"], "LOAD": True, "FRACTION": 1.0, "NUM_PROJECTIONS": 1,
             "FILTERS": BANDS, "CATALOGUES": "catalogue.csv", "CROPPERS": "petrosian"}
    for key, value in entry.items():
        ex[key] = list(ex[key]) + [value]
    ex["LOAD"] = [False] * n + [True]
    ex["FILE_LAYOUTS"] = [None] * n + [layout]
    ex["CATALOGUE_MATCH"] = [None] * n + [match]
    ex["FILE_PATTERNS"] = [None] * n + [observed.PATTERNS[(layout, match)]]
    ex.update(IMAGE_SIZE=16, NUM_WORKERS=1, SIZE_CHUNKS=3)
    for key, value in extract_overrides.items():
        if isinstance(value, PerDataset):
            value = (list(ex[key][:n]) if isinstance(ex.get(key), list) else [None] * n) + [value.value]
        ex[key] = value
    return raw


class PerDataset:
    """An override given for OBS only (null for the demo datasets)."""

    def __init__(self, value):
        self.value = value


def make_set(tmp_path: Path, layout: str, match: str = "id", **kwargs) -> tuple[Path, pd.DataFrame]:
    raw_root = tmp_path / "raw"
    truth = observed.write_observed_set(raw_root / NAME, layout, match, **kwargs)
    return raw_root, truth


def run(raw: dict, raw_root: Path, out: Path) -> dict:
    params = parse_params(raw)
    return extract.run(params.extract, raw_root, raw_root / "TNG", out,
                       config.snapshot_redshifts_path)[NAME]


def outputs(out: Path) -> tuple[pd.DataFrame, np.ndarray]:
    table = pd.read_parquet(out / NAME / "objects.parquet")
    with h5py.File(out / NAME / "images.h5") as f:
        return table, f["images"][:]


# --------------------------------------------------------------------------- readers

def test_cube_reader_orders_planes_by_header_or_params(tmp_path):
    cube = np.stack([np.arange(64.0).reshape(8, 8) * (b + 1) for b in range(3)])
    observed.write_cube(tmp_path / "c.fits", ["g", "r", "z"], cube, [])
    out = load_cube(tmp_path / "c.fits", ["Z", "G"])
    np.testing.assert_array_equal(out.data[..., 0], cube[2])
    np.testing.assert_array_equal(out.data[..., 1], cube[0])
    # CUBE_BANDS wins over the header, and a header without band keys needs it
    observed.write_cube(tmp_path / "n.fits", None, cube, [])
    out = load_cube(tmp_path / "n.fits", ["R"], cube_bands=["I", "R", "G"])
    np.testing.assert_array_equal(out.data[..., 0], cube[1])
    with pytest.raises(BadImageError) as err:
        load_cube(tmp_path / "n.fits", ["R"])
    assert err.value.reason == "band_order_unknown" and "CUBE_BANDS" in err.value.detail
    with pytest.raises(BadImageError) as err:
        load_cube(tmp_path / "c.fits", ["G"], cube_bands=["G", "R", "I", "Z"])
    assert err.value.reason == "band_count"
    assert "3 planes" in err.value.detail and "4 bands" in err.value.detail
    with pytest.raises(BadImageError) as err:
        load_cube(tmp_path / "c.fits", ["I"])
    assert err.value.reason == "missing_band" and "'z'" in err.value.detail


def test_band_files_reader_rejects_mismatched_bands(tmp_path):
    img = np.random.default_rng(0).normal(size=(3, 10, 10))
    cards = observed.wcs_cards(150, 2, 10)
    for b, band in enumerate("GRI"):
        observed.write_band_file(tmp_path / f"{band}.fits", img[b], np.zeros((10, 10)),
                                 np.ones((10, 10)), cards)
    paths = [tmp_path / f"{b}.fits" for b in "GRI"]
    out = load_band_files(paths, BANDS, ["IMAGE"] * 3, variance=True)
    np.testing.assert_allclose(out.data, np.moveaxis(img, 0, -1).astype(np.float32))
    assert all(v is not None for v in out.variances)
    assert out.meta.arcsec_per_pixel == pytest.approx(observed.PIXEL_SCALE)
    with pytest.raises(BadImageError) as err:
        load_band_files([paths[0], None, paths[2]], BANDS, ["IMAGE"] * 3, name="obj")
    assert err.value.reason == "missing_band" and "['R']" in err.value.detail
    observed.write_band_file(tmp_path / "R.fits", img[1][:8], np.zeros((8, 10)), np.ones((8, 10)), cards)
    with pytest.raises(BadImageError) as err:
        load_band_files(paths, BANDS, ["IMAGE"] * 3)
    assert err.value.reason == "wrong_shape" and "R.fits" in err.value.detail
    observed.write_band_file(tmp_path / "R.fits", img[1], np.zeros((10, 10)), np.ones((10, 10)),
                             observed.wcs_cards(150, 2, 10, pixel_scale=0.2))
    with pytest.raises(BadImageError) as err:
        load_band_files(paths, BANDS, ["IMAGE"] * 3)
    assert err.value.reason == "pixel_scale_mismatch" and "0.2" in err.value.detail


def test_params_check_layout_keys():
    with pytest.raises(ParamsError, match="filter"):
        parse_params(obs_params("band_files", FILE_PATTERNS=PerDataset(r"^(?P<object_id>\d+).*\.fits$")))
    with pytest.raises(ParamsError, match="object_id"):
        parse_params(obs_params("cube", "id", FILE_PATTERNS=PerDataset(r"^cutout_.*\.fits$")))
    with pytest.raises(ParamsError, match="CUBE_BANDS"):
        parse_params(obs_params("band_files", CUBE_BANDS=PerDataset(["g", "r", "i"])))
    spec = parse_params(obs_params("band_files")).extract.dataset(NAME)
    assert spec.band_extnames == {b: "IMAGE" for b in BANDS}


# --------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("layout", ["band_files", "cube"])
def test_layout_gives_the_images_of_the_extensions_layout(tmp_path, layout):
    """The same galaxies stored three ways give the same objects, fields and pixels."""
    results = {}
    for kind in ("extensions", layout):
        raw_root, truth = make_set(tmp_path / kind, kind, "id", n=7)
        report = run(obs_params(kind, CROPPERS=PerDataset("none")), raw_root, tmp_path / kind / "out")
        assert report["kept_images"] == 7 and report["skipped_files"] == []
        assert report["file_layout"] == kind
        results[kind] = outputs(tmp_path / kind / "out")
    (t1, i1), (t2, i2) = results["extensions"], results[layout]
    np.testing.assert_array_equal(t1["object_id"], t2["object_id"])
    np.testing.assert_allclose(t1["photoz"], t2["photoz"])
    np.testing.assert_allclose(i1, i2, rtol=1e-6, atol=1e-7)


def damage(images: Path, layout: str, truth: pd.DataFrame) -> dict[str, str]:
    """Break one object per reason; returns {listed file: reason}."""
    files = list(truth["file"])
    band_file = (lambda name, band: images / name.replace("-HSC-G-", f"-HSC-{band}-")) \
        if layout == "band_files" else (lambda name, band: images / name)
    bad = {}
    # truncated, not FITS, empty (the R file of band_files objects, the file itself else)
    data = band_file(files[0], "R").read_bytes()
    band_file(files[0], "R").write_bytes(data[: len(data) // 2 + 100])
    bad[files[0]] = "truncated"
    band_file(files[1], "R").write_text("not a FITS file\n" * 40)
    bad[files[1]] = "not_fits"
    band_file(files[2], "R").write_bytes(b"")
    bad[files[2]] = "empty_file"

    def rewrite(name, band, fn):
        path = band_file(name, band)
        with fits.open(path) as hdul:
            index = 1 if layout == "band_files" else 0
            hdul[index].data = fn(hdul[index].data)
            hdul.writeto(path, overwrite=True)

    rewrite(files[3], "R", lambda d: np.full_like(d, np.nan))
    bad[files[3]] = "all_nan"
    rewrite(files[4], "R", lambda d: np.full_like(d, 1.0))
    bad[files[4]] = "constant"
    if layout == "band_files":
        band_file(files[5], "I").unlink()
        bad[files[5]] = "missing_band"
        rewrite(files[6], "I", lambda d: d[:-4])
        bad[files[6]] = "wrong_shape"
        path = band_file(files[7], "G")
        with fits.open(path) as hdul:
            hdul[1].header["CD2_2"] *= 1.5
            hdul[1].header["CD1_1"] *= 1.5
            hdul.writeto(path, overwrite=True)
        bad[files[7]] = "pixel_scale_mismatch"
    else:
        rewrite(files[5], "", lambda d: d[:2])            # header still says g, r, i
        bad[files[5]] = "band_count"
        with fits.open(images / files[6]) as hdul:
            hdul[0].header["BAND2"] = "z"
            hdul.writeto(images / files[6], overwrite=True)
        bad[files[6]] = "missing_band"
        with fits.open(images / files[7]) as hdul:
            for key in ("BANDS", "BAND0", "BAND1", "BAND2"):
                del hdul[0].header[key]
            hdul.writeto(images / files[7], overwrite=True)
        bad[files[7]] = "band_order_unknown"
        rewrite(files[8], "", lambda d: d[0])
        bad[files[8]] = "wrong_shape"
    return bad


@pytest.mark.parametrize("layout", ["band_files", "cube"])
def test_every_bad_file_is_listed_with_its_reason(tmp_path, layout):
    raw_root, truth = make_set(tmp_path, layout, "id", n=12)
    bad = damage(raw_root / NAME / "images", layout, truth)
    report = run(obs_params(layout), raw_root, tmp_path / "out")
    listed = {s["file"]: s["reason"] for s in report["skipped_files"]}
    assert listed == bad
    assert all(s["detail"] for s in report["skipped_files"])
    assert report["kept_images"] == 12 - len(bad)
    table, images = outputs(tmp_path / "out")
    assert len(table) == len(images) == 12 - len(bad) and np.isfinite(images).all()
    assert not set(bad) & set(table["file"])


@pytest.mark.parametrize("layout", ["band_files", "cube"])
def test_reuse_resume_and_workers(tmp_path, layout, monkeypatch):
    """A finished store is reused (a changed band file alone reprocessed); a run that dies
    after some chunks resumes from them; one and two workers agree; all equal a fresh run."""
    raw_root, truth = make_set(tmp_path, layout, "id", n=10)
    raw = obs_params(layout)
    first = run(raw, raw_root, tmp_path / "a")
    assert first["processed"] == 10
    assert run(raw, raw_root, tmp_path / "a")["processed"] == 0
    # touch one band file of one object: that object alone is read again
    name = truth["file"].iloc[4]
    changed = raw_root / NAME / "images" / (name.replace("-HSC-G-", "-HSC-I-")
                                            if layout == "band_files" else name)
    st = changed.stat()
    import os
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert run(raw, raw_root, tmp_path / "a")["processed"] == 1

    # a crash after two committed chunks, then a resume
    real_write, calls = ChunkCache.write, []

    def dying_write(self, *args, **kwargs):
        if len(calls) == 2:
            raise KeyboardInterrupt("simulated crash")
        calls.append(1)
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(ChunkCache, "write", dying_write)
    with pytest.raises(KeyboardInterrupt):
        run(raw, raw_root, tmp_path / "b")
    monkeypatch.setattr(ChunkCache, "write", real_write)
    assert not (tmp_path / "b" / NAME / "objects.parquet").exists()
    resumed = run(raw, raw_root, tmp_path / "b")
    assert resumed["reused_from_cache"] == 6 and resumed["processed"] == 4

    two = copy.deepcopy(raw)
    two["extract"]["NUM_WORKERS"] = 2
    run(two, raw_root, tmp_path / "c")
    fresh = outputs(tmp_path / "a")
    for other in ("b", "c"):
        table, images = outputs(tmp_path / other)
        pd.testing.assert_frame_equal(fresh[0], table)
        np.testing.assert_array_equal(fresh[1], images)


@pytest.mark.parametrize("layout", ["band_files", "cube"])
def test_kill_minus_nine_then_resume(tmp_path, layout):
    """SIGKILL in the middle of a run: the resumed run equals a clean one."""
    raw_root, truth = make_set(tmp_path, layout, "id", n=40, size=96)
    raw = obs_params(layout, SIZE_CHUNKS=2)
    params = write_params(tmp_path / "p.yaml", raw)
    cmd = [sys.executable, "-m", "scripts.preprocessing.extract", "--params", str(params)]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=stage_env(raw_root, raw_root / "TNG", killed),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = killed / NAME / ".cache"
    deadline = time.time() + 240
    while time.time() < deadline and not list(cache.glob("chunk_*.parquet")):
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "extract finished before it could be killed; use more objects"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = len(list(cache.glob("chunk_*.parquet")))
    assert finished >= 1 and not (killed / NAME / "objects.parquet").exists()
    resumed = subprocess.run(cmd, cwd=ROOT, env=stage_env(raw_root, raw_root / "TNG", killed),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((killed / NAME / "extract_report.json").read_text())
    assert report["reused_from_cache"] >= 2 * finished - 2
    clean = subprocess.run(cmd, cwd=ROOT, env=stage_env(raw_root, raw_root / "TNG", tmp_path / "clean"),
                           capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    t1, i1 = outputs(killed)
    t2, i2 = outputs(tmp_path / "clean")
    pd.testing.assert_frame_equal(t1, t2)
    np.testing.assert_array_equal(i1, i2)


# --------------------------------------------------------------------------- sky match

def shift_catalogue(root: Path, object_id: int, arcsec: float) -> None:
    """Move one catalogue row ``arcsec`` north of its image centre."""
    cat = pd.read_csv(root / "catalogue.csv")
    truth = pd.read_csv(root / "truth.csv")
    row = cat["object_id"] == object_id
    image = truth.set_index("object_id").loc[object_id]
    cat.loc[row, "ra"] = image["ra_image"]
    cat.loc[row, "dec"] = image["dec_image"] + arcsec / 3600
    cat.to_csv(root / "catalogue.csv", index=False)


@pytest.mark.parametrize("layout", ["band_files", "cube"])
def test_sky_match_inside_and_outside_the_radius_and_a_duplicate_claim(tmp_path, layout):
    raw_root, truth = make_set(tmp_path, layout, "sky", n=8, offset_arcsec=0.3)
    root, images = raw_root / NAME, raw_root / NAME / "images"
    ids = truth["object_id"].to_numpy()
    shift_catalogue(root, ids[1], 0.9)   # inside MATCH_RADIUS_ARCSEC = 1
    shift_catalogue(root, ids[2], 1.2)   # outside
    shift_catalogue(root, ids[3], 0.3)   # 0.3" north of its image …
    # … and a second image of object 3, 0.9" north of the first (0.6" from the row): the
    # first keeps the row
    source = truth["file"].iloc[3]
    twin = "99-cutout-HSC-{}-9813-pdr3_wide.fits" if layout == "band_files" else "cutout_twin.fits"
    index = 1 if layout == "band_files" else 0
    for band in (BANDS if layout == "band_files" else [""]):
        src = images / (source.replace("-HSC-G-", f"-HSC-{band}-") if band else source)
        with fits.open(src) as hdul:
            hdul[index].header["CRVAL2"] += 0.9 / 3600
            hdul.writeto(images / twin.format(band), overwrite=True)
    # an image with no position at all
    lost = truth["file"].iloc[4]
    for band in (BANDS if layout == "band_files" else [""]):
        path = images / (lost.replace("-HSC-G-", f"-HSC-{band}-") if band else lost)
        with fits.open(path) as hdul:
            for key in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2"):
                del hdul[index].header[key]
            hdul.writeto(path, overwrite=True)
    report = run(obs_params(layout, "sky", MATCH_RADIUS_ARCSEC=1.0), raw_root, tmp_path / "out")

    assert report["catalogue_match"] == "sky" and report["match_radius_arcsec"] == 1.0
    [far] = report["images_without_sky_match"]
    assert far["file"] == truth["file"].iloc[2] and far["nearest_object_id"] == ids[2]
    assert far["separation_arcsec"] == pytest.approx(1.2, abs=0.01)
    [dup] = report["duplicate_sky_matches"]
    assert dup["object_id"] == ids[3] and dup["kept"] == source
    assert [c["file"] for c in dup["claims"]] == [source, twin.format("G")]
    assert [c["separation_arcsec"] for c in dup["claims"]] == pytest.approx([0.3, 0.6], abs=0.01)
    assert {s["file"]: s["reason"] for s in report["skipped_files"]} == {lost: "no_sky_position"}
    assert [-1, ids[2]] in report["catalogue_objects_without_image"]
    assert [-1, ids[4]] in report["catalogue_objects_without_image"]

    table, _ = outputs(tmp_path / "out")
    kept = truth[~truth["object_id"].isin(ids[[2, 4]])]
    assert list(table["object_id"]) == sorted(kept["object_id"])
    by_id = table.set_index("object_id")
    assert (by_id.loc[kept["object_id"], "file"].to_numpy() == kept["file"].to_numpy()).all()
    expected = np.where(kept["object_id"] == ids[1], 0.9, 0.3)
    np.testing.assert_allclose(by_id.loc[kept["object_id"], "match_sep_arcsec"], expected, atol=0.01)
    catalogue = pd.read_csv(root / "catalogue.csv").set_index("object_id")
    np.testing.assert_allclose(by_id["photoz"], catalogue.loc[by_id.index, "photoz"])


def test_sky_position_from_header_keys_without_wcs(tmp_path):
    raw_root, truth = make_set(tmp_path, "cube", "sky", n=3, offset_arcsec=0.1)
    path = raw_root / NAME / "images" / truth["file"].iloc[0]
    with fits.open(path) as hdul:
        for key in ("CTYPE1", "CTYPE2"):
            del hdul[0].header[key]
        hdul[0].header["RA"] = truth["ra_image"].iloc[0]
        hdul[0].header["DEC"] = truth["dec_image"].iloc[0]
        hdul.writeto(path, overwrite=True)
    report = run(obs_params("cube", "sky"), raw_root, tmp_path / "out")
    assert report["kept_images"] == 3 and report["images_without_sky_match"] == []
    table, _ = outputs(tmp_path / "out")
    np.testing.assert_allclose(table["match_sep_arcsec"], 0.1, atol=0.01)


def test_observed_params_file_extracts_the_mock_observed_sets(tmp_path):
    """params.observed.yaml reads the sets the mock universe writes (written here alone)."""
    import yaml

    from scripts.mock.universe import OBSERVED_SETS, OBSERVED_SIZE

    raw_root = tmp_path / "raw"
    for name, (layout, code) in OBSERVED_SETS.items():
        observed.write_observed_set(raw_root / name, layout, "sky", n=OBSERVED_SIZE, seed=code)
    params = parse_params(yaml.safe_load((ROOT / "params.observed.yaml").read_text()))
    reports = extract.run(params.extract, raw_root, raw_root / "TNG", tmp_path / "out",
                          config.snapshot_redshifts_path)
    assert set(reports) == set(OBSERVED_SETS)
    for name, report in reports.items():
        assert report["kept_images"] == OBSERVED_SIZE and report["skipped_files"] == []
        assert report["images_without_sky_match"] == report["duplicate_sky_matches"] == []
        table = pd.read_parquet(tmp_path / "out" / name / "objects.parquet")
        truth = pd.read_csv(raw_root / name / "truth.csv").set_index("file")
        np.testing.assert_array_equal(table["object_id"], truth.loc[table["file"], "object_id"])


def test_readme_hsc_example_is_valid_and_one_extname_needs_band_files():
    import re

    import yaml

    from scripts.params import ExtractParams, _parse_section

    readme = (ROOT / "README.md").read_text()
    start = readme.index("```yaml", readme.index("Worked example, HSC cutout-service")) + 7
    example = yaml.safe_load(readme[start:readme.index("```", start)])["extract"]
    spec = _parse_section(ExtractParams, example, "extract").dataset_specs()[0]
    assert (spec.file_layout, spec.catalogue_match) == ("band_files", "sky")
    assert re.search(spec.file_pattern, "12-cutout-HSC-G-9813-pdr3_wide.fits")["filter"] == "G"
    with pytest.raises(ParamsError, match="same EXTNAME"):
        parse_params(obs_params("extensions", BAND_EXTNAMES=PerDataset("IMAGE")))
    assert parse_params(obs_params("band_files", BAND_EXTNAMES=PerDataset("IMAGE")))
