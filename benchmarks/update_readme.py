"""Paste the latest results into ``benchmarks/README.md`` (between its ``results`` markers).

Builds a "targets at a glance" table from the JSON files and appends each result's markdown.
Files with a ``--tag`` suffix are included only when named with ``--also`` (e.g. ``ann-1m``).

    python benchmarks/update_readme.py --also ann-1m
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import _common as C

START, END = "<!-- results:start -->", "<!-- results:end -->"
ORDER = (
    "query_latency",
    "indexing_throughput",
    "ann",
    "upscale_cost",
    "backends",
    "text_search",
    "runtime",
    "live_commits",
)


def load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def glance(results: Path, names: list[str]) -> str:
    rows: list[list[Any]] = []
    # The engine's targets from the main query run; the REST API's from any query run.
    for name in [n for n in names if n.startswith("query_latency")]:
        q = load(results, name) or {"results": {}}
        for key, v in q["results"].get("targets", {}).items():
            scenario, threads = key.split("@")
            if scenario.startswith("rest_"):  # the REST API's overhead over the engine
                rows.append(
                    [
                        f"REST round trip minus engine, {scenario[5:]} (p50)",
                        f"{threads} thread(s)",
                        f"{C.fmt(v['overhead_ms'])} ms",
                        f"<= {v['target_overhead_ms']:g} ms",
                        v["verdict"],
                        name,
                    ]
                )
                continue
            if name != "query_latency":
                continue
            rows.append(
                [
                    f"{scenario} p50 (engine)",
                    f"{threads} thread(s)",
                    f"{C.fmt(v['p50_ms'])} ms",
                    f"<= {v['target_ms']:g} ms",
                    v["verdict"],
                    "query_latency",
                ]
            )
    ix = load(results, "indexing_throughput")
    if ix:
        for catalog, runs in ix["results"]["catalogs"].items():
            for r in runs:
                ratio = r["ratio_build_to_forward"]
                verdict = "unreliable (load)" if ratio > 1.05 else C.verdict(ratio, 0.85, True)
                rows.append(
                    [
                        f"build / forward limit, {catalog} (median of paired rounds)",
                        f"{r['threads']} thread(s)",
                        f"{ratio:.0%}",
                        ">= 85%",
                        verdict,
                        "indexing_throughput",
                    ]
                )
    for name in [n for n in names if n.startswith("ann")]:
        a = load(results, name)
        for ds, s in (a or {}).get("results", {}).get("datasets", {}).items():
            speed, rel = s.get("hnswlib_speedup_over_exact"), s.get("hnswlib_qps_vs_faiss_hnsw")
            mem = s.get("hnswlib_rss_bytes_per_vector_over_formula")
            if "1M" in ds:
                rows.append(
                    [
                        f"hnswlib vs exact at recall>=0.98, {ds}",
                        "1 thread",
                        f"{C.fmt(speed)}x",
                        ">= 20x",
                        C.verdict(speed, 20, True),
                        name,
                    ]
                )
                wspeed = s.get("wrapper_speedup_over_exact")
                if wspeed:
                    rows.append(
                        [
                            f"searchcore HnswIndex vs exact at recall>=0.98, {ds}",
                            "1 thread",
                            f"{C.fmt(wspeed)}x",
                            ">= 20x",
                            C.verdict(wspeed, 20, True),
                            name,
                        ]
                    )
            rows.append(
                [
                    f"hnswlib vs FAISS HNSW QPS, {ds}",
                    "1 thread",
                    f"{C.fmt(rel)}x",
                    ">= 0.8x",
                    C.verdict(rel, 0.8, True),
                    name,
                ]
            )
            rows.append(
                [
                    f"hnswlib RSS / (4d+8M), {ds}",
                    "-",
                    f"{C.fmt(mem)}x",
                    "<= 1.1x",
                    C.verdict(mem, 1.1, False),
                    name,
                ]
            )
            wmem = s.get("hnswlib_rss_bytes_per_vector_with_wrapper_over_formula")
            if wmem:
                rows.append(
                    [
                        f"loaded HnswIndex RSS / (4d+8M), {ds}",
                        "-",
                        f"{C.fmt(wmem)}x",
                        "<= 1.1x",
                        C.verdict(wmem, 1.1, False),
                        name,
                    ]
                )
    text = load(results, "text_search")
    for r in (text or {}).get("results", {}).get("engine", []):
        if r["products"] >= 100_000 and r["mode"] == "hybrid":
            rows.append(
                [
                    f"hybrid text query p50 (engine), {r['products']:,} products",
                    "1 thread",
                    f"{C.fmt(r['ms']['p50'])} ms",
                    "<= 15 ms",
                    C.verdict(r["ms"]["p50"], 15.0, False),
                    "text_search",
                ]
            )
    live = (load(results, "live_commits") or {}).get("results", {})
    commits = [r for r in live.get("commits", []) if r["design"] == "log"]
    if commits:
        small, big = (
            min(commits, key=lambda r: r["products"]),
            max(commits, key=lambda r: r["products"]),
        )
        ratio = big["ms"]["p50"] / small["ms"]["p50"]
        where = f"{big['products']:,} products"
        rows += [
            [
                f"live commits/s, {where}",
                "1 writer",
                C.fmt(big["commits_per_s"]),
                ">= 50",
                C.verdict(big["commits_per_s"], 50.0, True),
                "live_commits",
            ],
            [
                f"commit p50 at {where} / at {small['products']:,}",
                "1 writer",
                f"{C.fmt(ratio)}x",
                "<= 2x",
                C.verdict(ratio, 2.0, False),
                "live_commits",
            ],
        ]
    opened = live.get("open") or {}
    if opened:
        rows.append(
            [
                f"open with a {opened['log_entries']:,}-record log, "
                f"{opened['products']:,} products",
                "max of runs",
                f"{C.fmt(opened['open_s_log']['max'])} s",
                "<= 2 s",
                C.verdict(opened["open_s_log"]["max"], 2.0, False),
                "live_commits",
            ]
        )
    # bench_runtime.py states its own targets; runs on CPUs of other kinds carry a tag
    for name in [n for n in names if n == "runtime" or n.startswith("runtime-")]:
        runtime = load(results, name) or {}
        kind = cpu_kind(runtime.get("machine", {}).get("cpu_flags"))
        for t in runtime.get("results", {}).get("targets", []):
            measured = t["measured"]
            shown = f"{measured:.7f}" if "cosine" in t["target"] else C.fmt(measured)
            setting = f"{t['setting']}, {kind}" if t["setting"] != "-" else kind
            rows.append([t["target"], setting, shown, t["goal"], t["verdict"], name])
    return C.md_table(["target", "setting", "measured", "target", "verdict", "details"], rows)


def cpu_kind(flags: list[str] | None) -> str:
    """The CPU kind int8 and bf16 speed turn on, from a run's recorded instruction sets (runs
    before they were recorded were on the AVX2-only hosts)."""
    if flags is None:
        return "AVX2 (no VNNI)"
    if "amx_int8" in flags:
        return "AMX"
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "AVX-512 VNNI"
    return "AVX2 (no VNNI)" if "avx2" in flags else "no AVX2"


def body(results: Path, name: str) -> str:
    text = (results / f"{name}.md").read_text()
    text = re.sub(r"^# .*\n", "", text, count=1)
    text = re.sub(r"^## ", "#### ", text, flags=re.MULTILINE)  # nest under the README's headings
    text = re.sub(r"!\[([^\]]*)\]\(([^)]+)\)", r"![\1](results/\2)", text)
    return f"### {name}\n\n{text.strip()}\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=C.RESULTS)
    p.add_argument("--readme", type=Path, default=C.HERE / "README.md")
    p.add_argument("--also", default="", help="tagged result names to include (comma separated)")
    args = p.parse_args(argv)
    names = [n for n in ORDER if (args.results / f"{n}.md").is_file()]
    names += [n for n in args.also.split(",") if n and (args.results / f"{n}.md").is_file()]
    block = "\n".join(
        [
            START,
            "",
            "### Targets at a glance",
            "",
            glance(args.results, names),
            "",
            *[body(args.results, n) for n in names],
            END,
        ]
    )
    readme = args.readme.read_text()
    if START in readme and END in readme:
        readme = readme[: readme.index(START)] + block + readme[readme.index(END) + len(END) :]
    else:
        readme = readme.rstrip() + "\n\n" + block + "\n"
    args.readme.write_text(readme)
    print(f"updated {args.readme} with {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
