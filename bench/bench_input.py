"""Benchmark: can the input pipeline feed the train step?

Measures, in one run, on a store of 64×64×3 images and global batch 128 (one image = one
positive pair):

- raw reads: HDF5 → ``tf.data`` (:func:`scripts.model.data.pair_dataset`, both views' rows),
  and, as a reference for the reader, the same rows read one by one;
- the full input pipeline of the train stage: reads + augmentation (params.yaml's
  production settings: any-angle rotation, flips, zoom 1–1.5, shift 0.1, blur σ ≤ 2 px,
  noise, flux scaling) + normalisation, in the parallel ``tf.data`` map
  (``augment_on="input"``);
- the train step's consumption: ResNet-18 (width 1, standard stem) compiled step on
  ready views (as in ``bench.bench_train``).

Ratio = pipeline images/s ÷ step images/s (goal ≥ 3: the accelerator never waits). On a
CPU-only machine both compete for the same cores, so the ratio there says little about
a GPU node; run it on the training machine.

    .venv/bin/python -m bench.bench_input              # quick: 12 batches, 3 timed steps
    .venv/bin/python -m bench.bench_input --batches 50 --steps 10
"""
from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.bench_train import BATCH, IMAGE, bench_params, our_step_times, write_store

log = logging.getLogger("bench.bench_input")


def pipeline_rate(dataset, batches: int) -> float:
    """Images/s of iterating ``batches`` batches (the first, which fills buffers and traces
    the map functions, excluded)."""
    it = iter(dataset)
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * BATCH / (time.perf_counter() - t0)


def read_rates(reader, sampler, batches: int) -> tuple[float, float]:
    """Pairs/s of :meth:`HDF5Images.read` (h5py fancy indexing of the sorted rows) and of a
    per-row read of the same rows, on the same batches (a reference for the reader)."""
    ds = reader._dataset(reader.names[0])
    picks = [sampler.batch(k) for k in range(batches)]
    t0 = time.perf_counter()
    for sa, ra, sb, rb in picks:
        reader.read(sa, ra), reader.read(sb, rb)
    fancy = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _, ra, _, rb in picks:
        np.stack([ds[int(k)] for k in ra]), np.stack([ds[int(k)] for k in rb])
    per_row = time.perf_counter() - t0
    return batches * BATCH / fancy, batches * BATCH / per_row


def run(batches: int, steps: int, n_images: int) -> dict:
    from scripts.model.data import pair_dataset
    from scripts.model.trainer import Trainer
    from scripts.train import read_inputs

    params = bench_params()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_store(root, n_images, IMAGE)
        table, stores = read_inputs(params, root)
        trainer = Trainer(params.train, stores, table, root / "run", progress=False)
        fancy_rate, per_row_rate = read_rates(trainer.reader, trainer.sampler, min(batches, 4))
        raw = pair_dataset(trainer.sampler, trainer.reader, 0, batches + 1).prefetch(2)
        raw_rate = pipeline_rate(raw, batches)
        full = trainer._dataset(trainer.sampler, 0, batches + 1, 0)
        full_rate = pipeline_rate(full, batches)
        del trainer
        times = our_step_times(steps, root)
    step_rate = BATCH / float(np.median(times[1:]))
    return {"read_fancy_images_per_s": fancy_rate, "read_per_row_images_per_s": per_row_rate,
            "raw_images_per_s": raw_rate, "pipeline_images_per_s": full_rate,
            "step_images_per_s": step_rate, "ratio": full_rate / step_rate}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=12, help="timed input batches (default 12)")
    parser.add_argument("--steps", type=int, default=3, help="timed train steps (default 3)")
    parser.add_argument("--images", type=int, default=4096, help="images in the store")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for noisy in ("scripts", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    r = run(args.batches, args.steps, args.images)
    log.info("HDF5Images.read (h5py fancy indexing) %.0f pairs/s vs per-row reads of the same "
             "rows %.0f pairs/s (ratio %.1f)", r["read_fancy_images_per_s"],
             r["read_per_row_images_per_s"],
             r["read_per_row_images_per_s"] / r["read_fancy_images_per_s"])
    log.info("%dx%dx3, batch %d: raw HDF5 reads %.0f images/s; reads + augmentation + "
             "normalisation %.0f images/s; ResNet-18 train step consumes %.1f images/s; "
             "ratio pipeline/step %.1f (goal >= 3)", IMAGE, IMAGE, BATCH, r["raw_images_per_s"],
             r["pipeline_images_per_s"], r["step_images_per_s"], r["ratio"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
