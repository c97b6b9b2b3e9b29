"""Why each match: what a result shares with the query, said in a shopper's words.

Each reason is a fact the answer can stand behind:

* **the photo's predicted attributes** (:mod:`searchcore.embed.heads`): "same category
  (sneakers)" when the result's catalog value is the value the heads predict for the photo with
  at least :data:`CONFIDENT` probability;
* **a product's own attributes** ("More like this"): "same colour (red)" for each facet column
  (:mod:`searchcore.facets`) the result shares with the product the shopper started from;
* **the words**: "your words: nike, red" for the query's words found in the result's text
  (after the lexical index's stemming and typo rules);
* **the look**: "looks alike (similarity 0.84)" for a result the photo's embedding found; a
  result the words' embedding found "matches the meaning of your words".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

from searchcore.facets import normalise
from searchcore.stores.lexical import record_text, tokenize

CONFIDENT = 0.5  # a predicted value is a reason only when at least this likely
MAX_WORDS = 4  # words listed in one reason


def confident(predicted: Mapping[str, Sequence[tuple[str, float]]] | None) -> dict[str, str]:
    """Column -> the predicted value the heads give at least :data:`CONFIDENT`."""
    out = {}
    for column, options in (predicted or {}).items():
        if options and options[0][1] >= CONFIDENT:
            out[column] = options[0][0]
    return out


def shared(fields: Mapping[str, str], wanted: Mapping[str, str]) -> list[str]:
    """ "same COLUMN (value)" for each column where ``fields`` has the ``wanted`` value."""
    return [
        f"same {column} ({fields[column]})"
        for column, value in wanted.items()
        if column in fields and normalise(fields[column]) == normalise(value) and value.strip()
    ]


def matched_words(fields: Mapping[str, Any], words: Sequence[str], query: str) -> list[str]:
    """The query's words (as the shopper typed them, where one stems to a searched word) that
    the product's text contains."""
    have = set(tokenize([record_text(fields)])[0]) & set(words)
    if not have:
        return []
    out = [word for word, stems in _stems(query) if any(s in have for s in stems)]
    covered = {s for stems in tokenize(out) for s in stems}
    out += sorted(have - covered)  # typo-mapped or joined words: as the catalog has them
    return list(dict.fromkeys(w for w in out if w))[:MAX_WORDS]


@lru_cache(maxsize=256)
def _stems(query: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Each word of the query as typed (punctuation off) with its stems, once per query (not
    once per result)."""
    raw = query.split()
    return tuple(
        (word.strip(".,;:!?\"'()"), tuple(stems))
        for word, stems in zip(raw, tokenize(raw), strict=True)
    )


def reasons(
    fields: Mapping[str, str],
    matched: Sequence[str],
    score: float,
    *,
    photo: bool,
    predicted: Mapping[str, str] | None = None,
    source: Mapping[str, str] | None = None,
    words: Sequence[str] = (),
    query: str = "",
) -> list[str]:
    """Why one result (its catalog ``fields``, which side ``matched`` it, its cosine ``score``)
    answers the query."""
    out = shared(fields, predicted or {}) + shared(fields, source or {})
    if "lexical" in matched and words:
        found = matched_words(fields, words, query)
        if found:
            out.append(f"your words: {', '.join(found)}")
    if "vector" in matched:
        out.append(
            f"looks alike (similarity {score:.2f})"
            if photo
            else "matches the meaning of your words"
        )
    return out
