"""Query latency: p50/p95 per stage and end to end, through the engine, the Gradio API and
the REST API.

Scenarios, side by side in one run, for each torch thread count in ``--threads``:

- ``text_cold``: unique descriptions (every one misses the engine's text-embedding cache);
- ``text_warm``: the same descriptions again (cache hits; results checked equal to cold);
- ``image_large``: large sharp photos (``--large-side`` px JPEGs): the policy must not upscale;
- ``image_small_blurry``: small (64-112 px), blurred uploads, upscaled (``upscale="always"``:
  the cost of the upscaling path, whatever the model's verdict says);
- ``image_small_blurry_auto``: the same uploads with ``auto``, as the page sends them (a model
  whose measured verdict says upscaling does not help it skips the upscaler);
- ``image_text``: a large photo plus a (new) description.

Stages are the engine's own timings (``SearchResult.timings_ms``): decode, upscale_check (the
upscale decision), upscale, embed, embed_text, search, assemble (result assembly), total.
The Gradio part starts ``app.py`` on a free port with the same index and calls its named
endpoints (``/search_text``, ``/search_image``, ``/search_combined``) with gradio_client, then
the same queries through the REST API of that same server (``POST /api/v1/search``, multipart,
one kept-alive httpx client); each round trip includes the photo upload.

    python benchmarks/bench_query.py                      # ~3-5 min on 2 busy cores
    python benchmarks/bench_query.py --n 100 --threads 1,2 --upscaler-weights W.pth
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common as C
import numpy as np

STAGES = (
    "decode",
    "upscale_check",
    "upscale",
    "embed",
    "embed_text",
    "search",
    "assemble",
    "total",
)
SCENARIOS = (
    "text_cold",
    "text_warm",
    "image_large",
    "image_small_blurry",
    "image_small_blurry_auto",
    "image_text",
)
TARGETS_MS = {"image_large": 50.0, "text_cold": 15.0, "image_small_blurry": 300.0}
REST_OVERHEAD_MS = 15.0  # REST round trip p50 of an image query <= engine total p50 + this
K = 10


@dataclass
class Query:
    image: Path | None = None
    text: str | None = None
    upscale: str = "auto"


@dataclass
class Outcome:
    """Measurements of one scenario at one thread count."""

    timings: list[dict[str, float]] = field(default_factory=list)
    upscaled: list[bool] = field(default_factory=list)
    round_trip_ms: list[float] = field(default_factory=list)  # Gradio only
    top_ids: list[list[str]] = field(default_factory=list)
    stopped_early: bool = False
    same_as_reference: tuple[int, int] | None = None  # (equal top-k lists, compared)

    def summary(self) -> dict[str, Any]:
        stages = {s: C.percentiles([t[s] for t in self.timings if s in t]) for s in STAGES}
        out: dict[str, Any] = {
            "n": len(self.timings),
            "stages_ms": {k: v for k, v in stages.items() if v["n"]},
            "upscaled_share": float(np.mean(self.upscaled)) if self.upscaled else 0.0,
            "stopped_early_by_time_cap": self.stopped_early,
        }
        if self.round_trip_ms:
            out["round_trip_ms"] = C.percentiles(self.round_trip_ms)
        if self.same_as_reference is not None:
            out["results_equal_to_cold"] = "{}/{}".format(*self.same_as_reference)
        return out


# --------------------------------------------------------------------------- query material


def make_queries(args: argparse.Namespace, total: int) -> tuple[dict[str, list[Query]], str]:
    """``total`` queries of every scenario, photos written as files (the app gets paths)."""
    from PIL import Image, ImageFilter

    from searchcore.catalog import load_catalog

    shared_csv, _ = C.shared_catalog(args.shared)
    if shared_csv is not None:
        catalog = load_catalog(shared_csv, C.SHARED_COLUMN_MAP)
        source = f"real photos and titles from {shared_csv}"
    else:
        catalog = load_catalog(C.demo_catalog(args.work))
        source = "the synthetic demo shop (../shared absent)"
    rng = np.random.default_rng(0)
    rows = rng.choice(len(catalog), size=min(total, len(catalog)), replace=False)
    rows = np.resize(rows, total)
    folder = args.work / f"queries-{args.large_side}"
    folder.mkdir(parents=True, exist_ok=True)
    large, small = [], []
    for i, row in enumerate(rows):
        big, tiny = folder / f"large-{i:04d}.jpg", folder / f"small-{i:04d}.jpg"
        if not (big.is_file() and tiny.is_file()):
            img = Image.open(catalog.image_path(int(row))).convert("RGB")
            side = args.large_side
            img.resize((side, side), Image.Resampling.LANCZOS).save(big, quality=90)
            s = int(rng.integers(64, 113))
            blurred = img.resize((s, s), Image.Resampling.BILINEAR).filter(
                ImageFilter.GaussianBlur(float(rng.uniform(0.6, 1.5)))
            )
            blurred.save(tiny, quality=85)
        large.append(big)
        small.append(tiny)
    texts = unique_texts(catalog.df["title"].tolist(), 2 * total)
    cold, mixed = texts[:total], texts[total:]
    return {
        "text_cold": [Query(text=t) for t in cold],
        "text_warm": [Query(text=t) for t in cold],  # the same texts: served from the cache
        "image_large": [Query(image=p) for p in large],
        "image_small_blurry": [Query(image=p, upscale="always") for p in small],
        "image_small_blurry_auto": [Query(image=p) for p in small],
        "image_text": [Query(image=p, text=t) for p, t in zip(large, mixed, strict=True)],
    }, source


def unique_texts(titles: list[str], n: int) -> list[str]:
    seen: dict[str, str] = {}
    for t in titles:
        seen.setdefault(" ".join(t.lower().split()), t)
    base = list(seen.values())
    out = list(base[:n])
    i = 0
    while len(out) < n:  # a small catalog: vary the titles so every query stays new
        out.append(f"{base[i % len(base)]} size {i // len(base) + 2}")
        i += 1
    return out


# --------------------------------------------------------------------------- the engine


def open_bench_engine(args: argparse.Namespace, weights: Path | None) -> Any:
    """The engine over the demo shop's index (built on first use), as the app opens it."""
    from searchcore.build import build_index
    from searchcore.catalog import load_catalog
    from searchcore.config import Settings
    from searchcore.errors import IndexMismatchError
    from searchcore.service import make_embedder, open_engine

    settings = Settings(model=args.model, upscaler=args.upscaler, upscaler_weights=weights)
    csv = C.demo_catalog(args.work)
    index = index_dir(args)
    try:
        return open_engine(settings, index)
    except IndexMismatchError as exc:
        print(f"building the query index in {index} ({exc}) ...", flush=True)
        build_index(load_catalog(csv), make_embedder(settings), index)
        return open_engine(settings, index)


