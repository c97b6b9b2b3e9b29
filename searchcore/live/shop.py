"""Live catalog changes: each committed by appending one record to the folder's change log.

:class:`LiveShop` adds, removes and updates products of an hnswlib index folder while queries
keep running. Writers in any process (the CLI, the app, a shop's scripts) take the folder's
exclusive lock (:func:`searchcore.fsutil.folder_lock`) for the whole read-modify-commit; inside
it, a writer first catches up with what other writers committed (the new records of the log,
or the whole state when another writer compacted). Each acknowledged change is committed
before the call returns:

1. a new photo is written under a generated name inside the shop's image folder
   (``images/live/<uuid>.<ext>``: temp file, fsync, rename) and its sha256 recorded;
2. one record (the catalog rows, vectors and removals of the change) is appended to the change
   log the manifest names and fsynced: **that record being whole is the commit**
   (:mod:`searchcore.stores.changelog`). It costs what the change holds, not what the shop
   holds;
3. the change is applied in memory (:mod:`searchcore.live.state`) and the engine swaps to it.

A process killed during step 2 leaves a torn last record, which readers ignore and the next
writer cuts off: the unacknowledged change is all or nothing. Every ``compact_every`` records
the writer that commits the last one compacts: it writes a full snapshot (catalog file, index
file, lexical index) and a manifest naming a new, empty log (temp files, fsync, rename: the
manifest's rename is that commit point), as every commit did before the log. Clean-up runs only
under the lock: it removes temp files, files that neither the current nor the previous manifest
names, and photos nothing names once they are older than :data:`PHOTO_GRACE_S`. Removed
products stay as tombstone rows (``_removed`` = ``1``) so that index label == catalog row holds;
later additions reuse their rows and index slots.
"""

from __future__ import annotations

import bisect
import contextlib
import io
import logging
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from searchcore.build import catalog_record
from searchcore.catalog import (
    IMAGE_SHA,
    MANAGED,
    MAX_FIELD,
    REMOVED,
    REQUIRED,
    Catalog,
)
from searchcore.config import Settings
from searchcore.engine import SearchEngine, View
from searchcore.errors import CatalogError, SearchError
from searchcore.fsutil import (
    atomic_write,
    file_sha256,
    folder_lock,
    relative,
    write_json_atomic,
)
from searchcore.images import decode_image
from searchcore.live.state import apply, finish, live_view, log_for, prepare, record
from searchcore.rowcheck import image_path_problem, parse_price
from searchcore.stores.changelog import ChangeLog, new_log_name
from searchcore.stores.hnsw import HnswIndex, commit_folder
from searchcore.stores.lexical import LexicalIndex, LiveLexical
from searchcore.stores.manifest import (
    MANIFEST,
    IndexManifest,
    manifest_files,
    prune_folder,
    read_manifest,
)
from searchcore.stores.segment import LiveIndex

logger = logging.getLogger(__name__)

LIVE_DIR = Path("images") / "live"
FORMATS = {
    "JPEG": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
}
PHOTO_GRACE_S = 600.0  # an unreferenced photo may still be shown by a reader of an older state
MAX_FIELD_NAME = 100


COMPACT_EVERY = 5000  # log records before a writer writes a full snapshot (10k replay in < 1 s)


