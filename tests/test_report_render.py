"""The analyse report renders: HTML opened in headless Chromium with every image loaded,
Markdown links that resolve, strict-JSON metrics with the headline.

Chromium is required (CI installs the Debian ``chromium`` package in .ci/run); its absence
is a failure, not a skip, so a report that no browser has opened never passes.
"""
from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from scripts.analysis import report

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
#: Marks <body data-images-loaded="ok/total"> once the page (and all its images) loaded.
PROBE = """<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = ok + "/" + imgs.length;
});
</script>"""


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is not installed (apt-get install -y chromium); the report "
                "rendering test needs it and must not be skipped")


def render_check(html_path: Path, tmp_path: Path) -> tuple[int, int]:
    """Open a copy of ``html_path`` (with a load probe added) in headless Chromium and
    return (images loaded with a non-zero natural width, images in the page)."""
    text = Path(html_path).read_text(encoding="utf-8")
    assert "</body>" in text
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(text.replace("</body>", PROBE + "</body>"), encoding="utf-8")
    profile = tmp_path / "chromium-profile"
    cmd = [chromium_binary(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
           "--virtual-time-budget=20000", "--dump-dom", probe_page.resolve().as_uri()]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    match = re.search(r'data-images-loaded="(\d+)/(\d+)"', done.stdout)
    assert match, "the page never finished loading in Chromium: " + done.stderr[-2000:]
    return int(match.group(1)), int(match.group(2))


def _figure(path: Path, seed: int) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.default_rng(seed)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.scatter(*rng.normal(size=(2, 50)))
    fig.savefig(path)
    plt.close(fig)
    return path


def _metrics() -> dict:
    ood = {"in_domain_fraction": 0.9, "calibration": 1.3, "median_score": 0.7,
           "mean_log_score": float("nan"), "k": 8, "percentile": 95.0, "n_subsample": 100}
    return {
        "run_name": "demo",
        "realism": {"SIM": {"OBS": {"ood_sim": ood, "ood_obs": dict(ood, in_domain_fraction=0.8),
                                    "c2st": {"auc": 0.6, "ci_low": 0.55, "ci_high": 0.65},
                                    "mmd": {"mmd2": 0.01, "p_value": 0.04}}}},
        "drivers": {"SIM": {"stellar_mass": {"representation": {"r2": 0.5, "r2_std": 0.1, "n": 90},
                                             "baseline": {"r2": float("nan"), "r2_std": 0.1, "n": 90}}}},
        "permanence": {"SIM": {"top1": 0.4, "chance_top1": 0.01, "top5": np.float64(0.7),
                               "chance_top5": 0.05, "n_scored": np.int64(90)}},
    }


def test_report_renders_with_every_image(tmp_path):
    figs = tmp_path / "plots"
    figs.mkdir()
    paths = [_figure(figs / f"fig_{i}.png", i) for i in range(3)]
    other = tmp_path / "other"
    other.mkdir()
    paths.append(_figure(other / "fig_0.png", 9))          # same file name, other folder
    sections = [
        report.Section("Summary", ["Numbers & <tags> are escaped."],
                       tables=[("A table", pd.DataFrame({"name": ["a|b", "c"], "value": [0.123456, math.nan]}))],
                       figures=[("first", paths[0]), ("second", paths[1])]),
        report.Section("More", figures=[("third", paths[2]), ("same name", paths[3]),
                                        ("first again", paths[0])]),
    ]
    out = tmp_path / "reports" / "run"
    html_path, md_path = report.write_report(out, "Test report", sections, {"analyse": {"SEED": 0}},
                                             versions={"python": "3", "numpy": np.__version__})
    loaded, total = render_check(html_path, tmp_path)
    assert total == 5 and loaded == total
    html_text = html_path.read_text()
    assert "&lt;tags&gt;" in html_text and "<tags>" not in html_text
    assert "SEED: 0" in html_text and "numpy" in html_text
    md = md_path.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 5 and len(set(links)) == 4          # two files called fig_0.png kept apart
    for link in links:
        assert (out / link).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "a\\|b" in md and "| – |" in md                     # escaped pipe, NaN shown as a dash


def test_broken_image_is_detected(tmp_path):
    """The probe really checks loading: a page with a broken image is reported as such."""
    page = tmp_path / "broken.html"
    page.write_text("<!DOCTYPE html><html><body><img src=\"data:image/png;base64,AAAA\">"
                    "<img src=\"missing.png\"></body></html>")
    loaded, total = render_check(page, tmp_path)
    assert (loaded, total) == (0, 2)


def test_metrics_json_is_strict_with_headline(tmp_path):
    path = report.write_metrics(_metrics(), tmp_path / "metrics.json")
    text = path.read_text()
    assert "NaN" not in text
    data = json.loads(text)
    head = data["headline"]
    assert head["realism"]["SIM"]["OBS"] == {
        "in_domain_fraction_sim": 0.9, "in_domain_fraction_obs": 0.8, "c2st_auc": 0.6,
        "c2st_auc_interval": [0.55, 0.65], "mmd2": 0.01, "mmd_p_value": 0.04}
    assert head["stellar_mass_r2"]["SIM"] == {"representation": 0.5, "baseline": None}
    assert head["permanence_top5"]["SIM"] == {"top5": 0.7, "chance_top5": 0.05}
    assert data["realism"]["SIM"]["OBS"]["ood_sim"]["mean_log_score"] is None


def test_flat_metrics_for_trackers():
    flat = report.flat_metrics(_metrics())
    assert flat["realism/SIM/OBS/c2st/auc"] == 0.6
    assert flat["permanence/SIM/n_scored"] == 90.0
    assert "drivers/SIM/stellar_mass/baseline/r2" not in flat     # NaN left out
    assert all(isinstance(v, float) for v in flat.values())
