"""Experiment tracking: what is logged reads back through MLflow's client and TensorBoard's
readers, projector files are what the projector plugin loads, and a broken backend costs one
warning while the run and the other backends go on."""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scripts.tracking import (
    CompositeTracker,
    NullTracker,
    Tracker,
    dashboard_command,
    flatten_params,
    local_tracking_uri,
    make_tracker,
    make_tracker_from_params,
)
from scripts.tracking.base import GuardedBackend
from scripts.tracking.images import image_grid, sprite, to_display
from scripts.tracking.mlflow_backend import TRUNCATION_MARK

mlflow = pytest.importorskip("mlflow")
# MLflow's own limit, which the backend follows
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH as MAX_PARAM_VALUE_LENGTH  # noqa: E402


# --------------------------------------------------------------------------- helpers

@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    """Tests choose the tracking URI themselves; remote HTTP defaults never leak."""
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
                "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(key, raising=False)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One local MLflow store for the module (creating the SQLite schema takes ~2 s)."""
    return tmp_path_factory.mktemp("mlruns")


def client_for(store_dir: Path):
    return mlflow.MlflowClient(tracking_uri=local_tracking_uri(store_dir))


def run_of(client, tracker):
    run_id = tracker.locations["mlflow"].rsplit("#", 1)[1]
    return client.get_run(run_id)


def tracking_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.levelno == logging.WARNING and r.name.startswith("scripts.tracking")]


def tb_scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Scalars of a TensorBoard run, read back through TensorFlow's event reader."""
    import tensorflow as tf

    out: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                meta = value.metadata.plugin_data.plugin_name
                if meta == "scalars":
                    scalar = float(tf.make_ndarray(value.tensor))
                    out.setdefault(value.tag, []).append((event.step, scalar))
    return out


