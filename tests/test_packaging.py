"""The Space's requirements.txt must not drift from pyproject.toml's dependencies."""

from __future__ import annotations

import re
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]


def _names(lines: list[str]) -> set[str]:
    out = set()
    for line in lines:
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            out.add(re.split(r"[<>=!~;\[ ]", line, maxsplit=1)[0].lower().replace("_", "-"))
    return out


def test_requirements_match_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = _names(project["dependencies"]) - {"gradio"}  # the Space's sdk_version installs gradio
    have = _names((ROOT / "requirements.txt").read_text().splitlines())
    assert have == wanted, f"missing: {wanted - have}, extra: {have - wanted}"
