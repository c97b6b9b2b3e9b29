"""Small pieces the page's handlers and its layout share: the order of a search's outputs, the
attribute filter's choices, the crop box kept in the page's state, marks drawn on a photo,
captions.
"""

from __future__ import annotations

from typing import Any

from searchcore.errors import ConfigError
from searchcore.facets import display_values

# The outputs every search updates, in order (the layout makes its components in this order).
SHOWN = ("gallery", "status", "hits", "seen_row", "original", "embedded", "seen", "card_box")
MAX_CHIPS = 6


def attribute_choices(catalog: Any) -> list[str]:
    """The attribute filter's choices, "column: value" (the category has its own menu)."""
    return [
        f"{column}: {value}"
        for column in catalog.filterable
        if column != "category"
        for value in display_values(catalog.df, column)
    ]


def chosen(attributes: Any) -> dict[str, list[str]] | Any:
    """The attribute filter's "column: value" choices as the query's ``attributes`` (anything
    else is handed on for :meth:`Query.parse` to refuse)."""
    if not attributes:
        return None
    if not isinstance(attributes, list) or not all(isinstance(a, str) for a in attributes):
        return attributes
    out: dict[str, list[str]] = {}
    for item in attributes:
        column, sep, value = item.partition(": ")
        if not sep:
            raise ConfigError(f"an attribute filter reads 'column: value', not {item!r}")
        out.setdefault(column, []).append(value)
    return out


def box_for(crop: Any, photo: Any) -> Any:
    """The crop box of the page's state when it was drawn on this very photo (a new photo is
    searched whole)."""
    if not isinstance(crop, dict):
        return crop  # None (the whole photo), or something Query.parse refuses
    same = isinstance(photo, dict) and crop.get("photo") == photo.get("path")
    return crop.get("box") if same else None


DISPLAY_SIDE = 240  # the page shows the shopper's photo at least this large


def for_display(img: Any) -> Any:
    """The shopper's photo as the page shows it: a small one enlarged by a whole factor, pixels
    kept (the browser reports clicks in the shown image's pixels only when it is not shown
    larger than it is)."""
    from PIL import Image

    factor = -(-DISPLAY_SIDE // max(img.size))
    if factor <= 1:
        return img
    return img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)


def mark(img: Any, box: tuple[float, ...]) -> Any:
    """A copy of ``img`` with ``box`` (fractions) drawn on it: a dot for a single corner."""
    from PIL import ImageDraw

    out = img.copy()
    w, h = out.size
    x0, y0, x1, y1 = box[0] * w, box[1] * h, box[2] * w, box[3] * h
    line = max(2, round(min(w, h) / 60))
    draw = ImageDraw.Draw(out)
    if x1 - x0 < 1 and y1 - y0 < 1:
        r = 2 * line
        draw.ellipse((x0 - r, y0 - r, x0 + r, y0 + r), outline=(255, 0, 128), width=line)
    else:
        draw.rectangle((x0, y0, x1, y1), outline=(255, 0, 128), width=line)
    return out


def caption_why(why: Any) -> str:
    """The reasons a caption shows (the similarity is already in it)."""
    said = [w for w in why if not w.startswith("looks alike")]
    return (" — " + " · ".join(said)) if said else ""


def clicked(evt: Any) -> Any:
    """The ``index`` of a select event as the client sent it (None when it sent none: a raw
    call names no click, and Gradio's own SelectData would fail on it before our code runs)."""
    data = vars(evt).get("_data") if evt is not None else None
    index = data.get("index") if isinstance(data, dict) else None
    if isinstance(index, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in index
    ):
        return index
    return index if isinstance(index, int) and not isinstance(index, bool) else None
