"""The shopper's page: find products by photo, by words, or both.

``build_demo(engine, gate)`` lays out the Gradio page around a ready :class:`SearchEngine` and
wires its events to the handlers (:class:`searchcore.web.page.Page`); ``main()`` starts it
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

import gradio as gr

from searchcore.calibrate import MatchGate
from searchcore.config import UPSCALE_MODES
from searchcore.demo.assets import EXAMPLES
from searchcore.engine import SearchEngine
from searchcore.errors import SearchError
from searchcore.fusion import MODES
from searchcore.query import ALL_CATEGORIES as ALL
from searchcore.query import MAX_RESULTS, MAX_TEXT
from searchcore.web.guard import QueryQueue
from searchcore.web.page import CSS, Page, about_text

ROOT = Path(__file__).resolve().parent
DEMO_CATALOG = ROOT / "catalog" / "demo" / "products.csv"
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


def build_demo(
    engine: SearchEngine,
    gate: MatchGate | None = None,
    about: str = "",
    currency: str = "€",
    queue: QueryQueue | None = None,
) -> gr.Blocks:
    """The page around a ready engine. ``gate`` sets the "no good match" thresholds; ``queue``
    is the photo slot it shares with the REST API."""
    page = Page(engine, gate or MatchGate(), currency, queue=queue)
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
                    mode = gr.Radio(
                        list(MODES),
                        value="hybrid",
                        label="Words are matched by",
                        info="hybrid: the product texts and the model together",
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

        query = [photo, text, weight, k, category, min_price, max_price, upscale, mode]
        shown = [gallery, status, hits, seen_row, original, embedded, seen, card_box]
        # Anything that may upscale or embed a photo takes one shared slot: on a 2-vCPU Space one
        # photo already keeps torch on both cores, and Real-ESRGAN is never run concurrently.
        heavy = {"concurrency_id": "photo", "concurrency_limit": 1, "preprocess": False}
        # An uploaded (or pasted) photo searches at once; Search and Enter still search.
        for trigger in (search.click, text.submit, photo.upload):
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
            [text, k, category, min_price, max_price, mode],
            out,
            api_name="search_text",
            preprocess=False,
        )
        gr.Button(visible=False).click(
            page.search_combined, query, out, api_name="search_combined", **heavy
        )
    return demo


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
