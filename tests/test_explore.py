"""The interactive explorer (scripts.explore) on the small mock run: the server page in
headless Chromium (map drawn, neighbours of a known object, a corrupt FITS's reason), the
analogue query against the stage's analogues.parquet, uploads, subsampling, the
posterior hook, the localhost default, and the report's standalone interactive map."""
from __future__ import annotations

import base64
import copy
import json
import logging
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scripts.params import parse_params
from tests.conftest import ROOT, write_params
from bench.aperture_encoder import save_run

RUN = "explore"
OBSERVED = "MOCK_HSC"


def _raw_params(raw):
    raw = copy.deepcopy(raw)
    raw["train"]["RUN_NAME"] = RUN
    raw["analyse"]["UMAP"]["FIT_SUBSAMPLE"] = 100
    raw["analyse"]["SPLITS"] = ["train", "validation", "test"]
    raw["analyse"]["REALISM"].update(K=3, N_PERMUTATIONS=10, C2ST_PERMUTATIONS=2)  # 14 observed objects
    raw["tracking"]["BACKENDS"] = ["none"]
    return raw


@pytest.fixture(scope="module")
def run_folder(prepared_small, small_universe, tmp_path_factory):
    """A small analysed run: folders, params file and the loaded :class:`RunData`."""
    from scripts import analyse
    from scripts.explore.data import RunData

    dataset_root, raw = prepared_small
    root = tmp_path_factory.mktemp("explore_run")
    raw = _raw_params(raw)
    save_run(root / "models" / RUN, 32, 3)
    params = parse_params(raw)
    analyse.run(params, dataset_root, root / "models", root / "reports")
    raw_root, illustris = small_universe
    data = RunData(params, dataset_root, root / "models", root / "reports", raw_root, illustris)
    yield {"root": root, "dataset": dataset_root, "raw": raw, "params": params,
           "params_file": write_params(root / "params.yaml", raw), "data": data,
           "raw_root": raw_root, "illustris": illustris}
    data.close()


def _corrupt_fits(path: Path) -> Path:
    path.write_bytes(b"SIMPLE  =                    T" + b"\0" * 100)
    return path


def _expected_analogues(run_folder, observed_row: int) -> pd.DataFrame:
    table = pd.read_parquet(run_folder["root"] / "reports" / RUN / "analogues.parquet")
    return table[(table["observed_dataset"] == OBSERVED) & (table["observed_row"] == observed_row)]


def test_analogue_query_equals_the_stage(run_folder):
    data = run_folder["data"]
    observed = data.table.index[data.table["dataset"] == OBSERVED].to_numpy()
    assert len(observed) >= 10
    for position in observed[:10]:
        got = data.simulated_analogues(int(position))
        want = _expected_analogues(run_folder, int(data.table.at[position, "row"])).sort_values("rank")
        assert list(zip(got["dataset"], got["row"])) == \
            list(zip(want["simulated_dataset"], want["simulated_row"]))
        np.testing.assert_allclose(got["distance"], want["distance"], rtol=1e-5)
        # the strips (every other dataset) hold the pooled analogues
        strips = data.neighbours(int(position))
        assert set(strips["dataset"]) == set(data.datasets) - {OBSERVED}
        assert set(zip(got["dataset"], got["row"])) <= set(zip(strips["dataset"], strips["row"]))


def _listening_address(port: int) -> str | None:
    """Local address of the TCP socket listening on ``port`` (Linux /proc/net/tcp)."""
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        if not os.path.exists(table):
            continue
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if int(p, 16) == port and state == "0A":            # LISTEN
                if width == 8:
                    return ".".join(str(int(addr[i:i + 2], 16)) for i in (6, 4, 2, 0))
                return "::1" if addr.endswith("01000000") and set(addr[:24]) == {"0"} else addr
    return None


@pytest.fixture(scope="module")
def server(run_folder):
    """``python -m scripts.explore`` on a free port (the default host), its log and port."""
    root = run_folder["root"]
    env = dict(os.environ, DATASET_PATH=str(run_folder["dataset"]), MODELS_PATH=str(root / "models"),
               REPORTS_PATH=str(root / "reports"), DATASET_RAW_PATH=str(run_folder["raw_root"]),
               ILLUSTRIS_PATH=str(run_folder["illustris"]), TF_CPP_MIN_LOG_LEVEL="2")
    log_path = root / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "scripts.explore", "--params",
                                 str(run_folder["params_file"]), "--port", "0"],
                                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    port, deadline = None, time.time() + 90
    while port is None and time.time() < deadline and proc.poll() is None:
        match = re.search(r"at http://localhost:(\d+)/", log_path.read_text())
        port = int(match.group(1)) if match else None
        time.sleep(0.3)
    try:
        assert port, "the explorer did not start:\n" + log_path.read_text()[-3000:]
        yield {"port": port, "log": log_path}
    finally:
        proc.terminate()
        proc.wait(20)


