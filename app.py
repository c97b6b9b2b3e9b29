"""The shopper's page: find products by photo, by words, or both.

``build_demo(engine)`` builds the Gradio page around a ready :class:`SearchEngine`; ``main()``
reads flags and ``SEARCHCORE_*`` variables, makes sure the catalog and its index exist (the demo
shop is drawn and indexed on first start, then reused), calibrates the "no good match"
threshold and serves the page. Handlers only check input, call the engine, turn results into
gallery items and turn ``searchcore`` errors into ``gr.Error``. Nothing heavy happens at import.

    python app.py                          # the demo shop, offline, on http://127.0.0.1:7860
    python app.py --catalog shop.csv --model ViT-B-32:openai --index shop-index
"""

from __future__ import annotations

import argparse
import html
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault(
    "GRADIO_ANALYTICS_ENABLED", "False"
)  # no telemetry calls from an offline demo

import gradio as gr
import numpy as np
from PIL import Image

from searchcore.calibrate import MatchGate, calibrate
from searchcore.catalog import parse_price
from searchcore.config import UPSCALE_MODES, ImageLimits, Settings
from searchcore.engine import SearchEngine, SearchResult
from searchcore.errors import SearchError
from searchcore.query import ALL_CATEGORIES as ALL
from searchcore.query import MAX_RESULTS, MAX_TEXT, Query, answer
from searchcore.webguard import ServedImages, UploadGuard, upload_path

ROOT = Path(__file__).resolve().parent
DEMO_CATALOG = ROOT / "catalog" / "demo" / "products.csv"
EXAMPLES = ROOT / "assets" / "examples"
EXAMPLE_PHOTOS = (
    "tiny-red-sneakers.png",
    "blurry-striped-tshirt.jpg",
    "lowres-orange-handbag.jpg",
    "blurry-yellow-mug.jpg",
    "sharp-grey-watch.jpg",
)
EXAMPLE_TEXTS = (
    "red sneakers with white soles",
    "navy striped t-shirt",
    "black leather handbag",
    "yellow mug with dots",
    "green checked backpack",
)
FOLLOW_SECONDS = 2.0  # how often the page looks for changes committed by other processes
log = logging.getLogger("app")

# --------------------------------------------------------------------------- "no good match"


# --------------------------------------------------------------------------- the page


def _error(exc: BaseException) -> gr.Error:
    # Messages can name an uploaded file: never let them be rendered as HTML.
    return gr.Error(html.escape(str(exc)), print_exception=False)


@contextmanager
def _edge() -> Iterator[None]:
    """searchcore errors become a short message on the page; anything else is logged once."""
    try:
        yield
    except gr.Error:
        raise
    except SearchError as exc:
        raise _error(exc) from None
    except Exception:
        log.exception("unexpected error while searching")
        raise gr.Error(
            "Something went wrong on our side; please try again.", print_exception=False
        ) from None


