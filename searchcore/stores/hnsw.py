"""The hnswlib store: HNSW over L2-normalised embeddings, persisted as an index folder.

Invariant: an index label is the product's row in the catalog. A folder holds
``index-<sha>.bin`` (hnswlib's file) and ``manifest.json`` (:mod:`.manifest`). Saving never
overwrites the live files: the index goes to a new name, then the manifest is swapped atomically
(temp file, fsync, rename), so a process killed at any point leaves the previous index loadable.
hnswlib stores no dimension or checksum of its own, so loading checks the manifest and the
sha256, and the file's whole structure (:func:`verify_hnsw_file`), before hnswlib reads a byte.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from searchcore.errors import IndexMismatchError, SearchError
from searchcore.fsutil import file_sha256, fsync_dir, fsync_file, write_json_atomic
from searchcore.stores.base import Filters, Neighbours
from searchcore.stores.manifest import (
    FORMAT_VERSION,
    MANIFEST,
    IndexManifest,
    manifest_files,
    prune_folder,
    read_manifest,
)

# Below this many allowed products a filtered query is answered exactly (fast, and exact).
BRUTE_FORCE_MAX = 4096


class RWLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class HnswIndex:
    """Thread-safe wrapper: queries run concurrently, writes exclusively."""

    pushes_filters = False  # filters arrive as a boolean mask over labels

    def __init__(
        self,
        dim: int,
        *,
        space: str = "cosine",
        m: int = 16,
        ef_construction: int = 200,
        ef_search: int = 128,
        capacity: int = 1024,
        _index: Any = None,
        _deleted: set[int] | None = None,
    ) -> None:
        import hnswlib

        if space not in ("cosine", "ip", "l2"):
            raise SearchError(f"index space must be cosine, ip or l2, not {space!r}")
        self.dim, self.space, self.m = int(dim), space, int(m)
        self.ef_construction, self.ef_search = int(ef_construction), int(ef_search)
        if _index is None:
            _index = hnswlib.Index(space=space, dim=self.dim)
            _index.init_index(
                max_elements=max(16, capacity),
                M=self.m,
                ef_construction=self.ef_construction,
                random_seed=100,
                allow_replace_deleted=True,
            )
        self._index = _index
        self._index.set_ef(self.ef_search)
        self._deleted: set[int] = set(_deleted or ())
        # Both built on first need (a write, a filter), not at load: unfiltered search never
        # needs them, so a loaded index costs no memory beyond hnswlib's own.
        self._labels: np.ndarray | None = None  # every stored label, sorted
        self._live_cache: np.ndarray | None = None  # sorted live labels, cleared by writes
        self.lock = RWLock()

    # -- sizes ------------------------------------------------------------------------------
    def __len__(self) -> int:
        """Live (not deleted) vectors."""
        return int(self._index.get_current_count()) - len(self._deleted)

    @property
    def capacity(self) -> int:
        return int(self._index.get_max_elements())

    def lexical(self) -> None:
        return None  # the folder's lexical files hold the words (searchcore.stores.lexical)

    def live_labels(self) -> np.ndarray:
        with self.lock.read():
            return self._live_labels()

    def _all_labels(self) -> np.ndarray:
        labels = self._labels
        if labels is None:
            labels = np.sort(np.asarray(self._index.get_ids_list(), dtype=np.int64))
            self._labels = labels
        return labels

    def _live_labels(self) -> np.ndarray:
        cached = self._live_cache
        if cached is not None:
            return cached
        labels = self._all_labels()
        if not self._deleted:
            live = labels  # the same array: no second copy
        else:
            dead = np.fromiter(self._deleted, dtype=np.int64, count=len(self._deleted))
            live = labels[~np.isin(labels, dead)]
        self._live_cache = live
        return live

    # -- writes -----------------------------------------------------------------------------
    def add(
        self, vectors: np.ndarray, labels: np.ndarray | list[int], records: list[dict] | None = None
    ) -> None:
        """Add (or replace) vectors under the given labels; grows the index as needed.

        ``records`` (the products' catalog fields) are for stores that keep attributes; the
        hnswlib index filters with a mask over the catalog instead, so it ignores them.
        """
        vectors = self._check_vectors(vectors)
        labels = np.asarray(labels, dtype=np.int64)
        if labels.shape != (len(vectors),):
            raise SearchError(f"{len(vectors)} vectors but {labels.size} labels")
        if len(vectors) == 0:
            return
        if labels.min() < 0 or len(np.unique(labels)) != len(labels):
            raise SearchError("labels must be unique, non-negative integers")
        with self.lock.write():
            new = int(np.count_nonzero(~np.isin(labels, self._all_labels())))
            # new labels first fill the slots of deleted ones (replace_deleted below)
            reusable = len(self._deleted - set(labels.tolist()))  # re-added labels are unmarked
            needed = int(self._index.get_current_count()) + max(0, new - reusable)
            if needed > self.capacity:
                self._index.resize_index(max(needed, int(self.capacity * 1.5)))
            for label in set(labels.tolist()) & self._deleted:  # a removed product comes back
                self._index.unmark_deleted(label)
                self._deleted.discard(label)
            stored = np.isin(labels, self._all_labels())
            if stored.any():  # updated in their own slots
                self._index.add_items(vectors[stored], labels[stored], replace_deleted=False)
            if not stored.all():
                # New labels take the slots of deleted ones first, so churn does not grow the
                # index. (Only new ones: hnswlib would give a stored label a second slot.)
                self._index.add_items(vectors[~stored], labels[~stored], replace_deleted=True)
            self._live_cache = self._labels = None
            if self._deleted:  # replaced slots drop their old label
                self._deleted &= set(self._all_labels().tolist())

    def holds(self, labels: np.ndarray | list[int]) -> np.ndarray:
        """Which of ``labels`` are live here (a boolean per label; O(m log n))."""
        with self.lock.read():
            return self._holds(np.asarray(labels, dtype=np.int64).ravel())

    def _holds(self, labels: np.ndarray) -> np.ndarray:
        stored = self._all_labels()
        pos = np.minimum(np.searchsorted(stored, labels), max(len(stored) - 1, 0))
        found = stored[pos] == labels if len(stored) else np.zeros(len(labels), dtype=bool)
        return found & np.array([int(x) not in self._deleted for x in labels], dtype=bool)

    def remove(self, labels: np.ndarray | list[int]) -> None:
        """Mark labels deleted: they are never returned again (their slots can be reused)."""
        labels = [int(x) for x in np.asarray(labels, dtype=np.int64).ravel()]
        with self.lock.write():
            found = self._holds(np.asarray(labels, dtype=np.int64))
            unknown = [x for x, ok in zip(labels, found, strict=True) if not ok]
            if unknown:
                raise SearchError(f"cannot remove labels not in the index: {unknown[:5]}")
            self._live_cache = None
            for x in labels:
                self._index.mark_deleted(x)
                self._deleted.add(x)

    # -- reads ------------------------------------------------------------------------------
    def search(
        self,
        query: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        filters: Filters | None = None,
    ) -> Neighbours:
        """The ``k`` nearest live vectors (fewer only when fewer exist or match ``allowed``).

        ``allowed`` is a boolean mask over labels (a filter). A selective filter is answered by
        exact search over the matching vectors; a broad one by HNSW with the filter applied
        during the graph walk, falling back to exact search if the walk finds fewer than ``k``.
        """
        q = self._check_vectors(np.atleast_2d(query))[0:1]
        with self.lock.read():
            if allowed is None:  # the common case: straight to the graph, no label bookkeeping
                k = min(int(k), len(self))
                if k <= 0:
                    return Neighbours(np.empty(0, np.int64), np.empty(0, np.float32))
                try:
                    labels, dist = self._index.knn_query(q, k=k, num_threads=1)
                except RuntimeError:  # the walk found fewer than k: answer exactly instead
                    return self._exact(q, self._live_labels(), k)
                return Neighbours(labels[0].astype(np.int64), self._similarity(dist[0]))
            live = self._live_labels()
            if allowed is not None:
                allowed = np.asarray(allowed, dtype=bool)
                in_mask = live < len(allowed)
                live = live[in_mask]
                live = live[allowed[live]]
            k = min(int(k), len(live))
            if k <= 0:
                return Neighbours(np.empty(0, np.int64), np.empty(0, np.float32))
            if allowed is not None and len(live) <= BRUTE_FORCE_MAX:
                return self._exact(q, live, k)
            flt: Callable[[int], bool] | None = None
            if allowed is not None:
                mask = allowed

                def flt(label: int) -> bool:
                    return bool(label < len(mask) and mask[label])

            try:
                labels, dist = self._index.knn_query(q, k=k, num_threads=1, filter=flt)
            except RuntimeError:  # the walk found fewer than k: answer exactly instead
                return self._exact(q, live, k)
            return Neighbours(labels[0].astype(np.int64), self._similarity(dist[0]))

    def _exact(self, q: np.ndarray, labels: np.ndarray, k: int) -> Neighbours:
        vecs = np.asarray(self._index.get_items(labels, return_type="numpy"), dtype=np.float32)
        if self.space == "cosine":
            qn = q / max(float(np.linalg.norm(q)), 1e-12)
            sims = vecs @ qn[0]
        elif self.space == "ip":
            sims = vecs @ q[0]
        else:
            sims = 1.0 - ((vecs - q[0]) ** 2).sum(axis=1) / 2.0
        top = np.argpartition(-sims, k - 1)[:k] if k < len(sims) else np.arange(len(sims))
        top = top[np.argsort(-sims[top], kind="stable")]
        return Neighbours(labels[top].astype(np.int64), sims[top].astype(np.float32))

    def _similarity(self, dist: np.ndarray) -> np.ndarray:
        # cosine/ip: hnswlib returns 1 - similarity; l2: squared distance (= 2 - 2cos if unit).
        return (1.0 - dist / 2.0 if self.space == "l2" else 1.0 - dist).astype(np.float32)

    def get_vectors(self, labels: np.ndarray | list[int]) -> np.ndarray:
        with self.lock.read():
            return np.asarray(self._index.get_items(list(labels), return_type="numpy"), np.float32)

    def _check_vectors(self, vectors: np.ndarray) -> np.ndarray:
        v = np.ascontiguousarray(vectors, dtype=np.float32)
        if v.ndim != 2 or v.shape[1] != self.dim:
            raise SearchError(f"expected vectors of dimension {self.dim}, got shape {v.shape}")
        if not np.isfinite(v).all():
            raise SearchError("vectors contain NaN or infinity")
        return v

    # -- persistence ------------------------------------------------------------------------
    def save(self, folder: str | Path, meta: dict[str, Any] | None = None) -> IndexManifest:
        """Write the index and its manifest (with ``meta``: model, catalog... as
        :meth:`IndexManifest.to_dict` writes them) atomically; returns the manifest."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".index-{uuid.uuid4().hex}.tmp"
        try:
            with self.lock.read():  # no writes while hnswlib serialises
                self._index.save_index(str(tmp))
                deleted = sorted(self._deleted)
                total = int(self._index.get_current_count())
                capacity = self.capacity
            fsync_file(tmp)
            sha = file_sha256(tmp)
            final = folder / f"index-{sha[:16]}.bin"
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(folder)
        manifest = {
            "format_version": FORMAT_VERSION,
            "dim": self.dim,
            "space": self.space,
            "M": self.m,
            "ef_construction": self.ef_construction,
            "ef_search": self.ef_search,
            "count": total - len(deleted),
            "total": total,
            "capacity": capacity,
            "deleted": deleted,
            "index_file": final.name,
            "index_sha256": sha,
            "index_bytes": final.stat().st_size,
            "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **(meta or {}),
        }
        write_json_atomic(folder / MANIFEST, manifest)
        # Superseded files stay: a reader may be opening them. Writers prune under the folder's
        # lock (prune_folder), keeping the previous state's files too.
        return IndexManifest.from_dict(manifest)

    @classmethod
    def load(
        cls, folder: str | Path, *, fix: str = "searchcore index build"
    ) -> tuple[HnswIndex, IndexManifest]:
        """Load a folder written by :meth:`save`, refusing anything inconsistent."""
        import hnswlib

        folder = Path(folder)
        record = read_manifest(folder, fix=fix)
        manifest = record.store  # the folder's own fields, checked by read_manifest
        path = folder / manifest["index_file"]
        if not path.is_file():
            raise IndexMismatchError(
                f"index file {path.name} is missing in {folder}; rebuild with `{fix}`"
            )
        if (
            path.stat().st_size != manifest["index_bytes"]
            or file_sha256(path) != manifest["index_sha256"]
        ):
            raise IndexMismatchError(
                f"index file {path} is corrupt (checksum mismatch); rebuild with `{fix}`"
            )
        verify_hnsw_file(path, manifest, fix)
        index = hnswlib.Index(space=manifest["space"], dim=manifest["dim"])
        try:
            index.load_index(
                str(path), max_elements=manifest["capacity"], allow_replace_deleted=True
            )
        except Exception as exc:
            raise IndexMismatchError(
                f"hnswlib cannot read {path}: {exc}; rebuild with `{fix}`"
            ) from None
        if index.get_current_count() != manifest["total"]:
            raise IndexMismatchError(
                f"index {path} holds {index.get_current_count()} vectors, "
                f"its manifest says {manifest['total']}; rebuild with `{fix}`"
            )
        obj = cls(
            manifest["dim"],
            space=manifest["space"],
            m=manifest["M"],
            ef_construction=manifest["ef_construction"],
            ef_search=manifest["ef_search"],
            _index=index,
            _deleted=set(manifest["deleted"]),
        )
        return obj, record


# hnswlib's file (hnswalg.h, saveIndex/loadIndex): a header of six size_t, an int, a uint32,
# three size_t, a double and a size_t; then `count` level-0 blocks of `per_elem` bytes (a
# uint32 whose low 16 bits count the links and whose third byte holds the deleted mark, maxM0
# neighbour ids, the vector, an int64 label); then, per element, a uint32 byte size and that
# many bytes of upper-level link blocks. hnswlib trusts every number in it: a crafted file can
# make it allocate without bound, abort, or later read out of bounds through a neighbour id. So
# the whole structure is checked here, with numpy, before hnswlib reads a byte.
_HNSW_HEADER = struct.Struct("<6QiI3QdQ")


def verify_hnsw_file(path: Path, manifest: dict[str, Any], fix: str) -> None:
    """Refuse an index file whose structure hnswlib could not load safely."""
    bad = f"index file {path} is malformed or does not match its manifest"
    size = path.stat().st_size
    if size < _HNSW_HEADER.size:
        raise IndexMismatchError(f"{bad} (too short); rebuild with `{fix}`")
    data = np.memmap(path, dtype=np.uint8, mode="r")
    (
        offset0,
        max_elements,
        count,
        per_elem,
        label_off,
        data_off,
        max_level,
        enter,
        maxm,
        maxm0,
        m,
        _mult,
        _efc,
    ) = _HNSW_HEADER.unpack(bytes(data[: _HNSW_HEADER.size]))
    dim = manifest["dim"]
    level0_end = _HNSW_HEADER.size + count * per_elem
    header_ok = (
        offset0 == 0
        and count == manifest["total"]
        and count <= max_elements
        and m == manifest["M"]
        and maxm == m
        and maxm0 == 2 * m
        and data_off == 4 + 4 * maxm0
        and label_off == data_off + 4 * dim
        and per_elem == label_off + 8
        and 0 <= max_level < 64
        and (count == 0 or enter < count)
        and level0_end + 4 * count <= size
    )
    if not header_ok:
        raise IndexMismatchError(f"{bad} (header); rebuild with `{fix}`")
    if count == 0:
        return
    level0 = data[_HNSW_HEADER.size : level0_end].reshape(count, per_elem)
    n_links = level0[:, 0].astype(np.uint32) | (level0[:, 1].astype(np.uint32) << 8)
    links = np.ascontiguousarray(level0[:, 4:data_off]).view("<u4")
    used = np.arange(maxm0)[None, :] < n_links[:, None]
    labels = np.ascontiguousarray(level0[:, label_off:per_elem]).view("<i8").ravel()
    if (n_links > maxm0).any() or (links[used] >= count).any():
        raise IndexMismatchError(f"{bad} (level-0 links); rebuild with `{fix}`")
    if (labels < 0).any() or len(np.unique(labels)) != count:
        raise IndexMismatchError(f"{bad} (labels); rebuild with `{fix}`")
    block = 4 + 4 * maxm  # one upper-level link block
    upper = bytes(data[level0_end:])  # plain bytes: the walk below reads 100k sizes fast
    starts: list[int] = []  # where each element's blocks start (in ``upper``), and how many
    sizes: list[int] = []
    pos, end, read = 0, len(upper), int.from_bytes
    for _ in range(count):  # upper levels: few elements have them (about 1 in M)
        if pos + 4 > end:
            raise IndexMismatchError(f"{bad} (truncated link lists); rebuild with `{fix}`")
        nbytes = read(upper[pos : pos + 4], "little")
        pos += 4
        if nbytes:
            if nbytes % block or nbytes // block > max_level or pos + nbytes > end:
                raise IndexMismatchError(f"{bad} (link list size); rebuild with `{fix}`")
            starts.append(pos)
            sizes.append(nbytes // block)
            pos += nbytes
    if pos != end:
        raise IndexMismatchError(f"{bad} (trailing bytes); rebuild with `{fix}`")
    if starts:  # every block at once
        first = np.repeat(np.asarray(starts), sizes)
        nth = np.arange(len(first)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        raw = np.frombuffer(upper, dtype=np.uint8)
        blocks = raw[(first + nth * block)[:, None] + np.arange(block)[None, :]]
        counts = blocks[:, 0].astype(np.uint32) | (blocks[:, 1].astype(np.uint32) << 8)
        ids = np.ascontiguousarray(blocks[:, 4:]).view("<u4")
        if (counts > maxm).any() or (
            ids[np.arange(maxm)[None, :] < counts[:, None]] >= count
        ).any():
            raise IndexMismatchError(f"{bad} (upper links); rebuild with `{fix}`")


def commit_folder(
    folder: Path, index: HnswIndex, meta: dict[str, Any], previous: IndexManifest | None
) -> IndexManifest:
    """Save ``index`` with ``meta`` as the folder's next state after ``previous`` (the manifest
    the caller's change is based on), then prune what neither of the two needs.

    The caller holds the folder's writer lock (:func:`searchcore.fsutil.folder_lock`) from
    reading ``previous`` to here: that is what makes read-modify-commit safe across processes.
    """
    generation = (previous.generation if previous is not None else 0) + 1
    manifest = index.save(folder, {**meta, "generation": generation})
    prune_folder(folder, manifest_files(manifest) | manifest_files(previous))
    return manifest
