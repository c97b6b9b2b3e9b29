"""Text search speed and the lexical library's choice: bm25s and tantivy side by side.

1. **Through the engine** (``SearchEngine.search(text=..., mode=...)``, what the page and CLI
   call): text query latency p50/p95 for ``vector``, ``lexical`` and ``hybrid`` at 10k and 100k
   products. Titles are the real catalog's (``../shared``; the demo shop's when absent), each
   product with a random extra word so that 100k rows are 100k documents; the vectors are
   random (the index side costs what it costs whatever the vectors mean); the text tower is the
   real ``--model``. Also the lexical index's build time and size per catalog size.
2. **bm25s vs tantivy** at 100k titles: index build time, query p50 for the top 100, and on the
   real catalog's held-out query families (title, partial title, typo title, brand) Recall@10 /
   P@10 of each, both with English stemming and stop words (tantivy's ``en_stem`` analyser,
   ``parse_query`` over the text field; bm25s through searchcore's own ``LexicalIndex``).

    python benchmarks/bench_text.py                 # ~3 min on 2 busy cores
    python benchmarks/bench_text.py --sizes 1000,10000 --queries 100
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _common as C
import numpy as np
import pandas as pd

TARGET_MS = 15.0


def titles(args: Any, run: C.Run) -> tuple[pd.DataFrame, str]:
    from searchcore.catalog import load_catalog

    csv, why = C.shared_catalog(args.shared)
    if csv is None:
        run.skip("the shared catalog", why + "; using the demo shop's titles")
        return load_catalog(C.demo_catalog(args.work)).df, "demo-1200"
    return load_catalog(csv, C.SHARED_COLUMN_MAP).df, "fashion-224"


def synthetic(base: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    pick = rng.integers(0, len(base), n)
    df = base.iloc[pick].reset_index(drop=True).copy()
    extra = np.array(["Classic", "Slim", "Premium", "Urban", "Retro", "Sport", "Comfort", "Lite"])
    df["title"] = (
        df["title"]
        + " "
        + extra[rng.integers(0, len(extra), n)]
        + " "
        + [f"Z{i:06d}" for i in range(n)]
    )
    df["id"] = [f"S{i:07d}" for i in range(n)]
    return df


def engine_latency(args: Any, run: C.Run, base: pd.DataFrame) -> list[dict[str, Any]]:
    import torch

    from searchcore.catalog import Catalog
    from searchcore.config import Settings
    from searchcore.engine import SearchEngine
    from searchcore.service import make_embedder
    from searchcore.stores.hnsw import HnswIndex
    from searchcore.stores.lexical import LexicalIndex

    torch.set_num_threads(1)
    embedder = make_embedder(Settings(model=args.model))
    rng = np.random.default_rng(0)
    out = []
    for n in args.sizes:
        df = synthetic(base, n, rng)
        t0 = time.perf_counter()
        lexical = LexicalIndex.build(df)
        build_s = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            entry = lexical.save(Path(tmp))
            size = sum(p.stat().st_size for p in (Path(tmp) / entry["dir"]).iterdir())
        vectors = rng.normal(size=(n, embedder.dim)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        index = HnswIndex(embedder.dim, capacity=n)
        index.add(vectors, np.arange(n))
        engine = SearchEngine(Catalog(df, Path(".")), embedder, None, index, lexical=lexical)
        picks = rng.choice(n, args.queries, replace=False)
        queries = [" ".join(df["title"].iat[i].split()[:-2]) for i in picks]  # no unique word
        queries += [" ".join(q.split()[1:4]) for q in queries[: args.queries // 2]]
        for mode in ("vector", "lexical", "hybrid"):
            engine._text_cache.clear()
            engine.search(text=queries[0], k=10, mode=mode)  # warm-up
            engine._text_cache.clear()
            times = []
            for q in queries:
                t1 = time.perf_counter()
                engine.search(text=q, k=10, mode=mode)
                times.append((time.perf_counter() - t1) * 1000)
            row = {
                "products": n,
                "mode": mode,
                "ms": C.percentiles(times),
                "lexical_build_s": round(build_s, 2),
                "lexical_mb": round(size / 2**20, 2),
            }
            out.append(row)
            run.say(f"{n:>7} products, {mode:<7}: p50 {row['ms']['p50']} ms")
    return out


def _tantivy(texts: list[str]) -> Any:
    import tantivy

    schema = tantivy.SchemaBuilder()
    schema.add_text_field("text", stored=False, tokenizer_name="en_stem")
    schema.add_integer_field("row", stored=True, indexed=False, fast=True)
    built = schema.build()
    folder = tempfile.mkdtemp(prefix="tantivy-")
    index = tantivy.Index(built, path=folder)
    writer = index.writer(heap_size=128_000_000, num_threads=1)
    for i, t in enumerate(texts):
        writer.add_document(tantivy.Document(text=t, row=i))
    writer.commit()
    writer.wait_merging_threads()
    index.reload()
    return index, folder


def _tantivy_search(index: Any, searcher: Any, query: str, k: int) -> list[int]:
    words = re.findall(r"\w+", query.casefold())
    if not words:
        return []
    parsed = index.parse_query(" ".join(words), ["text"])
    hits = searcher.search(parsed, k).hits
    return [searcher.doc(addr)["row"][0] for _, addr in hits]


def libraries(args: Any, run: C.Run, base: pd.DataFrame, name: str) -> dict[str, Any]:
    try:
        import tantivy  # noqa: F401  (an optional comparison, not a dependency)
    except ImportError:
        run.skip("tantivy", "not installed (pip install tantivy to compare)")
        return {}
    from searchcore.stores.lexical import LexicalIndex, product_texts
    from searchcore.training.data import split_masks
    from searchcore.training.text_eval import _metrics, build_families

    rng = np.random.default_rng(1)
    df = synthetic(base, args.library_size, rng)
    texts = product_texts(df)
    out: dict[str, Any] = {"products": len(df)}
    t0 = time.perf_counter()
    bm = LexicalIndex.build(df)
    out["bm25s_build_s"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    tv, folder = _tantivy(texts)
    out["tantivy_build_s"] = round(time.perf_counter() - t0, 2)
    searcher = tv.searcher()
    queries = [" ".join(df["title"].iat[i].split()[1:4]) for i in rng.choice(len(df), 300)]
    for lib, search in (
        ("bm25s", lambda q: bm.search(q, 100).rows.tolist()),
        ("tantivy", lambda q: _tantivy_search(tv, searcher, q, 100)),
    ):
        times = []
        for q in queries:
            t1 = time.perf_counter()
            search(q)
            times.append((time.perf_counter() - t1) * 1000)
        out[f"{lib}_query_ms"] = C.percentiles(times)
    shutil.rmtree(folder, ignore_errors=True)
    # Quality on the real catalog's held-out products (the split tune uses, seed 0)
    ids = base["id"].astype(str).tolist()
    _, test = split_masks(ids, 0, 0.1, 0.2)
    gallery = base.iloc[np.flatnonzero(test)].reset_index(drop=True)
    families = build_families(
        gallery, np.random.default_rng([0, 2]), max_queries=1000, query_attrs=()
    )
    bm = LexicalIndex.build(gallery)
    tv, folder = _tantivy(product_texts(gallery))
    searcher = tv.searcher()
    quality = {}
    for fam_name, fam in families.items():
        quality[fam_name] = {
            "bm25s": _metrics(
                [bm.search(q, 100).rows.tolist() for q in fam.queries], fam.relevant, (1, 10)
            ),
            "tantivy": _metrics(
                [_tantivy_search(tv, searcher, q, 100) for q in fam.queries], fam.relevant, (1, 10)
            ),
        }
    shutil.rmtree(folder, ignore_errors=True)
    out["quality"] = {"catalog": name, "gallery": len(gallery), "families": quality}
    return out


def main(argv: list[str] | None = None) -> int:
    p = C.base_parser(__doc__.splitlines()[0])
    C.model_args(p)
    p.add_argument("--sizes", type=C.int_list, default=[10_000, 100_000])
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--library-size", type=int, default=100_000)
    args = p.parse_args(argv)
    run = C.Run("text_search", args)
    base, name = titles(args, run)
    latency = engine_latency(args, run, base)
    rows = [
        [
            r["products"],
            r["mode"],
            r["ms"]["p50"],
            r["ms"]["p95"],
            r["lexical_build_s"],
            r["lexical_mb"],
            C.verdict(r["ms"]["p50"], TARGET_MS, False) if r["products"] >= 100_000 else "",
        ]
        for r in latency
    ]
    run.section(
        f"Text query through the engine (k=10, titles of {name}, random vectors, model "
        f"`{args.model}`, one torch thread)",
        C.md_table(
            ["products", "mode", "p50 ms", "p95 ms", "lexical build s", "lexical MB", "≤ 15 ms"],
            rows,
        ),
    )
    libs = libraries(args, run, base, name)
    if libs:
        head = ["library", "build s", "query p50 ms", "query p95 ms"]
        run.section(
            f"bm25s vs tantivy at {libs['products']:,} products (top 100, 300 partial titles)",
            C.md_table(
                head,
                [
                    [
                        lib,
                        libs[f"{lib}_build_s"],
                        libs[f"{lib}_query_ms"]["p50"],
                        libs[f"{lib}_query_ms"]["p95"],
                    ]
                    for lib in ("bm25s", "tantivy")
                ],
            ),
        )
        q = libs["quality"]
        qrows = []
        for fam, v in q["families"].items():
            metric = "P@10" if fam == "brand" else "R@10"
            qrows.append([fam, metric, v["bm25s"][metric], v["tantivy"][metric]])
        run.section(
            f"bm25s vs tantivy: quality on {q['gallery']} held-out products of {q['catalog']}",
            C.md_table(["family", "metric", "bm25s (searchcore)", "tantivy en_stem"], qrows),
        )
    run.finish({"engine": latency, "libraries": libs}, "python " + " ".join(sys.argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