def tb_plugin_tags(run_dir: Path, plugin: str) -> list[tuple[str, object]]:
    import tensorflow as tf

    found = []
    for path in sorted(run_dir.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == plugin:
                    found.append((value.tag, tf.make_ndarray(value.tensor)))
    return found


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class _Train:
    EPOCHS: int
    LR: float


@dataclasses.dataclass(frozen=True)
class _Params:
    train: _Train
    DATASETS: tuple
    NOTE: str


# --------------------------------------------------------------------------- interface

def test_flatten_params_dotted_keys_from_dicts_and_dataclasses():
    params = {"run": _Params(_Train(3, 1e-3), ("A", "B"), "x"), "empty": {}, "path": Path("a/b")}
    assert flatten_params(params) == {
        "run.train.EPOCHS": 3,
        "run.train.LR": 1e-3,
        "run.DATASETS": "[A, B]",
        "run.NOTE": "x",
        "empty": "{}",
        "path": "a/b",
    }
    with pytest.raises(TypeError, match="mapping or dataclass"):
        flatten_params(3)


class _Recorder:
    """An in-memory backend: what reached it, and (optionally) the step at which its
    log_metrics starts raising, as a full disk or a dropped connection would."""

    def __init__(self, fail_at_step: int | None = None):
        self.metrics: list[tuple[int, dict]] = []
        self.calls: list[str] = []
        self.closed_with: str | None = None
        self.fail_at_step = fail_at_step
        self.location = "memory"

    def log_metrics(self, metrics, step):
        self.calls.append("log_metrics")
        if self.fail_at_step is not None and step >= self.fail_at_step:
            raise OSError("disk full")
        self.metrics.append((step, dict(metrics)))

    def set_tags(self, tags):
        self.calls.append("set_tags")

    def close(self, status="FINISHED"):
        self.calls.append("close")
        self.closed_with = status


def test_composite_switches_a_failing_backend_off_with_one_warning(caplog):
    """The guarded composite: metrics reach every backend as floats; the first exception
    of one backend costs one warning naming it, closes it as FAILED and switches it off
    for the rest of the run, while the others keep receiving everything."""
    healthy, failing = _Recorder(), _Recorder(fail_at_step=2)
    tracker = CompositeTracker([GuardedBackend("healthy", healthy), GuardedBackend("failing", failing)])
    with caplog.at_level(logging.WARNING):
        with tracker as t:
            for step in range(5):
                t.log_metrics({"train/loss": np.float32(step) / 2, "epoch": step}, step=step)
            t.set_tags({"k": 1})
    expected = [(s, {"train/loss": s / 2, "epoch": float(s)}) for s in range(5)]
    assert healthy.metrics == expected
    assert all(type(v) is float for _, m in healthy.metrics for v in m.values())
    assert failing.metrics == expected[:2]
    assert failing.calls == ["log_metrics"] * 3 + ["close"] and failing.closed_with == "FAILED"
    assert healthy.calls[-2:] == ["set_tags", "close"] and healthy.closed_with == "FINISHED"
    assert tracker.backends == ["healthy"] and tracker.locations == {"healthy": "memory"}
    warnings = tracking_warnings(caplog)
    assert len(warnings) == 1
    assert "'failing'" in warnings[0].getMessage() and "disk full" in warnings[0].getMessage()


def test_composite_drops_a_bad_metric_once_without_switching_backends_off(caplog):
    """A non-numeric value is the caller's mistake, not the backend's: it is dropped with
    one warning per key, the other metrics of the call still arrive, no backend goes off."""
    backend = _Recorder()
    tracker = CompositeTracker([GuardedBackend("only", backend)])
    with caplog.at_level(logging.WARNING):
        for step in range(3):
            tracker.log_metrics({"train/loss": 1.0, "train/bad": "n/a"}, step=step)
    assert backend.metrics == [(s, {"train/loss": 1.0}) for s in range(3)]
    assert tracker.backends == ["only"]
    assert len([w for w in tracking_warnings(caplog) if "train/bad" in w.getMessage()]) == 1


def test_backend_names_are_validated():
    with pytest.raises(ValueError, match=r"tracking.BACKENDS\[0\] = 'neptune': expected one of"):
        make_tracker(["neptune"], "e")
    with pytest.raises(ValueError, match="tracking.BACKENDS.*'none' alone"):
        make_tracker(["none", "mlflow"], "e")


def test_none_backend_records_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    artifact = tmp_path / "a.txt"
    artifact.write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    for tracker in (make_tracker(["none"], "e"), make_tracker([], "e"), NullTracker()):
        assert isinstance(tracker, Tracker)
        with tracker as t:
            t.log_params({"a": {"b": 1}})
            t.log_metrics({"train/loss": 1.0}, step=0)
            t.set_tags({"k": "v"})
            t.log_artifact(artifact)
            t.log_artifacts(tmp_path)
            t.log_images("aug", np.zeros((2, 4, 4, 1)), step=0)
            t.log_embedding(np.ones((2, 3)), pd.DataFrame({"a": [1, 2]}), None, "e")
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert make_tracker(["none"], "e").locations == {}


def test_dashboard_command_points_at_the_local_store(tmp_path):
    cmd = dashboard_command(tmp_path)
    assert cmd[:2] == ["mlflow", "ui"]
    uri = cmd[cmd.index("--backend-store-uri") + 1]
    assert uri == local_tracking_uri(tmp_path / "mlruns")
    assert uri.startswith("sqlite:///") and uri.endswith("/mlruns/mlflow.db")
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "5000"


def test_dashboard_cli_prints_the_mlflow_ui_command(tmp_path):
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-m", "scripts.tracking", "dashboard", "--root", str(tmp_path),
         "--port", "5123", "--print"],
        cwd=root, capture_output=True, text=True, timeout=60, check=True,
    )
    printed = (out.stdout + out.stderr).strip().split()
    assert Path(printed[0]).name == "mlflow" and printed[1] == "ui"
    assert printed[printed.index("--backend-store-uri") + 1] == local_tracking_uri(tmp_path / "mlruns")
    assert printed[printed.index("--port") + 1] == "5123"


