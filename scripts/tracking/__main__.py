"""``python -m scripts.tracking dashboard``: run ``mlflow ui`` on the project's local store.

``--print`` only prints the command (for the Makefile or to run it elsewhere).
"""
from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path

from scripts.tracking.mlflow_backend import dashboard_command

logger = logging.getLogger("scripts.tracking")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.tracking", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dash = sub.add_parser("dashboard", help="run mlflow ui over the local MLflow store")
    dash.add_argument("--root", default=".", help="project root (default: current folder)")
    dash.add_argument("--mlflow-dir", default="mlruns",
                      help="local store, relative to --root (params tracking.MLFLOW_DIR)")
    dash.add_argument("--host", default="127.0.0.1")
    dash.add_argument("--port", type=int, default=5000)
    dash.add_argument("--print", action="store_true", help="print the command, do not run it")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    cmd = dashboard_command(Path(args.root).resolve(), args.mlflow_dir, args.host, args.port)
    # the mlflow script of this interpreter's environment, when it is not on PATH
    local = Path(sys.executable).with_name("mlflow")
    if shutil.which(cmd[0]) is None and local.exists():
        cmd[0] = str(local)
    if args.print:
        logger.info("%s", shlex.join(cmd))
        return 0
    store = Path(args.root).resolve() / args.mlflow_dir
    if not store.is_dir():
        logger.info("No MLflow store at %s yet (it is created by the first tracked run).", store)
    logger.info("MLflow dashboard: http://%s:%d  (%s)", args.host, args.port, shlex.join(cmd))
    os.execvp(cmd[0], cmd)
    return 0  # not reached: execvp replaces this process


if __name__ == "__main__":
    sys.exit(main())
