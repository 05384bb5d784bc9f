"""The embedded mock universe: formats (TNG catalogues, HSC/X-ray FITS), reproducibility and
the physics that the images must carry (scripts/mock, DESIGN §4).

One small universe is built per module (n_jobs=1) and a second one with the same seed on two
workers over a stale previous build, so determinism, worker independence and clean
overwriting are checked together.
"""
from __future__ import annotations

import glob
from pathlib import Path

import h5py
import illustris_python as il
import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from scipy.stats import spearmanr

import config
from scripts.mock import build_universe, compare_real, geometry, measure, physics
from scripts.mock.universe import default_cc_criteria_path

SIMS = ("MockTNG-Fiducial", "MockTNG-Compact")
SNAPS = (78, 84)
H = 0.6774
REAL_HSC = config.real_hsc_mock_path
INTRINSIC = ["stellar_mass", "half_mass_radius_kpc", "half_light_radius_kpc", "sersic_n", "bulge_fraction",
             "color_gr", "sfr", "ssfr", "exsitu_fraction", "merger_recent", "snap_last_major_merger",
             "halo_mass", "redshift", "root_descendant_id"]


@pytest.fixture(scope="module")
def universe(tmp_path_factory):
    root = tmp_path_factory.mktemp("mock")
    raw, tng = root / "raw", root / "raw" / "TNG"
    summary = build_universe(raw, tng, size="small", num_projections=3, seed=0, n_jobs=1)
    return {"raw": raw, "tng": tng, "summary": summary}


@pytest.fixture(scope="module")
def rebuilt(universe, tmp_path_factory):
    """Same seed, two workers, written over a stale earlier build with other content."""
    root = tmp_path_factory.mktemp("mock2")
    raw, tng = root / "raw", root / "raw" / "TNG"
    stale = raw / "MOCK_FIDUCIAL" / "images" / "shalo_084-99999_v0_HSC_GRIZY.fits"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"stale")
    (tng / "MockTNG-Fiducial" / "output" / "groups_050").mkdir(parents=True)
    keep = raw / "OTHER_DATASET" / "keep.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("not ours")
    summary = build_universe(raw, tng, size="small", num_projections=3, seed=0, n_jobs=2)
    return {"raw": raw, "tng": tng, "summary": summary, "stale": stale, "keep": keep}


def truth(universe, ds):
    return pd.read_parquet(universe["raw"] / ds / "truth.parquet")


def image(universe, ds, fname, hdu=3):
    with fits.open(universe["raw"] / ds / "images" / fname) as f:
        return f[hdu].data.astype(float)


# --- catalogues -------------------------------------------------------------------------

