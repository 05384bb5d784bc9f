"""`make test`'s Chromium step (.ci/ensure-chromium), run against stand-in commands: it
accepts an installed browser, installs one where the user may, and otherwise stops with
one line before any test runs."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / ".ci" / "ensure-chromium"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash not available")


def _tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!" + BASH + "\n" + body + "\n")
    path.chmod(0o755)


def _run(bin_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    # PATH holds only the stand-ins: the real system's browser or package manager is never seen
    return subprocess.run([BASH, str(SCRIPT)], env={"PATH": str(bin_dir), "TMPDIR": str(tmp_path)},
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def bin_dir(tmp_path) -> Path:
    path = tmp_path / "bin"
    path.mkdir()
    return path


@pytest.mark.parametrize("name", ["chromium", "chromium-browser", "google-chrome"])
def test_an_installed_browser_is_accepted_silently(bin_dir, tmp_path, name):
    _tool(bin_dir, name, "exit 0")
    done = _run(bin_dir, tmp_path)
    assert done.returncode == 0 and done.stderr == ""


def test_root_installs_it_with_apt_get(bin_dir, tmp_path):
    calls = tmp_path / "apt-calls"
    _tool(bin_dir, "id", "echo 0")
    _tool(bin_dir, "env", 'while [[ "$1" == *=* ]]; do export "$1"; shift; done; "$@"')
    _tool(bin_dir, "apt-get", f'echo "$*" >> {calls}\n'
                              f'if [ "$1" = install ] || [ "$2" = install ]; then '
                              f'printf "#!{BASH}\\nexit 0\\n" > {bin_dir}/chromium; chmod +x {bin_dir}/chromium; fi')
    done = _run(bin_dir, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "update" in calls.read_text() and "install -y -qq chromium" in calls.read_text()
    assert (bin_dir / "chromium").is_file()


def test_a_user_who_cannot_install_gets_one_line(bin_dir, tmp_path):
    _tool(bin_dir, "id", "echo 1000")
    _tool(bin_dir, "sudo", "exit 1")            # sudo asks for a password
    _tool(bin_dir, "apt-get", "exit 99")        # never reached
    done = _run(bin_dir, tmp_path)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Chromium is missing" in lines[0] and "apt-get install chromium" in lines[0]


def test_a_failed_install_stops_with_one_line(bin_dir, tmp_path):
    _tool(bin_dir, "id", "echo 0")
    _tool(bin_dir, "env", 'while [[ "$1" == *=* ]]; do export "$1"; shift; done; "$@"')
    _tool(bin_dir, "apt-get", "exit 100")       # e.g. no network
    done = _run(bin_dir, tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines()[-1].startswith("make test: Chromium is missing and installing it failed")


def test_it_looks_for_the_names_the_report_test_uses():
    report_test = (Path(__file__).parent / "test_report_render.py").read_text()
    wanted = re.search(r"for name in \(([^)]*)\)", report_test).group(1)
    names = re.search(r"^NAMES=\(([^)]*)\)", SCRIPT.read_text(), re.M).group(1).split()
    assert names == re.findall(r'"([^"]+)"', wanted)
