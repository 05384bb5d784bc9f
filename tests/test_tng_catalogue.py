"""Tests of the TNG catalogue readers (TNG/): chunk-wise reading, FIELDS, selections,
supplementary catalogues and the real TNG-Cluster CCcriteria / snapshot-redshift table."""
from __future__ import annotations

import tracemalloc

import h5py
import illustris_python as il
import numpy as np
import pytest
from astropy.cosmology import FlatLambdaCDM, Planck15

import config
import TNG
from TNG import groupcat as groupcat_module
from TNG.cccriteria import CCCriteria
from TNG.fields import SFR_FLOOR, SSFR_FLOOR, UnknownFieldError
from TNG.groupcat import GroupCatalogue
from TNG.redshifts import TNG_SNAPSHOTS, load_snapshot_redshifts
from tests import tng_fixtures as fx

REDSHIFTS = config.snapshot_redshifts_path
CC_REAL = config.cc_criteria_path
SNAP = 84


@pytest.fixture(scope="module")
def z84() -> float:
    return float(np.loadtxt(REDSHIFTS)[SNAP])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, z84) -> fx.TinyCatalogue:
    return fx.build_tiny_catalogue(tmp_path_factory.mktemp("tng"), SNAP, z84)


@pytest.fixture(scope="module")
def wide(tmp_path_factory) -> fx.TinyCatalogue:
    return fx.build_wide_catalogue(tmp_path_factory.mktemp("wide"), 200_000, 4)


def log10_msun(raw):
    """Expected log10 mass [M☉] from raw 1e10 M☉/h; NaN for zero (the readers' convention)."""
    msun = raw.astype(np.float64) * 1e10 / fx.HUBBLE_PARAM
    with np.errstate(divide="ignore"):
        return np.where(msun > 0, np.log10(msun), np.nan)


# ----------------------------------------------------------------------------- groupcat
def test_fixture_has_tng_structure(tiny):
    assert len(tiny.chunk_paths) >= 2
    with h5py.File(tiny.chunk_paths[-1]) as f:   # trailing chunk: groups, no subhalos
        assert f["Header"].attrs["Nsubgroups_ThisFile"] == 0
        assert len(f["Subhalo"].keys()) == 0
    assert np.any(tiny.groups["GroupFirstSub"] == -1)
    assert np.any(tiny.subhalos["SubhaloFlag"] == 0)


def test_header_equals_illustris_python(tiny):
    cat = GroupCatalogue(tiny.base_path, SNAP)
    official = il.groupcat.loadHeader(str(tiny.base_path), SNAP)
    assert set(cat.header.attrs) == set(official)
    for key, value in official.items():
        assert cat.header[key] == value
    assert cat.header.hubble_param == official["HubbleParam"]
    assert cat.header.scale_factor == pytest.approx(1 / (1 + official["Redshift"]))
    assert cat.header.num_files == official["NumFiles"]


@pytest.mark.parametrize("object_type, loader", [("Subhalo", il.groupcat.loadSubhalos),
                                                 ("Group", il.groupcat.loadHalos)])
def test_read_equals_illustris_python(tiny, object_type, loader):
    cat = GroupCatalogue(tiny.base_path, SNAP)
    columns = cat.columns(object_type)
    assert set(columns) == set((tiny.subhalos if object_type == "Subhalo" else tiny.groups))
    mine = cat.read(object_type, columns)
    official = loader(str(tiny.base_path), SNAP, fields=columns)
    for column in columns:
        assert mine[column].dtype == official[column].dtype
        np.testing.assert_array_equal(mine[column], official[column])