class Page:
    """The handlers, bound to one engine and its match gate.

    Photo events run with ``preprocess=False``: Gradio hands over the client's file record and
    never opens the file, so only searchcore's checked decoder reads an upload, and only after
    :func:`upload_path` found it inside this server's upload folder. Every other parameter
    arrives as raw JSON too and is checked by :meth:`Query.parse`.
    """

    def __init__(
        self,
        engine: SearchEngine,
        gate: MatchGate,
        currency: str = "€",
        upload_dir: str | Path | None = None,
        served: ServedImages | None = None,
    ) -> None:
        from gradio.utils import get_upload_folder

        self.engine = engine
        self.gate = gate
        self.currency = currency
        self.upload_dir = Path(upload_dir or get_upload_folder())
        self.served = served or ServedImages(self.upload_dir, engine.image_limits.max_bytes)

    # -- the engine, through the edge ---------------------------------------------------------
    def run(
        self,
        photo: Any,
        text: Any,
        text_weight: Any,
        k: Any,
        category: Any,
        min_price: Any,
        max_price: Any,
        upscale: Any,
    ) -> tuple[SearchResult, float]:
        with _edge():
            path = upload_path(photo, self.upload_dir)
            query = Query.parse(
                text=text,
                text_weight=text_weight,
                k=k,
                category=category,
                min_price=min_price,
                max_price=max_price,
                upscale=upscale,
            )
            text = query.text
            if path is None and not text:
                raise gr.Error("Add a photo, a description, or both.", print_exception=False)
            label = "photo" + (f" + {text!r}" if text else "") if path else text
            result = self.engine.search(
                image=path,
                text=text or None,
                text_weight=query.text_weight,
                k=query.k,
                filters=query.filters,
                upscale=query.upscale,
                query_label=label,
            )
        return result, self.gate.threshold(path is not None, bool(text), query.text_weight)

    def api(self, result: SearchResult, threshold: float) -> dict[str, Any]:
        return answer(result, threshold)

    # -- API endpoints (JSON) -----------------------------------------------------------------
    def search_image(
        self, image: Any, k: Any, category: Any, min_price: Any, max_price: Any, upscale: Any
    ) -> dict[str, Any]:
        if image is None or image == "":
            raise gr.Error("give a photo", print_exception=False)
        return self.api(*self.run(image, None, 0.0, k, category, min_price, max_price, upscale))

    def search_text(
        self, text: Any, k: Any, category: Any, min_price: Any, max_price: Any
    ) -> dict[str, Any]:
        if text is None or (isinstance(text, str) and not text.strip()):
            raise gr.Error("give a description", print_exception=False)
        return self.api(*self.run(None, text, 1.0, k, category, min_price, max_price, None))

    def search_combined(
        self,
        image: Any,
        text: Any,
        text_weight: Any,
        k: Any,
        category: Any,
        min_price: Any,
        max_price: Any,
        upscale: Any,
    ) -> dict[str, Any]:
        return self.api(
            *self.run(image, text, text_weight, k, category, min_price, max_price, upscale)
        )

    # -- the page -----------------------------------------------------------------------------
    def price(self, raw: str) -> str:
        value, problem = parse_price(raw)  # the hit's own field: right after a live change too
        return f"{self.currency}{value:,.2f}" if problem is None and np.isfinite(value) else raw

    def show(self, result: SearchResult, threshold: float, what: str) -> tuple:
        # Only the catalog's own photo files are handed to Gradio, as copies in its cache.
        served = [
            (h, self.served.serve(self.engine.catalog, h.fields.get("image", "")))
            for h in result.hits
        ]
        hits = [h for h, path in served if path is not None]
        items = [
            (path, f"{h.title} · {self.price(h.price)} · {h.score:.2f}")
            for h, path in served
            if path is not None
        ]
        state = [
            {
                "id": h.id,
                "title": h.title,
                "price": self.price(h.price),
                "score": h.score,
                **{k: h.fields.get(k, "") for k in ("category", "colour", "material")},
            }
            for h in hits
        ]
        if not hits:
            status = (
                "### Nothing passes these filters\nWiden the price range or pick another category."
            )
        elif hits[0].score < threshold:
            status = (
                f"### No good match\nNothing in the shop is close to {what}: the best score is "
                f"{hits[0].score:.2f}, a good match scores at least {threshold:.2f}. The nearest "
                "products are below, but they are probably not what you are looking for."
            )
        else:
            status = f"**{len(hits)} products** for {what}. Click one to see more like it."
        return gr.update(value=items, selected_index=None), status, state

    def seen(self, result: SearchResult, lead: str = "") -> tuple:
        """The query as the system saw it: photos side by side, upscaling and timings."""
        lines = [lead] if lead else []
        d = result.decision
        if d is not None:
            size = f"{d.width}×{d.height} px" + (
                f", sharpness {d.sharpness:.0f}" if d.sharpness is not None else ""
            )
            if result.upscaled and result.embedded is not None:
                lines.append(
                    f"**Upscaled** with Real-ESRGAN to {result.embedded.width}×"
                    f"{result.embedded.height} px ({d.reason})."
                )
            elif d.upscale:
                lines.append(
                    f"**Not upscaled**, though it would help ({d.reason}): the upscaler "
                    "is not available on this server (see About this demo)."
                )
            else:
                lines.append(f"**Not upscaled** ({d.reason}).")
            lines.append(f"Your photo: {size}.")
        lines += [
            f"_Note: {html.escape(n)}_"
            for n in result.notes
            if not n.startswith("upscaling skipped")
        ]
        names = {
            "decode": "decode",
            "upscale_check": "upscale check",
            "upscale": "upscale",
            "embed": "embed photo",
            "embed_text": "embed words",
            "lookup": "look up",
            "search": "index search",
            "assemble": "assemble",
            "total": "total",
        }
        t = result.timings_ms
        lines.append(
            "| "
            + " | ".join(names.get(s, s) for s in t)
            + " |\n|"
            + "---|" * len(t)
            + "\n| "
            + " | ".join(f"{v:.3g} ms" for v in t.values())
            + " |"
        )
        seen_img = result.embedded
        label = "What the model saw: " + (
            f"upscaled to {seen_img.width}×{seen_img.height}"
            if result.upscaled
            else "your photo as it is"
        )
        return (
            gr.update(visible=result.original is not None),
            result.original,
            gr.update(value=seen_img, label=label),
            "\n\n".join(lines),
        )

    def ui_search(
        self, photo, text, text_weight, k, category, min_price, max_price, upscale
    ) -> tuple:
        result, threshold = self.run(
            photo, text, text_weight, k, category, min_price, max_price, upscale
        )
        text = (text or "").strip()
        what = (
            (f"your photo and “{html.escape(text)}”" if text else "your photo")
            if photo
            else f"“{html.escape(text)}”"
        )
        lead = f"Your words, {what}, went through the model's text encoder." if not photo else ""
        return (
            *self.show(result, threshold, what),
            *self.seen(result, lead),
            gr.update(visible=False),
        )

    def ui_select(self, state: list[dict], evt: gr.SelectData) -> tuple:
        if not state or evt.index is None or not 0 <= int(evt.index) < len(state):
            return gr.update(visible=False), "", ""
        h = state[int(evt.index)]
        details = " · ".join(
            html.escape(str(h[k])) for k in ("category", "colour", "material") if h.get(k)
        )
        card = (
            f"**{html.escape(h['title'])}**  \n{h['price']} · {details}  \n"
            f"product {html.escape(h['id'])} · similarity {h['score']:.2f}"
        )
        return gr.update(visible=True), card, h["id"]

    def ui_similar(self, product_id, k, category, min_price, max_price) -> tuple:
        if not product_id:
            raise gr.Error("Click a result first.", print_exception=False)
        with _edge():
            query = Query.parse(k=k, category=category, min_price=min_price, max_price=max_price)
            result = self.engine.similar(str(product_id), k=query.k, filters=query.filters)
            row = self.engine.catalog.rows_for_ids([str(product_id)])[0]
        what = f"“{html.escape(str(self.engine.catalog.df['title'].iat[row]))}”"
        lead = f"Products whose photos look like {what} (its stored vector, no new embedding)."
        return (
            *self.show(result, self.gate.image, what),
            *self.seen(result, lead),
            gr.update(visible=False),
        )