class LiveShop:
    """Serialises writers across threads and processes; readers go on meanwhile.

    ``compact_every``: records in the log before the writer of the last one compacts (1: every
    change writes a full snapshot, as before the log; 0: only :meth:`compact` does).
    """

    def __init__(
        self,
        engine: SearchEngine,
        folder: str | Path,
        *,
        lock_timeout: float = 300.0,
        compact_every: int = COMPACT_EVERY,
    ) -> None:
        if not isinstance(engine.index, HnswIndex | LiveIndex):
            raise SearchError(
                "live catalog changes need an hnswlib index folder (Milvus indexes "
                "take upserts through `searchcore index build`)"
            )
        self.engine = engine
        self.folder = Path(folder)
        self.lock_timeout = lock_timeout
        self.compact_every = compact_every
        self._write = threading.Lock()
        self._manifest = read_manifest(self.folder)
        self._ids: dict[str, int] = {}  # live product id -> row
        self._row_id: dict[int, str] = {}
        self._free: list[int] = []  # tombstone rows, reusable
        self._serve(live_view(engine.view), None)
        with self._locked():
            self.cleanup()

    @property
    def catalog(self) -> Catalog:
        return self.engine.catalog

    @property
    def manifest(self) -> IndexManifest:
        """The manifest of the snapshot being served (its log holds the changes since)."""
        return self._manifest

    @property
    def live_ids(self) -> list[str]:
        return [i for i, _ in sorted(self._ids.items(), key=lambda item: item[1])]

    # -- operations -------------------------------------------------------------------------
    def add(self, products: list[Mapping[str, Any]], images: list[bytes]) -> list[str]:
        """Add products (canonical fields) with their photos' bytes; returns their ids."""
        if len(products) != len(images):
            raise SearchError(f"{len(products)} products but {len(images)} photos")
        new = [self._clean(p, new=True) for p in products]
        ids = [r["id"] for r in new]
        _refuse_repeats(ids)
        # Refused before anything is written, and embedded before the lock is taken: the lock
        # is held for the commit only, not for the model.
        pics = [decode_image(b, self.engine.image_limits) for b in images]
        vectors = self.engine.embedder.embed_images(pics)
        with self._locked():
            clash = sorted(i for i in ids if i in self._ids)
            if clash:
                raise CatalogError(f"product id(s) already in the catalog: {clash[:5]}")
            written = [self._store_image(b) for b in images]
            df = self.catalog.df
            free: list[int] = []  # the first tombstones not of these very ids
            for r in self._free:
                if len(free) == len(new):
                    break
                if df["id"].iat[r] not in ids:
                    free.append(r)
            rows: dict[int, dict[str, str]] = {}
            appended = iter(range(len(df), len(df) + len(new)))
            for row, (rel, sha) in zip(new, written, strict=True):
                row.update({"image": rel, IMAGE_SHA: sha, REMOVED: ""})
                # a tombstone's row and index slot are reused first
                label = free.pop(0) if free else next(appended)
                rows[label] = self._full_row(row)
            self._commit(rows, dict(zip(rows, vectors, strict=True)), [])
            return ids

    def remove(self, ids: list[str]) -> None:
        ids = [str(i) for i in ids]
        _refuse_repeats(ids)
        with self._locked():
            labels = self._live_rows(ids)
            df = self.catalog.df
            rows = {label: {**_row(df, label), REMOVED: "1"} for label in labels}
            self._commit(rows, {}, labels)

    def update(
        self, product_id: str, fields: Mapping[str, Any] | None = None, image: bytes | None = None
    ) -> None:
        """Change a product's fields and/or photo; its id and label stay."""
        fields = dict(fields or {})
        if "id" in fields:
            raise CatalogError("field 'id' cannot be changed (remove the product and add it anew)")
        changes = self._clean({**fields, "id": product_id}, new=False)
        vector = None
        if image is not None:
            vector = self.engine.embedder.embed_images(
                [decode_image(image, self.engine.image_limits)]
            )[0]
        with self._locked():
            (label,) = self._live_rows([product_id])
            row = {**_row(self.catalog.df, label), **changes}
            if image is not None:
                row["image"], row[IMAGE_SHA] = self._store_image(image)
            vectors = {label: vector} if vector is not None else {}
            self._commit({label: self._full_row(row)}, vectors, [])

    def compact(self) -> IndexManifest:
        """Write the current state as a new snapshot with an empty change log."""
        with self._locked():
            self._compact()
        return self._manifest

    # -- the lock and the committed state -----------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """This process's writers one at a time, then the folder's lock against other
        processes; inside, the engine holds the newest committed state."""
        with self._write, folder_lock(self.folder, self.lock_timeout):
            self._refresh()
            yield

    def _refresh(self) -> None:
        """Catch up with what other writers committed: their log records, or their snapshot."""
        manifest = read_manifest(self.folder)
        view = self.engine.view
        if manifest.version != view.version.split("+")[0] or manifest.log != self._manifest.log:
            self._reload()
            return
        self._manifest = manifest
        log = log_for(self.folder, manifest)
        if log is not None:
            records, end = log.read(view.log[0])
            if records:
                self._serve(apply(view, records, end, manifest.version), records)

    def _reload(self) -> None:
        from searchcore.service import load_state

        view, manifest = load_state(Settings(), str(self.folder), attempts=1)
        if not isinstance(view.index, LiveIndex):
            raise SearchError("live catalog changes need an hnswlib index folder")
        self._manifest = manifest
        self._serve(view, None)

    def _serve(self, view: View, records: list[dict[str, Any]] | None) -> None:
        """Serve ``view``; keep the id and free-row tables in step (for ``records``' rows only,
        when given: O(change))."""
        self.engine.swap(view)
        df = view.catalog.df
        if records is None:
            live = view.catalog.live
            self._ids = dict(zip(df["id"][live], np.flatnonzero(live).tolist(), strict=True))
            self._row_id = {r: i for i, r in self._ids.items()}
            self._free = np.flatnonzero(~live).tolist()
            return
        for label in sorted({int(p[0]) for rec in records for p in rec["rows"]}):
            old = self._row_id.pop(label, None)
            if old is not None and self._ids.get(old) == label:
                del self._ids[old]
            if label in self._free:
                self._free.remove(label)
            if df[REMOVED].iat[label] == "1":
                bisect.insort(self._free, label)
            else:
                self._ids[df["id"].iat[label]] = label
                self._row_id[label] = df["id"].iat[label]

    def _live_rows(self, ids: list[str]) -> list[int]:
        missing = [i for i in ids if i not in self._ids]
        if missing:
            raise CatalogError(f"no such product: {', '.join(map(str, missing[:5]))}")
        return [self._ids[i] for i in ids]

    def _full_row(self, row: Mapping[str, str]) -> dict[str, str]:
        cols = list(self.catalog.df.columns)
        return {**{c: row.get(c, "") for c in cols}, **row}

    def _clean(self, product: Mapping[str, Any], *, new: bool) -> dict[str, str]:
        row = {str(k): "" if v is None else str(v) for k, v in product.items()}
        for key, value in row.items():
            if key in MANAGED or key.startswith("_"):
                raise CatalogError(f"field {key!r} is managed by the shop and cannot be set")
            if not key.strip() or len(key) > MAX_FIELD_NAME or not key.isprintable():
                raise CatalogError(
                    f"field name {key[:40]!r} must be 1-{MAX_FIELD_NAME} printable characters"
                )
            if "\x00" in value or len(value) > MAX_FIELD:
                raise CatalogError(
                    f"field {key!r} has a NUL byte or is over {MAX_FIELD} characters"
                )
        if not row.get("id", "").strip():
            raise CatalogError("a product needs a non-empty id")
        if new:
            missing = [c for c in REQUIRED if c != "image" and not row.get(c, "").strip()]
            if missing:
                raise CatalogError(f"a new product needs {', '.join(missing)}")
        elif "title" in row and not row["title"].strip():
            raise CatalogError("the title cannot be empty")
        if "price" in row:
            _, problem = parse_price(row["price"])
            if problem:
                raise CatalogError(problem)
        return row

    def _store_image(self, data: bytes) -> tuple[str, str]:
        from PIL import Image

        fmt = Image.open(io.BytesIO(data)).format or "JPEG"
        rel = LIVE_DIR / f"{uuid.uuid4().hex}{FORMATS.get(fmt, '.img')}"
        if image_path_problem(str(rel), self.catalog.root):
            raise CatalogError(f"the shop's image folder {self.catalog.root / LIVE_DIR} is unsafe")
        target = self.catalog.root / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, data)
        except OSError as exc:
            raise SearchError(
                f"cannot store the photo in {target.parent}: {exc.strerror or exc}"
            ) from None
        return rel.as_posix(), file_sha256(target)

    def _commit(
        self, rows: dict[int, dict[str, str]], vectors: Mapping[int, Any], removed: list[int]
    ) -> None:
        """Append the change to the log (the commit point), then serve it. Runs under
        :meth:`_locked`, on the newest committed state."""
        log = log_for(self.folder, self._manifest) or self._start_log()
        view = self.engine.view
        rec = record(view.log[1] + 1, rows, vectors, removed)
        ready = prepare(view, [rec])  # checked as every reader will check it, before it counts
        end = log.append(rec, view.log[0])  # committed once this returns
        try:
            self._serve(finish(view, ready, end, self._manifest.version), [rec])
        except BaseException:
            self._reload()  # what is on disk, the change included
            raise
        if self.compact_every and ready.seq >= self.compact_every:
            try:
                self._compact()
            except Exception as exc:  # the change is committed; the snapshot can wait
                logger.warning("compacting %s failed (%s); the change log stays", self.folder, exc)
                self._reload()

    def _start_log(self) -> ChangeLog:
        """Name a change log in a manifest from before logs (a new generation, same files)."""
        raw = {**self._manifest.to_dict(), "log": new_log_name()}
        raw["generation"] = self._manifest.generation + 1
        write_json_atomic(self.folder / MANIFEST, raw)
        self._manifest = IndexManifest.from_dict(raw)
        self.engine.swap(replace(self.engine.view, version=self._manifest.version, log=(0, 0)))
        return log_for(self.folder, self._manifest)  # type: ignore[return-value]

    def _compact(self) -> None:
        """Write the served state as a full snapshot (catalog file, index file, lexical index)
        and swap the manifest to it with a new, empty log. Runs under :meth:`_locked`."""
        view = self.engine.view
        index: LiveIndex = view.index  # type: ignore[assignment]
        df = view.catalog.df
        data = df.to_csv(index=False).encode("utf-8")
        sha = _sha(data + b"[]")  # the same hash load_catalog computes (file bytes + mapping)
        snapshot = self.folder / f"catalog-{sha[:16]}.csv"
        atomic_write(snapshot, data)
        lexical = view.lexical
        base = lexical.base if isinstance(lexical, LiveLexical) else lexical
        if not isinstance(base, LexicalIndex) or (
            isinstance(lexical, LiveLexical) and lexical.changed
        ):
            base = LexicalIndex.build(df)  # the words changed: index them anew
        catalog = replace(view.catalog, df=df, sha256=sha)
        meta = self._manifest.carried()  # model, skipped photos, build info
        entry = self._manifest.lexical
        if not isinstance(entry, dict) or entry.get("key") != base.key:
            entry = base.save(self.folder)  # new words: new files (else the same ones)
        meta["lexical"] = entry
        meta["log"] = new_log_name()
        meta["catalog"] = catalog_record(
            catalog,
            None,
            snapshot=snapshot.name,
            root=relative(catalog.root, self.folder),
            column_map=(),
            left_out=self._manifest.catalog.left_out,  # what the build left out, still
        ).to_dict()
        graph = index.fold()  # the flat segment into the graph (queries go on meanwhile)
        manifest = commit_folder(self.folder, graph, meta, self._manifest)  # the commit point
        self._manifest = manifest
        served = View(catalog, index, manifest.version, LiveLexical(base, len(df)), view.searchable)
        self.engine.swap(served)

    def cleanup(self) -> list[Path]:
        """Remove what unacknowledged changes left (call under :meth:`_locked`): temp files,
        files no manifest names, and photos no snapshot names once past their grace period."""
        removed = prune_folder(self.folder, manifest_files(self._manifest))
        live_dir = self.catalog.root / LIVE_DIR
        if live_dir.is_dir():
            used = set(self.catalog.df["image"])
            old = time.time() - PHOTO_GRACE_S
            for p in live_dir.iterdir():
                if (LIVE_DIR / p.name).as_posix() in used:
                    continue
                with contextlib.suppress(OSError):
                    # a dead writer's temp file at once; a photo an older state named, later
                    if p.name.endswith(".tmp") or p.lstat().st_mtime < old:
                        p.unlink()
                        removed.append(p)
        return removed


def _refuse_repeats(ids: list[str]) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise CatalogError(f"product id {i!r} is given twice in one change")
        seen.add(i)


def _row(df: pd.DataFrame, label: int) -> dict[str, str]:
    return {str(k): str(v) for k, v in df.iloc[label].to_dict().items()}


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