def index_dir(args: argparse.Namespace) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in args.model)
    return args.work / f"demo-1200-index-{safe}"


def run_engine(
    engine: Any, queries: list[Query], n_warmup: int, cap_s: float, reference: Outcome | None = None
) -> Outcome:
    out = Outcome()
    for q in queries[:n_warmup]:  # warm-up: first-call costs (allocator, caches) left out
        engine.search(image=q.image, text=q.text, k=K, upscale=q.upscale)
    started = time.perf_counter()
    for q in queries[n_warmup:]:
        r = engine.search(image=q.image, text=q.text, k=K, upscale=q.upscale)
        out.timings.append(r.timings_ms)
        out.upscaled.append(r.upscaled)
        out.top_ids.append([h.id for h in r.hits])
        if time.perf_counter() - started > cap_s:
            out.stopped_early = True
            break
    if reference is not None:  # warm (cached) answers must equal the cold ones
        pairs = list(zip(out.top_ids, reference.top_ids, strict=True))
        out.same_as_reference = (sum(a == b for a, b in pairs), len(pairs))
    return out


# --------------------------------------------------------------------------- the Gradio API


@contextlib.contextmanager
def running_app(
    args: argparse.Namespace, weights: Path | None, threads: int, log_path: Path
) -> Iterator[Any]:
    """``python app.py --port N`` on the benchmark's index; yields a gradio_client Client."""
    from gradio_client import Client

    env = {
        **os.environ,
        "SEARCHCORE_CATALOG": str(C.demo_catalog(args.work)),
        "SEARCHCORE_INDEX": str(index_dir(args)),
        "SEARCHCORE_MODEL": args.model,
        "SEARCHCORE_UPSCALER": args.upscaler,
        "SEARCHCORE_THREADS": str(threads),
        # One client sends every photo here: lift the per-client upload limits (a measurement,
        # not a stranger's flood).
        "SEARCHCORE_UPLOADS_PER_MINUTE": "1000000",
        "SEARCHCORE_UPLOAD_FOLDER_MB": "100000",
        "GRADIO_ANALYTICS_ENABLED": "False",
    }
    if weights is not None:
        env["SEARCHCORE_UPSCALER_WEIGHTS"] = str(weights)
    with C.launched_app(env=env, log=log_path, cwd=C.ROOT, timeout=args.app_timeout) as app:
        yield Client(app.url, verbose=False)


