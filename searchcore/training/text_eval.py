"""Text search measured as shoppers type: query families, each searched vector / lexical / hybrid.

Exact titles and generated attribute strings are easy for BM25 by construction, so the families
are what people really type, drawn from the held-out products (the gallery):

* ``title``: a product's title; ``partial title``: three of its words, shuffled; ``typo title``:
  the title with one typo (a letter dropped, doubled, swapped or replaced) in a word of five
  letters or more. The exact product is relevant (and every product with the same title: many
  share one).
* ``brand``: the brand alone ("Puma"): a ``brand`` column, else the title's words before the
  gender word, else its first word; brands with at least two gallery products. Relevant: the
  brand's products.
* ``attributes``: the query attributes (colour, category...) in a random order ("shoes black");
  relevant: products with all of those values.
* families from a file (``--text-queries``): synonyms ("sneakers" for sports shoes) and
  paraphrases that share no word with the titles ("something to carry my laptop"). Each query
  names the phrases a relevant title contains (``title_has``) and optional column values
  (``where``); ``benchmarks/text_queries/`` holds the ones for the demo and the real catalog.

Every family is scored in each mode with the same ranked lists the engine would return
(:func:`searchcore.fusion.fuse` for hybrid): Recall@1/@10 and MRR, and P@10, the share of the
top 10 that is relevant, out of min(10, relevant products) so that 1.0 is reachable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from searchcore.errors import ConfigError
from searchcore.fsutil import read_json
from searchcore.fusion import LEXICAL_WEIGHT, fuse
from searchcore.stores.lexical import LexicalIndex
from searchcore.training import metrics
from searchcore.training.data import attribute_phrase, labels, sample

DEPTH = 100  # each side's list, as the engine fetches it for k <= 50
GENDER_WORDS = {"men", "women", "woman", "man", "boys", "girls", "unisex", "kids"}
# The columns scored, name: (fusion, weight of the lexical side); the weighted fusion at three
# weights and the one the engine serves by default (Settings.fusion, fusion.LEXICAL_WEIGHT),
# named SERVED
VARIANTS = {
    "vector": (None, 0.0),
    "lexical": (None, 1.0),
    "hybrid (rrf)": ("rrf", 0.5),
    **{
        f"hybrid (weighted {w:g})": ("weighted", w) for w in sorted({0.3, 0.5, 0.7, LEXICAL_WEIGHT})
    },
}
SERVED = f"hybrid (weighted {LEXICAL_WEIGHT:g})"


@dataclass(frozen=True)
class Family:
    queries: list[str]
    relevant: np.ndarray  # bool (queries, gallery)
    exact: bool  # one product (and its title twins) is the answer: recall is the headline


def _norm(text: str) -> str:
    return " ".join(re.findall(r"\w+", str(text).casefold()))


def typo(word: str, rng: np.random.Generator) -> str:
    """One edit inside the word (never its first letter): drop, double, swap or replace."""
    i = int(rng.integers(1, len(word) - 1))
    op = int(rng.integers(4))
    if op == 0:
        return word[:i] + word[i + 1 :]
    if op == 1:
        return word[:i] + word[i] + word[i:]
    if op == 2:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    letter = "abcdefghijklmnopqrstuvwxyz"[int(rng.integers(26))]
    letter = letter if letter != word[i] else "x" if word[i] != "x" else "y"
    return word[:i] + letter + word[i + 1 :]


def brands(df: pd.DataFrame) -> list[str]:
    """Each product's brand ("" where none is told): a ``brand`` column, else the title's words
    before its gender word ("United Colors of Benetton Men ..."), else its first word when that
    is capitalised and no value of another column ("Nordwind striped t-shirt", not "Green
    vase")."""
    if "brand" in df:
        return df["brand"].astype(str).str.strip().tolist()
    others = [c for c in df.columns if c not in ("id", "title", "image", "price")]
    values = {str(v).casefold() for c in others for v in df[c].unique()}
    out = []
    for title in df["title"].astype(str):
        words = title.split()
        cut = next((i for i, w in enumerate(words) if w.casefold() in GENDER_WORDS), None)
        if cut:
            out.append(" ".join(words[:cut]))
        elif words and words[0][:1].isupper() and words[0].casefold() not in values:
            out.append(words[0])
        else:
            out.append("")
    return out


def build_families(
    gallery: pd.DataFrame,
    rng: np.random.Generator,
    *,
    max_queries: int,
    query_attrs: Sequence[str],
    fixed: Sequence[dict[str, Any]] = (),
) -> dict[str, Family]:
    titles = gallery["title"].astype(str).tolist()
    norm = np.array([_norm(t) for t in titles], dtype=object)
    n = len(titles)
    pick = np.arange(n) if n <= max_queries else np.sort(rng.choice(n, max_queries, replace=False))
    same = norm[pick][:, None] == norm[None, :]
    out: dict[str, Family] = {"title": Family([titles[i] for i in pick], same, True)}
    partial, partial_rel, typos, typo_rel = [], [], [], []
    for j, i in enumerate(pick):
        words = titles[i].split()
        if len(words) >= 4:
            chosen = rng.choice(len(words), 3, replace=False)
            partial.append(" ".join(words[c] for c in chosen))
            partial_rel.append(same[j])
        long = [w for w, word in enumerate(words) if len(word) >= 5 and word.isalpha()]
        if long:
            w = long[int(rng.integers(len(long)))]
            typos.append(" ".join(typo(x, rng) if v == w else x for v, x in enumerate(words)))
            typo_rel.append(same[j])
    if partial:
        out["partial title"] = Family(partial, np.array(partial_rel), True)
    if typos:
        out["typo title"] = Family(typos, np.array(typo_rel), True)
    names = np.array([b.casefold() for b in brands(gallery)], dtype=object)
    counts = pd.Series(names).value_counts()
    wanted = [b for b in counts.index if counts[b] >= 2 and len(b) >= 3 and b]
    wanted = [wanted[i] for i in sample(len(wanted), max_queries, rng)]
    if wanted:
        shown = {b.casefold(): b for b in brands(gallery)}
        out["brand"] = Family(
            [shown[b] for b in wanted], np.array([names == b for b in wanted]), False
        )
    attrs = [c for c in query_attrs if c in gallery]
    if attrs:
        values = gallery[attrs].astype(str).apply(lambda col: col.str.strip().str.casefold())
        combos = sorted({tuple(r) for r in values.itertuples(index=False) if all(r)})
        combos = [combos[i] for i in sample(len(combos), max_queries, rng)]
        if combos:
            keys = list(values.itertuples(index=False, name=None))
            relevant = np.array([[k == c for k in keys] for c in combos])
            texts = [" ".join(rng.permutation(list(c))) for c in combos]
            out["attributes"] = Family(texts, relevant, False)
    for name, family in _fixed(gallery, norm, fixed).items():
        out[name] = family
    return out


def _fixed(gallery: pd.DataFrame, norm: np.ndarray, fixed: Sequence[dict]) -> dict[str, Family]:
    grouped: dict[str, tuple[list[str], list[np.ndarray]]] = {}
    padded = np.array([f" {t} " for t in norm], dtype=object)
    for q in fixed:
        rel = np.zeros(len(norm), dtype=bool)
        for phrase in q.get("title_has", []):
            rel |= np.array([f" {_norm(phrase)}" in t for t in padded])
        for col, value in (q.get("where") or {}).items():
            if col in gallery:
                rel &= (gallery[col].astype(str).str.casefold() == str(value).casefold()).to_numpy()
        if rel.any():  # a query with nothing relevant among these products says nothing
            texts, rels = grouped.setdefault(str(q["family"]), ([], []))
            texts.append(str(q["query"]))
            rels.append(rel)
    return {f: Family(t, np.array(r), False) for f, (t, r) in grouped.items()}


def load_text_queries(path: str | Path) -> list[dict[str, Any]]:
    """A query file: ``{"queries": [{"family", "query", "title_has": [...], "where": {}}]}``."""
    try:
        data = read_json(path)
        queries = data["queries"]
        for q in queries:
            if not isinstance(q["family"], str) or not isinstance(q["query"], str):
                raise TypeError
            if not all(isinstance(p, str) for p in q.get("title_has", [])):
                raise TypeError
    except (OSError, ValueError, KeyError, TypeError) as exc:
        problem = f"{type(exc).__name__}: {exc}"
        raise ConfigError(f"{path} is not a text query file ({problem})") from None
    return list(queries)


def text_search_task(
    gallery: pd.DataFrame,
    vectors: np.ndarray | None,
    embed_texts: Callable[[Sequence[str]], np.ndarray] | None,
    families: dict[str, Family],
    ks: Sequence[int] = (1, 10),
) -> dict[str, Any]:
    """``{family: {mode: metrics}}`` plus examples; vector modes only with a text tower."""
    lexical = LexicalIndex.build(gallery.reset_index(drop=True))
    out: dict[str, Any] = {}
    for name, fam in families.items():
        lists = {"lexical": [lexical.search(q, DEPTH) for q in fam.queries]}
        scores = embed_texts(fam.queries) @ vectors.T if embed_texts is not None else None
        row: dict[str, Any] = {"queries": len(fam.queries), "examples": fam.queries[:3]}
        for mode, (method, weight) in VARIANTS.items():
            if mode != "lexical" and scores is None:
                continue
            ranked = []
            for qi in range(len(fam.queries)):
                lex = lists["lexical"][qi]
                if mode == "lexical":
                    ranked.append(lex.rows.tolist())
                    continue
                vec = np.argsort(-scores[qi], kind="stable")[:DEPTH].tolist()
                if mode == "vector":
                    ranked.append(vec)
                    continue
                bm25 = dict(zip(lex.rows.tolist(), lex.scores.tolist(), strict=True))
                cand = set(vec) | set(bm25)
                cosine = {r: float(scores[qi, r]) for r in cand}
                fused = fuse(
                    vec,
                    list(bm25),
                    DEPTH,
                    method=method,
                    cosine=cosine,
                    bm25=bm25,
                    best=lex.best,
                    weight=weight,
                )
                ranked.append([f.row for f in fused])
            row[mode] = _metrics(ranked, fam.relevant, ks)
        out[name] = row
    return out


def vector_tasks(
    gallery: pd.DataFrame,
    vectors: np.ndarray,
    embedder: Any,
    config: Any,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """The model alone (``report["text"]``): attribute phrases ("red striped t-shirts", one per
    value combination; relevant: exactly those values) and titles (relevant: that title)."""
    out: dict[str, Any] = {}
    attrs = [c for c in config.query_attrs if c in gallery]
    if attrs:
        keys = list(zip(*(labels(gallery[c]) for c in attrs), strict=True))
        combos = sorted({k for k in keys if all(k)})
        combos = [combos[i] for i in sample(len(combos), config.max_queries, rng)]
        if combos:
            key_arr = np.empty(len(keys), dtype=object)
            key_arr[:] = keys
            relevant = np.array([[k == c for k in key_arr] for c in combos])
            texts = [attribute_phrase(c) for c in combos]
            scores = embedder.embed_texts(texts) @ vectors.T
            # P@10 over queries with at least 10 relevant products, so that 1.0 is reachable
            full = relevant.sum(axis=1) >= 10
            out["attributes"] = {
                "columns": attrs,
                "examples": texts[:5],
                **metrics.retrieval(scores, relevant, config.ks),
                "P@10": metrics.relevant_precision_at_k(scores[full], relevant[full], 10),
                "P@10_queries": int(full.sum()),
            }
    titles = gallery["title"].astype(str).tolist()
    pick = sample(len(titles), config.max_queries, rng)
    norm = labels(gallery["title"])
    relevant = norm[pick][:, None] == norm[None, :]
    scores = embedder.embed_texts([titles[i] for i in pick]) @ vectors.T
    out["titles"] = {
        "examples": [titles[i] for i in pick[:3]],
        **metrics.retrieval(scores, relevant, config.ks),
    }
    return out


def run(gallery: pd.DataFrame, vectors: np.ndarray, embedder: Any, config: Any) -> dict[str, Any]:
    """The task as ``evaluate`` runs it: families from ``config`` (an ``EvalConfig``)."""
    families = build_families(
        gallery,
        np.random.default_rng([config.seed, 2]),
        max_queries=config.max_queries,
        query_attrs=config.query_attrs,
        fixed=config.text_queries,
    )
    texts = embedder.embed_texts if embedder.has_text else None
    return text_search_task(gallery, vectors, texts, families)


def _metrics(ranked: list[list[int]], relevant: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    first, prec = [], []
    for rows, rel in zip(ranked, relevant, strict=True):
        hits = [bool(rel[r]) for r in rows]
        first.append(hits.index(True) + 1 if any(hits) else np.inf)
        prec.append(sum(hits[:10]) / min(10, int(rel.sum())))
    ranks = np.array(first, dtype=float)
    out = {f"R@{k}": float(np.mean(ranks <= k)) for k in ks}
    out["MRR"] = float(np.mean(1.0 / ranks))
    out["P@10"] = float(np.mean(prec))
    return out


HEADLINE = {  # what each family is judged on in the report's table
    "title": ("R@1", "R@10"),
    "partial title": ("R@10",),
    "typo title": ("R@10",),
    "brand": ("P@10",),
    "attributes": ("P@10",),
}


def markdown_table(task: dict[str, Any]) -> list[str]:
    modes = [m for m in VARIANTS if any(m in row for row in task.values())]
    names = [f"**{m}, served**" if m == SERVED else m for m in modes]
    lines = [
        "| family (queries) | metric | " + " | ".join(names) + " |",
        "|---|---|" + "---:|" * len(modes),
    ]
    for name, row in task.items():
        for metric in HEADLINE.get(name, ("P@10", "R@10")):
            cells = [f"{row[m][metric]:.3f}" if m in row else "" for m in modes]
            lines.append(f"| {name} ({row['queries']}) | {metric} | " + " | ".join(cells) + " |")
    example = {n: r["examples"][:2] for n, r in task.items()}
    lines.append("")
    lines.append("Examples: " + json.dumps(example, ensure_ascii=False))
    return lines
