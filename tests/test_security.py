"""Attacks on the running page and the CLI, each as the exact request a stranger would send.

The app under attack serves a *flat* shop (photos next to ``products.csv``, a ``.env`` and a
``.git/config`` beside them), the layout that used to expose the whole folder. Every request is
bounded in time; each test fails when the guard it names is removed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from apphelpers import make_shop, running_app
from PIL import Image

from searchcore.web.guard import PHOTO_DID_NOT_ARRIVE

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow
TIMEOUT = 20.0


def _flatten(shop: dict[str, Path]) -> None:
    """Photos next to products.csv (image=P00001.jpg), plus secrets a shop folder may hold."""
    folder = shop["csv"].parent
    df = pd.read_csv(shop["csv"], dtype=str, keep_default_na=False)
    for rel in df["image"]:
        shutil.move(folder / rel, folder / Path(rel).name)
    df["image"] = [Path(p).name for p in df["image"]]
    df.to_csv(shop["csv"], index=False)
    (folder / ".env").write_text("SECRET_TOKEN=hunter2\n")
    (folder / ".git").mkdir()
    (folder / ".git" / "config").write_text(
        "[remote]\n\turl = https://user:token@example.invalid\n"
    )


@pytest.fixture(scope="module")
def shop(tmp_path_factory, tiny_clip: str) -> dict[str, Path]:
    shop = make_shop(tmp_path_factory.mktemp("attack"), tiny_clip)
    _flatten(shop)
    return shop


@pytest.fixture(scope="module")
def app(shop) -> Iterator[dict]:
    # 1 MB per upload and 3 MB of uploads per clean-up window: small enough to flood in a test.
    with running_app(shop, "--max-upload-mb", "1", "--upload-folder-mb", "3") as (url, log):
        yield {"url": url, "log": log, "uploads": shop["base"] / "gradio-tmp"}


def call(app: dict, api_name: str, data: list) -> tuple[str, object]:
    """A raw call as curl sends it: POST the data, then read the event stream's outcome."""
    with httpx.Client(timeout=TIMEOUT) as client:
        # json.dumps escapes a lone surrogate as \\udcff, exactly as curl would send it
        r = client.post(
            f"{app['url']}gradio_api/call/{api_name}",
            content=json.dumps({"data": data}),
            headers={"Content-Type": "application/json"},
        )
        if r.status_code != 200:
            return "http", r.status_code
        event = r.json()["event_id"]
        kind, payload = "", None
        with client.stream("GET", f"{app['url']}gradio_api/call/{api_name}/{event}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind in ("complete", "error"):
                    payload = json.loads(line.split(":", 1)[1])
                    break
        return kind, payload


def _message(payload: object) -> str:
    if isinstance(payload, dict):
        return str(payload.get("error"))
    return str(payload[0] if isinstance(payload, list) and payload else payload)


def _photo(app: dict, path: str | Path) -> tuple[str, object]:
    return call(app, "search_image", [{"path": str(path)}, 3, "All categories", 0, 0, "auto", []])


# --------------------------------------------------------------------------- 1. any path as a photo


def test_server_paths_are_never_opened_as_photos(app, shop, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    link_dir = app["uploads"] / "planted"
    link_dir.mkdir(parents=True, exist_ok=True)
    (link_dir / "link.jpg").unlink(missing_ok=True)
    (link_dir / "link.jpg").symlink_to(
        shop["csv"].parent / "P00001.jpg"
    )  # a link out of the folder
    targets = [
        "/etc/passwd",
        "/etc/shadow",
        "/no/such/file.jpg",
        "/etc",
        str(fifo),
        str(shop["csv"].parent / "P00001.jpg"),
        str(ROOT / "assets" / "examples" / "tiny-red-sneakers.png"),
        str(link_dir / "link.jpg"),
        f"{app['uploads']}/../{shop['csv'].parent.name}/P00001.jpg",
    ]
    for target in targets:
        started = time.monotonic()
        kind, payload = _photo(app, target)
        assert time.monotonic() - started < TIMEOUT
        # one message whatever the path is: nothing tells whether it exists
        assert (kind, _message(payload)) == ("error", PHOTO_DID_NOT_ARRIVE), (target, kind, payload)
    assert "Traceback" not in app["log"].read_text()


def test_the_page_event_does_not_send_back_server_images(app, shop) -> None:
    """The page's own search event (it returns 'what the model saw') refuses the same paths."""
    config = httpx.get(f"{app['url']}config", timeout=TIMEOUT).json()
    components = {c["id"]: c for c in config["components"]}
    (photo,) = [i for i, c in components.items() if c.get("props", {}).get("elem_id") == "photo"]
    # every event that reads the photo: searches, chips, the crop box, "Whole photo"
    page_search = {
        i: d["inputs"]
        for i, d in enumerate(config["dependencies"])
        if photo in d["inputs"] and len(d["outputs"]) > 1
    }
    assert len(page_search) >= 9, page_search
    secret = str(shop["csv"].parent / "P00002.jpg")
    with httpx.Client(timeout=TIMEOUT) as client:
        for fn_index, inputs in page_search.items():
            data = [
                {"path": secret} if c == photo else components[c].get("props", {}).get("value")
                for c in inputs
            ]
            r = client.post(
                f"{app['url']}gradio_api/queue/join",
                json={"data": data, "fn_index": fn_index, "session_hash": "attacker"},
            )
            if r.status_code != 200:
                continue  # not callable at all: refused before it runs
            body = ""
            with client.stream(
                "GET", f"{app['url']}gradio_api/queue/data", params={"session_hash": "attacker"}
            ) as stream:
                for line in stream.iter_lines():
                    body += line + "\n"
                    if "process_completed" in line:
                        break
            refused = (PHOTO_DID_NOT_ARRIVE, "That suggestion is gone")  # a chip that never was
            assert any(m in body for m in refused), (fn_index, inputs, body[-300:])
            assert '"success": true' not in body.replace("\\", ""), body[-500:]


def test_a_real_upload_is_still_searched(app, shop) -> None:
    with httpx.Client(timeout=TIMEOUT) as client:
        with open(shop["csv"].parent / "P00003.jpg", "rb") as f:
            r = client.post(
                f"{app['url']}gradio_api/upload", files={"files": ("p.jpg", f, "image/jpeg")}
            )
        assert r.status_code == 200, r.text
        (path,) = r.json()
    kind, payload = call(
        app,
        "search_image",
        [
            {"path": path, "meta": {"_type": "gradio.FileData"}},
            3,
            "All categories",
            0,
            0,
            "never",
            [],
        ],
    )
    assert kind == "complete", payload
    assert payload[0]["results"][0]["id"] == "P00003"


# ------------------------------------------------------------------------ 2. a flat shop's folder


@pytest.mark.parametrize(
    "name",
    [
        "products.csv",
        ".env",
        ".git/config",
        "index/manifest.json",
        "index/calibration.json",
        "P00001.jpg",
    ],
)
def test_nothing_of_the_shop_folder_is_served_by_path(app, shop, name) -> None:
    base = shop["csv"].parent
    path = base / name if not name.startswith("index/") else shop["index"] / name.split("/", 1)[1]
    assert path.exists(), path
    r = httpx.get(f"{app['url']}gradio_api/file={path}", timeout=TIMEOUT)
    assert r.status_code == 403, (name, r.status_code)
    assert b"hunter2" not in r.content and b"token@" not in r.content


def test_index_files_are_not_served(app, shop) -> None:
    for path in shop["index"].rglob("*"):
        assert (
            httpx.get(f"{app['url']}gradio_api/file={path}", timeout=TIMEOUT).status_code == 403
        ), path


def test_no_server_paths_in_the_config(app, shop) -> None:
    text = httpx.get(f"{app['url']}config", timeout=TIMEOUT).text
    for secret in (str(shop["csv"].parent), str(shop["model"]), str(ROOT)):
        assert secret not in text, secret
    assert "products.csv" in text  # the About text still names the catalog, by file name


# --------------------------------------------------------------------------- 4. types at the edge


@pytest.mark.parametrize("text", [["a", "b"], {"x": 1}, 3, True, "\udcff"])
def test_text_of_the_wrong_type_gets_one_line(app, text) -> None:
    for api_name, data in (
        ("search_text", [text, 3, "All categories", 0, 0, "hybrid", []]),
        ("search_combined", [None, text, 0.5, 3, "All categories", 0, 0, "auto", "hybrid", []]),
    ):
        kind, payload = call(app, api_name, data)
        assert kind == "error" and _message(payload) not in ("None", ""), (api_name, payload)
        assert "\n" not in _message(payload) and "text" in _message(payload), payload


@pytest.mark.parametrize(
    "index, value",
    [
        (1, True),
        (1, "many"),
        (1, [3]),
        (1, 2.5),
        (2, {"a": 1}),
        (2, 7),
        (3, "cheap"),
        (4, "1e999"),
        (4, [1]),
        (5, "bm25"),
        (5, ["hybrid"]),
    ],
)
def test_other_parameters_of_the_wrong_type_get_one_line(app, index, value) -> None:
    data = ["red cap", 3, "All categories", 0, 0, "hybrid", []]
    data[index] = value
    kind, payload = call(app, "search_text", data)
    assert kind == "error" and _message(payload) not in ("None", ""), (index, value, payload)
    assert "\n" not in _message(payload), payload
    assert (
        call(app, "search_text", ["red cap", 3, "All categories", 0, 0, "hybrid", []])[0]
        == "complete"
    )


def test_a_huge_parameter_is_refused_before_it_is_parsed(app) -> None:
    body = json.dumps({"data": ["x" * 5_000_000, 3, "All categories", 0, 0, "hybrid", []]})
    r = httpx.post(
        f"{app['url']}gradio_api/call/search_text",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )
    assert r.status_code == 413
    assert (
        call(app, "search_text", ["red cap", 3, "All categories", 0, 0, "hybrid", []])[0]
        == "complete"
    )


def test_no_tracebacks_in_the_log(app) -> None:
    call(app, "search_text", [["a"], 3, "All categories", 0, 0, "hybrid", []])
    assert "Traceback" not in app["log"].read_text()


# --------------------------------------------------------------------------- 5. flooding uploads


def _multipart(n: int, size: int) -> tuple[bytes, str]:
    boundary = "----attack7f3a"
    parts = b"".join(
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="f{i}.jpg"\r\n'
            "Content-Type: image/jpeg\r\n\r\n"
        ).encode()
        + os.urandom(size)
        + b"\r\n"
        for i in range(n)
    )
    return parts + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def test_one_request_carries_one_file(app) -> None:
    before = _folder_bytes(app["uploads"])
    body, ctype = _multipart(20, 40_000)
    r = httpx.post(
        f"{app['url']}gradio_api/upload",
        content=body,
        headers={"Content-Type": ctype},
        timeout=TIMEOUT,
    )
    assert r.status_code == 413, r.status_code
    assert _folder_bytes(app["uploads"]) == before
    body, ctype = _multipart(1, 40_000)
    r = httpx.post(
        f"{app['url']}gradio_api/upload",
        content=body,
        headers={"Content-Type": ctype},
        timeout=TIMEOUT,
    )
    assert r.status_code == 200, r.text


def test_repeated_uploads_cannot_fill_the_folder(app) -> None:
    """The app runs with --upload-folder-mb 3: uploads past that within the window get 429."""
    codes = []
    for _ in range(8):
        body, ctype = _multipart(1, 900_000)
        codes.append(
            httpx.post(
                f"{app['url']}gradio_api/upload",
                content=body,
                headers={"Content-Type": ctype},
                timeout=TIMEOUT,
            ).status_code
        )
    assert 429 in codes and codes.count(200) <= 3, codes
    assert _folder_bytes(app["uploads"]) < 5 * 1024 * 1024


# --------------------------------------------------------------------------- 3. the CLI


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "searchcore", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )


