"""Index building: catalog photos -> embeddings -> an index folder.

On the CPU the build runs in *lanes*, one per torch thread: each lane decodes a batch of
photos, preprocesses it and embeds it with the model on a single thread, while the other
lanes do the same with other batches. Nothing waits and nothing competes: a model spread
over all cores would share them with the decoding threads, and its threads stall whenever
one of them is preempted (78% of the model's own throughput on 2 cores, against 90-91% in
lanes: bench_indexing.py). On a GPU, or with one torch thread, photos are decoded on a
thread pool while the model embeds the previous batch.

A photo that is missing or undecodable is skipped, listed in the manifest, counted in the
report, and never stops the build; nor do the catalog rows that loading left out (listed too).
Only more than ``max_bad_fraction`` of the catalog's rows bad (left out, or skipped for their
photo) refuses the build, before anything is written.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from searchcore import __version__
from searchcore.catalog import (
    MAX_BAD_FRACTION,
    Catalog,
    Problem,
    check_bad_fraction,
    check_fraction,
)
from searchcore.config import IndexSettings
from searchcore.console import progress_bar
from searchcore.embed import BatchEmbedder, Embedder
from searchcore.errors import ConfigError, ImageError, SearchError
from searchcore.fsutil import folder_lock, relative
from searchcore.images import DRAFT, decode_image
from searchcore.stores.base import is_milvus
from searchcore.stores.changelog import new_log_name
from searchcore.stores.hnsw import HnswIndex, commit_folder
from searchcore.stores.lexical import LexicalIndex
from searchcore.stores.manifest import (
    CatalogRecord,
    ModelRecord,
    UpscalerRecord,
    current_manifest,
)

READ_AHEAD_BYTES = 256 * 2**20  # prepared photos waiting for the model, at most (about)


@dataclass
class BuildReport:
    folder: Path
    indexed: int
    skipped: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    # catalog rows left out for their problems: {"row" (as in the file), "id", "reason"}
    left_out: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0  # the catalog file's rows

    @property
    def images_per_s(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (
            f"indexed {self.indexed} products into {self.folder} in {self.seconds:.1f} s "
            f"({self.images_per_s:.1f} images/s)"
        )
        if self.skipped:
            text += f"; skipped {len(self.skipped)} with unusable images:"
            text += "".join(f"\n  {s['id']}: {s['reason']}" for s in self.skipped[:20])
            if len(self.skipped) > 20:
                text += f"\n  ... and {len(self.skipped) - 20} more (listed in the manifest)"
        if self.left_out:
            text += (
                f"\nleft out {len(self.left_out)} of {self.rows} catalog rows with problems "
                "(--strict refuses the catalog instead):"
            )
            for r in self.left_out[:20]:
                who = f" (id {r['id']})" if r["id"] else ""
                text += f"\n  row {r['row']}{who}: {r['reason']}"
            if len(self.left_out) > 20:
                more = len(self.left_out) - 20
                text += f"\n  ... and {more} more (`searchcore catalog validate` lists them all)"
        return text


def rebuild_command(catalog: Catalog, model: str, out: str | Path) -> str:
    maps = "".join(f" --map {c}={s}" for c, s in catalog.column_map)
    return f"searchcore index build --catalog {catalog.source}{maps} --model {model} --out {out}"


def catalog_record(catalog: Catalog, folder: Path | None, **fields: Any) -> CatalogRecord:
    """What an index records of ``catalog``: its file (absolute, and relative to the index
    ``folder`` where there is one), hash, rows and column mapping; ``fields`` add or replace."""
    src = Path(catalog.source).resolve() if catalog.source else None
    rel = None
    if src is not None and folder is not None:
        try:
            rel = str(Path(relative(src, folder)))
        except ValueError:
            rel = None
    record = CatalogRecord(
        sha256=catalog.sha256,
        rows=len(catalog),
        path=str(src) if src else None,
        relative_path=rel,
        column_map=tuple(catalog.column_map),
    )
    return replace(record, **fields)


def upscaler_record(upscaler: str | Path, folder: Path | None) -> UpscalerRecord:
    """What an index records of the trained upscaler folder its queries are served with: name,
    weights' sha256, where it is (absolute, and relative to the index ``folder`` where there is
    one). The folder is checked now, so a broken one refuses the build, not a shopper's photo."""
    from searchcore.upscale import load_upscaler_folder

    spec, _ = load_upscaler_folder(upscaler)
    src = Path(upscaler).resolve()
    rel = None
    if folder is not None:
        try:
            rel = relative(src, folder)
        except ValueError:  # another drive
            rel = None
    return UpscalerRecord(spec.name, str(spec.sha256), str(src), rel)


