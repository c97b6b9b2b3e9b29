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
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from searchcore.catalog import Catalog
from searchcore.config import UPSCALE_MODES, UpscaleSettings
from searchcore.embed import Embedder
from searchcore.embed.heads import AttributeHeads
from searchcore.errors import ConfigError, SearchError, UpscaleError
from searchcore.explain import confident, reasons
from searchcore.facets import check_filters, filter_mask
from searchcore.fusion import FUSIONS, MODES, fuse
from searchcore.images import DEFAULT_LIMITS, DRAFT, ImageLimits, crop_photo, decode_image
from searchcore.stores.base import Filters, Neighbours, VectorStore
from searchcore.stores.lexical import LexicalIndex, LexicalSide
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
    matched: tuple[str, ...] = ("vector",)  # which side of the search found it
    lexical: float | None = None  # its BM25 score, where the words found it
    why: tuple[str, ...] = ()  # what it shares with the query (searchcore.explain)

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
            "matched": list(self.matched),
            **({"lexical_score": round(self.lexical, 4)} if self.lexical is not None else {}),
            "why": list(self.why),
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
    # the photo's attributes as the model's heads read them: column -> [(value, p), ...]
    predicted: dict[str, list[tuple[str, float]]] | None = None
    crop: tuple[float, float, float, float] | None = None  # the part of the photo searched
    upscaler: str | None = None  # the upscaler's name, when the photo was upscaled

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
            if self.upscaler:
                out["upscale"]["upscaler"] = self.upscaler
        if self.notes:
            out["notes"] = list(self.notes)
        if self.predicted is not None:
            out["predicted"] = {c: [[v, p] for v, p in o] for c, o in self.predicted.items()}
        if self.crop is not None:
            out["crop"] = list(self.crop)
        return out


