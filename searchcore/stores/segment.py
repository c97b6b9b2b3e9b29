"""A live shop's vector store: the last snapshot's HNSW graph plus the vectors changed since.

Inserting into an HNSW graph costs a graph search per vector (about 1.6 ms at 100k products),
and replaying a long change log that way would make opening slow. So, like the growing segments
of Milvus or Lucene, the vectors a change log added or replaced live in a small flat segment
searched exactly (a matrix product: well under a millisecond for a few thousand vectors), and
their old slots in the graph are marked deleted. Compaction folds the segment into the graph
(:meth:`LiveIndex.fold`) before the snapshot is saved.

Writers change it under the folder's lock (one at a time); queries read concurrently: the
segment has its own readers-writer lock, and a vector moves by being added to the segment
before it leaves the graph, so a query sees it at least once (duplicates are merged).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from searchcore.errors import SearchError
from searchcore.stores.base import Filters, Neighbours
from searchcore.stores.hnsw import HnswIndex, RWLock


class LiveIndex:
    """``base`` (an :class:`HnswIndex`, label == catalog row) and a flat segment of changes."""

    pushes_filters = False

    def __init__(self, base: HnswIndex) -> None:
        self.base = base
        self.dim = base.dim
        self._lock = RWLock()
        self._labels = np.empty(0, dtype=np.int64)
        self._vecs = np.empty((0, self.dim), dtype=np.float32)
        self._slot: dict[int, int] = {}

    def __len__(self) -> int:
        return len(self.base) + len(self._slot)

    @property
    def changed(self) -> int:
        """Vectors in the flat segment (what the next compaction folds into the graph)."""
        return len(self._slot)

    def lexical(self) -> None:
        return None

    # -- writes (one writer at a time: the folder's lock) ---------------------------------
    def add(self, vectors: np.ndarray, labels: Any, records: list[dict] | None = None) -> None:
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        labels = np.asarray(labels, dtype=np.int64).ravel()
        if vectors.ndim != 2 or vectors.shape[1] != self.dim:
            raise SearchError(f"expected vectors of dimension {self.dim}, got {vectors.shape}")
        if len(labels) != len(vectors):
            raise SearchError(f"{len(vectors)} vectors but {len(labels)} labels")
        if len(labels) == 0:
            return
        if not np.isfinite(vectors).all():
            raise SearchError("vectors contain NaN or infinity")
        if labels.min() < 0 or len(np.unique(labels)) != len(labels):
            raise SearchError("labels must be unique, non-negative integers")
        if self.base.space == "cosine":  # as hnswlib stores them, so scores agree
            norms = np.linalg.norm(vectors, axis=1, keepdims=True)
            vectors = vectors / np.maximum(norms, 1e-12)
        with self._lock.write():
            new = [int(x) for x in labels if int(x) not in self._slot]
            n = len(self._slot)
            if n + len(new) > len(self._labels):  # grow by doubling: amortised O(change)
                size = max(64, 2 * (n + len(new)))
                labels_buf = np.full(size, -1, dtype=np.int64)
                labels_buf[:n] = self._labels[:n]
                vecs_buf = np.zeros((size, self.dim), dtype=np.float32)
                vecs_buf[:n] = self._vecs[:n]
                self._labels, self._vecs = labels_buf, vecs_buf
            for label, vec in zip(labels.tolist(), vectors, strict=True):
                slot = self._slot.get(label)
                if slot is None:
                    slot = len(self._slot)
                    self._labels[slot] = label
                    self._slot[label] = slot
                self._vecs[slot] = vec
        moved = labels[self.base.holds(labels)]
        if len(moved):  # in the segment first, then out of the graph: never in neither
            self.base.remove(moved)

    def remove(self, labels: Any) -> None:
        labels = np.asarray(labels, dtype=np.int64).ravel()
        in_base = self.base.holds(labels)
        unknown = [int(x) for x, b in zip(labels, in_base, strict=True) if not b]
        unknown = [x for x in unknown if x not in self._slot]
        if unknown:
            raise SearchError(f"cannot remove labels not in the index: {unknown[:5]}")
        with self._lock.write():
            for label in labels.tolist():
                slot = self._slot.pop(label, None)
                if slot is None:
                    continue
                last = len(self._slot)  # move the last entry into the freed slot
                if slot != last:
                    moved = int(self._labels[last])
                    self._labels[slot], self._vecs[slot] = moved, self._vecs[last]
                    self._slot[moved] = slot
                self._labels[last] = -1
        if in_base.any():
            self.base.remove(labels[in_base])

    def fold(self) -> HnswIndex:
        """Move the segment into the graph (compaction) and return the graph."""
        with self._lock.write():
            n = len(self._slot)
            if n:
                self.base.add(self._vecs[:n].copy(), self._labels[:n].copy())
            self._labels = np.empty(0, dtype=np.int64)
            self._vecs = np.empty((0, self.dim), dtype=np.float32)
            self._slot = {}
        return self.base

    # -- reads ------------------------------------------------------------------------------
    def search(
        self,
        query: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        filters: Filters | None = None,
    ) -> Neighbours:
        found = self.base.search(query, k, allowed)
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        with self._lock.read():
            n = len(self._slot)
            labels = self._labels[:n].copy()
            vecs = self._vecs[:n]
            if allowed is not None and n:
                keep = (labels < len(allowed)) & allowed[np.minimum(labels, len(allowed) - 1)]
                labels, vecs = labels[keep], vecs[keep]
            sims = self._similarity(vecs, q) if len(labels) else np.empty(0, np.float32)
        if not len(labels):
            return found
        all_labels = np.concatenate([found.labels, labels])
        all_scores = np.concatenate([found.scores, sims])
        order = np.argsort(-all_scores, kind="stable")
        _, first = np.unique(all_labels[order], return_index=True)  # a moving vector: once
        best = order[np.sort(first)][:k]
        return Neighbours(all_labels[best].astype(np.int64), all_scores[best].astype(np.float32))

    def _similarity(self, vecs: np.ndarray, q: np.ndarray) -> np.ndarray:
        space = self.base.space
        if space == "cosine":
            return vecs @ (q / max(float(np.linalg.norm(q)), 1e-12))
        if space == "ip":
            return vecs @ q
        return 1.0 - ((vecs - q) ** 2).sum(axis=1) / 2.0

    def holds(self, labels: Any) -> np.ndarray:
        """Which of ``labels`` have a vector here (a boolean per label)."""
        labels = np.asarray(labels, dtype=np.int64).ravel()
        with self._lock.read():
            mine = np.array([int(x) in self._slot for x in labels], dtype=bool)
        return mine | self.base.holds(labels)

    def get_vectors(self, labels: Any) -> np.ndarray:
        labels = [int(x) for x in labels]
        if not labels:
            return np.empty((0, self.dim), dtype=np.float32)
        with self._lock.read():
            mine = {x: self._vecs[self._slot[x]].copy() for x in labels if x in self._slot}
        rest = [x for x in labels if x not in mine]
        got = dict(zip(rest, self.base.get_vectors(rest), strict=True)) if rest else {}
        return np.stack([mine[x] if x in mine else got[x] for x in labels]).astype(np.float32)

    def live_labels(self) -> np.ndarray:
        with self._lock.read():
            mine = self._labels[: len(self._slot)].copy()
        return np.union1d(self.base.live_labels(), mine).astype(np.int64)
