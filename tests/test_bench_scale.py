"""bench.bench_scale: its --small mode (2e3 and 2e4 images) — every phase reports its
figures, the embedding wrote one row per image, the index was built from all of them, the
store takes the bytes of N float16 images (its default dtype), and the printed table
carries the ratios against the smaller size (the index's flat part for the index phase)."""
from __future__ import annotations

import json

import numpy as np

from bench import bench_scale


def test_build_store_is_a_readable_sharded_store(tmp_path):
    from scripts import image_store
    from scripts.model.input_pipeline import HDF5Images

    index = bench_scale.build_store(tmp_path / "S", 50, shard_size=20)
    assert len(image_store.shard_files(index.parent)) == 3
    reader = HDF5Images({"S": index})
    try:
        assert reader._offsets["S"] is not None, "the bench store must take the byte-offset path"
        images = reader.read(np.zeros(50, int), np.arange(50))
    finally:
        reader.close()
    assert images.shape == (50,) + bench_scale.IMAGE_SHAPE
    assert np.isfinite(images).all() and images.std() > 0.5


def test_small_run_reports_every_phase(tmp_path, capsys):
    out = tmp_path / "scale.json"
    small, large = bench_scale.SMALL_SIZES                  # the --small mode: 2e3 and 2e4
    assert bench_scale.main(["--small", "--batch", "64", "--train-batches", "5",
                             "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["sizes"] == [small, large]
    assert report["dtype"] == "float16"  # the default, as issue 15 asks
    image_bytes = int(np.prod(bench_scale.IMAGE_SHAPE)) * 2
    for n in (small, large):
        r = report["results"][str(n)]
        assert set(r) == set(bench_scale.PHASES)
        for phase in bench_scale.PHASES:
            assert r[phase]["peak_rss_bytes"] >= r[phase]["rss_after_imports_bytes"] > 0
            assert r[phase]["images_per_s"] > 0
        assert r["build"]["images"] == n
        assert r["embed"]["images"] == r["embed"]["rows_in_file"] == n
        # N float16 images plus HDF5 overhead (headers, chunk index, the small index file)
        assert n * image_bytes <= r["build"]["store_disk_bytes"] <= n * image_bytes * 1.1 + (1 << 20)
        assert r["train"]["images"] == r["train"]["batches"] * 64
        # the index phase read the embed phase's parquet back in chunks, all of it
        index = r["index"]
        assert index["images"] == n and index["exact"]
        assert index["index_bytes"] == n * index["dim"] * 4
        assert index["flat_rss_bytes"] == index["peak_rss_bytes"] - index["index_bytes"] > 0
        assert index["queries"] == min(1000, n) and index["queries_per_s"] > 0
        assert index["self_found_first"] == 1.0
        # the analyse phase mapped every row and read the capped evaluation rows whole
        analyse = r["analyse"]
        assert analyse["images"] == n and analyse["finite_maps"]
        assert analyse["umap_fit_rows"] == min(n, bench_scale.SMALL_UMAP_FIT)
        assert analyse["evaluation_rows"] == small       # --eval-objects: the smaller N
    assert report["results"][str(large)]["train"]["batches"] == 5
    for phase in bench_scale.PHASES:
        expected = (bench_scale.compared_rss(report["results"][str(large)][phase])
                    / bench_scale.compared_rss(report["results"][str(small)][phase]))
        assert report["rss_ratio"][phase] == expected
        assert report["within_goal"][phase] == (expected <= bench_scale.RSS_RATIO_GOAL)
    printed = capsys.readouterr().out
    assert f"RSS / N={small}" in printed and "store disk MiB" in printed
    assert printed.count("\nembed") == 2 and "goal <= 1.2" in printed
    assert printed.count("\nindex ") == 2 and "flat part" in printed and "queries/s" in printed
