"""Object permanence on synthetic groups: tight clusters vs random, chance computed."""
from math import comb

import numpy as np
import pytest

from scripts.analysis.permanence import chance_hit_rate, object_permanence


def test_chance_matches_enumeration():
    """Hypergeometric formula against exact combinatorics and a simulation."""
    n, g, k = 30, 4, 5
    exact = 1 - comb(n - g, k) / comb(n - 1, k)
    assert chance_hit_rate([g], n, k)[0] == pytest.approx(exact)
    rng = np.random.default_rng(0)
    draws = np.array([rng.choice(n - 1, size=k, replace=False) for _ in range(20000)])
    simulated = np.mean((draws < g - 1).any(axis=1))      # first g-1 "others" are mates
    assert chance_hit_rate([g], n, k)[0] == pytest.approx(simulated, abs=0.01)
    assert chance_hit_rate([1], n, k)[0] == 0.0
    assert chance_hit_rate([n], n, k)[0] == 1.0


def test_tight_clusters_are_recognised():
    rng = np.random.default_rng(1)
    n_obj, n_proj = 200, 3
    centres = rng.normal(size=(n_obj, 16)) * 5
    X = np.repeat(centres, n_proj, axis=0) + 0.05 * rng.normal(size=(n_obj * n_proj, 16))
    ids = np.repeat(np.arange(n_obj) * 7 + 1000, n_proj)      # arbitrary id values
    res = object_permanence(X, ids, ks=(1, 5))
    assert res["top1"] == 1.0 and res["top5"] == 1.0
    assert res["n_scored"] == 600 and res["n_groups"] == 200
    assert res["chance_top1"] == pytest.approx(2 / 599)
    assert res["chance_top5"] == pytest.approx(1 - comb(597, 5) / comb(599, 5))


def test_random_representation_is_at_chance():
    rng = np.random.default_rng(2)
    sizes = rng.integers(1, 6, size=800)                    # mixed group sizes incl. singletons
    ids = np.repeat(np.arange(800), sizes)
    X = rng.normal(size=(len(ids), 8))
    res = object_permanence(X, ids, ks=(1, 5))
    assert res["n_scored"] == int(np.sum(sizes[sizes >= 2]))
    for k in (1, 5):
        chance = res[f"chance_top{k}"]
        se = np.sqrt(chance * (1 - chance) / res["n_scored"])
        assert abs(res[f"top{k}"] - chance) < 4 * se
    assert res["chance_top5"] > res["chance_top1"]
    assert len(res["hits"][1]) == res["n_scored"] == len(res["scored_rows"])


def test_string_ids_and_errors():
    X = np.array([[0.0], [0.1], [5.0], [5.1], [10.0], [10.1]])
    ids = np.array(["a", "a", "b", "b", "c", "c"])
    res = object_permanence(X, ids, ks=(1,))
    assert res["top1"] == 1.0                                # pairs close together on a line
    with pytest.raises(ValueError, match="nothing to score"):
        object_permanence(X, np.arange(6), ks=(1,))
    with pytest.raises(ValueError, match="rows"):
        object_permanence(X[:5], ids)


def test_permanence_ceiling_bench_on_a_known_table():
    """bench/bench_permanence_ceiling.py: projections with identical true magnitudes are
    found exactly; measurement errors larger than the spacing between objects are not."""
    import pandas as pd

    from bench.bench_permanence_ceiling import measure

    rng = np.random.default_rng(1)
    n_obj, n_proj = 30, 3
    base = rng.uniform(18, 22, size=(n_obj, 3))
    rows = []
    for o in range(n_obj):
        for p in range(n_proj):
            g, r, i = base[o]
            rows.append({"object_id": o, "snapshot": 78, "projection": p, "g_mag": g, "r_mag": r,
                         "i_mag": i, "half_light_radius_arcsec": 0.5 + 0.05 * o,
                         "mag_G": g + rng.normal(0, 1.0), "mag_R": r + rng.normal(0, 1.0),
                         "mag_I": i + rng.normal(0, 1.0), "petro_r50_arcsec": 1.0,
                         "petro_r90_arcsec": 2.0 + rng.uniform(),
                         # framing shared by an object's projections (a fixed-fraction crop);
                         # objects 0 and 1 share one edge: a tie that row order must not break
                         "crop_size": 40 + 10 * max(o, 1)})
    result = measure(pd.DataFrame(rows), seed=0).set_index("features")
    assert result.loc["true magnitudes", "top1"] == 1.0
    assert result.loc["true magnitudes + true half-light radius", "top1"] == 1.0
    assert result.loc["measured magnitudes", "top1"] < 0.5
    # every object but the tied pair has its own edge; the pair's 6 images find a mate of
    # their own object only by chance (2 of the 5 others), not by row order
    crop = result.loc["crop edge [px]", "top1"]
    assert (n_obj - 2) / n_obj <= crop < 1.0
    assert (result["images"] == n_obj * n_proj).all()