def test_importing_tracking_loads_neither_mlflow_nor_tensorflow():
    import subprocess
    import sys

    code = ("import sys, scripts.tracking; "
            "print(sorted(m for m in ('mlflow', 'tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1],
                         capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- MLflow

def test_mlflow_reads_back_params_metrics_artifacts_and_tags(store, tmp_path):
    long_value = "v" * (MAX_PARAM_VALUE_LENGTH + 500)
    params = {"train": {"EPOCHS": 2, "LR": 0.3, "AUG": {"CROP": [0.08, 1.0]}},
              "NOTE": long_value, "odd key!": 1}
    report = tmp_path / "report.md"
    report.write_text("# report\n")
    folder = tmp_path / "plots"
    folder.mkdir()
    (folder / "a.txt").write_text("A")
    (folder / "b.txt").write_text("B")
    losses = [2.0 * math.exp(-0.5 * s) for s in range(6)]
    views = np.random.default_rng(0).normal(size=(6, 16, 16, 3))

    with make_tracker(["mlflow"], "readback", "tiny", {"owner": "tests"}, store, tmp_path / "tb") as t:
        t.log_params(params)
        for step, loss in enumerate(losses):
            t.log_metrics({"train/loss": loss}, step=step)
        t.log_metrics({"epoch/val_loss": np.float32(losses[-1]), "epoch/n": np.int64(3)}, step=0)
        t.log_artifact(report, "reports")
        t.log_artifacts(folder, "plots")
        t.log_images("augmentations/train", views, step=3)
        tracker = t
    client = client_for(store)
    run = run_of(client, tracker)

    assert run.info.status == "FINISHED"
    assert run.info.run_name == "tiny"
    p = run.data.params
    assert p["train.EPOCHS"] == "2" and p["train.LR"] == "0.3"
    assert p["train.AUG.CROP"] == "[0.08, 1.0]"
    assert p["odd key_"] == "1"
    assert len(p["NOTE"]) == MAX_PARAM_VALUE_LENGTH and p["NOTE"].endswith(TRUNCATION_MARK)

    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == list(range(6))
    np.testing.assert_allclose([m.value for m in history], losses, rtol=1e-12)
    val = client.get_metric_history(run.info.run_id, "epoch/val_loss")
    assert [(m.step, m.value) for m in val] == [(0, pytest.approx(np.float32(losses[-1])))]
    assert run.data.metrics["epoch/n"] == 3.0

    tags = run.data.tags
    assert tags["owner"] == "tests"
    assert tags["version.numpy"] == np.__version__
    assert tags["version.mlflow"] == mlflow.__version__
    assert tags["tracking.mlflow"] == tracker.locations["mlflow"]

    local = Path(client.download_artifacts(run.info.run_id, "", str(tmp_path / "dl")))
    assert (local / "reports" / "report.md").read_text() == "# report\n"
    assert sorted(p.name for p in (local / "plots").iterdir()) == ["a.txt", "b.txt"]
    assert (local / "plots" / "b.txt").read_text() == "B"
    full = json.loads((local / "params.json").read_text())
    assert full["NOTE"] == long_value and full["train.EPOCHS"] == 2

    from PIL import Image

    png = local / "images" / "augmentations" / "train" / "step_0000003.png"
    grid = np.asarray(Image.open(png))
    np.testing.assert_array_equal(grid, image_grid(views))
    # 6 views on a 3×2 grid, 2-pixel gaps
    assert grid.shape == (2 * 16 + 3 * 2, 3 * 16 + 4 * 2, 3)


def test_mlflow_run_fails_with_the_exception_and_keeps_it(store, tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with make_tracker(["mlflow"], "status", "crash", None, store, tmp_path) as t:
            t.log_metrics({"train/loss": 1.0}, step=0)
            tracker = t
            raise RuntimeError("boom")
    run = run_of(client_for(store), tracker)
    assert run.info.status == "FAILED"
    assert run.data.metrics["train/loss"] == 1.0  # buffered metric flushed before closing


def test_two_trackers_in_one_process_do_not_clash(store, tmp_path):
    a = make_tracker(["mlflow"], "parallel", "a", None, store, tmp_path)
    b = make_tracker(["mlflow"], "parallel", "b", None, store, tmp_path)
    for step in range(3):
        a.log_metrics({"m": float(step)}, step=step)
        b.log_metrics({"m": float(10 + step)}, step=step)
    a.log_params({"who": "a"})
    b.log_params({"who": "b"})
    a.close()
    b.close()
    client = client_for(store)
    ra, rb = run_of(client, a), run_of(client, b)
    assert ra.info.run_id != rb.info.run_id
    assert [m.value for m in client.get_metric_history(ra.info.run_id, "m")] == [0.0, 1.0, 2.0]
    assert [m.value for m in client.get_metric_history(rb.info.run_id, "m")] == [10.0, 11.0, 12.0]
    assert (ra.data.params["who"], rb.data.params["who"]) == ("a", "b")


def test_changed_param_keeps_first_value_and_backend_stays_on(store, tmp_path, caplog):
    with make_tracker(["mlflow"], "params", "changed", None, store, tmp_path) as t:
        t.log_params({"lr": 0.1, "bs": 8})
        t.log_params({"lr": 0.2, "bs": 8, "new": "x"})
        t.log_params({"lr": 0.3})
        t.log_metrics({"after": 1.0}, step=0)
        tracker = t
    run = run_of(client_for(store), tracker)
    assert run.data.params == {"lr": "0.1", "bs": "8", "new": "x"}
    assert run.data.metrics["after"] == 1.0
    assert len([r for r in tracking_warnings(caplog) if "lr" in r.getMessage()]) == 1
    assert tracker.backends == ["mlflow"]


def test_make_tracker_from_params_section(store, tmp_path):
    """The tracker is built from the validated ``tracking:`` section of params.yaml."""
    from scripts.params import TrackingParams

    section = TrackingParams(backends=("mlflow", "tensorboard"), experiment="from-params",
                             tags={"stage": "train"}, mlflow_dir=str(store),
                             tensorboard_dir=str(tmp_path / "tb"))
    with make_tracker_from_params(section) as t:
        tracker = t
    assert tracker.backends == ["mlflow", "tensorboard"]
    run = run_of(client_for(store), tracker)
    assert run.data.tags["stage"] == "train"
    # one generated run name shared by both backends
    assert Path(tracker.locations["tensorboard"]).name == run.info.run_name
    assert run.info.run_name.startswith("run-")


# --------------------------------------------------------------------------- TensorBoard

def test_tensorboard_event_files_read_back(tmp_path):
    tb = tmp_path / "tb"
    views = np.random.default_rng(1).uniform(size=(4, 8, 8, 1))
    with make_tracker(["tensorboard"], "exp", "r1", {"owner": "tests"}, tmp_path / "ml", tb) as t:
        t.log_params({"train": {"EPOCHS": 2}})
        for step in range(4):
            t.log_metrics({"train/loss": 1.0 / (step + 1), "train/acc": step / 4}, step=step)
        t.log_metrics({"epoch/val_loss": 0.25}, step=0)
        t.log_images("augmentations", views, step=2)
        tracker = t
    run_dir = tb / "exp" / "r1"
    assert tracker.locations == {"tensorboard": str(run_dir)}
    scalars = tb_scalars(run_dir)
    assert [s for s, _ in scalars["train/loss"]] == [0, 1, 2, 3]
    np.testing.assert_allclose([v for _, v in scalars["train/loss"]], [1, 1 / 2, 1 / 3, 1 / 4], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in scalars["train/acc"]], [0, 0.25, 0.5, 0.75])
    assert scalars["epoch/val_loss"] == [(0, 0.25)]

    images = tb_plugin_tags(run_dir, "images")
    assert [tag for tag, _ in images] == ["augmentations"]
    # image summaries hold [width, height, png bytes]
    width, height, png = images[0][1]
    expected = image_grid(views)
    assert (int(width), int(height)) == (expected.shape[1], expected.shape[0])
    import io

    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(png))), expected)

    texts = [(tag, arr.item().decode()) for tag, arr in tb_plugin_tags(run_dir, "text")]
    assert any(tag == "params" and "| train.EPOCHS | 2 |" in text for tag, text in texts)
    assert any(tag == "tags" and "| owner | tests |" in text for tag, text in texts)

    # a second run with the same name gets its own folder
    with make_tracker(["tensorboard"], "exp", "r1", None, tmp_path / "ml", tb) as t2:
        assert t2.locations["tensorboard"] == str(tb / "exp" / "r1-2")


