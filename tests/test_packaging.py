"""Packaging: the Space's requirements.txt follows pyproject.toml's dependencies, and a wheel
installed outside the checkout carries and serves the shipped models."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
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


def test_the_wheels_package_list_is_the_tree() -> None:
    from setuptools import find_packages

    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set(find_packages(str(ROOT), include=["searchcore*"]))
    assert set(tool["packages"]) == found | {"searchcore.assets"}
    assert tool["package-dir"] == {"searchcore.assets": "assets"}


_caches = shutil.ignore_patterns("__pycache__", "*.pyc")


@pytest.mark.slow
def test_a_wheel_installed_outside_the_checkout_serves_the_shipped_model(
    colour_catalog: Path, tmp_path: Path
) -> None:
    """pip install of the wheel (not editable) into a fresh venv; the venv sees this one's
    packages through a .pth line, so torch is not installed again (and no .pth of this venv,
    such as the editable install's finder, runs there)."""
    from searchcore.embed import load_embedder

    shipped = ROOT / "assets/models/clip-default/open_clip_model.safetensors"
    if not shipped.is_file():
        pytest.skip("the checkout has no shipped model")
    wheels, venv, work = tmp_path / "wheels", tmp_path / "venv", tmp_path / "elsewhere"
    run = lambda *a, **kw: subprocess.run(  # noqa: E731
        [str(x) for x in a], capture_output=True, text=True, timeout=600, **kw
    )
    # Built from a copy of what the wheel is made of: setuptools writes build/ where it builds.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "searchcore", "assets"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": _caches} if name == "searchcore" else {}))
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                "-q", "-w", wheels, source)  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = wheels.glob("searchcore-*.whl")
    assert run(sys.executable, "-m", "venv", "--without-pip", venv).returncode == 0
    python = venv / "bin" / "python"
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    (Path(site.stdout.strip()) / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"])
    installed = run(python, "-m", "pip", "install", "--no-deps", "--no-index", "-q", wheel)
    assert installed.returncode == 0, installed.stderr
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEARCHCORE_")}
    env["PYTHONPATH"] = ""
    where = run(
        python, "-c", "import searchcore.demo.assets as a; print(a.__file__); print(a.ASSETS)",
        cwd=work, env=env,
    )  # fmt: skip
    module, assets = where.stdout.split()
    assert Path(module).is_relative_to(venv) and Path(assets).is_relative_to(venv), where.stdout
    assert (Path(assets) / "models" / "clip-default" / "open_clip_model.safetensors").is_file()
    index = work / "index"
    cli = (python, "-m", "searchcore")
    built = run(*cli, "index", "build", "--catalog", colour_catalog, "--model", "default",
                "--out", index, cwd=work, env=env)  # fmt: skip
    assert built.returncode == 0, built.stderr + built.stdout
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["model"]["fingerprint"] == load_embedder("default").fingerprint
    # An architecture alone is refused there too, with the tags to choose from.
    bare = run(*cli, "index", "build", "--catalog", colour_catalog, "--model", "ViT-B-32",
               "--out", work / "noise", cwd=work, env=env)  # fmt: skip
    assert bare.returncode != 0 and "ViT-B-32:openai" in bare.stderr + bare.stdout
    assert not (work / "noise" / "manifest.json").exists()
