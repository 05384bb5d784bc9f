"""Extract stage on the small mock universe: identities, labels, bad input, resume, workers,
noise padding of crops that leave the frame."""
from __future__ import annotations

import copy
import json
import math
import re
import shutil
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
from scripts.params import parse_params
from scripts.preprocessing import extract
from scripts.preprocessing.dataset_kinds import Extractor, make_extractor
from scripts.preprocessing.image_preprocessing import process_image
from scripts.preprocessing.kind_registry import KINDS, extractor_class
from tests.conftest import ROOT, stage_env, write_params

STELLAR = "MOCK_FIDUCIAL"


def only(raw: dict, names: list[str], **extract_overrides) -> dict:
    """Params restricted to some datasets (LOAD false for the others)."""
    raw["extract"]["LOAD"] = [n in names for n in raw["extract"]["DATASETS"]]
    raw["extract"].update(extract_overrides)
    return raw


def run_extract(raw_params, universe, out_root):
    params = parse_params(raw_params)
    raw_root, illustris = universe
    return extract.run(params.extract, raw_root, illustris, out_root, config.snapshot_redshifts_path)


def read_outputs(out_root: Path, name: str):
    table = pd.read_parquet(out_root / name / "objects.parquet")
    with h5py.File(out_root / name / "images.h5") as f:
        images = f["images"][:]
    return table, images


@pytest.fixture(scope="module")
def extracted(small_universe, tmp_path_factory):
    from tests.conftest import demo_raw_params
    raw = demo_raw_params()
    raw["extract"].update(IMAGE_SIZE=32, NUM_WORKERS=1, SIZE_CHUNKS=16)
    out = tmp_path_factory.mktemp("dataset")
    reports = run_extract(raw, small_universe, out)
    return out, reports


def test_identity_from_both_naming_conventions(small_params, small_universe):
    params = parse_params(small_params)
    ex = make_extractor(params.extract.dataset(STELLAR), params.extract, *small_universe,
                        config.snapshot_redshifts_path)
    assert ex.parse_name("shalo_084-97_v3_HSC_GRIZY.fits") == {"object_id": 97, "snapshot": 84, "projection": 3}
    assert ex.parse_name("snap_084-97_3.fits") == {"object_id": 97, "snapshot": 84, "projection": 3}
    assert ex.parse_name("random_image.fits") is None
    survey = make_extractor(params.extract.dataset("MOCK_HSC"), params.extract, *small_universe,
                            config.snapshot_redshifts_path)
    assert survey.parse_name("123456_HSC_GRIZY.fits") == {"object_id": 123456, "snapshot": -1, "projection": 0}


def test_every_dataset_extracted_with_report(extracted):
    out, reports = extracted
    for name, report in reports.items():
        table, images = read_outputs(out, name)
        assert len(table) == len(images) == report["kept_images"] > 0
        assert (table["row"].to_numpy() == np.arange(len(table))).all()
        assert np.isfinite(images).all() and images.dtype == np.float32
        assert images.shape[1:3] == (32, 32)
        on_disk = json.loads((out / name / "extract_report.json").read_text())
        assert on_disk["kept_images"] == report["kept_images"]
    assert read_outputs(out, "MOCK_XRAY")[1].shape[-1] == 1
    assert read_outputs(out, STELLAR)[1].shape[-1] == 3


def test_fields_equal_ground_truth(extracted, small_universe):
    out, _ = extracted
    raw_root, _ = small_universe
    table, _ = read_outputs(out, STELLAR)
    truth = pd.read_parquet(raw_root / STELLAR / "truth.parquet")
    merged = table.merge(truth, on="file", suffixes=("", "_truth"))
    assert len(merged) == len(table)
    for field in ("stellar_mass", "half_mass_radius_kpc"):
        np.testing.assert_allclose(merged[field], merged[f"{field}_truth"], rtol=1e-4, atol=1e-4)
    # projections of one object carry identical intrinsic labels
    per_object = table.groupby(["snapshot", "object_id"])["stellar_mass"].nunique()
    assert (per_object == 1).all()


def test_selection_reported_not_lost(extracted, small_universe):
    """Catalogue objects below the mass cut have no image; images outside it are reported."""
    out, reports = extracted
    report = reports[STELLAR]
    accounted = (report["kept_images"] + sum(report["skipped_counts"].values()))
    assert accounted == report["images_selected"]
    assert report["images_found"] >= report["images_selected"]


