"""The launched app under load: steady users, overload, and a barrage of hostile uploads.

Fast versions run by default; ``SEARCHCORE_LOAD_SECONDS`` makes the steady run longer. The soak
run (minutes, memory and temporary files over time) is ``benchmarks/soak.py``.
"""

from __future__ import annotations

import io
import os
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
from apphelpers import make_shop, running_app, search_image, search_text
from PIL import Image

pytestmark = pytest.mark.slow

# These tests measure load and decoding, all from one address: the per-client upload limit
# (tested in test_security / test_webguard) would otherwise be what they measure.
NO_RATE_LIMIT = ("--uploads-per-minute", "100000", "--upload-folder-mb", "100000")


def _server(url: str) -> psutil.Process:
    port = int(url.rstrip("/").rsplit(":", 1)[1])
    for conn in psutil.net_connections(kind="tcp"):
        if (
            conn.laddr
            and conn.laddr.port == port
            and conn.status == psutil.CONN_LISTEN
            and conn.pid
        ):
            return psutil.Process(conn.pid)
    raise AssertionError(f"no process listens on {port}")


@pytest.fixture(scope="module")
def shop(tmp_path_factory, tiny_clip: str) -> dict[str, Path]:
    return make_shop(tmp_path_factory.mktemp("load"), tiny_clip)


def test_steady_load_has_no_errors(shop, tmp_path: Path) -> None:
    from gradio_client import Client

    seconds = float(os.environ.get("SEARCHCORE_LOAD_SECONDS", "8"))
    photos = sorted((shop["csv"].parent / "images").glob("*.jpg"))[:20]
    with running_app(shop, *NO_RATE_LIMIT) as (url, _log):
        latencies: list[float] = []
        errors: list[str] = []
        stop = time.monotonic() + seconds

        def user(n: int) -> None:
            client = Client(url, verbose=False)
            rng = np.random.default_rng(n)
            while time.monotonic() < stop:
                t = time.perf_counter()
                try:
                    if rng.random() < 0.5:
                        out = search_text(client, f"{rng.choice(['red', 'blue', 'green'])} mug")
                    else:
                        out = search_image(
                            client, photos[int(rng.integers(len(photos)))], upscale="never"
                        )
                    assert len(out["results"]) == 5
                    latencies.append((time.perf_counter() - t) * 1000)
                except Exception as exc:
                    errors.append(repr(exc))

        users = [threading.Thread(target=user, args=(i,)) for i in range(4)]
        for u in users:
            u.start()
        for u in users:
            u.join()
    assert errors == [] and len(latencies) > 10
    p50, p95, p99 = np.percentile(latencies, [50, 95, 99])
    print(
        f"steady load, 4 users, {seconds:.0f} s: {len(latencies)} queries, "
        f"p50 {p50:.0f} ms, p95 {p95:.0f} ms, p99 {p99:.0f} ms, 0 errors"
    )


def test_overload_sheds_with_queue_full_and_nothing_else(shop) -> None:
    from gradio_client import Client

    photo = next((shop["csv"].parent / "images").glob("*.jpg"))
    with running_app(shop, "--queue-size", "2", *NO_RATE_LIMIT, log_name="overload.log") as (
        url,
        _log,
    ):
        ok, full, other = [], [], []

        def burst() -> None:
            client = Client(url, verbose=False)
            try:
                search_image(client, photo, upscale="never")
                ok.append(1)
            except Exception as exc:
                (full if "queue is full" in str(exc).lower() else other).append(str(exc))

        threads = [threading.Thread(target=burst) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert other == [], other[:3]
        assert ok and full, f"{len(ok)} answered, {len(full)} shed"
        assert (
            len(search_text(Client(url, verbose=False), "red mug")["results"]) == 5
        )  # still serving
    print(
        f"overload burst of 24 on a queue of 2: {len(ok)} answered, "
        f"{len(full)} shed with 'queue full'"
    )


def _hostile_corpus(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    def enc(img: Image.Image, fmt: str, **kw) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kw)
        return buf.getvalue()

    base = enc(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    corpus = [
        ("empty.jpg", b""),
        ("random.jpg", rng.bytes(5000)),
        ("page.jpg", b"<html><body>x</body></html>"),
        ("svg.png", b"<svg xmlns='http://www.w3.org/2000/svg'/>"),
        ("truncated.jpg", base[: len(base) // 3]),
        ("one.png", enc(Image.new("RGB", (1, 1)), "PNG")),
        ("strip.png", enc(Image.new("RGB", (1, 3000)), "PNG")),
        ("cmyk.jpg", enc(Image.new("CMYK", (80, 80), (0, 200, 200, 0)), "JPEG")),
        ("deep.png", enc(Image.fromarray(np.full((60, 60), 40000, np.uint16)), "PNG")),
        ("alpha.png", enc(Image.new("RGBA", (60, 60), (255, 0, 0, 0)), "PNG")),
        ("bomb.png", enc(Image.new("1", (12000, 12000)), "PNG")),
    ]
    for i in range(20):  # mutated real JPEGs
        data = bytearray(base)
        for _ in range(8):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        corpus.append((f"mutant{i}.jpg", bytes(data)))
    return corpus


def test_hostile_barrage_keeps_the_server_up_and_bounded(shop, tmp_path: Path) -> None:
    from gradio_client import Client

    photo = sorted((shop["csv"].parent / "images").glob("*.jpg"))[3]
    corpus = _hostile_corpus(np.random.default_rng(0))
    files = []
    for name, data in corpus:
        (tmp_path / name).write_bytes(data)
        files.append(tmp_path / name)
    with running_app(shop, *NO_RATE_LIMIT, log_name="hostile.log") as (url, log):
        client = Client(url, verbose=False)
        before = search_image(client, photo, upscale="never")
        server = _server(url)
        for _ in range(2):  # warm up allocator pools before measuring
            for f in files[:5]:
                try:
                    search_image(client, f, upscale="never")
                except Exception:
                    pass
        rss0 = server.memory_info().rss
        answered = refused = 0
        for _ in range(3):
            for f in files:
                try:
                    search_image(client, f, upscale="never")
                    answered += 1
                except Exception as exc:
                    text = str(exc)
                    assert "Traceback" not in text and len(text) < 400, text
                    refused += 1
        grown = (server.memory_info().rss - rss0) / 2**20
        after = search_image(client, photo, upscale="never")
        assert [r["id"] for r in after["results"]] == [r["id"] for r in before["results"]]
        assert [r["score"] for r in after["results"]] == pytest.approx(
            [r["score"] for r in before["results"]], abs=1e-6
        )
        assert server.is_running() and "Traceback" not in log.read_text()
    assert refused >= 3 * 10 and grown < 150, (refused, grown)
    print(
        f"hostile barrage: {3 * len(files)} uploads, {answered} answered, "
        f"{refused} refused cleanly, "
        f"server RSS +{grown:.0f} MB"
    )
