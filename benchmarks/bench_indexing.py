"""Indexing throughput: images/s of a real index build against the model's own forward limit.

For each catalog (the demo shop; ``../shared/data/fashion-224`` when present) and each torch
thread count in ``--threads``, on the same ``--limit`` photos and in one process:

1. **forward limit**: ``embedder.embed_pixels`` on photos decoded and preprocessed beforehand,
   in batches of ``--batch-size`` (the build's batch size): the best a build could do;
2. **build**: the real ``searchcore.build.build_index`` into a scratch folder, as it ships: on
   the CPU, one lane per torch thread, each decoding a batch (PIL, ``prepare``), collating it
   (torchvision's uint8 resize, one numpy affine) and embedding it on one torch thread;
3. **the alternatives**, side by side: a single model lane on all torch threads fed by
   decoding threads (``lanes=1``: what a GPU build does), and the same with open_clip's own
   PIL transform per photo on the decoding threads (what a ``DataLoader`` over open_clip's
   ``preprocess`` does);
4. **where the time goes**: per-photo decode, ``prepare``, ``collate`` and open_clip-transform
   cost, the decode pipeline alone (``build._batches`` with no model), and HNSW insertion alone;
   plus how far the batched pixels are from open_clip's (grey levels, embedding cosine).

Forward limit, build and alternative alternate for ``--repeat`` rounds; each round's build is
divided by the same round's limit (the host's speed drifts by 10-20% between seconds on a
shared machine), and the median of those paired ratios is the figure. Target: build >= 85%
of the forward limit.

    python benchmarks/bench_indexing.py                   # ~9 min on 2 cores
    python benchmarks/bench_indexing.py --limit 4000 --threads 2 --catalogs shared
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import threading
import time
from dataclasses import replace
from typing import Any

import _common as C
import numpy as np

TARGET_RATIO = 0.85


def load_catalogs(args: argparse.Namespace, run: C.Run) -> dict[str, Any]:
    from searchcore.catalog import load_catalog

    out: dict[str, Any] = {}
    for name in args.catalogs.split(","):
        if name == "demo":
            catalog = load_catalog(C.demo_catalog(args.work))
        elif name == "shared":
            path, why = C.shared_catalog(args.shared)
            if path is None:
                run.skip("the shared catalog", why)
                continue
            catalog = load_catalog(path, C.SHARED_COLUMN_MAP)
        else:
            raise SystemExit(f"unknown catalog {name!r} (demo, shared)")
        n = min(args.limit, len(catalog))
        out[name] = replace(catalog, df=catalog.df.iloc[:n].reset_index(drop=True))
    return out


class TimedEmbedder:
    """The real embedder, adding up the seconds spent in ``embed_pixels`` (the model)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def embed_pixels(self, pixels: Any) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self.inner.embed_pixels(pixels)
        finally:
            with self.lock:
                self.seconds += time.perf_counter() - t0


