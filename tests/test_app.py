"""The page's API through ``gradio_client``, against ``python app.py`` in a subprocess.

One server per module (a 60-product shop, a tiny random CLIP saved as a model folder), on a free
port of 127.0.0.1, everything under ``tmp_path``. No upscaler weights are given: the app uses
the shipped compact upscaler, exactly as it does offline on a fresh clone.
"""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
from apphelpers import make_shop, running_app, search_combined, search_image, search_text, serving
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shop(tmp_path_factory, tiny_clip: str) -> dict[str, Path]:
    return make_shop(tmp_path_factory.mktemp("app"), tiny_clip)


@pytest.fixture(scope="module")
def app(shop) -> Iterator[dict]:
    with serving(shop, "--max-upload-mb", "1") as served:
        yield {**served, "df": pd.read_csv(shop["csv"], dtype=str, keep_default_na=False)}


@pytest.fixture(scope="module")
def images(shop) -> Path:
    return shop["csv"].parent / "images"


def test_named_endpoints(app) -> None:
    names = app["client"].view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/search_image", "/search_text", "/search_combined"} <= set(names)
    # every parameter but the query has a default, as in the README's snippet
    assert len(app["client"].predict(text="red cap", api_name="/search_text")["results"]) == 12


def test_text_query(app) -> None:
    out = search_text(app["client"], "red sneakers with white soles")
    ids = set(app["df"]["id"])
    assert out["query"] == "red sneakers with white soles"
    assert [r["rank"] for r in out["results"]] == [1, 2, 3, 4, 5]
    assert all(r["id"] in ids and r["title"] for r in out["results"])
    # hybrid by default: the words and the model both ranked, each result says which found it
    assert all(set(r["matched"]) <= {"lexical", "vector"} and r["matched"] for r in out["results"])
    assert any("lexical" in r["matched"] for r in out["results"])
    assert isinstance(out["good_match"], bool) and isinstance(out["min_score"], float)
    assert out["timings_ms"]["total"] > 0 and "embed_text" in out["timings_ms"]
    assert "lexical" in out["timings_ms"]
    vector = search_text(app["client"], "red sneakers with white soles", mode="vector")
    scores = [r["score"] for r in vector["results"]]  # the model alone: ranked by similarity
    assert scores == sorted(scores, reverse=True)
    assert all(r["matched"] == ["vector"] for r in vector["results"])
    lexical = search_text(app["client"], "the of", mode="lexical")
    assert lexical["results"] == [] and lexical["notes"]  # only stop words: an answer
    # catalog-relative image paths, never the server's own file system
    assert all(r["image"].startswith("images/") for r in out["results"])