def test_row_and_component_selection_equal_full_read(tiny, monkeypatch):
    cat = GroupCatalogue(tiny.base_path, SNAP)
    full = cat.read("Subhalo", ["SubhaloMassType", "SubhaloSFR", "SubhaloGrNr"])
    n = cat.count("Subhalo")
    rows = np.random.default_rng(3).integers(0, n, 25)   # unsorted, repeats, all chunks
    rows = np.concatenate([rows, rows[:3], [n - 1, 0]])
    for max_points in (0, 10_000):     # contiguous-block path and point-selection path
        monkeypatch.setattr(groupcat_module, "_MAX_POINT_SELECTION", max_points)
        part = cat.read("Subhalo", ["SubhaloSFR", ("SubhaloMassType", 4), "SubhaloMassType"],
                        rows)
        np.testing.assert_array_equal(part["SubhaloSFR"], full["SubhaloSFR"][rows])
        np.testing.assert_array_equal(part[("SubhaloMassType", 4)],
                                      full["SubhaloMassType"][rows, 4])
        np.testing.assert_array_equal(part["SubhaloMassType"], full["SubhaloMassType"][rows])
    chunks = list(cat.iter_chunks("Subhalo", ["SubhaloGrNr"]))
    assert len(chunks) == len(tiny.chunk_paths) - 1          # the empty chunk is skipped
    np.testing.assert_array_equal(np.concatenate([v["SubhaloGrNr"] for _, v in chunks]),
                                  full["SubhaloGrNr"])
    assert cat.read("Subhalo", ["SubhaloSFR"], [])["SubhaloSFR"].shape == (0,)
    with pytest.raises(IndexError, match="out of range"):
        cat.read("Subhalo", ["SubhaloSFR"], [n])


def test_missing_chunk_and_column_name_the_file(tiny, tmp_path):
    cat = fx.build_tiny_catalogue(tmp_path, SNAP, tiny.redshift, with_supplementary=False)
    reader = GroupCatalogue(cat.base_path, SNAP)
    with pytest.raises(KeyError, match=r"Subhalo/SubhaloNope not in .*fof_subhalo_tab_084\.0"):
        reader.read("Subhalo", ["SubhaloNope"])
    cat.chunk_paths[1].unlink()
    with pytest.raises(FileNotFoundError, match=str(cat.chunk_paths[1]).replace(".", r"\.")):
        GroupCatalogue(cat.base_path, SNAP).read("Subhalo", ["SubhaloSFR"])
    with pytest.raises(FileNotFoundError, match="fof_subhalo_tab_084.0.hdf5"):
        GroupCatalogue(cat.base_path.parent / "nowhere", SNAP).header


def spy_dataset_reads(monkeypatch) -> list[str]:
    """Record the name of every HDF5 dataset whose data is read from now on."""
    touched = []
    original = h5py.Dataset.__getitem__

    def spy(self, args, *rest, **kw):
        touched.append(self.name)
        return original(self, args, *rest, **kw)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy)
    return touched


def test_one_column_read_touches_only_that_column(wide, monkeypatch):
    cat = GroupCatalogue(wide.base_path, wide.snapshot)
    cat.chunk_ranges("Subhalo")
    touched = spy_dataset_reads(monkeypatch)
    tracemalloc.start()
    sfr = cat.read("Subhalo", ["SubhaloSFR"])["SubhaloSFR"]
    _, peak_full = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert set(touched) == {"/Subhalo/SubhaloSFR"}
    np.testing.assert_array_equal(sfr, wide.subhalos["SubhaloSFR"])
    column = wide.subhalos["SubhaloSFR"].nbytes
    all_columns = sum(v.nbytes for v in wide.subhalos.values())
    assert all_columns > 20 * column
    assert peak_full < 2.5 * column          # output + one chunk, never other columns
    rows = np.arange(0, len(sfr), 997)
    touched.clear()
    tracemalloc.start()
    part = cat.read("Subhalo", [("SubhaloMassType", 4)], rows)[("SubhaloMassType", 4)]
    _, peak_rows = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert set(touched) == {"/Subhalo/SubhaloMassType"}
    np.testing.assert_array_equal(part, wide.subhalos["SubhaloMassType"][rows, 4])
    # one component of one chunk at most: far below the (N, 6) column
    assert peak_rows < wide.subhalos["SubhaloMassType"].nbytes / 6


