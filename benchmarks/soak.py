"""Soak: steady users against the launched app for minutes; memory and temp files over time.

    python benchmarks/soak.py --minutes 5 --users 4

Starts ``python app.py`` on the demo shop (the default models), runs ``--users`` gradio_client
users (text queries, catalog photos, small uploads, and one hostile upload in ten) for
``--minutes``, and samples the server's RSS and the size of its upload folder every
``--every`` seconds. Flat memory and a bounded upload folder are what a public Space needs.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import _common as C
import numpy as np
import psutil


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=3.0)
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    args = p.parse_args()
    run = C.Run("soak", args)
    from gradio_client import Client, handle_file

    csv = C.demo_catalog(args.work)
    photos = sorted((csv.parent / "images").glob("*.jpg"))[:60]
    tmp = Path(tempfile.mkdtemp(prefix="soak-", dir=args.work))
    small = []
    from PIL import Image

    for i, ph in enumerate(photos[:20]):
        small.append(tmp / f"small{i}.jpg")
        Image.open(ph).resize((56, 56)).save(small[-1], quality=60)
    bad = tmp / "bad.jpg"
    bad.write_bytes(b"<html>not a photo</html>")
    uploads = tmp / "gradio"
    env = {
        **os.environ,
        "SEARCHCORE_CATALOG": str(csv),
        "SEARCHCORE_INDEX": str(csv.parent / "index"),
        "GRADIO_TEMP_DIR": str(uploads),
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    with C.launched_app(env=env, log=tmp / "app.log", cwd=C.ROOT, timeout=600) as app:
        url = app.url
        time.sleep(2)
        server = psutil.Process(app.process.pid)
        stop = time.time() + args.minutes * 60
        lat: list[float] = []
        errors: list[str] = []
        refused = [0]

        def user(n: int) -> None:
            client = Client(url, verbose=False)
            rng = np.random.default_rng(n)
            while time.time() < stop:
                r = rng.random()
                t = time.perf_counter()
                try:
                    if r < 0.1:
                        try:
                            client.predict(image=handle_file(str(bad)), api_name="/search_image")
                        except Exception:
                            refused[0] += 1
                        continue
                    if r < 0.4:
                        client.predict(
                            text=f"{rng.choice(['red', 'navy', 'green'])} mug",
                            api_name="/search_text",
                        )
                    elif r < 0.7:
                        client.predict(
                            image=handle_file(str(photos[int(rng.integers(len(photos)))])),
                            api_name="/search_image",
                        )
                    else:
                        client.predict(
                            image=handle_file(str(small[int(rng.integers(len(small)))])),
                            api_name="/search_image",
                        )
                    lat.append((time.perf_counter() - t) * 1000)
                except Exception as exc:
                    errors.append(repr(exc)[:200])

        threads = [threading.Thread(target=user, args=(i,)) for i in range(args.users)]
        for t in threads:
            t.start()
        samples = []
        started = time.time()
        while any(t.is_alive() for t in threads):
            samples.append(
                {
                    "s": round(time.time() - started),
                    "rss_mb": server.memory_info().rss / 2**20,
                    "uploads_mb": _folder_bytes(uploads) / 2**20 if uploads.exists() else 0.0,
                    "queries": len(lat),
                }
            )
            time.sleep(args.every)
        for t in threads:
            t.join()
    rss = [s["rss_mb"] for s in samples]
    half = len(rss) // 2
    drift = (np.mean(rss[half:]) - np.mean(rss[:half])) if half else 0.0
    pct = C.percentiles(lat) if lat else {}
    results = {
        "users": args.users,
        "minutes": args.minutes,
        "queries": len(lat),
        "errors": errors,
        "hostile_refused": refused[0],
        "latency_ms": pct,
        "samples": samples,
        "rss_mb_first_half": float(np.mean(rss[:half])) if half else None,
        "rss_mb_second_half": float(np.mean(rss[half:])) if half else None,
        "rss_drift_mb": float(drift),
        "uploads_mb_max": max(s["uploads_mb"] for s in samples),
    }
    rows = [[s["s"], f"{s['rss_mb']:.0f}", f"{s['uploads_mb']:.1f}", s["queries"]] for s in samples]
    run.section(
        "Over time", C.md_table(["s", "server RSS MB", "upload folder MB", "queries so far"], rows)
    )
    run.section(
        "Summary",
        C.md_table(
            [
                "users",
                "minutes",
                "queries",
                "errors",
                "hostile uploads refused",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "RSS drift MB (2nd half - 1st half)",
                "upload folder max MB",
            ],
            [
                [
                    args.users,
                    args.minutes,
                    len(lat),
                    len(errors),
                    refused[0],
                    pct.get("p50"),
                    pct.get("p95"),
                    pct.get("p99"),
                    f"{drift:+.1f}",
                    f"{results['uploads_mb_max']:.1f}",
                ]
            ],
        ),
    )
    run.finish(results, C.command_line())


if __name__ == "__main__":
    main()