# Gallery captions sit under the photo instead of over it, and wrap instead of being cut off.
CSS = """
#results .thumbnail-item { aspect-ratio: auto; display: flex; flex-direction: column; }
#results .thumbnail-item img { aspect-ratio: 1 / 1; width: 100%; height: auto !important;
  object-fit: contain; }
#results .caption-label { position: static; max-width: 100%; white-space: normal; border: none;
  border-top: 1px solid var(--border-color-primary); border-radius: 0; background: transparent;
  font-size: 0.85rem; line-height: 1.3; padding: 6px 8px; }
#results .fixed-height { max-height: none; }
/* Both pictures of the query at the same size, the original's pixels left visible. */
#seen-original img, #seen-model img { height: 220px !important; width: auto !important;
  max-width: 100%; object-fit: contain; }
#seen-original img { image-rendering: pixelated; }
#status h3 { margin: 0.2rem 0; }
"""


def build_demo(
    engine: SearchEngine, gate: MatchGate | None = None, about: str = "", currency: str = "€"
) -> gr.Blocks:
    """The page around a ready engine. ``gate`` sets the "no good match" thresholds."""
    page = Page(engine, gate or MatchGate(), currency)
    categories = [ALL, *engine.catalog.categories()]
    with gr.Blocks(title="Find it by photo", delete_cache=(300, 900)) as demo:
        gr.Markdown(
            "# Find it by photo\nUpload a photo of something you like (a small or blurry one "
            "is fine: we sharpen it first), describe it in words, or both."
        )
        hits = gr.State([])
        selected = gr.State("")
        with gr.Row():
            with gr.Column(scale=2, min_width=300):
                photo = gr.Image(
                    label="Photo",
                    type="filepath",
                    image_mode=None,
                    height=260,
                    sources=["upload", "webcam", "clipboard"],
                    elem_id="photo",
                )
                text = gr.Textbox(
                    label="Describe it, or refine the photo",
                    max_length=MAX_TEXT,
                    placeholder="e.g. red sneakers with white soles — or, with a photo: in red",
                    elem_id="text",
                )
                weight = gr.Slider(
                    0,
                    1,
                    value=0.5,
                    step=0.05,
                    label="Words vs. photo",
                    info="With both: 0 = only the photo, 1 = only the words",
                )
                with gr.Accordion("Filters and options", open=True):
                    k = gr.Slider(1, MAX_RESULTS, value=12, step=1, label="Number of results")
                    category = gr.Dropdown(categories, value=ALL, label="Category")
                    with gr.Row():
                        min_price = gr.Number(
                            0, label=f"Min price ({currency})", minimum=0, info="0 = any"
                        )
                        max_price = gr.Number(
                            0, label=f"Max price ({currency})", minimum=0, info="0 = any"
                        )
                    upscale = gr.Radio(
                        list(UPSCALE_MODES),
                        value="auto",
                        label="Upscaling",
                        info="auto: only small or blurry photos",
                    )
                with gr.Row():
                    search = gr.Button("Search", variant="primary", elem_id="search")
                    gr.ClearButton([photo, text], value="Clear")
            with gr.Column(scale=3, min_width=360):
                status = gr.Markdown("Results will appear here.", elem_id="status")
                gallery = gr.Gallery(
                    label="Results",
                    columns=4,
                    height="auto",
                    object_fit="contain",
                    allow_preview=False,
                    elem_id="results",
                )
                with gr.Group(visible=False) as card_box:
                    card = gr.Markdown()
                    more = gr.Button("More like this", size="sm", elem_id="more")
        with gr.Accordion("How the system saw your query", open=True):
            with gr.Row(visible=False) as seen_row:
                original = gr.Image(
                    label="Your photo",
                    type="pil",
                    height=240,
                    interactive=False,
                    elem_id="seen-original",
                )
                embedded = gr.Image(
                    label="What the model saw",
                    type="pil",
                    height=240,
                    interactive=False,
                    elem_id="seen-model",
                )
            seen = gr.Markdown()
        photos = [str(EXAMPLES / p) for p in EXAMPLE_PHOTOS if (EXAMPLES / p).is_file()]
        with gr.Row():
            ex_photo = gr.Examples(
                [[p] for p in photos],
                [photo],
                examples_per_page=8,
                label="Try a small or blurry photo: watch the upscaler step in",
            )
            texts = [[None, t] for t in EXAMPLE_TEXTS]
            texts += [[photos[0], "in blue"]] if photos else []
            ex_text = gr.Examples(
                texts,
                [photo, text],
                label="…or describe it, or refine a photo in words",
                example_labels=[*EXAMPLE_TEXTS, "tiny red sneakers + “in blue”"][: len(texts)],
            )
        if about:
            with gr.Accordion("About this demo", open=False):
                gr.Markdown(about)

        query = [photo, text, weight, k, category, min_price, max_price, upscale]
        shown = [gallery, status, hits, seen_row, original, embedded, seen, card_box]
        # Anything that may upscale or embed a photo takes one shared slot: on a 2-vCPU Space one
        # photo already keeps torch on both cores, and Real-ESRGAN is never run concurrently.
        heavy = {"concurrency_id": "photo", "concurrency_limit": 1, "preprocess": False}
        for trigger in (search.click, text.submit):
            trigger(page.ui_search, query, shown, api_visibility="private", **heavy)
        # A photo example starts a photo-only search: clear any words left from before.
        ex_photo.load_input_event.then(
            lambda: "", None, text, queue=False, api_visibility="private"
        ).then(page.ui_search, query, shown, api_visibility="private", **heavy)
        ex_text.load_input_event.then(
            page.ui_search, query, shown, api_visibility="private", **heavy
        )
        gallery.select(page.ui_select, [hits], [card_box, card, selected], api_visibility="private")
        more.click(
            page.ui_similar,
            [selected, k, category, min_price, max_price],
            shown,
            api_visibility="private",
        )

        # Named JSON endpoints for programs (gradio_client); hidden buttons carry them.
        out = gr.JSON(visible=False)
        gr.Button(visible=False).click(
            page.search_image,
            [photo, k, category, min_price, max_price, upscale],
            out,
            api_name="search_image",
            **heavy,
        )
        gr.Button(visible=False).click(
            page.search_text,
            [text, k, category, min_price, max_price],
            out,
            api_name="search_text",
            preprocess=False,
        )
        gr.Button(visible=False).click(
            page.search_combined, query, out, api_name="search_combined", **heavy
        )
    return demo