# ----------------------------------------------------------------------------- fields
def test_subhalo_fields_equal_hand_conversions(tiny):
    reader = TNG.Subhalo(tiny.base_path, SNAP)
    ids = reader.select()
    df = reader.fields(["subhalo_id", "snapshot", "z", "stellar_mass", "mass_in_rad",
                        "halo_mass", "sfr", "ssfr", "half_mass_radius_kpc", "is_central"], ids)
    s, g = tiny.subhalos, tiny.groups
    h, a = fx.HUBBLE_PARAM, tiny.time
    assert df.index.name == "subhalo_id"
    np.testing.assert_array_equal(df.index, ids)
    np.testing.assert_array_equal(df["subhalo_id"], ids)
    assert (df["snapshot"] == SNAP).all() and np.allclose(df["z"], tiny.redshift)
    mstar = s["SubhaloMassType"][ids, 4]
    assert np.any(mstar == 0)
    np.testing.assert_allclose(df["stellar_mass"], log10_msun(mstar))
    np.testing.assert_allclose(df["mass_in_rad"], log10_msun(s["SubhaloMassInRadType"][ids, 4]))
    grnr = s["SubhaloGrNr"][ids]
    np.testing.assert_allclose(df["halo_mass"], log10_msun(g["Group_M_Crit200"][grnr]))
    sfr = s["SubhaloSFR"][ids].astype(np.float64)
    np.testing.assert_allclose(df["sfr"], np.log10(np.clip(sfr, SFR_FLOOR, None)))
    assert np.any(sfr == 0) and np.all(np.isfinite(df["sfr"]))
    mstar_msun = mstar.astype(np.float64) * 1e10 / h
    with np.errstate(divide="ignore", invalid="ignore"):
        expected_ssfr = np.where(mstar > 0, np.log10(np.clip(sfr / mstar_msun, SSFR_FLOOR,
                                                             None)), np.nan)
    np.testing.assert_allclose(df["ssfr"], expected_ssfr)
    np.testing.assert_allclose(df["half_mass_radius_kpc"],
                               s["SubhaloHalfmassRadType"][ids, 4].astype(np.float64) * a / h)
    np.testing.assert_array_equal(df["is_central"], g["GroupFirstSub"][grnr] == ids)
    assert df["is_central"].dtype == bool and df["is_central"].any() and not df["is_central"].all()


def test_lookback_is_planck15_like(tiny):
    df = TNG.Subhalo(tiny.base_path, SNAP).fields(["lookback"], [0, 1])
    tng = FlatLambdaCDM(H0=67.74, Om0=0.3089)
    np.testing.assert_allclose(df["lookback"], tng.lookback_time(tiny.redshift).value)
    # independent known answer: astropy's Planck15 (with radiation, neutrinos), within 0.1 %
    np.testing.assert_allclose(df["lookback"], Planck15.lookback_time(tiny.redshift).value,
                               rtol=1e-3)


def test_selection_by_stellar_mass_and_flag(tiny):
    reader = TNG.Subhalo(tiny.base_path, SNAP)
    mstar = tiny.subhalos["SubhaloMassType"][:, 4].astype(np.float64) * 1e10 / fx.HUBBLE_PARAM
    flag = tiny.subhalos["SubhaloFlag"]
    lo, hi = np.quantile(mstar[mstar > 0], [0.2, 0.8])
    expected = np.flatnonzero((flag == 1) & (mstar >= lo) & (mstar <= hi))
    np.testing.assert_array_equal(reader.select(lo, hi), expected)
    np.testing.assert_array_equal(reader.select(), np.flatnonzero(flag == 1))
    assert len(reader.select()) < reader.count
    # ids restrict the selection and keep their order
    some = np.flatnonzero(flag == 0)[:2].tolist() + expected[::-1][:3].tolist()
    np.testing.assert_array_equal(reader.select(lo, hi, ids=some), expected[::-1][:3])
    with pytest.raises(ValueError, match="min_stellar_mass"):
        reader.select(hi, lo)