@pytest.mark.parametrize("sim", SIMS)
@pytest.mark.parametrize("snap", SNAPS)
def test_catalogue_reads_back_with_illustris_python(universe, sim, snap):
    base = str(universe["tng"] / sim / "output")
    chunks = sorted(glob.glob(f"{base}/groups_{snap:03d}/fof_subhalo_tab_{snap:03d}.*.hdf5"))
    assert len(chunks) >= 2
    fields = ["SubhaloMassType", "SubhaloMassInRadType", "SubhaloSFR", "SubhaloHalfmassRadType",
              "SubhaloGrNr", "SubhaloFlag", "SubhaloPos"]
    sub = il.groupcat.loadSubhalos(base, snap, fields=fields)
    grp = il.groupcat.loadHalos(base, snap, fields=["GroupMass", "Group_M_Crit200", "Group_R_Crit200",
                                                    "GroupFirstSub", "GroupNsubs", "GroupPos"])
    header = il.groupcat.loadHeader(base, snap)
    assert header["HubbleParam"] == H and header["Omega0"] == 0.3089 and header["OmegaLambda"] == 0.6911
    assert sub["count"] == header["Nsubgroups_Total"] and grp["count"] == header["Ngroups_Total"]
    assert sub["SubhaloMassType"].shape == (sub["count"], 6) and sub["SubhaloPos"].shape == (sub["count"], 3)
    # chunk-local counts add up and the subhalo ranges really span several files
    per_file = [h5py.File(c, "r")["Header"].attrs["Nsubgroups_ThisFile"] for c in chunks]
    assert sum(per_file) == sub["count"] and sum(n > 0 for n in per_file) >= 2

    # values written for each imaged subhalo (truth table) come back through the reader
    t = truth(universe, "MOCK_FIDUCIAL" if "Fiducial" in sim else "MOCK_COMPACT")
    t = t[t.snapshot == snap].drop_duplicates("subhalo_id")
    sid = t.subhalo_id.to_numpy()
    a = 1.0 / (1.0 + header["Redshift"])
    np.testing.assert_allclose(np.log10(sub["SubhaloMassType"][sid, 4] * 1e10 / H), t.stellar_mass, atol=1e-5)
    np.testing.assert_allclose(sub["SubhaloHalfmassRadType"][sid, 4] * a / H, t.half_mass_radius_kpc, rtol=1e-5)
    np.testing.assert_array_equal(sub["SubhaloGrNr"][sid], t.group_id)
    np.testing.assert_array_equal(sub["SubhaloFlag"][sid], t.subhalo_flag)
    np.testing.assert_allclose(np.log10(grp["Group_M_Crit200"][t.group_id] * 1e10 / H), t.halo_mass, atol=1e-5)
    single = il.groupcat.loadSingle(base, snap, subhaloID=int(sid[-1]))
    np.testing.assert_array_equal(single["SubhaloMassType"], sub["SubhaloMassType"][sid[-1]])

    # TNG structure: centrals first in their group, empty FoF groups, spurious and faint subhalos
    first, nsubs, grnr = grp["GroupFirstSub"], grp["GroupNsubs"], sub["SubhaloGrNr"]
    for g in np.flatnonzero(nsubs > 0):
        assert (grnr[first[g]:first[g] + nsubs[g]] == g).all()
    assert (first[nsubs == 0] == -1).all() and (nsubs == 0).any()
    assert (sub["SubhaloFlag"] == 0).any()
    mstar = sub["SubhaloMassType"][:, 4] * 1e10 / H
    faint = np.flatnonzero(mstar < 10 ** 9.5)
    assert len(faint) > 0 and not np.isin(faint, sid).any()
    assert set(sid) == set(np.flatnonzero(mstar >= 10 ** 9.5))
    assert np.all(grp["Group_R_Crit200"][nsubs > 0] > 0)


def test_supplementary_catalogues(universe):
    pp = universe["tng"] / "MockTNG-Fiducial" / "postprocessing"
    t = truth(universe, "MOCK_FIDUCIAL").drop_duplicates(["snapshot", "subhalo_id"])
    roots = {}
    for snap in SNAPS:
        n = il.groupcat.loadHeader(str(pp.parent / "output"), snap)["Nsubgroups_Total"]
        with h5py.File(pp / "StellarAssembly" / f"stars_{snap:03d}.hdf5") as f:
            ex, ins = f["StellarMassExSitu"][()], f["StellarMassInSitu"][()]
        with h5py.File(pp / "MergerHistory" / f"MergerHistory_{snap:03d}.hdf5") as f:
            last, mass_last = f["SnapNumLastMajorMerger"][()], f["MassLastMajorMerger"][()]
        with h5py.File(pp / "SubLink" / f"RootDescendant_{snap:03d}.hdf5") as f:
            root = f["RootDescendantID"][()]
        assert len(ex) == len(ins) == len(last) == len(root) == n and root.dtype == np.int64
        ts = t[t.snapshot == snap]
        sid = ts.subhalo_id.to_numpy()
        np.testing.assert_allclose(ex[sid] / (ex[sid] + ins[sid]), ts.exsitu_fraction, atol=1e-5)
        np.testing.assert_array_equal(last[sid], ts.snap_last_major_merger)
        np.testing.assert_array_equal(root[sid], ts.root_descendant_id)
        assert (last <= snap).all() and (last == -1).any() and (last > 0).any()
        assert ((mass_last > 0) == (last >= 0)).all()
        roots[snap] = ts.set_index("root_descendant_id")
    # progenitors: most galaxies at 84 are also imaged at 78, sharing the root descendant id,
    # and grow in stellar mass between the snapshots
    early, late = SNAPS
    common = roots[late].index.intersection(roots[early].index.drop_duplicates(keep=False))
    assert len(common) >= 0.6 * len(roots[late])
    m_early = roots[early].loc[common, "stellar_mass"]
    m_late = roots[late].loc[common, "stellar_mass"]
    assert (m_late.to_numpy() >= m_early.to_numpy() - 1e-9).all()


