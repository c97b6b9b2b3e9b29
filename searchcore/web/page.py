"""The page's handlers: check a stranger's input, call the engine, shape what Gradio shows.

:class:`Page` is bound to one engine and its match gate. Photo events run with
``preprocess=False``: Gradio hands over the client's file record and never opens the file, so
only searchcore's checked decoder reads an upload, and only after :func:`.guard.upload_path`
found it inside this server's upload folder. Every other parameter arrives as raw JSON too and
is checked by :meth:`searchcore.query.Query.parse`. ``searchcore`` errors become one-line
``gr.Error`` messages (HTML-escaped); anything else is logged once and shown as our fault.
"""

from __future__ import annotations

import html
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from searchcore.calibrate import MatchGate
from searchcore.engine import SearchEngine, SearchResult
from searchcore.errors import SearchError
from searchcore.images import DRAFT, decode_image
from searchcore.query import Query, answer, good_match, run
from searchcore.rowcheck import parse_price
from searchcore.web.guard import QueryQueue, ServedImages, upload_path
from searchcore.web.parts import (
    MAX_CHIPS,
    SHOWN,
    box_for,
    caption_why,
    chosen,
    clicked,
    for_display,
    mark,
)

log = logging.getLogger(__name__)


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
        queue: QueryQueue | None = None,
    ) -> None:
        from gradio.utils import get_upload_folder

        self.engine = engine
        self.queue = queue or QueryQueue()  # the photo slot, shared with the REST API
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
        mode: Any = None,
        attributes: Any = None,
        crop: Any = None,
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
                attributes=chosen(attributes),
                upscale=upscale,
                mode=mode,
                crop=box_for(crop, photo),
            )
            if path is None:
                result = run(self.engine, query)
            else:  # the photo slot the REST API shares: one photo at a time on this server
                with self.queue.enter(photo=True):
                    result = run(self.engine, query, path)
        return result, self.gate.threshold(path is not None, bool(query.text), query.text_weight)

    def api(self, result: SearchResult, threshold: float) -> dict[str, Any]:
        return answer(result, threshold)

    # -- API endpoints (JSON) -----------------------------------------------------------------
    def search_image(
        self,
        image: Any,
        k: Any,
        category: Any,
        min_price: Any,
        max_price: Any,
        upscale: Any,
        attributes: Any = None,
    ) -> dict[str, Any]:
        if image is None or image == "":
            raise gr.Error("give a photo", print_exception=False)
        return self.api(
            *self.run(
                image, None, 0.0, k, category, min_price, max_price, upscale, None, attributes
            )
        )

    def search_text(
        self,
        text: Any,
        k: Any,
        category: Any,
        min_price: Any,
        max_price: Any,
        mode: Any = None,
        attributes: Any = None,
    ) -> dict[str, Any]:
        if text is None or (isinstance(text, str) and not text.strip()):
            raise gr.Error("give a description", print_exception=False)
        return self.api(
            *self.run(None, text, 1.0, k, category, min_price, max_price, None, mode, attributes)
        )

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
        mode: Any = None,
        attributes: Any = None,
    ) -> dict[str, Any]:
        return self.api(
            *self.run(
                image,
                text,
                text_weight,
                k,
                category,
                min_price,
                max_price,
                upscale,
                mode,
                attributes,
            )
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
            (path, f"{h.title} · {self.price(h.price)} · {h.score:.2f}" + caption_why(h.why))
            for h, path in served
            if path is not None
        ]
        state = [
            {
                "id": h.id,
                "title": h.title,
                "price": self.price(h.price),
                "score": h.score,
                "why": list(h.why),
                **{k: h.fields.get(k, "") for k in ("category", "colour", "material")},
            }
            for h in hits
        ]
        if not hits:
            status = (
                "### Nothing passes these filters\nWiden the price range or pick another category."
            )
        elif not good_match(result, threshold):
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
                    f"**Upscaled** with Real-ESRGAN (`{result.upscaler}`) to "
                    f"{result.embedded.width}×{result.embedded.height} px ({d.reason})."
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
        part = "the part you boxed" if result.crop is not None else "your photo"
        label = "What the model saw: " + (
            f"{part}, upscaled to {seen_img.width}×{seen_img.height}"
            if result.upscaled
            else f"{part} as it is"
        )
        if result.original is not None:
            lines.append(
                "Click two opposite corners on your photo to search just that part."
                if result.crop is None
                else "Searched the boxed part. Click two corners to move the box, or "
                "**Whole photo** to search all of it."
            )
        original = result.original
        if original is not None:
            original = for_display(original)
            original = mark(original, result.crop) if result.crop is not None else original
        return (
            gr.update(visible=result.original is not None),
            original,
            gr.update(value=seen_img, label=label),
            "\n\n".join(lines),
        )

    def ui_search(
        self,
        photo,
        text,
        text_weight,
        k,
        category,
        min_price,
        max_price,
        upscale,
        mode=None,
        attributes=None,
        crop=None,
    ) -> tuple:
        result, threshold = self.run(
            photo,
            text,
            text_weight,
            k,
            category,
            min_price,
            max_price,
            upscale,
            mode,
            attributes,
            crop,
        )
        text = (text or "").strip()
        what = (
            (f"your photo and “{html.escape(text)}”" if text else "your photo")
            if photo
            else f"“{html.escape(text)}”"
        )
        how = {
            "vector": "went through the model's text encoder",
            "lexical": "were looked up in the products' titles and attributes",
        }.get(
            str(mode),
            "were looked up in the products' titles and attributes and read by the model's "
            "text encoder, and the two rankings fused",
        )
        lead = f"Your words, {what}, {how}." if not photo else ""
        return (
            *self.show(result, threshold, what),
            *self.seen(result, lead),
            gr.update(visible=False),
            *self.chips(result),
        )

    def chips(self, result: SearchResult) -> tuple:
        """ "We think this is...": a line, and one chip per predicted attribute the catalog can
        be filtered on (most confident first); the chips' (column, value) pairs as state."""
        filterable = set(self.engine.catalog.filterable)
        guesses = sorted(
            (
                (options[0][1], column, options[0][0])
                for column, options in (result.predicted or {}).items()
                if options and column in filterable
            ),
            reverse=True,
        )[:MAX_CHIPS]
        buttons = [
            gr.update(value=f"{column}: {value} · {p:.0%}", visible=True)
            for p, column, value in guesses
        ]
        buttons += [gr.update(visible=False)] * (MAX_CHIPS - len(buttons))
        line = (
            "**We think this is:** "
            + " · ".join(f"{html.escape(v)} ({p:.0%})" for p, _, v in guesses)
            + " — click one to see only those."
            if guesses
            else ""
        )
        return (
            gr.update(value=line, visible=bool(guesses)),
            *buttons,
            [[c, v] for _, c, v in guesses],
        )

    def ui_chip(self, index: int, chips: list, attributes: Any, *query: Any) -> tuple:
        """A chip clicked: its attribute joins the filters (replacing that column's), and the
        search runs again."""
        if not isinstance(chips, list) or not 0 <= index < len(chips):
            raise gr.Error("That suggestion is gone; search again.", print_exception=False)
        column, value = (str(x) for x in chips[index])
        kept = [a for a in (attributes or []) if not str(a).startswith(f"{column}: ")]
        picked = [*kept, f"{column}: {value}"]
        *head, _, crop = query
        return (picked, *self.ui_search(*head, picked, crop))

    def ui_corner(
        self,
        corner,
        photo,
        text,
        text_weight,
        k,
        category,
        min_price,
        max_price,
        upscale,
        mode,
        attributes,
        crop,
        evt: gr.EventData,
    ) -> tuple:
        """A click on the shopper's photo: the first marks a corner of the part to search, the
        second the opposite corner, and that part is searched (the photo stays as uploaded)."""
        with _edge():
            path = upload_path(photo, self.upload_dir)
            if path is None:
                raise SearchError("Upload a photo first.")
            img = for_display(decode_image(path, self.engine.image_limits, draft=DRAFT))
        index = clicked(evt)  # in the pixels of the photo as the page shows it
        if not isinstance(index, list) or len(index) != 2:
            raise gr.Error("Click on your photo to mark a corner.", print_exception=False)
        x, y = (float(v) for v in index)
        point = (min(1.0, max(0.0, x / img.width)), min(1.0, max(0.0, y / img.height)))
        if not isinstance(corner, list) or len(corner) != 2:
            nothing = [gr.update()] * (len(SHOWN) + MAX_CHIPS + 2)
            nothing[SHOWN.index("original")] = mark(img, (*point, *point))
            nothing[SHOWN.index("seen")] = "Now click the opposite corner of the part to search."
            return (*nothing, list(point), crop)
        (x0, y0), (x1, y1) = corner, point
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        state = {"photo": photo.get("path") if isinstance(photo, dict) else None, "box": box}
        query = (photo, text, text_weight, k, category, min_price, max_price, upscale, mode)
        return (*self.ui_search(*query, attributes, state), None, state)

    def ui_select(self, state: list[dict], evt: gr.EventData) -> tuple:
        index = clicked(evt)
        if not state or not isinstance(index, int) or not 0 <= index < len(state):
            return gr.update(visible=False), "", ""
        h = state[index]
        details = " · ".join(
            html.escape(str(h[k])) for k in ("category", "colour", "material") if h.get(k)
        )
        card = (
            f"**{html.escape(h['title'])}**  \n{h['price']} · {details}  \n"
            f"product {html.escape(h['id'])} · similarity {h['score']:.2f}"
        )
        if h.get("why"):
            card += "  \nWhy: " + html.escape(" · ".join(h["why"]))
        return gr.update(visible=True), card, h["id"]

    def ui_similar(self, product_id, k, category, min_price, max_price, attributes=None) -> tuple:
        if not product_id:
            raise gr.Error("Click a result first.", print_exception=False)
        with _edge():
            query = Query.parse(
                k=k,
                category=category,
                min_price=min_price,
                max_price=max_price,
                attributes=chosen(attributes),
            )
            result = self.engine.similar(str(product_id), k=query.k, filters=query.filters)
            row = self.engine.catalog.rows_for_ids([str(product_id)])[0]
        what = f"“{html.escape(str(self.engine.catalog.df['title'].iat[row]))}”"
        lead = f"Products whose photos look like {what} (its stored vector, no new embedding)."
        return (
            *self.show(result, self.gate.image, what),
            *self.seen(result, lead),
            gr.update(visible=False),
            *self.chips(result),
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
