"""Does upscaling help a model? Paired sign tests over the same queries, overall and per width.

``upscale_verdict`` answers for the upscaler ``auto`` would use, ``every_verdict`` for every
upscaler evaluated; each compares upscaling every query of each shrinking condition with not
upscaling it, query by query, and, for conditions whose photos span a range of widths (a
shopper's 20-60 px), per width band (:data:`~searchcore.training.evaluate.WIDTH_BANDS`): the
measured crossover, which ``auto`` follows photo by photo (:mod:`searchcore.upscale.verdict`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

# An upscaler "helps" retrieval when, on some condition that shrinks the photo, it moves
# significantly more queries into first place than out of it (a paired sign test over the same
# queries, two-sided p below this), and on no condition significantly more out than in.
# Anything weaker is not worth the upscaling time: ``auto`` then skips the upscaler.
SIGNIFICANCE = 0.05
# Width bands (px) results and verdicts are given for: where does retrieval (and upscaling)
# start to fail as the shopper's photo gets smaller?
WIDTH_BANDS = ((0, 30), (30, 45), (45, 64), (64, 128), (128, 10**9))


def band_label(lo: int, hi: int) -> str:
    return f"{lo}-{hi - 1} px" if hi < 10**9 else f">={lo} px"


def sign_test(gained: int, lost: int) -> float:
    """Two-sided exact binomial sign test: p of a split at least this uneven under 50/50."""
    n = gained + lost
    if n == 0:
        return 1.0
    k = min(gained, lost)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_counts(before: np.ndarray, after: np.ndarray) -> dict[str, Any]:
    """Two runs over the same queries (hit or not per query): the queries ``after`` gets right
    and ``before`` wrong (``gained``), the reverse (``lost``) and the sign test's ``p``."""
    gained, lost = int((after & ~before).sum()), int((before & ~after).sum())
    return {"gained": gained, "lost": lost, "p": sign_test(gained, lost)}


def significant(paired: dict[str, dict[str, Any]], *, worse: bool) -> list[str]:
    """The keys of ``paired`` (:func:`paired_counts` records) where significantly more queries
    were lost than gained (``worse``) or gained than lost, at :data:`SIGNIFICANCE`."""
    return [
        n
        for n, v in paired.items()
        if v["p"] < SIGNIFICANCE and (v["lost"] > v["gained"] if worse else v["gained"] > v["lost"])
    ]


