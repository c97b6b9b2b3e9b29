"""One vector-store interface, two backends, chosen by where the index lives.

- a folder path: the embedded hnswlib index (:class:`searchcore.stores.hnsw.HnswIndex`), the
  default;
- a Milvus URI: ``http(s)://host:19530`` (Milvus standalone or distributed, Zilliz Cloud with
  ``SEARCHCORE_MILVUS_TOKEN``) or a local ``*.db`` file (Milvus Lite):
  :class:`searchcore.stores.milvus.MilvusStore`.

The engine, the CLI and the app only use the methods of :class:`VectorStore`. Labels are
catalog rows in both. A store that ``pushes_filters`` gets the :class:`Filters` themselves
(Milvus turns them into expressions evaluated next to the data); the others get a boolean mask
over catalog rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from searchcore.errors import ConfigError

MILVUS_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")


@dataclass(frozen=True)
class Filters:
    """Metadata filters; a product must pass all of them.

    ``attributes``: ``((column, (value, ...)), ...)``, any facet column of the catalog
    (:mod:`searchcore.facets`): a product passes when its value is one of the column's values
    (compared as :func:`searchcore.facets.normalise` makes them), for every column given.
    """

    category: str | None = None
    min_price: float | None = None
    max_price: float | None = None
    attributes: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        lo, hi = self.min_price, self.max_price
        if lo is not None and hi is not None and lo > hi:
            raise ConfigError(f"min price {lo} is above max price {hi}")

    @property
    def active(self) -> bool:
        return (
            bool(self.category)
            or self.min_price is not None
            or self.max_price is not None
            or bool(self.attributes)
        )


@dataclass(frozen=True)
class Neighbours:
    """Results of one query, best first; ``scores`` are cosine similarities."""

    labels: np.ndarray  # int64 (k,)
    scores: np.ndarray  # float32 (k,)


@runtime_checkable
class VectorStore(Protocol):
    dim: int
    pushes_filters: bool

    def __len__(self) -> int: ...

    def add(self, vectors: np.ndarray, labels: Any, records: list[dict] | None = None) -> None: ...

    def remove(self, labels: Any) -> None: ...

    def search(
        self,
        query: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        filters: Filters | None = None,
    ) -> Neighbours: ...

    def get_vectors(self, labels: Any) -> np.ndarray: ...

    def live_labels(self) -> np.ndarray: ...

    def lexical(self) -> Any:
        """The store's own lexical search (a ``LexicalSide``, see :mod:`.lexical`), or None
        when the words are searched beside it (an index folder's lexical files)."""
        ...


def is_milvus(location: str | object) -> bool:
    """A Milvus URI or a Milvus Lite ``*.db`` file, as opposed to an index folder."""
    text = str(location)
    return text.startswith(MILVUS_SCHEMES) or text.endswith(".db")
