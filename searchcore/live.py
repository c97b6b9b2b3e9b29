"""A live shop: catalog edits that reach search at once and survive crashes.

``LiveShop`` wraps a :class:`~searchcore.engine.SearchEngine` over an hnswlib index folder
and adds, removes and updates products while queries keep running. Each acknowledged change
is committed before the call returns:

1. a new photo is written under a generated name inside the shop's image folder
   (``images/live/<uuid>.<ext>``, temp file, fsync, rename) and its sha256 recorded;
2. the catalog is written as a content-addressed snapshot ``catalog-<sha>.csv`` in the index
   folder, and the index as a new ``index-<sha>.bin`` (both fsynced);
3. ``manifest.json`` is swapped atomically to point at both: **this rename is the commit**.

A process killed anywhere before step 3 leaves the previous state (the unacknowledged change is
all-or-nothing); files it left behind are removed on the next open. Removed products stay as
tombstone rows (``_removed`` = ``1``) so that index label == catalog row holds, and their rows
and index slots are reused by later additions, so churn does not grow the index.

Cost: every commit rewrites the catalog snapshot and the index file (milliseconds for the demo
shop; for large catalogs batch changes with :meth:`LiveShop.add` of many products at once).
"""

from __future__ import annotations

import io
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from searchcore.build import catalog_meta
from searchcore.catalog import MAX_FIELD, REQUIRED, Catalog, _image_path_problem, _parse_price
from searchcore.engine import SearchEngine
from searchcore.errors import CatalogError, SearchError
from searchcore.fsutil import file_sha256, fsync_dir, fsync_file
from searchcore.images import decode_image
from searchcore.index import HnswIndex, read_manifest

REMOVED = "_removed"
IMAGE_SHA = "image_sha256"
LIVE_DIR = Path("images") / "live"
FORMATS = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