# --------------------------------------------------------------------------- start-up


def say(msg: str) -> None:
    print(f"app: {msg}", file=sys.stderr, flush=True)


def about_text(engine: SearchEngine, gate: MatchGate, catalog: Path) -> str:
    from searchcore.embed import ModelSpec

    spec = engine.embedder.spec
    kind = ModelSpec.parse(spec).kind
    model = f"`{Path(spec).name}` (a model folder)" if kind == "local" else f"`{spec}`"
    if kind == "arch":
        model += (
            " with **random weights** (a stand-in until the trained model ships): the page "
            "works end to end, but which products come back is not meaningful yet"
        )
    up = engine.upscaler
    weights = getattr(up, "weights", None)
    upscaler = (
        f"`{up.name}`"
        + (f", weights `{Path(weights).name}`" if weights else "")
        + "; photos are shrunk to "
        f"{engine.policy.settings.max_input_side} px before upscaling"
        if up is not None
        else f"unavailable ({html.escape(engine.upscaler_problem or 'none configured')}), "
        "so photos are searched as they are"
    )
    # File names only: the server's own folders are nobody's business (this text is in /config).
    return (
        f"- **Catalog:** {len(engine.catalog)} products from `{catalog.name}`\n"
        f"- **Model:** {model}\n- **Upscaler:** {upscaler}\n"
        f"- **No good match** below {gate.image:.3f} (photos) / {gate.text:.3f} (words): "
        f"{gate.how}\n"
        "- Uploads are decoded by searchcore's checked decoder only, and deleted after 15 minutes."
    )


