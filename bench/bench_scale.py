"""Benchmark: does memory stay flat from 1e5 to 1e6 images (issue 15, "Analyse at 1e6")?

For each of two sizes N (1e5 and 1e6; ``--small``: 2e3 and 2e4) this writes a synthetic
sharded image store of N images of 32x32x3, float16 by default (``--dtype float32``;
shards of ``--shard-size`` rows under an index ``images.h5``, as extract writes them with
``SHARD_SIZE`` and ``STORE_DTYPE``, :mod:`scripts.image_store`), then streams over it

* ``train``: the trainer's input pipeline, :class:`~scripts.model.input_pipeline.PairSampler`
  + :func:`~scripts.model.input_pipeline.pair_dataset` over
  :class:`~scripts.model.input_pipeline.HDF5Images` (byte-offset reads), one epoch capped at
  ``--train-batches`` batches (the same number of batches at both sizes when the cap binds;
  its throughput counts pairs, two image reads each);
* ``embed``: analyse's streaming writer
  :func:`scripts.analysis.representation.compute_representations` over every row, with a
  fixed deterministic embedding (4x4 mean pooling, then a fixed random projection to
  ``--dim`` values) so the encoder costs little and the figures are the pipeline's own;
* ``index``: the neighbour index built from the embed phase's parquet in chunks
  (:func:`~scripts.analysis.representation.iter_vectors` into
  :meth:`~scripts.analysis.neighbours.NeighbourIndex.fit_chunks`, exact at both sizes),
  then a ``kneighbors`` query (k = ``--k``) of ``--queries`` seeded sample rows. The index
  holds N x D float32 vectors, so its RSS grows with N by design: for this phase the
  ratio column compares the *flat part*, peak RSS minus the index's own N x D x 4 bytes.
* ``analyse``: what the analyse stage does with the vectors before its measuring steps,
  with its own functions: the identity table, the streamed standardiser, UMAP and PCA
  fitted on ``--umap-fit`` seeded rows (20,000; 1,000 with ``--small``) and every other
  row transformed chunk by chunk, then the evaluation rows
  of at most ``--eval-objects`` seeded objects (EVALUATION_MAX_OBJECTS; default the smaller
  N, so both sizes hold the same number) read whole. What it holds per row: the identity
  table and the map coordinates.

Each phase (``build`` too) runs in a fresh subprocess that reports its own peak RSS
(``ru_maxrss``), so one phase's allocations never inflate another's figure. The table gives
peak RSS per phase, its ratio at the larger N to the smaller N of the same run (the goal of
issue 15 is <= 1.2; for ``index`` the ratio of the flat parts), store disk use and
throughput (images/s; for ``index`` vectors indexed per second, and queries per second).

What grows with N besides the files: per-row index arrays of 8 bytes per row and column
(the rows to read, their byte offsets, the epoch's permutation) and the identity table
handed to ``compute_representations`` (about 57 bytes per row with pandas' string
columns), about 80 bytes per row in all, ~80 MB at 1e6. The vectors are held one parquet
row group at a time (65,536 rows), so that bound is reached by 1e5 already. The index phase
likewise reads ``--index-batch`` (65,536) rows at a time beside the index itself; at the
``--small`` sizes the whole file is one chunk, so its flat-part ratio there mostly shows
that chunk filling up.

Stores are float16 as issue 15 asks (``extract.STORE_DTYPE: float16``): the trainer's
byte-offset reader (:func:`~scripts.model.input_pipeline.row_offsets`) reads float16 rows
raw and converts them to float32, so the pipeline measured is the one a float16 survey
store gets. Disk use is N x 32 x 32 x 3 x 2 bytes (x 4 with ``--dtype float32``) plus HDF5
overhead.

    .venv/bin/python -m bench.bench_scale --small                 # 2e3 and 2e4, ~1 min
    .venv/bin/python -m bench.bench_scale --json scale.json       # 1e5 and 1e6 (~6.5 GB disk)
    .venv/bin/python -m bench.bench_scale --n 1000 4000           # any two sizes
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scripts.params import STORE_DTYPES

log = logging.getLogger("bench.bench_scale")

IMAGE_SHAPE = (32, 32, 3)
FULL_SIZES = (100_000, 1_000_000)
SMALL_SIZES = (2_000, 20_000)
PHASES = ("build", "train", "embed", "index", "analyse")
RSS_RATIO_GOAL = 1.2
DATASET = "SCALE"
#: Rows the analyse phase fits UMAP and PCA on: 20,000 as in bench_umap, and a small one
#: for --small (the test suite). With the stage's default FIT_SUBSAMPLE (50,000) the phase
#: took 252 s at 10^5 on 2 cores, which extrapolates past this bench's 30 minutes at 10^6.
FULL_UMAP_FIT = 20_000
SMALL_UMAP_FIT = 1_000


def _peak_rss_bytes() -> int:
    """Peak resident set size of this process (Linux reports ``ru_maxrss`` in KiB)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def disk_bytes(folder: Path) -> int:
    """Bytes the files under ``folder`` take on disk (allocated blocks, not apparent size)."""
    return sum(p.stat().st_blocks * 512 for p in Path(folder).rglob("*") if p.is_file())


