"""A folder's committed state in memory: its snapshot with its change log replayed.

One change is one record of the log (:mod:`searchcore.stores.changelog`):
``{"seq": n, "rows": [[label, row], ...], "vectors": [[label, base64 float32], ...],
"removed": [label, ...]}``: the whole catalog rows it sets (a label equal to the catalog's
length appends a row), the vectors it adds or replaces, and the labels it takes out of the
vector index. :func:`apply` turns a :class:`~searchcore.engine.View` and records into the next
view in time proportional to the records (new catalog rows, the vector index's flat segment,
the lexical index's overlay); :func:`replay` does it for a whole log when a folder is opened.
Writers (:class:`searchcore.live.LiveShop`), the app's follower and every reader share them.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from searchcore.catalog import IMAGE_SHA, MAX_FIELD, REMOVED, Catalog
from searchcore.engine import View
from searchcore.errors import IndexMismatchError
from searchcore.fsutil import InsideRoot
from searchcore.rowcheck import image_path_problem
from searchcore.stores.changelog import ChangeLog
from searchcore.stores.hnsw import HnswIndex
from searchcore.stores.lexical import LexicalIndex, LiveLexical, product_texts, record_text
from searchcore.stores.manifest import IndexManifest
from searchcore.stores.segment import LiveIndex

LIVE_COLUMNS = (REMOVED, IMAGE_SHA)
CHUNK = 8192  # rows per slice of a changed text column (see _set_cells)


def record(
    seq: int,
    rows: Mapping[int, Mapping[str, str]],
    vectors: Mapping[int, np.ndarray] | None = None,
    removed: list[int] | None = None,
) -> dict[str, Any]:
    """One change as the log stores it."""
    encode = lambda v: base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()  # noqa: E731
    return {
        "seq": seq,
        "rows": [[int(label), dict(row)] for label, row in rows.items()],
        "vectors": [[int(label), encode(v)] for label, v in (vectors or {}).items()],
        "removed": [int(x) for x in removed or []],
    }


def log_for(folder: Path, manifest: IndexManifest) -> ChangeLog | None:
    """The change log a folder's manifest names (None: a folder from before logs)."""
    if not manifest.log:
        return None
    base = f"{manifest.store.get('index_sha256')}:{manifest.catalog.sha256}"
    return ChangeLog(folder / manifest.log, base, fix=f"searchcore index build --out {folder}")


def live_view(view: View) -> View:
    """A folder's snapshot as a view that change records can be applied to (a view that is
    one already, its log replayed to some point, is kept as it is)."""
    view = view.complete()
    if isinstance(view.index, LiveIndex):
        return replace(view, catalog=with_live_columns(view.catalog))
    index = view.index
    if isinstance(index, HnswIndex):
        index = LiveIndex(index)
    lexical = view.lexical
    if isinstance(lexical, LexicalIndex):
        lexical = LiveLexical(lexical, len(view.catalog))
    catalog = with_live_columns(view.catalog)
    return replace(view, catalog=catalog, index=index, lexical=lexical, log=(0, 0))


def replay(view: View, folder: Path, manifest: IndexManifest) -> View:
    """``view`` (the snapshot) with the whole log the manifest names applied."""
    view = live_view(view)
    log = log_for(folder, manifest)
    if log is None:
        return view
    records, end = log.read(0)
    return apply(view, records, end, manifest.version)


def apply(view: View, records: list[dict[str, Any]], end: int, base_version: str) -> View:
    """The view after ``records`` (read up to byte ``end`` of the log); the vector index is
    changed in place (queries on older views re-ask within their own rows), the rest is new."""
    if not records:
        return replace(view, log=(end, view.log[1]))
    return finish(view, prepare(view, records), end, base_version)


@dataclass(frozen=True)
class Prepared:
    """Records checked and turned into the next catalog frame; nothing shared changed yet."""

    rows: dict[int, dict[str, str]]
    vectors: dict[int, np.ndarray | None]  # None: taken out of the index
    df: pd.DataFrame
    seq: int