class PerPhotoTransform:
    """The alternative: open_clip's PIL transform per photo on the decoding threads."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def prepare(self, img: Any) -> Any:  # a model-ready tensor per photo, on the decoding thread
        from PIL import Image

        return self.inner.transform(Image.fromarray(self.inner.prepare(img)))

    def collate(self, tensors: list[Any]) -> Any:
        import torch

        return torch.stack(tensors)


def per_second(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("nan")


def forward_limit(embedder: Any, pixels: Any, batch_size: int) -> float:
    """images/s of embed_pixels alone over pre-made batches (first batch = warm-up)."""
    batches = [pixels[i : i + batch_size] for i in range(0, len(pixels), batch_size)]
    embedder.embed_pixels(batches[0])
    t0 = time.perf_counter()
    for b in batches:
        embedder.embed_pixels(b)
    return per_second(len(pixels), time.perf_counter() - t0)


def ms_per_photo(fn: Any, items: list[Any]) -> float:
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - t0) / len(items) * 1000


def measure(
    catalog: Any, embedder: Any, args: argparse.Namespace, threads: int, name: str
) -> dict[str, Any]:
    import torch
    from PIL import Image

    # _batches: the decoding-thread pipeline of a single lane; _lanes: how many lanes ship
    from searchcore.build import _batches, _lanes, build_index
    from searchcore.config import IndexSettings
    from searchcore.images import DRAFT, decode_image
    from searchcore.stores.hnsw import HnswIndex

    C.set_torch_threads(threads)
    paths = catalog.image_paths()
    n, bs = len(paths), args.batch_size
    res: dict[str, Any] = {
        "images": n,
        "threads": threads,
        "batch_size": bs,
        "workers": args.workers,
    }

    images = [decode_image(p, draft=DRAFT) for p in paths]
    prepared = [embedder.prepare(im) for im in images]
    pixels = torch.cat([embedder.collate(prepared[i : i + bs]) for i in range(0, n, bs)])
    res["decode_ms_per_image"] = ms_per_photo(lambda p: decode_image(p, draft=DRAFT), paths)
    res["prepare_ms_per_image"] = ms_per_photo(embedder.prepare, images)
    t0 = time.perf_counter()
    for i in range(0, n, bs):
        embedder.collate(prepared[i : i + bs])
    res["collate_ms_per_image"] = (time.perf_counter() - t0) / n * 1000
    res["open_clip_transform_ms_per_image"] = ms_per_photo(
        lambda a: embedder.transform(Image.fromarray(a)), prepared
    )
    # How far the batched path is from open_clip's own PIL transform on the same pixels.
    reference = torch.stack([embedder.transform(Image.fromarray(a)) for a in prepared])
    norm = next(t for t in embedder.transform.transforms if type(t).__name__ == "Normalize")
    std = torch.tensor(norm.std).view(1, 3, 1, 1)
    res["max_grey_level_diff_vs_open_clip"] = float(((pixels - reference).abs() * std * 255).max())
    a, b = embedder.embed_pixels(pixels), embedder.embed_pixels(reference)
    res["min_embedding_cosine_vs_open_clip"] = float((a * b).sum(axis=1).min())
    del images, prepared, reference

    out = args.work / f"index-bench-{name}-{threads}"
    lanes = _lanes(embedder)
    res["lanes"] = lanes
    builds = {
        "build": (embedder, None),  # what ships: lanes on the CPU
        "one_lane": (embedder, 1),  # one model lane fed by decoding threads
        "per_photo_transform": (PerPhotoTransform(embedder), 1),
    }
    runs: dict[str, list[float]] = {"forward": [], "model_share": [], **{k: [] for k in builds}}
    for _ in range(args.repeat):
        runs["forward"].append(forward_limit(embedder, pixels, bs))
        for key, (emb, lane_count) in builds.items():
            shutil.rmtree(out, ignore_errors=True)
            timed = TimedEmbedder(emb)
            t0 = time.perf_counter()
            report = build_index(
                catalog, timed, out, batch_size=bs, workers=args.workers, lanes=lane_count
            )
            wall = time.perf_counter() - t0
            runs[key].append(per_second(report.indexed, wall))
            if key == "build":
                runs["model_share"].append(timed.seconds / wall / lanes)
                res["build_skipped"] = len(report.skipped)
    shutil.rmtree(out, ignore_errors=True)
    res["runs_images_per_s"] = runs
    for key in ("forward", *builds):
        res[f"{key}_images_per_s"] = max(runs[key])
        res[f"{key}_images_per_s_median"] = statistics.median(runs[key])
    # Each round's build against the same round's forward limit: the host's drift cancels.
    for key in builds:
        paired = [b / f for b, f in zip(runs[key], runs["forward"], strict=True)]
        res[f"paired_ratios_{key}"] = paired
        res[f"ratio_{key}_to_forward"] = statistics.median(paired)
        res[f"ratio_{key}_to_forward_iqr"] = [float(q) for q in np.percentile(paired, [25, 75])]
    res["ratio_build_best_to_forward_best"] = (
        res["build_images_per_s"] / res["forward_images_per_s"]
    )
    res["model_share_of_build"] = max(runs["model_share"])

    # Where the time goes: each part alone.
    vectors = embedder.embed_pixels(pixels)
    t0 = time.perf_counter()
    count = sum(
        len(rows) for rows, _, _ in _batches(catalog, embedder, list(range(n)), bs, args.workers)
    )
    res["pipeline_only_images_per_s"] = per_second(count, time.perf_counter() - t0)
    settings = IndexSettings()
    index = HnswIndex(
        embedder.dim, m=settings.m, ef_construction=settings.ef_construction, capacity=n
    )
    t0 = time.perf_counter()
    for i in range(0, n, bs):
        index.add(vectors[i : i + bs], np.arange(i, min(i + bs, n)))
    res["hnsw_insert_images_per_s"] = per_second(n, time.perf_counter() - t0)
    return res


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = []
    for name, runs in results.items():
        for r in runs:
            ratio = r["ratio_build_to_forward"]
            lo, hi = r["ratio_build_to_forward_iqr"]
            rows.append(
                [
                    name,
                    r["images"],
                    r["threads"],
                    r["lanes"],
                    r["forward_images_per_s_median"],
                    r["build_images_per_s_median"],
                    f"**{ratio:.0%}** ({lo:.0%}-{hi:.0%})",
                    f"{r['ratio_build_best_to_forward_best']:.0%}",
                    f"{r['model_share_of_build']:.0%}",
                    _with_ratio(r, "one_lane"),
                    _with_ratio(r, "per_photo_transform"),
                    C.verdict(ratio, TARGET_RATIO, True),
                ]
            )
    return C.md_table(
        [
            "catalog",
            "photos",
            "torch threads",
            "lanes",
            "forward limit img/s",
            "build img/s",
            "build / limit (IQR)",
            "best / best",
            "model's share of lane time",
            "alternative: one lane + decoding threads img/s (/ limit)",
            "alternative: same, open_clip PIL transform per photo img/s (/ limit)",
            "target >= 85%",
        ],
        rows,
    )


def _with_ratio(r: dict[str, Any], key: str) -> str:
    return f"{C.fmt(r[f'{key}_images_per_s_median'])} ({r[f'ratio_{key}_to_forward']:.0%})"


def profile_table(results: dict[str, list[dict[str, Any]]]) -> str:
    rows = []
    for name, runs in results.items():
        for r in runs:
            rows.append(
                [
                    name,
                    r["threads"],
                    r["decode_ms_per_image"],
                    r["prepare_ms_per_image"],
                    r["collate_ms_per_image"],
                    r["open_clip_transform_ms_per_image"],
                    r["pipeline_only_images_per_s"],
                    r["hnsw_insert_images_per_s"],
                    r["max_grey_level_diff_vs_open_clip"],
                    f"{r['min_embedding_cosine_vs_open_clip']:.6f}",
                ]
            )
    return C.md_table(
        [
            "catalog",
            "threads",
            "decode ms/img",
            "prepare ms/img",
            "collate ms/img (batched)",
            "open_clip PIL transform ms/img",
            "decoding threads alone img/s",
            "HNSW insert img/s",
            "max grey-level diff vs open_clip",
            "min embedding cosine vs open_clip",
        ],
        rows,
    )


def plot(results: dict[str, list[dict[str, Any]]], path: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels: list[str] = []
    keys = [
        ("forward_images_per_s_median", "forward limit"),
        ("build_images_per_s_median", "build_index (lanes)"),
        ("one_lane_images_per_s_median", "one lane + decoding threads"),
        ("per_photo_transform_images_per_s_median", "same, per-photo open_clip transform"),
    ]
    values = []
    for name, runs in results.items():
        for r in runs:
            labels.append(f"{name}\n{r['threads']} thr")
            values.append([r[k] for k, _ in keys])
    if not values:
        return
    data = np.array(values)
    x = np.arange(len(labels))
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 3.2))
    for j, (_, label) in enumerate(keys):
        ax.bar(x + (j - 1.5) * 0.2, data[:, j], width=0.2, label=label)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("images / s")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = C.base_parser(__doc__.splitlines()[0])
    C.model_args(p)
    p.add_argument("--catalogs", default="demo,shared", help="demo and/or shared")
    p.add_argument(
        "--limit", type=int, default=1200, help="photos per catalog (1200: the whole demo shop)"
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2, help="build_index decode threads")
    p.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="rounds of forward limit, build and alternative (paired per round)",
    )
    p.add_argument(
        "--threads", type=C.int_list, default=[1, 2], help="torch intra-op thread counts to compare"
    )
    args = p.parse_args(argv)
    run = C.Run("indexing_throughput", args)

    from searchcore.config import Settings
    from searchcore.service import make_embedder

    catalogs = load_catalogs(args, run)
    embedder = make_embedder(Settings(model=args.model, batch_size=args.batch_size))
    results: dict[str, list[dict[str, Any]]] = {}
    for name, catalog in catalogs.items():
        for threads in args.threads:
            run.say(f"{name}: {len(catalog)} photos, {threads} torch thread(s) ...")
            results.setdefault(name, []).append(measure(catalog, embedder, args, threads, name))

    run.section(
        "Build against the forward limit",
        table(results) + "\n\nforward limit = "
        "`embed_pixels` on pre-decoded, pre-processed batches of the same size; build = "
        "`build_index` wall time (decode + prepare + collate + embed + HNSW insert + "
        f"save). {args.repeat} rounds, each timing the forward limit, the build and the "
        "alternatives in turn on the same photos; throughputs are medians over rounds, "
        "and build / limit is the median (and interquartile range) of each round's "
        "build over the same round's limit, so that the host's drift cancels. Model's "
        "share = seconds inside `embed_pixels` during the build / (build wall time x "
        "lanes), best round.",
    )
    run.section(
        "Where the time goes",
        profile_table(results)
        + "\n\nPer-photo costs are single-threaded Python loops at the given torch thread "
        "count; `collate` is per batch, divided by its photos. The last two columns "
        "compare the batched pixels (`collate`) with open_clip's PIL transform of the "
        "same prepared photos: grey levels of 0-255, and embeddings by the model.",
    )
    plot_path = run.plot_path("throughput")
    plot(results, plot_path)
    run.sections.append(f"![throughput]({plot_path.name})\n")
    run.finish(
        {
            "model": embedder.spec,
            "dim": embedder.dim,
            "image_size": embedder.image_size,
            "catalogs": results,
        },
        C.command_line(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
