"""The wheel is production only: it has the CLI, the stages and the wire contract, not the dev
tooling or the tests, and the program it installs works without the dev tooling."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from hatchling.build import build_wheel

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from this checkout by the build backend (PEP 517), as pip would."""
    out = tmp_path_factory.mktemp("wheel")
    cwd = Path.cwd()
    os.chdir(ROOT)  # the backend builds the project in the current directory
    try:
        name = build_wheel(str(out))
    finally:
        os.chdir(cwd)
    return out / name


def _names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def test_the_wheel_leaves_out_the_dev_tooling_and_the_tests(wheel: Path) -> None:
    names = _names(wheel)
    assert not [n for n in names if n.startswith("vidpipe/dev/")]
    assert not [n for n in names if n.startswith("tests/")]
    for present in (
        "vidpipe/__main__.py",
        "vidpipe/cli/__init__.py",
        "vidpipe/cli/run.py",
        "vidpipe/bus/address.py",
        "vidpipe/ops/__init__.py",
        "services/registry.py",
        "services/submitter/app.py",
        "schemas/events.py",
        "schemas/asyncapi.json",
    ):
        assert present in names


def test_the_console_script_is_the_program(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        (entry_points,) = [n for n in archive.namelist() if n.endswith("entry_points.txt")]
        text = archive.read(entry_points).decode()
    assert "vidpipe = vidpipe.__main__:main" in text


def test_the_installed_program_runs_without_the_dev_tooling(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    # The unpacked wheel first on the path, the checkout not at all (cwd is elsewhere): what a
    # production install sees. The dependencies still come from this environment.
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site"), "COLUMNS": "200"}

    def vidpipe(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vidpipe", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    where = vidpipe("--help")
    assert where.returncode == 0, where.stderr
    assert " run " in where.stdout and " replay " in where.stdout
    assert " up " not in where.stdout and " emulator " not in where.stdout
    up = vidpipe("up")
    assert up.returncode == 2
    assert "No such command 'up'" in up.stderr