def prepare(view: View, records: list[dict[str, Any]]) -> Prepared:
    """Check ``records`` against ``view`` (IndexMismatchError on anything a log must not hold)
    and make the catalog they lead to; a writer does this before it appends its record."""
    seq = view.log[1]
    rows: dict[int, dict[str, str]] = {}
    vectors: dict[int, np.ndarray | None] = {}
    inside = InsideRoot(view.catalog.root)  # one for all the records' photo paths
    for rec in records:
        seq += 1
        if rec.get("seq") != seq:
            raise _damaged(f"record {seq} is missing or out of order")
        for label, row in _pairs(rec, "rows", dict):
            problem = _row_problem(row, view.catalog.root, inside)
            if problem:  # what a catalog file's row is refused for, a record's row is too
                raise _damaged(f"record {seq}, row {label}: {problem}")
            rows[label] = row
        for label, text in _pairs(rec, "vectors", str):
            vectors[label] = _decode(text, view.index.dim, seq)
        removed = rec.get("removed")
        if not isinstance(removed, list) or not all(_label(x) for x in removed):
            raise _damaged(f"record {seq} has invalid removed labels")
        vectors.update(dict.fromkeys(removed))
    return Prepared(rows, vectors, with_rows(view.catalog.df, rows), seq)


def finish(view: View, ready: Prepared, end: int, base_version: str) -> View:
    """The next view: the vector index changed in place, catalog and words anew."""
    rows, vectors, seq = ready.rows, ready.vectors, ready.seq
    df, new_df = view.catalog.df, ready.df
    index: LiveIndex = view.index  # type: ignore[assignment]
    put = [label for label, v in vectors.items() if v is not None]
    gone = [label for label, v in vectors.items() if v is None]
    if put:
        index.add(np.stack([vectors[x] for x in put]), put)
    if gone:
        gone = [x for x in gone if index.holds([x])[0]]  # added and removed within the records
        if gone:
            index.remove(gone)
    changed = sorted(set(rows) | set(vectors))
    lexical = view.lexical
    if isinstance(lexical, LiveLexical) and rows:
        cols = list(new_df.columns)
        texts = {r: record_text({c: rows[r].get(c, "") for c in cols}) for r in rows}
        had = [r for r in rows if r < len(df)]
        old = dict(zip(had, product_texts(df.iloc[had]), strict=True))  # one vectorised pass
        lexical = lexical.with_texts(texts, old, len(new_df))
    searchable = np.zeros(len(new_df), dtype=bool)
    if view.searchable is not None:
        searchable[: len(view.searchable)] = view.searchable
    if changed:
        labels = np.asarray(changed, dtype=np.int64)
        on_sale = new_df[REMOVED].iloc[labels].to_numpy() != "1"
        searchable[labels] = index.holds(labels) & on_sale
    catalog = replace(view.catalog, df=new_df, sha256=f"{view.catalog.sha256.split('+')[0]}+{seq}")
    return View(catalog, index, f"{base_version}+{seq}", lexical, searchable, (end, seq))


def with_rows(df: pd.DataFrame, rows: Mapping[int, Mapping[str, str]]) -> pd.DataFrame:
    """``df`` with these whole rows set (labels at its end append rows): a new frame; only the
    columns whose values change are copied."""
    n = len(df)
    added = sorted(label for label in rows if label >= n)
    if added != list(range(n, n + len(added))):
        raise _damaged(f"rows {added[:3]} do not follow the catalog's {n} rows")
    extra = [c for row in rows.values() for c in row if c not in df.columns]
    out = df.copy(deep=False)
    for col in dict.fromkeys(extra):  # a column a change brought: empty for the others
        out[col] = ""
    cols = list(out.columns)
    kept = [label for label in rows if label < n]
    for col in cols:
        if not kept:
            break
        now = out[col].iloc[kept].tolist()  # O(change), not a conversion of the column
        changed = [
            (label, rows[label].get(col, ""))
            for label, old in zip(kept, now, strict=True)
            if rows[label].get(col, "") != old
        ]
        if changed:
            out[col] = _set_cells(out[col], dict(changed))
    if added:
        tail = pd.DataFrame([{c: rows[x].get(c, "") for c in cols} for x in added], columns=cols)
        out = pd.concat([out, tail], ignore_index=True)
        for col in cols:  # appended rows arrive as chunks of their own: merge the small ones
            out[col] = _merge_tail(out[col])
    return out