# --- FITS -------------------------------------------------------------------------------

def test_every_fits_verifies_and_matches_the_real_layout(universe):
    rendered = universe["summary"]["images"]
    files = sorted(f for ds in rendered for f in (universe["raw"] / ds / "images").glob("*.fits"))
    assert len(files) == sum(rendered.values())
    with fits.open(REAL_HSC) as real:
        real_names = [h.name for h in real][:9]
        real_bitpix = [h.header["BITPIX"] for h in real][:9]
    for f in files:
        with fits.open(f) as hdul:
            hdul.verify("exception")
            if f.parent.parent.name == "MOCK_XRAY":
                assert len(hdul) == 1 and hdul[0].header["EXTNAME"] == "XRAY_0.5-5.0keV"
                continue
            assert [h.name for h in hdul] == real_names
            assert [h.header["BITPIX"] for h in hdul] == real_bitpix
            shapes = {h.data.shape for h in hdul}
            assert len(shapes) == 1 and 48 <= next(iter(shapes))[0] <= 64
    # simulation headers carry the real file's keys; snapshot 84 has its angular scale
    with fits.open(REAL_HSC) as real:
        kpcarc = real[0].header["KPCARC"]
    t = truth(universe, "MOCK_FIDUCIAL")
    row = t[t.snapshot == 84].iloc[0]
    with fits.open(universe["raw"] / "MOCK_FIDUCIAL" / "images" / row.file) as hdul:
        h = hdul[0].header
        for key in ("SIMTAG", "SNAPNUM", "SUBHALO", "CAMERA", "REDSHIFT", "FOVKPC", "FOVARC", "KPCARC",
                    "APMAG", "BGMEAN", "BGVAR"):
            assert key in h
        assert h["SIMTAG"] == "MockTNG-Fiducial" and h["SUBHALO"] == row.subhalo_id
        assert h["CAMERA"] == f"v{row.projection}"
        assert h["KPCARC"] == pytest.approx(kpcarc, rel=1e-4)
        assert h["FOVARC"] == pytest.approx(hdul[0].data.shape[0] * 0.168)
        assert h["APMAG"] == pytest.approx(row.g_mag)
        for k in (0, 3, 6):
            assert (hdul[k + 2].data > 0).all()  # variance planes


def test_file_names_and_truth_rows(universe):
    for ds in ("MOCK_FIDUCIAL", "MOCK_COMPACT", "MOCK_HSC", "MOCK_XRAY"):
        t = truth(universe, ds)
        on_disk = {p.name for p in (universe["raw"] / ds / "images").glob("*.fits")}
        assert set(t.file) == on_disk and t.file.is_unique
    t = truth(universe, "MOCK_FIDUCIAL")
    assert t.groupby(["snapshot", "subhalo_id"]).projection.apply(lambda p: sorted(p) == [0, 1, 2]).all()
    expected = t.apply(lambda r: f"shalo_{r.snapshot:03d}-{r.subhalo_id}_v{r.projection}_HSC_GRIZY.fits", axis=1)
    assert (expected == t.file).all()
    x = truth(universe, "MOCK_XRAY")
    assert (x.file == x.apply(lambda r: f"xray_099-{r.halo_id}_v{r.projection}_0.5-5.0keV.fits", axis=1)).all()


