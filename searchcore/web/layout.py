"""The shopper's page laid out: its components, and its events wired to :class:`.page.Page`.

Every search updates the same outputs (:data:`.parts.SHOWN`, then the "we think this is..."
line, its chips and their state). Photo events run with ``preprocess=False`` (see
:mod:`.page`), and anything that may upscale or embed a photo takes one shared slot.
"""

from __future__ import annotations

import html
from functools import partial
from pathlib import Path

import gradio as gr

from searchcore.calibrate import MatchGate
from searchcore.config import UPSCALE_MODES
from searchcore.demo.assets import EXAMPLES
from searchcore.engine import SearchEngine
from searchcore.fusion import MODES
from searchcore.query import ALL_CATEGORIES as ALL
from searchcore.query import MAX_RESULTS, MAX_TEXT
from searchcore.web.guard import QueryQueue
from searchcore.web.page import Page
from searchcore.web.parts import MAX_CHIPS, SHOWN, attribute_choices

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
    choices = attribute_choices(engine.catalog)
    with gr.Blocks(title="Find it by photo", delete_cache=(300, 900)) as demo:
        gr.Markdown(
            "# Find it by photo\nUpload a photo of something you like (a small or blurry one "
            "is fine: we sharpen it first), describe it in words, or both."
        )
        hits = gr.State([])
        selected = gr.State("")
        chips = gr.State([])  # the (column, value) of each chip shown
        corner = gr.State(None)  # the first corner clicked on the photo, as fractions
        crop = gr.State(None)  # {"photo": its upload path, "box": [x0, y0, x1, y1]}
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
                    attributes = gr.Dropdown(
                        choices,
                        value=[],
                        multiselect=True,
                        allow_custom_value=True,  # a live shop's new values, a chip's
                        label="Only these",
                        info="any value of a kind, every kind (e.g. colour: red, pattern: solid)",
                        visible=bool(choices),
                        elem_id="attributes",
                    )
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
                guess = gr.Markdown(visible=False, elem_id="guess")
                with gr.Row():
                    chip_buttons = [
                        gr.Button(visible=False, size="sm", elem_id=f"chip-{i}", min_width=80)
                        for i in range(MAX_CHIPS)
                    ]
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
            seen = gr.Markdown(elem_id="seen")
            whole = gr.Button("Whole photo", size="sm", elem_id="whole")
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
        query += [attributes, crop]
        parts = dict(
            gallery=gallery,
            status=status,
            hits=hits,
            seen_row=seen_row,
            original=original,
            embedded=embedded,
            seen=seen,
            card_box=card_box,
        )
        shown = [parts[name] for name in SHOWN] + [guess, *chip_buttons, chips]
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
            [selected, k, category, min_price, max_price, attributes],
            shown,
            api_visibility="private",
        )
        # "We think this is...": a chip becomes a filter, and the search runs again.
        for i, chip in enumerate(chip_buttons):
            chip.click(
                partial(page.ui_chip, i),
                [chips, attributes, *query],
                [attributes, *shown],
                api_visibility="private",
                **heavy,
            )
        # Two clicks on the photo box the part to search; "Whole photo" searches all of it. A box
        # belongs to the photo it was drawn on (Page.run checks), a half-drawn one to none.
        photo.change(lambda: None, None, corner, queue=False, api_visibility="private")
        original.select(
            page.ui_corner,
            [corner, *query],
            [*shown, corner, crop],
            api_visibility="private",
            **heavy,
        )
        whole.click(
            lambda: (None, None), None, [corner, crop], queue=False, api_visibility="private"
        ).then(page.ui_search, query, shown, api_visibility="private", **heavy)

        # Named JSON endpoints for programs (gradio_client); hidden buttons carry them.
        out = gr.JSON(visible=False)
        gr.Button(visible=False).click(
            page.search_image,
            [photo, k, category, min_price, max_price, upscale, attributes],
            out,
            api_name="search_image",
            **heavy,
        )
        gr.Button(visible=False).click(
            page.search_text,
            [text, k, category, min_price, max_price, mode, attributes],
            out,
            api_name="search_text",
            preprocess=False,
        )
        gr.Button(visible=False).click(
            page.search_combined, query[:-1], out, api_name="search_combined", **heavy
        )
    return demo


def about_text(engine: SearchEngine, gate: MatchGate, catalog: Path) -> str:
    from searchcore.embed import ModelSpec

    spec = engine.embedder.spec
    kind = ModelSpec.parse(spec).kind
    model = f"`{Path(spec).name}` (a model folder)" if kind == "local" else f"`{spec}`"
    if kind == "random":
        model += (
            " with **random weights**, as asked (for tests and speed measurements): the page "
            "works end to end, but which products come back is not meaningful"
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