# --------------------------------------------------------------------------- phases (child side)
def build_store(folder: Path, n: int, shard_size: int, seed: int = 0, block: int = 4096,
                dtype: str = "float16") -> Path:
    """Write a sharded store of ``n`` random images of ``dtype`` into ``folder``; returns
    the index.

    Rows are written ``block`` at a time, so memory is bounded by one block whatever ``n``;
    they are drawn in float32 and converted as extract converts them."""
    from scripts import image_store

    folder.mkdir(parents=True, exist_ok=True)
    counts = [min(shard_size, n - first) for first in range(0, n, shard_size)]
    filters = ["g", "r", "i"]
    for k, first in enumerate(range(0, n, shard_size)):
        rng = np.random.default_rng([seed, k])
        with image_store.create_shard(folder / image_store.shard_name(k), counts[k], IMAGE_SHAPE,
                                      filters, first, dtype) as shard:
            dset = shard[image_store.IMAGES_KEY]
            for begin in range(0, counts[k], block):
                end = min(counts[k], begin + block)
                pixels = rng.standard_normal((end - begin,) + IMAGE_SHAPE, np.float32)
                dset[begin:end] = image_store.to_store_dtype(pixels, dtype)[0]  # |x| << 65504
    image_store.write_index(folder / image_store.IMAGES_FILE, counts, IMAGE_SHAPE, filters,
                            shard_size, dtype)
    return folder / image_store.IMAGES_FILE


def run_train(store: Path, n: int, batch: int, max_batches: int) -> dict:
    """Stream up to one epoch (at most ``max_batches``) of training pairs, as the trainer does."""
    import pandas as pd

    from scripts.model.input_pipeline import HDF5Images, PairSampler, pair_dataset

    table = pd.DataFrame({"dataset": DATASET, "row": np.arange(n, dtype=np.int64),
                          "group": np.arange(n, dtype=np.int64)})
    reader = HDF5Images({DATASET: store})
    sampler = PairSampler(table, [DATASET], batch, positives="augmentations", seed=0)
    steps = min(sampler.steps_per_epoch, max_batches)
    dataset = pair_dataset(sampler, reader, 0, steps).prefetch(2)
    seen, checksum = 0, 0.0
    t0 = time.perf_counter()
    for a, b in dataset.as_numpy_iterator():
        seen += len(a)
        checksum += float(a[:, 0, 0, 0].sum())
    seconds = time.perf_counter() - t0
    reader.close()
    return {"batches": steps, "images": seen, "seconds": seconds, "checksum": checksum}