def build_parser() -> argparse.ArgumentParser:
    env = os.environ.get
    p = argparse.ArgumentParser(description="The visual product search page.")
    p.add_argument(
        "--catalog",
        type=Path,
        help="catalog CSV or Parquet (env SEARCHCORE_CATALOG; "
        f"default: the demo shop {DEMO_CATALOG.relative_to(ROOT)}, drawn on first start)",
    )
    p.add_argument("--model", help="model spec (env SEARCHCORE_MODEL; default: the shipped model)")
    p.add_argument(
        "--index",
        help="index folder or Milvus URI (env SEARCHCORE_INDEX; default: "
        "an 'index' folder next to the catalog), built on first start",
    )
    p.add_argument(
        "--host", help="address to listen on (default 127.0.0.1, or $GRADIO_SERVER_NAME)"
    )
    p.add_argument("--port", type=int, help="port (default 7860, or $GRADIO_SERVER_PORT)")
    p.add_argument(
        "--max-upload-mb", type=float, default=float(env("SEARCHCORE_MAX_UPLOAD_MB") or 10)
    )
    p.add_argument(
        "--min-image-score",
        type=float,
        default=_env_float("SEARCHCORE_MIN_IMAGE_SCORE"),
        help="'no good match' threshold for photos (default: calibrated)",
    )
    p.add_argument(
        "--min-text-score",
        type=float,
        default=_env_float("SEARCHCORE_MIN_TEXT_SCORE"),
        help="'no good match' threshold for words (default: calibrated)",
    )
    p.add_argument(
        "--match-percentile",
        type=float,
        default=float(env("SEARCHCORE_MATCH_PERCENTILE") or 5),
        help="calibration: share (%%) of genuine queries allowed below the threshold",
    )
    p.add_argument("--queue-size", type=int, default=int(env("SEARCHCORE_QUEUE_SIZE") or 16))
    p.add_argument(
        "--uploads-per-minute",
        type=int,
        default=int(env("SEARCHCORE_UPLOADS_PER_MINUTE") or 60),
        help="photo uploads one client address may make per minute",
    )
    p.add_argument(
        "--upload-folder-mb",
        type=float,
        default=float(env("SEARCHCORE_UPLOAD_FOLDER_MB") or 512),
        help="uploads (MB) all clients may leave within the 20 min before clean-up",
    )
    return p


