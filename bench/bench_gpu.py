"""Benchmark: the train step on one GPU — XLA on/off, float32/bfloat16, against plain
Keras ``fit`` — with peak device memory and model FLOPs utilisation (MFU).

For ResNet-18 at 64×64×3 and ResNet-50 at 128×128×3 (width 1, standard stem, LARS,
NT-Xent, projection head 2048→128), on one fixed batch of views made by the real input
pipeline (so only the step is timed; ``bench.bench_input`` measures the pipeline):

- ``ours``: :class:`scripts.model.trainer.Trainer`'s step, ``JIT_COMPILE`` off/on ×
  ``MIXED_PRECISION`` off (float32) / ``mixed_bfloat16``;
- ``keras_fit``: ``keras.Model.fit`` of the same model, loss and optimizer
  (``bench.bench_train.fit_step``), float32 without XLA — the baseline of the goal
  "ours ≥ 1.3× plain fit" — and bfloat16 with XLA (Keras's own fastest setting).

Per row: pairs/s (one pair = two views through the network; median of the timed steps,
the first, tracing/compiling, step excluded and reported apart), peak device memory of
that variant (``tf.config.experimental.get_memory_info``; GPU only), FLOPs per pair
(forward FLOPs of the model from TensorFlow's profiler × 2 views × 3 for forward +
backward) and MFU = pairs/s × FLOPs per pair ÷ the device's dense peak (bfloat16 peak for
``mixed_bfloat16``, TF32 for float32, which TensorFlow uses for float32 convolutions on
Ampere and later; ``--peak-tflops`` overrides, unknown devices and CPUs get none).

One command, ≤ 5 minutes on one H100/H200-class GPU (``--max-seconds`` skips what would
not fit and says so)::

    .venv/bin/python -m bench.bench_gpu [--steps 20] [--json out.json]

``--smoke`` runs the same code on the CPU with tiny models (width ×1/16, 32 px, batch 4,
2 timed steps) and a reduced grid — XLA and bfloat16 on ResNet-18 only, because
compiling a ResNet step with XLA takes ~20 s on the 2-core CPU box — so the test suite
can check the benchmark itself runs.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from bench.bench_train import bench_params, fit_step, our_step, timed

log = logging.getLogger("bench.bench_gpu")

#: Dense peak TFLOP/s (no sparsity) by device-name fragment: (bfloat16/float16, TF32).
PEAK_TFLOPS = {
    "H200": (989.4, 494.7), "H100 SXM": (989.4, 494.7), "H100 80GB HBM3": (989.4, 494.7),
    "H100 PCIe": (756.0, 378.0), "H100 NVL": (835.0, 418.0), "H100": (989.4, 494.7),
    "GH200": (989.4, 494.7), "A100": (312.0, 156.0), "L40S": (362.1, 183.0),
    "A10": (125.0, 62.5), "L4": (121.0, 60.0), "V100": (125.0, 15.7),
}


@dataclass(frozen=True)
class Case:
    """One benchmarked model: architecture, image size, global batch (pairs), width."""
    model: str
    image: int
    batch: int
    width: float = 1.0


@dataclass(frozen=True)
class Variant:
    loop: str          # "ours" or "keras_fit"
    xla: bool
    precision: str     # "off" (float32) or "mixed_bfloat16"


FULL_CASES = (Case("resnet18", 64, 512), Case("resnet50", 128, 256))
SMOKE_CASES = (Case("resnet18", 32, 4, 1 / 16), Case("resnet50", 32, 4, 1 / 16))
FULL_VARIANTS = (Variant("ours", False, "off"), Variant("ours", True, "off"),
                 Variant("ours", False, "mixed_bfloat16"), Variant("ours", True, "mixed_bfloat16"),
                 Variant("keras_fit", False, "off"), Variant("keras_fit", True, "mixed_bfloat16"))
#: Smoke grid per model: every code path once, XLA compiles on ResNet-18 only.
SMOKE_VARIANTS = {
    "resnet18": (Variant("ours", False, "off"), Variant("ours", True, "off"),
                 Variant("ours", False, "mixed_bfloat16"), Variant("keras_fit", False, "off")),
    "resnet50": (Variant("ours", False, "off"),),
}


def gpu_name() -> str | None:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return None
    details = tf.config.experimental.get_device_details(gpus[0])
    return details.get("device_name", "GPU")


def peak_flops(device: str | None, precision: str, override_tflops: float | None) -> float | None:
    """The device's dense peak FLOP/s for ``precision`` (None when unknown or on the CPU)."""
    if override_tflops:
        return override_tflops * 1e12
    if device is None:
        return None
    for fragment, (half, tf32) in PEAK_TFLOPS.items():  # most specific names first
        if fragment.lower() in device.lower():
            return (half if precision != "off" else tf32) * 1e12
    return None


