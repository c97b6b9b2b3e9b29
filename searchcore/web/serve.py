"""Starting the page: flags over ``SEARCHCORE_*`` settings, the engine and its match gate, and
the server with its upload guard.

``app.py`` is the page's layout; this is everything around it. Settings come from
:meth:`searchcore.config.Settings.from_env` (``settings.serve`` holds the page's own), and flags
override them.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from searchcore.calibrate import MatchGate, calibrate
from searchcore.config import ServeSettings, Settings
from searchcore.engine import SearchEngine
from searchcore.web.guard import QueryQueue, UploadGuard

SERVE_FLAGS = tuple(f.name for f in fields(ServeSettings) if f.name != "follow_seconds")


def build_parser(demo_catalog: Path) -> argparse.ArgumentParser:
    """``python app.py`` flags; each one not given falls back to its ``SEARCHCORE_*`` variable."""
    p = argparse.ArgumentParser(description="The visual product search page.")
    p.add_argument(
        "--catalog",
        type=Path,
        help="catalog CSV or Parquet (env SEARCHCORE_CATALOG; "
        f"default: the demo shop {demo_catalog}, drawn on first start)",
    )
    p.add_argument("--model", help="model spec (env SEARCHCORE_MODEL; default: the shipped model)")
    p.add_argument(
        "--index",
        help="index folder or Milvus URI (env SEARCHCORE_INDEX; default: "
        "an 'index' folder next to the catalog), built on first start",
    )
    p.add_argument("--host", help="address to listen on (default 127.0.0.1, $GRADIO_SERVER_NAME)")
    p.add_argument("--port", type=int, help="port (default 7860, or $GRADIO_SERVER_PORT)")
    helps = {
        "max_upload_mb": "largest photo accepted (MB; default 10)",
        "min_image_score": "'no good match' threshold for photos (default: calibrated)",
        "min_text_score": "'no good match' threshold for words (default: calibrated)",
        "match_percentile": "calibration: share (%%) of genuine queries allowed below it (5)",
        "queue_size": "requests waiting at most (16)",
        "uploads_per_minute": "photo uploads one client address may make per minute (60)",
        "upload_folder_mb": "uploads (MB) all clients may leave within 20 min (512)",
    }
    for name in SERVE_FLAGS:
        kind = int if isinstance(getattr(ServeSettings(), name), int) else float
        p.add_argument(
            "--" + name.replace("_", "-"),
            type=kind,
            default=None,
            help=f"{helps[name]}; env SEARCHCORE_{name.upper()}",
        )
    return p


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Flags over ``SEARCHCORE_*`` variables. On a Hugging Face Space (``SPACE_ID``) weights
    may be downloaded unless ``SEARCHCORE_ALLOW_DOWNLOAD`` says otherwise."""
    on_space = bool(os.environ.get("SPACE_ID"))
    base = Settings.from_env(
        catalog=args.catalog,
        model=args.model,
        index_dir=args.index,
        allow_download=True
        if on_space and not os.environ.get("SEARCHCORE_ALLOW_DOWNLOAD")
        else None,
    )
    flags = {n: getattr(args, n) for n in SERVE_FLAGS if getattr(args, n, None) is not None}
    serve = replace(base.serve, **flags)
    limits = replace(base.images, max_bytes=int(serve.max_upload_mb * 1024 * 1024))
    return base.with_(serve=serve, images=limits)


def harden_images() -> None:
    """Before anything opens an image: Pillow refuses huge headers, and its "might be a
    decompression bomb" warning becomes an error everywhere in this process."""
    from PIL import Image

    from searchcore.images import DEFAULT_LIMITS

    Image.MAX_IMAGE_PIXELS = DEFAULT_LIMITS.max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)