def _env_float(name: str) -> float | None:
    value = os.environ.get(name)
    return float(value) if value else None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.perf_counter()
    # First line of defence, before anything opens an image: Pillow refuses huge headers, and its
    # "might be a decompression bomb" warning becomes an error everywhere in this process.
    from searchcore.images import DEFAULT_LIMITS

    Image.MAX_IMAGE_PIXELS = DEFAULT_LIMITS.max_pixels
    warnings.simplefilter("error", Image.DecompressionBombWarning)
    try:
        from searchcore.service import open_or_build, set_threads
        from searchcore.store import is_milvus

        on_space = bool(os.environ.get("SPACE_ID"))  # Hugging Face Spaces: weights may download
        settings = Settings.from_env(
            catalog=args.catalog,
            model=args.model,
            index_dir=args.index,
            images=ImageLimits(max_bytes=int(args.max_upload_mb * 1024 * 1024)),
            allow_download=True
            if on_space and not os.environ.get("SEARCHCORE_ALLOW_DOWNLOAD")
            else None,
        )
        # Serving: one torch thread per request unless told otherwise. With two on a 2-vCPU
        # machine every model call contends (image embed 40 -> 983 ms, bench_query.py); the queue
        # runs requests side by side instead.
        set_threads(settings.threads or 1)
        catalog = Path(settings.catalog or DEMO_CATALOG)
        index_dir = str(settings.index_dir or catalog.parent / "index")
        engine = open_or_build(
            settings, catalog, index_dir, demo=catalog.resolve() == DEMO_CATALOG, say=say
        )
        if not is_milvus(index_dir):  # changes other processes commit reach the page by themselves
            from searchcore.live import Follower

            Follower(engine, index_dir, settings=settings, interval=FOLLOW_SECONDS).start()
        if engine.upscaler is not None and hasattr(engine.upscaler, "load"):
            engine.upscaler.load()  # bad weights fail now, not on a shopper's first photo
        calibrating = time.perf_counter()
        gate = calibrate(engine, index_dir, args.match_percentile)
        say(f"match threshold ready in {time.perf_counter() - calibrating:.1f} s")
        if args.min_image_score is not None or args.min_text_score is not None:
            gate = MatchGate(
                gate.image if args.min_image_score is None else args.min_image_score,
                gate.text if args.min_text_score is None else args.min_text_score,
                "set by --min-image-score / --min-text-score",
            )
        say(f"no good match below {gate.image:.3f} (photos) / {gate.text:.3f} (words): {gate.how}")
        demo = build_demo(engine, gate, about_text(engine, gate, catalog))
    except SearchError as exc:
        say(f"error: {exc}")
        return getattr(exc, "exit_code", 1)
    say(f"ready in {time.perf_counter() - started:.1f} s")
    # Bounded queue; two workers for cheap events, photo events one at a time (see build_demo).
    demo.queue(max_size=args.queue_size, default_concurrency_limit=2)
    # No allowed_paths: the page serves the catalog's photos as copies in Gradio's cache
    # (ServedImages), so nothing of the shop's folder is reachable by URL.
    from starlette.middleware import Middleware

    max_bytes = int(args.max_upload_mb * 1024 * 1024)
    guard = Middleware(
        UploadGuard,
        max_request_bytes=max_bytes + 64 * 1024,
        per_minute=args.uploads_per_minute,
        window_bytes=int(args.upload_folder_mb * 1024 * 1024),
        trust_forwarded=bool(os.environ.get("SPACE_ID")),
    )  # behind the Space's proxy
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        max_file_size=max_bytes,
        show_error=False,
        ssr_mode=False,
        theme=gr.themes.Soft(),
        css=CSS,
        footer_links=["api"],
        app_kwargs={"middleware": [guard]},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