def test_tensorboard_event_accumulator_reads_scalars(tmp_path):
    ea_mod = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    import tensorflow as tf

    with make_tracker(["tensorboard"], "exp", "acc", None, tmp_path / "ml", tmp_path / "tb") as t:
        for step in (0, 5, 10):
            t.log_metrics({"epoch/val_loss": step * 0.5}, step=step)
    acc = ea_mod.EventAccumulator(str(tmp_path / "tb" / "exp" / "acc"), size_guidance={"tensors": 0})
    acc.Reload()
    events = acc.Tensors("epoch/val_loss")
    assert [(e.step, float(tf.make_ndarray(e.tensor_proto))) for e in events] == [
        (0, 0.0), (5, 2.5), (10, 5.0)]


# --------------------------------------------------------------------------- projector

def test_projector_files_are_what_the_projector_plugin_loads(tmp_path):
    pb2 = pytest.importorskip("tensorboard.plugins.projector.projector_config_pb2")
    from google.protobuf import text_format
    from tensorboard.plugins.projector import projector_plugin

    rng = np.random.default_rng(2)
    n = 10
    vectors = rng.normal(size=(n, 4)).astype(np.float32)
    meta = pd.DataFrame({"stellar_mass": rng.uniform(9, 11, n), "label": [f"g\t{i}" for i in range(n)]})
    meta.loc[3, "stellar_mass"] = np.nan
    thumbs = rng.uniform(size=(n, 8, 6, 3))
    with make_tracker(["tensorboard"], "exp", "proj", None, tmp_path / "ml", tmp_path / "tb") as t:
        t.log_embedding(vectors, meta, thumbs, name="representation")
        t.log_embedding(vectors[:3], meta["stellar_mass"].iloc[:3].to_frame(), None, name="one col")
    run_dir = tmp_path / "tb" / "exp" / "proj"
    config_path = run_dir / "projector_config.pbtxt"
    config = text_format.Parse(config_path.read_text(), pb2.ProjectorConfig())
    assert [e.tensor_name for e in config.embeddings] == ["representation", "one_col"]

    def resolve(rel):
        path = Path(projector_plugin._rel_to_abs_asset_path(rel, str(config_path)))
        assert path.is_file(), rel
        return path

    rep, one = config.embeddings
    assert list(rep.tensor_shape) == [n, 4]
    np.testing.assert_allclose(projector_plugin._read_tensor_tsv_file(str(resolve(rep.tensor_path))),
                               vectors, rtol=1e-6)
    lines = resolve(rep.metadata_path).read_text().splitlines()
    assert len(lines) == n + 1
    assert lines[0].split("\t") == ["stellar_mass", "label"]
    assert all(len(line.split("\t")) == 2 for line in lines[1:])
    assert lines[4].split("\t")[0] == ""  # NaN written as an empty cell
    assert float(lines[1].split("\t")[0]) == pytest.approx(meta["stellar_mass"][0])
    assert lines[1].split("\t")[1] == "g 0"  # a tab inside a value cannot split the column

    # sprite: ceil(sqrt(10)) = 4 cells per side of 6 px wide × 8 px high
    from PIL import Image

    assert list(rep.sprite.single_image_dim) == [6, 8]
    sheet = np.asarray(Image.open(resolve(rep.sprite.image_path)))
    assert sheet.shape == (4 * 8, 4 * 6, 3)
    shown = to_display(thumbs)
    for k in range(n):
        r, c = divmod(k, 4)
        np.testing.assert_array_equal(sheet[r * 8:(r + 1) * 8, c * 6:(c + 1) * 6], shown[k])

    # a single metadata column gets an index column so that the header row is read as one
    one_lines = resolve(one.metadata_path).read_text().splitlines()
    assert one_lines[0].split("\t") == ["index", "stellar_mass"] and len(one_lines) == 4
    assert not one.HasField("sprite")