@pytest.fixture
def fifo_shop(tmp_path: Path) -> Path:
    from conftest import write_catalog

    rows = [{"id": str(i), "title": f"thing {i}", "image": f"{i}.png"} for i in range(4)]
    path = write_catalog(
        tmp_path / "s",
        rows,
        {f"{i}.png": Image.new("RGB", (32, 32), (60 * i, 0, 0)) for i in range(3)},
    )
    os.mkfifo(tmp_path / "s" / "3.png")  # a row whose photo is a FIFO: reading it would block
    return path


def _with_writer_watchdog(fifo: Path, seconds: float) -> threading.Timer:
    """If a command blocks on the FIFO, a writer appears after ``seconds`` and unblocks it, so a
    regression shows as a slow run (and a failed assertion), never as a hung test suite."""

    def unblock() -> None:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass

    timer = threading.Timer(seconds, unblock)
    timer.daemon = True
    timer.start()
    return timer


def _build(catalog: Path, tmp_path: Path, tiny_clip: str) -> subprocess.CompletedProcess:
    """``searchcore index build`` of ``catalog`` with a tiny model folder, into tmp_path/ix."""
    from conftest import TINY_CLIP_CONFIG

    from searchcore.embed import load_embedder, save_model

    model = save_model(load_embedder(tiny_clip), tmp_path / "model", TINY_CLIP_CONFIG)
    out = str(tmp_path / "ix")
    return _cli("index", "build", "--catalog", str(catalog), "--model", str(model), "--out", out)