def test_observed_sets_verify_in_the_layouts_of_cutout_services(universe):
    """MOCK_HSC_CUTOUTS: one file per band (empty primary, IMAGE, MASK, VARIANCE);
    MOCK_LEGACY_CUBES: a (3, H, W) primary with BAND0…; catalogues keyed by RA/Dec."""
    from scripts.mock.universe import OBSERVED_SETS

    assert universe["summary"]["observed_sets"] == {name: 12 for name in OBSERVED_SETS}
    cutouts = sorted((universe["raw"] / "MOCK_HSC_CUTOUTS" / "images").glob("*.fits"))
    cubes = sorted((universe["raw"] / "MOCK_LEGACY_CUBES" / "images").glob("*.fits"))
    assert len(cutouts) == 3 * 12 and len(cubes) == 12
    for f in cutouts:
        with fits.open(f) as hdul:
            hdul.verify("exception")
            assert [h.name for h in hdul] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE"]
            assert hdul[0].data is None and hdul["IMAGE"].header["CTYPE1"] == "RA---TAN"
    for f in cubes:
        with fits.open(f) as hdul:
            hdul.verify("exception")
            assert hdul[0].data.shape[0] == 3 and hdul[0].header["BANDS"] == "gri"
    for name in OBSERVED_SETS:
        cat = pd.read_csv(universe["raw"] / name / "catalogue.csv")
        assert {"object_id", "ra", "dec"} <= set(cat.columns) and len(cat) == 12


# --- reproducibility --------------------------------------------------------------------

def test_same_seed_gives_identical_universe_with_any_worker_count(universe, rebuilt):
    a, b = universe["raw"], rebuilt["raw"]
    assert not rebuilt["stale"].exists() and rebuilt["keep"].exists()
    assert not (rebuilt["tng"] / "MockTNG-Fiducial" / "output" / "groups_050").exists()
    fa = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    fb = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and "OTHER_DATASET" not in str(p))
    assert fa == fb
    for rel in fa:
        if rel.suffix == ".hdf5":
            with h5py.File(a / rel) as x, h5py.File(b / rel) as y:
                names_x, names_y = [], []
                x.visit(names_x.append)
                y.visit(names_y.append)
                assert names_x == names_y, rel
                for name in ["/", *names_x]:
                    assert sorted(x[name].attrs) == sorted(y[name].attrs)
                    for key in x[name].attrs:
                        np.testing.assert_array_equal(x[name].attrs[key], y[name].attrs[key])
                    if isinstance(x[name], h5py.Dataset):
                        np.testing.assert_array_equal(x[name][()], y[name][()], err_msg=f"{rel}:{name}")
        elif rel.suffix == ".fits":
            with fits.open(a / rel) as x, fits.open(b / rel) as y:
                for hx, hy in zip(x, y, strict=True):
                    np.testing.assert_array_equal(hx.data, hy.data, err_msg=str(rel))
                    assert hx.header == hy.header
        elif rel.suffix == ".parquet":
            pd.testing.assert_frame_equal(pd.read_parquet(a / rel), pd.read_parquet(b / rel))
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


# --- physics in the images --------------------------------------------------------------

def _paired(universe):
    f, c = truth(universe, "MOCK_FIDUCIAL"), truth(universe, "MOCK_COMPACT")
    return f.merge(c, on="file", suffixes=("_f", "_c"))


