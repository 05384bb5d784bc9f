"""Benchmark: the train stage's custom step against a plain Keras ``fit`` of the same model,
loss and optimizer, and peak memory of a training run at two dataset sizes.

1. **Step throughput** (images/s, one image = one positive pair, i.e. two views through
   the network): ResNet-18 (width 1, standard stem) at 64×64×3, global batch 128, LARS
   with warm-up + cosine; the same pre-made views are fed to

   - ours: :class:`scripts.model.trainer.Trainer`'s compiled step (``strategy.run``,
     replica-scaled NT-Xent, one forward pass over both views);
   - baseline: ``keras.Model.fit`` on a wrapper with the same SimCLR model (both views
     concatenated in one pass), the same NT-Xent as a Keras loss and the same optimizer
     (``jit_compile=False`` in both, so both run the same kernels).

   The first step (tracing) is excluded; the median of the timed steps is reported.
2. **XLA on the CPU at a preset's size** (``--jit-preset params.demo.yaml``): the same
   step of the preset's model (architecture, width, stem, head, batch; its IMAGE_SIZE)
   without and with ``JIT_COMPILE``, alternating step by step. XLA is ~12× slower on this
   CPU for the full-size step above; for the demo's tiny model its fusion of the many
   small kernels wins instead. The preset's ``JIT_COMPILE`` is chosen from this ratio.
3. **Peak memory** (max RSS of a fresh process) of a short tiny-model training run over
   stores of N₁ and N₂ = 8·N₁ images: the stores are streamed from HDF5, so the peak
   must not grow with N (ratio ≈ 1).

    .venv/bin/python -m bench.bench_train            # quick: 3 timed steps, N = 2k/16k
    .venv/bin/python -m bench.bench_train --steps 20 --sizes 5000,80000
    .venv/bin/python -m bench.bench_train --jit-preset params.demo.yaml --steps 15
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench.bench_train")

IMAGE = 64
BATCH = 128


#: The production augmentation of params.yaml (rotation, flips, zoom, shift, blur, noise, flux).
AUGMENTATION = {"ROTATION": True, "FLIP": True, "ZOOM": [1.0, 1.5], "TRANSLATE": 0.1,
                "BLUR_SIGMA": [0.0, 2.0], "NOISE_STD": [0.0, 0.08], "FLUX_SCALE": [0.8, 1.25]}


def bench_params(**train):
    """Params of the benchmarked run (synthetic set SYNTH, no validation)."""
    from tests.test_train import make_params

    base = dict(width_multiplier=1.0, stem="standard", batch_size=BATCH, head_hidden_dim=512,
                output_dim=128, temperature=0.1, epochs=1, steps_per_epoch=1000, optimizer="lars",
                learning_rate=0.3, warmup_epochs=0.1, checkpoint_every=100000,
                validation_split="test", augmentation=AUGMENTATION)
    base.update(train)
    return make_params(**base)


def write_store(root: Path, n: int, size: int, chunk: int = 64) -> None:
    """``root/SYNTH/images.h5`` with ``n`` noise images and a splits table (all train),
    written chunk-wise so the writer never holds the cube."""
    import h5py
    import pandas as pd

    (root / "SYNTH").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    with h5py.File(root / "SYNTH" / "images.h5", "w") as f:
        ds = f.create_dataset("images", (n, size, size, 3), np.float32, chunks=(1, size, size, 3))
        for start in range(0, n, chunk):
            stop = min(n, start + chunk)
            ds[start:stop] = rng.gamma(2.0, 0.05, (stop - start, size, size, 3)).astype(np.float32)
    pd.DataFrame({"dataset": "SYNTH", "row": np.arange(n), "object_id": np.arange(n),
                  "snapshot": 0, "projection": 0, "split": "train"}).to_parquet(root / "splits.parquet")


def our_step(root: Path, params=None, image: int = IMAGE, views=None):
    """``(step, views)``: ``step()`` runs the Trainer's compiled step once on one fixed batch
    of views (read, augmented and normalised by the real pipeline, or ``views`` when given)
    and waits for it. ``params`` default :func:`bench_params`; the store holds two batches
    of ``image``-pixel images."""
    import tensorflow as tf

    from scripts.model.trainer import Trainer
    from scripts.train import read_inputs

    params = params or bench_params()
    if not (root / "splits.parquet").exists():
        write_store(root, 2 * params.train.batch_size, image)
    table, stores = read_inputs(params, root)
    trainer = Trainer(params.train, stores, table, root / "run", progress=False)
    if views is None:
        views = tuple(tf.identity(v) for v in next(iter(trainer._dataset(trainer.sampler, 0, 1, 0))))

    def step():
        loss, _ = trainer._train_step(views)
        float(loss)
    step.trainer = trainer
    return step, views


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def our_step_times(steps: int, root: Path) -> list[float]:
    """Seconds of ``steps + 1`` calls of our step (the first includes tracing)."""
    step, _ = our_step(root)
    return [timed(step) for _ in range(steps + 1)]


def fit_step(views, params, jit_compile: bool = False):
    """``step()`` running one batch of ``keras.Model.fit`` of the same SimCLR model, NT-Xent
    and optimizer (and precision policy) on ``views``; returns the batch's own time (fit's
    per-call set-up excluded)."""
    import keras
    import tensorflow as tf

    from scripts.model.losses import nt_xent_loss
    from scripts.model.build import build_model, build_optimizer, learning_rate_schedule

    p = params.train
    model = build_model(p, tuple(int(s) for s in views[0].shape[1:]))

    class Pairs(keras.Model):
        def __init__(self, simclr):
            super().__init__()
            self.simclr = simclr

        def call(self, inputs, training=None):
            a, b = inputs
            _, z = self.simclr(tf.concat([a, b], axis=0), training=training)
            n = tf.shape(a)[0]
            return tf.stack([z[:n], z[n:]], axis=1)

    def loss_fn(y_true, y_pred):
        return nt_xent_loss(y_pred[:, 0], y_pred[:, 1], p.temperature)

    wrapper = Pairs(model)
    schedule = learning_rate_schedule(p, steps_per_epoch=1000, total_steps=1000)
    wrapper.compile(optimizer=build_optimizer(p, schedule, model.trainable_variables),
                    loss=loss_fn, jit_compile=jit_compile)
    data = tf.data.Dataset.from_tensors(((views[0], views[1]), tf.zeros((int(views[0].shape[0]),))))
    stamps = []

    class Stamp(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            stamps.append(time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])
            stamps.append(time.perf_counter())

    def step() -> float:
        wrapper.fit(data, epochs=1, verbose=0, shuffle=False, callbacks=[Stamp()])
        return stamps[-1] - stamps[-2]
    step.model = wrapper
    return step


def step_throughput(steps: int) -> dict:
    """Images/s of our compiled step and of keras fit on the same views. After one
    (tracing) step each, the two alternate step by step, so a change of machine load
    during the run hits both alike."""
    params = bench_params()
    with tempfile.TemporaryDirectory() as tmp:
        ours_step, views = our_step(Path(tmp))
        fit = fit_step(views, params)
        first = timed(ours_step), fit()
        ours, fits = [], []
        for _ in range(steps):
            ours.append(timed(ours_step))
            fits.append(fit())
    ours_ips = BATCH / float(np.median(ours))
    fit_ips = BATCH / float(np.median(fits))
    return {"ours_images_per_s": ours_ips, "fit_images_per_s": fit_ips,
            "ratio_ours_over_fit": ours_ips / fit_ips, "timed_steps": steps,
            "ours_first_step_s": first[0], "fit_first_step_s": first[1]}


def jit_ratio(preset: Path, steps: int) -> dict:
    """Images/s of our step at ``preset``'s model and image size with XLA off and on (after
    one tracing step each, alternating), on the same pre-made views."""
    from scripts.params import load_params

    p = load_params(preset)
    t = p.train
    model = dict(architecture=t.architecture, width_multiplier=t.width_multiplier, stem=t.stem,
                 head_layers=t.head_layers, head_hidden_dim=t.head_hidden_dim,
                 output_dim=t.output_dim, batch_size=t.batch_size, temperature=t.temperature)
    with tempfile.TemporaryDirectory() as tmp:
        off, views = our_step(Path(tmp) / "off", bench_params(jit_compile="off", **model), p.extract.image_size)
        on, _ = our_step(Path(tmp) / "on", bench_params(jit_compile="on", **model), p.extract.image_size,
                         views=views)
        first = timed(off), timed(on)
        times_off, times_on = [], []
        for _ in range(steps):
            times_off.append(timed(off))
            times_on.append(timed(on))
    ips_off = t.batch_size / float(np.median(times_off))
    ips_on = t.batch_size / float(np.median(times_on))
    return {"preset": str(preset), "image_size": p.extract.image_size, "batch": t.batch_size,
            "off_images_per_s": ips_off, "on_images_per_s": ips_on, "ratio_on_over_off": ips_on / ips_off,
            "first_step_s": first, "timed_steps": steps}


def _status_mib(key: str) -> float:
    """``VmRSS`` / ``VmHWM`` of this process from /proc (MiB)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {key}")


