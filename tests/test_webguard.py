"""The web edge's guards on their own: upload paths, served photos, upload limits, parameters."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from searchcore.catalog import Catalog
from searchcore.errors import ConfigError
from searchcore.fsutil import FileTooLargeError, NotRegularFileError, file_sha256, read_regular
from searchcore.query import Query
from searchcore.web.guard import PHOTO_DID_NOT_ARRIVE, ServedImages, UploadGuard, upload_path

# --------------------------------------------------------------------------- regular files only


def test_read_regular_refuses_fifos_folders_and_big_files_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    started = time.monotonic()
    for path in (fifo, tmp_path):
        with pytest.raises(NotRegularFileError):
            read_regular(path, 100)
        with pytest.raises(NotRegularFileError):
            file_sha256(path)
    assert time.monotonic() - started < 5
    (tmp_path / "f").write_bytes(b"x" * 101)
    with pytest.raises(FileTooLargeError):
        read_regular(tmp_path / "f", 100)
    assert read_regular(tmp_path / "f", 101) == b"x" * 101
    with pytest.raises(NotRegularFileError):
        read_regular("/dev/zero", 100)  # a device: never read


# --------------------------------------------------------------------------- upload paths


def test_upload_path_only_accepts_regular_files_inside_the_upload_folder(tmp_path: Path) -> None:
    uploads, outside = tmp_path / "uploads", tmp_path / "shop"
    (uploads / "abc").mkdir(parents=True)
    outside.mkdir()
    good = uploads / "abc" / "photo.jpg"
    good.write_bytes(b"jpeg")
    (outside / "secret.jpg").write_bytes(b"jpeg")
    (uploads / "abc" / "link.jpg").symlink_to(outside / "secret.jpg")
    os.mkfifo(uploads / "abc" / "pipe.jpg")
    assert upload_path({"path": str(good)}, uploads) == good
    assert upload_path(None, uploads) is None and upload_path("", uploads) is None
    bad = [
        {"path": "/etc/passwd"},
        {"path": str(outside / "secret.jpg")},
        {"path": str(uploads)},
        {"path": str(uploads / "abc" / "link.jpg")},
        {"path": str(uploads / "abc" / "pipe.jpg")},
        {"path": str(uploads / "abc" / ".." / ".." / "shop" / "secret.jpg")},
        {"path": str(uploads / "abc" / "missing.jpg")},
        {"path": 3},
        {"path": ["x"]},
        {"url": "http://x"},
        {"path": "a\x00b"},
        "/etc/passwd",
        7,
    ]
    for value in bad:
        with pytest.raises(ConfigError) as err:
            upload_path(value, uploads)
        assert str(err.value) == PHOTO_DID_NOT_ARRIVE, value


# --------------------------------------------------------------------------- served photos


def _catalog(root: Path, images: list[str], removed: list[str] | None = None) -> Catalog:
    df = pd.DataFrame({"id": [str(i) for i in range(len(images))], "title": "t", "image": images})
    if removed is not None:
        df["_removed"] = removed
    return Catalog(df=df, root=root)


def test_served_images_are_an_allowlist_kept_in_step(tmp_path: Path) -> None:
    shop, cache = tmp_path / "shop", tmp_path / "cache"
    shop.mkdir()
    for name in ("a.jpg", "b.png"):
        Image.new("RGB", (8, 8)).save(shop / name)
    (shop / "products.csv").write_text("id,title,image\n")
    os.mkfifo(shop / "c.jpg")
    served = ServedImages(cache)
    catalog = _catalog(shop, ["a.jpg", "b.png", "products.csv", "c.jpg"])
    copy = served.serve(catalog, "a.jpg")
    assert copy is not None and Path(copy).is_relative_to(cache)
    assert Path(copy).read_bytes() == (shop / "a.jpg").read_bytes()
    assert served.serve(catalog, "a.jpg") == copy  # made once
    assert served.serve(catalog, "products.csv") is None  # a row naming a non-image file
    assert served.serve(catalog, ".env") is None and served.serve(catalog, "../x.jpg") is None
    started = time.monotonic()
    assert served.serve(catalog, "c.jpg") is None and time.monotonic() - started < 5  # a FIFO
    # a live shop removes a product (tombstone) and replaces the table: its copy goes
    catalog.df = pd.DataFrame({**catalog.df.to_dict("list"), "_removed": ["1", "", "", ""]})
    assert served.serve(catalog, "a.jpg") is None and not Path(copy).exists()
    assert served.serve(catalog, "b.png") is not None
    assert "b.png" in served.allowed(catalog) and "a.jpg" not in served.allowed(catalog)


# --------------------------------------------------------------------------- upload limits


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _request(
    guard: UploadGuard,
    files: int,
    size: int,
    client: str = "1.2.3.4",
    declare_length: bool = True,
    forwarded: str = "",
) -> tuple[int, list[bytes]]:
    boundary = "xyzBOUNDARY"
    body = (
        b"".join(
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="files"; filename="f{i}"\r\n\r\n'.encode()
            + b"a" * size
            + b"\r\n"
            for i in range(files)
        )
        + f"--{boundary}--\r\n".encode()
    )
    headers = [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())]
    if declare_length:
        headers.append((b"content-length", str(len(body)).encode()))
    if forwarded:
        headers.append((b"x-forwarded-for", forwarded.encode()))
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/gradio_api/upload",
        "headers": headers,
        "client": (client, 1),
    }
    chunks = [body[i : i + 7] for i in range(0, len(body), 7)]  # markers split across chunks
    messages = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    status: list[int] = []
    seen: list[bytes] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    async def app(scope, receive, send):  # the upload route: reads the body, answers 200
        while True:
            m = await receive()
            seen.append(m.get("body", b""))
            if not m.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"[]"})

    guard.app = app
    asyncio.run(guard(scope, receive, send))
    return status[0], seen


def _guard(**kw) -> UploadGuard:
    return UploadGuard(None, **{"max_request_bytes": 10_000, "clock": _Clock(), **kw})


def test_one_file_per_request() -> None:
    guard = _guard(max_files=1)
    assert _request(guard, 1, 100)[0] == 200
    code, seen = _request(guard, 2, 100, declare_length=False)
    assert code == 413 and seen == []  # never reached the upload route
    assert _request(guard, 50, 10)[0] == 413


def test_request_size_is_capped_with_or_without_a_length() -> None:
    guard = _guard()
    assert _request(guard, 1, 9_000)[0] == 200
    assert _request(guard, 1, 20_000)[0] == 413
    assert _request(guard, 1, 20_000, declare_length=False) == (413, [])


def test_uploads_per_client_per_minute() -> None:
    guard = _guard(per_minute=3)
    assert [_request(guard, 1, 10)[0] for _ in range(4)] == [200, 200, 200, 429]
    assert _request(guard, 1, 10, client="5.6.7.8")[0] == 200  # another client
    guard.clock.now += 61
    assert _request(guard, 1, 10)[0] == 200


def test_behind_a_proxy_clients_are_told_apart_by_the_address_it_added() -> None:
    guard = _guard(per_minute=1, trust_forwarded=True)
    assert _request(guard, 1, 10, client="10.0.0.1", forwarded="9.9.9.9, 1.1.1.1")[0] == 200
    assert _request(guard, 1, 10, client="10.0.0.1", forwarded="8.8.8.8, 2.2.2.2")[0] == 200
    # a client's own X-Forwarded-For entries do not make it someone else
    assert _request(guard, 1, 10, client="10.0.0.1", forwarded="7.7.7.7, 1.1.1.1")[0] == 429
    untrusted = _guard(per_minute=1)
    assert _request(untrusted, 1, 10, forwarded="3.3.3.3")[0] == 200
    assert _request(untrusted, 1, 10, forwarded="4.4.4.4")[0] == 429  # the header is ignored


def test_the_upload_folder_cannot_be_filled() -> None:
    guard = _guard(window_bytes=25_000, window_s=1200, per_minute=1000)
    codes = [_request(guard, 1, 8_000)[0] for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    guard.clock.now += 1201  # the clean-up window has passed: room again
    assert _request(guard, 1, 8_000)[0] == 200


def test_other_requests_pass_untouched() -> None:
    guard = _guard()
    calls = []

    async def app(scope, receive, send):
        calls.append(scope["path"])

    guard.app = app
    asyncio.run(guard({"type": "http", "method": "GET", "path": "/gradio_api/upload"}, None, None))
    asyncio.run(guard({"type": "http", "method": "POST", "path": "/gradio_api/call/x"}, None, None))
    assert calls == ["/gradio_api/upload", "/gradio_api/call/x"]


# --------------------------------------------------------------------------- parameters


def test_query_parse_defaults_and_checks() -> None:
    q = Query.parse()
    assert (q.text, q.text_weight, q.k, q.upscale, q.filters.active) == ("", 0.5, 12, None, False)
    q = Query.parse(
        text=" red ",
        text_weight="0.3",
        k=5.0,
        category="mugs",
        min_price=0,
        max_price="80",
        upscale="never",
    )
    assert (
        q.text,
        q.text_weight,
        q.k,
        q.filters.category,
        q.filters.min_price,
        q.filters.max_price,
        q.upscale,
    ) == ("red", 0.3, 5, "mugs", None, 80.0, "never")
    assert Query.parse(category="All categories").filters.category is None
    bad = [
        {"text": ["a"]},
        {"text": 3},
        {"text": True},
        {"text": "\udcff"},
        {"text": "x" * 301},
        {"k": True},
        {"k": 2.5},
        {"k": "many"},
        {"k": 0},
        {"k": 49},
        {"k": [3]},
        {"category": 7},
        {"min_price": "1e999"},
        {"max_price": {"a": 1}},
        {"min_price": -1},
        {"text_weight": 2},
        {"upscale": "sometimes"},
        {"upscale": 1},
        {"min_price": 50, "max_price": 10},
    ]
    for kw in bad:
        with pytest.raises(ConfigError) as err:
            Query.parse(**kw)
        assert "\n" not in str(err.value), kw


# --------------------------------------------------------------------------- the page's settings


def test_page_settings_come_from_one_place_flags_first(monkeypatch) -> None:
    from searchcore.config import Settings
    from searchcore.web import serve

    monkeypatch.setenv("SEARCHCORE_QUEUE_SIZE", "5")
    monkeypatch.setenv("SEARCHCORE_MIN_IMAGE_SCORE", "0.4")
    monkeypatch.setenv("SEARCHCORE_MAX_UPLOAD_MB", "3")
    assert Settings.from_env().serve.queue_size == 5
    parser = serve.build_parser(Path("catalog/demo/products.csv"))
    settings = serve.settings_from_args(parser.parse_args(["--queue-size", "7"]))
    assert settings.serve.queue_size == 7 and settings.serve.min_image_score == 0.4
    assert settings.images.max_bytes == 3 * 1024 * 1024  # the upload cap is the decoder's cap
    monkeypatch.setenv("SEARCHCORE_UPLOADS_PER_MINUTE", "many")
    with pytest.raises(ConfigError, match="SEARCHCORE_UPLOADS_PER_MINUTE"):
        Settings.from_env()


def test_api_bodies_are_capped_before_they_are_parsed() -> None:
    guard = _guard(max_json_bytes=1000)
    seen: list[dict] = []

    async def app(scope, receive, send):
        while True:
            m = await receive()
            seen.append(m)
            if m["type"] == "http.disconnect" or not m.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})

    guard.app = app
    status: list[int] = []

    async def send(message):
        if message["type"] == "http.response.start":
            status.append(message["status"])

    def post(body: bytes, declare: bool) -> None:
        headers = [(b"content-type", b"application/json")]
        if declare:
            headers.append((b"content-length", str(len(body)).encode()))
        chunks = [body[i : i + 300] for i in range(0, len(body), 300)] or [b""]
        msgs = [
            {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
            for i, c in enumerate(chunks)
        ]

        async def receive():
            return msgs.pop(0) if msgs else {"type": "http.disconnect"}

        scope = {
            "type": "http",
            "method": "POST",
            "path": "/gradio_api/call/search_text",
            "headers": headers,
            "client": ("1.2.3.4", 1),
        }
        asyncio.run(guard(scope, receive, send))

    post(b"x" * 900, declare=True)
    assert status == [200] and seen[-1]["type"] == "http.request"
    seen.clear()
    post(b"x" * 5000, declare=True)
    assert status[-1] == 413 and seen == []  # never reached the route
    post(b"x" * 5000, declare=False)  # no length: the route sees the client go away
    assert (
        seen[-1]["type"] == "http.disconnect" and sum(len(m.get("body", b"")) for m in seen) < 1000
    )


def test_uploads_read_at_once_are_capped() -> None:
    guard = _guard(max_in_flight=2)
    guard._in_flight = 2  # two slow uploads are being read
    assert _request(guard, 1, 10)[0] == 429
    guard._in_flight = 1
    assert _request(guard, 1, 10)[0] == 200 and guard._in_flight == 1  # its slot is given back