def test_image_query_finds_the_product(app, images) -> None:
    out = search_image(app["client"], images / "P00007.jpg")
    assert out["results"][0]["id"] == "P00007"
    assert out["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    assert out["query"] == "photo"
    # 128 px is small, so auto upscales it, offline, with the shipped compact upscaler
    assert out["upscale"]["upscale"] is True and "small" in out["upscale"]["reason"]
    assert out["upscaled"] is True and not out.get("notes")
    never = search_image(app["client"], images / "P00007.jpg", upscale="never")
    assert never["upscaled"] is False and never["results"][0]["id"] == "P00007"


def test_combined_query_blends_photo_and_words(app, images) -> None:
    client = app["client"]
    photo_only = search_combined(client, images / "P00007.jpg", "in blue", 0.0)
    assert photo_only["results"][0]["id"] == "P00007"
    words_only = search_combined(client, images / "P00007.jpg", "in blue", 1.0)
    # a photo query is searched by its vector (words blended in), whatever the mode
    assert [r["id"] for r in words_only["results"]] == [
        r["id"] for r in search_text(client, "in blue", mode="vector")["results"]
    ]
    mixed = search_combined(client, images / "P00007.jpg", "in blue", 0.5)
    assert mixed["query"] == "photo + 'in blue'"
    assert [r["score"] for r in mixed["results"]] != [r["score"] for r in photo_only["results"]]


def test_filters(app) -> None:
    df = app["df"]
    category = df["category"].value_counts().index[0]
    out = search_text(app["client"], "something nice", k=20, category=category, max_price=80)
    rows = df.set_index("id").loc[[r["id"] for r in out["results"]]]
    assert len(rows) and (rows["category"] == category).all()
    assert (rows["price"].astype(float) <= 80).all()
    # the page's number boxes cannot be empty: 0 means "no limit"
    assert (
        len(search_text(app["client"], "something nice", k=20, min_price=0, max_price=0)["results"])
        == 20
    )
    with pytest.raises(Exception, match=r"min price .* is above max price"):
        search_text(app["client"], "mug", min_price=50, max_price=10)
    with pytest.raises(Exception, match="number of results must be between"):
        search_text(app["client"], "mug", k=10_000)


def _bad_files(folder: Path, src: Image.Image) -> dict[str, Path]:
    folder.mkdir(exist_ok=True)
    buf = io.BytesIO()
    src.save(buf, "JPEG")
    files = {
        "empty": (folder / "empty.jpg", b""),
        "truncated": (folder / "truncated.jpg", buf.getvalue()[: len(buf.getvalue()) // 2]),
        "not an image": (folder / "noise.png", np.random.default_rng(0).bytes(4000)),
        "html named .jpg": (folder / "page.jpg", b"<!doctype html><html><body>hi</body></html>"),
    }
    for path, data in files.values():
        path.write_bytes(data)
    Image.new("RGB", (1, 1), "red").save(folder / "one.png")

    # a decompression bomb: a real PNG header claiming 30000x30000 px over a tiny body
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    png = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 30000, 30000, 8, 0, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00" * 30001 * 4))
        + chunk(b"IEND", b"")
    )
    (folder / "bomb.png").write_bytes(png)
    return {
        **{k: p for k, (p, _) in files.items()},
        "1x1": folder / "one.png",
        "bomb": folder / "bomb.png",
    }


BAD_MESSAGES = {
    "empty": "empty",
    "truncated": "damaged or truncated",
    "not an image": "not an image",
    "html named .jpg": "not an image",
    "1x1": "too small",
    "bomb": "too large",
}


def test_bad_uploads_give_a_short_error_and_the_server_goes_on(app, images, tmp_path: Path) -> None:
    from gradio_client.exceptions import AppError

    for kind, path in _bad_files(tmp_path, Image.open(images / "P00003.jpg")).items():
        with pytest.raises(AppError) as err:
            search_image(app["client"], path)
        message = str(err.value)
        assert BAD_MESSAGES[kind] in message, (kind, message)
        assert "Traceback" not in message and len(message) < 200, (kind, message)
        assert search_text(app["client"], "blue mug")["results"], f"no answer after {kind}"
    assert "Traceback" not in app["log"].read_text()


def test_odd_but_valid_photos_are_searched(app, images, tmp_path: Path) -> None:
    src = Image.open(images / "P00003.jpg").convert("RGB")
    odd = {}
    src.convert("CMYK").save(odd.setdefault("cmyk", tmp_path / "cmyk.jpg"))
    Image.fromarray(np.asarray(src.convert("L"), np.uint16) * 257).save(
        odd.setdefault("16-bit", tmp_path / "g16.png")
    )
    rgba = np.asarray(src.convert("RGBA")).copy()
    rgba[:30, :, 3] = 0
    Image.fromarray(rgba).save(odd.setdefault("rgba", tmp_path / "rgba.png"))
    src.convert("P").save(odd.setdefault("palette", tmp_path / "palette.png"), transparency=0)
    src.save(
        odd.setdefault("animated", tmp_path / "anim.gif"),
        save_all=True,
        append_images=[src.rotate(90)],
        duration=100,
    )
    exif = Image.Exif()
    exif[274] = 6  # "rotate 90° to display": the upright photo is 96 wide, 128 tall
    src.resize((128, 96)).save(odd.setdefault("exif", tmp_path / "exif.jpg"), exif=exif)
    for kind, path in odd.items():
        out = search_image(app["client"], path)
        assert len(out["results"]) == 5, kind
        if kind == "exif":
            assert (out["upscale"]["width"], out["upscale"]["height"]) == (96, 128)


def test_oversize_upload_is_refused(app, images, tmp_path: Path) -> None:
    big = tmp_path / "big.jpg"
    big.write_bytes(
        np.random.default_rng(1).bytes(1_300_000)
    )  # the app runs with --max-upload-mb 1
    with pytest.raises(Exception, match="maximum file size"):  # gradio_client checks first...
        search_image(app["client"], big)
    with open(big, "rb") as f:  # ...and the server refuses it when a client does not
        r = httpx.post(
            app["url"] + "gradio_api/upload",
            files={"files": ("big.jpg", f, "image/jpeg")},
            timeout=30,
        )
    assert r.status_code == 413
    assert search_text(app["client"], "lamp")["results"]


def test_nothing_is_served_by_its_server_path(app, shop, images) -> None:
    """Catalog photos reach the page as copies in Gradio's cache (test_webguard, test_browser);
    no file is served by its path on the server, the catalog's own photos included."""

    def status(path: Path) -> int:
        return httpx.get(f"{app['url']}gradio_api/file={path}", timeout=10).status_code

    assert status(images / "P00001.jpg") == 403
    assert status(shop["csv"]) == 403
    assert status(shop["index"] / "manifest.json") == 403
    assert status(ROOT / "app.py") == 403


def test_second_start_reuses_the_index(app, shop) -> None:
    assert "building the index" in app["log"].read_text()
    assert (shop["index"] / "calibration.json").is_file()
    with running_app(shop, log_name="warm.log") as (url, log):
        from gradio_client import Client

        assert search_text(Client(url, verbose=False), "red cap")["results"]
    text = log.read_text()
    assert "building the index" not in text and "ready in" in text


def test_missing_catalog_is_one_line_and_exit_1(tmp_path: Path) -> None:
    r = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), "--catalog", str(tmp_path / "nope.csv")],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert r.returncode == 1
    assert "app: error: catalog" in r.stderr and "Traceback" not in r.stderr
