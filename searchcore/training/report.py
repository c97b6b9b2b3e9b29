"""Turn an evaluation dict into files: ``report.json``, ``report.md`` and PNG plots.

Plots use matplotlib's object API (``Figure`` + ``savefig``), not ``pyplot``: no global
backend or figure state is touched, so this is safe inside a server or a test run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from searchcore.fsutil import write_json_atomic

__all__ = ["markdown", "write_report"]


def clean_json(obj: Any) -> Any:
    """JSON has no inf/nan: write them as null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj


def _f(v: Any, digits: int = 3) -> str:
    return (
        "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"
    )


def _strategies(exact: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for cond in exact.values():
        for k, v in cond.items():
            if isinstance(v, dict) and k not in names:
                names.append(k)
    return names


def markdown(report: dict[str, Any], title: str = "Evaluation") -> str:
    r = report
    split = r.get("split", {})
    lines = [f"# {title}", ""]
    if "model" in r:
        lines.append(
            f"Model `{r['model'].get('spec')}`; catalog `{r['catalog']['path']}` "
            f"({r['catalog']['rows']} products)."
        )
    lines += [
        (
            f"Gallery: {split.get('gallery')} held-out products (seed {split.get('seed')}, "
            f"test fraction {split.get('test_fraction')}, {split.get('excluded_training_rows')} "
            "training products excluded); brute-force cosine search."
        ),
        "",
        "## Text -> product",
        "",
        "| queries | n | R@1 | R@5 | R@10 | MRR |",
        "|---|---|---|---|---|---|",
    ]
    for kind, t in r.get("text", {}).items():
        label = f"{kind} ({' '.join(t['columns'])})" if "columns" in t else kind
        lines.append(
            f"| {label} | {t['queries']} | {_f(t.get('R@1'))} | {_f(t.get('R@5'))} | "
            f"{_f(t.get('R@10'))} | {_f(t.get('MRR'))} |"
        )
    sim = r.get("similar", {})
    lines += [
        "",
        f"## Image -> similar product ({sim.get('queries', 0)} queries)",
        "",
        "| same | P@1 | P@10 |",
        "|---|---|---|",
    ]
    for col, v in sim.items():
        if isinstance(v, dict):
            lines.append(f"| {col} | {_f(v['P@1'])} | {_f(v['P@10'])} |")
    exact = r.get("exact", {})
    names = _strategies(exact)
    if exact:
        lines += [
            "",
            "## Image -> exact product (R@1 / R@10 / MRR)",
            "",
            "| condition | query | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
        ]
        for cname, cond in exact.items():
            cells = []
            for n in names:
                v = cond.get(n)
                cells.append(
                    "-"
                    if v is None
                    else f"{_f(v['R@1'])} / {_f(v['R@10'])} / {_f(v['MRR'])}"
                    + (f" (up {v['upscaled']:.0%})" if n == "auto" else "")
                )
            lines.append(
                f"| {cname} `{cond['spec']}` | {cond['query_size']} | " + " | ".join(cells) + " |"
            )
    quality = r.get("upscaler_quality", {})
    if quality:
        lines += [
            "",
            "## Upscaler quality (against the original photo)",
            "",
            "| condition | upscaler | PSNR dB | vs bicubic | SSIM | vs bicubic | ms/photo |",
            "|---|---|---|---|---|---|---|",
        ]
        for cname, cond in quality.items():
            for uname, v in cond.items():
                lines.append(
                    f"| {cname} | {uname} | {_f(v['PSNR'], 2)} | "
                    f"{v['PSNR_vs_bicubic']:+.2f} | {_f(v['SSIM'])} | "
                    f"{v['SSIM_vs_bicubic']:+.3f} | {_f(v['ms'], 1)} |"
                )
    verdict = r.get("verdict") or {}
    if verdict.get("reason"):
        lines += ["", "## Does upscaling help retrieval?", "", verdict["reason"] + "."]
        if verdict.get("paired"):
            lines += [
                "",
                "| condition | R@1 change | queries gained | lost | sign test p |",
                "|---|---|---|---|---|",
            ]
            lines += [
                f"| {n} | {p['delta_R@1']:+.3f} | {p['gained']} | {p['lost']} | {p['p']:.3f} |"
                for n, p in verdict["paired"].items()
            ]
        lines += ["", f"Rule: {verdict.get('rule', '')}."]
    notes = {
        v["note"]
        for c in exact.values()
        for v in c.values()
        if isinstance(v, dict) and v.get("note")
    }
    lines += [f"- auto: {n}" for n in sorted(notes)]
    lines += ["", f"Evaluated in {r.get('seconds', 0)} s."]
    return "\n".join(lines) + "\n"


def write_report(
    report: dict[str, Any], out_dir: str | Path, title: str = "Evaluation", plots: bool = True
) -> list[Path]:
    """Write report.json, report.md and (with ``plots``) PNGs; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "report.json", clean_json(report))
    (out / "report.md").write_text(markdown(report, title), encoding="utf-8")
    paths = [out / "report.json", out / "report.md"]
    if report.get("verdict"):
        write_json_atomic(out / "upscale_verdict.json", clean_json(report["verdict"]))
        paths.append(out / "upscale_verdict.json")
    if plots:
        paths += _plots(report, out)
    return paths


def draw_bars(ax: Any, groups: list[str], series: dict[str, list[float]], ylabel: str) -> None:
    width = 0.8 / max(1, len(series))
    for i, (name, values) in enumerate(series.items()):
        xs = [g + (i - (len(series) - 1) / 2) * width for g in range(len(groups))]
        ax.bar(xs, [0 if v is None else v for v in values], width, label=name)
    ax.set_xticks(range(len(groups)), groups, rotation=15)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)


def _plots(report: dict[str, Any], out: Path) -> list[Path]:
    from matplotlib.figure import Figure

    paths: list[Path] = []
    exact = report.get("exact", {})
    if exact:
        fig = Figure(figsize=(8, 4), layout="constrained")
        ax = fig.add_subplot()
        names = _strategies(exact)
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


def load_report(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))
