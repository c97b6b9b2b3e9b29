"""A live shop: catalog edits that reach search at once, survive crashes, and never lose each
other when several processes write at once.

``LiveShop`` wraps a :class:`~searchcore.engine.SearchEngine` over an hnswlib index folder
and adds, removes and updates products while queries keep running. Writers in any process (the
CLI, the app, a shop's scripts) take the folder's exclusive lock
(:func:`searchcore.fsutil.folder_lock`) for the whole read-modify-commit; a writer whose view is
older than the folder's manifest re-reads the committed state first. Each acknowledged change
is committed before the call returns:

1. a new photo is written under a generated name inside the shop's image folder
   (``images/live/<uuid>.<ext>``, temp file, fsync, rename) and its sha256 recorded;
2. the catalog is written as a content-addressed snapshot ``catalog-<sha>.csv`` in the index
   folder, and the index as a new ``index-<sha>.bin`` (both fsynced);
3. ``manifest.json`` is swapped atomically to point at both: **this rename is the commit**.

A process killed anywhere before step 3 leaves the previous state (the unacknowledged change is
all-or-nothing); its lock dies with it. Clean-up runs only under the lock, so it never meets a
writer between steps 1 and 3: it removes temp files, index files and snapshots that neither the
current nor the previous manifest names (a reader may be opening the previous one; one that
loses even that race re-reads the manifest), and photos no snapshot names once they are older
than :data:`PHOTO_GRACE_S`. Removed products stay as tombstone rows (``_removed`` = ``1``) so
that index label == catalog row holds; their rows and index slots are reused by later
additions, so churn does not grow the index.

:class:`Follower` keeps a serving engine (the app) on the newest committed state that other
processes wrote, swapping catalog and index together.

Cost: every commit rewrites the catalog snapshot and the index file (milliseconds for the demo
shop; for large catalogs batch changes with :meth:`LiveShop.add` of many products at once).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
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
    image_path_problem,
    parse_price,
)
from searchcore.config import Settings
from searchcore.engine import SearchEngine, View
from searchcore.errors import CatalogError, IndexMismatchError, SearchError
from searchcore.fsutil import atomic_write, file_sha256, folder_lock, is_regular_file, relative
from searchcore.images import decode_image
from searchcore.stores.hnsw import HnswIndex, commit_folder
from searchcore.stores.lexical import LexicalIndex, product_texts, texts_key
from searchcore.stores.manifest import MANIFEST, manifest_files, prune_folder, read_manifest

log = logging.getLogger(__name__)

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


class LiveShop:
    """Serialises writers across threads and processes; readers go on meanwhile."""

    def __init__(
        self, engine: SearchEngine, folder: str | Path, *, lock_timeout: float = 300.0
    ) -> None:
        if not isinstance(engine.index, HnswIndex):
            raise SearchError(
                "live catalog changes need an hnswlib index folder (Milvus indexes "
                "take upserts through `searchcore index build`)"
            )
        self.engine = engine
        self.folder = Path(folder)
        self.lock_timeout = lock_timeout
        self._write = threading.Lock()
        engine.swap(replace(engine.view, catalog=_with_live_columns(engine.catalog)))
        self._manifest = read_manifest(self.folder)
        with self._locked():
            self.cleanup()

    @property
    def catalog(self) -> Catalog:
        return self.engine.catalog

    @property
    def live_ids(self) -> list[str]:
        df = self.catalog.df
        return df.loc[df[REMOVED] != "1", "id"].tolist()

    # -- operations -------------------------------------------------------------------------
    def add(self, products: list[Mapping[str, Any]], images: list[bytes]) -> list[str]:
        """Add products (canonical fields) with their photos' bytes; returns their ids."""
        if len(products) != len(images):
            raise SearchError(f"{len(products)} products but {len(images)} photos")
        rows = [self._clean(p, new=True) for p in products]
        ids = [r["id"] for r in rows]
        _refuse_repeats(ids)
        # Refused before anything is written, and embedded before the lock is taken: the lock
        # is held for the commit only, not for the model.
        pics = [decode_image(b, self.engine.image_limits) for b in images]
        vectors = self.engine.embedder.embed_images(pics)
        with self._locked():
            df = self.catalog.df
            clash = set(df.loc[df[REMOVED] != "1", "id"]) & set(ids)
            if clash:
                raise CatalogError(f"product id(s) already in the catalog: {sorted(clash)[:5]}")
            written = [self._store_image(b) for b in images]
            free = df.index[(df[REMOVED] == "1") & ~df["id"].isin(ids)].tolist()
            new_df = df.copy()
            labels: list[int] = []
            for row, (rel, sha) in zip(rows, written, strict=True):
                row.update({"image": rel, IMAGE_SHA: sha, REMOVED: ""})
                if free:  # reuse a tombstone: its label's index slot is reused too
                    label = free.pop(0)
                    new_df = _extend_columns(new_df, [row])
                    new_df.loc[label] = pd.Series(row).reindex(new_df.columns, fill_value="")
                else:
                    label = len(new_df)
                    new_df = pd.concat(
                        [
                            new_df,
                            pd.DataFrame([row]).reindex(columns=new_df.columns, fill_value=""),
                        ],
                        ignore_index=True,
                    )
                labels.append(label)
            new_df = _extend_columns(new_df, rows)
            self._commit(new_df, lambda ix: ix.add(vectors, labels))
            return ids

    def remove(self, ids: list[str]) -> None:
        ids = [str(i) for i in ids]
        _refuse_repeats(ids)
        with self._locked():
            labels = self._live_rows(ids)
            new_df = self.catalog.df.copy()
            new_df.loc[labels, REMOVED] = "1"
            self._commit(new_df, lambda ix: ix.remove(labels))

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
            )
        with self._locked():
            (label,) = self._live_rows([product_id])
            df = self.catalog.df
            row = {**df.loc[label].to_dict(), **changes}
            if image is not None:
                row["image"], row[IMAGE_SHA] = self._store_image(image)
            new_df = _extend_columns(df.copy(), [row])
            new_df.loc[label] = pd.Series(row).reindex(new_df.columns, fill_value="")
            self._commit(
                new_df, (lambda ix: ix.add(vector, [label])) if vector is not None else None
            )

    # -- the lock and the committed state -----------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """This process's writers one at a time, then the folder's lock against other
        processes; inside, the engine holds the newest committed state."""
        with self._write, folder_lock(self.folder, self.lock_timeout):
            self._refresh()
            yield

    def _refresh(self) -> None:
        """Re-read the committed state when another writer moved the manifest on."""
        manifest = read_manifest(self.folder)
        if manifest.version != self.engine.view.version:  # what the engine serves
            self._reload()
        else:
            self._manifest = manifest

    def _reload(self) -> None:
        from searchcore.service import load_state

        view, manifest = load_state(Settings(), str(self.folder), attempts=1)
        if not isinstance(view.index, HnswIndex):
            raise SearchError("live catalog changes need an hnswlib index folder")
        self.engine.swap(replace(view, catalog=_with_live_columns(view.catalog)))
        self._manifest = manifest

    def _live_rows(self, ids: list[str]) -> list[int]:
        df = self.catalog.df
        live = df[df[REMOVED] != "1"]
        pos = pd.Index(live["id"]).get_indexer(ids)
        missing = [i for i, p in zip(ids, pos, strict=True) if p < 0]
        if missing:
            raise CatalogError(f"no such product: {', '.join(map(str, missing[:5]))}")
        return [int(live.index[p]) for p in pos]

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

    def _commit(self, new_df: pd.DataFrame, change: Any) -> None:
        """Apply ``change`` to the index, persist catalog + index, swap the manifest, publish.

        Runs under :meth:`_locked`, on the newest committed state.
        """
        index: HnswIndex = self.engine.index  # type: ignore[assignment]
        data = new_df.to_csv(index=False).encode("utf-8")
        sha = _sha(data + b"[]")  # the same hash load_catalog computes (file bytes + mapping)
        snapshot = self.folder / f"catalog-{sha[:16]}.csv"
        atomic_write(snapshot, data)
        lexical = self.engine.lexical
        if not isinstance(lexical, LexicalIndex) or texts_key(product_texts(new_df)) != lexical.key:
            lexical = LexicalIndex.build(new_df)  # the words changed: index them anew
        catalog = replace(self.catalog, df=new_df, sha256=sha)
        # Rows first: readers get the new rows (not searchable until the commit) before the
        # index holds any label for them, so a label never lacks its row.
        self.engine.swap(View(catalog, index, self.engine.view.version, lexical))
        try:
            if change is not None:
                change(index)
            meta = self._manifest.carried()  # model, skipped photos, build info
            entry = self._manifest.lexical
            if not isinstance(entry, dict) or entry.get("key") != lexical.key:
                entry = lexical.save(self.folder)  # new words: new files (else the same ones)
            meta["lexical"] = entry
            meta["catalog"] = catalog_record(
                catalog,
                None,
                snapshot=snapshot.name,
                root=relative(catalog.root, self.folder),
                column_map=(),
                left_out=self._manifest.catalog.left_out,  # what the build left out, still
            ).to_dict()
            manifest = commit_folder(self.folder, index, meta, self._manifest)  # the commit point
        except BaseException:
            # Nothing was committed: go back to what is on disk (the index may hold the change).
            self._reload()
            raise
        self._manifest = manifest
        self.engine.swap(View(catalog, index, manifest.version, lexical))

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


class Follower:
    """Keeps a serving engine on the newest state that writers committed to its folder.

    Polls ``manifest.json`` every ``interval`` seconds (a ``stat``; the manifest is read only
    when it changed) and swaps the new catalog and index into the engine together, so a page
    sees another process's change within a few seconds and never a half of one.
    """

    def __init__(
        self,
        engine: SearchEngine,
        folder: str | Path,
        *,
        settings: Settings | None = None,
        interval: float = 2.0,
    ) -> None:
        self.engine = engine
        self.folder = Path(folder)
        self.settings = settings or Settings()
        self.interval = interval
        self._seen: tuple[int, int, int] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """One poll: True when a newer committed state is now being served."""
        try:
            st = os.stat(self.folder / MANIFEST)
        except OSError:
            return False
        seen = (st.st_mtime_ns, st.st_size, st.st_ino)
        if seen == self._seen:
            return False
        from searchcore.service import load_state

        try:
            manifest = read_manifest(self.folder)
            if manifest.version == self.engine.view.version:
                self._seen = seen
                return False
            view, manifest = load_state(self.settings, str(self.folder))
            if manifest.model is None or (
                manifest.model.fingerprint != self.engine.embedder.fingerprint
            ):
                raise IndexMismatchError("it was rebuilt for another model; restart to serve it")
        except SearchError as exc:
            log.warning("not following the change in %s: %s", self.folder.name, exc)
            self._seen = seen  # until the manifest changes again
            return False
        self.engine.swap(view)
        self._seen = seen
        log.info(
            "serving %s generation %s (%d products)",
            self.folder.name,
            manifest.generation,
            len(view.index),
        )
        return True

    def start(self) -> Follower:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                try:
                    self.check()
                except Exception:
                    log.exception("following %s failed", self.folder.name)

        self._thread = threading.Thread(target=loop, name="searchcore-follower", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def check_invariants(shop: LiveShop) -> list[str]:
    """What is wrong with a shop's state (empty when all is well); used by tests and `check`.

    Every live product must have its row, its vector, its words and its photo: the label sets
    of catalog and index agree, each live label's vector is readable and finite, the lexical
    index holds exactly the catalog's words, each live row's photo is a regular file (with the
    recorded sha256 where one was recorded), and the files the manifest names exist.
    """
    problems = []
    df = shop.catalog.df
    index: HnswIndex = shop.engine.index  # type: ignore[assignment]
    live_rows = set(np.flatnonzero((df[REMOVED] != "1").to_numpy()).tolist())
    labels = set(index.live_labels().tolist())
    if labels != live_rows:
        problems.append(
            f"phantoms: {len(labels - live_rows)} index labels without a live row, "
            f"{len(live_rows - labels)} live rows without a label "
            f"(e.g. {sorted(df.loc[sorted(live_rows - labels)[:3], 'id'])})"
        )
    if df.loc[sorted(live_rows), "id"].duplicated().any():
        problems.append("duplicate live ids")
    both = sorted(labels & live_rows)
    if both:
        try:
            vectors = index.get_vectors(both)
            if not np.isfinite(vectors).all() or (np.abs(vectors).sum(axis=1) == 0).any():
                problems.append("some live products have an empty or broken vector")
        except RuntimeError as exc:
            problems.append(f"some live products have no vector ({exc})")
    root = shop.catalog.root
    for row in sorted(live_rows):
        path = root / df.at[row, "image"]
        sha = df.at[row, IMAGE_SHA]
        if not is_regular_file(path):
            problems.append(f"photo of {df.at[row, 'id']} is missing")
        elif sha and file_sha256(path) != sha:
            problems.append(f"photo of {df.at[row, 'id']} changed")
    lexical = shop.engine.lexical
    if not isinstance(lexical, LexicalIndex) or (lexical.rows, lexical.key) != (
        len(df),
        texts_key(product_texts(df)),
    ):
        problems.append("the lexical index does not hold the catalog's words")
    entry = shop._manifest.lexical
    if not isinstance(entry, dict) or entry.get("key") != lexical.key:
        problems.append("the manifest names another lexical index than the one served")
    for name in manifest_files(shop._manifest):
        path = shop.folder / name
        if not (is_regular_file(path) or (path.is_dir() and not path.is_symlink())):
            problems.append(f"{name} named by the manifest is missing")
    return problems


def _refuse_repeats(ids: list[str]) -> None:
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise CatalogError(f"product id {i!r} is given twice in one change")
        seen.add(i)


def _with_live_columns(catalog: Catalog) -> Catalog:
    """The catalog with the shop's own columns (a new object: readers may hold the old one)."""
    missing = {col: "" for col in (REMOVED, IMAGE_SHA) if col not in catalog.df}
    return replace(catalog, df=catalog.df.assign(**missing)) if missing else catalog


def _extend_columns(df: pd.DataFrame, rows: list[Mapping[str, str]]) -> pd.DataFrame:
    extra = [k for r in rows for k in r if k not in df.columns]
    for col in dict.fromkeys(extra):
        df[col] = ""
    return df


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