def test_page_draws_the_map_and_answers_queries_in_chromium(run_folder, server, tmp_path):
    from tests.headless import Browser, chromium_binary

    if chromium_binary() is None:
        pytest.fail("Chromium is not installed (apt-get install -y chromium)")
    data = run_folder["data"]
    port = server["port"]
    if os.path.exists("/proc/net/tcp"):                      # bound to this machine only
        assert _listening_address(port) == "127.0.0.1"
    thumb = urllib.request.urlopen(f"http://127.0.0.1:{port}/thumb/0.png", timeout=30).read()
    assert thumb[:8] == b"\x89PNG\r\n\x1a\n"

    position = int(data.table.index[data.table["dataset"] == OBSERVED][0])
    row = int(data.table.at[position, "row"])
    corrupt = _corrupt_fits(tmp_path / "corrupt.fits")
    url = f"http://127.0.0.1:{port}/?select={OBSERVED}:{row}&fits={corrupt}"
    with Browser(1500, 950) as browser:
        report = json.loads(browser.open(url, "document.body.getAttribute('data-explorer')", 60))
        browser.screenshot(tmp_path / "explorer.png")
    assert report["points"] == len(data.table)
    assert report["canvases"] >= 1 and report["coloured_pixels"] > 0
    strips = data.neighbours(position)
    assert report["neighbours"] == ",".join(f"{d}:{o}" for d, o in
                                            zip(strips["dataset"], strips["object_id"]))
    want = _expected_analogues(run_folder, row)
    shown = set(report["neighbours"].split(","))
    assert {f"{d}:{o}" for d, o in zip(want["simulated_dataset"], want["simulated_object_id"])} <= shown
    reason = data.add_fits(corrupt).reason
    assert reason and f"corrupt.fits: skipped ({reason}" in report["fits"]
    assert "Traceback" not in report["fits"]
    assert (tmp_path / "explorer.png").stat().st_size > 10_000


def _document(data):
    from bokeh.document import Document

    from scripts.explore.app import build_document

    doc = Document()
    build_document(doc, data)
    return doc


def test_uploaded_fits_shows_the_skip_reason_or_lands_on_the_map(run_folder, tmp_path):
    from scripts.analysis.analogues import fits_reader

    data = run_folder["data"]
    doc = _document(data)
    upload, status = doc.select_one({"name": "fits_upload"}), doc.select_one({"name": "fits_status"})

    def send(name, content):
        upload.set_from_json("filename", name)
        upload.set_from_json("value", base64.b64encode(content).decode())
        for callback in list(doc.session_callbacks):        # the next-tick callback a server runs
            callback.callback()

    for content in (b"not a FITS file at all", _corrupt_fits(tmp_path / "x.fits").read_bytes()):
        (tmp_path / "ref.fits").write_bytes(content)
        reason = fits_reader(data.params, OBSERVED, data.raw_root, data.illustris_root)(
            tmp_path / "ref.fits").reason
        send("broken.fits", content)
        assert f"broken.fits: skipped ({reason}: " in status.text and "Traceback" not in status.text

    image = sorted((Path(run_folder["raw_root"]) / OBSERVED / "images").glob("*.fits"))[0]
    before = len(data.new_images)
    send(image.name, image.read_bytes())
    assert "embedded" in status.text and len(data.new_images) == before + 1
    new = data.new_images[-1]
    assert len(doc.select_one({"name": "new_points"}).data["umap_1"]) == 1
    assert set(new.neighbours["dataset"]) == set(data.datasets)       # a new image: every set
    # an image of the observed set embeds to its stored vector: its nearest images are its own
    stored = data.table.index[(data.table["dataset"] == OBSERVED)]
    distances = np.linalg.norm(data.vectors[stored] - new.vector, axis=1)
    assert distances.min() < 1e-3 * (1 + np.linalg.norm(new.vector))


def test_large_runs_are_subsampled_with_a_message(run_folder):
    from scripts.explore.data import RunData, subsample

    assert len(subsample(10, 20, 0)) == 10
    picked = subsample(1_000_000, 200_000, 0)
    assert len(picked) == 200_000 and np.all(np.diff(picked) > 0)
    root = run_folder["root"]
    data = RunData(run_folder["params"], run_folder["dataset"], root / "models", root / "reports",
                   max_points=50, with_ood=False)
    try:
        assert "subsample of 50 of" in data.message
        doc = _document(data)
        assert len(doc.select_one({"name": "points"}).data["pos"]) == 50
        assert "subsample of 50" in doc.select_one({"name": "header"}).text
    finally:
        data.close()


