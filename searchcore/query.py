"""A shopper's query: its parameters defined once, checked once, wherever they come from.

The page, its JSON API and programs all pass the same parameters (``text``, ``text_weight``,
``k``, ``category``, ``min_price``, ``max_price``, ``attributes``, ``upscale``, ``mode``,
``crop``, plus a photo).
They arrive from strangers as JSON, so each may be any type: :meth:`Query.parse` accepts
exactly the types a client can mean and turns everything else (a list for ``text``, ``true``
for ``k``, a string that cannot be encoded) into one :class:`~searchcore.errors.ConfigError`
line. The photo itself is the web edge's to resolve (see :mod:`searchcore.web.guard`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from searchcore.config import UPSCALE_MODES
from searchcore.errors import ConfigError, SearchError
from searchcore.fusion import MODES
from searchcore.stores.base import Filters

if TYPE_CHECKING:
    from searchcore.engine import SearchEngine, SearchResult

ALL_CATEGORIES = "All categories"
MAX_RESULTS = 48
DEFAULT_RESULTS = 12
MAX_TEXT = 300  # characters a description may have
MAX_LABEL = 200  # characters of a category name
MAX_ATTRIBUTES = 16  # columns one query may filter on
MAX_VALUES = 32  # values one column's filter may accept
MIN_CROP = 0.02  # smallest side of a crop box, as a fraction of the photo's


# The query's fields, once: Query.parse takes exactly these, and the REST API's form and its
# OpenAPI description are made from them (name -> (JSON type, what it means)).
FIELDS: dict[str, tuple[str, str]] = {
    "text": ("string", f"words: what the shopper wants, or how to change the photo (≤ {MAX_TEXT})"),
    "text_weight": ("number", "share of the words in a photo + words query, 0..1 (0.5)"),
    "k": ("integer", f"number of results, 1..{MAX_RESULTS} ({DEFAULT_RESULTS})"),
    "category": ("string", "only this category (empty: all)"),
    "min_price": ("number", "lowest price (empty or 0: no limit)"),
    "max_price": ("number", "highest price (empty or 0: no limit)"),
    "attributes": (
        "object",
        'only products with these values, e.g. {"colour": "red", "gender": ["men", "unisex"]}: '
        "any of a column's values, every column (a form sends it as JSON text)",
    ),
    "upscale": ("string", f"one of {', '.join(UPSCALE_MODES)} (the server's setting)"),
    "mode": ("string", f"how words alone are matched: one of {', '.join(MODES)} (hybrid)"),
    "crop": (
        "array",
        "search only this part of the photo: [x0, y0, x1, y1], fractions of its width and "
        'height from the top left (a form sends "x0,y0,x1,y1")',
    ),
}


@dataclass(frozen=True)
class Query:
    """Checked parameters of one search (the photo travels beside it)."""

    text: str = ""
    text_weight: float = 0.5
    k: int = DEFAULT_RESULTS
    filters: Filters = field(default_factory=Filters)
    upscale: str | None = None
    mode: str = "hybrid"
    crop: tuple[float, float, float, float] | None = None

    @classmethod
    def parse(
        cls,
        *,
        text: Any = None,
        text_weight: Any = None,
        k: Any = None,
        category: Any = None,
        min_price: Any = None,
        max_price: Any = None,
        attributes: Any = None,
        upscale: Any = None,
        mode: Any = None,
        crop: Any = None,
    ) -> Query:
        """Check raw values as a client sent them; ``None`` (or "") means the default."""
        text = _text(text, "text", MAX_TEXT).strip()
        weight = _number(text_weight, "text weight")
        weight = 0.5 if weight is None else weight
        if not 0.0 <= weight <= 1.0:
            raise ConfigError(f"text weight must be between 0 and 1, not {weight:g}")
        category = _text(category, "category", MAX_LABEL).strip()
        # The page's number boxes cannot be empty (Gradio sends 0), so 0 means "no limit".
        low = _number(min_price, "min price") or None
        high = _number(max_price, "max price") or None
        for name, value in (("min price", low), ("max price", high)):
            if value is not None and value < 0:
                raise ConfigError(f"{name} cannot be negative")
        up = _text(upscale, "upscale", 16).strip() or None
        if up is not None and up not in UPSCALE_MODES:
            raise ConfigError(f"upscale must be one of {', '.join(UPSCALE_MODES)}")
        how = _text(mode, "mode", 16).strip() or "hybrid"
        if how not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}")
        filters = Filters(
            category=None if category in ("", ALL_CATEGORIES) else category,
            min_price=low,
            max_price=high,
            attributes=_attributes(attributes),
        )
        return cls(
            text=text,
            text_weight=weight,
            k=_count(k),
            filters=filters,
            upscale=up,
            mode=how,
            crop=_crop(crop),
        )


def run(engine: SearchEngine, query: Query, image: Any = None) -> SearchResult:
    """Search ``engine`` with a checked query and its photo (``None``, a path or bytes): the one
    call of the page and the REST API."""
    if image is None and not query.text:
        raise SearchError("Add a photo, a description, or both.")
    text = query.text
    label = "photo" + (f" + {text!r}" if text else "") if image is not None else text
    return engine.search(
        image=image,
        text=text or None,
        text_weight=query.text_weight,
        k=query.k,
        filters=query.filters,
        upscale=query.upscale,
        query_label=label,
        mode=query.mode,
        crop=query.crop,
    )


def good_match(result: SearchResult, threshold: float) -> bool:
    """Whether the best hit is a match worth showing as one: its similarity reaches
    ``threshold`` (see :mod:`searchcore.calibrate`), or the query's own words found it."""
    if not result.hits:
        return False
    best = result.hits[0]
    return best.score >= threshold or "lexical" in best.matched


