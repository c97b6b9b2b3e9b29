"""The page, unchanged, on a Milvus-backed index (Milvus Lite, started by the app itself)."""

from __future__ import annotations

from pathlib import Path

import pytest
from apphelpers import make_shop, running_app, search_image, search_text

pytest.importorskip("milvus_lite")
pytestmark = pytest.mark.slow


def test_app_builds_and_serves_a_milvus_index(tmp_path_factory, tiny_clip: str) -> None:
    from gradio_client import Client

    shop = make_shop(tmp_path_factory.mktemp("milvus-app"), tiny_clip)
    shop["index"] = shop["base"] / "shop.db"  # a Milvus Lite file: the Milvus backend
    with running_app(shop, log_name="milvus.log") as (url, log):
        client = Client(url, verbose=False)
        out = search_text(client, "red sneakers with white soles", category="sneakers")
        assert len(out["results"]) == 5 and {r["category"] for r in out["results"]} == {"sneakers"}
        photo = sorted((shop["csv"].parent / "images").glob("*.jpg"))[7]
        assert search_image(client, photo, upscale="never")["results"][0]["id"] == photo.stem
        assert "building the index" in log.read_text()
    assert Path(shop["index"]).exists()  # Milvus Lite keeps its data under that name