def projection(dim: int, seed: int = 0) -> np.ndarray:
    """The fixed random projection of the bench's embedding: pooled pixels → ``dim``."""
    pooled = (IMAGE_SHAPE[0] // 4) * (IMAGE_SHAPE[1] // 4) * IMAGE_SHAPE[2]
    return np.random.default_rng(seed).standard_normal((pooled, dim)).astype(np.float32) / np.sqrt(pooled)


def run_embed(store: Path, n: int, out: Path, batch: int, dim: int) -> dict:
    """Embed every row through ``compute_representations`` with a cheap fixed embedding."""
    import pandas as pd
    import pyarrow.parquet as pq

    from scripts.analysis import representation

    weights = projection(dim)

    def embed(images: np.ndarray) -> np.ndarray:
        h, w, c = images.shape[1:]
        pooled = images.reshape(len(images), h // 4, 4, w // 4, 4, c).mean(axis=(2, 4))
        return pooled.reshape(len(images), -1) @ weights

    # the identity table as rows_to_embed returns it (one row per image)
    table = pd.DataFrame({"dataset": DATASET, "row": np.arange(n, dtype=np.int64),
                          "object_id": np.arange(n, dtype=np.int64), "snapshot": 99,
                          "projection": 0, "split": "test"})[list(representation.META_COLUMNS)]
    t0 = time.perf_counter()
    written = representation.compute_representations(embed, table, store.parent.parent, out,
                                                     batch_size=batch)
    seconds = time.perf_counter() - t0
    meta = pq.ParquetFile(out).metadata
    return {"images": written, "rows_in_file": meta.num_rows, "row_groups": meta.num_row_groups,
            "parquet_bytes": out.stat().st_size, "seconds": seconds}


def run_index(parquet: Path, batch: int, n_queries: int, k: int, seed: int = 0) -> dict:
    """Build the neighbour index from ``parquet`` in chunks of ``batch`` rows, then query a
    seeded sample of its rows (each should find itself first, at distance 0)."""
    from scripts.analysis.neighbours import NeighbourIndex
    from scripts.analysis.representation import count_rows, iter_vectors

    t0 = time.perf_counter()
    n = count_rows(parquet, [DATASET])
    index = NeighbourIndex(metric="l2").fit_chunks(iter_vectors(parquet, [DATASET], batch), n=n)
    seconds = time.perf_counter() - t0
    if not index.exact_:
        index.index_.make_direct_map()          # an IVF index reconstructs rows only with it
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n_queries, n), replace=False))
    queries = index.index_.reconstruct_batch(rows)
    t0 = time.perf_counter()
    distances, found = index.kneighbors(queries, k)
    query_seconds = time.perf_counter() - t0
    return {"images": n, "dim": index.d_, "exact": bool(index.exact_), "seconds": seconds,
            "index_bytes": n * index.d_ * 4, "queries": len(rows), "k": k,
            "query_seconds": query_seconds,
            "self_found_first": float(np.mean((found[:, 0] == rows) | (distances[:, 0] == 0)))}


def run_analyse(parquet: Path, fit_subsample: int, max_objects: int, seed: int = 0) -> dict:
    """What the analyse stage does with the vectors before its measuring steps, on the embed
    phase's parquet and with the stage's own functions: the identity table, the streamed
    standardiser, the UMAP and PCA maps fitted on ``fit_subsample`` seeded rows with every
    other row transformed chunk by chunk (:func:`scripts.analysis.steps.step_maps` without
    its figures), and the evaluation rows, a seeded ``max_objects`` objects when there are
    more (``analyse.EVALUATION_MAX_OBJECTS``), read whole as the headline steps get them."""
    from scripts.analysis.embedding_maps import stream_maps
    from scripts.analysis.inputs import evaluation_rows
    from scripts.analysis.representation import VectorSource, read_meta

    t0 = time.perf_counter()
    meta = read_meta(parquet)
    source = VectorSource(parquet)
    n = len(meta)
    umap_xy, pca_xy, _, fit_rows = stream_maps(source, n, fit_subsample=fit_subsample, seed=seed)
    keep, _ = evaluation_rows(meta["dataset"].to_numpy(), meta["object_id"].to_numpy(),
                              (meta["split"] == "test").to_numpy(), max_objects, seed)
    evaluated = source.take(np.flatnonzero(keep))
    return {"images": n, "seconds": time.perf_counter() - t0, "umap_fit_rows": int(len(fit_rows)),
            "evaluation_rows": int(len(evaluated)),
            "finite_maps": bool(np.isfinite(umap_xy).all() and np.isfinite(pca_xy).all())}


