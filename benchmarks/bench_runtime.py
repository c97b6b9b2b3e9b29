"""Runtimes side by side: torch fp32, ONNX Runtime fp32 and ONNX Runtime int8.

For each model in ``--models`` (the shipped model, and the ``ViT-B-32`` architecture with random
weights: speed only), exported into the work folder by ``searchcore.embed.export_onnx`` (fp32
and int8; the shipped folder copied, ViT-B-32 written as a model folder first), and for each
thread count in ``--threads`` (``torch.set_num_threads``; the onnxruntime sessions follow it as
they do in searchcore), in one process, the three runtimes taking turns within each round:

1. **image embed p50 at batch 1**: ``embed_images([photo])`` on decoded demo-shop photos, the
   engine's ``embed`` stage (preprocessing included);
2. **text embed p50 at batch 1**: ``embed_texts([title])``, the engine's ``embed_text`` stage
   without its cache;
3. **indexing photos/s**: the real ``build_index`` on ``--photos`` demo-shop photos (batch 32,
   lanes as shipped: decode, prepare, collate, embed, HNSW insert, save);
4. **fidelity** (the shipped model; ViT-B-32's random weights only show that the export is
   exact): the export's own report (cosine to torch on its sample photos and texts), cosine to
   torch on ``--fidelity-n`` demo-shop photos and titles, and retrieval with each runtime's
   vectors: each title's own product photo at rank 1 / in the top 10, and the top 10's overlap
   with torch's. This is int8's retrieval cost.

Targets (2 cores): ViT-B-32 image embed p50 <= 40 ms (ONNX fp32 or int8) and indexing >= 2x
torch fp32; ONNX fp32 cosine to torch >= 0.9999; the shipped model's embed stage at 1 thread
<= 0.6x torch's.

    python benchmarks/bench_runtime.py            # about 10 min on 2 cores
    python benchmarks/bench_runtime.py --quick    # smoke run (results tagged 'quick')
"""

from __future__ import annotations

import shutil
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import _common as C
import numpy as np

RUNTIMES = ("torch", "onnx", "onnx-int8")
VIT = "random:ViT-B-32"
TOLERANCE = 0.9999


def model_folder(spec: str, work: Path, run: C.Run) -> tuple[Path, dict[str, Any]]:
    """A model folder for ``spec`` in the work folder, exported afresh (fp32 and int8)."""
    from searchcore.embed import ModelSpec, export_onnx, load_embedder, model_config, save_model
    from searchcore.embed.onnx import ONNX_MANIFEST

    parsed = ModelSpec.parse(spec)
    folder = work / ("runtime-" + spec.replace(":", "-").replace("/", "-"))
    shutil.rmtree(folder, ignore_errors=True)
    if parsed.kind == "local":
        shutil.copytree(parsed.name, folder, ignore=shutil.ignore_patterns("*.onnx", ONNX_MANIFEST))
    else:
        save_model(load_embedder(spec), folder, model_config(parsed.name))
    run.say(f"exporting {spec} to ONNX (fp32 and int8) in {folder} ...")
    t0 = time.perf_counter()
    manifest = export_onnx(load_embedder(str(folder)), folder, int8=True)
    manifest["export_seconds"] = round(time.perf_counter() - t0, 1)
    return folder, manifest


def ms(fn: Any, items: list[Any]) -> list[float]:
    out = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - t0) * 1000)
    return out


def build_rate(catalog: Any, embedder: Any, out: Path) -> float:
    from searchcore.build import build_index

    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    report = build_index(catalog, embedder, out, batch_size=32)
    rate = report.indexed / (time.perf_counter() - t0)
    shutil.rmtree(out, ignore_errors=True)
    return rate


