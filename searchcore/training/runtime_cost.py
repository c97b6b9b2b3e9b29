"""What a faster runtime costs in retrieval, paired query by query on a catalog's held-out products.

The held-out products are ``eval``'s (the newest ``fraction`` by ``split_by``, or a hash split);
each gets a shopper photo (the headline condition of ``tune``, seeded per product) and its
title. Every runtime embeds the same catalog photos, shopper photos and titles; a query's rank is
the rank of its own product's catalog photo among the queried products' photos. Two runtimes
are compared with a two-sided sign test over the queries one gets right and the other wrong.

:func:`int8_verdict` is the rule ``--runtime auto`` follows: int8 becomes a model folder's
default (``searchcore model export --int8 --catalog``, recorded in ``onnx.json``) only where it
lost nothing significant on any measure over at least :data:`MIN_QUERIES` held-out products.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from searchcore.catalog import Catalog
from searchcore.errors import ConfigError
from searchcore.training.verdicts import SIGNIFICANCE, paired_counts, significant

MEASURES = (("photo", 1), ("photo", 10), ("title", 1), ("title", 10))
# Fewer queries than this and a loss that matters could hide in the test's noise: with ~5% of
# 200 queries discordant, a 9-1 split (a 4-point loss of R@1) is already significant.
MIN_QUERIES = 200


@dataclass(frozen=True)
class CostQueries:
    """Held-out products' catalog photos (the gallery), shopper photos of them and titles."""

    rows: list[int]  # catalog rows, in query order
    photos: list[Image.Image]
    queries: list[Image.Image]
    titles: list[str]
    condition: str
    held_out: int  # held-out products (queries: up to ``n`` of them, those with a readable photo)


def held_out_queries(
    catalog: Catalog,
    *,
    fraction: float = 0.2,
    seed: int = 0,
    split_by: str = "id",
    n: int = 1000,
    condition: str | None = None,
) -> CostQueries:
    """Up to ``n`` of ``catalog``'s held-out products as queries (see the module docstring)."""
    from searchcore.degrade import degrade, parse_condition
    from searchcore.training.data import load_photos, sample, test_mask
    from searchcore.training.tune import SHOPPER_CONDITIONS

    if not 0 < fraction <= 1 or n < 2:
        raise ConfigError("the held-out fraction must be in (0, 1] and queries at least 2")
    held = np.flatnonzero(test_mask(catalog.df, fraction, seed, split_by))
    # only the sampled products' photos are decoded: a big shop holds out tens of thousands
    chosen = held[sample(len(held), n, np.random.default_rng(seed))]
    rows, photos, _ = load_photos(catalog, chosen.tolist())
    if len(rows) < 2:
        raise ConfigError(f"{len(rows)} held-out products with a readable photo; 2 at least")
    name, cond = SHOPPER_CONDITIONS[0] if condition is None else parse_condition(condition)
    spec = f"{name}:{cond.spec()}"
    seeds = [np.random.default_rng([seed, r]) for r in rows]  # a product's photo, whatever n
    return CostQueries(
        rows=rows,
        photos=photos,
        queries=[degrade(p, cond, rng) for p, rng in zip(photos, seeds, strict=True)],
        titles=[str(t) for t in catalog.df["title"].iloc[rows]],
        condition=spec,
        held_out=len(held),
    )


def ranks(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """1-based rank of gallery item i for query i (ties count against it)."""
    scores = queries @ gallery.T
    own = scores[np.arange(len(queries)), np.arange(len(queries))]
    return (scores > own[:, None]).sum(axis=1) + 1


def runtime_ranks(embedder: Any, qs: CostQueries) -> dict[str, np.ndarray]:
    """Each query's rank under ``embedder``: shopper photo -> photo, title -> photo."""
    gallery = embedder.embed_images(qs.photos)
    return {
        "photo": ranks(embedder.embed_images(qs.queries), gallery),
        "title": ranks(embedder.embed_texts(qs.titles), gallery),
    }


def paired(
    reference: dict[str, np.ndarray], candidate: dict[str, np.ndarray]
) -> dict[str, dict[str, Any]]:
    """Per measure (``photo R@1``...): both recalls, the queries the candidate gained and lost
    against the reference, and the sign test's two-sided p."""
    out = {}
    for what, k in MEASURES:
        a, b = reference[what] <= k, candidate[what] <= k
        out[f"{what} R@{k}"] = {
            "reference": float(a.mean()),
            "candidate": float(b.mean()),
            **paired_counts(a, b),
        }
    return out


def int8_verdict(measures: dict[str, dict[str, Any]], queries: int) -> dict[str, Any]:
    """Is int8's loss within the noise? Yes only with at least :data:`MIN_QUERIES` queries and
    no measure where it lost significantly more queries than it gained (p < SIGNIFICANCE)."""
    worse = significant(measures, worse=True)
    if queries < MIN_QUERIES:
        why = f"only {queries} held-out queries (at least {MIN_QUERIES} are needed to tell)"
    elif worse:
        why = "significantly worse than torch on " + ", ".join(worse)
    else:
        why = f"no significant loss on {queries} held-out queries (sign tests, p >= {SIGNIFICANCE})"
    return {"within_noise": queries >= MIN_QUERIES and not worse, "why": why}


def measure_int8(reference: Any, int8: Any, qs: CostQueries) -> dict[str, Any]:
    """int8's retrieval cost against ``reference`` (torch) on ``qs``, with its verdict: what
    ``onnx.json`` records as the int8 variant's ``retrieval_cost``."""
    measures = paired(runtime_ranks(reference, qs), runtime_ranks(int8, qs))
    return {
        "queries": len(qs.rows),
        "held_out": qs.held_out,
        "condition": qs.condition,
        "reference": "torch fp32",
        "measures": measures,
        **int8_verdict(measures, len(qs.rows)),
    }


def cost_lines(cost: dict[str, Any]) -> list[str]:
    """The retrieval cost for a person: one line per measure, then the verdict."""
    lines = [f"int8's retrieval cost on {cost['queries']} held-out products (vs torch fp32):"]
    for name, r in cost["measures"].items():
        lines.append(
            f"  {name}: {r['reference']:.3f} -> {r['candidate']:.3f} "
            f"(+{r['gained']} / -{r['lost']}, p = {r['p']:.2g})"
        )
    lines.append(f"  {cost['why']}")
    return lines
