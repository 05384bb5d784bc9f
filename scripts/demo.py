"""Run every pipeline stage that exists, in order, on one params file (``make demo``).

Each stage runs through its module's ``main``, the function ``python -m <module>`` calls,
with ``--params``, one after the other in this process: TensorFlow, MLflow and the other
heavy libraries are then imported once, not once per stage. Stops at the first stage that
fails or returns a non-zero status.

``--beside PARAMS`` runs a second run that shares this run's extract and prepare outputs
(the demo's X-ray run): once prepare is done, its train, analyse and infer stages run in a
second process, beside this run's, with its log in ``reports/<its run>.log``. Neither run
keeps both cores busy on its own (the demo's serial stages used 1.5 of 2 cores), so the two
finish sooner side by side; their results are those of the serial runs (BENCHMARKS.md).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

import config
from scripts.params import Params, add_params_argument, load_params

log = logging.getLogger("demo")

STAGES = (
    "scripts.preprocessing.extract",
    "scripts.preprocessing.prepare",
    "scripts.train",
    "scripts.analyse",
    "scripts.infer",
)


#: the stages whose outputs a ``--beside`` run shares with this run
SHARED_STAGES = ("scripts.preprocessing.extract", "scripts.preprocessing.prepare")
_TIMING_LINE = re.compile(r"demo: scripts\.\S+\s+[\d.]+ s$")


class StageFailed(RuntimeError):
    def __init__(self, module: str, status: int):
        super().__init__(f"{module} exited with status {status}")
        self.module, self.status = module, status


def run_stages(params_path: Path, stages=STAGES, params: Params | None = None
               ) -> list[tuple[str, float]]:
    """Run the available stages in this process; returns (stage, seconds) for each one
    run. Raises :class:`StageFailed` at the first non-zero exit status."""
    from scripts.model import onednn

    params = params or load_params(params_path)
    # before any stage imports TensorFlow, as ``python -m scripts.train`` would do it
    onednn.configure(params.train.width_multiplier, params.extract.image_size)
    done = []
    for module in stages:
        if importlib.util.find_spec(module) is None:
            log.warning("stage %s does not exist yet; skipped", module)
            continue
        log.info("running %s", module)
        start = time.perf_counter()
        status = importlib.import_module(module).main(["--params", str(params_path)])
        if status:
            raise StageFailed(module, int(status))
        done.append((module, time.perf_counter() - start))
    return done


def start_beside(params_path: Path, params: Params) -> tuple[subprocess.Popen, Path]:
    """Start the train, analyse and infer stages of ``params_path`` in a second process;
    returns it and its log file."""
    log_path = config.reports_path / f"{params.analyse.run_name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log.info("running the train, analyse and infer stages of %s beside this run (log: %s)",
             params_path, log_path)
    with open(log_path, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "scripts.demo", "--params", str(params_path),
                                 "--stages", "train", "analyse", "infer"],
                                stdout=out, stderr=subprocess.STDOUT)
    return proc, log_path


def finish_beside(proc: subprocess.Popen, log_path: Path) -> int:
    """Wait for the ``--beside`` run; print its stage times and headline from its log."""
    status = proc.wait()
    lines = log_path.read_text(errors="replace").splitlines()
    first = next((i for i, line in enumerate(lines) if _TIMING_LINE.search(line)), None)
    if status:
        log.error("the run beside failed (exit %d); the end of its log %s:\n%s", status,
                  log_path, "\n".join(lines[-40:]))
    elif first is not None:
        log.info("the run beside finished (log: %s):\n%s", log_path, "\n".join(lines[first:]))
    return status


def _r2(entry: dict) -> str:
    r = entry.get("r2")
    return "–" if r is None else f"{r:.2f} ± {entry.get('r2_std') or 0:.2f}"


def readme_table(metrics: dict, observed: str, simulated: list[str]) -> str:
    """The README's demo table (Markdown) from an analyse ``metrics.json``: realism of each
    simulated set against ``observed``, driver R² (± spread over folds) and object
    permanence, all on the run's evaluation splits."""
    splits = ", ".join(metrics.get("evaluation_splits", []))
    rows = [f"| measured on the {splits} split | " + " | ".join(simulated) + " |",
            "|---|" + "---|" * len(simulated)]

    def row(label, cell):
        rows.append(f"| {label} | " + " | ".join(cell(s) for s in simulated) + " |")

    def realism(s):
        return metrics["realism"].get(s, {}).get(observed, {})

    def fmt(s, f):
        r = realism(s)
        return f"skipped: {r['skipped']}" if "skipped" in r else (f(r) if r else "–")

    images = metrics.get("images", {})
    if not observed:                    # no observed set: no realism to report
        row("test images", lambda s: f"{images.get(s, {}).get('test', '–')}")
    else:
        row("test images (objects in the OOD score)", lambda s: f"{images.get(s, {}).get('test', '–')} "
            f"({realism(s).get('ood_sim', {}).get('n_subsample', '–')})")
        row(f"in-domain fraction vs {observed} (sim scored / obs scored)", lambda s: fmt(
            s, lambda r: f"{r['ood_sim']['in_domain_fraction']:.2f} / {r['ood_obs']['in_domain_fraction']:.2f}"))
        row("classifier two-sample AUC [95 % interval]", lambda s: fmt(
            s, lambda r: f"{r['c2st']['auc']:.2f} [{r['c2st']['ci_low']:.2f}, {r['c2st']['ci_high']:.2f}]"))
        row("MMD² (permutation p)", lambda s: fmt(
            s, lambda r: f"{r['mmd']['mmd2']:.3g} ({r['mmd']['p_value']:.2g})"))
    fields = sorted({f for s in simulated for f in metrics.get("drivers", {}).get(s, {})})
    shown = [k for k in ("representation", "baseline", "photometry", "representation+photometry")
             if any(k in e for s in simulated for e in metrics.get("drivers", {}).get(s, {}).values())]
    names = {"baseline": "pixel baseline"}
    for field in fields:
        def cell(s, field=field):
            entry = metrics["drivers"].get(s, {}).get(field)
            return "–" if entry is None else " / ".join(_r2(entry[k]) if k in entry else "–" for k in shown)
        row(f"{field} R²: {' / '.join(names.get(k, k) for k in shown)}", cell)
    row("object permanence top-1 / top-5 (chance top-5)", lambda s: "–" if s not in metrics.get(
        "permanence", {}) else "{top1:.2f} / {top5:.2f} ({chance_top5:.3f})".format(**metrics["permanence"][s]))
    return "\n".join(rows)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__)
    add_params_argument(parser)
    parser.add_argument("--stages", nargs="+", choices=[m.rsplit(".", 1)[-1] for m in STAGES],
                        help="run only these stages (default: all, in order)")
    parser.add_argument("--beside", type=Path, default=None, metavar="PARAMS",
                        help="a second run sharing this run's extract and prepare outputs (the "
                             "demo's X-ray run): its train, analyse and infer stages run in a "
                             "second process beside this run's, once prepare is done")
    parser.add_argument("--table", action="store_true",
                        help="print the README's demo table from the run's metrics.json and exit")
    args = parser.parse_args(argv)
    if args.table:
        params = load_params(args.params)
        an = params.analyse
        metrics = json.loads((config.reports_path / an.run_name / "metrics.json").read_text())
        observed = an.observed_sets[0] if an.observed_sets else ""
        print(readme_table(metrics, observed, list(an.simulated_sets)))
        return 0
    params = load_params(args.params)  # fail early, before any stage starts
    beside = load_params(args.beside) if args.beside else None
    stages = [m for m in STAGES if not args.stages or m.rsplit(".", 1)[-1] in args.stages]
    shared = [m for m in stages if m in SHARED_STAGES]
    side = None
    try:
        timings = run_stages(args.params, shared, params)
        if beside is not None:
            side = start_beside(args.beside, beside)
        timings += run_stages(args.params, [m for m in stages if m not in shared], params)
    except StageFailed as err:
        log.error("stage failed: %s", err)
        if side is not None:
            side[0].terminate()
            side[0].wait()
        return err.status
    except BaseException:
        if side is not None:
            side[0].terminate()
        raise
    for module, seconds in timings:
        log.info("%-34s %7.1f s", module, seconds)
    metrics = config.reports_path / params.analyse.run_name / "metrics.json"
    if metrics.exists():
        log.info("headline numbers (%s):\n%s", metrics, json.dumps(json.loads(metrics.read_text()).get("headline", {}), indent=2))
    return finish_beside(*side) if side is not None else 0


if __name__ == "__main__":
    raise SystemExit(main())