def test_sprite_is_shrunk_to_the_projector_limit():
    thumbs = np.random.default_rng(3).uniform(size=(5, 40, 40))
    sheet, (w, h) = sprite(thumbs, max_side=60)
    assert (w, h) == (20, 20)
    assert sheet.shape == (60, 60, 3)  # 3×3 cells, within the limit


def test_mlflow_keeps_the_projector_files_as_artifacts(store, tmp_path):
    vectors = np.arange(12, dtype=np.float32).reshape(6, 2)
    with make_tracker(["mlflow"], "proj", "emb", None, store, tmp_path) as t:
        t.log_embedding(vectors, pd.DataFrame({"a": range(6), "b": list("abcdef")}), None, "rep")
        t.log_embedding(vectors, pd.DataFrame({"a": range(5)}), None, "bad rows")  # skipped
        tracker = t
    client = client_for(store)
    run = run_of(client, tracker)
    local = Path(client.download_artifacts(run.info.run_id, "embeddings", str(tmp_path / "dl")))
    assert [p.name for p in local.iterdir()] == ["rep"]
    assert (local / "rep" / "projector_config.pbtxt").is_file()
    np.testing.assert_array_equal(
        np.loadtxt(local / "rep" / "projector" / "rep" / "tensors.tsv", delimiter="\t"), vectors)