def build_index(
    catalog: Catalog,
    embedder: Embedder,
    out: str | Path,
    *,
    settings: IndexSettings | None = None,
    batch_size: int = 32,
    workers: int = 2,
    lanes: int | None = None,
    progress: bool = False,
    shard: tuple[int, int] = (0, 1),
    collection: str = "products",
    token: str | None = None,
    max_bad_fraction: float | None = MAX_BAD_FRACTION,
    upscaler: str | Path | None = None,
) -> BuildReport:
    """Embed the catalog's photos into an index folder, or into a Milvus collection.

    ``lanes``: how many batches are embedded at once, each on one torch thread (default: one
    per torch thread for a CPU model; see the module docstring). ``workers``: decoding
    threads feeding a single lane. ``out`` is a folder (hnswlib) or a Milvus URI / Milvus Lite
    ``*.db`` file. With Milvus,
    ``shard=(i, n)`` embeds only rows ``r`` with ``r % n == i``, so ``n`` jobs can fill one
    collection in parallel, and a rerun skips products already stored with the same model.
    More than ``max_bad_fraction`` of the catalog file's rows bad (left out by loading, or
    without a usable photo) raises CatalogError before the index is written (None: no limit).
    ``upscaler``: a trained upscaler folder the index records (:func:`upscaler_record`):
    searches of the index upscale with it unless told otherwise (``tune`` records the one it
    trained for the model).
    """
    settings = settings or IndexSettings()
    check_fraction(max_bad_fraction)
    up = upscaler_record(upscaler, None if is_milvus(out) else Path(out)) if upscaler else None
    i, n = shard
    if not (n >= 1 and 0 <= i < n):
        raise ConfigError(f"shard must be i/n with 0 <= i < n, not {i}/{n}")
    if is_milvus(out):
        return _build_milvus(
            catalog,
            embedder,
            str(out),
            settings=settings,
            batch_size=batch_size,
            workers=workers,
            lanes=lanes,
            progress=progress,
            shard=shard,
            collection=collection,
            token=token,
            max_bad_fraction=max_bad_fraction,
            upscaler=up,
        )
    if n != 1:
        raise ConfigError(
            "sharded builds fill one shared Milvus collection: give --out a Milvus "
            "URI (http://host:19530) or a Milvus Lite file (index.db)"
        )
    out = Path(out)
    started = time.perf_counter()
    index = HnswIndex(
        embedder.dim,
        space=settings.space,
        m=settings.m,
        ef_construction=settings.ef_construction,
        ef_search=settings.ef_search,
        capacity=max(len(catalog), 16),
    )
    skipped = _embed_rows(
        catalog,
        embedder,
        list(range(len(catalog))),
        index.add,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
        lanes=lanes,
    )
    if len(index) == 0:
        raise SearchError(f"no product of {catalog.source} has a usable image; nothing to index")
    _check_bad(catalog, skipped, max_bad_fraction)
    seconds = time.perf_counter() - started
    meta = _meta(catalog, embedder, out, skipped, seconds, up)
    lexical = LexicalIndex.build(catalog)  # the words of every row, for text search
    meta["log"] = new_log_name()  # live changes to this snapshot go there (searchcore.live)
    with folder_lock(out):  # the same lock as live writers: a build is one more commit
        meta["lexical"] = lexical.save(out)
        commit_folder(out, index, meta, current_manifest(out))
    return _report(out, len(index), skipped, seconds, catalog)


def _report(
    folder: Path, indexed: int, skipped: list[dict[str, Any]], seconds: float, catalog: Catalog
) -> BuildReport:
    rows = catalog.report.rows if catalog.report is not None else len(catalog)
    left_out = [p.record() for p in catalog.left_out]
    return BuildReport(folder, indexed, skipped, seconds, left_out, rows)


def _check_bad(catalog: Catalog, skipped: list[dict[str, Any]], limit: float | None) -> None:
    """Refuse the build when too many of the catalog's rows are bad (see load_catalog)."""
    if catalog.report is None:
        return
    photos = [Problem("image", s["reason"], None, s["id"]) for s in skipped]
    check_bad_fraction(catalog.report, [*catalog.left_out, *photos], limit)