def test_index_build_skips_a_fifo_photo(fifo_shop: Path, tmp_path: Path, tiny_clip: str) -> None:
    timer = _with_writer_watchdog(fifo_shop.parent / "3.png", 40)
    started = time.monotonic()
    r = _build(fifo_shop, tmp_path, tiny_clip)
    took = time.monotonic() - started
    timer.cancel()
    assert r.returncode == 0, r.stderr
    assert took < 40, f"index build blocked on a FIFO for {took:.0f} s"
    assert "indexed 3 products" in r.stdout and "skipped 1" in r.stdout, r.stdout


def test_catalog_add_refuses_a_fifo_and_a_huge_file_unread(
    fifo_shop: Path, tmp_path: Path, tiny_clip: str
) -> None:
    fifo = tmp_path / "upload.jpg"
    os.mkfifo(fifo)
    (fifo_shop.parent / "3.png").unlink()
    Image.new("RGB", (32, 32)).save(fifo_shop.parent / "3.png")
    r = _build(fifo_shop, tmp_path, tiny_clip)
    assert r.returncode == 0, r.stderr

    def add(image: Path) -> subprocess.CompletedProcess:
        ix = str(tmp_path / "ix")
        return _cli(
            "catalog", "add", "--index", ix, "--id", "N1", "--title", "new", "--image", str(image)
        )

    timer = _with_writer_watchdog(fifo, 40)
    started = time.monotonic()
    r = add(fifo)
    timer.cancel()
    assert time.monotonic() - started < 40
    assert r.returncode != 0 and "not a regular file" in r.stderr and "Traceback" not in r.stderr, (
        r.stderr
    )
    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as f:
        f.truncate(30 * 1024 * 1024)  # sparse: over the 20 MB cap without using the disk
    r = add(huge)
    assert r.returncode != 0 and "too large" in r.stderr, r.stderr