# --------------------------------------------------------------------------- failures

def test_unreachable_mlflow_uri_costs_one_warning_and_tensorboard_still_records(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{closed_port()}")
    artifact = tmp_path / "f.txt"
    artifact.write_text("x")
    start = time.perf_counter()
    with make_tracker(["mlflow", "tensorboard"], "exp", "r", None, tmp_path / "ml", tmp_path / "tb") as t:
        t.log_params({"a": 1})
        for step in range(3):
            t.log_metrics({"train/loss": float(step)}, step=step)
        t.log_artifact(artifact)
        t.log_images("aug", np.ones((2, 4, 4)), step=0)
        tracker = t
    assert time.perf_counter() - start < 30
    assert tracker.backends == ["tensorboard"]
    warnings = tracking_warnings(caplog)
    assert len(warnings) == 1 and "'mlflow'" in warnings[0].getMessage()
    assert not (tmp_path / "ml").exists()  # the env URI wins over the local store
    assert [s for s, _ in tb_scalars(tmp_path / "tb" / "exp" / "r")["train/loss"]] == [0, 1, 2]


def test_unwritable_tensorboard_dir_costs_one_warning_and_mlflow_still_records(store, tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")  # even root cannot create a folder under a file
    with make_tracker(["mlflow", "tensorboard"], "broken-tb", "r", None, store, blocker / "tb") as t:
        for step in range(3):
            t.log_metrics({"train/loss": float(step)}, step=step)
        t.log_images("aug", np.ones((2, 4, 4)), step=0)
        tracker = t
    assert tracker.backends == ["mlflow"]
    warnings = tracking_warnings(caplog)
    assert len(warnings) == 1 and "'tensorboard'" in warnings[0].getMessage()
    client = client_for(store)
    history = client.get_metric_history(run_of(client, tracker).info.run_id, "train/loss")
    assert [m.step for m in history] == [0, 1, 2]


def test_backend_failing_mid_run_warns_once_and_others_go_on(store, tmp_path, caplog):
    with make_tracker(["mlflow", "tensorboard"], "mid-run", "r", None, store, tmp_path / "tb") as t:
        t.log_metrics({"train/loss": 0.0}, step=0)
        tb_backend = next(b for b in t._backends if b.name == "tensorboard")._backend

        def broken(*args, **kwargs):
            raise OSError("disk full")

        tb_backend.log_metrics = broken
        for step in range(1, 5):
            t.log_metrics({"train/loss": float(step)}, step=step)
        t.log_metrics({"train/bad": "not a number"}, step=5)
        t.log_metrics({"train/bad": "not a number"}, step=6)
        tracker = t
    warnings = tracking_warnings(caplog)
    assert len([w for w in warnings if "'tensorboard'" in w.getMessage()]) == 1
    assert "disk full" in warnings[0].getMessage()
    assert len([w for w in warnings if "train/bad" in w.getMessage()]) == 1
    assert tracker.backends == ["mlflow"]
    client = client_for(store)
    history = client.get_metric_history(run_of(client, tracker).info.run_id, "train/loss")
    assert [m.step for m in history] == [0, 1, 2, 3, 4]
    # what TensorBoard had before the failure is kept
    assert tb_scalars(tmp_path / "tb" / "mid-run" / "r")["train/loss"] == [(0, 0.0)]