def test_unknown_field_lists_available(tiny):
    reader = TNG.Subhalo(tiny.base_path, SNAP)
    with pytest.raises(UnknownFieldError) as err:
        reader.fields(["stellar_mass", "colour_of_the_sky"], [0])
    message = str(err.value)
    assert "colour_of_the_sky" in message
    for name in reader.available_fields():
        assert name in message
    assert "stellar_mass" in err.value.available
    with pytest.raises(UnknownFieldError, match="exsitu_fraction.*stellar_assembly"):
        reader.fields(["exsitu_fraction"], [0])      # needs SubhaloStellar
    with pytest.raises(UnknownFieldError, match="m200c.*group-level"):
        reader.fields(["m200c"], [0])


def test_fields_read_only_declared_columns(tiny, monkeypatch):
    reader = TNG.Subhalo(tiny.base_path, SNAP)
    reader.groupcat.chunk_ranges("Subhalo")
    reader.groupcat.column_info("Subhalo", "SubhaloSFR")
    touched = spy_dataset_reads(monkeypatch)
    reader.fields(["sfr", "z"], [0, 5, 2])
    assert set(touched) == {"/Subhalo/SubhaloSFR"}


def test_empty_ids_and_bad_ids(tiny):
    reader = TNG.SubhaloStellar(tiny.base_path, SNAP, REDSHIFTS)
    df = reader.fields(["stellar_mass", "lookback_last_major_merger"], [])
    assert len(df) == 0 and list(df.columns) == ["stellar_mass", "lookback_last_major_merger"]
    with pytest.raises(IndexError, match="outside"):
        reader.fields(["stellar_mass"], [reader.count])


# ----------------------------------------------------------------------------- supplementary
def test_supplementary_fields(tiny, z84):
    reader = TNG.SubhaloStellar(tiny.base_path, SNAP, snapshot_redshifts_path=REDSHIFTS)
    assert all(reader.present().values())
    ids = np.arange(reader.count)
    df = reader.fields(["exsitu_fraction", "snap_last_major_merger",
                        "lookback_last_major_merger", "mass_last_major_merger",
                        "root_descendant_id", "stellar_mass"], ids)
    sa, mh = tiny.supplementary["stellar_assembly"], tiny.supplementary["merger_history"]
    ex = sa["StellarMassExSitu"].astype(np.float64)
    tot = ex + sa["StellarMassInSitu"]
    with np.errstate(invalid="ignore", divide="ignore"):
        np.testing.assert_allclose(df["exsitu_fraction"], np.where(tot > 0, ex / tot, np.nan))
    snap = mh["SnapNumLastMajorMerger"]
    np.testing.assert_array_equal(df["snap_last_major_merger"],
                                  np.where(snap >= 0, snap, np.nan))
    table = np.loadtxt(REDSHIFTS)
    tng = FlatLambdaCDM(H0=67.74, Om0=0.3089)
    never = snap < 0
    z_merger = table[snap[~never]]
    expected = (tng.age(z84) - tng.age(z_merger)).to_value("Gyr")
    np.testing.assert_allclose(df["lookback_last_major_merger"][~never], expected, atol=1e-9)
    assert np.all(np.isnan(df["lookback_last_major_merger"][never]))
    assert df["lookback_last_major_merger"].iloc[0] == pytest.approx(0.0, abs=1e-9)
    assert np.all(df["lookback_last_major_merger"][~never] >= -1e-9)
    np.testing.assert_allclose(df["mass_last_major_merger"][~never],
                               log10_msun(mh["MassLastMajorMerger"][~never]))
    assert np.all(np.isnan(df["mass_last_major_merger"][never]))
    np.testing.assert_array_equal(df["root_descendant_id"],
                                  tiny.supplementary["root_descendant"]["RootDescendantID"])
    assert df["root_descendant_id"].dtype == np.int64


