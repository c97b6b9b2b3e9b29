"""Running ``python app.py`` in tests: a small shop, a tiny model, a server on a free port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from conftest import TINY_CLIP_CONFIG


def make_shop(base: Path, tiny_clip: str) -> dict[str, Path]:
    """A small generated shop and a tiny model folder any process can load."""
    from searchcore.demo.synth import generate_catalog
    from searchcore.embed import load_embedder, save_model

    csv = generate_catalog(base / "shop", n=60, seed=1, size=128)
    model = save_model(load_embedder(tiny_clip), base / "model", TINY_CLIP_CONFIG)
    return {"base": base, "csv": csv, "model": model, "index": base / "index"}


@contextmanager
def running_app(
    shop: dict[str, Path], *args: str, log_name: str = "app.log"
) -> Iterator[tuple[str, Path]]:
    """``python app.py`` on a free port; yields its URL and log file, and stops it afterwards."""
    from harness import launched_app

    base = shop["base"]
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SEARCHCORE_", "GRADIO_")) and k != "SPACE_ID"
    }
    env.update(
        SEARCHCORE_CACHE=str(base / "cache"),
        GRADIO_TEMP_DIR=str(base / "gradio-tmp"),
        HF_HUB_OFFLINE="1",
        PYTHONUNBUFFERED="1",
    )
    argv = [
        "--catalog",
        str(shop["csv"]),
        "--model",
        str(shop["model"]),
        "--index",
        str(shop["index"]),
        *args,
    ]
    with launched_app(argv, env=env, log=base / log_name, cwd=base) as app:
        yield app.url, app.log


@contextmanager
def serving(shop: dict[str, Path], *args: str) -> Iterator[dict]:
    """``python app.py`` with ``args`` over ``shop``: its URL, REST API root, log and a
    gradio_client Client."""
    from gradio_client import Client

    with running_app(shop, *args) as (url, log):
        yield {"url": url, "api": url + "api/v1", "log": log, "client": Client(url, verbose=False)}


def search_text(client, text: str, **kw):
    args = {"k": 5, "category": "All categories", "min_price": None, "max_price": None, **kw}
    return client.predict(text=text, api_name="/search_text", **args)


def search_image(client, path: str | Path, **kw):
    from gradio_client import handle_file

    args = {
        "k": 5,
        "category": "All categories",
        "min_price": None,
        "max_price": None,
        "upscale": "auto",
        **kw,
    }
    return client.predict(image=handle_file(str(path)), api_name="/search_image", **args)


def search_combined(client, path: str | Path, text: str, weight: float, **kw):
    from gradio_client import handle_file

    args = {
        "k": 5,
        "category": "All categories",
        "min_price": None,
        "max_price": None,
        "upscale": "auto",
        **kw,
    }
    return client.predict(
        image=handle_file(str(path)),
        text=text,
        text_weight=weight,
        api_name="/search_combined",
        **args,
    )
