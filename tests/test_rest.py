"""The REST API beside the page: same answers as the Gradio API, same guards, plain HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from apphelpers import make_shop, search_image, search_text, serving
from conftest import png

from searchcore.build import build_index
from searchcore.calibrate import MatchGate
from searchcore.catalog import load_catalog
from searchcore.config import UpscaleSettings
from searchcore.engine import SearchEngine
from searchcore.query import FIELDS, Query
from searchcore.stores.hnsw import HnswIndex
from searchcore.web.guard import QueryQueue
from searchcore.web.rest import create_api


@pytest.fixture(scope="module")
def shop(tmp_path_factory, tiny_clip: str) -> dict[str, Path]:
    from searchcore.cli import main

    shop = make_shop(tmp_path_factory.mktemp("rest"), tiny_clip)
    # attribute heads fitted on the tiny model's frozen embeddings: "predicted" in every answer
    heads = ["model", "heads", "--model", str(shop["model"]), "--catalog", str(shop["csv"])]
    assert main([*heads, "--test-fraction", "0"]) == 0
    return shop


@pytest.fixture(scope="module")
def app(shop) -> Iterator[dict]:
    with serving(shop, "--max-upload-mb", "1") as served:
        yield served


def _same(rest: dict, gradio: dict) -> None:
    """Two answers to one query: the same products, scores and verdicts (timings differ)."""
    strip = lambda r: {k: v for k, v in r.items() if k != "image_url"}  # noqa: E731
    assert [strip(r) for r in rest["results"]] == gradio["results"]
    for key in ("query", "upscaled", "upscale", "good_match", "min_score", "notes"):
        assert rest.get(key) == gradio.get(key), key


def test_an_image_query_answers_what_the_gradio_api_answers(app, shop) -> None:
    photo = shop["csv"].parent / "images" / "P00007.jpg"
    with photo.open("rb") as f:
        r = httpx.post(
            app["api"] + "/search", files={"image": ("x.jpg", f)}, data={"k": "5"}, timeout=60
        )
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["results"][0]["id"] == "P00007" and "good_match" in out
    _same(out, search_image(app["client"], photo))
    # each result's photo is a URL the client can fetch: the catalog's own file
    got = httpx.get(out["results"][0]["image_url"], timeout=30)
    assert got.status_code == 200 and got.content == photo.read_bytes()
    assert got.headers["content-type"] == "image/jpeg"


def test_a_text_query_by_form_or_json_answers_what_the_gradio_api_answers(app) -> None:
    want = search_text(app["client"], "red mug", mode="lexical")
    form = httpx.post(app["api"] + "/search", data={"text": "red mug", "k": 5, "mode": "lexical"})
    as_json = httpx.post(
        app["api"] + "/search", json={"text": "red mug", "k": 5, "mode": "lexical"}
    )
    for r in (form, as_json):
        assert r.status_code == 200, r.text
        _same(r.json(), want)


def test_attributes_crop_and_what_the_model_thinks_over_rest(app, shop) -> None:
    import pandas as pd

    df = pd.read_csv(shop["csv"], dtype=str, keep_default_na=False).set_index("id")
    colour = df.loc["P00007", "colour"]
    photo = shop["csv"].parent / "images" / "P00007.jpg"
    with photo.open("rb") as f:
        r = httpx.post(
            app["api"] + "/search",
            files={"image": ("x.jpg", f)},
            data={"k": "3", "attributes": json.dumps({"colour": colour}), "crop": "0,0,1,0.8"},
            timeout=60,
        )
    assert r.status_code == 200, r.text
    out = r.json()
    wanted = int((df["colour"] == colour).sum())
    assert len(out["results"]) == min(3, wanted)
    assert all(df.loc[h["id"], "colour"] == colour for h in out["results"])
    assert out["crop"] == [0, 0, 1, 0.8]
    assert set(out["predicted"]) >= {"category", "colour"}
    for options in out["predicted"].values():
        assert len(options) <= 3 and all(0 <= p <= 1 for _, p in options)
    assert all(isinstance(h["why"], list) and h["why"] for h in out["results"])
    category = df["category"].iloc[0]
    as_json = httpx.post(
        app["api"] + "/search", json={"text": "mug", "k": 4, "attributes": {"category": [category]}}
    )
    assert as_json.status_code == 200, as_json.text
    assert all(df.loc[h["id"], "category"] == category for h in as_json.json()["results"])
    assert "predicted" not in as_json.json()  # words alone: nothing to read off a photo
    for bad, message in (
        ({"text": "mug", "attributes": {"nope": "x"}}, "cannot be filtered on 'nope'"),
        ({"text": "mug", "attributes": "colour=red"}, "JSON object"),
        ({"text": "mug", "crop": [0.9, 0, 0.1, 1]}, "left to right"),
    ):
        r = httpx.post(app["api"] + "/search", json=bad)
        assert r.status_code == 400 and message in r.json()["error"], r.text


def test_products_health_and_docs(app, shop) -> None:
    product = httpx.get(app["api"] + "/products/P00003").json()
    assert product["id"] == "P00003" and product["image_url"].endswith("/products/P00003/image")
    assert httpx.get(app["api"] + "/products/P99999").status_code == 404
    assert httpx.get(app["api"] + "/products/..%2F..%2Fetc%2Fpasswd/image").status_code == 404
    health = httpx.get(app["api"] + "/health").json()
    assert health["status"] == "ok" and health["products"] == 60 and health["indexed"] == 60
    assert health["model"] == "model" and len(health["model_fingerprint"]) == 64
    assert str(shop["base"]) not in httpx.get(app["api"] + "/health").text  # no server paths
    spec = httpx.get(app["api"] + "/openapi.json").json()
    form = spec["paths"]["/search"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert set(form["schema"]["properties"]) == {"image", *FIELDS}
    assert httpx.get(app["api"] + "/docs").status_code == 200


@pytest.mark.parametrize(
    ("send", "status", "says"),
    [
        ({"data": {"k": "true", "text": "mug"}}, 400, "number of results must be a number"),
        ({"data": {"text": "mug", "evil": "1"}}, 400, "unknown field"),
        ({"data": {"text": "mug", "image": "/etc/passwd"}}, 400, "image must be a file"),
        ({"files": {"text": ("t.txt", b"mug")}}, 400, "only 'image' may be a file"),
        ({"files": {"image": ("x.png", b"not a photo")}}, 400, "not an image"),
        ({"json": ["mug"]}, 400, "JSON object"),
        ({"content": b"{", "headers": {"content-type": "application/json"}}, 400, "valid JSON"),
        ({"content": b"x", "headers": {"content-type": "text/plain"}}, 400, "multipart"),
        ({"data": {}}, 400, "Add a photo, a description, or both"),
        ({"files": {"image": ("x.png", b"\x89PNG" + b"0" * 1_200_000)}}, 413, "too large"),
    ],
)
def test_hostile_requests_get_one_line_and_no_path(app, shop, send, status, says) -> None:
    r = httpx.post(app["api"] + "/search", timeout=30, **send)
    assert r.status_code == status, r.text
    message = r.json().get("error") or r.json().get("detail")
    assert says in message and str(shop["base"]) not in r.text and "Traceback" not in r.text


def test_two_photos_in_one_request_are_refused(app, shop) -> None:
    one = (shop["csv"].parent / "images" / "P00001.jpg").read_bytes()
    r = httpx.post(
        app["api"] + "/search",
        files=[("image", ("a.jpg", one)), ("image", ("b.jpg", one))],
        timeout=30,
    )
    assert r.status_code == 400 and "files" in r.json()["error"].lower()


# ------------------------------------------------------------------ in process, with fakes


@pytest.fixture
def engine(colour_catalog: Path, fake_embedder, tmp_path: Path) -> SearchEngine:
    catalog = load_catalog(colour_catalog)
    build_index(catalog, fake_embedder, tmp_path / "index")
    index, _ = HnswIndex.load(tmp_path / "index")
    return SearchEngine(catalog, fake_embedder, None, index, upscale=UpscaleSettings(mode="never"))


def _client(engine: SearchEngine, queue: QueryQueue):
    from fastapi.testclient import TestClient

    return TestClient(create_api(engine, MatchGate(), queue, max_photo_bytes=1 << 20))


def test_a_full_queue_answers_503_with_retry_after(engine) -> None:
    r = _client(engine, QueryQueue(size=0)).post("/search", data={"text": "red"})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert "busy" in r.json()["error"]


def test_photos_take_the_slot_the_page_holds(engine) -> None:
    """A photo query waits for the photo slot the page's photo events hold (never two at once);
    words alone do not need it."""
    queue = QueryQueue(size=4, wait_s=0.5)
    client = _client(engine, queue)
    held, release = threading.Event(), threading.Event()

    def page_photo() -> None:
        with queue.enter(photo=True):
            held.set()
            release.wait(10)

    page = threading.Thread(target=page_photo)
    page.start()
    try:
        assert held.wait(10)
        photo = {"image": ("red.png", png((220, 30, 30)))}
        busy = client.post("/search", files=photo)
        assert busy.status_code == 503 and "photos" in busy.json()["error"]
        assert client.post("/search", data={"text": "red"}).status_code == 200
    finally:
        release.set()
        page.join()
    ok = client.post("/search", files={"image": ("red.png", png((220, 30, 30)))})
    assert ok.status_code == 200 and ok.json()["results"][0]["colour"] == "red"


@pytest.mark.parametrize("space", [None, "shop/search"])
def test_behind_a_spaces_proxy_the_forwarded_scheme_is_trusted(engine, monkeypatch, space) -> None:
    """A Space's proxy speaks https to the shopper and http to the app, from an address of its
    own: on a Space (SPACE_ID) the server trusts X-Forwarded-Proto from any proxy, so image
    URLs say https; elsewhere uvicorn's default (the local host only) holds."""
    import gradio as gr
    import uvicorn

    from searchcore.config import Settings
    from searchcore.web import serve

    ran: dict = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: ran.update(kw))
    if space:
        monkeypatch.setenv("SPACE_ID", space)
    else:
        monkeypatch.delenv("SPACE_ID", raising=False)
    with gr.Blocks() as demo:
        gr.Markdown("page")
    serve.launch(demo, Settings(), engine, MatchGate(), QueryQueue(), host="h", port=1, css="")
    assert ran["proxy_headers"] is True
    assert ran["forwarded_allow_ips"] == ("*" if space else None)


def test_the_query_fields_are_the_parsers_and_the_clis() -> None:
    """One query, three doors: Query.parse (the page's API and REST) and `searchcore search`."""
    import argparse
    import inspect

    from searchcore.cli.main import build_parser

    assert list(FIELDS) == list(inspect.signature(Query.parse).parameters)
    parser, _ = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    flags = {o for a in sub.choices["search"]._actions for o in a.option_strings}
    assert {"--" + name.replace("_", "-") for name in FIELDS} <= flags