def start(
    settings: Settings, demo_catalog: Path, say: Callable[[str], None]
) -> tuple[SearchEngine, MatchGate, Path]:
    """The engine over the catalog's index (the demo shop drawn and everything built on first
    start), following commits of other processes, and its calibrated match gate."""
    from searchcore.service import open_or_build, set_threads
    from searchcore.stores.base import is_milvus

    # Serving: one torch thread per request unless told otherwise. With two on a 2-vCPU
    # machine every model call contends (image embed 40 -> 983 ms, bench_query.py); the queue
    # runs requests side by side instead.
    set_threads(settings.threads or 1)
    catalog = Path(settings.catalog or demo_catalog)
    index_dir = str(settings.index_dir or catalog.parent / "index")
    engine = open_or_build(
        settings, catalog, index_dir, demo=catalog.resolve() == demo_catalog, say=say
    )
    if not is_milvus(index_dir):  # changes other processes commit reach the page by themselves
        from searchcore.live import Follower

        Follower(
            engine, index_dir, settings=settings, interval=settings.serve.follow_seconds
        ).start()
    if engine.upscaler is not None and hasattr(engine.upscaler, "load"):
        engine.upscaler.load()  # bad weights fail now, not on a shopper's first photo
    calibrating = time.perf_counter()
    serve = settings.serve
    gate = calibrate(engine, index_dir, serve.match_percentile)
    say(f"match threshold ready in {time.perf_counter() - calibrating:.1f} s")
    if serve.min_image_score is not None or serve.min_text_score is not None:
        gate = MatchGate(
            gate.image if serve.min_image_score is None else serve.min_image_score,
            gate.text if serve.min_text_score is None else serve.min_text_score,
            "set by --min-image-score / --min-text-score",
        )
    say(f"no good match below {gate.image:.3f} (photos) / {gate.text:.3f} (words): {gate.how}")
    return engine, gate, catalog


def launch(
    demo: Any,
    settings: Settings,
    engine: SearchEngine,
    gate: MatchGate,
    queue: QueryQueue,
    *,
    host: str | None,
    port: int | None,
    css: str,
) -> None:
    """Serve the page at ``/`` and the REST API at ``/api/v1`` on one server: a bounded queue,
    the upload guard in front of both, nothing served by path."""
    import gradio as gr
    import uvicorn
    from fastapi import FastAPI

    from searchcore.web.rest import FORM_PARTS, PREFIX, SEARCH_PATH, create_api

    serve = settings.serve
    # Two workers for cheap events, photo events one at a time (their shared slot, app.py).
    demo.queue(max_size=serve.queue_size, default_concurrency_limit=2)
    max_bytes = settings.images.max_bytes
    server = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)
    server.add_middleware(
        UploadGuard,
        max_request_bytes=max_bytes + 64 * 1024,  # the photo and its form's other fields
        per_minute=serve.uploads_per_minute,
        window_bytes=int(serve.upload_folder_mb * 1024 * 1024),
        trust_forwarded=bool(os.environ.get("SPACE_ID")),  # behind the Space's proxy
        forms={SEARCH_PATH: FORM_PARTS},
    )
    server.mount(PREFIX, create_api(engine, gate, queue, max_photo_bytes=max_bytes))
    # No allowed_paths: the page serves the catalog's photos as copies in Gradio's cache
    # (ServedImages), so nothing of the shop's folder is reachable by URL.
    gr.mount_gradio_app(
        server,
        demo,
        path="",
        max_file_size=max_bytes,
        show_error=False,
        ssr_mode=False,
        theme=gr.themes.Soft(),
        css=css,
        footer_links=["api"],
    )
    host = host or os.environ.get("GRADIO_SERVER_NAME") or "127.0.0.1"
    port = port or int(os.environ.get("GRADIO_SERVER_PORT") or 7860)
    print(f"* Running on http://{host}:{port} (REST API: {PREFIX}/docs)", flush=True)
    # The page's open event streams never end by themselves: on shutdown uvicorn waits for
    # them, then cancels them. That is the expected end of a stream, not an error to report.
    logging.getLogger("uvicorn.error").addFilter(_StreamsCancelledAtShutdown())
    # Behind a Space's proxy the client's scheme and host come in X-Forwarded-* headers: trust
    # them there, so the API's image URLs say https and the Space's own name.
    on_space = bool(os.environ.get("SPACE_ID"))
    uvicorn.run(
        server,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=2,
        proxy_headers=True,
        forwarded_allow_ips="*" if on_space else None,
    )


class _StreamsCancelledAtShutdown(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        cancelled = record.exc_info is not None and isinstance(
            record.exc_info[1], asyncio.CancelledError
        )
        return not (cancelled or "graceful shutdown exceeded" in record.getMessage())