def test_missing_supplementary_file_is_named(tiny, tmp_path):
    cat = fx.build_tiny_catalogue(tmp_path, SNAP, tiny.redshift, seed=5)
    missing = cat.postprocessing_path / "MergerHistory" / f"MergerHistory_{SNAP:03d}.hdf5"
    missing.unlink()
    reader = TNG.SubhaloStellar(cat.base_path, SNAP, REDSHIFTS)
    assert reader.present() == {"stellar_assembly": True, "merger_history": False,
                                "root_descendant": True}
    assert len(reader.fields(["exsitu_fraction"], [0, 1])) == 2
    with pytest.raises(FileNotFoundError, match=f"snap_last_major_merger.*{missing.name}"):
        reader.fields(["snap_last_major_merger"], [0])
    with pytest.raises(ValueError, match="snapshot_redshifts_path"):
        TNG.SubhaloStellar(tiny.base_path, SNAP).fields(["lookback_last_major_merger"], [0])


# ----------------------------------------------------------------------------- groups + CC
def test_cccriteria_real_file():
    cc = CCCriteria(CC_REAL)
    with h5py.File(CC_REAL) as f:
        halo_ids = f["HaloIDs"][()]
        tcool = f["centralCoolingTime"][()]
        tflag = f["centralCoolingTime_flag"][()]
        entropy = f["centralEntropy"][()]
    assert halo_ids.shape == (352,) and tcool.shape == (352, 100)
    rows = [7, 0, 300]
    absent = int(halo_ids.max()) + 1
    for snapshot in (99, 84):
        got = cc.read(["centralCoolingTime", "centralCoolingTime_flag", "centralEntropy"],
                      list(halo_ids[rows]) + [absent], snapshot)
        np.testing.assert_array_equal(got["centralCoolingTime"][:3], tcool[rows, snapshot])
        np.testing.assert_array_equal(got["centralCoolingTime_flag"][:3], tflag[rows, snapshot])
        np.testing.assert_array_equal(got["centralEntropy"][:3], entropy[rows, snapshot])
        assert np.isnan(got["centralCoolingTime"][3])
    # Lehle et al. (2024) classes behind the flags: SCC t_cool < 1 Gyr ≤ WCC < 7.7 Gyr ≤ NCC
    all_99 = cc.read(["centralCoolingTime", "centralCoolingTime_flag"], halo_ids, 99)
    t, flag = all_99["centralCoolingTime"], all_99["centralCoolingTime_flag"]
    np.testing.assert_array_equal(flag == 0, t < 1.0)
    np.testing.assert_array_equal(flag == 2, t >= 7.7)
    assert {0.0, 1.0, 2.0} == set(np.unique(flag))
    with pytest.raises(IndexError, match="snapshot axis"):
        cc.read(["centralCoolingTime"], halo_ids[:1], 100)


def test_cccriteria_read_all_checks_the_structure(tmp_path):
    """The one reader of CCcriteria.hdf5 (pipeline and mock): whole arrays as stored,
    missing criteria and wrong shapes named."""
    everything = CCCriteria(CC_REAL).read_all()
    with h5py.File(CC_REAL) as f:
        assert set(everything) == set(f)
        for key in f:
            np.testing.assert_array_equal(everything[key], f[key][()])
    broken = tmp_path / "CCcriteria.hdf5"
    arrays = {k: v for k, v in everything.items() if k not in ("HaloIDs", "centralEntropy_flag")}
    fx.write_cc_criteria(broken, everything["HaloIDs"], arrays)
    with pytest.raises(KeyError, match="centralEntropy_flag"):
        CCCriteria(broken).read_all()
    arrays["centralEntropy_flag"] = everything["centralEntropy_flag"][:, 0]
    fx.write_cc_criteria(broken, everything["HaloIDs"], arrays)
    with pytest.raises(ValueError, match="centralEntropy_flag has shape"):
        CCCriteria(broken).read_all()


