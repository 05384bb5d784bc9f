"""``python -m scripts.explore [--params P] [--run NAME] [--port 5006] [--host 127.0.0.1]``

Serves the interactive explorer of an analysed run (see :mod:`scripts.explore.app`) on
http://127.0.0.1:5006/ . It binds to this machine only; ``--host 0.0.0.0`` (or an
address) exposes it to the network, with a warning: the page can read any FITS path on
this machine that it is given.
"""
from __future__ import annotations

import argparse
import logging
import sys

from scripts.stage import EXIT_INPUT, INPUT_ERRORS, configure_logging

log = logging.getLogger("explore")


def parse_args(argv=None) -> argparse.Namespace:
    from scripts.params import add_params_argument

    parser = argparse.ArgumentParser(description="Interactive explorer of an analysed run.")
    add_params_argument(parser)
    parser.add_argument("--run", default=None, help="run under reports/ (default analyse.RUN_NAME, "
                        "else train.RUN_NAME)")
    parser.add_argument("--port", type=int, default=5006, help="port (default 5006; 0: a free one)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: "
                        "this machine only)")
    parser.add_argument("--max-points", type=int, default=None,
                        help="points drawn at most (default 200000; larger runs are subsampled)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from scripts.explore.data import MAX_POINTS, open_run
    from scripts.explore.server import LOCAL_HOSTS, make_server
    from scripts.params import load_params

    configure_logging()
    args = parse_args(argv)
    if args.host not in LOCAL_HOSTS:
        log.warning("binding to %s exposes the explorer (images, catalogue FIELDS, and reading "
                    "FITS paths on this machine) to every host that can reach it; use the "
                    "default 127.0.0.1 or an SSH tunnel unless that is intended", args.host)
    try:
        data = open_run(load_params(args.params), args.run, max_points=args.max_points or MAX_POINTS)
    except INPUT_ERRORS as err:
        log.error("%s", err)
        return EXIT_INPUT
    server = make_server(data, host=args.host, port=args.port)
    server.start()
    shown = "localhost" if args.host in LOCAL_HOSTS else args.host
    # the test and scripts read this line to find the port
    log.info("explorer of run %s (%s) at http://%s:%d/", data.run_name, data.message, shown, server.port)
    try:
        server.io_loop.start()
    except KeyboardInterrupt:
        pass
    finally:
        data.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