def measure_speed(
    embedders: dict[str, Any], photos: list[Any], texts: list[str], catalog: Any, args: Any
) -> dict[str, dict[str, Any]]:
    """Per thread count and runtime: image and text p50 (ms), indexing photos/s."""
    out: dict[str, dict[str, Any]] = {}
    for threads in args.threads:
        C.set_torch_threads(threads)
        raw: dict[str, dict[str, list[float]]] = {
            r: {"image": [], "text": [], "build": []} for r in embedders
        }
        for emb in embedders.values():  # warm-up: sessions at this thread count, caches
            emb.embed_images(photos[:2])
            emb.embed_texts(texts[:2])
        per_round = max(1, args.n // args.repeat)
        for rnd in range(args.repeat):
            sl = slice(rnd * per_round, (rnd + 1) * per_round)
            for runtime, emb in embedders.items():
                raw[runtime]["image"] += ms(lambda p, e=emb: e.embed_images([p]), photos[sl])
                raw[runtime]["text"] += ms(lambda t, e=emb: e.embed_texts([t]), texts[sl])
                raw[runtime]["build"].append(
                    build_rate(catalog, emb, args.work / f"runtime-index-{runtime}")
                )
        out[str(threads)] = {
            r: {
                "image_ms": C.percentiles(v["image"]),
                "text_ms": C.percentiles(v["text"]),
                "index_photos_per_s": round(statistics.median(v["build"]), 1),
                "index_rounds": [round(x, 1) for x in v["build"]],
            }
            for r, v in raw.items()
        }
    return out


def measure_fidelity(embedders: dict[str, Any], photos: list[Any], titles: list[str]) -> dict:
    """Cosine to torch on catalog photos and titles, and title -> own photo retrieval."""
    vecs = {r: (e.embed_images(photos), e.embed_texts(titles)) for r, e in embedders.items()}
    ref_i, ref_t = vecs["torch"]
    ref_top = np.argsort(-(ref_t @ ref_i.T), axis=1)[:, :10]
    out = {}
    for runtime, (img, txt) in vecs.items():
        sims = txt @ img.T
        own = np.diag(sims)
        rank = (sims > own[:, None]).sum(1)  # photos scored above the title's own photo
        top = np.argsort(-sims, axis=1)[:, :10]
        overlap = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(top, ref_top, strict=True)])
        ci, ct = (ref_i * img).sum(1), (ref_t * txt).sum(1)
        out[runtime] = {
            "photos": len(photos),
            "photo_cosine_min": round(float(ci.min()), 7),
            "photo_cosine_mean": round(float(ci.mean()), 7),
            "title_cosine_min": round(float(ct.min()), 7),
            "title_cosine_mean": round(float(ct.mean()), 7),
            "recall_at_1": round(float((rank == 0).mean()), 4),
            "recall_at_10": round(float((rank < 10).mean()), 4),
            "top10_overlap_with_torch": round(float(overlap), 4),
        }
    return out