def child(args) -> int:
    """One phase in this (fresh) process; prints its result as one JSON line on stdout."""
    rss_start = _peak_rss_bytes()
    store = Path(args.store)
    if args.phase == "build":
        t0 = time.perf_counter()
        build_store(store.parent, args.child_n, args.shard_size, dtype=args.dtype)
        result = {"images": args.child_n, "seconds": time.perf_counter() - t0}
    elif args.phase == "index":
        # imported before the baseline figure (faiss, pyarrow, pandas), as tensorflow below
        import scripts.analysis.neighbours  # noqa: F401
        import scripts.analysis.representation  # noqa: F401

        rss_start = _peak_rss_bytes()
        result = run_index(store.parent.parent / "representation.parquet", args.index_batch,
                           args.queries, args.k)
        result["flat_rss_bytes"] = _peak_rss_bytes() - result["index_bytes"]
    elif args.phase == "analyse":
        import umap  # noqa: F401  (numba and, through umap, TensorFlow: imported before the baseline)

        import scripts.analysis.embedding_maps  # noqa: F401
        import scripts.analysis.inputs  # noqa: F401

        rss_start = _peak_rss_bytes()
        result = run_analyse(store.parent.parent / "representation.parquet", args.umap_fit,
                             args.eval_objects)
    else:
        import tensorflow  # noqa: F401  (imported before the baseline figure, as in the stages)

        rss_start = _peak_rss_bytes()
        if args.phase == "train":
            result = run_train(store, args.child_n, args.batch, args.train_batches)
        else:
            result = run_embed(store, args.child_n, store.parent.parent / "representation.parquet",
                               args.batch, args.dim)
    result.update(peak_rss_bytes=_peak_rss_bytes(), rss_after_imports_bytes=rss_start)
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------- driver (parent side)
def measure(phase: str, store: Path, n: int, args) -> dict:
    """Run ``phase`` for ``n`` images in a fresh interpreter and return its JSON result."""
    cmd = [sys.executable, "-m", "bench.bench_scale", "--phase", phase, "--store", str(store),
           "--child-n", str(n), "--shard-size", str(args.shard_size), "--dtype", args.dtype,
           "--batch", str(args.batch),
           "--train-batches", str(args.train_batches), "--dim", str(args.dim),
           "--index-batch", str(args.index_batch), "--queries", str(args.queries), "--k", str(args.k),
           "--umap-fit", str(args.umap_fit), "--eval-objects", str(args.eval_objects)]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    if done.returncode != 0:
        raise RuntimeError(f"phase {phase} (N={n}) failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compared_rss(result: dict) -> int:
    """The RSS figure compared across sizes: peak RSS, less the index's own N x D x 4 bytes
    for the ``index`` phase (its flat part; the vectors themselves must grow with N)."""
    return result.get("flat_rss_bytes", result["peak_rss_bytes"])


def run(sizes: tuple[int, int], args, workdir: Path) -> dict:
    """All phases for both sizes; the result dict written by ``--json``."""
    results = {}
    for n in sizes:
        folder = workdir / f"n{n}"
        store = folder / DATASET / "images.h5"
        phases = {}
        for phase in PHASES:
            phases[phase] = measure(phase, store, n, args)
            phases[phase]["images_per_s"] = phases[phase]["images"] / max(phases[phase]["seconds"], 1e-9)
            log.info("N=%d %s: peak RSS %.0f MiB, %.0f images/s", n, phase,
                     phases[phase]["peak_rss_bytes"] / 2**20, phases[phase]["images_per_s"])
            if phase == "build":
                phases[phase]["store_disk_bytes"] = disk_bytes(store.parent)
            if phase == "index":
                phases[phase]["queries_per_s"] = (phases[phase]["queries"]
                                                  / max(phases[phase]["query_seconds"], 1e-9))
                log.info("N=%d index: %.0f MiB beyond the index's own %.0f MiB, %.0f queries/s",
                         n, phases[phase]["flat_rss_bytes"] / 2**20,
                         phases[phase]["index_bytes"] / 2**20, phases[phase]["queries_per_s"])
        results[n] = phases
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    small, large = sizes
    ratios = {p: compared_rss(results[large][p]) / compared_rss(results[small][p]) for p in PHASES}
    return {"sizes": list(sizes), "image_shape": list(IMAGE_SHAPE), "dtype": args.dtype,
            "shard_size": args.shard_size, "batch": args.batch, "cpu_count": os.cpu_count(),
            "rss_ratio_goal": RSS_RATIO_GOAL,
            "results": {str(n): r for n, r in results.items()},
            "rss_ratio": ratios, "within_goal": {p: r <= RSS_RATIO_GOAL for p, r in ratios.items()}}


def table(report: dict) -> str:
    """The printed table: one line per phase and size, ratios against the smaller N."""
    small, large = report["sizes"]
    lines = [f"store: {report['dtype']} shards of {report['shard_size']} images",
             f"{'phase':<6} {'N':>9} {'peak RSS MiB':>13} {'RSS / N=' + str(small):>14} "
             f"{'images/s':>10} {'store disk MiB':>15} {'index MiB':>10} {'queries/s':>10}"]
    for phase in PHASES:
        base = compared_rss(report["results"][str(small)][phase])
        for n in (small, large):
            r = report["results"][str(n)][phase]
            disk = f"{r['store_disk_bytes'] / 2**20:.1f}" if "store_disk_bytes" in r else ""
            own = f"{r['index_bytes'] / 2**20:.1f}" if "index_bytes" in r else ""
            qps = f"{r['queries_per_s']:.0f}" if "queries_per_s" in r else ""
            lines.append(f"{phase:<6} {n:>9} {r['peak_rss_bytes'] / 2**20:>13.0f} "
                         f"{compared_rss(r) / base:>14.2f} {r['images_per_s']:>10.0f} {disk:>15} "
                         f"{own:>10} {qps:>10}")
    flat = ", ".join(f"N={n} {report['results'][str(n)]['index']['flat_rss_bytes'] / 2**20:.0f} MiB"
                     for n in (small, large))
    lines.append("index: built in chunks from the embed phase's parquet; its RSS ratio compares the "
                 "flat part, peak RSS minus the index's own N x D x 4 bytes (index MiB), which "
                 f"must grow with N: {flat}")
    verdict = ", ".join(f"{p} {r:.2f}" for p, r in report["rss_ratio"].items())
    lines.append(f"peak RSS ratio N={large} / N={small} (goal <= {report['rss_ratio_goal']}; "
                 f"index: flat part): {verdict}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help=f"sizes {SMALL_SIZES} instead of {FULL_SIZES}")
    parser.add_argument("--n", type=int, nargs=2, metavar=("SMALL", "LARGE"), help="the two sizes")
    parser.add_argument("--shard-size", type=int, help="rows per shard (default N_large / 10)")
    parser.add_argument("--dtype", choices=STORE_DTYPES, default="float16",
                        help="pixel type of the store (default float16, as issue 15 asks)")
    parser.add_argument("--batch", type=int, default=256, help="images per batch (default 256)")
    parser.add_argument("--train-batches", type=int, default=300,
                        help="cap on training batches per size (default 300; one epoch if shorter)")
    parser.add_argument("--dim", type=int, default=64, help="representation size (default 64)")
    parser.add_argument("--index-batch", type=int, default=65536,
                        help="rows per chunk read into the neighbour index (default 65536)")
    parser.add_argument("--queries", type=int, default=1000,
                        help="sample rows queried against the index (default 1000)")
    parser.add_argument("--k", type=int, default=10, help="neighbours per query (default 10)")
    parser.add_argument("--umap-fit", type=int,
                        help="analyse phase: rows UMAP and PCA are fitted on (default "
                             f"{FULL_UMAP_FIT}; --small {SMALL_UMAP_FIT})")
    parser.add_argument("--eval-objects", type=int,
                        help="analyse phase: EVALUATION_MAX_OBJECTS (default: the smaller N)")
    parser.add_argument("--workdir", type=Path, help="where stores are written (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the stores and parquet files")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)  # child processes
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--child-n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.phase:
        return child(args)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    sizes = tuple(args.n) if args.n else (SMALL_SIZES if args.small else FULL_SIZES)
    if not 0 < sizes[0] < sizes[1]:
        parser.error(f"--n {sizes[0]} {sizes[1]}: expected 0 < SMALL < LARGE")
    if args.shard_size is None:
        args.shard_size = max(1, sizes[1] // 10)
    if args.umap_fit is None:
        args.umap_fit = SMALL_UMAP_FIT if args.small or sizes[1] <= SMALL_SIZES[1] else FULL_UMAP_FIT
    if args.eval_objects is None:
        args.eval_objects = sizes[0]
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        report = run(sizes, args, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
            report = run(sizes, args, Path(tmp))
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
        log.info("wrote %s", args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