def answer(result: SearchResult, threshold: float) -> dict[str, Any]:
    """The answer's JSON, one definition for the page's API and the CLI's ``--json``:
    ``{"query", "results": [{"id", "title", "price", ..., "image", "score", "rank",
    "matched", "lexical_score"}], "upscaled", "upscale", "timings_ms", "notes", "good_match",
    "min_score"}``. ``image`` is relative to the catalog; ``score`` is the cosine similarity to
    the query; ``matched`` says which side found the product (``"vector"``, ``"lexical"``),
    ``lexical_score`` its BM25 score where the words found it; ``good_match``: see
    :func:`good_match`."""
    out = result.to_dict()
    out["good_match"] = good_match(result, threshold)
    out["min_score"] = round(threshold, 6)
    return out


def _text(value: Any, name: str, limit: int) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be text")
    if len(value) > limit:
        raise ConfigError(f"{name} must be at most {limit} characters")
    try:
        value.encode("utf-8")  # lone surrogates ("\udcff") cannot be sent back in an answer
    except UnicodeEncodeError:
        raise ConfigError(f"{name} is not valid text (unencodable characters)") from None
    if "\x00" in value:
        raise ConfigError(f"{name} contains a NUL character")
    return value


def _number(value: Any, name: str) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{name} must be a number")
    if isinstance(value, str) and len(value) > 32:
        raise ConfigError(f"{name} must be a number")
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number") from None
    if not math.isfinite(number):
        raise ConfigError(f"{name} must be a finite number")
    return number


def _attributes(value: Any) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``{"column": "value" or ["value", ...]}`` (or that object as JSON text, from a form)."""
    if value is None or value == "":
        return ()
    if isinstance(value, str):
        if len(value) > MAX_ATTRIBUTES * MAX_VALUES * MAX_LABEL:
            raise ConfigError("attributes is too long")
        try:
            value = json.loads(value)
        except ValueError:
            raise ConfigError('attributes must be a JSON object, e.g. {"colour": "red"}') from None
    if not isinstance(value, dict):
        raise ConfigError(
            'attributes must be an object of column -> value(s), e.g. {"colour": "red"}'
        )
    if len(value) > MAX_ATTRIBUTES:
        raise ConfigError(f"attributes may name at most {MAX_ATTRIBUTES} columns")
    out = []
    for column, wanted in value.items():
        column = _text(column, "an attribute column", MAX_LABEL).strip()
        values = [wanted] if isinstance(wanted, str) else wanted
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_VALUES:
            raise ConfigError(
                f"attribute {column!r} takes a value or a list of 1 to {MAX_VALUES} values"
            )
        texts = tuple(_text(v, f"a value of {column!r}", MAX_LABEL).strip() for v in values)
        if not column or not all(texts):
            raise ConfigError("attribute columns and values cannot be empty")
        out.append((column, texts))
    return tuple(out)


def _crop(value: Any) -> tuple[float, float, float, float] | None:
    """``[x0, y0, x1, y1]`` in fractions of the photo (or ``"x0,y0,x1,y1"``, from a form)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = value.strip().strip("[]").split(",") if len(value) <= 200 else []
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        raise ConfigError("crop must be four numbers: x0, y0, x1, y1 (fractions of the photo)")
    box = tuple(_number(v, "a crop coordinate") for v in value)
    if any(v is None for v in box):  # "0.1,,0.5,0.9": a coordinate left out is not a 0
        raise ConfigError("crop must be four numbers: x0, y0, x1, y1 (fractions of the photo)")
    if not all(0.0 <= v <= 1.0 for v in box):
        raise ConfigError("crop coordinates are fractions of the photo, between 0 and 1")
    if box[2] - box[0] < MIN_CROP or box[3] - box[1] < MIN_CROP:
        raise ConfigError(
            f"crop must go left to right and top to bottom (x0 < x1, y0 < y1), at least "
            f"{MIN_CROP:g} of the photo each way"
        )
    if box == (0.0, 0.0, 1.0, 1.0):
        return None  # the whole photo
    return box  # type: ignore[return-value]


def _count(value: Any) -> int:
    number = _number(value, "number of results")
    if number is None:
        return DEFAULT_RESULTS
    if number != int(number):
        raise ConfigError("number of results must be a whole number")
    if not 1 <= number <= MAX_RESULTS:
        raise ConfigError(f"number of results must be between 1 and {MAX_RESULTS}")
    return int(number)