def _corrupt_copy(universe, tmp_path):
    raw_root, illustris = universe
    raw = tmp_path / "raw"
    shutil.copytree(raw_root / STELLAR, raw / STELLAR)
    files = sorted((raw / STELLAR / "images").glob("*.fits"))
    bad = {}
    # truncated
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 3 + 1000])  # cut inside an HDU
    bad[files[0].name] = "truncated"
    # not FITS at all
    files[1].write_text("this is not a FITS file\n" * 50)
    bad[files[1].name] = "not_fits"
    # zero bytes
    files[2].write_bytes(b"")
    bad[files[2].name] = "empty_file"
    # missing band: keep only G (the primary HDU)
    with fits.open(files[3]) as hdul:
        fits.HDUList([hdul[0].copy()]).writeto(files[3], overwrite=True)
    bad[files[3].name] = "missing_band"
    # all-NaN and constant bands
    for i, (value, reason) in enumerate([(np.nan, "all_nan"), (1.0, "constant")], start=4):
        with fits.open(files[i]) as hdul:
            for hdu in hdul:
                if hdu.name.endswith((".G", ".R", ".I")):
                    hdu.data = np.full_like(hdu.data, value)
            hdul.writeto(files[i], overwrite=True)
        bad[files[i].name] = reason
    # an image with no catalogue row (subhalo id beyond the catalogue)
    orphan = raw / STELLAR / "images" / "shalo_084-999999_v0_HSC_GRIZY.fits"
    shutil.copy(files[8], orphan)
    # a catalogue object whose image disappeared entirely
    removed = files[-1]
    removed.unlink()
    # a name that matches no pattern
    (raw / STELLAR / "images" / "notes_about_this_dataset.fits").write_text("x")
    return (raw, illustris), bad, orphan.name, removed.name


def test_bad_input_never_stops_the_run(small_params, small_universe, tmp_path):
    universe, bad, orphan, removed = _corrupt_copy(small_universe, tmp_path)
    out = tmp_path / "dataset"
    report = run_extract(only(small_params, [STELLAR]), universe, out)[STELLAR]
    listed = {s["file"]: s["reason"] for s in report["skipped_files"]}
    assert listed == bad
    assert all(s["detail"] for s in report["skipped_files"])
    assert report["skipped_counts"] == {r: 1 for r in bad.values()}
    assert [84, 999999] in report["images_without_catalogue_row"]
    snap, obj = int(removed[6:9]), int(removed.split("-")[1].split("_")[0])
    # the object lost one projection: reported as incomplete (or, if it had only that one, as without image)
    assert any(e["object_id"] == obj and e["snapshot"] == snap for e in report["incomplete_projections"]) \
        or [snap, obj] in report["catalogue_objects_without_image"]
    assert report["unmatched_names"] == ["notes_about_this_dataset.fits"]
    table, images = read_outputs(out, STELLAR)
    assert len(table) == report["kept_images"] == report["images_selected"] - len(bad)
    assert not set(bad) & set(table["file"])


def test_entries_named_like_images_that_are_not_files_are_reported(small_params, small_universe,
                                                                   tmp_path):
    """A directory or a dangling symlink named like an image is listed with its reason."""
    raw_root, illustris = small_universe
    raw = tmp_path / "raw"
    shutil.copytree(raw_root / STELLAR, raw / STELLAR)
    images = raw / STELLAR / "images"
    files = sorted(images.glob("*.fits"))
    directory = images / "shalo_084-999998_v0_HSC_GRIZY.fits"
    directory.mkdir()
    moved = files[0]
    moved.rename(tmp_path / "elsewhere.fits")
    moved.symlink_to(tmp_path / "gone.fits")  # dangling, under an image's own name
    (images / "not_an_image_dir").mkdir()     # named like nothing: ignored as before
    report = run_extract(only(small_params, [STELLAR]), (raw, illustris),
                         tmp_path / "dataset")[STELLAR]
    listed = {s["file"]: (s["reason"], s["detail"]) for s in report["skipped_files"]}
    assert listed == {directory.name: ("not_a_regular_file", "a directory"),
                      moved.name: ("not_a_regular_file",
                                   f"dangling symlink to {tmp_path / 'gone.fits'}")}
    assert report["skipped_counts"] == {"not_a_regular_file": 2}
    assert report["images_found"] == len(files) + 1 and report["unmatched_names"] == []
    assert report["kept_images"] == report["images_selected"] > 0