def _set_cells(column: pd.Series, cells: dict[int, str]) -> pd.Series:
    """``column`` with these cells set, as a new column. An Arrow-backed text column (pandas'
    own) is cut into :data:`CHUNK`-row slices (no copy) and only the slices holding a cell are
    rebuilt, so a change costs what it touches, not the catalog's length; elsewhere the column
    is copied."""
    import pyarrow as pa
    import pyarrow.compute as pc

    values = column.array
    if not isinstance(values, pd.arrays.ArrowStringArray):
        out = column.copy()
        out.iloc[list(cells)] = list(cells.values())
        return out
    chunks: list[Any] = []
    for chunk in values.__arrow_array__().chunks:  # big chunks into slices, zero-copy
        chunks.extend(chunk.slice(i, CHUNK) for i in range(0, len(chunk), CHUNK) or [0])
    starts = np.cumsum([0] + [len(c) for c in chunks])
    labels = np.fromiter(cells, dtype=np.int64, count=len(cells))
    which = np.searchsorted(starts, labels, side="right") - 1
    for i in np.unique(which).tolist():  # one rebuild per slice that holds changes
        here = np.flatnonzero(which == i)
        order = here[np.argsort(labels[here])]
        mask = np.zeros(len(chunks[i]), dtype=bool)
        mask[labels[order] - starts[i]] = True
        values = pa.array([cells[int(x)] for x in labels[order]], chunks[i].type)
        chunks[i] = pc.replace_with_mask(chunks[i], pa.array(mask), values)
    array = pd.arrays.ArrowStringArray(pa.chunked_array(chunks, type=chunks[0].type))
    return pd.Series(array, index=column.index, name=column.name)


def _merge_tail(column: pd.Series) -> pd.Series:
    """An Arrow text column whose trailing small chunks (rows appended one change at a time)
    are merged into one once there are many: queries take rows from few chunks."""
    import pyarrow as pa

    values = column.array
    if not isinstance(values, pd.arrays.ArrowStringArray):
        return column
    chunks = values.__arrow_array__().chunks
    small = 0
    while small < len(chunks) and len(chunks[-1 - small]) < CHUNK:
        small += 1
    if small < 32:
        return column
    merged = pa.concat_arrays(chunks[-small:])  # O(rows appended), not O(catalog)
    array = pa.chunked_array([*chunks[:-small], merged], type=merged.type)
    return pd.Series(pd.arrays.ArrowStringArray(array), index=column.index, name=column.name)


def with_live_columns(catalog: Catalog) -> Catalog:
    """The catalog with the shop's own columns (a new object: readers may hold the old one)."""
    missing = {col: "" for col in LIVE_COLUMNS if col not in catalog.df}
    return replace(catalog, df=catalog.df.assign(**missing)) if missing else catalog


def _row_problem(row: dict[str, Any], root: Path, inside: InsideRoot) -> str | None:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in row.items()):
        return "a field that is not text"
    if any(not k.strip() or len(k) > 100 or not k.isprintable() for k in row):
        return "an invalid field name"
    if any("\x00" in v or len(v) > MAX_FIELD for v in row.values()):
        return f"a field with a NUL byte or over {MAX_FIELD} characters"
    if not row.get("id", "").strip() or not row.get("title", "").strip():
        return "no id or no title"
    return image_path_problem(row.get("image", ""), root, inside)


def _pairs(rec: dict[str, Any], key: str, kind: type) -> list[tuple[int, Any]]:
    items = rec.get(key)
    ok = isinstance(items, list) and all(
        isinstance(p, list) and len(p) == 2 and _label(p[0]) and isinstance(p[1], kind)
        for p in items
    )
    if not ok:
        raise _damaged(f"record {rec.get('seq')} has invalid {key}")
    return [(int(p[0]), p[1]) for p in items]


def _label(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**40


def _decode(text: str, dim: int, seq: int) -> np.ndarray:
    try:
        vec = np.frombuffer(base64.b64decode(text, validate=True), dtype="<f4")
    except ValueError:
        raise _damaged(f"record {seq} has an unreadable vector") from None
    if vec.shape != (dim,) or not np.isfinite(vec).all():
        raise _damaged(f"record {seq} has a vector that is not {dim} finite numbers")
    return vec.astype(np.float32)


def _damaged(what: str) -> IndexMismatchError:
    return IndexMismatchError(f"the change log is damaged ({what}); rebuild the index")