def _reset_peak() -> None:
    """Reset the peak-RSS mark (Linux ``clear_refs`` 5). Needed because ``ru_maxrss`` is
    inherited from the parent across fork/exec and would report the parent's peak."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_child(n: int, steps: int) -> dict:
    """A short tiny-model run over a store of ``n`` 32×32×3 images: peak RSS (MiB) of the
    whole process from before the data are opened to the end of training."""
    from scripts.model.trainer import Trainer
    from scripts.train import read_inputs

    params = bench_params(width_multiplier=0.125, batch_size=32, head_hidden_dim=64,
                          output_dim=32, steps_per_epoch=steps)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_store(root, n, 32)
        _reset_peak()
        before = _status_mib("VmRSS")
        table, stores = read_inputs(params, root)
        trainer = Trainer(params.train, stores, table, root / "run", progress=False)
        summary = trainer.fit()
        peak = _status_mib("VmHWM")
    return {"n": n, "steps": summary["steps"], "peak_rss_mib": peak, "rss_before_training_mib": before}


def peak_memory(sizes, steps: int) -> list[dict]:
    rows = []
    for n in sizes:
        out = subprocess.run([sys.executable, "-m", "bench.bench_train", "--rss-child", str(n),
                              "--steps", str(steps)], capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="timed steps (default 3)")
    parser.add_argument("--sizes", default="2000,16000", help="dataset sizes for peak RSS")
    parser.add_argument("--skip-step", action="store_true", help="only the memory part")
    parser.add_argument("--jit-preset", type=Path, metavar="PARAMS",
                        help="only: our step at this params file's model size, XLA off vs on")
    parser.add_argument("--rss-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for noisy in ("scripts", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if args.rss_child is not None:
        print(json.dumps(rss_child(args.rss_child, max(args.steps, 10))))
        return 0
    if args.jit_preset is not None:
        r = jit_ratio(args.jit_preset, args.steps)
        log.info("train step of %s (%d px, batch %d), %d timed steps: XLA off %.1f images/s, "
                 "on %.1f images/s, ratio on/off %.2f (first steps incl. tracing/compiling: "
                 "%.1f s / %.1f s)", r["preset"], r["image_size"], r["batch"],
                 r["timed_steps"], r["off_images_per_s"], r["on_images_per_s"],
                 r["ratio_on_over_off"], *r["first_step_s"])
        return 0
    if not args.skip_step:
        r = step_throughput(args.steps)
        log.info("train step, ResNet-18 64x64x3, batch %d, %d timed steps: ours %.1f images/s, "
                 "keras fit %.1f images/s, ratio ours/fit %.2f (first steps incl. tracing: "
                 "%.1f s / %.1f s)", BATCH, r["timed_steps"], r["ours_images_per_s"],
                 r["fit_images_per_s"], r["ratio_ours_over_fit"], r["ours_first_step_s"],
                 r["fit_first_step_s"])
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    rows = peak_memory(sizes, max(args.steps, 10))
    for row in rows:
        log.info("peak RSS, tiny model, %d steps over N = %d images (%.0f MiB of pixels): "
                 "%.0f MiB (%.0f MiB before opening the data, +%.0f MiB)", row["steps"], row["n"],
                 row["n"] * 32 * 32 * 3 * 4 / 2**20, row["peak_rss_mib"],
                 row["rss_before_training_mib"], row["peak_rss_mib"] - row["rss_before_training_mib"])
    log.info("peak RSS ratio N=%d / N=%d: %.3f (goal: ~1, no growth with N)", sizes[-1], sizes[0],
             rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