def gradio_call(client: Any) -> Callable[[Query], dict[str, Any]]:
    from gradio_client import handle_file

    all_categories = "All categories"

    def call(q: Query) -> dict[str, Any]:
        if q.image is not None and q.text:
            return client.predict(
                handle_file(str(q.image)),
                q.text,
                0.5,
                K,
                all_categories,
                None,
                None,
                "auto",
                api_name="/search_combined",
            )
        if q.image is not None:
            return client.predict(
                handle_file(str(q.image)),
                K,
                all_categories,
                None,
                None,
                q.upscale,
                api_name="/search_image",
            )
        return client.predict(q.text, K, all_categories, None, None, api_name="/search_text")

    return call


def rest_call(url: str) -> Callable[[Query], dict[str, Any]]:
    import httpx

    http = httpx.Client(base_url=url.rstrip("/") + "/api/v1", timeout=120)

    def call(q: Query) -> dict[str, Any]:
        data: dict[str, Any] = {"k": K}
        if q.text:
            data["text"] = q.text
        if q.image is None:
            r = http.post("/search", data=data)
        else:
            data["upscale"] = "auto" if q.text else q.upscale
            with open(q.image, "rb") as f:
                r = http.post("/search", data=data, files={"image": (q.image.name, f)})
        r.raise_for_status()
        return r.json()

    return call


def run_api(
    call: Callable[[Query], dict[str, Any]], queries: list[Query], n_warmup: int, cap_s: float
) -> Outcome:
    out = Outcome()
    for q in queries[:n_warmup]:
        call(q)
    started = time.perf_counter()
    for q in queries[n_warmup:]:
        t0 = time.perf_counter()
        r = call(q)
        out.round_trip_ms.append((time.perf_counter() - t0) * 1000)
        out.timings.append(r["timings_ms"])
        out.upscaled.append(bool(r.get("upscaled")))
        if time.perf_counter() - started > cap_s:
            out.stopped_early = True
            break
    return out


# --------------------------------------------------------------------------- candidates


def draft_decode(path: Path, min_side: int) -> Any:
    """JPEG decoded at a reduced DCT scale (1/2, 1/4, 1/8) keeping the shorter side >= min_side."""
    from PIL import Image

    img = Image.open(path)
    img.draft("RGB", (min_side, min_side))
    return img.convert("RGB")


def reduce_for_model(img: Any, size: int) -> Any:
    """Box-reduce by an integer factor while the shorter side stays >= 2 x the model's input."""
    factor = min(img.size) // (2 * size)
    return img.reduce(factor) if factor >= 2 else img


