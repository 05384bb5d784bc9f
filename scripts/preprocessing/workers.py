"""Where extract's per-image tasks run: in this process, in loky processes, or on Dask.

:func:`imap_chunks` yields the results of chunk after chunk of ``joblib.delayed`` calls,
each in input order, while the next chunk is already computing: the caller commits a chunk
without the workers waiting, and memory holds at most two chunks of results however fast
the workers are (a single unbounded stream would pile results up in this process whenever
the commits are slower than a large cluster).

``JOBLIB_BACKEND: dask`` sends the tasks to the workers of a running ``dask.distributed``
scheduler (``DASK_SCHEDULER``, else the ``DASK_SCHEDULER_ADDRESS`` environment variable).
There is deliberately no fallback to a local cluster: a cluster run that silently ran on
one machine would look like it worked. A worker that dies has its tasks rerun elsewhere by
the scheduler; results still arrive once each, in order, in this process, which alone
writes the chunks.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import os
from typing import Iterable, Iterator

import joblib

from scripts.params import ParamsError

log = logging.getLogger("extract.workers")

#: Environment variable naming the scheduler when ``extract.DASK_SCHEDULER`` is null (the
#: one dask.distributed itself reads).
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"
#: Seconds to wait for the scheduler to answer before giving up.
CONNECT_TIMEOUT_S = 30


def scheduler_address(configured: str | None) -> str:
    """The scheduler to connect to: the params key, else the environment."""
    address = configured or os.environ.get(SCHEDULER_ENV, "").strip()
    if not address:
        raise ParamsError(f"extract.DASK_SCHEDULER: null and {SCHEDULER_ENV} is not set, but "
                          "JOBLIB_BACKEND is dask; expected the address of a running Dask "
                          "scheduler (e.g. tcp://host:8786) in either")
    return address


@contextlib.contextmanager
def dask_client(address: str):
    """A ``dask.distributed.Client`` connected to ``address``, closed on exit."""
    # imported here, not at the top: every loky worker imports this module (through
    # extract), and distributed would add about a second to each worker's start-up
    from dask.distributed import Client

    try:
        client = Client(address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except OSError as err:
        raise OSError(f"extract.DASK_SCHEDULER / {SCHEDULER_ENV} = {address!r}: no Dask scheduler "
                      f"answered within {CONNECT_TIMEOUT_S} s ({err}); start one or correct "
                      "the address") from err
    try:
        log.info("Dask scheduler %s: %d workers, %d threads", address,
                 len(client.scheduler_info()["workers"]), sum(client.nthreads().values()))
        yield client
    finally:
        client.close()


def imap_chunks(chunks: Iterable[list], backend: str, num_workers: int,
                scheduler: str | None = None) -> Iterator[list]:
    """Results of each chunk of ``joblib.delayed`` calls, chunk after chunk, in order.

    The next chunk is already dispatched while the caller commits the last one, so the
    workers do not wait at chunk boundaries, and at most two chunks of results exist at
    a time. ``loky`` with one worker runs the calls in this process (no worker start-up)
    with one BLAS thread, as each loky worker has when there are as many workers as
    cores: the images' small matrix products gain nothing from a second thread, and on a
    busy machine OpenBLAS's spinning thread doubled one image's CPU (11–13.5 ms against
    5.2–5.8 ms, BENCHMARKS.md). ``dask`` runs the calls on every worker of the cluster
    whatever ``num_workers`` says.
    """
    if backend == "loky" and num_workers == 1:
        from threadpoolctl import threadpool_limits

        for chunk in chunks:
            with threadpool_limits(limits=1, user_api="blas"):
                results = [fn(*args, **kwargs) for fn, args, kwargs in chunk]
            yield results
        return
    with contextlib.ExitStack() as stack:
        if backend == "dask":
            client = stack.enter_context(dask_client(scheduler_address(scheduler)))
            config = {"backend": "dask", "client": client, "n_jobs": -1}
        else:
            config = {"backend": backend, "n_jobs": num_workers}

        def start(chunk: list) -> Iterator:
            # a backend instance per call: two calls run at once, and a joblib backend
            # keeps per-call state (loky's workers are shared all the same)
            with joblib.parallel_config(**config):
                return joblib.Parallel(return_as="generator")(chunk)

        running: collections.deque[Iterator] = collections.deque()
        for chunk in chunks:
            running.append(start(chunk))
            if len(running) == 2:
                yield list(running.popleft())
        while running:
            yield list(running.popleft())
