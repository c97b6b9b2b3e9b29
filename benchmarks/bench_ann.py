"""Nearest neighbours: recall@10 against exact search versus queries/s, sweeping ``ef``.

In one run, on the same vectors and queries: hnswlib (raw, and through searchcore's
``HnswIndex`` wrapper), exact brute force (numpy/BLAS, one query at a time and batched), FAISS
flat (``IndexFlatIP``) and FAISS HNSW (``IndexHNSWFlat``, inner product), all with the project's
HNSW parameters (M, ef_construction) and one query thread. Datasets:

- ``real``: embeddings of ``../shared/data/fashion-224`` by the default model (computed once by
  ``build_index`` and cached), held-out photos as queries; the demo shop when ../shared is absent;
- ``synthetic-N`` for each N in ``--sizes``: N vectors of the model's dimension from a low-rank
  Gaussian mixture (``--latent-dim`` latent dimensions, 1 cluster per 1,000 vectors, 5%
  isotropic noise; L2-normalised), which is closer to CLIP embeddings than uniform noise.

Also: build time (1M estimated from the largest size as n log n), and bytes per vector
(index file; RSS growth when a fresh process loads it) against 4*d + 8*M.

    python benchmarks/bench_ann.py                        # real + 100k, ~5 min on 2 cores
    nice -n 10 python benchmarks/bench_ann.py --sizes 100000,1000000 --tag 1m
"""

from __future__ import annotations

import os

# Exact search is timed like the others: one thread per query (the engine serves concurrent
# queries on separate threads). Must be set before numpy loads its BLAS.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, os.environ.get("BENCH_QUERY_THREADS", "1"))

import argparse
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common as C
import numpy as np

K = 10
RECALL_TARGET = 0.98


@dataclass
class Dataset:
    name: str
    base: np.ndarray  # (n, d) float32, L2-normalised
    queries: np.ndarray  # (q, d)
    note: str


# --------------------------------------------------------------------------- data