def targets(models: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []

    def add(target: str, setting: str, value: float | None, goal: str, ok: str) -> None:
        rows.append(
            {"target": target, "setting": setting, "measured": value, "goal": goal, "verdict": ok}
        )

    for spec, m in models.items():
        name = "ViT-B-32" if spec == VIT else spec
        for threads, s in m["speed"].items():
            setting = f"{threads} thread(s)"
            best = min(s["onnx"]["image_ms"]["p50"], s["onnx-int8"]["image_ms"]["p50"])
            index_ratio = max(
                s["onnx"]["index_photos_per_s"], s["onnx-int8"]["index_photos_per_s"]
            ) / max(s["torch"]["index_photos_per_s"], 1e-9)
            if spec == VIT:
                add(
                    f"{name} image embed p50, ONNX best",
                    setting,
                    best,
                    "<= 40 ms",
                    C.verdict(best, 40.0, False),
                )
                add(
                    f"{name} indexing, ONNX best / torch",
                    setting,
                    round(index_ratio, 2),
                    ">= 2x",
                    C.verdict(index_ratio, 2.0, True),
                )
            elif threads == "1":
                for runtime, label in (("onnx", "fp32"), ("onnx-int8", "int8")):
                    ratio = s[runtime]["image_ms"]["p50"] / s["torch"]["image_ms"]["p50"]
                    add(
                        f"{name} embed stage, ONNX {label} / torch",
                        setting,
                        round(ratio, 3),
                        "<= 0.6x",
                        C.verdict(ratio, 0.6, False),
                    )
        cos = m["export"]["variants"]["fp32"]["fidelity"]["min_cosine"]
        add(
            f"{name} ONNX fp32 cosine to torch (export samples, min)",
            "-",
            cos,
            f">= {TOLERANCE}",
            C.verdict(cos, TOLERANCE, True),
        )
    return rows


def cosine(x: float | None) -> str:
    """Cosines near 1 with the digits that tell them apart (0.9999996, not 1)."""
    return "-" if x is None else f"{x:.7f}"


def shown(x: float | None) -> str:
    return cosine(x) if x is not None and 0.99 < x <= 1.0001 else C.fmt(x)


def speed_table(models: dict[str, dict[str, Any]]) -> str:
    rows = []
    for spec, m in models.items():
        for threads, s in m["speed"].items():
            base = s["torch"]
            for runtime, r in s.items():
                rows.append(
                    [
                        spec,
                        threads,
                        runtime,
                        r["image_ms"]["p50"],
                        r["image_ms"]["p95"],
                        r["text_ms"]["p50"],
                        r["index_photos_per_s"],
                        f"{r['image_ms']['p50'] / base['image_ms']['p50']:.2f}x",
                        f"{r['index_photos_per_s'] / base['index_photos_per_s']:.2f}x",
                    ]
                )
    return C.md_table(
        [
            "model",
            "threads",
            "runtime",
            "image embed p50 ms",
            "p95",
            "text embed p50 ms",
            "indexing photos/s",
            "image p50 vs torch",
            "indexing vs torch",
        ],
        rows,
    )


def fidelity_table(models: dict[str, dict[str, Any]]) -> str:
    rows = []
    for spec, m in models.items():
        for runtime, f in m.get("fidelity", {}).items():
            variant = {"onnx": "fp32", "onnx-int8": "int8"}.get(runtime)
            ex = m["export"]["variants"][variant]["fidelity"] if variant else None
            rows.append(
                [
                    spec,
                    runtime,
                    cosine(ex["image"]["min_cosine"] if ex else None),
                    cosine(ex["text"]["min_cosine"] if ex else None),
                    cosine(f["photo_cosine_min"]),
                    cosine(f["title_cosine_min"]),
                    f["recall_at_1"],
                    f["recall_at_10"],
                    f["top10_overlap_with_torch"],
                ]
            )
    return C.md_table(
        [
            "model",
            "runtime",
            "export samples: photo cos min",
            "text cos min",
            "shop photos: cos min",
            "titles: cos min",
            "title -> own photo @1",
            "@10",
            "top-10 overlap with torch",
        ],
        rows,
    )


def plot(models: dict[str, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(spec, t) for spec, m in models.items() for t in m["speed"]]
    fig, axes = plt.subplots(1, 2, figsize=(2.2 * len(groups) + 3, 3.2))
    x = np.arange(len(groups))
    for ax, key, label in (
        (axes[0], "image_ms", "image embed p50 (ms)"),
        (axes[1], "index_photos_per_s", "indexing photos/s"),
    ):
        for j, runtime in enumerate(RUNTIMES):
            vals = [models[s]["speed"][t][runtime][key] for s, t in groups]
            vals = [v["p50"] if isinstance(v, dict) else v for v in vals]
            ax.bar(x + (j - 1) * 0.27, vals, width=0.27, label=runtime)
        ax.set_xticks(x, [f"{s.split(':')[-1]}\n{t} thr" for s, t in groups], fontsize=8)
        ax.set_ylabel(label)
        ax.set_yscale("log")  # the shipped model and ViT-B-32 differ tenfold
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--models", default=f"default,{VIT}", help="model specs, comma separated")
    p.add_argument("--threads", type=C.int_list, default=[1, 2], help="thread counts")
    p.add_argument("--n", type=int, default=60, help="timed image and text queries per setting")
    p.add_argument("--photos", type=int, default=128, help="photos per indexing run")
    p.add_argument("--repeat", type=int, default=3, help="rounds, the runtimes in turn")
    p.add_argument("--fidelity-n", type=int, default=600, help="demo-shop products for fidelity")
    p.add_argument("--quick", action="store_true", help="a smoke run: few of everything")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.photos, args.repeat, args.fidelity_n = 8, 32, 1, 64
        args.tag = args.tag or "quick"
    run = C.Run("runtime", args)

    from searchcore.catalog import load_catalog
    from searchcore.embed import load_embedder
    from searchcore.images import decode_image

    csv = C.demo_catalog(args.work, max(args.fidelity_n, args.photos, args.n))
    catalog = load_catalog(csv)
    index_catalog = replace(catalog, df=catalog.df.iloc[: args.photos].reset_index(drop=True))
    paths = catalog.image_paths()
    photos = [decode_image(p) for p in paths[: args.n]]
    titles = [str(t) for t in catalog.df["title"]]
    models: dict[str, dict[str, Any]] = {}
    for spec in args.models.split(","):
        folder, manifest = model_folder(spec, args.work, run)
        embedders = {r: load_embedder(str(folder), runtime=r) for r in RUNTIMES}
        run.say(f"{spec}: timing {', '.join(RUNTIMES)} at {args.threads} thread(s) ...")
        speed = measure_speed(embedders, photos, titles[: args.n], index_catalog, args)
        models[spec] = {"folder": str(folder), "export": manifest, "speed": speed}
        if spec != VIT:
            run.say(f"{spec}: fidelity on {args.fidelity_n} demo-shop products ...")
            shop = [decode_image(p) for p in paths[: args.fidelity_n]]
            models[spec]["fidelity"] = measure_fidelity(embedders, shop, titles[: args.fidelity_n])
        del embedders
    goals = targets(models)
    run.section(
        "Speed: torch fp32, ONNX fp32, ONNX int8",
        speed_table(models)
        + f"\n\nimage / text embed: batch 1, {args.n} demo-shop photos and titles per setting, "
        "preprocessing included (the engine's embed stages). indexing: `build_index` on "
        f"{args.photos} demo-shop photos, batch 32, lanes as shipped; median of "
        f"{args.repeat} round(s), the runtimes in turn within each.",
    )
    run.section(
        "Fidelity and retrieval (cosine to torch fp32)",
        fidelity_table(models)
        + "\n\nexport samples: the fidelity report `searchcore model export` writes "
        "(`onnx.json`). shop photos / titles: the first "
        f"{args.fidelity_n} demo-shop products. title -> own photo: share of titles whose own "
        "product photo ranks first / in the top 10 among those photos, with that runtime's "
        "vectors. ViT-B-32 has random weights: speed only.",
    )
    run.section(
        "Targets",
        C.md_table(
            ["target", "setting", "measured", "goal", "verdict"],
            [
                [g["target"], g["setting"], shown(g["measured"]), g["goal"], g["verdict"]]
                for g in goals
            ],
        ),
    )
    plot_path = run.plot_path("speed")
    plot(models, plot_path)
    run.sections.append(f"![speed]({plot_path.name})\n")
    run.finish({"models": models, "targets": goals}, C.command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