def test_compact_run_is_more_concentrated_and_bluer_at_fixed_mass(universe):
    pairs = _paired(universe)
    np.testing.assert_allclose(pairs.stellar_mass_f, pairs.stellar_mass_c)  # same objects
    r50, inner, gi = [], [], []
    for fname in pairs.file:
        row = []
        for ds in ("MOCK_FIDUCIAL", "MOCK_COMPACT"):
            r = measure.CurveOfGrowth(image(universe, ds, fname, 3), oversample=2)
            total = r(r.r_max)
            g = measure.flux_within(image(universe, ds, fname, 0), 2.0 / 0.168, oversample=2)
            i = measure.flux_within(image(universe, ds, fname, 6), 2.0 / 0.168, oversample=2)
            row.append((r.radius_enclosing(0.5 * total) * 0.168, r(1.0 / 0.168) / total, g / i))
        (r_f, in_f, gi_f), (r_c, in_c, gi_c) = row
        r50.append(r_c / r_f)
        inner.append(in_c > in_f)
        gi.append(gi_c / gi_f)
    r50, gi = np.array(r50), np.array(gi)
    assert np.median(r50) < 0.75 and (r50 < 1).mean() > 0.95
    assert np.mean(inner) > 0.95  # more light within 1″
    # g−r bluer by 0.15 mag (r−i by 0.05): G/I flux ratio up by ≈ 10^(0.4·0.2) = 1.2
    assert (gi > 1).mean() > 0.95 and 1.1 < np.median(gi) < 1.35
    np.testing.assert_allclose(pairs.half_light_radius_kpc_c / pairs.half_light_radius_kpc_f, 10 ** -0.4, rtol=1e-6)


def test_projections_share_intrinsic_truth_but_not_pixels(universe):
    t = truth(universe, "MOCK_FIDUCIAL")
    by = t.groupby(["snapshot", "subhalo_id"])
    assert (by[INTRINSIC].nunique(dropna=False) == 1).all().all()
    assert (by.inclination.nunique() == 3).mean() > 0.95 and (by.position_angle.nunique() == 3).mean() > 0.95
    for _, grp in list(by)[:6]:
        imgs = [image(universe, "MOCK_FIDUCIAL", f, 0) for f in grp.file]
        assert not np.array_equal(imgs[0], imgs[1]) and not np.array_equal(imgs[1], imgs[2])


def _moments(img, radius):
    n = img.shape[0]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    w = np.where(np.hypot(yy, xx) < radius, np.clip(img, 0, None), 0.0)
    s = w.sum()
    ixx, iyy, ixy = (w * xx * xx).sum() / s, (w * yy * yy).sum() / s, (w * xx * yy).sum() / s
    return np.array([[ixx, ixy], [ixy, iyy]])


def _second_moment_axis_ratio(img, radius, psf_fwhm_arcsec=None):
    """Axis ratio from second moments within ``radius`` px; with ``psf_fwhm_arcsec`` the
    PSF's moments in the same aperture are subtracted first (the galaxies at z = 0.2–0.3
    are barely larger than the seeing, which rounds them)."""
    m = _moments(img, radius)
    if psf_fwhm_arcsec is not None:
        import galsim
        n = img.shape[0]
        psf = galsim.Moffat(beta=3.0, fwhm=psf_fwhm_arcsec).drawImage(nx=n, ny=n, scale=0.168).array
        m = m - _moments(psf, radius)
    ev = np.clip(np.linalg.eigvalsh(m), 1e-9, None)
    return np.sqrt(ev[0] / ev[1])