def forward_flops_per_image(model, image_shape) -> float:
    """Forward FLOPs of ``model`` for one image, counted by TensorFlow's profiler on the
    frozen inference graph (convolutions and matrix products; element-wise ops ~1 %)."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    fn = tf.function(lambda x: model(x, training=False))
    concrete = fn.get_concrete_function(tf.TensorSpec((1,) + tuple(image_shape), tf.float32))
    frozen = convert_variables_to_constants_v2(concrete)
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    info = tf.compat.v1.profiler.profile(graph=frozen.graph, options=options)
    return float(info.total_float_ops)


def _memory_reset() -> int | None:
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        return None
    tf.config.experimental.reset_memory_stats("GPU:0")
    return int(tf.config.experimental.get_memory_info("GPU:0")["current"])


def _memory_peak(before: int | None) -> float | None:
    import tensorflow as tf

    if before is None:
        return None
    return (int(tf.config.experimental.get_memory_info("GPU:0")["peak"]) - before) / 2**20


def case_params(case: Case, variant: Variant):
    return bench_params(architecture=case.model, width_multiplier=case.width, batch_size=case.batch,
                        head_hidden_dim=max(16, int(2048 * case.width)) if case.model == "resnet50"
                        else max(16, int(512 * case.width)),
                        output_dim=128, stem="standard", jit_compile="on" if variant.xla else "off",
                        mixed_precision=variant.precision)


def run_variant(case: Case, variant: Variant, root: Path, views, steps: int) -> dict:
    """Times one variant: ``steps`` steps after one (tracing/compiling) step."""
    params = case_params(case, variant)
    before = _memory_reset()
    if variant.loop == "ours":
        step, views = our_step(root, params, image=case.image, views=views)
        one = lambda: timed(step)  # noqa: E731
    else:
        if views is None:
            raise ValueError("a keras_fit variant needs the views of an 'ours' variant run before it")
        one = fit_step(views, params, jit_compile=variant.xla)
    first = one()
    times = [one() for _ in range(steps)]
    row = {**asdict(case), **asdict(variant), "first_step_s": first,
           "pairs_per_s": case.batch / float(np.median(times)),
           "peak_device_memory_mib": _memory_peak(before), "timed_steps": steps}
    del one
    gc.collect()
    return row, views


def run(cases, variants_of, steps: int, max_seconds: float, peak_tflops: float | None) -> dict:
    import keras

    device = gpu_name()
    t0 = time.monotonic()
    rows, skipped = [], []
    for case in cases:
        with tempfile.TemporaryDirectory() as tmp:
            views = None
            flops = None
            for variant in variants_of(case):
                if time.monotonic() - t0 > max_seconds:
                    skipped.append({**asdict(case), **asdict(variant)})
                    continue
                row, views = run_variant(case, variant, Path(tmp), views, steps)
                if flops is None:
                    from scripts.model.build import build_model

                    model = build_model(case_params(case, Variant("ours", False, "off")).train,
                                        (case.image, case.image, 3))
                    flops = 6.0 * forward_flops_per_image(model, (case.image, case.image, 3))
                    del model
                row["flops_per_pair"] = flops
                peak = peak_flops(device, variant.precision, peak_tflops)
                row["mfu"] = None if peak is None else row["pairs_per_s"] * flops / peak
                rows.append(row)
                log.info("%s %dpx batch %d | %-9s xla %-3s %-14s | %8.1f pairs/s | first step "
                         "%.1f s | peak mem %s | MFU %s", case.model, case.image, case.batch,
                         variant.loop, "on" if variant.xla else "off", variant.precision,
                         row["pairs_per_s"], row["first_step_s"],
                         "n/a" if row["peak_device_memory_mib"] is None
                         else f"{row['peak_device_memory_mib']:.0f} MiB",
                         "n/a" if row["mfu"] is None else f"{100 * row['mfu']:.1f} %")
            keras.backend.clear_session()
    return {"device": device or "CPU", "rows": rows, "skipped": skipped,
            "ratios": ratios(rows), "wall_seconds": time.monotonic() - t0}


def ratios(rows) -> list[dict]:
    """Per model: each of our variants over plain Keras fit (float32, no XLA)."""
    out = []
    for model in sorted({r["model"] for r in rows}):
        base = [r for r in rows if r["model"] == model and r["loop"] == "keras_fit"
                and not r["xla"] and r["precision"] == "off"]
        if not base:
            continue
        for r in rows:
            if r["model"] == model and r["loop"] == "ours":
                out.append({"model": model, "xla": r["xla"], "precision": r["precision"],
                            "ours_over_plain_fit": r["pairs_per_s"] / base[0]["pairs_per_s"]})
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help="tiny models, reduced grid (CPU test)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default 20; smoke 2)")
    parser.add_argument("--max-seconds", type=float, default=270.0,
                        help="skip the variants that would start after this (default 270)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak for the MFU (default: from the device name)")
    parser.add_argument("--full-on-cpu", action="store_true", help="the full grid even without a GPU")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for noisy in ("scripts", "absl", "tensorflow"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # the profiler's TF1 deprecation notes
    if not args.smoke and not args.full_on_cpu and gpu_name() is None:
        log.warning("no GPU visible: running the --smoke grid (the full grid would take hours on "
                    "the CPU; --full-on-cpu forces it)")
        args.smoke = True
    if args.smoke:
        cases, variants_of, steps = SMOKE_CASES, lambda c: SMOKE_VARIANTS[c.model], args.steps or 2
    else:
        cases, variants_of, steps = FULL_CASES, lambda c: FULL_VARIANTS, args.steps or 20
    result = run(cases, variants_of, steps, args.max_seconds, args.peak_tflops)
    if result["device"] == "CPU":
        log.info("no GPU visible: CPU figures, no device memory, no MFU")
    for r in result["ratios"]:
        log.info("%s ours (xla %s, %s) / plain keras fit fp32: %.2f (goal >= 1.3 on a GPU)",
                 r["model"], "on" if r["xla"] else "off", r["precision"], r["ours_over_plain_fit"])
    for s in result["skipped"]:
        log.warning("skipped (over --max-seconds): %s", s)
    log.info("wall time %.0f s", result["wall_seconds"])
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