def test_snapshot_redshift_table_is_checked(tmp_path):
    """One reader of the snapshot→redshift table: every TNG snapshot, finite z ≥ 0."""
    table = load_snapshot_redshifts(REDSHIFTS)
    assert len(table) == TNG_SNAPSHOTS and table[-1] == pytest.approx(0.0, abs=1e-6)
    short = tmp_path / "short.txt"
    np.savetxt(short, table[:50])
    with pytest.raises(ValueError, match=f"{short}.*≥{TNG_SNAPSHOTS} lines"):
        load_snapshot_redshifts(short)
    negative = tmp_path / "negative.txt"
    np.savetxt(negative, np.r_[table[:-1], -1.0])
    with pytest.raises(ValueError, match="finite non-negative"):
        load_snapshot_redshifts(negative)
    with pytest.raises(FileNotFoundError, match="config.snapshot_redshifts_path"):
        load_snapshot_redshifts(tmp_path / "absent.txt")

def test_group_fields_and_selection(tiny, tmp_path):
    # CCcriteria in the real structure, HaloIDs = groups of the tiny catalogue, values
    # copied from real TNG-Cluster halos
    with h5py.File(CC_REAL) as f:
        real = {k: f[k][()] for k in f if k != "HaloIDs"}
    src_rows = np.array([0, 4, 9, 15])                  # real halos (rows of the file)
    group_ids = np.array([3, 0, 11, 7])                 # their stand-ins in the catalogue
    cc_path = tmp_path / "CCcriteria.hdf5"
    fx.write_cc_criteria(cc_path, group_ids, {k: v[src_rows] for k, v in real.items()})
    reader = TNG.Group(tiny.base_path, SNAP, cc_criteria_path=cc_path)
    ids = np.array([0, 3, 7, 11, 20])                   # 20 is not in CCcriteria
    df = reader.fields(["group_id", "m200c", "r200c_kpc", "central_cooling_time",
                        "central_entropy", "concentration", "cool_core", "cool_core_class",
                        "z", "lookback"], ids)
    g = tiny.groups
    assert df.index.name == "group_id"
    m200 = g["Group_M_Crit200"][ids]
    np.testing.assert_allclose(df["m200c"], log10_msun(m200))
    np.testing.assert_allclose(df["r200c_kpc"], g["Group_R_Crit200"][ids].astype(np.float64)
                               * tiny.time / fx.HUBBLE_PARAM)
    order = [list(group_ids).index(i) for i in ids[:4]]
    expect_rows = src_rows[order]
    np.testing.assert_array_equal(df["central_cooling_time"][:4],
                                  real["centralCoolingTime"][expect_rows, SNAP])
    np.testing.assert_array_equal(df["central_entropy"][:4],
                                  real["centralEntropy"][expect_rows, SNAP])
    np.testing.assert_array_equal(df["concentration"][:4],
                                  real["concentrationPhys"][expect_rows, SNAP])
    flag = real["centralCoolingTime_flag"][expect_rows, SNAP]
    np.testing.assert_array_equal(df["cool_core_class"][:4], flag)
    np.testing.assert_array_equal(df["cool_core"][:4],
                                  np.where(np.isnan(flag), np.nan, (flag == 0) * 1.0))
    assert df.iloc[4][["central_cooling_time", "cool_core"]].isna().all()
    # selection by M200c in physical M☉
    m_all = g["Group_M_Crit200"].astype(np.float64) * 1e10 / fx.HUBBLE_PARAM
    lo, hi = np.quantile(m_all[m_all > 0], [0.25, 0.75])
    np.testing.assert_array_equal(reader.select(lo, hi),
                                  np.flatnonzero((m_all >= lo) & (m_all <= hi)))
    # default CCcriteria location: <SIM>/postprocessing/CCcriteria.hdf5
    default = TNG.Group(tiny.base_path, SNAP)
    assert default.cc_criteria.path == tiny.postprocessing_path / "CCcriteria.hdf5"
    with pytest.raises(FileNotFoundError, match="cool_core.*CCcriteria.hdf5"):
        default.fields(["cool_core"], [0])
    assert len(default.fields(["m200c"], [0])) == 1