def test_inclination_and_mergers_show_in_the_images(universe):
    t = truth(universe, "MOCK_FIDUCIAL")
    q_img, asym = [], []
    for _, r in t.iterrows():
        img = image(universe, "MOCK_FIDUCIAL", r.file, 3)
        with fits.open(universe["raw"] / "MOCK_FIDUCIAL" / "images" / r.file) as f:
            psf_fwhm = f[3].header["PSFFWHM"]
        rad = r.half_light_radius_arcsec / 0.168
        q_img.append(_second_moment_axis_ratio(img, 2 * rad, psf_fwhm))
        m = np.hypot(*(np.mgrid[:img.shape[0], :img.shape[1]] - (img.shape[0] - 1) / 2.0)) < 3 * rad
        # neighbours masked, with their 180° twins, as in CAS asymmetry (Conselice 2003)
        c = (img.shape[1] - 1) / 2.0
        labels, _, others = compare_real.segment(img, (c, c))
        neighbour = np.isin(labels, others)
        m &= ~(neighbour | neighbour[::-1, ::-1])
        # minus the asymmetry of the noise alone: E|n1 - n2| = 2σ/√π per pixel (variance plane)
        sigma = np.sqrt(image(universe, "MOCK_FIDUCIAL", r.file, 5))
        noise = (2.0 / np.sqrt(np.pi) * np.sqrt((sigma ** 2 + sigma[::-1, ::-1] ** 2) / 2.0))[m].sum()
        asym.append((np.abs(img - img[::-1, ::-1])[m].sum() - noise) / np.abs(img)[m].sum())
    t["q_img"], t["asym"] = q_img, asym
    assert spearmanr(t.q_img, t.axis_ratio).statistic > 0.6
    # edge-on disks look flatter than face-on ones
    disks = t[t.bulge_fraction < 0.4]
    assert disks[disks.inclination > 70].q_img.median() < disks[disks.inclination < 40].q_img.median() - 0.2
    recent = t[t.merger_recent]
    assert recent.merger_feature.isin(["companion", "tidal"]).all() and len(recent) >= 3
    assert recent.asym.median() > 2 * t[~t.merger_recent].asym.median()


def test_intrinsic_relations(universe):
    t = truth(universe, "MOCK_FIDUCIAL").drop_duplicates(["snapshot", "subhalo_id"])
    hsc = truth(universe, "MOCK_HSC")
    both = pd.concat([t, hsc])
    assert both[both.quenched].color_gr.mean() > both[~both.quenched].color_gr.mean() + 0.2
    assert spearmanr(both.stellar_mass, both.bulge_fraction).statistic > 0.3
    assert spearmanr(both.stellar_mass, both.exsitu_fraction).statistic > 0.3
    assert spearmanr(both.ssfr, both.color_gr).statistic < -0.7
    assert both[both.stellar_mass > 10.6].quenched.mean() > both[both.stellar_mass < 10.2].quenched.mean()
    c = truth(universe, "MOCK_COMPACT").drop_duplicates(["snapshot", "subhalo_id"])
    np.testing.assert_allclose(c.color_gr.to_numpy() - t.color_gr.to_numpy(), -0.15, atol=1e-9)
    # the survey shares the Fiducial mass–size relation; the Compact run sits 0.4 dex below
    fit = np.polyfit(t.stellar_mass, np.log10(t.half_light_radius_kpc), 1)
    resid = lambda d: np.median(np.log10(d.half_light_radius_kpc) - np.polyval(fit, d.stellar_mass))
    assert abs(resid(hsc)) < 0.12
    assert resid(c) == pytest.approx(-0.4, abs=0.05)


# --- survey and X-ray sets --------------------------------------------------------------

def test_survey_catalogue_has_observables_only(universe):
    cat = pd.read_csv(universe["raw"] / "MOCK_HSC" / "catalogue.csv")
    t = truth(universe, "MOCK_HSC")
    assert cat.object_id.is_unique and set(cat.object_id) == set(t.object_id)
    assert {f"{oid}_HSC_GRIZY.fits" for oid in cat.object_id} == set(t.file)
    for col in ("photoz", "g_cmodel_mag", "r_cmodel_mag", "i_cmodel_mag", "petro_r90_arcsec"):
        assert col in cat and cat[col].notna().all()
    assert not set(cat.columns) & {"stellar_mass", "redshift", "sersic_n", "color_gr", "half_light_radius_kpc",
                                   "snapshot", "subhalo_id", "bulge_fraction"}
    m = cat.merge(t, on="object_id")
    assert np.median(np.abs(m.photoz - m.redshift)) < 0.05
    assert np.median(np.abs(m.r_cmodel_mag - m.r_mag)) < 0.05
    assert (m.petro_r90_arcsec > m.petro_r50_arcsec).all()
    assert spearmanr(m.petro_r50_arcsec, m.half_light_radius_arcsec).statistic > 0.7
    assert m.redshift.between(0.1, 0.4).all() and m.redshift.min() < 0.18 and m.redshift.max() > 0.32
    with fits.open(universe["raw"] / "MOCK_HSC" / "images" / t.file.iloc[0]) as h:
        assert "REDSHIFT" not in h[0].header and "SUBHALO" not in h[0].header
        assert h[0].header["OBJID"] == t.object_id.iloc[0]