def test_no_usable_object_exits_nonzero(small_params, small_universe, tmp_path):
    raw_root, illustris = small_universe
    raw = tmp_path / "raw"
    shutil.copytree(raw_root / STELLAR, raw / STELLAR)
    for f in (raw / STELLAR / "images").glob("*.fits"):
        f.write_bytes(b"")
    params = write_params(tmp_path / "p.yaml", only(small_params, [STELLAR]))
    env = stage_env(raw, illustris, tmp_path / "dataset")
    proc = subprocess.run([sys.executable, "-m", "scripts.preprocessing.extract", "--params", str(params)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1
    assert "no usable object" in proc.stderr and STELLAR in proc.stderr


def test_workers_one_and_two_identical(small_params, small_universe, tmp_path):
    one = run_extract(only(small_params, [STELLAR], NUM_WORKERS=1), small_universe, tmp_path / "a")
    two = run_extract(only(small_params, [STELLAR], NUM_WORKERS=2), small_universe, tmp_path / "b")
    ta, ia = read_outputs(tmp_path / "a", STELLAR)
    tb, ib = read_outputs(tmp_path / "b", STELLAR)
    pd.testing.assert_frame_equal(ta, tb)
    np.testing.assert_array_equal(ia, ib)
    assert one[STELLAR]["kept_images"] == two[STELLAR]["kept_images"]


def test_fraction_keeps_whole_objects(small_params, small_universe, tmp_path):
    run_extract(only(small_params, [STELLAR], FRACTION=[0.5, 1, 1, 1]), small_universe, tmp_path)
    table, _ = read_outputs(tmp_path, STELLAR)
    per_object = table.groupby(["snapshot", "object_id"]).size()
    assert (per_object == 3).all()
    raw_root, _ = small_universe
    total = pd.read_parquet(raw_root / STELLAR / "truth.parquet").groupby(["snapshot", "object_id"]).ngroups
    assert 0.15 * total < len(per_object) < 0.85 * total


def test_fields_change_and_new_files_reuse_cache(small_params, small_universe, tmp_path):
    raw_root, illustris = small_universe
    raw = tmp_path / "raw"
    shutil.copytree(raw_root / STELLAR, raw / STELLAR)
    held_back = sorted((raw / STELLAR / "images").glob("*.fits"))[5]
    parked = tmp_path / held_back.name
    held_back.rename(parked)
    universe = (raw, illustris)
    first = run_extract(only(small_params, [STELLAR]), universe, tmp_path / "d")[STELLAR]
    assert first["processed"] == first["images_selected"]
    # only FIELDS change: labels are recomputed, no image is read again
    p2 = only(small_params, [STELLAR])
    p2["extract"]["FIELDS"][0] = p2["extract"]["FIELDS"][0] + ["mass_in_rad"]
    second = run_extract(p2, universe, tmp_path / "d")[STELLAR]
    assert second["processed"] == 0
    table, _ = read_outputs(tmp_path / "d", STELLAR)
    assert "mass_in_rad" in table and table["mass_in_rad"].notna().all()
    # a new file is processed alone
    parked.rename(held_back)
    third = run_extract(p2, universe, tmp_path / "d")[STELLAR]
    assert third["processed"] == 1 and third["kept_images"] == first["kept_images"] + 1
    # and the result equals a fresh run
    run_extract(p2, universe, tmp_path / "fresh")
    t1, i1 = read_outputs(tmp_path / "d", STELLAR)
    t2, i2 = read_outputs(tmp_path / "fresh", STELLAR)
    pd.testing.assert_frame_equal(t1, t2)
    np.testing.assert_array_equal(i1, i2)


@pytest.mark.parametrize("shard_size", [None, 5], ids=["one_file", "shards"])
def test_kill_minus_nine_then_resume_equals_uninterrupted(small_params, small_universe, tmp_path, shard_size):
    raw_root, illustris = small_universe
    raw = only(small_params, [STELLAR], SIZE_CHUNKS=4, NUM_WORKERS=1, SHARD_SIZE=shard_size)
    params = write_params(tmp_path / "p.yaml", raw)
    cmd = [sys.executable, "-m", "scripts.preprocessing.extract", "--params", str(params)]
    killed_root = tmp_path / "killed"
    proc = subprocess.Popen(cmd, cwd=ROOT, env=stage_env(raw_root, illustris, killed_root),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cache = killed_root / STELLAR / ".cache"
    deadline = time.time() + 240
    while time.time() < deadline and not list(cache.glob("chunk_*.parquet")):
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "extract finished before it could be killed; make the chunks smaller"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed_root / STELLAR / "objects.parquet").exists()
    finished = len(list(cache.glob("chunk_*.parquet")))
    assert finished >= 1
    resumed = subprocess.run(cmd, cwd=ROOT, env=stage_env(raw_root, illustris, killed_root),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads((killed_root / STELLAR / "extract_report.json").read_text())
    assert report["reused_from_cache"] >= 4 * finished - 4
    clean = subprocess.run(cmd, cwd=ROOT, env=stage_env(raw_root, illustris, tmp_path / "clean"),
                           capture_output=True, text=True, timeout=300)
    assert clean.returncode == 0, clean.stderr
    t1, i1 = read_outputs(killed_root, STELLAR)
    t2, i2 = read_outputs(tmp_path / "clean", STELLAR)
    pd.testing.assert_frame_equal(t1, t2)
    np.testing.assert_array_equal(i1, i2)
    assert not t1["file"].duplicated().any()
    if shard_size:
        shards = sorted(p.name for p in (killed_root / STELLAR).glob("images-*.h5"))
        assert shards == sorted(p.name for p in (tmp_path / "clean" / STELLAR).glob("images-*.h5"))
        assert len(shards) == -(-len(t1) // shard_size)


def test_mask_bits_keep_a_masked_neighbour_out_of_the_petrosian_fit(small_params, small_universe, tmp_path):
    """A bright neighbour flagged in the MASK HDU changes r_P unless MASK_BITS excludes it."""
    raw_root, illustris = small_universe
    raw = tmp_path / "raw"
    shutil.copytree(raw_root / STELLAR, raw / STELLAR)
    target = sorted((raw / STELLAR / "images").glob("*_v0_*.fits"))[0]
    with fits.open(target) as hdul:
        ref = hdul["SUBARU_HSC.R"].data
        peak = float(np.nanmax(ref))
        ny, nx = ref.shape
        y, x = np.mgrid[0:ny, 0:nx]
        blob = (x - 0.62 * nx) ** 2 + (y - 0.5 * ny) ** 2 <= 4  # inside r_P
        for band in "GRI":
            hdul[f"SUBARU_HSC.{band}"].data = hdul[f"SUBARU_HSC.{band}"].data + 3 * peak * blob
            hdul[f"SUBARU_HSC.{band} MASK"].data = (hdul[f"SUBARU_HSC.{band} MASK"].data | (blob * 4)).astype(np.int32)
        hdul.writeto(target, overwrite=True)
    universe = (raw, illustris)
    radii = {}
    for bits in (None, 4):
        out = tmp_path / f"d{bits}"
        run_extract(only(small_params, [STELLAR], MASK_BITS=bits, PETRO_REFERENCE_BAND="R"), universe, out)
        table, _ = read_outputs(out, STELLAR)
        radii[bits] = table.set_index("file").loc[target.name, "r_petrosian"]
    clean = tmp_path / "clean"
    run_extract(only(small_params, [STELLAR], PETRO_REFERENCE_BAND="R"), small_universe, clean)
    truth = read_outputs(clean, STELLAR)[0].set_index("file").loc[target.name, "r_petrosian"]
    assert abs(radii[4] - truth) < abs(radii[None] - truth)
    assert radii[4] == pytest.approx(truth, rel=0.1)


def test_no_image_with_a_catalogue_row_is_reported_not_a_crash(small_params, small_universe, tmp_path):
    """Images whose subhalos are not in the catalogue: nothing to extract, every file listed."""
    raw_root, illustris = small_universe
    images = tmp_path / "raw" / STELLAR / "images"
    images.mkdir(parents=True)
    for i, f in enumerate(sorted((raw_root / STELLAR / "images").glob("*.fits"))[:4]):
        shutil.copy(f, images / f"shalo_084-{900000 + i}_v0_HSC_GRIZY.fits")
    report = run_extract(only(small_params, [STELLAR]), (tmp_path / "raw", illustris),
                         tmp_path / "out")[STELLAR]
    assert report["kept_images"] == 0 and report["images_selected"] == 0
    assert len(report["images_without_catalogue_row"]) == 4
    assert read_outputs(tmp_path / "out", STELLAR)[1].shape[0] == 0


# --------------------------------------------------------------------------- padding

NOISY = ("MOCK_FIDUCIAL", "MOCK_COMPACT", "MOCK_HSC")


def zero_borders(images: np.ndarray) -> np.ndarray:
    """(N, C) True where image n has a border row or column of band c exactly zero."""
    edges = [images[:, 0], images[:, -1], images[:, :, 0], images[:, :, -1]]  # (N, W, C) each
    return np.any([(e == 0).all(axis=1) for e in edges], axis=0)


def header_sigma(path: Path, bands) -> np.ndarray:
    """True sky σ per band of a mock file: √(VARSC × BGVAR) from its headers."""
    with fits.open(path) as hdul:
        return np.array([math.sqrt(hdul[f"SUBARU_HSC.{b}"].header["VARSC"]
                                   * hdul[f"SUBARU_HSC.{b}"].header["BGVAR"]) for b in bands])


def check_padding(table: pd.DataFrame, images: np.ndarray, report: dict, bands) -> None:
    """No stored image has a border of exact zeros in a band with noise; the report's
    distribution is that of the table's crop_outside_fraction."""
    sigma = table[[f"pad_sigma_{b}" for b in bands]].to_numpy()
    assert (sigma > 0).all() and (table["pad_sigma_source"] == "variance").all()
    bad = zero_borders(images) & (sigma > 0)
    assert not bad.any(), f"zero border in {table['file'][bad.any(axis=1)].tolist()}"
    frac = table["crop_outside_fraction"].to_numpy()
    assert ((frac >= 0) & (frac < 1)).all()
    summary = report["crop_outside"]
    assert summary["n"] == len(table) == report["kept_images"]
    assert summary["padded_fraction"] == pytest.approx((frac > 0).mean())
    assert summary["median"] == pytest.approx(np.median(frac))
    assert summary["p90"] == pytest.approx(np.quantile(frac, 0.9))
    assert summary["max"] == pytest.approx(frac.max())
    assert summary["pad_sigma_source"] == {"variance": len(table)}


def test_stored_images_have_no_zero_border_and_the_report_has_the_distribution(extracted):
    out, reports = extracted
    for name in NOISY:
        table, images = read_outputs(out, name)
        check_padding(table, images, reports[name], "GRI")
        assert reports[name]["pad_mode"] == "noise"
    xray, _ = read_outputs(out, "MOCK_XRAY")
    assert reports["MOCK_XRAY"]["pad_mode"] == "constant"
    assert (xray["crop_outside_fraction"] == 0).all()   # R200C_FACTOR 1 on 2 R200c frames


def test_crops_beyond_the_frame_are_padded_with_the_frame_noise(small_params, small_universe, tmp_path):
    """With crops twice as wide most of them leave the frame: padded with noise of the
    image's own σ (the mock's true sky σ = √(VARSC × BGVAR)), never with zeros, and the
    same for one and two workers (the noise is seeded by each image's identity)."""
    raw_root, _ = small_universe
    stores = {}
    for workers in (1, 2):
        root = tmp_path / f"w{workers}"
        reports = run_extract(only(small_params, [STELLAR], PETRO_RADIUS_FACTOR=4, NUM_WORKERS=workers),
                              small_universe, root)
        stores[workers] = read_outputs(root, STELLAR)
    table, images = stores[1]
    pd.testing.assert_frame_equal(table, stores[2][0])
    np.testing.assert_array_equal(images, stores[2][1])
    check_padding(table, images, reports[STELLAR], "GRI")
    assert reports[STELLAR]["crop_outside"]["padded_fraction"] > 0.5
    # the σ used is the frame's true sky σ; a few per cent above it only where the galaxy
    # fills its frame and its Poisson noise reaches the frame's edge
    truth = np.array([header_sigma(raw_root / STELLAR / "images" / f, "GRI") for f in table["file"]])
    used = table[["pad_sigma_G", "pad_sigma_R", "pad_sigma_I"]].to_numpy()
    error = used / truth - 1
    assert np.median(np.abs(error)) < 0.02 and np.abs(error).max() < 0.1
    # zero padding, asked for, does leave zero borders: the check above can fail
    file = table.loc[table["crop_outside_fraction"].idxmax(), "file"]
    crop = extractor_spec(small_params, PETRO_RADIUS_FACTOR=4)
    zero = process_image(str(raw_root / STELLAR / "images" / file), EXTNAMES, tuple("GRI"),
                         {**crop, "pad_mode": "constant"}, 32, {})
    noise = process_image(str(raw_root / STELLAR / "images" / file), EXTNAMES, tuple("GRI"),
                         crop, 32, {}, pad_seed=5)
    assert zero_borders(zero.image[None]).all()
    assert not zero_borders(noise.image[None]).any()
    again = process_image(str(raw_root / STELLAR / "images" / file), EXTNAMES, tuple("GRI"),
                         crop, 32, {}, pad_seed=5)
    np.testing.assert_array_equal(noise.image, again.image)


EXTNAMES = tuple(f"SUBARU_HSC.{b}" for b in "GRI")


def extractor_spec(raw: dict, **overrides) -> dict:
    params = parse_params(only(raw, [STELLAR], **overrides))
    return make_extractor(params.extract.dataset(STELLAR), params.extract, Path("."), Path("."),
                          config.snapshot_redshifts_path).crop_spec()


def test_every_registered_kind_resolves_to_an_extractor():
    """The one registry of dataset kinds names a real Extractor subclass and a default file
    pattern giving object ids, for every kind the params schema accepts."""
    for kind, entry in KINDS.items():
        cls = extractor_class(kind)
        assert issubclass(cls, Extractor) and cls is not Extractor, kind
        assert "object_id" in re.compile(entry.file_pattern).groupindex, kind
    with pytest.raises(ValueError, match="no dataset kind 'nope'; known: .*survey"):
        extractor_class("nope")


def test_neighbour_mask_brings_the_magnitudes_to_the_truth(small_params, small_universe):
    """extract.NEIGHBOURS: mask measures the target, not its neighbours: on every image of
    the small universe's simulated set, the R magnitude errors against the mock's true r
    magnitude shrink, and the per-image counts are recorded. keep leaves the crop settings
    (and with them the fingerprints of earlier runs) as they were."""
    raw_root, _ = small_universe
    keep = extractor_spec(copy.deepcopy(small_params), NEIGHBOURS="keep")
    mask = extractor_spec(copy.deepcopy(small_params), NEIGHBOURS="mask")
    assert "neighbours" not in keep and mask["neighbours"] == "mask"
    truth = pd.read_parquet(raw_root / STELLAR / "truth.parquet").set_index("file")
    errors = {"keep": [], "mask": []}
    for file in truth.index:
        path = str(raw_root / STELLAR / "images" / file)
        for name, crop in (("keep", keep), ("mask", mask)):
            result = process_image(path, EXTNAMES, tuple("GRI"), crop, 32, {}, pad_seed=1)
            assert result.image is not None, result.detail
            errors[name].append(result.record["mag_R"] - truth.loc[file, "r_mag"])
            assert ("neighbours_detected" in result.record) == (name == "mask")
    keep_err, mask_err = (np.abs(np.nan_to_num(np.array(errors[k]), nan=5.0)) for k in ("keep", "mask"))
    assert mask_err.mean() < keep_err.mean()
    assert np.mean(mask_err > 0.2) <= np.mean(keep_err > 0.2)


def test_fixed_fraction_crops_keep_the_petrosian_photometry(small_params, small_universe):
    """CROPPERS fraction (or none) on a galaxy kind cuts every image at the same fraction of
    its frame, yet measures the same Petrosian magnitudes and radii as the petrosian cropper
    (the photometry baseline and the OBSERVABLES need them); the X-ray kind's crop settings
    stay as they were. A failed Petrosian fit is counted and logged (see extract._log_summary)."""
    raw_root, _ = small_universe
    croppers = list(small_params["extract"]["CROPPERS"])
    petro = extractor_spec(copy.deepcopy(small_params))
    fixed = {}
    for name in ("fraction", "none"):
        raw = copy.deepcopy(small_params)
        raw["extract"]["CROPPERS"] = [name if c == "petrosian" else c for c in croppers]
        fixed[name] = extractor_spec(raw, CROP_FRACTION=0.5)
        assert fixed[name]["name"] == name and fixed[name]["measure"] == "petrosian"
    assert "measure" not in petro
    raw = copy.deepcopy(small_params)
    raw["extract"]["CROPPERS"] = ["fraction"] * len(croppers)
    params = parse_params(raw)
    xray = next(n for n, e in zip(params.extract.datasets, params.extract.extractors) if e == "tng_xray")
    spec = make_extractor(params.extract.dataset(xray), params.extract, Path("."), Path("."),
                          config.snapshot_redshifts_path).crop_spec()
    assert spec["name"] == "fraction" and "measure" not in spec
    files = sorted((raw_root / STELLAR / "images").glob("*.fits"))[:6]
    for path in files:
        a = process_image(str(path), EXTNAMES, tuple("GRI"), petro, 32, {}, pad_seed=1)
        for name, crop in fixed.items():
            b = process_image(str(path), EXTNAMES, tuple("GRI"), crop, 32, {}, pad_seed=1)
            assert a.image is not None and b.image is not None
            for key in ("mag_G", "mag_R", "mag_I", "r50", "r90", "r_petrosian",
                        "petro_r90_arcsec", "neighbours_detected"):
                np.testing.assert_equal(b.record[key], a.record[key], err_msg=f"{name} {key}")
            with fits.open(path) as hdul:
                edge = min(hdul["SUBARU_HSC.R"].data.shape)
            want = round(0.5 * edge) if name == "fraction" else edge
            assert b.record["crop_size"] == want and not b.record["crop_failed"]
            assert b.record["petrosian_failure"] == ""


def test_neighbours_remove_cleans_the_stored_image_and_keeps_the_photometry(small_params, small_universe):
    """NEIGHBOURS: remove measures exactly as mask does, and in the stored image the other
    sources' pixels become the galaxy's annulus mean plus sky noise: the crop loses the
    neighbours' light, and the result is the same on every call (noise seeded by the
    image's identity)."""
    from scripts.preprocessing.deblend import neighbour_mask
    from scripts.preprocessing.fits_bands import load_bands

    raw_root, _ = small_universe
    mask_spec = extractor_spec(copy.deepcopy(small_params), NEIGHBOURS="mask")
    remove_spec = extractor_spec(copy.deepcopy(small_params), NEIGHBOURS="remove")
    assert remove_spec["neighbours"] == "remove"
    tested = 0
    for path in sorted((raw_root / STELLAR / "images").glob("*.fits")):
        frame = load_bands(str(path), EXTNAMES, variance=False).data
        found = neighbour_mask(frame[..., mask_spec["reference_band"]])
        if found.mask.sum() < 20:
            continue
        a = process_image(str(path), EXTNAMES, tuple("GRI"), mask_spec, 32, {}, pad_seed=3)
        b = process_image(str(path), EXTNAMES, tuple("GRI"), remove_spec, 32, {}, pad_seed=3)
        again = process_image(str(path), EXTNAMES, tuple("GRI"), remove_spec, 32, {}, pad_seed=3)
        for key in ("mag_G", "mag_R", "mag_I", "r90", "crop_size", "neighbours_detected"):
            assert b.record[key] == a.record[key], key
        np.testing.assert_array_equal(b.image, again.image)
        assert not np.array_equal(a.image, b.image)
        # the removed light: the flux of the crop drops, never rises beyond the noise
        assert b.image.sum() < a.image.sum()
        tested += 1
        if tested == 3:
            break
    assert tested, "no image of the small universe has a detected neighbour"


def test_removed_neighbour_pixels_are_the_annulus_mean_plus_sky_noise():
    """On a flat sky of known σ with a bright square 'neighbour': unmasked pixels are left
    as they were; masked ones get the annulus mean (here the sky, 0) plus noise of each
    band's σ."""
    from scripts.preprocessing.image_preprocessing import _remove_neighbours

    rng = np.random.default_rng(0)
    sigma = np.array([1.0, 2.0, 4.0])
    image = (rng.standard_normal((64, 64, 3)) * sigma).astype(np.float32)
    mask = np.zeros((64, 64), bool)
    mask[5:25, 40:60] = True
    image[mask] += 100.0
    out = _remove_neighbours(image, mask, (32.0, 32.0), sigma, seed=7)
    np.testing.assert_array_equal(out[~mask], image[~mask])
    filled = out[mask]
    assert np.abs(filled.mean(axis=0)).max() < 0.5
    np.testing.assert_allclose(filled.std(axis=0), sigma, rtol=0.1)
    np.testing.assert_array_equal(out, _remove_neighbours(image, mask, (32.0, 32.0), sigma, seed=7))
