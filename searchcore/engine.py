"""The search engine: one object that answers image, text and image+text queries.

``SearchEngine(catalog, embedder, upscaler, index)`` takes its collaborators ready-made
(tests pass fakes); :func:`searchcore.service.open_engine` builds the real ones from an index
folder. Every answer carries the products, their scores and ranks, the image that was actually
embedded, whether and why it was upscaled, and the time spent in each stage.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from searchcore.catalog import Catalog
from searchcore.config import UPSCALE_MODES, UpscaleSettings
from searchcore.embed import Embedder
from searchcore.errors import ConfigError, SearchError, UpscaleError
from searchcore.images import DEFAULT_LIMITS, DRAFT, ImageLimits, decode_image
from searchcore.stores.base import Filters, VectorStore
from searchcore.upscale import UpscaleDecision, UpscalePolicy, Upscaler

DISPLAY_COLUMNS = ("id", "title", "price", "category", "colour", "image")


@dataclass(frozen=True)
class Hit:
    rank: int
    score: float
    row: int
    id: str
    title: str
    image: Path
    fields: dict[str, str]

    @property
    def price(self) -> str:
        return self.fields.get("price", "")

    def to_dict(self) -> dict[str, Any]:
        # "image" stays as the catalog has it (relative to the catalog's folder): a server's
        # own paths are nobody's business, and the relative path is what a client can map.
        return {
            **self.fields,
            "id": self.id,
            "title": self.title,
            "rank": self.rank,
            "score": round(self.score, 6),
        }


@dataclass
class SearchResult:
    query: str
    hits: list[Hit]
    timings_ms: dict[str, float]
    upscaled: bool = False
    decision: UpscaleDecision | None = None
    original: Image.Image | None = None  # the decoded upload
    embedded: Image.Image | None = None  # what the model saw (upscaled or not)
    notes: list[str] = field(default_factory=list)

    @property
    def best_score(self) -> float | None:
        return self.hits[0].score if self.hits else None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "query": self.query,
            "results": [h.to_dict() for h in self.hits],
            "upscaled": self.upscaled,
            "timings_ms": {k: round(v, 2) for k, v in self.timings_ms.items()},
        }
        if self.decision is not None:
            out["upscale"] = self.decision.to_dict()
        if self.notes:
            out["notes"] = list(self.notes)
        return out


@dataclass(frozen=True)
class View:
    """What one query reads: a catalog and its index, swapped together (label == catalog row).

    ``version`` names the committed state it came from (the index folder's manifest), so a
    follower can tell whether a newer one exists.
    """

    catalog: Catalog
    index: VectorStore
    version: str = ""


class _Clock:
    def __init__(self) -> None:
        self.start = self.last = time.perf_counter()
        self.ms: dict[str, float] = {}

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.ms[stage] = self.ms.get(stage, 0.0) + (now - self.last) * 1000
        self.last = now

    def done(self) -> dict[str, float]:
        self.ms["total"] = (time.perf_counter() - self.start) * 1000
        return self.ms


class SearchEngine:
    """Answers queries over one catalog and its index. Safe to call from many threads."""

    def __init__(
        self,
        catalog: Catalog,
        embedder: Embedder,
        upscaler: Upscaler | None,
        index: VectorStore,
        *,
        upscale: UpscaleSettings | None = None,
        image_limits: ImageLimits = DEFAULT_LIMITS,
        upscaler_problem: str | None = None,
        auto_skip: str | None = None,
        text_cache_size: int = 512,
        version: str = "",
    ) -> None:
        if index.dim != embedder.dim:
            raise SearchError(
                f"index dimension {index.dim} does not match the model's {embedder.dim}"
            )
        self._view = View(catalog, index, version)
        self.embedder = embedder
        self.upscaler = upscaler
        self.policy = UpscalePolicy(upscale or UpscaleSettings())
        self.image_limits = image_limits
        self.upscaler_problem = upscaler_problem
        # Set when evaluation measured that this upscaler does not help this model: `auto`
        # then skips it and says so (`always` still runs it).
        self.auto_skip = auto_skip
        self._text_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._text_cache_size = text_cache_size
        self._cache_lock = threading.Lock()

    # -- the catalog and index being served ------------------------------------------------------
    @property
    def view(self) -> View:
        return self._view

    @property
    def catalog(self) -> Catalog:
        return self._view.catalog

    @property
    def index(self) -> VectorStore:
        return self._view.index

    def swap(self, catalog: Catalog, index: VectorStore, version: str = "") -> None:
        """Serve another committed state from now on, atomically: a query reads one view from
        start to end, so it never mixes one state's index with another's catalog."""
        if index.dim != self.embedder.dim:
            raise SearchError(
                f"index dimension {index.dim} does not match the model's {self.embedder.dim}"
            )
        self._view = View(catalog, index, version)

    # -- queries ----------------------------------------------------------------------------
    def search(
        self,
        *,
        image: bytes | str | Path | Image.Image | None = None,
        text: str | None = None,
        text_weight: float = 0.5,
        k: int = 10,
        filters: Filters | None = None,
        upscale: str | None = None,
        query_label: str | None = None,
    ) -> SearchResult:
        """Image, text, or both (a weighted sum of the two normalised embeddings)."""
        text = (text or "").strip() or None
        if image is None and text is None:
            raise SearchError("give a photo, a description, or both")
        if not 0.0 <= text_weight <= 1.0:
            raise ConfigError(f"text weight must be between 0 and 1, not {text_weight}")
        if k < 1:
            raise ConfigError(f"k must be at least 1, not {k}")
        if upscale is not None and upscale not in UPSCALE_MODES:
            raise ConfigError(f"upscale must be one of {', '.join(UPSCALE_MODES)}, not {upscale!r}")
        clock = _Clock()
        view = self._view
        result = SearchResult(query=query_label or text or str(image), hits=[], timings_ms={})
        vectors: list[tuple[float, np.ndarray]] = []
        if image is not None:
            vec = self._image_vector(image, upscale, clock, result)
            vectors.append((1.0 - text_weight if text else 1.0, vec))
        if text is not None:
            vectors.append((text_weight if image is not None else 1.0, self._text_vector(text)))
            clock.lap("embed_text")
        query = np.sum([w * v for w, v in vectors], axis=0)
        norm = float(np.linalg.norm(query))
        if norm < 1e-8:  # photo and words cancel out: fall back to the photo alone
            query, norm = vectors[0][1], 1.0
        result.hits = self._search_vector(view, query / norm, k, filters, clock)
        result.timings_ms = clock.done()
        return result

    def search_image(self, image: Any, **kw: Any) -> SearchResult:
        return self.search(image=image, **kw)

    def search_text(self, text: str, **kw: Any) -> SearchResult:
        return self.search(text=text, **kw)

    def similar(self, product_id: str, k: int = 10, filters: Filters | None = None) -> SearchResult:
        """'More like this': neighbours of a catalog product's stored vector, itself left out."""
        clock = _Clock()
        view = self._view
        row = view.catalog.rows_for_ids([product_id])[0]
        try:
            vec = view.index.get_vectors([row])[0]
        except RuntimeError:
            raise SearchError(f"product {product_id} is not in the index") from None
        clock.lap("lookup")
        hits = [h for h in self._search_vector(view, vec, k + 1, filters, clock) if h.row != row][
            :k
        ]
        hits = [
            Hit(i + 1, h.score, h.row, h.id, h.title, h.image, h.fields) for i, h in enumerate(hits)
        ]
        return SearchResult(query=f"like:{product_id}", hits=hits, timings_ms=clock.done())

    # -- stages -----------------------------------------------------------------------------
    def _image_vector(
        self, image: Any, mode: str | None, clock: _Clock, result: SearchResult
    ) -> np.ndarray:
        img = decode_image(image, self.image_limits, draft=DRAFT)
        result.original = img
        clock.lap("decode")
        decision = self.policy.decide(img, mode)
        if decision.upscale and self.auto_skip and (mode or self.policy.settings.mode) == "auto":
            decision = replace(
                decision, upscale=False, reason=f"{decision.reason}; {self.auto_skip}"
            )
        result.decision = decision
        clock.lap("upscale_check")
        seen = img
        if decision.upscale:
            if self.upscaler is None:
                problem = self.upscaler_problem or "no upscaler configured"
                if (mode or self.policy.settings.mode) == "always":
                    raise UpscaleError(f"upscaling was requested but is unavailable: {problem}")
                result.notes.append(f"upscaling skipped: {problem}")
            else:
                seen = self.upscaler.upscale(img)
                result.upscaled = True
            clock.lap("upscale")
        result.embedded = seen
        vec = self.embedder.embed_images([seen])[0]
        clock.lap("embed")
        return vec

    def _text_vector(self, text: str) -> np.ndarray:
        key = " ".join(text.lower().split())
        with self._cache_lock:
            if key in self._text_cache:
                self._text_cache.move_to_end(key)
                return self._text_cache[key]
        vec = self.embedder.embed_texts([text])[0]
        with self._cache_lock:
            self._text_cache[key] = vec
            while len(self._text_cache) > self._text_cache_size:
                self._text_cache.popitem(last=False)
        return vec

    def _search_vector(
        self, view: View, vec: np.ndarray, k: int, filters: Filters | None, clock: _Clock
    ) -> list[Hit]:
        active = filters is not None and filters.active
        if active and view.index.pushes_filters:
            found = view.index.search(vec, k, filters=filters)
        else:
            allowed = self.filter_mask(filters, view.catalog) if active else None
            found = view.index.search(vec, k, allowed=allowed)
        clock.lap("search")
        hits = _hits(view.catalog, found.labels, found.scores)
        clock.lap("assemble")
        return hits

    def filter_mask(self, filters: Filters, catalog: Catalog | None = None) -> np.ndarray:
        """Boolean mask over catalog rows that pass ``filters`` (vectorised)."""
        catalog = catalog or self.catalog
        df = catalog.df
        mask = np.ones(len(df), dtype=bool)
        if filters.category:
            if "category" not in df:
                raise ConfigError("this catalog has no category column to filter on")
            wanted = filters.category.strip().casefold()
            mask &= df["category"].str.strip().str.casefold().to_numpy() == wanted
        if filters.min_price is not None or filters.max_price is not None:
            prices = catalog.prices
            with np.errstate(invalid="ignore"):
                if filters.min_price is not None:
                    mask &= prices >= filters.min_price
                if filters.max_price is not None:
                    mask &= prices <= filters.max_price
        return mask


def _hits(catalog: Catalog, labels: np.ndarray, scores: np.ndarray) -> list[Hit]:
    if len(labels) == 0:
        return []
    rows = catalog.df.iloc[labels]  # label == catalog row: one vectorised lookup
    records = rows.to_dict("records")
    root = catalog.root
    return [
        Hit(
            rank=i + 1,
            score=float(s),
            row=int(lbl),
            id=str(rec["id"]),
            title=str(rec["title"]),
            image=root / str(rec["image"]),
            fields={k: str(v) for k, v in rec.items()},
        )
        for i, (lbl, s, rec) in enumerate(zip(labels, scores, records, strict=True))
    ]
