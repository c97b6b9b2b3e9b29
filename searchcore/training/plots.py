"""The evaluation's and ``tune``'s PNG plots.

Plots use matplotlib's object API (``Figure`` + ``savefig``), not ``pyplot``: no global
backend or figure state is touched, so this is safe inside a server or a test run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def draw_bars(ax: Any, groups: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [0 if v is None else v for v in values], width, label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=15)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def eval_plots(report: dict[str, Any], out: Path, names: list[str]) -> list[Path]:
    """An evaluation's plots: exact product by condition and upscaling, and by photo width;
    text search; upscaler quality against cost. ``names``: the upscaling strategies."""
    from matplotlib.figure import Figure

    paths: list[Path] = []
    exact = report.get("exact", {})
    if exact:
        fig = Figure(figsize=(8, 4), layout="constrained")
        ax = fig.add_subplot()
        draw_bars(
            ax,
            list(exact),
            {n: [c.get(n, {}).get("R@1") for c in exact.values()] for n in names},
            "exact-product Recall@1",
        )
        ax.set_ylim(0, 1)
        ax.set_title("Image -> exact product, by query condition and upscaling")
        fig.savefig(out / "exact_recall.png", dpi=110)
        paths.append(out / "exact_recall.png")
    widths = {
        c: {n: v["by_width"] for n, v in cond.items() if isinstance(v, dict) and "by_width" in v}
        for c, cond in exact.items()
    }
    widths = {c: w for c, w in widths.items() if w}
    if widths:
        fig = Figure(figsize=(5 * len(widths), 3.5), layout="constrained")
        for ax, (cname, series) in zip(
            fig.subplots(1, len(widths), squeeze=False)[0], widths.items(), strict=True
        ):
            by_band = {
                n: {w: b.get("R@1") for w, b in bands.items()} for n, bands in series.items()
            }
            width_lines(ax, by_band, "exact-product Recall@1", f"{cname}: upscaling by photo width")
        fig.savefig(out / "exact_by_width.png", dpi=110)
        paths.append(out / "exact_by_width.png")
    text = report.get("text", {})
    if text:
        fig = Figure(figsize=(6, 3.5), layout="constrained")
        ax = fig.add_subplot()
        ks = [k for k in ("R@1", "R@5", "R@10", "MRR") if k in next(iter(text.values()))]
        draw_bars(ax, ks, {kind: [t.get(k) for k in ks] for kind, t in text.items()}, "")
        ax.set_ylim(0, 1)
        ax.set_title("Text -> product")
        fig.savefig(out / "text_recall.png", dpi=110)
        paths.append(out / "text_recall.png")
    quality = report.get("upscaler_quality", {})
    if quality:
        fig = Figure(figsize=(6, 3.5), layout="constrained")
        ax = fig.add_subplot()
        for cname, cond in quality.items():
            for uname, v in cond.items():
                ax.scatter(v["ms"], v["PSNR"], label=f"{uname} ({cname})")
        ax.set_xscale("symlog")
        ax.set_xlabel("ms per query photo")
        ax.set_ylabel("PSNR dB vs original")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        ax.set_title("Upscaler quality and cost")
        fig.savefig(out / "upscaler_quality.png", dpi=110)
        paths.append(out / "upscaler_quality.png")
    return paths


def width_lines(
    ax: Any, series: dict[str, dict[str, float | None]], ylabel: str, title: str
) -> None:
    """One line per upscaling strategy: a recall per photo-width band."""
    for name, bands in series.items():
        ax.plot(list(bands), list(bands.values()), marker="o", label=name)
    ax.set_ylim(0, 1)
    ax.set_xlabel("query photo width")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(title)


def comparison_plots(variants: dict[str, Any], out: Path, tuned_name: str) -> list[Path]:
    """``tune``'s plots: every model side by side, and the fine-tuned one's upscaling by
    photo width. ``variants``: name -> headline figures, in the table's order."""
    from matplotlib.figure import Figure

    metrics = [
        m
        for m in (
            "category P@10",
            "colour P@10",
            "gender P@10",
            "title R@10",
            "attribute query P@10",
            "shopper R@10 [never]",
        )
        if any(m in v for v in variants.values())
    ]
    fig = Figure(figsize=(10, 5), layout="constrained")
    ax = fig.add_subplot()
    draw_bars(
        ax,
        [m.replace(" [never]", "") for m in metrics],
        {n: [v.get(m) for m in metrics] for n, v in variants.items()},
        "",
    )
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)  # off the bars
    ax.set_ylim(0, 1)
    ax.set_title("Held-out products: fine-tuned vs baselines")
    fig.savefig(out / "comparison.png", dpi=110)
    paths = [out / "comparison.png"]
    tuned = variants.get(tuned_name, {})
    bands = {
        k[len("shopper by width [") : -1]: v
        for k, v in tuned.items()
        if k.startswith("shopper by width [")
    }
    if bands:
        fig = Figure(figsize=(6, 3.5), layout="constrained")
        title = "Fine-tuned model: upscaling by query size"
        width_lines(fig.add_subplot(), bands, "exact-product Recall@10", title)
        fig.savefig(out / "shopper_by_width.png", dpi=110)
        paths.append(out / "shopper_by_width.png")
    return paths