def _meta(
    catalog: Catalog,
    embedder: Embedder,
    out: Path | None,
    skipped: list[dict[str, Any]],
    seconds: float,
    upscaler: UpscalerRecord | None,
) -> dict[str, Any]:
    model = ModelRecord(
        embedder.spec, embedder.fingerprint, embedder.dim, getattr(embedder, "runtime", "torch")
    )
    # the catalog as loaded: strictly or not, and the rows left out (the same on every load)
    record = catalog_record(catalog, out, strict=catalog.strict, left_out=catalog.left_out_meta())
    meta = {
        "model": model.to_dict(),
        "catalog": record.to_dict(),
        "skipped": skipped,
        "build": {"seconds": round(seconds, 3), "searchcore_version": __version__},
    }
    if upscaler is not None:
        meta["upscaler"] = upscaler.to_dict()
    return meta


def _build_milvus(
    catalog: Catalog,
    embedder: Embedder,
    uri: str,
    *,
    settings: IndexSettings,
    batch_size: int,
    workers: int,
    lanes: int | None,
    progress: bool,
    shard: tuple[int, int],
    collection: str,
    token: str | None,
    max_bad_fraction: float | None,
    upscaler: UpscalerRecord | None,
) -> BuildReport:
    from searchcore.stores.milvus import MilvusStore, stamp

    started = time.perf_counter()
    params = {"M": settings.m, "efConstruction": settings.ef_construction}
    store = MilvusStore.create(
        uri,
        collection,
        embedder.dim,
        token=token,
        index_params=params,
        ef_search=settings.ef_search,
    )
    i, n = shard
    ids = catalog.df["id"].tolist()
    records = catalog.df.to_dict("records")
    paths = catalog.image_paths()
    # Upserts by id, of exactly the products whose row, fields, photo or model changed: a
    # rerun after a price edit re-embeds that product only (and never leaves a stale price).
    stored = store.stamps()
    want = {r: stamp(embedder.fingerprint, records[r], paths[r]) for r in range(len(catalog))}
    rows = [r for r in range(len(catalog)) if r % n == i and stored.get(ids[r]) != (r, want[r])]
    if n == 1:  # a full build also drops products that left the catalog: reruns converge
        stale = set(stored) - set(ids)
        store.remove_ids(sorted(stale))

    def add(vectors: Any, labels: Any) -> None:
        rows = [int(x) for x in labels]
        store.add(vectors, rows, [records[r] for r in rows], model=[want[r] for r in rows])

    skipped = _embed_rows(
        catalog,
        embedder,
        rows,
        add,
        batch_size=batch_size,
        workers=workers,
        progress=progress,
        lanes=lanes,
    )
    _check_bad(catalog, skipped, max_bad_fraction)  # (a shard's job sees its own photos)
    seconds = time.perf_counter() - started
    meta = _meta(catalog, embedder, None, skipped[:1000], seconds, upscaler)
    meta["shards"] = n
    store.save(meta)
    return _report(Path(uri), len(rows) - len(skipped), skipped, seconds, catalog)


def _embed_rows(
    catalog: Catalog,
    embedder: Embedder,
    rows: list[int],
    add: Any,
    *,
    batch_size: int,
    workers: int,
    progress: bool,
    lanes: int | None = None,
) -> list[dict[str, Any]]:
    skipped: list[dict[str, Any]] = []
    ids = catalog.df["id"].tolist()
    bar = progress_bar(len(rows), "indexing", "img", progress)
    lanes = _lanes(embedder) if lanes is None else max(1, lanes)
    if lanes > 1:
        embedded = _in_lanes(catalog, embedder, rows, batch_size, lanes)
    else:
        embedded = _overlapped(catalog, embedder, rows, batch_size, workers)
    for labels, vectors, failures in embedded:  # in row order, whichever lane finished first
        for row, reason in failures:
            skipped.append({"row": row, "id": ids[row], "reason": reason})
        if labels:
            add(vectors, np.asarray(labels))
        bar.update(len(labels) + len(failures))
    bar.close()
    return skipped


def runs_in_lanes(embedder: Embedder) -> bool:
    """A CPU model that preprocesses in batches: worth more than one lane."""
    return isinstance(embedder, BatchEmbedder) and embedder.device == "cpu"