def test_posterior_summary_columns_colour_the_map(run_folder):
    from scripts.explore.data import POSTERIOR_FILE, RunData

    root = run_folder["root"]
    data = run_folder["data"]
    post_path = root / "reports" / RUN / POSTERIOR_FILE
    posterior = data.table[["dataset", "row"]].assign(stellar_mass_median=np.arange(len(data.table)) * 0.5)
    posterior.iloc[: len(posterior) // 2].to_parquet(post_path)
    try:
        with_post = RunData(run_folder["params"], run_folder["dataset"], root / "models",
                            root / "reports", with_ood=False)
    finally:
        post_path.unlink()
    try:
        assert "posterior_stellar_mass_median" in with_post.fields
        values = with_post.table["posterior_stellar_mass_median"]
        assert values.iloc[3] == 1.5 and values.isna().sum() == len(values) - len(values) // 2
        doc = _document(with_post)
        assert "posterior_stellar_mass_median" in doc.select_one({"name": "colour_by"}).options
    finally:
        with_post.close()


def test_realism_lists_observed_images_without_counterpart(run_folder):
    from scripts.explore.data import OOD

    data = run_folder["data"]
    scores = data.table[OOD]
    observed = data.table["dataset"] == OBSERVED
    assert np.isfinite(scores[observed]).all()
    unmatched = data.unmatched_observed()
    assert (unmatched[OOD] > 1).all() and len(unmatched) == int((scores[observed] > 1).sum())
    text = _document(data).select_one({"name": "realism"}).text
    assert f"{len(unmatched)} of {int(observed.sum())} scored observed images" in text


def test_binds_to_localhost_unless_told(caplog, tmp_path):
    from scripts.explore.__main__ import main, parse_args

    assert parse_args([]).host == "127.0.0.1"
    with caplog.at_level(logging.WARNING, logger="explore"):
        status = main(["--params", str(tmp_path / "missing.yaml"), "--host", "0.0.0.0"])
    assert status == 2
    assert any("exposes the explorer" in r.getMessage() for r in caplog.records)


def test_report_links_a_standalone_interactive_map(run_folder):
    from scripts.analysis.interactive_map import INTERACTIVE_MAP

    report_dir = run_folder["root"] / "reports" / RUN
    page = (report_dir / INTERACTIVE_MAP).read_text()
    assert "data:image/png;base64," in page                          # thumbnails embedded
    assert not re.search(r"<script[^>]+src=\"https?:", page)          # no CDN: opens offline
    assert f'href="{INTERACTIVE_MAP}"' in (report_dir / "report.html").read_text()
    assert f"]({INTERACTIVE_MAP})" in (report_dir / "report.md").read_text()
    from tests.headless import Browser

    with Browser(900, 700) as browser:                                # drawn from disk, no server
        assert browser.open((report_dir / INTERACTIVE_MAP).resolve().as_uri(), COLOURED_PIXELS, 30) > 0


#: Non-white pixels on every canvas of a Bokeh page (canvases live in shadow roots).
COLOURED_PIXELS = """(function () {
  function canvases(root) {
    var out = Array.prototype.slice.call(root.querySelectorAll("canvas"));
    root.querySelectorAll("*").forEach(function (e) { if (e.shadowRoot) out = out.concat(canvases(e.shadowRoot)); });
    return out;
  }
  var n = 0;
  canvases(document).forEach(function (c) {
    var px = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    for (var i = 0; i < px.length; i += 4) if (px[i + 3] > 0 && !(px[i] > 240 && px[i + 1] > 240 && px[i + 2] > 240)) n++;
  });
  return n;
})()"""


def test_selecting_a_region_compares_its_field_distribution(run_folder):
    data = run_folder["data"]
    doc = _document(data)
    points = doc.select_one({"name": "points"})
    field = doc.select_one({"name": "region_field"})
    field.value = "stellar_mass"
    picked = np.flatnonzero(points.data["dataset"] == "MOCK_FIDUCIAL")[:20]
    points.selected.indices = picked.tolist()
    hist = doc.select_one({"name": "region_hist"}).data
    edges, sel, every = data.region_histogram("stellar_mass", data.shown[picked])
    np.testing.assert_allclose(hist["sel"], sel)
    np.testing.assert_allclose(hist["all"], every)
    assert sel.sum() > 0 and "MOCK_FIDUCIAL 20" in doc.select_one({"name": "region_text"}).text
