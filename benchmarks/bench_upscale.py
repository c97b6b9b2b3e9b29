"""Upscaler cost against input size, with and without tiling: milliseconds and peak memory.

Each (tile, threads) setting runs in a fresh process (so peak memory is that setting's own):
it builds ``searchcore.upscale.RealESRGANUpscaler`` as the engine does, warms it up on a tiny
image, then upscales a real photo resized to each ``--sizes`` side (ascending) and reports the
p50 time and the growth of the process's peak RSS over the warmed-up baseline. Inputs above
``--max-input-side`` (the shipped 256) are shrunk first, exactly as in the engine, so their cost
levels off. A bicubic baseline and one candidate for the core (the network in bfloat16 on CPUs
that have native bf16, with its output difference from float32) are measured alongside.

    python benchmarks/bench_upscale.py                    # ~3-4 min on 2 busy cores
    python benchmarks/bench_upscale.py --upscaler NAME --upscaler-weights W.pth --tiles 0,64
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _common as C
import numpy as np


def source_photo(args: argparse.Namespace) -> Any:
    from PIL import Image

    csv, _ = C.shared_catalog(args.shared)
    catalog = csv if csv is not None else C.demo_catalog(args.work)
    path = min((catalog.parent / "images").glob("*.jpg"))
    return Image.open(path).convert("RGB"), str(path)


def at_side(img: Any, side: int) -> Any:
    from PIL import Image

    return img.resize((side, side), Image.Resampling.LANCZOS)


def peak_rss_bytes() -> int:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return int(kb) * 1024


# --------------------------------------------------------------------------- worker process


def worker(args: argparse.Namespace) -> None:
    """One (tile, threads) setting: prints one JSON line per size."""
    from PIL import Image

    from searchcore.upscale import RealESRGANUpscaler, get_upscaler_spec

    C.set_torch_threads(args.threads_one)
    up = RealESRGANUpscaler(
        get_upscaler_spec(args.upscaler),
        args.upscaler_weights,
        tile=args.tile_one,
        max_input_side=args.max_input_side,
    )
    up.load()
    up.upscale(Image.new("RGB", (16, 16), (128, 128, 128)))
    baseline = peak_rss_bytes()
    photo, _ = source_photo(args)
    for side in args.sizes:
        img = at_side(photo, side)
        times: list[float] = []
        started = time.perf_counter()
        while len(times) < args.reps and (not times or time.perf_counter() - started < args.cap):
            t0 = time.perf_counter()
            out = up.upscale(img)
            times.append((time.perf_counter() - t0) * 1000)
        print(
            json.dumps(
                {
                    "side": side,
                    "out": list(out.size),
                    "ms": C.percentiles(times),
                    "peak_rss_growth_bytes": peak_rss_bytes() - baseline,
                }
            ),
            flush=True,
        )


def run_setting(
    args: argparse.Namespace, weights: Path, tile: int, threads: int
) -> list[dict[str, Any]]:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        "--tile-one",
        str(tile),
        "--threads-one",
        str(threads),
        "--upscaler",
        args.upscaler,
        "--upscaler-weights",
        str(weights),
        "--sizes",
        ",".join(map(str, args.sizes)),
        "--reps",
        str(args.reps),
        "--cap",
        str(args.cap),
        "--max-input-side",
        str(args.max_input_side),
        "--shared",
        str(args.shared),
        "--work",
        str(args.work),
    ]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=3600)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-500:])
    return rows


# --------------------------------------------------------------------------- in-process parts


def bicubic_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    from searchcore.upscale import BicubicUpscaler

    up, (photo, _) = BicubicUpscaler(4), source_photo(args)
    rows = []
    for side in args.sizes:
        img = at_side(photo, side)
        times = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            up.upscale(img)
            times.append((time.perf_counter() - t0) * 1000)
        rows.append({"side": side, "ms": C.percentiles(times)})
    return rows


def bf16_candidate(args: argparse.Namespace, weights: Path, sides: list[int]) -> dict[str, Any]:
    """The network alone in float32 and bfloat16: time and how far the uint8 outputs differ."""
    import torch

    from searchcore.upscale import get_upscaler_spec, load_network

    capability = torch.backends.cpu.get_cpu_capability()
    net = load_network(get_upscaler_spec(args.upscaler), weights)
    photo, _ = source_photo(args)
    rows = []
    with torch.inference_mode():
        for threads, side in ((t, s) for t in args.threads for s in sides):
            C.set_torch_threads(threads)
            x = torch.from_numpy(np.asarray(at_side(photo, side), np.float32) / 255.0)
            x = x.permute(2, 0, 1)[None].contiguous()
            res: dict[str, Any] = {"threads": threads, "side": side}
            outs = {}
            for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
                model, inp = net.to(dtype), x.to(dtype)
                model(inp)
                times = []
                for _ in range(min(args.reps, 3)):
                    t0 = time.perf_counter()
                    y = model(inp)
                    times.append((time.perf_counter() - t0) * 1000)
                res[f"{name}_ms"] = C.percentiles(times)["p50"]
                outs[name] = (y.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            diff = np.abs(outs["float32"].astype(np.int16) - outs["bfloat16"].astype(np.int16))
            mse = float((diff.astype(np.float64) ** 2).mean())
            res["max_abs_diff_0_255"] = int(diff.max())
            res["psnr_db"] = 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)
            rows.append(res)
            net = net.to(torch.float32)
    return {"cpu_capability": capability, "rows": rows}


# --------------------------------------------------------------------------- report


def table(settings: dict[str, list[dict[str, Any]]], bicubic: list[dict[str, Any]]) -> str:
    sides = [r["side"] for r in bicubic]
    headers = ["input side", "output"]
    cols = []
    for key, rows_of_key in settings.items():
        headers += [f"{key} ms p50", f"{key} peak MB"]
        cols.append({r["side"]: r for r in rows_of_key})
    headers.append("bicubic x4 ms")
    rows = []
    for i, side in enumerate(sides):
        out = next((c[side]["out"] for c in cols if side in c), None)
        row: list[Any] = [side, f"{out[0]}x{out[1]}" if out else "-"]
        for c in cols:
            r = c.get(side)
            row += [
                r["ms"]["p50"] if r else None,
                r["peak_rss_growth_bytes"] / 2**20 if r else None,
            ]
        row.append(bicubic[i]["ms"]["p50"])
        rows.append(row)
    return C.md_table(headers, rows)


def plot(settings: dict[str, list[dict[str, Any]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
    for key, rows in settings.items():
        sides = [r["side"] for r in rows]
        a.plot(sides, [r["ms"]["p50"] for r in rows], "o-", label=key, ms=3)
        b.plot(sides, [r["peak_rss_growth_bytes"] / 2**20 for r in rows], "o-", label=key, ms=3)
    for ax, label in ((a, "ms (p50)"), (b, "peak RSS growth (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("input side (px)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    a.set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = C.base_parser(__doc__.splitlines()[0])
    C.upscaler_args(p)
    p.add_argument("--sizes", type=C.int_list, default=[32, 64, 96, 128, 192, 256, 512, 1024])
    p.add_argument(
        "--tiles", type=C.int_list, default=[0, 128], help="tile sizes (0 = whole image at once)"
    )
    p.add_argument("--threads", type=C.int_list, default=[1, 2])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--cap", type=float, default=8.0, help="seconds per size before stopping")
    p.add_argument("--max-input-side", type=int, default=256)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--tile-one", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--threads-one", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    run = C.Run("upscale_cost", args)
    weights, where = C.upscaler_weights(args.shared, args.upscaler, args.upscaler_weights)
    if weights is None:  # no shared copy: whatever the project itself would use
        from searchcore.config import Settings
        from searchcore.errors import SearchError
        from searchcore.upscale import get_upscaler_spec, resolve_weights

        try:
            settings = Settings()
            weights = resolve_weights(
                get_upscaler_spec(args.upscaler), None, settings.cache_dir, allow_download=False
            )
        except SearchError as exc:
            run.skip("the upscaler", str(exc))
            run.finish({}, C.command_line())
            return 0
    run.say(f"{args.upscaler}, weights: {where}")
    settings: dict[str, list[dict[str, Any]]] = {}
    for tile in args.tiles:
        for threads in args.threads:
            key = f"tile {tile or 'off'}, {threads} thr"
            run.say(f"{key} ...")
            try:
                settings[key] = run_setting(args, weights, tile, threads)
            except (RuntimeError, subprocess.SubprocessError) as exc:
                run.skip(key, str(exc))
    bicubic = bicubic_rows(args)
    candidate = bf16_candidate(
        args, weights, [s for s in (64, 96, 128) if s <= args.max_input_side]
    )
    photo_path = source_photo(args)[1]
    run.section(
        f"{args.upscaler}: time and peak memory by input side",
        table(settings, bicubic)
        + f"\n\nInput: {photo_path} resized to a square of each side. Output = x4 of the "
        f"input after shrinking to at most {args.max_input_side} px. Peak MB = growth of "
        "the worker process's peak RSS over its warmed-up baseline, sizes run in "
        "ascending order (so it is the largest need so far).",
    )
    cand_rows = [
        [
            r["side"],
            r["threads"],
            r["float32_ms"],
            r["bfloat16_ms"],
            r["float32_ms"] / r["bfloat16_ms"],
            r["max_abs_diff_0_255"],
            r["psnr_db"],
        ]
        for r in candidate["rows"]
    ]
    run.section(
        "Candidate: the network in bfloat16",
        C.md_table(
            [
                "input side",
                "threads",
                "float32 ms",
                "bfloat16 ms",
                "speed-up",
                "max abs diff (0-255)",
                "PSNR vs float32 dB",
            ],
            cand_rows,
        )
        + "\n\nThe network alone (no RealESRGANer pre/post-processing, so no 10 px "
        f"pre-pad); CPU capability `{candidate['cpu_capability']}`. "
        "bf16 is only fast on CPUs with native bf16 (AVX512-BF16/AMX).",
    )
    plot_path = run.plot_path("cost")
    plot(settings, plot_path)
    run.sections.append(f"![upscaler cost]({plot_path.name})\n")
    run.finish(
        {
            "upscaler": args.upscaler,
            "weights": where,
            "max_input_side": args.max_input_side,
            "settings": settings,
            "bicubic": bicubic,
            "candidate_bf16": candidate,
        },
        C.command_line(),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