def _lanes(embedder: Any) -> int:
    """One lane per torch thread for a model that runs in lanes; else one."""
    if not runs_in_lanes(embedder):
        return 1
    import torch

    return torch.get_num_threads()


Embedded = tuple[list[int], Any, list[tuple[int, str]]]  # rows, their vectors, failures


def _in_lanes(
    catalog: Catalog, embedder: Any, wanted: list[int], batch_size: int, lanes: int
) -> Iterator[Embedded]:
    """``lanes`` threads, each decoding, preprocessing and embedding whole batches on one torch
    thread. torch's thread count is 1 for the build's duration, and restored after."""
    import torch

    paths = catalog.image_paths()
    prepare, collate, embed = _pipeline(embedder)

    def lane(rows: list[int]) -> Embedded:
        items, kept, failures = [], [], []
        for row in rows:
            item, error = _prepared(prepare, paths[row])
            if error is None:
                items.append(item)
                kept.append(row)
            else:
                failures.append((row, error))
        vectors = embed(collate(items)) if items else None
        return kept, vectors, failures

    chunks = [wanted[i : i + batch_size] for i in range(0, len(wanted), batch_size)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # lane threads start after this, with one intra-op thread each
    try:
        with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="index-lane") as pool:
            pending: deque[Future] = deque()
            for chunk in chunks:  # a bounded window of batches in flight, yielded in order
                pending.append(pool.submit(lane, chunk))
                if len(pending) > 2 * lanes:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
    finally:
        torch.set_num_threads(threads)


def _overlapped(
    catalog: Catalog, embedder: Any, wanted: list[int], batch_size: int, workers: int
) -> Iterator[Embedded]:
    embed = _pipeline(embedder)[2]
    for rows, pixels, failures in _batches(catalog, embedder, wanted, batch_size, workers):
        yield rows, (embed(pixels) if rows else None), failures


def _batches(
    catalog: Catalog, embedder: Any, wanted: list[int], batch_size: int, workers: int
) -> Iterator[tuple[list[int], Any, list[tuple[int, str]]]]:
    """Yield (rows, model input batch, failures); decoding runs ahead on a pool.

    The pool threads decode and ``prepare`` each photo (no torch op); this thread
    ``collate``s each batch.
    """
    paths = catalog.image_paths()
    prepare, collate, _ = _pipeline(embedder)

    # Bounded read-ahead, in photos and in bytes: a prepared 20:1 banner can hold 50x the
    # pixels of a square photo, so the largest one seen sets how many may wait (one per
    # worker until the first is seen).
    ahead = batch_size * 3
    largest = [0]
    lock = threading.Lock()

    def load(row: int) -> tuple[int, Any, str | None]:
        item, error = _prepared(prepare, paths[row])
        if error is None:
            with lock:
                largest[0] = max(largest[0], getattr(item, "nbytes", 1))
        return row, item, error

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[Future] = deque()
        next_row = 0
        rows: list[int] = []
        items: list[Any] = []
        failures: list[tuple[int, str]] = []
        while pending or next_row < len(wanted):
            room = max(
                workers + 1, min(ahead, READ_AHEAD_BYTES // (largest[0] or READ_AHEAD_BYTES))
            )
            while next_row < len(wanted) and len(pending) < room:
                pending.append(pool.submit(load, wanted[next_row]))
                next_row += 1
            row, item, error = pending.popleft().result()
            if error is not None:
                failures.append((row, error))
            else:
                rows.append(row)
                items.append(item)
            if len(rows) == batch_size:
                yield rows, collate(items), failures
                rows, items, failures = [], [], []
        if rows or failures:
            yield rows, (collate(items) if items else None), failures


def _prepared(prepare: Any, path: Path) -> tuple[Any, str | None]:
    """(prepared photo, None), or (None, why) for a photo that is missing or undecodable."""
    try:
        return prepare(decode_image(path, draft=DRAFT)), None
    except ImageError as exc:
        return None, str(exc)


def _pipeline(embedder: Embedder) -> tuple[Any, Any, Any]:
    """``(prepare, collate, embed)``: a :class:`BatchEmbedder`'s per-photo ``prepare`` (for any
    thread), batched ``collate`` and ``embed_pixels``; any other embedder (fakes, plug-ins)
    gets its decoded photos in a list and embeds them with ``embed_images``."""
    if isinstance(embedder, BatchEmbedder):
        return embedder.prepare, embedder.collate, embedder.embed_pixels
    return (lambda img: img), list, embedder.embed_images
