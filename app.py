"""The shopper's page: find products by photo, by words, or both.

``build_demo(engine, gate)`` (:mod:`searchcore.web.layout`) lays out the Gradio page around a
ready :class:`SearchEngine` and wires its events to the handlers
(:class:`searchcore.web.page.Page`); ``main()`` starts it
(:mod:`searchcore.web.serve`: flags over ``SEARCHCORE_*`` settings, the demo shop drawn and
indexed on first start, the "no good match" threshold calibrated, the upload guard in front).
Nothing heavy happens at import.

    python app.py                          # the demo shop, offline, on http://127.0.0.1:7860
    python app.py --catalog shop.csv --model ViT-B-32:openai --index shop-index
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# No telemetry calls from an offline demo.
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from searchcore.errors import SearchError
from searchcore.web.guard import QueryQueue
from searchcore.web.layout import about_text, build_demo
from searchcore.web.page import CSS

ROOT = Path(__file__).resolve().parent
DEMO_CATALOG = ROOT / "catalog" / "demo" / "products.csv"


def say(msg: str) -> None:
    print(f"app: {msg}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    from searchcore.web import serve

    args = serve.build_parser(DEMO_CATALOG.relative_to(ROOT)).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    serve.harden_images()
    try:
        settings = serve.settings_from_args(args)
        engine, gate, catalog = serve.start(settings, DEMO_CATALOG, say)
        queue = QueryQueue(settings.serve.queue_size)
        demo = build_demo(engine, gate, about_text(engine, gate, catalog), queue=queue)
    except SearchError as exc:
        say(f"error: {exc}")
        return exc.exit_code
    say(f"ready in {time.perf_counter() - started:.1f} s")
    serve.launch(demo, settings, engine, gate, queue, host=args.host, port=args.port, css=CSS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
