"""Extract on a Dask cluster (issue #15): JOBLIB_BACKEND dask against a LocalCluster of two
worker processes started here gives the store, table and report of the loky run, also when
a worker dies in the middle of the run; the scheduler address comes from the params or the
environment, and neither is a clear error."""
from __future__ import annotations

import copy
import json
import os
import signal
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
from distributed import Client, LocalCluster, get_task_stream
from distributed.diagnostics.plugin import WorkerPlugin

from scripts.params import ParamsError, parse_params
from scripts.preprocessing import image_preprocessing, workers
from tests.test_layouts import NAME, make_set, obs_params, outputs, run

#: images of the test set; SIZE_CHUNKS is 3 (obs_params), so several chunks
N_IMAGES = 14


@pytest.fixture(scope="module")
def cluster():
    """Two single-threaded worker processes (under nannies, which restart a dead one)."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0",
                      scheduler_port=0) as local, Client(local) as client:
        yield local, client


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """An observed set with one truncated file, and its extract by loky with two workers."""
    tmp = tmp_path_factory.mktemp("dask_set")
    raw_root, truth = make_set(tmp, "extensions", "id", n=N_IMAGES)
    victim = raw_root / NAME / "images" / truth["file"].iloc[2]
    victim.write_bytes(victim.read_bytes()[:4000])
    loky = copy.deepcopy(obs_params("extensions"))
    loky["extract"]["NUM_WORKERS"] = 2
    report = run(loky, raw_root, tmp / "loky")
    assert report["skipped_counts"] == {"truncated": 1}
    return raw_root, truth, tmp / "loky"


def dask_params(address: str | None) -> dict:
    raw = copy.deepcopy(obs_params("extensions"))
    raw["extract"].update(JOBLIB_BACKEND="dask", DASK_SCHEDULER=address)
    return raw


def assert_same_outputs(expected_root, root) -> None:
    (t1, i1), (t2, i2) = outputs(expected_root), outputs(root)
    pd.testing.assert_frame_equal(t1, t2)
    np.testing.assert_array_equal(i1, i2)
    assert not t2["file"].duplicated().any()
    reports = [json.loads((r / NAME / "extract_report.json").read_text())
               for r in (expected_root, root)]
    for key in ("kept_images", "skipped_files", "skipped_counts", "images_selected"):
        assert reports[0][key] == reports[1][key], key


def test_dask_backend_gives_the_loky_outputs(cluster, dataset, tmp_path):
    local, client = cluster
    raw_root, _, loky_root = dataset
    with get_task_stream(client) as tasks:
        report = run(dask_params(local.scheduler_address), raw_root, tmp_path)
    assert report["processed"] == N_IMAGES and report["kept_images"] == N_IMAGES - 1
    assert_same_outputs(loky_root, tmp_path)
    # the images went to the cluster's workers
    assert tasks.data and {t["worker"] for t in tasks.data} <= set(local.scheduler_info["workers"])


class KillOnce(WorkerPlugin):
    """Makes the worker that first processes ``victim`` kill itself (SIGKILL) before
    returning it; ``marker`` records that the kill happened, so it happens once."""

    name = "kill-once"

    def __init__(self, victim: str, marker: str):
        self.victim, self.marker = victim, marker

    def setup(self, worker):
        self.original = image_preprocessing.process_image
        victim, marker, original = self.victim, self.marker, self.original

        def dying(path, *args, **kwargs):
            if os.path.basename(path) == victim:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
                except FileExistsError:
                    return original(path, *args, **kwargs)
                os.kill(os.getpid(), signal.SIGKILL)
            return original(path, *args, **kwargs)

        image_preprocessing.process_image = dying

    def teardown(self, worker):
        image_preprocessing.process_image = self.original


def test_a_killed_worker_loses_and_duplicates_no_chunk(cluster, dataset, tmp_path):
    local, client = cluster
    raw_root, truth, loky_root = dataset
    marker = tmp_path / "killed"
    victim = truth["file"].iloc[N_IMAGES // 2]
    client.register_plugin(KillOnce(victim, str(marker)))
    try:
        report = run(dask_params(local.scheduler_address), raw_root, tmp_path / "out")
    finally:
        client.unregister_worker_plugin(KillOnce.name)
    assert marker.exists(), "no worker was killed: the test proves nothing"
    assert report["processed"] == N_IMAGES
    assert_same_outputs(loky_root, tmp_path / "out")


def test_scheduler_from_the_environment_and_a_clear_error_without(cluster, dataset, tmp_path,
                                                                   monkeypatch):
    local, _ = cluster
    raw_root, _, loky_root = dataset
    monkeypatch.setenv(workers.SCHEDULER_ENV, local.scheduler_address)
    run(dask_params(None), raw_root, tmp_path)
    assert_same_outputs(loky_root, tmp_path)
    monkeypatch.delenv(workers.SCHEDULER_ENV)
    with pytest.raises(ParamsError, match="DASK_SCHEDULER.*DASK_SCHEDULER_ADDRESS"):
        run(dask_params(None), raw_root, tmp_path / "none")


def test_a_scheduler_that_does_not_answer_is_named_in_the_error(dataset, tmp_path, monkeypatch):
    raw_root, _, _ = dataset
    monkeypatch.setattr(workers, "CONNECT_TIMEOUT_S", 1)
    with pytest.raises(OSError, match=r"tcp://127.0.0.1:9.*no Dask scheduler answered"):
        run(dask_params("tcp://127.0.0.1:9"), raw_root, tmp_path)


def touch(folder: str, i: int) -> int:
    """A task that leaves a trace of having run."""
    (Path(folder) / str(i)).touch()
    return i


@pytest.mark.parametrize("backend", ["loky", "dask"])
def test_the_next_chunk_computes_while_one_is_committed_and_no_further(backend, cluster, tmp_path):
    """While the caller holds chunk 0, chunk 1 runs (the workers do not wait) but chunk 2
    does not (results never pile up beyond two chunks); results keep their order."""
    local, _ = cluster
    size, n_chunks = 4, 5
    chunks = ([joblib.delayed(touch)(str(tmp_path), i) for i in range(c * size, (c + 1) * size)]
              for c in range(n_chunks))
    results = workers.imap_chunks(chunks, backend, 2, local.scheduler_address if backend == "dask"
                                  else None)
    first = next(results)
    deadline = time.monotonic() + 30
    while len(list(tmp_path.iterdir())) < 2 * size and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # time enough for a third chunk to start, were it dispatched
    assert sorted(int(p.name) for p in tmp_path.iterdir()) == list(range(2 * size))
    assert first + [i for chunk in results for i in chunk] == list(range(n_chunks * size))


def test_params_check_the_backend_and_the_scheduler_key():
    raw = obs_params("extensions")
    raw["extract"]["JOBLIB_BACKEND"] = "dsak"
    with pytest.raises(ParamsError, match=r"extract.JOBLIB_BACKEND.*did you mean 'dask'"):
        parse_params(raw)
    raw["extract"].update(JOBLIB_BACKEND="loky", DASK_SCHEDULER="tcp://host:8786")
    with pytest.raises(ParamsError, match="extract.DASK_SCHEDULER.*only used with JOBLIB_BACKEND dask"):
        parse_params(raw)