def upscale_verdict(
    exact: dict[str, Any],
    strategies: Sequence[Any],
    config: Any,
    ranks: dict[tuple[str, str], np.ndarray],
    widths: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Does the ``auto`` strategy's upscaler raise exact-product Recall@1 over ``never``?

    Measured with the upscaler applied to every query of each condition that shrinks the photo
    (the photos ``auto`` upscales), paired query by query: ``gained`` counts the queries that
    upscaling moved into first place, ``lost`` those it moved out (see :data:`SIGNIFICANCE`).
    The answer is what ``auto`` should do for this model.
    """
    auto = next((s for s in strategies if s.policy is not None), None)
    if auto is None or auto.upscaler is None:
        return {}
    always = next((s for s in strategies if s.upscaler is auto.upscaler and s.policy is None), None)
    never = next((s for s in strategies if s.upscaler is None), None)
    if always is None or never is None:
        return {
            "upscaler": auto.upscaler.name,
            "note": "evaluate with 'never' and the upscaler itself to get a verdict",
        }
    from searchcore.upscale.verdict import upscaler_sha256

    verdict = paired_verdict(
        exact, config, ranks, widths, never.name, always.name, auto.upscaler.name
    )
    sha = upscaler_sha256(auto.upscaler)  # bound to these weights, not only to the name
    return {**verdict, "upscaler_sha256": sha} if sha else verdict


def every_verdict(
    exact: dict[str, Any],
    strategies: Sequence[Any],
    config: Any,
    ranks: dict[tuple[str, str], np.ndarray],
    widths: dict[str, np.ndarray],
) -> dict[str, Any]:
    """:func:`paired_verdict` for every strategy that always upscales (bicubic included)."""
    never = next((s for s in strategies if s.upscaler is None), None)
    if never is None:
        return {}
    return {
        s.name: paired_verdict(exact, config, ranks, widths, never.name, s.name, s.upscaler.name)
        for s in strategies
        if s.upscaler is not None and s.policy is None
    }


def paired_verdict(
    exact: dict[str, Any],
    config: Any,
    ranks: dict[tuple[str, str], np.ndarray],
    widths: dict[str, np.ndarray],
    never: str,
    always: str,
    name: str,
) -> dict[str, Any]:
    """Upscaling (strategy ``always``) against none (``never``), query by query."""
    paired: dict[str, dict[str, Any]] = {}
    for n, d in config.conditions:
        if not d.shrinks:
            continue
        paired[n] = {
            "delta_R@1": exact[n][always]["R@1"] - exact[n][never]["R@1"],
            "delta_R@10": exact[n][always]["R@10"] - exact[n][never]["R@10"],
            **paired_counts(ranks[(n, never)] == 1, ranks[(n, always)] == 1),
        }
    bands = _bands(config, ranks, widths, never, always)
    better, worse = significant(paired, worse=False), significant(paired, worse=True)
    helps = bool(better) and not worse
    if helps:
        reason = (
            f"upscaling with {name} raises exact-product Recall@1 on "
            + ", ".join(
                f"{n} photos ({paired[n]['delta_R@1']:+.3f}, p={paired[n]['p']:.3f})"
                for n in better
            )
            + " and significantly lowers it on none"
        )
    elif worse:
        reason = f"upscaling with {name} lowers exact-product Recall@1 on " + ", ".join(
            f"{n} photos ({paired[n]['delta_R@1']:+.3f})" for n in worse
        )
    else:
        best = max(paired, key=lambda n: paired[n]["delta_R@1"]) if paired else None
        reason = f"upscaling with {name} does not measurably help this model" + (
            f": at best {paired[best]['delta_R@1']:+.3f} Recall@1 on {best} photos "
            f"({paired[best]['gained']} queries gained, {paired[best]['lost']} lost, "
            f"p={paired[best]['p']:.2f})"
            if best
            else ""
        )
    return {
        "upscaler": name,
        "helps": helps,
        "paired": paired,
        "bands": bands,
        "reason": reason,
        "rule": (
            f"helps when, on some shrunk condition, a paired sign test finds "
            f"significantly more queries gained than lost (p < {SIGNIFICANCE}) and on "
            "none significantly more lost"
        ),
    }


def _bands(
    config: Any,
    ranks: dict[tuple[str, str], np.ndarray],
    widths: dict[str, np.ndarray],
    never: str,
    always: str,
) -> list[dict[str, Any]]:
    """Upscaling against none per photo width band, over every query of the conditions whose
    photos span several widths (a shopper's 20-60 px): ``helps`` where significantly more
    queries were moved into first place than out of it, ``hurts`` where the reverse."""
    pooled_up, pooled_base, pooled_w = [], [], []
    for n, d in config.conditions:
        w = widths.get(n)
        if not d.max_width or w is None or len(np.unique(w)) < 2:
            continue
        pooled_up.append(ranks[(n, always)] == 1)
        pooled_base.append(ranks[(n, never)] == 1)
        pooled_w.append(w)
    if not pooled_w:
        return []
    up, base, w = (np.concatenate(x) for x in (pooled_up, pooled_base, pooled_w))
    out = []
    for lo, hi in WIDTH_BANDS:
        sel = (w >= lo) & (w < hi)
        if not sel.any():
            continue
        counts = paired_counts(base[sel], up[sel])
        gained, lost, p = counts["gained"], counts["lost"], counts["p"]
        out.append(
            {
                "lo": lo,
                "hi": hi,
                "label": band_label(lo, hi),
                "queries": int(sel.sum()),
                "delta_R@1": float(up[sel].mean() - base[sel].mean()),
                **counts,
                "helps": gained > lost and p < SIGNIFICANCE,
                "hurts": lost > gained and p < SIGNIFICANCE,
            }
        )
    return out