def real_dataset(args: argparse.Namespace, run: C.Run) -> Dataset | None:
    csv, why = C.shared_catalog(args.shared)
    column_map = C.SHARED_COLUMN_MAP
    name = "fashion-224"
    if csv is None:
        run.skip("real embeddings of the shared catalog", why + "; using the demo shop instead")
        csv, column_map, name = C.demo_catalog(args.work), (), "demo-1200"
    vectors, _ = C.catalog_embeddings(args.work, csv, column_map, args.model, name)
    rng = np.random.default_rng(0)
    held = rng.choice(len(vectors), size=min(args.real_queries, len(vectors) // 10), replace=False)
    keep = np.setdiff1d(np.arange(len(vectors)), held)
    return Dataset(
        f"real ({name})",
        vectors[keep],
        vectors[held],
        f"{len(keep)} photo embeddings of {csv.parent.name} by model `{args.model}`, "
        f"{len(held)} held-out photos as queries",
    )


def synthetic(n: int, q: int, d: int, latent: int, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    clusters = max(10, (n + q) // 1000)
    centers = rng.standard_normal((clusters, latent)).astype(np.float32)
    mix = (rng.standard_normal((latent, d)) / math.sqrt(latent)).astype(np.float32)
    out = np.empty((n + q, d), np.float32)
    for i in range(0, n + q, 100_000):  # in chunks: temporaries stay small at 1M
        m = min(100_000, n + q - i)
        z = centers[rng.integers(0, clusters, m)] + 0.5 * rng.standard_normal(
            (m, latent), dtype=np.float32
        )
        x = z @ mix
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        x += 0.05 * rng.standard_normal((m, d), dtype=np.float32) / math.sqrt(d)
        out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return Dataset(
        f"synthetic-{n // 1000}k" if n < 1_000_000 else f"synthetic-{n // 10**6}M",
        out[:n],
        out[n:],
        f"{n:,} low-rank mixture vectors (latent {latent}, "
        f"{clusters} clusters), d={d}, {q} queries from the same distribution",
    )


def ground_truth(base: np.ndarray, queries: np.ndarray, k: int = K) -> np.ndarray:
    """Exact top-k labels by inner product (chunked: no (n, q) matrix at 1M)."""
    best_s = np.full((len(queries), k), -np.inf, np.float32)
    best_i = np.zeros((len(queries), k), np.int64)
    for start in range(0, len(base), 20_000):
        s = queries @ base[start : start + 20_000].T
        top = np.argpartition(-s, k - 1, axis=1)[:, :k]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, top, 1)], 1)
        cand_i = np.concatenate([best_i, top + start], 1)
        keep = np.argpartition(-cand_s, k - 1, axis=1)[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, keep, 1), np.take_along_axis(cand_i, keep, 1)
    order = np.argsort(-best_s, axis=1)
    return np.take_along_axis(best_i, order, 1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def per_query(
    search: Callable[[np.ndarray], np.ndarray], queries: np.ndarray, cap_s: float
) -> tuple[float, np.ndarray]:
    """queries/s of one-at-a-time search (stops after cap_s) and the labels found."""
    for q in queries[:3]:
        search(q)
    found = []
    t0 = time.perf_counter()
    for q in queries:
        found.append(search(q))
        if time.perf_counter() - t0 > cap_s:
            break
    return len(found) / (time.perf_counter() - t0), np.array(found)


# --------------------------------------------------------------------------- methods


def exact_rows(ds: Dataset, truth: np.ndarray, cap_s: float) -> list[dict[str, Any]]:
    import faiss

    faiss.omp_set_num_threads(1)

    def numpy_one(q: np.ndarray) -> np.ndarray:
        s = ds.base @ q
        top = np.argpartition(-s, K - 1)[:K]
        return top[np.argsort(-s[top])]

    qps, found = per_query(numpy_one, ds.queries, cap_s)
    rows = [
        {
            "method": "exact numpy (1 query/call)",
            "qps": qps,
            "recall": recall(found, truth[: len(found)]),
        }
    ]
    t0 = time.perf_counter()
    ground_truth(ds.base, ds.queries)
    rows.append(
        {
            "method": f"exact numpy (batch of {len(ds.queries)})",
            "qps": len(ds.queries) / (time.perf_counter() - t0),
            "recall": 1.0,
        }
    )
    flat = faiss.IndexFlatIP(ds.base.shape[1])
    flat.add(ds.base)
    qps, found = per_query(lambda q: flat.search(q[None], K)[1][0], ds.queries, cap_s)
    rows.append(
        {
            "method": "faiss flat (1 query/call)",
            "qps": qps,
            "recall": recall(found, truth[: len(found)]),
        }
    )
    return rows


def hnswlib_rows(
    ds: Dataset, truth: np.ndarray, args: argparse.Namespace, work: Path
) -> tuple[list[dict[str, Any]], dict[str, Any], Any]:
    import hnswlib

    n, d = ds.base.shape
    index = hnswlib.Index(space="cosine", dim=d)
    index.init_index(
        max_elements=n, M=args.M, ef_construction=args.ef_construction, random_seed=100
    )
    t0 = time.perf_counter()
    index.add_items(ds.base, np.arange(n), num_threads=args.build_threads)
    build_s = time.perf_counter() - t0
    rows = []
    for ef in args.ef:
        index.set_ef(max(ef, K))
        qps, found = per_query(
            lambda q: index.knn_query(q[None], k=K, num_threads=1)[0][0],
            ds.queries,
            args.cap_seconds,
        )
        rows.append(
            {
                "method": "hnswlib",
                "ef": ef,
                "qps": qps,
                "recall": recall(found, truth[: len(found)]),
            }
        )
    path = work / f"ann-{ds.name.replace(' ', '_')}.hnsw"
    index.save_index(str(path))
    memory = {
        "file_bytes_per_vector": path.stat().st_size / n,
        **load_rss(["hnswlib", str(path), str(d)], n),
    }
    path.unlink()
    return rows, {"build_seconds": build_s, **memory}, index


def wrapper_rows(
    ds: Dataset, truth: np.ndarray, index: Any, args: argparse.Namespace, efs: list[int]
) -> list[dict[str, Any]]:
    """The same graph through searchcore.stores.hnsw.HnswIndex.search (what the engine calls)."""
    from searchcore.stores.hnsw import HnswIndex

    wrapped = HnswIndex(
        ds.base.shape[1],
        space="cosine",
        m=args.M,
        ef_construction=args.ef_construction,
        _index=index,
    )
    rows = []
    for ef in efs:
        index.set_ef(max(ef, K))
        qps, found = per_query(lambda q: wrapped.search(q, K).labels, ds.queries, args.cap_seconds)
        rows.append(
            {
                "method": "searchcore HnswIndex",
                "ef": ef,
                "qps": qps,
                "recall": recall(found, truth[: len(found)]),
            }
        )
    return rows


def faiss_hnsw_rows(
    ds: Dataset, truth: np.ndarray, args: argparse.Namespace, work: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    import faiss

    n, d = ds.base.shape
    index = faiss.IndexHNSWFlat(d, args.M, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = args.ef_construction
    faiss.omp_set_num_threads(args.build_threads)
    t0 = time.perf_counter()
    index.add(ds.base)
    build_s = time.perf_counter() - t0
    faiss.omp_set_num_threads(1)
    rows = []
    for ef in args.ef:
        index.hnsw.efSearch = max(ef, K)
        qps, found = per_query(
            lambda q: index.search(q[None], K)[1][0], ds.queries, args.cap_seconds
        )
        rows.append(
            {
                "method": "faiss HNSW",
                "ef": ef,
                "qps": qps,
                "recall": recall(found, truth[: len(found)]),
            }
        )
    path = work / f"ann-{ds.name.replace(' ', '_')}.faiss"
    faiss.write_index(index, str(path))
    memory = {
        "file_bytes_per_vector": path.stat().st_size / n,
        **load_rss(["faiss", str(path), str(d)], n),
    }
    path.unlink()
    return rows, {"build_seconds": build_s, **memory}


# --------------------------------------------------------------------------- memory


def load_rss(spec: list[str], n: int) -> dict[str, float]:
    """RSS growth of a fresh process loading the index (no allocator reuse from the build)."""
    out = subprocess.run(
        [sys.executable, __file__, "--measure-load", *spec],
        check=False,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    try:
        data = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"rss_error": (out.stderr or out.stdout)[-300:]}
    res = {"rss_bytes_per_vector": data["index"] / n}
    if "wrapper" in data:
        res["rss_bytes_per_vector_with_wrapper"] = (data["index"] + data["wrapper"]) / n
    return res


def measure_load(kind: str, path: str, dim: str) -> None:
    import gc

    gc.collect()
    if kind == "hnswlib":
        import hnswlib

        from searchcore.stores.hnsw import HnswIndex

        before = C.rss_bytes()
        index = hnswlib.Index(space="cosine", dim=int(dim))
        index.load_index(path)
        loaded = C.rss_bytes()
        wrapped = HnswIndex(int(dim), space="cosine", _index=index)
        gc.collect()
        print(
            json.dumps(
                {
                    "index": loaded - before,
                    "wrapper": C.rss_bytes() - loaded,
                    "count": index.get_current_count(),
                    "ok": wrapped is not None,
                }
            )
        )
    else:
        import faiss

        before = C.rss_bytes()
        index = faiss.read_index(path)
        print(json.dumps({"index": C.rss_bytes() - before, "count": index.ntotal}))


# --------------------------------------------------------------------------- report


def first_at(rows: list[dict[str, Any]], method: str) -> dict[str, Any] | None:
    """The fastest measured setting of ``method`` with recall >= the target."""
    ok = [r for r in rows if r["method"] == method and r["recall"] >= RECALL_TARGET]
    return max(ok, key=lambda r: r["qps"]) if ok else None


def summarise(
    ds: Dataset, rows: list[dict[str, Any]], builds: dict[str, Any], d: int, m: int
) -> dict[str, Any]:
    formula = 4 * d + 8 * m
    exact = next(r for r in rows if r["method"] == "exact numpy (1 query/call)")
    h, f = first_at(rows, "hnswlib"), first_at(rows, "faiss HNSW")
    out: dict[str, Any] = {
        "n": len(ds.base),
        "queries": len(ds.queries),
        "note": ds.note,
        "rows": rows,
        "builds": builds,
        "formula_bytes_per_vector": formula,
        "hnswlib_at_target": h,
        "faiss_hnsw_at_target": f,
    }
    if h:
        out["hnswlib_speedup_over_exact"] = h["qps"] / exact["qps"]
    w = first_at(rows, "searchcore HnswIndex")  # what the engine calls, same graph and ef
    if w:
        out["wrapper_at_target"] = w
        out["wrapper_speedup_over_exact"] = w["qps"] / exact["qps"]
    if h and f:
        out["hnswlib_qps_vs_faiss_hnsw"] = h["qps"] / f["qps"]
    mem = builds.get("hnswlib", {})
    for key in (
        "file_bytes_per_vector",
        "rss_bytes_per_vector",
        "rss_bytes_per_vector_with_wrapper",
    ):
        if key in mem:
            out[f"hnswlib_{key}_over_formula"] = mem[key] / formula
    return out


def sweep_table(rows: list[dict[str, Any]]) -> str:
    return C.md_table(
        ["method", "ef", "recall@10", "queries/s"],
        [[r["method"], r.get("ef", "-"), r["recall"], r["qps"]] for r in rows],
    )


def build_table(s: dict[str, Any]) -> str:
    rows = []
    for name, b in s["builds"].items():
        rows.append(
            [
                name,
                b["build_seconds"],
                b.get("file_bytes_per_vector"),
                b.get("rss_bytes_per_vector"),
                b.get("rss_bytes_per_vector_with_wrapper"),
                s["formula_bytes_per_vector"],
                (b.get("rss_bytes_per_vector") or float("nan")) / s["formula_bytes_per_vector"],
                b.get("estimated_build_seconds_1M"),
            ]
        )
    return C.md_table(
        [
            "index",
            "build s",
            "file B/vector",
            "RSS B/vector",
            "RSS B/vector + HnswIndex",
            "4d+8M",
            "RSS / formula",
            "est. 1M build s",
        ],
        rows,
    )


def target_table(summaries: dict[str, Any]) -> str:
    rows = []
    for name, s in summaries.items():
        h, f = s.get("hnswlib_at_target"), s.get("faiss_hnsw_at_target")
        speed = s.get("hnswlib_speedup_over_exact")
        rel = s.get("hnswlib_qps_vs_faiss_hnsw")
        mem = s.get("hnswlib_rss_bytes_per_vector_over_formula")
        wspeed = s.get("wrapper_speedup_over_exact")
        wmem = s.get("hnswlib_rss_bytes_per_vector_with_wrapper_over_formula")
        rows.append(
            [
                name,
                h["ef"] if h else "-",
                h["recall"] if h else "-",
                f"{speed:.0f}x" if speed else "-",
                f"{wspeed:.0f}x" if wspeed else "-",
                C.verdict(wspeed, 20, True) if "1M" in name else "(1M only)",
                f"{rel:.2f}x (FAISS at ef {f['ef']})" if f and rel else "-",
                C.verdict(rel, 0.8, True),
                mem,
                wmem,
                C.verdict(wmem or mem, 1.1, False),
            ]
        )
    return C.md_table(
        [
            "dataset",
            "hnswlib ef for recall>=0.98",
            "recall",
            "raw vs exact",
            "HnswIndex vs exact",
            ">= 20x at 1M",
            "vs FAISS HNSW (QPS ratio)",
            "within 20%",
            "RSS / formula",
            "with HnswIndex",
            "<= 1.1x",
        ],
        rows,
    )


def plot(summaries: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(summaries), figsize=(4.2 * len(summaries), 3.4), squeeze=False)
    for ax, (name, s) in zip(axes[0], summaries.items(), strict=True):
        by: dict[str, list[dict[str, Any]]] = {}
        for r in s["rows"]:
            by.setdefault(r["method"], []).append(r)
        for method, rs in by.items():
            style = "o-" if len(rs) > 1 else "s"
            ax.plot([r["recall"] for r in rs], [r["qps"] for r in rs], style, label=method, ms=4)
        ax.axvline(RECALL_TARGET, color="grey", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel("recall@10")
        ax.set_ylabel("queries/s (1 thread)")
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def run_dataset(ds: Dataset, args: argparse.Namespace, run: C.Run) -> dict[str, Any]:
    run.say(f"{ds.name}: {ds.note}")
    truth = ground_truth(ds.base, ds.queries)
    rows = exact_rows(ds, truth, args.cap_seconds)
    run.say(f"  hnswlib build (M={args.M}, ef_construction={args.ef_construction}) ...")
    h_rows, h_build, index = hnswlib_rows(ds, truth, args, args.work)
    rows += h_rows
    at = first_at(h_rows, "hnswlib")
    rows += wrapper_rows(ds, truth, index, args, [at["ef"]] if at else [args.ef[-1]])
    del index
    run.say("  faiss HNSW build ...")
    f_rows, f_build = faiss_hnsw_rows(ds, truth, args, args.work)
    rows += f_rows
    builds = {"hnswlib": h_build, "faiss HNSW": f_build}
    n = len(ds.base)
    if n < 1_000_000:  # HNSW build grows as n log n
        for b in builds.values():
            b["estimated_build_seconds_1M"] = (
                b["build_seconds"] * (1e6 / n) * math.log(1e6) / math.log(n)
            )
    return summarise(ds, rows, builds, ds.base.shape[1], args.M)


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "--measure-load":
        measure_load(*sys.argv[2:5])
        return 0
    from searchcore.config import IndexSettings

    p = C.base_parser(__doc__.splitlines()[0])
    C.model_args(p)
    p.add_argument(
        "--sizes",
        type=C.int_list,
        default=[100_000],
        help="synthetic index sizes (e.g. 100000,1000000)",
    )
    p.add_argument("--no-real", action="store_true", help="skip the real embeddings")
    p.add_argument("--queries", type=int, default=500, help="synthetic queries")
    p.add_argument("--real-queries", type=int, default=500)
    p.add_argument("--ef", type=C.int_list, default=[10, 16, 24, 32, 48, 64, 96, 128, 256])
    p.add_argument("--M", type=int, default=IndexSettings.m)
    p.add_argument("--ef-construction", type=int, default=IndexSettings.ef_construction)
    p.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--latent-dim", type=int, default=32)
    p.add_argument("--dim", type=int, default=0, help="vector dimension (default: the model's)")
    p.add_argument(
        "--cap-seconds", type=float, default=15.0, help="time cap per (method, ef) query loop"
    )
    args = p.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    run = C.Run("ann", args)

    summaries: dict[str, Any] = {}
    datasets: list[Callable[[], Dataset | None]] = []
    if not args.no_real:
        datasets.append(lambda: real_dataset(args, run))
    if not args.dim:
        from searchcore.config import Settings
        from searchcore.service import make_embedder

        args.dim = make_embedder(Settings(model=args.model)).dim
    for n in args.sizes:
        datasets.append(lambda n=n: synthetic(n, args.queries, args.dim, args.latent_dim))
    for make in datasets:
        ds = make()
        if ds is not None:
            summaries[ds.name] = run_dataset(ds, args, run)
            del ds

    for name, s in summaries.items():
        run.section(f"{name}: recall@10 vs queries/s", s["note"] + "\n\n" + sweep_table(s["rows"]))
        run.section(f"{name}: build and memory", build_table(s))
    run.section(
        "Targets",
        target_table(summaries) + "\n\nAt each library's fastest setting "
        f"with recall@10 >= {RECALL_TARGET}; one query per call, one thread. Formula: "
        "4*d + 8*M bytes per vector (the FAISS wiki's HNSW estimate; hnswlib's "
        "ALGO_PARAMS.md: links cost 'roughly M * 8-10 bytes per stored element' on top "
        "of the 4*d-byte vector).",
    )
    plot_path = run.plot_path("recall_qps")
    plot(summaries, plot_path)
    run.sections.append(f"![recall vs queries/s]({plot_path.name})\n")
    run.finish(
        {
            "k": K,
            "M": args.M,
            "ef_construction": args.ef_construction,
            "dim": args.dim,
            "blas_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
            "datasets": summaries,
        },
        C.command_line(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