class LiveShop:
    """Serialises writers; readers go on through the engine meanwhile."""

    def __init__(self, engine: SearchEngine, folder: str | Path) -> None:
        if not isinstance(engine.index, HnswIndex):
            raise SearchError("live catalog changes need an hnswlib index folder (Milvus indexes "
                              "take upserts through `searchcore index build`)")
        self.engine = engine
        self.folder = Path(folder)
        self._write = threading.Lock()
        df = engine.catalog.df
        for col in (REMOVED, IMAGE_SHA):
            if col not in df:
                df[col] = ""
        self._manifest = read_manifest(self.folder)
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
        with self._write:
            df = self.catalog.df
            live = set(df.loc[df[REMOVED] != "1", "id"])
            rows = [self._clean(p, new=True) for p in products]
            ids = [r["id"] for r in rows]
            if len(set(ids)) != len(ids) or live & set(ids):
                raise CatalogError(f"product id(s) already in the catalog: {sorted(live & set(ids))[:5] or ids}")
            pics = [decode_image(b, self.engine.image_limits) for b in images]  # refuse before writing
            vectors = self.engine.embedder.embed_images(pics)
            written = [self._store_image(b) for b in images]
            free = df.index[(df[REMOVED] == "1") & ~df["id"].isin(ids)].tolist()
            new_df = df.copy()
            labels: list[int] = []
            for row, (rel, sha) in zip(rows, written, strict=True):
                row.update({"image": rel, IMAGE_SHA: sha, REMOVED: ""})
                if free:  # reuse a tombstone: its label's index slot is reused too
                    label = free.pop(0)
                    new_df.loc[label] = pd.Series(row).reindex(new_df.columns, fill_value="")
                else:
                    label = len(new_df)
                    new_df = pd.concat([new_df, pd.DataFrame([row]).reindex(columns=new_df.columns,
                                        fill_value="")], ignore_index=True)
                labels.append(label)
            new_df = _extend_columns(new_df, rows)
            self._commit(new_df, lambda ix: ix.add(vectors, labels))
            return ids

    def remove(self, ids: list[str]) -> None:
        with self._write:
            df = self.catalog.df
            labels = self._live_rows(ids)
            new_df = df.copy()
            new_df.loc[labels, REMOVED] = "1"
            self._commit(new_df, lambda ix: ix.remove(labels))

    def update(self, product_id: str, fields: Mapping[str, Any] | None = None,
               image: bytes | None = None) -> None:
        """Change a product's fields and/or photo; its id and label stay."""
        with self._write:
            (label,) = self._live_rows([product_id])
            df = self.catalog.df
            row = {**df.loc[label].to_dict(), **self._clean({**(fields or {}), "id": product_id}, new=False)}
            vector = None
            if image is not None:
                vector = self.engine.embedder.embed_images([decode_image(image, self.engine.image_limits)])
                row["image"], row[IMAGE_SHA] = self._store_image(image)
            new_df = _extend_columns(df.copy(), [row])
            new_df.loc[label] = pd.Series(row).reindex(new_df.columns, fill_value="")
            self._commit(new_df, (lambda ix: ix.add(vector, [label])) if vector is not None else None)

    # -- internals --------------------------------------------------------------------------
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
            if key in (REMOVED, IMAGE_SHA, "image"):
                raise CatalogError(f"field {key!r} is managed by the shop and cannot be set")
            if "\x00" in value or "\x00" in key or len(value) > MAX_FIELD:
                raise CatalogError(f"field {key!r} has a NUL byte or is over {MAX_FIELD} characters")
        if not row.get("id", "").strip():
            raise CatalogError("a product needs a non-empty id")
        if new:
            missing = [c for c in REQUIRED if c != "image" and not row.get(c, "").strip()]
            if missing:
                raise CatalogError(f"a new product needs {', '.join(missing)}")
        elif "title" in row and not row["title"].strip():
            raise CatalogError("the title cannot be empty")
        if "price" in row:
            _, problem = _parse_price(row["price"])
            if problem:
                raise CatalogError(problem)
        return row

    def _store_image(self, data: bytes) -> tuple[str, str]:
        from PIL import Image

        fmt = Image.open(io.BytesIO(data)).format or "JPEG"
        rel = LIVE_DIR / f"{uuid.uuid4().hex}{FORMATS.get(fmt, '.img')}"
        if _image_path_problem(str(rel), self.catalog.root):
            raise CatalogError(f"the shop's image folder {self.catalog.root / LIVE_DIR} is unsafe")
        target = self.catalog.root / rel
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.tmp")
            tmp.write_bytes(data)
            fsync_file(tmp)
            tmp.replace(target)
            fsync_dir(target.parent)
        except OSError as exc:
            raise SearchError(f"cannot store the photo in {target.parent}: {exc.strerror or exc}") from None
        return rel.as_posix(), file_sha256(target)

    def _commit(self, new_df: pd.DataFrame, change: Any) -> None:
        """Apply ``change`` to the index, persist catalog + index, swap the manifest, publish."""
        index: HnswIndex = self.engine.index  # type: ignore[assignment]
        data = new_df.to_csv(index=False).encode("utf-8")
        sha = _sha(data + b"[]")  # the same hash load_catalog computes (file bytes + mapping)
        snapshot = self.folder / f"catalog-{sha[:16]}.csv"
        tmp = snapshot.with_name(f".{snapshot.name}.{uuid.uuid4().hex}.tmp")
        tmp.write_bytes(data)
        fsync_file(tmp)
        tmp.replace(snapshot)
        old_df = self.catalog.df
        self.catalog.df = new_df  # rows first: a reader never sees a label without its row
        try:
            if change is not None:
                change(index)
            meta = {k: v for k, v in self._manifest.items() if k in ("model", "build", "skipped")}
            meta["catalog"] = {
                **catalog_meta(self.catalog, None),
                "snapshot": snapshot.name,
                "root": _relative(self.catalog.root, self.folder),
                "sha256": sha,
                "rows": len(new_df),
                "column_map": [],
            }
            self._manifest = index.save(self.folder, meta)  # the commit point
        except BaseException:
            # Nothing was committed: go back to what is on disk (the index may hold the change).
            self.catalog.df = old_df
            self.engine.index, self._manifest = HnswIndex.load(self.folder)
            raise
        self.catalog.sha256 = sha
        for old in self.folder.glob("catalog-*.csv"):
            if old.name != snapshot.name:
                old.unlink(missing_ok=True)

    def cleanup(self) -> list[Path]:
        """Remove what unacknowledged changes left: temp files and unreferenced live photos."""
        removed = []
        for tmp in list(self.folder.glob(".catalog-*.tmp")) + list(self.folder.glob(".index-*.tmp")):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
        live_dir = self.catalog.root / LIVE_DIR
        if live_dir.is_dir():
            used = set(self.catalog.df["image"])
            for p in live_dir.iterdir():
                if (LIVE_DIR / p.name).as_posix() not in used:
                    p.unlink(missing_ok=True)
                    removed.append(p)
        return removed


def check_invariants(shop: LiveShop) -> list[str]:
    """What is wrong with a shop's state (empty when all is well); used by tests and `check`."""
    problems = []
    df = shop.catalog.df
    index: HnswIndex = shop.engine.index  # type: ignore[assignment]
    live_rows = set(np.flatnonzero((df[REMOVED] != "1").to_numpy()).tolist())
    labels = set(index.live_labels().tolist())
    if labels != live_rows:
        problems.append(f"phantoms: {len(labels - live_rows)} index labels without a live row, "
                        f"{len(live_rows - labels)} live rows without a label")
    if df.loc[list(live_rows), "id"].duplicated().any():
        problems.append("duplicate live ids")
    for row in sorted(live_rows):
        sha = df.at[row, IMAGE_SHA]
        if sha:
            path = shop.catalog.root / df.at[row, "image"]
            if not path.is_file() or file_sha256(path) != sha:
                problems.append(f"photo of {df.at[row, 'id']} missing or changed")
    return problems


def _extend_columns(df: pd.DataFrame, rows: list[Mapping[str, str]]) -> pd.DataFrame:
    extra = [k for r in rows for k in r if k not in df.columns]
    for col in dict.fromkeys(extra):
        df[col] = ""
    return df


def _relative(path: Path, start: Path) -> str:
    import os

    return os.path.relpath(path.resolve(), start.resolve())


def _sha(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()