def test_cluster_rows_are_drawn_once_each_until_they_run_out():
    """The demo's 352 clusters use every usable CCcriteria row once; a larger universe (the
    posterior's X-ray calibration run) draws rows with replacement, reproducibly."""
    from scripts.mock.cc_criteria import draw_rows

    rows_ok = np.arange(100, 452, 2)                                   # 176 usable rows
    every = draw_rows(np.random.default_rng(0), rows_ok, len(rows_ok))
    assert sorted(every) == list(rows_ok)
    some = draw_rows(np.random.default_rng(0), rows_ok, 50)
    assert len(set(some)) == 50 and set(some) <= set(rows_ok)
    many = draw_rows(np.random.default_rng(1), rows_ok, 1000)
    assert len(many) == 1000 and set(many) <= set(rows_ok)
    assert len(set(many)) > 0.9 * len(rows_ok)                           # all rows, repeated
    np.testing.assert_array_equal(many, draw_rows(np.random.default_rng(1), rows_ok, 1000))
    with pytest.raises(ValueError, match="no usable rows"):
        draw_rows(np.random.default_rng(0), np.array([], int), 3)
    with pytest.raises(ValueError, match=r"no usable rows in /x/CCcriteria\.hdf5 at snapshot 99"):
        draw_rows(np.random.default_rng(0), np.array([], int), 3, source="/x/CCcriteria.hdf5 at snapshot 99")


def test_xray_clusters_carry_real_cool_core_parameters(universe):
    x = truth(universe, "MOCK_XRAY")
    real_path = default_cc_criteria_path()
    with h5py.File(real_path) as real, h5py.File(universe["tng"] / "MockTNG-Cluster" / "postprocessing" / "CCcriteria.hdf5") as mock:
        assert set(mock.keys()) == set(real.keys())
        ids = real["HaloIDs"][()]
        np.testing.assert_array_equal(mock["HaloIDs"][()], np.arange(len(mock["HaloIDs"])))
        for key in real.keys():
            if key != "HaloIDs":
                assert mock[key].shape == (len(mock["HaloIDs"]), real[key].shape[1])
        per_halo = x.drop_duplicates("halo_id")
        for _, r in per_halo.iterrows():
            row = np.flatnonzero(ids == r.source_halo_id)[0]
            assert r.central_cooling_time == real["centralCoolingTime"][row, 99]
            assert r.central_entropy == real["centralEntropy"][row, 99]
            np.testing.assert_array_equal(mock["centralCoolingTime"][r.halo_id], real["centralCoolingTime"][row])
    assert x.groupby("halo_id").projection.nunique().eq(3).all()
    grp = il.groupcat.loadHalos(str(universe["tng"] / "MockTNG-Cluster" / "output"), 99,
                                fields=["Group_M_Crit200", "Group_R_Crit200"])
    np.testing.assert_allclose(np.log10(grp["Group_M_Crit200"][x.halo_id] * 1e10 / H), x.m200c, atol=1e-5)
    np.testing.assert_allclose(grp["Group_R_Crit200"][x.halo_id] / H, x.r200c_kpc, rtol=1e-5)
    # cuspier maps for short central cooling times, measured on the noisy counts
    conc = []
    for _, r in x.iterrows():
        with fits.open(universe["raw"] / "MOCK_XRAY" / "images" / r.file) as h:
            img = h[0].data.astype(float)
            assert h[0].header["FOVKPC"] == pytest.approx(2 * r.r200c_kpc)
        n = img.shape[0]
        rr = np.hypot(*(np.mgrid[:n, :n] - (n - 1) / 2.0)) * 2 * r.r200c_kpc / n
        sub = img - np.median(img[rr > r.r200c_kpc])
        conc.append(sub[rr < 100].sum() / sub[rr < 500].sum())
    assert spearmanr(conc, x.central_cooling_time).statistic < -0.6
    assert spearmanr(conc, x.concentration).statistic > 0.6


