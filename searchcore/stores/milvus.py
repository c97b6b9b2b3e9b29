"""Milvus as the vector store, for catalogs (or replica counts) beyond one process.

One collection per index: the product id is the primary key, beside the vector the catalog row
(the label), and the filterable attributes as scalar fields (``category``, ``price``,
``colour``; keys are case-folded so filters match the hnswlib backend's). Filters are pushed
down as Milvus boolean expressions. The index's manifest (model spec and fingerprint, catalog
path and hash, parameters) lives in the collection's properties, so an index is just a URI.

Consistency: the collection is created with ``Strong`` consistency, so a search sees every
write acknowledged before it (what a shop editing its catalog expects); replicas that can
tolerate a little staleness can use ``Bounded`` (``--consistency``), which avoids waiting on
the latest timestamp.

Text: each product's words (title and text columns, folded, stemmed and without stop words, as
:mod:`.lexical` analyses them) are stored in a ``text`` field with Milvus's own BM25 function
(Milvus 2.5+; Milvus Lite's analyser only splits words, so the analysis is done here, the same
for both), so the lexical side of hybrid search runs in Milvus, filtered by the same expression
as the vectors. Collections made before this field existed
keep working: their lexical side is built in memory from the catalog (:class:`.LexicalIndex`).

Index types: ``HNSW`` by default (params ``M``, ``efConstruction``; query ``ef``); for
collections beyond memory, ``IVF_FLAT``/``IVF_PQ`` (``nlist``; query ``nprobe``) or
``DISKANN`` on Milvus standalone/distributed (Milvus Lite supports FLAT, IVF_FLAT and HNSW).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from searchcore.errors import ConfigError, IndexMismatchError, SearchError, first_line
from searchcore.facets import NOT_ATTRIBUTES, normalise
from searchcore.stores.base import Filters, Neighbours
from searchcore.stores.lexical import LexicalHits, record_text, tokenize
from searchcore.stores.manifest import IndexManifest

PROPERTY = "searchcore.manifest"
FORMAT_VERSION = 1
MISSING_PRICE = -1.0
# Milvus's filtered HNSW walk may find fewer than k of a selective filter's matches; with at
# most this many matches the answer is computed exactly from the matching vectors instead.
EXACT_MAX = 4096
MAX_STR = 512
MAX_ATTRIBUTE = 128  # characters of an attribute value stored for filters
MAX_TEXT = 8192  # characters of a product's words kept for Milvus's full-text (BM25) search


def connect(uri: str, token: str | None = None) -> Any:
    """A ``MilvusClient`` for a server URI or a Milvus Lite ``*.db`` file."""
    try:
        from pymilvus import MilvusClient
    except ImportError:  # pragma: no cover - pymilvus is a dependency
        raise ConfigError("Milvus indexes need pymilvus (and milvus-lite for *.db files)") from None
    try:
        return MilvusClient(uri=uri, token=token or "")
    except Exception as exc:
        raise SearchError(f"cannot connect to Milvus at {uri}: {first_line(exc)}") from None


def _key(text: object) -> str:
    return str(text).strip().casefold()[:MAX_STR]


def _literal(text: str) -> str:
    """A Milvus string literal (JSON escaping is what Milvus's expression parser accepts)."""
    return json.dumps(text, ensure_ascii=False)


def filter_expression(filters: Filters | None, attrs: bool = True) -> str:
    """The Milvus boolean expression for ``filters`` ('' matches everything). ``attrs``: the
    collection has the ``attrs`` JSON field that attribute filters read."""
    if filters is None or not filters.active:
        return ""
    terms = []
    if filters.category:
        terms.append(f"category == {_literal(_key(filters.category))}")
    if filters.attributes and not attrs:
        raise ConfigError(
            "this Milvus collection was built before attribute filters: rebuild it "
            "(`searchcore index build --catalog FILE --out URI`) to filter on "
            f"{filters.attributes[0][0]!r}"
        )
    for column, values in filters.attributes:  # (Milvus Lite's parser has no JSON-path ``in``)
        field = f"attrs[{_literal(column)}]"
        either = " or ".join(f"{field} == {_literal(normalise(v)[:MAX_STR])}" for v in values)
        terms.append(f"({either})")
    if filters.min_price is not None or filters.max_price is not None:
        terms.append(f"price >= {max(0.0, float(filters.min_price or 0.0))!r}")  # unpriced: -1
        if filters.max_price is not None:
            terms.append(f"price <= {float(filters.max_price)!r}")
    return " and ".join(terms)


class MilvusStore:
    """The :class:`searchcore.stores.base.VectorStore` protocol on a Milvus collection."""

    pushes_filters = True

    def __init__(
        self,
        client: Any,
        collection: str,
        dim: int,
        *,
        ef_search: int = 128,
        metric: str = "COSINE",
        index_type: str = "HNSW",
        uri: str = "",
    ) -> None:
        self.client, self.collection, self.dim = client, collection, int(dim)
        self.ef_search, self.metric, self.index_type, self.uri = ef_search, metric, index_type, uri
        self._lock = threading.Lock()  # MilvusClient is shared; keep writes in order
        self.has_text = True  # a collection this class created has the BM25 text field
        self.has_attrs = True  # ... and the attribute filters' JSON field

    # -- lifecycle --------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        uri: str,
        collection: str,
        dim: int,
        *,
        token: str | None = None,
        index_type: str = "HNSW",
        index_params: dict[str, Any] | None = None,
        ef_search: int = 128,
        consistency: str = "Strong",
    ) -> MilvusStore:
        """Open the collection, creating it with the product schema if it does not exist."""
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        client = connect(uri, token)
        if client.has_collection(collection):
            store, _ = cls.open(uri, collection, token=token, client=client, require_manifest=False)
            if store.dim != dim:
                raise IndexMismatchError(
                    f"Milvus collection {collection!r} at {uri} has dimension {store.dim}, the "
                    f"model {dim}; use another --collection or drop it"
                )
            return store
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=MAX_STR)
        schema.add_field("row", DataType.INT64)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("category", DataType.VARCHAR, max_length=MAX_STR)
        schema.add_field("colour", DataType.VARCHAR, max_length=MAX_STR)
        schema.add_field("price", DataType.DOUBLE)
        schema.add_field("attrs", DataType.JSON)  # every facet column, as filters compare it
        schema.add_field("model", DataType.VARCHAR, max_length=64)
        schema.add_field(
            "text",
            DataType.VARCHAR,
            max_length=MAX_TEXT,
            enable_analyzer=True,  # the standard analyser: the words arrive analysed already
        )
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(
            Function(
                name="bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
        params = client.prepare_index_params()
        defaults = {"HNSW": {"M": 16, "efConstruction": 200}, "IVF_FLAT": {"nlist": 1024}}
        params.add_index(
            field_name="vector",
            index_type=index_type,
            metric_type="COSINE",
            params=index_params or defaults.get(index_type, {}),
        )
        params.add_index(
            field_name="sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25"
        )
        for scalar in ("row", "category", "price"):  # INVERTED: what Lite and servers both have
            params.add_index(field_name=scalar, index_type="INVERTED")
        try:
            client.create_collection(
                collection, schema=schema, index_params=params, consistency_level=consistency
            )
        except Exception as exc:
            raise SearchError(
                f"cannot create Milvus collection {collection!r}: {first_line(exc)}"
            ) from None
        return cls(client, collection, dim, ef_search=ef_search, index_type=index_type, uri=uri)

    @classmethod
    def open(
        cls,
        uri: str,
        collection: str,
        *,
        token: str | None = None,
        client: Any = None,
        require_manifest: bool = True,
        fix: str = "searchcore index build",
    ) -> tuple[MilvusStore, IndexManifest]:
        client = client or connect(uri, token)
        if not client.has_collection(collection):
            raise IndexMismatchError(
                f"no collection {collection!r} at {uri}; build it with `{fix}`"
            )
        info = client.describe_collection(collection)
        vector = next((f for f in info["fields"] if f["name"] == "vector"), None)
        names = {f["name"] for f in info["fields"]}
        if vector is None or not {"id", "row", "category", "price", "model"} <= names:
            raise IndexMismatchError(
                f"collection {collection!r} at {uri} is not a searchcore index"
            )
        manifest: dict[str, Any] = {}
        raw = (info.get("properties") or {}).get(PROPERTY)
        if raw:
            try:
                manifest = json.loads(raw)
            except ValueError:
                raise IndexMismatchError(
                    f"collection {collection!r} has an unreadable manifest; rebuild with `{fix}`"
                ) from None
        if require_manifest and manifest.get("format_version") != FORMAT_VERSION:
            raise IndexMismatchError(
                f"collection {collection!r} at {uri} has no complete build; run `{fix}`"
            )
        client.load_collection(collection)
        store = cls(
            client,
            collection,
            int(vector["params"]["dim"]),
            ef_search=int(manifest.get("ef_search", 128)),
            uri=uri,
        )
        store.has_text = "sparse" in names
        store.has_attrs = "attrs" in names
        return store, IndexManifest.from_dict(manifest)

    def save(self, meta: dict[str, Any]) -> IndexManifest:
        """Record the manifest in the collection's properties (after flushing the data)."""
        manifest = {
            "format_version": FORMAT_VERSION,
            "backend": "milvus",
            "dim": self.dim,
            "ef_search": self.ef_search,
            "index_type": self.index_type,
            "count": len(self),
            **meta,
        }
        text = json.dumps(manifest, sort_keys=True)
        with self._lock:
            self.client.flush(self.collection)
            self.client.alter_collection_properties(self.collection, properties={PROPERTY: text})
        return IndexManifest.from_dict(manifest)

    def drop(self) -> None:
        self.client.drop_collection(self.collection)

    # -- writes -----------------------------------------------------------------------------
    def add(
        self,
        vectors: np.ndarray,
        labels: Any,
        records: list[dict] | None = None,
        model: str | list[str] = "",
    ) -> None:
        """Upsert by product id: re-adding a product replaces it (idempotent rebuilds).
        ``model``: the stamp of each product (:func:`stamp`), or one for all."""
        vectors = np.asarray(vectors, dtype=np.float32)
        labels = [int(x) for x in np.asarray(labels).ravel()]
        if records is None or len(records) != len(labels):
            raise SearchError("a Milvus store needs the products' catalog records with the vectors")
        if vectors.ndim != 2 or vectors.shape != (len(labels), self.dim):
            raise SearchError(
                f"expected {len(labels)} vectors of dimension {self.dim}, got {vectors.shape}"
            )
        if not np.isfinite(vectors).all():
            raise SearchError("vectors contain NaN or infinity")
        rows = []
        models = [model] * len(labels) if isinstance(model, str) else list(model)
        for vec, label, rec, made in zip(vectors, labels, records, models, strict=True):
            price = _price(rec.get("price", ""))
            rows.append(
                {
                    "id": str(rec["id"])[:MAX_STR],
                    "row": label,
                    "vector": vec.tolist(),
                    "category": _key(rec.get("category", "")),
                    "colour": _key(rec.get("colour", "")),
                    "price": MISSING_PRICE if price is None else price,
                    "model": made[:64],
                    **({"text": _words(record_text(rec))} if self.has_text else {}),
                    **({"attrs": _attributes(rec)} if self.has_attrs else {}),
                }
            )
        with self._lock:
            self.client.upsert(self.collection, rows)

    def remove(self, labels: Any) -> None:
        labels = [int(x) for x in np.asarray(labels).ravel()]
        if labels:
            with self._lock:
                self.client.delete(self.collection, filter=f"row in {labels}")

    def remove_ids(self, ids: Iterable[str]) -> None:
        ids = list(ids)
        for i in range(0, len(ids), 1000):
            with self._lock:
                self.client.delete(self.collection, ids=ids[i : i + 1000])

    # -- reads ------------------------------------------------------------------------------
    def __len__(self) -> int:
        res = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def search(
        self,
        query: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        filters: Filters | None = None,
    ) -> Neighbours:
        if allowed is not None:
            raise SearchError("the Milvus store takes Filters, not a row mask")
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        if q.shape != (self.dim,):
            raise SearchError(f"expected a query of dimension {self.dim}, got {q.shape}")
        expr = filter_expression(filters, self.has_attrs)
        k = int(k)
        if k < 1:
            return _empty()
        ef = max(self.ef_search, k)
        if expr:
            # Milvus's filtered HNSW walk returns k results that can miss true neighbours
            # (recall@10 0.81-0.96 measured on category filters, bench_backends.py): answer
            # small filtered sets exactly, and widen the walk as the filter gets selective.
            matching = self._count(expr)
            if matching <= EXACT_MAX:
                return self._exact(q, expr, k) if matching else _empty()
            ef = min(32768, max(ef, int(ef * len(self) / matching)))
        res = self.client.search(
            self.collection,
            data=[q.tolist()],
            limit=min(k, 16384),
            filter=expr,
            output_fields=["row"],
            search_params={"params": {"ef": ef}},
        )[0]
        labels = np.array([h["entity"]["row"] for h in res], dtype=np.int64)
        scores = np.array([h["distance"] for h in res], dtype=np.float32)  # COSINE: similarity
        return Neighbours(labels, scores)

    def lexical(self) -> MilvusLexical | None:
        """The lexical side in Milvus (its BM25 function), or None for an older collection."""
        return MilvusLexical(self) if self.has_text else None

    def bm25(
        self, words: Sequence[str], k: int, filters: Filters | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows and BM25 scores of the products with any of ``words`` (analysed words, as
        :func:`searchcore.stores.lexical.tokenize` gives them)."""
        res = self.client.search(
            self.collection,
            data=[" ".join(words)[:MAX_TEXT]],
            anns_field="sparse",
            limit=min(int(k), 16384),
            filter=filter_expression(filters, self.has_attrs),
            output_fields=["row"],
            search_params={"metric_type": "BM25"},
        )[0]
        labels = np.array([h["entity"]["row"] for h in res], dtype=np.int64)
        scores = np.abs(np.array([h["distance"] for h in res], dtype=np.float32))
        return labels, scores

    def _count(self, expr: str) -> int:
        res = self.client.query(self.collection, filter=expr, output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def _exact(self, q: np.ndarray, expr: str, k: int) -> Neighbours:
        rows = self.client.query(
            self.collection, filter=expr, output_fields=["row", "vector"], limit=EXACT_MAX
        )
        labels = np.array([r["row"] for r in rows], dtype=np.int64)
        vecs = np.array([r["vector"] for r in rows], dtype=np.float32)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        sims = vecs @ (q / max(float(np.linalg.norm(q)), 1e-12))
        order = np.argsort(-sims, kind="stable")[:k]
        return Neighbours(labels[order], sims[order].astype(np.float32))

    def get_vectors(self, labels: Any) -> np.ndarray:
        labels = [int(x) for x in np.asarray(labels).ravel()]
        rows = self.client.query(
            self.collection, filter=f"row in {labels}", output_fields=["row", "vector"]
        )
        by_row = {r["row"]: r["vector"] for r in rows}
        missing = [x for x in labels if x not in by_row]
        if missing:
            raise SearchError(f"labels not in the Milvus collection: {missing[:5]}")
        return np.array([by_row[x] for x in labels], dtype=np.float32)

    def live_labels(self) -> np.ndarray:
        return np.sort(np.array([r["row"] for r in self._scan(["row"])], dtype=np.int64))

    def stamps(self) -> dict[str, tuple[int, str]]:
        """Product id -> (row, stamp) as stored: the stamp (``model`` field) names the model and
        the product's version (:func:`stamp`), so a rebuild upserts exactly what changed."""
        return {
            r["id"]: (int(r["row"]), str(r["model"])) for r in self._scan(["id", "row", "model"])
        }

    def _scan(self, fields: list[str], expr: str = "") -> list[dict]:
        it = self.client.query_iterator(
            self.collection, batch_size=4096, filter=expr, output_fields=fields
        )
        out: list[dict] = []
        try:
            while batch := it.next():
                out.extend(batch)
        finally:
            it.close()
        return out


class MilvusLexical:
    """The lexical side of text search answered by the collection's own BM25 index."""

    def __init__(self, store: MilvusStore) -> None:
        self.store = store
        self.key = f"milvus:{store.uri}:{store.collection}"

    def search(
        self,
        query: str,
        k: int,
        allowed: np.ndarray | None = None,
        filters: Filters | None = None,
    ) -> LexicalHits:
        words = tuple(tokenize([query[:2000]])[0])
        if not words or k < 1:
            return LexicalHits(np.zeros(0, dtype=np.int64), np.zeros(0, np.float32), words, 0.0)
        rows, scores = self.store.bm25(words, k, filters)
        if allowed is not None:  # rows a view may show (on sale, in its catalog)
            keep = (rows < len(allowed)) & allowed[np.minimum(rows, len(allowed) - 1)]
            rows, scores = rows[keep], scores[keep]
        return LexicalHits(rows, scores, words, 0.0)


def stamp(fingerprint: str, record: dict[str, Any], photo: Any) -> str:
    """What a stored product was made from: the model's weights, the catalog row's every field
    and its photo file (size and modification time, as make and rsync tell a changed file):
    the ``model`` field holds it, at most 64 characters."""
    try:
        st = os.stat(photo)
        seen = f"{st.st_size}:{st.st_mtime_ns}"
    except OSError:
        seen = "-"
    text = json.dumps(record, sort_keys=True, default=str) + "\0" + seen
    return f"{fingerprint[:40]}/{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def _words(text: str) -> str:
    """A product's words analysed by :mod:`.lexical` (folded, stemmed, stop words out), so that
    Milvus's standard analyser (all Milvus Lite has) only splits them: the same words, the same
    matches as the index folder's BM25."""
    return " ".join(tokenize([text])[0])[:MAX_TEXT]


def _attributes(record: dict[str, Any]) -> dict[str, str]:
    """A product's attribute values as filters compare them (short values only: a facet's
    values are words, not descriptions)."""
    return {
        str(k)[:MAX_STR]: normalise(v)
        for k, v in record.items()
        if k not in NOT_ATTRIBUTES and len(str(v)) <= MAX_ATTRIBUTE and str(v).strip()
    }


def _empty() -> Neighbours:
    return Neighbours(np.empty(0, np.int64), np.empty(0, np.float32))


def _price(text: object) -> float | None:
    try:
        value = float(str(text).replace(",", "").strip())
    except ValueError:
        return None
    return value if np.isfinite(value) and value >= 0 else None