def candidates(engine: Any, large: list[Path], args: argparse.Namespace) -> dict[str, Any]:
    """Prototypes for the image path, timed and checked against what the engine does today."""
    import copy

    import torch
    from PIL import Image, ImageFilter

    from searchcore.images import decode_image
    from searchcore.upscale import sharpness

    threshold = engine.policy.settings.min_sharpness
    blurry = []  # large but blurred photos: the policy must still call them blurry
    for p in large:
        b = p.with_name(p.name.replace("large-", "large-blurred-"))
        if not b.is_file():
            Image.open(p).filter(ImageFilter.GaussianBlur(8)).save(b, quality=90)
        blurry.append(b)
    t: dict[str, list[float]] = {
        k: []
        for k in (
            "decode",
            "decode_draft",
            "check",
            "check_draft",
            "preprocess",
            "preprocess_reduced",
            "forward",
            "forward_bf16",
        )
    }
    agree, cos, cos_bf16, same_top, gaps = 0, [], [], [], []

    def lap(key: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        out = fn()
        t[key].append((time.perf_counter() - t0) * 1000)
        return out

    emb = engine.embedder
    bf16 = copy.deepcopy(emb.model).to(torch.bfloat16)
    for p in large + blurry:
        full = lap("decode", lambda p=p: decode_image(p))
        small = lap("decode_draft", lambda p=p: draft_decode(p, args.draft_side))
        s_full = lap("check", lambda im=full: sharpness(im))
        s_small = lap("check_draft", lambda im=small: sharpness(im))
        agree += (s_full < threshold) == (s_small < threshold)
        if p in blurry:
            continue
        px = lap("preprocess", lambda im=full: emb.preprocess(im)[None])
        px2 = lap(
            "preprocess_reduced",
            lambda im=small: emb.preprocess(reduce_for_model(im, emb.image_size))[None],
        )
        v = lap("forward", lambda x=px: emb.embed_pixels(x)[0])
        with torch.inference_mode():
            vb = lap(
                "forward_bf16",
                lambda x=px: bf16.encode_image(x.to(torch.bfloat16), normalize=True)[0],
            )
        vb = vb.float().numpy()
        v2 = emb.embed_pixels(px2)[0]
        cos.append(float(v @ v2))
        cos_bf16.append(float(v @ vb / np.linalg.norm(vb)))
        found = engine.index.search(v, K + 1)
        gaps.append(float(found.scores[K - 1] - found.scores[K]))  # how close rank 10 and 11 are
        a, b = found.labels[:K], engine.index.search(vb, K).labels
        c = engine.index.search(v2, K).labels
        same_top.append((len(set(a) & set(c)) / K, len(set(a) & set(b)) / K))
    p50 = {k: C.percentiles(v)["p50"] for k, v in t.items()}
    return {
        "p50_ms": p50,
        "photos": len(large),
        "blurred_photos": len(blurry),
        "draft_min_side": args.draft_side,
        "upscale_decision_agreement": f"{agree}/{len(large) + len(blurry)}",
        "embedding_cosine_reduced_vs_full": C.percentiles(cos, digits=6),
        "top10_overlap_reduced_vs_full": float(np.mean([x[0] for x in same_top])),
        "embedding_cosine_bf16_vs_fp32": C.percentiles(cos_bf16, digits=6),
        "top10_overlap_bf16_vs_fp32": float(np.mean([x[1] for x in same_top])),
        "score_gap_rank10_to_11": C.percentiles(gaps, digits=6),
        "image_large_estimate_ms": {
            "today": p50["decode"] + p50["check"] + p50["preprocess"] + p50["forward"],
            "draft+reduce": p50["decode_draft"]
            + p50["check_draft"]
            + p50["preprocess_reduced"]
            + p50["forward"],
            "draft+reduce+bf16": p50["decode_draft"]
            + p50["check_draft"]
            + p50["preprocess_reduced"]
            + p50["forward_bf16"],
        },
    }


def candidate_table(c: dict[str, Any]) -> str:
    p = c["p50_ms"]
    rows = [
        [
            "decode",
            p["decode"],
            p["decode_draft"],
            f"JPEG draft (DCT scaling) to shorter side >= {c['draft_min_side']}",
        ],
        [
            "upscale check (sharpness)",
            p["check"],
            p["check_draft"],
            f"same decision on {c['upscale_decision_agreement']} sharp + blurred large photos",
        ],
        [
            "preprocess",
            p["preprocess"],
            p["preprocess_reduced"],
            (
                f"Image.reduce first; cosine to today's embedding p50 "
                f"{C.fmt(c['embedding_cosine_reduced_vs_full']['p50'], 6)} (min "
                f"{C.fmt(c['embedding_cosine_reduced_vs_full']['min'], 6)}), top-10 overlap "
                f"{c['top10_overlap_reduced_vs_full']:.0%}"
            ),
        ],
        [
            "image forward (bs 1)",
            p["forward"],
            p["forward_bf16"],
            (
                f"bfloat16 weights; cosine to fp32 p50 "
                f"{C.fmt(c['embedding_cosine_bf16_vs_fp32']['p50'], 6)} (min "
                f"{C.fmt(c['embedding_cosine_bf16_vs_fp32']['min'], 6)}), top-10 overlap "
                f"{c['top10_overlap_bf16_vs_fp32']:.0%}"
            ),
        ],
    ]
    e = c["image_large_estimate_ms"]
    return (
        C.md_table(["stage", "today p50 ms", "candidate p50 ms", "candidate, and its check"], rows)
        + "\n\nTop-10 overlap is bounded by near-ties: today's scores of ranks 10 and 11 "
        f"differ by {C.fmt(c['score_gap_rank10_to_11']['p50'], 3)} at the median (cosine), "
        "so a change in the 5th decimal of the embedding can swap them."
        + f"\n\nSum of stage p50s for a large photo: today {C.fmt(e['today'])} ms; with draft "
        f"decode + reduce {C.fmt(e['draft+reduce'])} ms; plus bf16 "
        f"{C.fmt(e['draft+reduce+bf16'])} ms (1 thread; prototypes in this script, not in "
        "searchcore)."
    )


# --------------------------------------------------------------------------- report


def cell(stats: dict[str, Any] | None) -> str:
    if not stats or not stats.get("n"):
        return "-"
    return f"{C.fmt(stats['p50'])} ({C.fmt(stats['p95'])})"


def engine_table(results: dict[str, Any]) -> str:
    rows = []
    for t, by_scenario in results.items():
        for name, s in by_scenario.items():
            if "skipped" in s:
                rows.append([name, t, *["-"] * len(STAGES), "-", s["skipped"]])
                continue
            st = s["stages_ms"]
            rows.append(
                [
                    name,
                    t,
                    *[cell(st.get(x)) for x in STAGES],
                    s["n"],
                    f"{s['upscaled_share']:.0%} upscaled",
                ]
            )
    return C.md_table(["scenario", "threads", *STAGES, "n", "note"], rows)


def api_table(results: dict[str, Any]) -> str:
    rows = []
    for t, by_scenario in results.items():
        for name, s in by_scenario.items():
            if "skipped" in s:
                rows.append([name, t, "-", "-", "-", s["skipped"]])
                continue
            rt, eng = s["round_trip_ms"], s["stages_ms"]["total"]
            rows.append(
                [
                    name,
                    t,
                    cell(rt),
                    cell(eng),
                    C.fmt(rt["p50"] - eng["p50"]),
                    f"n={s['n']}, {s['upscaled_share']:.0%} upscaled",
                ]
            )
    return C.md_table(
        [
            "scenario",
            "threads",
            "round trip ms p50 (p95)",
            "engine total ms p50 (p95)",
            "API overhead ms (p50)",
            "note",
        ],
        rows,
    )


def target_table(results: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    rows, verdicts = [], {}
    names = {
        "image_large": "image query, no upscaling",
        "text_cold": "text query (cold cache)",
        "image_small_blurry": "small blurry upload, upscaled",
    }
    for t, by_scenario in results.items():
        for name, target in TARGETS_MS.items():
            s = by_scenario.get(name, {})
            p50 = s.get("stages_ms", {}).get("total", {}).get("p50")
            v = C.verdict(p50, target, higher_is_better=False)
            verdicts[f"{name}@{t}"] = {"p50_ms": p50, "target_ms": target, "verdict": v}
            extra = ""
            if name == "text_cold":
                warm = by_scenario.get("text_warm", {}).get("stages_ms", {}).get("total", {})
                extra = f"warm (cached) p50 {C.fmt(warm.get('p50'))} ms"
            rows.append([names[name], t, C.fmt(p50), f"<= {target:g}", v, extra])
    return C.md_table(
        ["target (engine, end to end)", "threads", "p50 ms", "target ms", "verdict", "note"], rows
    ), verdicts


def rest_target(results: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """REST round trip p50 of an image query against the engine's own total p50 + 15 ms."""
    rows, verdicts = [], {}
    for t, by_scenario in results.items():
        for name in ("image_large", "image_small_blurry_auto"):
            s = by_scenario.get(name, {})
            if "round_trip_ms" not in s:
                continue
            rt, eng = s["round_trip_ms"]["p50"], s["stages_ms"]["total"]["p50"]
            v = C.verdict(rt - eng, REST_OVERHEAD_MS, higher_is_better=False)
            verdicts[f"rest_{name}@{t}"] = {
                "round_trip_p50_ms": rt,
                "engine_p50_ms": eng,
                "overhead_ms": rt - eng,
                "target_overhead_ms": REST_OVERHEAD_MS,
                "verdict": v,
            }
            rows.append([name, t, C.fmt(rt), C.fmt(eng), C.fmt(rt - eng), v])
    table = C.md_table(
        ["REST target: image query", "threads", "round trip p50", "engine p50", "overhead",
         f"<= +{REST_OVERHEAD_MS:g} ms"],
        rows,
    )  # fmt: skip
    return table, verdicts


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, stacks = [], []
    parts = [s for s in STAGES if s != "total"]
    for t, by_scenario in results.items():
        for name, s in by_scenario.items():
            if "stages_ms" in s:
                labels.append(f"{name} ({t} thr)")
                stacks.append([s["stages_ms"].get(p, {}).get("p50", 0.0) for p in parts])
    if not stacks:
        return
    data = np.array(stacks)
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(labels) + 2.2))
    left = np.zeros(len(labels))
    for j, part in enumerate(parts):
        ax.barh(labels, data[:, j], left=left, label=part)
        left += data[:, j]
    ax.set_xlabel("p50 per stage (ms, engine; stages stacked)")
    ax.invert_yaxis()
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = C.base_parser(__doc__.splitlines()[0])
    C.model_args(p)
    C.upscaler_args(p)
    p.add_argument("--n", type=int, default=30, help="measured queries per scenario")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument(
        "--threads",
        type=C.int_list,
        default=[1, 2],
        help="torch intra-op thread counts to compare (comma separated)",
    )
    p.add_argument("--large-side", type=int, default=1600, help="side of the large sharp photos")
    p.add_argument(
        "--cap-seconds",
        type=float,
        default=25.0,
        help="stop a scenario after this long (slow machines stay under ~5 min)",
    )
    p.add_argument("--no-gradio", action="store_true", help="only the engine")
    p.add_argument("--no-candidates", action="store_true", help="skip the prototype timings")
    p.add_argument(
        "--draft-side",
        type=int,
        default=512,
        help="candidate JPEG draft decoding: keep the shorter side >= this",
    )
    p.add_argument("--app-timeout", type=float, default=300.0, help="seconds for app.py to start")
    args = p.parse_args(argv)
    run = C.Run("query_latency", args)

    weights, weights_from = C.upscaler_weights(args.shared, args.upscaler, args.upscaler_weights)
    per_thread = args.warmup + args.n
    queries, source = make_queries(args, per_thread * len(args.threads) * 2)
    run.say(f"queries from {source}; upscaler weights: {weights_from}")

    def chunk(name: str, i: int) -> list[Query]:  # disjoint texts per run keep "cold" cold
        return queries[name][i * per_thread : (i + 1) * per_thread]

    engine_results: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    cand: dict[str, Any] = {}
    for i, threads in enumerate(args.threads):
        C.set_torch_threads(threads)
        engine = open_bench_engine(args, weights)  # fresh engine: an empty text cache
        if engine.upscaler is not None:
            engine.upscaler.load()
        meta = {
            "model": engine.embedder.spec,
            "dim": engine.embedder.dim,
            "image_size": engine.embedder.image_size,
            "index_size": len(engine.index),
            "upscaler": getattr(engine.upscaler, "name", None),
            "upscaler_problem": engine.upscaler_problem,
            "upscale_policy": vars(engine.policy.settings),
        }
        res: dict[str, Any] = {}
        cold: Outcome | None = None
        for name in SCENARIOS:
            if name == "image_small_blurry" and engine.upscaler is None:
                res[name] = {"skipped": f"no upscaler: {engine.upscaler_problem}"}
                run.skip(f"{name} at {threads} threads", res[name]["skipped"])
                continue
            run.say(f"engine, {threads} thread(s): {name} ...")
            if name == "text_warm":  # exactly the texts the cold run measured, in order
                out = run_engine(
                    engine,
                    chunk("text_cold", i)[args.warmup :][: len(cold.timings)] if cold else [],
                    0,
                    args.cap_seconds,
                    reference=cold,
                )
            else:
                out = run_engine(engine, chunk(name, i), args.warmup, args.cap_seconds)
            res[name] = out.summary()
            if name == "text_cold":
                cold = out
        engine_results[str(threads)] = res
        if i == 0 and not args.no_candidates:
            run.say(f"candidates for the image path ({threads} thread(s)) ...")
            cand = candidates(engine, [q.image for q in chunk("image_large", 0)], args)
            cand["threads"] = threads
        del engine

    gradio_results: dict[str, Any] = {}
    rest_results: dict[str, Any] = {}
    if args.no_gradio:
        run.skip("Gradio API", "--no-gradio")
    elif not (C.ROOT / "app.py").is_file():
        run.skip("Gradio API", "app.py is absent")
    else:
        for i, threads in enumerate(args.threads):
            run.say(f"Gradio API, app.py with SEARCHCORE_THREADS={threads} ...")
            try:
                with running_app(
                    args, weights, threads, args.work / f"app-{threads}.log"
                ) as client:
                    # Each API gets fresh texts for text_cold (the app's cache serves repeats).
                    for results, call, texts in (
                        (gradio_results, gradio_call(client), i),
                        (rest_results, rest_call(client.src), i + len(args.threads)),
                    ):
                        res = {}
                        for name in SCENARIOS:
                            qs = (
                                chunk("text_cold", texts)
                                if name.startswith("text_")
                                else chunk(name, i)
                            )
                            if name == "text_warm":  # the app's engine saw these texts just before
                                n_cold = res.get("text_cold", {}).get("n", 0)
                                qs = qs[args.warmup :][:n_cold]
                            if name == "image_small_blurry" and meta.get("upscaler") is None:
                                res[name] = {"skipped": "no upscaler"}
                                continue
                            out = run_api(
                                call,
                                qs,
                                0 if name == "text_warm" else args.warmup,
                                args.cap_seconds,
                            )
                            res[name] = out.summary()
                        results[str(threads)] = res
            except Exception as exc:
                run.skip(f"Gradio API at {threads} threads", f"{type(exc).__name__}: {exc}")

    targets_md, verdicts = target_table(engine_results)
    run.section(
        "Targets (engine, end to end)",
        targets_md + "\n\nThe text target is compared with the **cold** p50 (a description "
        "the engine has not seen: the common case); the warm p50 is a repeated description "
        "served from the engine's text-embedding cache.",
    )
    run.section(
        "Per stage, through the engine: p50 (p95) ms",
        engine_table(engine_results) + f"\n\nQueries: {source}. Large photos are "
        f"{args.large_side}x{args.large_side} JPEGs; small blurry ones 64-112 px, blurred. "
        f"k={K}. Index: the demo shop ({meta.get('index_size')} products), model "
        f"`{meta.get('model')}` (dim {meta.get('dim')}, {meta.get('image_size')} px).",
    )
    if gradio_results:
        run.section(
            "Through the Gradio API (gradio_client -> app.py)",
            api_table(gradio_results)
            + "\n\nRound trip = client call including the photo upload; API overhead = "
            "round trip p50 minus the engine's own total p50 inside the app.",
        )
    if rest_results:
        rest_md, rest_verdicts = rest_target(rest_results)
        verdicts.update(rest_verdicts)
        run.section(
            "Through the REST API (httpx -> POST /api/v1/search, same app.py)",
            api_table(rest_results) + "\n\n" + rest_md,
        )
    if cand:
        run.section(
            f"Candidates for the image path ({cand['threads']} thread)", candidate_table(cand)
        )
    plot_path = run.plot_path("stages")
    plot(engine_results, plot_path)
    run.sections.append(f"![p50 per stage]({plot_path.name})\n")
    run.finish(
        {
            "setup": meta,
            "query_source": source,
            "upscaler_weights": weights_from,
            "engine": engine_results,
            "gradio": gradio_results,
            "rest": rest_results,
            "targets": verdicts,
            "candidates": cand,
        },
        C.command_line(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