# --- building blocks --------------------------------------------------------------------

def test_projection_geometry_known_answers():
    n = np.array([0.0, 0.0, 1.0])
    disk = geometry.oblate_matrix(n, 0.2)
    assert geometry.project_ellipsoid(disk, n)[0] == pytest.approx(1.0)
    edge_on_spin = np.array([1.0, 0.0, 0.0])
    q, angle = geometry.project_ellipsoid(geometry.oblate_matrix(edge_on_spin, 0.2), n)
    sx, sy = geometry.project_vector(edge_on_spin, n)
    assert q == pytest.approx(0.2)  # edge-on: the disk's thickness
    assert (angle - np.degrees(np.arctan2(sy, sx))) % 180 == pytest.approx(90.0)  # major axis ⟂ spin
    spin = np.array([np.sin(np.radians(60)), 0.0, np.cos(np.radians(60))])
    q60, _ = geometry.project_ellipsoid(geometry.oblate_matrix(spin, 0.2), n)
    assert q60 == pytest.approx(np.sqrt(np.cos(np.radians(60)) ** 2 + 0.04 * np.sin(np.radians(60)) ** 2))
    assert geometry.inclination(spin, n) == pytest.approx(60.0)
    cams = geometry.camera_directions(4)
    np.testing.assert_allclose(cams @ cams.T, np.where(np.eye(4) > 0, 1.0, -1.0 / 3.0), atol=1e-12)
    many = geometry.camera_directions(7)
    dots = many @ many.T
    np.testing.assert_allclose(np.diag(dots), 1.0)
    assert dots[~np.eye(7, dtype=bool)].max() < 0.9


def test_measure_recovers_sersic_half_light_radius():
    import galsim
    for n_s, hlr in ((1.0, 1.2), (4.0, 0.8)):
        img = galsim.Sersic(n=n_s, half_light_radius=hlr).drawImage(nx=160, ny=160, scale=0.1).array
        cog = measure.CurveOfGrowth(img)
        assert cog.radius_enclosing(0.5) * 0.1 == pytest.approx(hlr, rel=0.02)  # unit total flux
    r = physics.composite_half_light_radius(np.array([0.0, 1.0]), np.array([4.0, 4.0]),
                                            np.array([1.0, 2.0]), np.array([3.0, 5.0]))
    np.testing.assert_allclose(r, [3.0, 2.0], rtol=1e-6)


def test_cli_maps_options_to_build_arguments():
    import config
    from scripts.mock.__main__ import build_kwargs, parse_args
    kw = build_kwargs(parse_args([]))
    assert kw["raw_root"] == config.dataset_raw_path and kw["illustris_root"] == config.illustris_path
    assert (kw["size"], kw["num_projections"], kw["seed"], kw["n_jobs"]) == ("small", 3, 0, 1)
    kw = build_kwargs(parse_args(["--size", "demo", "--num-projections", "2", "--seed", "5", "--workers", "2",
                                  "--raw-root", "/x", "--illustris-root", "/y"]))
    assert (kw["size"], kw["num_projections"], kw["seed"], kw["n_jobs"]) == ("demo", 2, 5, 2)
    assert kw["raw_root"] == Path("/x") and kw["illustris_root"] == Path("/y")
    with pytest.raises(SystemExit):
        parse_args(["--size", "huge"])


def test_fits_writer_bench_writes_the_same_cutout_both_ways(capsys):
    """bench.bench_fits_writer: the mock's fitsio writer and the astropy baseline write the
    same HDU names, dtypes and pixels, and the ratio is printed (no timing asserted)."""
    from bench import bench_fits_writer

    result = bench_fits_writer.main(["--n", "2"])
    assert result["same"] and result["ratio"] > 0
    assert "speed-up fitsio / astropy" in capsys.readouterr().out
