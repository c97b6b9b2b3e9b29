"""Lint is part of the test command: ``ruff check`` and ``ruff format --check`` over the tree.

The rule set (pycodestyle, pyflakes, import order, bugbear, pyupgrade, ruff's own) and the line
length live in pyproject.toml; ruff is pinned in the test extra, so CI and a fresh clone run the
same version.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["app.py", "searchcore", "tests", "benchmarks", "assets"]


def _ruff() -> list[str]:
    exe = Path(sys.executable).with_name("ruff")
    if exe.is_file():
        return [str(exe)]
    found = shutil.which("ruff")
    if found is None:
        pytest.fail(
            "ruff is not installed: `pip install -e '.[test]'` (bash .ci/bootstrap test does)"
        )
    return [found]


def test_ruff_check_is_clean() -> None:
    r = subprocess.run(
        [*_ruff(), "check", "--output-format", "concise", *PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]


def test_ruff_format_is_clean() -> None:
    r = subprocess.run(
        [*_ruff(), "format", "--check", *PATHS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
