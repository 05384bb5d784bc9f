"""A fresh clone works on its own: nothing reads a folder outside the repository.

The committed HEAD is cloned into a temporary folder with no siblings and the mock
universe is built there at the small size, with every path override removed from the
environment: the real TNG files it needs must come from the clone's own ``data/``.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: config.py's environment overrides; none may leak into the clone's run
PATH_OVERRIDES = ("DATASET_RAW_PATH", "ILLUSTRIS_PATH", "DATASET_PATH", "MODELS_PATH", "PLOTS_PATH",
                  "REPORTS_PATH", "SNAPSHOT_REDSHIFTS", "CC_CRITERIA", "REAL_HSC_MOCK")


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def _committed_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    try:
        _git("rev-parse", "HEAD")
    except subprocess.CalledProcessError:
        return False
    return True


needs_git = pytest.mark.skipif(not _committed_checkout(),
                               reason="not a git checkout with a commit (e.g. an unpacked archive)")


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The committed HEAD, cloned alone into an empty temporary folder."""
    parent = tmp_path_factory.mktemp("fresh")
    target = parent / "galaxy-clr"
    _git("clone", "-q", "--no-checkout", str(ROOT), str(target))
    _git("checkout", "-q", _git("rev-parse", "HEAD").strip(), cwd=target)
    assert [p.name for p in parent.iterdir()] == ["galaxy-clr"]
    return target


@needs_git
@pytest.mark.slow
def test_mock_universe_builds_in_a_fresh_clone(clone):
    env = {k: v for k, v in os.environ.items() if k not in PATH_OVERRIDES and k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-m", "scripts.mock", "--size", "small"], cwd=clone,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    raw = clone / "dataset_raw"
    for ds in ("MOCK_FIDUCIAL", "MOCK_COMPACT", "MOCK_HSC", "MOCK_XRAY"):
        assert list((raw / ds / "images").glob("*.fits")), f"no images written for {ds}"
        assert len(pd.read_parquet(raw / ds / "truth.parquet")) > 0
    assert (raw / "MOCK_HSC" / "catalogue.csv").is_file()
    for sim in ("MockTNG-Fiducial", "MockTNG-Compact", "MockTNG-Cluster"):
        assert list((raw / "TNG" / sim / "output").glob("groups_*/fof_subhalo_tab_*.0.hdf5")), sim
    # the mock clusters were drawn from the real catalogue shipped in the clone's data/
    with h5py.File(raw / "TNG" / "MockTNG-Cluster" / "postprocessing" / "CCcriteria.hdf5") as f:
        assert "centralCoolingTime" in f and "HaloIDs" in f
    # nothing was written beside the clone
    assert [p.name for p in clone.parent.iterdir()] == ["galaxy-clr"]


@needs_git
def test_real_files_are_committed():
    tracked = set(_git("ls-files", "data").split())
    assert {"data/README.md", "data/tng_snapshot_redshifts.txt", "data/tng_cluster/CCcriteria.hdf5",
            "data/real_hsc_mock/shalo_084-97_v3_HSC_GRIZY.fits"} <= tracked
    readme = (ROOT / "data" / "README.md").read_text(encoding="utf-8")
    for citation in ("Nelson D. et al. 2019", "Nelson D. et al. 2024", "Eisert L. et al. 2024"):
        assert citation in readme


@needs_git
def test_no_tracked_file_points_outside_the_repository():
    """Code, tests and docs name no sibling folder and no absolute workspace path."""
    outside = re.compile(r"\.\./" + "shared" + r"|/" + "work" + r"/|parents\[2\]\s*/\s*\"shared\""
                         r"|\.parent\s*/\s*\"" + "shared" + "\"")
    offenders = []
    for name in _git("ls-files").split():
        path = ROOT / name
        if path.suffix not in (".py", ".md", ".yaml", ".yml", ".txt", ".ini", ".cfg", ".toml", ".sh",
                               ".ipynb", "") or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        offenders += [f"{name}:{i}" for i, line in enumerate(text.splitlines(), 1) if outside.search(line)]
    assert not offenders, f"references to folders outside the repository: {offenders}"
