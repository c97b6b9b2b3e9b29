"""A running page follows changes that other processes commit (the CLI, a shop's script)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from apphelpers import make_shop, running_app, search_image
from PIL import Image

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app(tmp_path_factory, tiny_clip: str) -> Iterator[dict]:
    from gradio_client import Client

    shop = make_shop(tmp_path_factory.mktemp("liveapp"), tiny_clip)
    with running_app(shop) as (url, log):
        yield {"shop": shop, "client": Client(url, verbose=False), "log": log}


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "searchcore", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


def _until(predicate, seconds: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.3)
    return None


def test_the_page_answers_with_a_product_the_cli_just_added(app, tmp_path: Path) -> None:
    photo = tmp_path / "new.png"
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(
        photo
    )
    client, index = app["client"], app["shop"]["index"]

    def top() -> dict:
        return search_image(client, photo, upscale="never")["results"][0]

    assert top()["id"] != "NEW1"
    r = _cli(
        "catalog",
        "add",
        "--index",
        str(index),
        "--id",
        "NEW1",
        "--title",
        "Brand new thing",
        "--price",
        "12.50",
        "--image",
        str(photo),
    )
    assert r.returncode == 0 and "committed" in r.stdout, r.stderr
    took = _until(lambda: top()["id"] == "NEW1", 15)
    assert took is not None, "the page never answered with the product the CLI added"
    hit = top()
    assert hit["title"] == "Brand new thing" and hit["price"] == "12.50" and hit["score"] > 0.999
    print(f"the page served the CLI's product {took:.1f} s after the commit")

    r = _cli("catalog", "update", "--index", str(index), "--id", "NEW1", "--title", "Renamed thing")
    assert r.returncode == 0, r.stderr
    assert _until(lambda: top()["title"] == "Renamed thing", 15) is not None
    r = _cli("catalog", "remove", "--index", str(index), "--id", "NEW1")
    assert r.returncode == 0, r.stderr
    assert _until(lambda: top()["id"] != "NEW1", 15) is not None
    assert "Traceback" not in app["log"].read_text()
