"""Run every pipeline stage that exists, in order, on one params file (``make demo``).

Each stage runs as its own ``python -m`` process, exactly as a user would run it, so the
demo exercises the real entry points. Stops at the first failing stage.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import config
from scripts.params import add_params_argument, load_params

log = logging.getLogger("demo")

STAGES = (
    "scripts.preprocessing.extract",
    "scripts.preprocessing.prepare",
    "scripts.train",
    "scripts.analyse",
    "scripts.infer",
)


def run_stages(params_path: Path, stages=STAGES) -> list[tuple[str, float]]:
    """Run the available stages; returns (stage, seconds) for each one run."""
    done = []
    for module in stages:
        if importlib.util.find_spec(module) is None:
            log.warning("stage %s does not exist yet; skipped", module)
            continue
        log.info("running %s", module)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", module, "--params", str(params_path)], check=True)
        done.append((module, time.perf_counter() - start))
    return done


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__)
    add_params_argument(parser)
    parser.add_argument("--stages", nargs="+", choices=[m.rsplit(".", 1)[-1] for m in STAGES],
                        help="run only these stages (default: all, in order)")
    args = parser.parse_args(argv)
    params = load_params(args.params)  # fail early, before any stage starts
    try:
        stages = [m for m in STAGES if not args.stages or m.rsplit(".", 1)[-1] in args.stages]
        timings = run_stages(args.params, stages)
    except subprocess.CalledProcessError as err:
        log.error("stage failed: %s (exit %d)", " ".join(err.cmd), err.returncode)
        return err.returncode
    for module, seconds in timings:
        log.info("%-34s %7.1f s", module, seconds)
    metrics = config.reports_path / params.analyse.run_name / "metrics.json"
    if metrics.exists():
        log.info("headline numbers (%s):\n%s", metrics, json.dumps(json.loads(metrics.read_text()).get("headline", {}), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
