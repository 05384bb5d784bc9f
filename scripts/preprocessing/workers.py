"""Where extract's per-image tasks run: in this process, in loky processes, or on Dask.

:func:`imap` yields the results of a stream of ``joblib.delayed`` calls in input order,
as they come in, so the caller can commit a chunk while the workers already compute the
next one (no barrier at chunk boundaries). The number of tasks in flight is bounded by
joblib's ``pre_dispatch``, so memory stays bounded however long the stream.

``JOBLIB_BACKEND: dask`` sends the tasks to the workers of a running ``dask.distributed``
scheduler (``DASK_SCHEDULER``, else the ``DASK_SCHEDULER_ADDRESS`` environment variable).
There is deliberately no fallback to a local cluster: a cluster run that silently ran on
one machine would look like it worked. A worker that dies has its tasks rerun elsewhere by
the scheduler; results still arrive once each, in order, in this process, which alone
writes the chunks.
"""
from __future__ import annotations

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


def imap(calls: Iterable, backend: str, num_workers: int, scheduler: str | None = None) -> Iterator:
    """Results of ``calls`` (``joblib.delayed`` triples) in input order, as they finish.

    ``loky`` with one worker runs them in this process (no worker start-up); ``dask`` runs
    them on every worker of the cluster whatever ``num_workers`` says.
    """
    if backend == "loky" and num_workers == 1:
        for fn, args, kwargs in calls:
            yield fn(*args, **kwargs)
        return
    with contextlib.ExitStack() as stack:
        if backend == "dask":
            client = stack.enter_context(dask_client(scheduler_address(scheduler)))
            stack.enter_context(joblib.parallel_config(backend="dask", client=client, n_jobs=-1))
        else:
            stack.enter_context(joblib.parallel_config(backend=backend, n_jobs=num_workers))
        yield from joblib.Parallel(return_as="generator")(calls)
