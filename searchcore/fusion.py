"""Fusing the vector ranking and the lexical (BM25) ranking of a text query into one.

Two methods, measured side by side by ``searchcore eval`` (README, "Text search"):

* ``rrf``, reciprocal rank fusion (Cormack et al., 2009): a product scores
  ``sum(1 / (RRF_K + rank))`` over the rankings it appears in. It needs no score calibration,
  which is why Elasticsearch, Weaviate and Vespa offer it as their default hybrid fusion.
* ``weighted``: ``weight * bm25 / best + (1 - weight) * cosine`` over the union of both
  candidate lists (a product the lexical side did not return counts as bm25 0), where ``best``
  is the highest BM25 score any product could reach for the query's words (a convex
  combination with theoretical-maximum normalisation, as Bruch et al., 2023, "An Analysis of
  Fusion Functions for Hybrid Retrieval", recommend): a product that matches every word counts
  fully, one that matches a single common word little, whatever else the words found.

One definition for the engine and the evaluation: what is measured is what is served.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

MODES = ("hybrid", "vector", "lexical")
FUSIONS = ("rrf", "weighted")
RRF_K = 60
LEXICAL_WEIGHT = 0.7  # of the weighted fusion (README, "Text search": 0.3, 0.5 and 0.7 measured)


@dataclass(frozen=True)
class Fused:
    row: int
    score: float  # the fusion's score (what the order follows)
    matched: tuple[str, ...]  # which side found it: "lexical", "vector"


def fuse(
    vector_rows: Sequence[int],
    lexical_rows: Sequence[int],
    k: int,
    *,
    method: str,
    cosine: Mapping[int, float] | None = None,
    bm25: Mapping[int, float] | None = None,
    best: float | None = None,
    weight: float = LEXICAL_WEIGHT,
) -> list[Fused]:
    """The ``k`` best products of two rankings (each best first, rows unique within a list).

    ``cosine`` and ``bm25`` (row -> score) are needed by ``weighted`` only: ``cosine`` for every
    row of either list, ``bm25`` for the lexical rows, and ``best`` (default: the highest
    ``bm25``) to scale it. Ties keep the vector side's order first.
    """
    if method not in FUSIONS:
        raise ValueError(f"fusion must be one of {', '.join(FUSIONS)}, not {method!r}")
    sides: dict[int, list[str]] = {}
    for name, rows in (("vector", vector_rows), ("lexical", lexical_rows)):
        for row in rows:
            sides.setdefault(int(row), []).append(name)
    score: dict[int, float] = {}
    if method == "rrf":
        for rows in (vector_rows, lexical_rows):
            for rank, row in enumerate(rows, start=1):
                score[int(row)] = score.get(int(row), 0.0) + 1.0 / (RRF_K + rank)
    else:
        cos, lex = cosine or {}, bm25 or {}
        top = best or max((lex.get(int(r), 0.0) for r in lexical_rows), default=0.0) or 1.0
        for row in sides:
            score[row] = weight * lex.get(row, 0.0) / top + (1 - weight) * cos.get(row, 0.0)
    first = {row: i for i, row in enumerate(sides)}
    order = sorted(score, key=lambda r: (-score[r], first[r]))[:k]
    return [Fused(r, score[r], tuple(sorted(sides[r]))) for r in order]