@dataclass(frozen=True)
class View:
    """What one query reads: a catalog, its vector index and its lexical index, swapped
    together (label == catalog row in all three).

    ``version`` names the committed state it came from (the index folder's manifest), so a
    follower can tell whether a newer one exists. A view made without a lexical index gets
    one built from its catalog (an index folder from before text search had one).
    """

    catalog: Catalog
    index: VectorStore
    version: str = ""
    lexical: LexicalSide | None = None
    # Rows a text query may return: on sale, and with a vector in the index (a product whose
    # photo could not be read is in the catalog but not in the index).
    searchable: np.ndarray | None = field(default=None, compare=False, repr=False)
    # Where its folder's change log was replayed to: (byte offset, records).
    log: tuple[int, int] = field(default=(0, 0), compare=False)

    def complete(self) -> View:
        """This view with its lexical side (the store's own, else one built from the catalog
        where it has none that fits) and its searchable rows (kept where it has them)."""
        n = len(self.catalog)
        lexical = self.lexical or self.index.lexical()
        if lexical is None or (isinstance(lexical, LexicalIndex) and lexical.rows != n):
            lexical = LexicalIndex.build(self.catalog)
        if self.searchable is not None and len(self.searchable) == n:
            return replace(self, lexical=lexical)
        labels = np.asarray(self.index.live_labels(), dtype=np.int64)
        indexed = np.zeros(n, dtype=bool)
        indexed[labels[(labels >= 0) & (labels < n)]] = True
        return replace(self, lexical=lexical, searchable=indexed & self.catalog.live)


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
        auto_skip: str | Callable[[int], str | None] | None = None,
        text_cache_size: int = 512,
        version: str = "",
        lexical: LexicalSide | None = None,
        fusion: str = "weighted",
        heads: AttributeHeads | None = None,
        heads_problem: str | None = None,
    ) -> None:
        if fusion not in FUSIONS:
            raise ConfigError(f"fusion must be one of {', '.join(FUSIONS)}, not {fusion!r}")
        self.fusion = fusion
        self.embedder = embedder
        self.swap(View(catalog, index, version, lexical))
        self.upscaler = upscaler
        self.policy = UpscalePolicy(upscale or UpscaleSettings())
        self.image_limits = image_limits
        self.upscaler_problem = upscaler_problem
        # Set when evaluation measured whether this upscaler helps this model: `auto` skips it
        # where it does not (a reason, or one per photo width) and says so (`always` runs it).
        self.auto_skip = auto_skip
        # "we think this is...": the model's attribute heads, read off each photo's embedding
        self.heads = heads
        self.heads_problem = heads_problem
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

    @property
    def lexical(self) -> LexicalSide:
        return self._view.lexical  # type: ignore[return-value]  # complete() filled it

    def swap(self, view: View) -> None:
        """Serve another committed state from now on, atomically: a query reads one view from
        start to end, so it never mixes one state's index with another's catalog."""
        if view.index.dim != self.embedder.dim:
            raise SearchError(
                f"index dimension {view.index.dim} does not match the model's {self.embedder.dim}"
            )
        self._view = view.complete()

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
        mode: str = "hybrid",
        crop: tuple[float, float, float, float] | None = None,
    ) -> SearchResult:
        """Image, text, or both (a weighted sum of the two normalised embeddings).

        Words alone are searched by ``mode``: ``hybrid`` fuses the vector ranking with the
        lexical (BM25) one, ``vector`` and ``lexical`` use one side. A photo query is searched by
        its vector (with its words blended in), whatever the mode. ``crop`` searches only that
        part of the photo (``x0, y0, x1, y1`` in fractions of it).
        """
        if mode not in MODES:
            raise ConfigError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
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
        check_filters(filters, view.catalog)
        result = SearchResult(query=query_label or text or str(image), hits=[], timings_ms={})
        if image is None and text is not None and mode != "vector":
            result.hits = self._search_words(view, text, k, filters, mode, clock, result)
            result.timings_ms = clock.done()
            return result
        vectors: list[tuple[float, np.ndarray]] = []
        likely: dict[str, str] = {}
        if image is not None:
            vec = self._image_vector(image, upscale, clock, result, crop)
            vectors.append((1.0 - text_weight if text else 1.0, vec))
            if self.heads is not None:
                result.predicted = self.heads.predict(vec)
                likely = confident(result.predicted)
                clock.lap("predict")
            elif self.heads_problem:
                result.notes.append(f"no attribute predictions: {self.heads_problem}")
        if text is not None:
            vectors.append((text_weight if image is not None else 1.0, self._text_vector(text)))
            clock.lap("embed_text")
        query = np.sum([w * v for w, v in vectors], axis=0)
        norm = float(np.linalg.norm(query))
        if norm < 1e-8:  # photo and words cancel out: fall back to the photo alone
            query, norm = vectors[0][1], 1.0
        hits = self._search_vector(view, query / norm, k, filters, clock)
        photo = image is not None
        result.hits = [
            replace(
                h, why=tuple(reasons(h.fields, h.matched, h.score, photo=photo, predicted=likely))
            )
            for h in hits
        ]
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
        source = view.catalog.df.iloc[row]
        own = {c: str(source[c]) for c in view.catalog.filterable if str(source[c]).strip()}
        hits = [
            replace(
                h,
                rank=i + 1,
                why=tuple(reasons(h.fields, h.matched, h.score, photo=True, source=own)),
            )
            for i, h in enumerate(hits)
        ]
        return SearchResult(query=f"like:{product_id}", hits=hits, timings_ms=clock.done())

    # -- stages -----------------------------------------------------------------------------
    def _image_vector(
        self,
        image: Any,
        mode: str | None,
        clock: _Clock,
        result: SearchResult,
        crop: tuple[float, float, float, float] | None = None,
    ) -> np.ndarray:
        img = decode_image(image, self.image_limits, draft=DRAFT if crop is None else None)
        result.original = img
        if crop is not None:
            img = crop_photo(img, crop)
            result.crop = crop
        clock.lap("decode")
        decision = self.policy.decide(img, mode)
        if decision.upscale and self.auto_skip and (mode or self.policy.settings.mode) == "auto":
            skip = self.auto_skip(img.width) if callable(self.auto_skip) else self.auto_skip
            if skip:
                decision = replace(decision, upscale=False, reason=f"{decision.reason}; {skip}")
            elif why := getattr(self.auto_skip, "why", None):  # what was measured, in words
                decision = replace(decision, reason=f"{decision.reason}; {why(img.width)}")
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
                result.upscaled, result.upscaler = True, self.upscaler.name
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

    def _search_words(
        self,
        view: View,
        text: str,
        k: int,
        filters: Filters | None,
        mode: str,
        clock: _Clock,
        result: SearchResult,
    ) -> list[Hit]:
        """A text query through the lexical index, fused with the vector side (``hybrid``).

        Both sides see the same filters and look ``depth`` products deep, so ``k`` results come
        back whenever ``k`` products pass the filters. Every hit's ``score`` is its cosine
        similarity to the words' embedding (what the "no good match" gate is calibrated on).
        """
        depth = max(50, 2 * k)
        allowed = view.searchable
        if filters is not None and filters.active:
            allowed = allowed & filter_mask(filters, view.catalog)
        lex = view.lexical.search(text, depth, allowed, filters)  # type: ignore[union-attr]
        clock.lap("lexical")
        if not lex.words:
            result.notes.append(
                "none of these words can be looked up (only common words or symbols)"
                + ("; the model's reading of them is used" if mode == "hybrid" else "")
            )
            if mode == "lexical":
                return []
        query = self._text_vector(text)
        clock.lap("embed_text")
        vec_rows: list[int] = []
        cosine: dict[int, float] = {}
        if mode == "hybrid":
            found = self._vector_neighbours(view, query, depth, filters)
            vec_rows = [int(r) for r in found.labels]
            cosine = {int(r): float(s) for r, s in zip(found.labels, found.scores, strict=True)}
            clock.lap("search")
        bm25 = {int(r): float(s) for r, s in zip(lex.rows, lex.scores, strict=True)}
        fused = fuse(
            vec_rows, list(bm25), k, method=self.fusion, cosine=cosine, bm25=bm25, best=lex.best
        )
        missing = [f.row for f in fused if f.row not in cosine]
        if missing:  # products only the words found: their similarity, for the score shown
            cosine.update(_similarities(view.index, missing, query))
            fused = [f for f in fused if f.row in cosine]  # left the index since the view
        rows = np.array([f.row for f in fused], dtype=np.int64)
        hits = _hits(view.catalog, rows, np.array([cosine[f.row] for f in fused]))
        clock.lap("assemble")
        return [
            replace(
                h,
                matched=f.matched,
                lexical=bm25.get(f.row),
                why=tuple(
                    reasons(h.fields, f.matched, h.score, photo=False, words=lex.words, query=text)
                ),
            )
            for h, f in zip(hits, fused, strict=True)
        ]

    def _vector_neighbours(
        self, view: View, vec: np.ndarray, k: int, filters: Filters | None
    ) -> Neighbours:
        active = filters is not None and filters.active
        if active and view.index.pushes_filters:
            return view.index.search(vec, k, filters=filters)
        allowed = filter_mask(filters, view.catalog) if active else None  # type: ignore[arg-type]
        found = view.index.search(vec, k, allowed=allowed)
        ok = view.searchable
        labels = np.asarray(found.labels, dtype=np.int64)
        if ok is not None and len(labels):
            inside = (labels >= 0) & (labels < len(ok))
            if not (inside.all() and ok[labels].all()):
                # A live commit changed the shared index after this view was taken: ask again
                # within this view's own rows (rare: only queries that overlap a commit).
                found = view.index.search(vec, k, allowed=ok if allowed is None else allowed & ok)
        return found

    def _search_vector(
        self, view: View, vec: np.ndarray, k: int, filters: Filters | None, clock: _Clock
    ) -> list[Hit]:
        found = self._vector_neighbours(view, vec, k, filters)
        clock.lap("search")
        hits = _hits(view.catalog, found.labels, found.scores)
        clock.lap("assemble")
        return hits


def _similarities(index: VectorStore, rows: list[int], query: np.ndarray) -> dict[int, float]:
    """Cosine similarity of each row's stored vector to ``query``; rows without one are left
    out (a product removed from a shared store after this view was taken)."""
    try:
        return dict(zip(rows, (index.get_vectors(rows) @ query).tolist(), strict=True))
    except (RuntimeError, SearchError):
        out = {}
        for row in rows:
            try:
                out[row] = float(index.get_vectors([row])[0] @ query)
            except (RuntimeError, SearchError):
                continue
        return out


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
