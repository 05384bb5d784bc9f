"""Size presets of the mock universe: how many objects and how many pixels.

``small`` is for tests (a few seconds); ``medium`` for the analyse known-answer tests
(100 observed galaxies, about 20 s); ``demo`` gives a few thousand images for the
end-to-end demo (about 3 minutes on 2 cores with joblib/loky); ``science`` three times
the demo's galaxies for the science preset (``make science``); ``posterior`` and
``posterior_xray`` the galaxies and the clusters of the posterior stage's known-answer tests
on the mock universe, which render one image per object (tests/test_infer_mock_calibration.py).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class UniverseSize:
    """Counts and image sizes for one preset.

    n_groups: FoF groups hosting galaxies in each galaxy run (both runs share these initial
        conditions); n_empty_groups: extra small FoF groups without subhalos (GroupFirstSub = −1);
    n_hsc_groups: groups drawn for the observed survey; n_hsc: observed galaxies kept;
    n_clusters: groups in MockTNG-Cluster (each takes a row of the real CCcriteria file, 352
        usable; beyond that rows are drawn with replacement);
    galaxy_npix: (min, max) side of galaxy cut-outs in pixels (the field of view covers 15
        stellar half-mass radii, :data:`scripts.mock.scene.FOV_HALF_MASS_RADII`, and is
        clipped to this range; the demo's cap lets the default crop of params.demo.yaml
        stay inside the frame for all but a few per cent of the galaxies, the test
        presets keep theirs small and rely on the extract stage's noise padding);
    xray_npix: side of the X-ray maps (field of view 2 R200c); num_files: chunk files per
        group catalogue.
    """

    name: str
    n_groups: int
    n_empty_groups: int
    n_hsc_groups: int
    n_hsc: int
    n_clusters: int
    galaxy_npix: tuple[int, int]
    xray_npix: int
    num_files: int


SIZES = {
    "small": UniverseSize(
        # 14 observed galaxies, no more than the 15 independent simulated objects (merger
        # trees): the realism measures then score every observed image
        name="small", n_groups=9, n_empty_groups=3, n_hsc_groups=20, n_hsc=14, n_clusters=8,
        galaxy_npix=(48, 64), xray_npix=48, num_files=3,
    ),
    # the science tests of analyse: enough observed galaxies (100) for stable realism metrics
    "medium": UniverseSize(
        name="medium", n_groups=15, n_empty_groups=3, n_hsc_groups=125, n_hsc=100, n_clusters=4,
        galaxy_npix=(40, 56), xray_npix=32, num_files=2,
    ),
    # every usable row of the real CCcriteria file becomes a cluster: with 200 the X-ray
    # posterior's test split held 64 clusters (binomial error of a 68 % coverage ±0.058,
    # more than the ±0.05 asked) and early stopping saw 17; with 352 it holds 121 and 32
    "demo": UniverseSize(
        name="demo", n_groups=130, n_empty_groups=40, n_hsc_groups=450, n_hsc=600,
        n_clusters=352, galaxy_npix=(64, 224), xray_npix=96, num_files=4,
    ),
    # the science preset (make science): three times the demo's galaxies, so the test split
    # holds ~300 independent merger trees per simulated set; few clusters (not trained on)
    "science": UniverseSize(
        name="science", n_groups=390, n_empty_groups=120, n_hsc_groups=1350, n_hsc=1800,
        n_clusters=8, galaxy_npix=(64, 224), xray_npix=48, num_files=4,
    ),
    # the posterior stage's calibration on the mock universe: ~3000 galaxies (each at two
    # snapshots), so that one image per galaxy gives a test split of ~1300 independent objects
    # (binomial error of a 68 % coverage ±0.013; at 1000 groups, ~900 objects, the test's own
    # run passed by 0.009); the test renders only MOCK_FIDUCIAL
    "posterior": UniverseSize(
        name="posterior", n_groups=1500, n_empty_groups=0, n_hsc_groups=20, n_hsc=10,
        n_clusters=4, galaxy_npix=(64, 224), xray_npix=32, num_files=2,
    ),
    # the same for the X-ray posterior (M200c, central cooling time): 3600 clusters, one map
    # each, so the test split holds ~1750; more than the 352 real CCcriteria rows, which are
    # then drawn with replacement (scripts.mock.cc_criteria.draw_rows); the test renders only
    # MOCK_XRAY, at the demo's map size
    "posterior_xray": UniverseSize(
        name="posterior_xray", n_groups=9, n_empty_groups=0, n_hsc_groups=20, n_hsc=10,
        n_clusters=3600, galaxy_npix=(48, 64), xray_npix=96, num_files=2,
    ),
}


def get_size(name: "str | UniverseSize") -> UniverseSize:
    """Preset by name (a :class:`UniverseSize` is returned as it is, for benches that vary
    one count); raises with the valid names otherwise."""
    if isinstance(name, UniverseSize):
        return name
    try:
        return SIZES[name]
    except KeyError:
        raise ValueError(f"unknown mock universe size {name!r}; expected one of {sorted(SIZES)}") from None
