"""What every stage entry point shares: logging, ``--params`` and exit codes.

A stage's ``main`` hands its body to :func:`run_stage`; a bad params file, a missing input
file or another input error is logged as one clear line and gives exit status 2, so
scripts and schedulers can tell "fix your input" from a crash.
"""
from __future__ import annotations

import argparse
import logging
from typing import Callable

from scripts.params import Params, ParamsError, add_params_argument, load_params

LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"
EXIT_OK = 0
EXIT_INPUT = 2
#: errors that mean "the input is wrong", reported without a traceback
INPUT_ERRORS = (ParamsError, FileNotFoundError, KeyError, ValueError)


def configure_logging() -> None:
    """INFO logging to stderr, unless the caller configured logging already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)


def stage_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    add_params_argument(parser)
    return parser


def run_stage(description: str, body: Callable[[Params], object], argv=None,
              log: logging.Logger | None = None) -> int:
    """Parse ``--params``, load and validate it, run ``body(params)``; exit status.

    ``body`` returns an exit status, or anything else (e.g. the stage's result) for 0.
    """
    configure_logging()
    log = log or logging.getLogger("stage")
    args = stage_parser(description).parse_args(argv)
    try:
        status = body(load_params(args.params))
    except INPUT_ERRORS as err:
        log.error("%s", err)
        return EXIT_INPUT
    return int(status) if isinstance(status, int) else EXIT_OK
