"""``searchcore eval``: how well a model (and an upscaler) finds products, on products it never saw.

Four measurements over a seeded, product-level test split of one catalog (the *gallery*):

* **text -> product**: attribute queries ("red striped t-shirts", one per distinct value
  combination; relevant = every gallery product with exactly those values) and title queries
  (relevant = products with that title): Recall@1/5/10 and MRR;
* **image -> similar product**: each gallery photo queries the others; precision@1/10 of
  results that share its value of each attribute column (category, colour...);
* **image -> exact product**: degraded copies of gallery photos (:mod:`.degrade` conditions)
  must find their own product: Recall@1/10 and MRR, for each upscaling strategy side by side
  (``never``, ``bicubic``, a named upscaler, ``auto``);
* **upscaler quality**: PSNR/SSIM of each upscaler's output against the original photo, next to
  bicubic's, and its cost in ms per query photo.

Search is brute force (exact cosine over the gallery): the numbers measure the model, not the
approximate index, whose recall is tested on its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from PIL import Image

from searchcore.catalog import Catalog
from searchcore.degrade import DEFAULT_CONDITIONS, Degradation, degrade
from searchcore.errors import ConfigError, SearchError
from searchcore.training import metrics, text_eval
from searchcore.training.data import (
    DEFAULT_QUERY_ATTRS,
    DEFAULT_SIMILAR_ATTRS,
    labels,
    load_photos,
    present,
    sample,
    test_mask,
)
from searchcore.training.verdicts import WIDTH_BANDS, band_label, every_verdict, upscale_verdict

KS = (1, 5, 10)


class ImageTextEmbedder(Protocol):
    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


class _Upscaler(Protocol):
    @property
    def name(self) -> str: ...

    def upscale(self, img: Image.Image) -> Image.Image: ...


class _Policy(Protocol):
    def decide(self, img: Image.Image, mode: str | None = None) -> Any: ...


@dataclass(frozen=True)
class Strategy:
    """How query photos are treated before embedding.

    ``upscaler=None`` embeds them as they are. With a ``policy`` (``auto``), only the photos
    the policy picks are upscaled; ``skip_reason`` turns upscaling off altogether and says why
    (e.g. an evaluation showed that this upscaler does not help this model).
    """

    name: str
    upscaler: _Upscaler | None = None
    policy: _Policy | None = None
    skip_reason: str | Callable[[int], str | None] | None = None  # or one per photo width


@dataclass(frozen=True)
class EvalConfig:
    seed: int = 0
    test_fraction: float = 1.0
    split_by: str = "id"  # the newest products (data.test_mask), or "hash"
    conditions: tuple[tuple[str, Degradation], ...] = tuple(DEFAULT_CONDITIONS.items())
    query_attrs: tuple[str, ...] = DEFAULT_QUERY_ATTRS
    similar_attrs: tuple[str, ...] = DEFAULT_SIMILAR_ATTRS
    max_queries: int = 1000
    quality_images: int = 100
    ks: tuple[int, ...] = KS
    text_queries: tuple[dict[str, Any], ...] = ()  # fixed families (text_eval.load_text_queries)

    def __post_init__(self) -> None:
        if self.max_queries < 1 or self.quality_images < 0:
            raise ConfigError("max_queries must be >= 1 and quality_images >= 0")


@dataclass
class _Gallery:
    rows: list[int]
    photos: list[Image.Image]
    vectors: np.ndarray
    skipped: list[tuple[int, str]] = field(default_factory=list)


def evaluate(
    catalog: Catalog,
    embedder: ImageTextEmbedder,
    strategies: Sequence[Strategy] = (Strategy("never"),),
    config: EvalConfig = EvalConfig(),
    *,
    exclude_rows: Sequence[int] = (),
    progress: Callable[[str], None] | None = None,
    cache: dict[Any, Any] | None = None,
    heads: Any = None,
    verdict_applies: bool = False,
) -> dict[str, Any]:
    """Run every measurement; returns a JSON-ready dict (see :mod:`.report` for the files).

    ``exclude_rows`` are catalog rows the model was trained on: they are never in the test
    split, whatever the fraction. ``cache`` (a dict the caller keeps) holds the query photos
    as degraded and upscaled, so several models evaluated on the same split and conditions
    upscale each photo once; its keys include the seed, the condition and the upscaler.
    ``heads`` (the model's :class:`~searchcore.embed.heads.AttributeHeads`) are scored too:
    accuracy and calibration of "we think this is..." from catalog and from shoppers' photos.
    ``verdict_applies``: the caller stores this run's upscaling verdict for the model (``tune``,
    ``eval --write-verdict``), so ``auto``, where it ran without one, is scored as it will serve
    under it (:func:`_auto_as_served`).
    """
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    df = catalog.df
    excluded = {int(r) for r in exclude_rows}
    eligible = [r for r in range(len(df)) if r not in excluded]
    if not eligible:
        raise SearchError(
            "every product of this catalog was used to train the model: "
            "nothing is left to evaluate on"
        )
    held = test_mask(df.iloc[eligible], config.test_fraction, config.seed, config.split_by)
    test_rows = [r for r, h in zip(eligible, held, strict=True) if h]
    if len(test_rows) < 2:
        raise SearchError(f"the test split has {len(test_rows)} product(s); raise --test-fraction")

    say(f"embedding {len(test_rows)} gallery photos")
    rows, photos, skipped = load_photos(catalog, test_rows)
    gallery = _Gallery(rows, photos, embedder.embed_images(photos), skipped)
    rng = np.random.default_rng(config.seed)
    report: dict[str, Any] = {
        "catalog": {"path": str(catalog.source), "sha256": catalog.sha256, "rows": len(df)},
        "split": {
            "seed": config.seed,
            "test_fraction": config.test_fraction,
            "by": config.split_by,
            "excluded_training_rows": len(excluded),
            "gallery": len(rows),
            "skipped_images": len(skipped),
        },
    }
    if embedder.has_text:
        say("text -> product")
        report["text"] = text_eval.vector_tasks(
            df.iloc[gallery.rows], gallery.vectors, embedder, config, rng
        )
    else:
        report["text"] = {}  # e.g. raw pixels: no text tower
    say("text search: vector / lexical / hybrid")
    report["text_search"] = text_eval.run(df.iloc[gallery.rows], gallery.vectors, embedder, config)
    say("image -> similar product")
    columns = {c: labels(df[c].iloc[gallery.rows]) for c in present(df, config.similar_attrs)}
    pick = sample(len(gallery.rows), config.max_queries, rng)
    report["similar"] = {
        "queries": len(pick),
        **_similar(gallery.vectors[pick] @ gallery.vectors.T, pick, columns),
    }
    report["exact"], ranks, report["similar_shop"], upscaled = _exact_task(
        gallery, embedder, strategies, config, say, {} if cache is None else cache, columns
    )
    if heads is not None:
        say("attribute heads")
        report["attributes"] = _attribute_task(gallery, embedder, heads, config, df)
    say("upscaler quality")
    report["upscaler_quality"] = _quality_task(gallery, strategies, config)
    widths = {name: cond.pop("_widths") for name, cond in report["exact"].items()}
    report["verdict"] = upscale_verdict(report["exact"], strategies, config, ranks, widths)
    report["verdicts"] = every_verdict(report["exact"], strategies, config, ranks, widths)
    if verdict_applies:
        _auto_as_served(report, strategies, config, ranks, widths, upscaled)
    report["seconds"] = round(time.perf_counter() - started, 1)
    return report


def _similar(
    scores: np.ndarray, pick: np.ndarray, columns: dict[str, np.ndarray]
) -> dict[str, Any]:
    """P@1/P@10 of "more like this" per column: gallery product ``pick[i]`` queried with the
    scores of row ``i``, the product itself left out."""
    own = np.zeros_like(scores, dtype=bool)
    own[np.arange(len(pick)), pick] = True
    return {
        col: {f"P@{k}": metrics.precision_at_k(scores, lab[pick], lab, k, own) for k in (1, 10)}
        for col, lab in columns.items()
    }


Ranks = dict[tuple[str, str], np.ndarray]  # (condition, strategy) -> one value per query


def _apply(
    strategy: Strategy, img: Image.Image, cache: dict[Any, Any], key: tuple[Any, ...]
) -> tuple[Image.Image, bool, float]:
    """The photo as the strategy would embed it, whether it was upscaled, and the seconds
    the decision and upscaling took (as first measured, when the result comes from ``cache``)."""
    t0 = time.perf_counter()
    skip = strategy.skip_reason
    if strategy.upscaler is None or (skip(img.width) if callable(skip) else skip):
        return img, False, 0.0
    if strategy.policy is not None and not strategy.policy.decide(img, "auto").upscale:
        return img, False, time.perf_counter() - t0
    decided = time.perf_counter() - t0
    ukey = (*key, "upscaled", strategy.upscaler.name)
    if ukey not in cache:
        t1 = time.perf_counter()
        cache[ukey] = (strategy.upscaler.upscale(img), time.perf_counter() - t1)
    out, cost = cache[ukey]
    return out, True, decided + cost


def _by_width(ranks: np.ndarray, widths: np.ndarray, ks: Sequence[int]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for lo, hi in WIDTH_BANDS:
        sel = (widths >= lo) & (widths < hi)
        if sel.any():
            out[band_label(lo, hi)] = {
                **{f"R@{k}": metrics.recall_at_k(ranks[sel], k) for k in ks},
                "queries": int(sel.sum()),
            }
    return out


def _exact_task(
    g: _Gallery,
    embedder: ImageTextEmbedder,
    strategies: Sequence[Strategy],
    config: EvalConfig,
    say: Callable[[str], None],
    cache: dict[Any, Any],
    columns: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, Any], Ranks, dict[str, Any], Ranks]:
    """Metrics per condition and strategy, each query's rank (for paired comparisons) and
    whether it was upscaled (the fourth value).

    On the first condition (the headline: shoppers' photos at shop shapes), the photos embedded
    as they are also query for *similar* products: P@1/P@10 of each of ``columns``, the
    product itself left out (the third value returned)."""
    out: dict[str, Any] = {}
    all_ranks: Ranks = {}
    all_upscaled: Ranks = {}
    similar: dict[str, Any] = {}
    rng = np.random.default_rng([config.seed, 1])
    pick = sample(len(g.rows), config.max_queries, rng)
    relevant = np.zeros((len(pick), len(g.rows)), dtype=bool)
    relevant[np.arange(len(pick)), pick] = True
    for ci, (name, d) in enumerate(config.conditions):
        # Each product's degradation has its own seeded rng: same seed, same queries.
        keys = [(config.seed, d.spec(), int(g.rows[i])) for i in pick]
        queries = []
        for i, key in zip(pick, keys, strict=True):
            if key not in cache:
                cache[key] = degrade(
                    g.photos[i], d, np.random.default_rng([config.seed, ci, key[2]])
                )
            queries.append(cache[key])
        widths = np.array([q.size[0] for q in queries])
        w, h = queries[0].size
        size = f"{w}x{h}" if (widths == w).all() else f"{widths.min()}-{widths.max()} px wide"
        cond: dict[str, Any] = {"spec": d.spec(), "query_size": size, "_widths": widths}
        for s in strategies:
            say(f"exact product: {name} ({d.spec()}), upscaling {s.name}")
            seen, dids, spent = [], [], 0.0
            for q, key in zip(queries, keys, strict=True):
                img, did, cost = _apply(s, q, cache, key)
                spent += cost
                seen.append(img)
                dids.append(did)
            upscaled = sum(dids)
            scores = embedder.embed_images(seen) @ g.vectors.T
            ranks = metrics.first_relevant_ranks(scores, relevant)
            all_ranks[(name, s.name)] = ranks
            all_upscaled[(name, s.name)] = np.array(dids, dtype=bool)
            cond[s.name] = {
                **metrics.retrieval(scores, relevant, config.ks),
                "upscaled": upscaled / len(queries),
                "upscale_ms": 1000 * spent / len(queries),
            }
            if d.max_width:
                cond[s.name]["by_width"] = _by_width(ranks, widths, config.ks)
            if isinstance(s.skip_reason, str) or (callable(s.skip_reason) and upscaled == 0):
                note = s.skip_reason if isinstance(s.skip_reason, str) else s.skip_reason(widths[0])
                cond[s.name]["note"] = note
            if ci == 0 and s.upscaler is None and columns:
                similar = {
                    "condition": name,
                    "query_size": size,
                    "queries": len(pick),
                    **_similar(scores, pick, columns),
                }
        out[name] = cond
    return out, all_ranks, similar, all_upscaled


def _auto_as_served(
    report: dict[str, Any],
    strategies: Sequence[Strategy],
    config: EvalConfig,
    ranks: Ranks,
    widths: dict[str, np.ndarray],
    upscaled: Ranks,
) -> None:
    """Re-score ``auto`` under the verdict this run measured, where it ran without one.

    A model's first evaluation has no verdict yet, so ``auto`` upscaled every photo its policy
    chose; once the verdict is stored, it leaves the photos the verdict's rule skips (by width)
    as they are. Each such query takes ``never``'s rank: the same photo embedded as it is.
    """
    from searchcore.upscale.verdict import AutoRule

    auto = next((s for s in strategies if s.policy is not None), None)
    never = next((s for s in strategies if s.upscaler is None), None)
    verdict = report.get("verdict") or {}
    if auto is None or never is None or auto.skip_reason is not None or "helps" not in verdict:
        return
    rule = AutoRule({**verdict, "fingerprint": "these"}, "these")  # as it will be stored
    for name, cond in report["exact"].items():
        w = widths[name]
        skip = np.array([rule(int(x)) is not None for x in w], dtype=bool)
        if not skip.any():
            continue
        served = np.where(skip, ranks[(name, never.name)], ranks[(name, auto.name)])
        measured = cond[auto.name]
        kept = upscaled[(name, auto.name)] & ~skip
        share = kept.mean() / measured["upscaled"] if measured["upscaled"] else 0.0
        cond[auto.name] = {
            **metrics.rank_metrics(served, config.ks),
            "upscaled": float(kept.mean()),
            "upscale_ms": measured["upscale_ms"] * share,
            "note": "scored under the upscaling verdict this run measured (it leaves "
            f"{skip.mean():.0%} of these photos as they are): {verdict.get('reason', '')}",
        }
        if "by_width" in measured:
            cond[auto.name]["by_width"] = _by_width(served, w, config.ks)


def _attribute_task(
    g: _Gallery, embedder: ImageTextEmbedder, heads: Any, config: EvalConfig, df: Any
) -> dict[str, Any]:
    """The heads on the gallery's catalog photos, and on the first condition that changes the
    photo (the headline: shoppers' photos) -- the same seeded copies the exact-product task
    searches with."""
    from searchcore.training.heads import attribute_report

    conditions = list(enumerate(config.conditions))
    ci, (name, d) = next((c for c in conditions if c[1][1].spec() != "none"), conditions[0])
    pick = sample(len(g.rows), config.max_queries, np.random.default_rng([config.seed, 1]))
    queries = [
        degrade(g.photos[i], d, np.random.default_rng([config.seed, ci, int(g.rows[i])]))
        for i in pick
    ]
    rows = df.iloc[g.rows]
    out = {
        "catalog photos": attribute_report(heads, rows, {"catalog photos": g.vectors}),
        f"{name} photos": attribute_report(
            heads, rows.iloc[pick], {f"{name} photos": embedder.embed_images(queries)}
        ),
    }
    merged: dict[str, Any] = {"trained": heads.trained}
    for part in out.values():
        for column, entry in part.items():
            if isinstance(entry, dict):
                merged.setdefault(column, {}).update(entry)
    return merged


def _quality_task(
    g: _Gallery, strategies: Sequence[Strategy], config: EvalConfig
) -> dict[str, Any]:
    """PSNR/SSIM against the original for every upscaler, on conditions that keep the frame."""
    from searchcore.upscale import BicubicUpscaler

    ups: dict[str, Any] = {}
    for s in strategies:
        if s.upscaler is not None and s.policy is None:
            ups.setdefault(s.name, s.upscaler)
    if not ups:
        return {}
    scale = getattr(next(iter(ups.values())), "scale", 4)
    ups.setdefault("bicubic", BicubicUpscaler(scale))
    rng = np.random.default_rng([config.seed, 2])
    pick = sample(len(g.rows), config.quality_images, rng)
    out: dict[str, Any] = {}
    for ci, (name, d) in enumerate(config.conditions):
        if d.geometric or not d.shrinks or not len(pick):
            continue
        originals = [g.photos[i] for i in pick]
        lows = [
            degrade(o, d, np.random.default_rng([config.seed, ci, int(g.rows[i])]))
            for o, i in zip(originals, pick, strict=True)
        ]
        cond: dict[str, Any] = {}
        for uname, up in ups.items():
            p, s_, spent = [], [], 0.0
            for orig, low in zip(originals, lows, strict=True):
                t0 = time.perf_counter()
                hi = up.upscale(low)
                spent += time.perf_counter() - t0
                if hi.size != orig.size:  # e.g. a x4 model on a 2x smaller photo
                    hi = hi.resize(orig.size, Image.Resampling.BICUBIC)
                a, b = np.asarray(hi), np.asarray(orig)
                p.append(metrics.psnr(a, b))
                s_.append(metrics.ssim(a, b))
            cond[uname] = {
                "PSNR": float(np.mean(p)),
                "SSIM": float(np.mean(s_)),
                "ms": 1000 * spent / len(pick),
                "images": len(pick),
            }
        base = cond["bicubic"]
        for v in cond.values():
            v["PSNR_vs_bicubic"] = v["PSNR"] - base["PSNR"]
            v["SSIM_vs_bicubic"] = v["SSIM"] - base["SSIM"]
        out[name] = cond
    return out
