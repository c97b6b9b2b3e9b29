"""Turn an evaluation dict into files: ``report.json``, ``report.md`` and PNG plots
(drawn by :mod:`.plots`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from searchcore.fsutil import write_json_atomic
from searchcore.training import text_eval

__all__ = ["comparison_markdown", "headline", "markdown", "write_comparison", "write_report"]


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
    """A figure for a table: ``-`` for what is missing, not a number or not finite."""
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return "-"
    return f"{v:.{digits}f}"


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
            f"Gallery: {split.get('gallery')} held-out products (split by "
            f"{split.get('by', 'hash')}, seed {split.get('seed')}, "
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
    if r.get("text_search"):
        lines += ["", "## Text search: vector / lexical / hybrid", ""]
        lines += text_eval.markdown_table(r["text_search"])
    sim = r.get("similar", {})
    lines += [
        "",
        f"## Image -> similar product ({sim.get('queries', 0)} queries)",
        "",
        "| same | P@1 | P@10 |",
        "|---|---|---|",
    ]
    shop = r.get("similar_shop") or {}
    if shop:
        lines[-2:] = [
            f"| same | P@1 | P@10 | P@1, {shop['condition']} ({shop['query_size']}) | P@10, "
            f"{shop['condition']} |",
            "|---|---|---|---|---|",
        ]
    for col, v in sim.items():
        if isinstance(v, dict):
            extra = ""
            if isinstance(shop.get(col), dict):
                extra = f" {_f(shop[col]['P@1'])} | {_f(shop[col]['P@10'])} |"
            lines.append(f"| {col} | {_f(v['P@1'])} | {_f(v['P@10'])} |{extra}")
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
    lines += _attributes_table(r.get("attributes") or {})
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
        lines += _bands_table(r.get("verdicts") or {"": verdict})
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


def _bands_table(verdicts: dict[str, Any]) -> list[str]:
    """Each upscaler against none, per photo width band: what ``auto`` follows photo by photo
    (upscale where significantly more queries gain than lose)."""
    rows = [(name, v, b) for name, v in verdicts.items() for b in v.get("bands") or []]
    if not rows:
        return []
    lines = [
        "",
        "By photo width (the conditions with a range of widths, pooled): auto upscales where "
        "it helps, skips where it hurts, elsewhere follows the overall verdict:",
        "",
        "| upscaler | width | queries | R@1 change | gained | lost | sign test p | auto |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v, b in rows:
        overall = "upscale" if v.get("helps") else "skip"
        verdict = "upscale" if b["helps"] else "skip" if b["hurts"] else f"{overall} (overall)"
        lines.append(
            f"| {name or '-'} | {b['label']} | {b['queries']} | {b['delta_R@1']:+.3f} | "
            f"{b['gained']} | {b['lost']} | {b['p']:.3f} | {verdict} |"
        )
    return lines


def _attributes_table(attrs: dict[str, Any]) -> list[str]:
    """The attribute heads' accuracy and calibration (ECE), per column and photo kind."""
    columns = {c: v for c, v in attrs.items() if isinstance(v, dict)}
    kinds = sorted({k for v in columns.values() for k, x in v.items() if isinstance(x, dict)})
    if not columns or not kinds:
        return []
    lines = [
        "",
        f"## Attribute heads (trained {attrs.get('trained', '?')}): accuracy / ECE",
        "",
        "| column | values | known | " + " | ".join(kinds) + " |",
        "|---|---|---|" + "---|" * len(kinds),
    ]
    for column, v in columns.items():
        cells = [f"{_f(v[k]['accuracy'])} / {_f(v[k]['ece'])}" if k in v else "-" for k in kinds]
        lines.append(
            f"| {column} | {v.get('classes', '-')} | {v.get('known', 0):.0%} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


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
        from searchcore.training.plots import eval_plots

        paths += eval_plots(report, out, _strategies(report.get("exact", {})))
    return paths


def load_report(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- tune's comparison

# The fine-tuned model's name among the compared variants (searchcore.training.tune).
VARIANT_FINETUNED = "fine-tuned"


def headline(report: dict[str, Any]) -> dict[str, Any]:
    """The figures the comparison table shows, from one evaluation report."""
    out: dict[str, Any] = {"spec": report.get("model", {}).get("spec")}
    for col, v in report.get("similar", {}).items():
        if isinstance(v, dict):
            out[f"{col} P@1"], out[f"{col} P@10"] = v["P@1"], v["P@10"]
    shop = report.get("similar_shop") or {}
    for col, v in shop.items():
        if isinstance(v, dict):
            out[f"{col} P@10 [{shop['condition']}]"] = v["P@10"]
    text = report.get("text", {})
    if "titles" in text:
        out["title R@1"], out["title R@10"] = text["titles"]["R@1"], text["titles"]["R@10"]
    if "attributes" in text:
        out["attribute query P@10"] = text["attributes"].get("P@10")
        out["attribute query R@10"] = text["attributes"]["R@10"]
    served = text_eval.SERVED  # the text search the page serves (hybrid, default fusion)
    for family, row in report.get("text_search", {}).items():
        if served in row:
            for metric in text_eval.HEADLINE.get(family, ("P@10",)):
                out[f"hybrid {family} {metric}"] = row[served][metric]
    for cname, cond in report.get("exact", {}).items():
        for sname, v in cond.items():
            if isinstance(v, dict) and "R@10" in v:
                out[f"{cname} R@10 [{sname}]"] = v["R@10"]
                out[f"{cname} R@1 [{sname}]"] = v["R@1"]
                if "by_width" in v:
                    out[f"{cname} by width [{sname}]"] = {
                        b: w["R@10"] for b, w in v["by_width"].items()
                    }
    return out


def write_comparison(summary: dict[str, Any], out: Path, plots: bool = True) -> list[Path]:
    write_json_atomic(out / "report.json", clean_json(summary))
    (out / "report.md").write_text(comparison_markdown(summary), encoding="utf-8")
    paths = [out / "report.json", out / "report.md"]
    if plots:
        from searchcore.training.plots import comparison_plots

        paths += comparison_plots(_ordered(summary), out, VARIANT_FINETUNED)
    return paths


def _ordered(summary: dict[str, Any]) -> dict[str, Any]:
    v = summary["variants"]
    return {n: v[n] for n in summary.get("order", v) if n in v}


def comparison_markdown(summary: dict[str, Any]) -> str:
    variants = _ordered(summary)
    sp = summary["split"]
    t = summary["timings"]
    lines = [
        "# Fine-tuning report",
        "",
        (
            f"Catalog `{summary['catalog']['path']}` ({summary['catalog']['rows']} products). "
            f"Test: {sp['test']} products never trained or validated on ("
            + (
                f"hash split, seed {sp['seed']}"
                if sp.get("by", "hash") == "hash"
                else f"the newest by {sp['by']}"
            )
            + f", fraction {sp['test_fraction']}); "
            f"{sp['train_and_val']} for training and "
            "validation. Every variant is scored on the same test products and the same queries."
        ),
        "",
        f"Fine-tuning {t.get('finetune_s', 0) / 60:.1f} min"
        + (" (reused)" if t.get("finetune_reused") else "")
        + (
            f", upscaler training {t['upscaler_s'] / 60:.1f} min ({summary.get('upscaler')})"
            if "upscaler_s" in t
            else ""
        )
        + (f", index {t['index_s']} s" if "index_s" in t else "")
        + f", evaluation {t.get('eval_s', 0) / 60:.1f} min; {summary.get('hardware', '')}.",
        "",
    ]
    cols = [
        c
        for c in (
            "category P@1",
            "category P@10",
            "colour P@1",
            "colour P@10",
            "gender P@1",
            "gender P@10",
            "title R@1",
            "title R@10",
            "attribute query P@10",
        )
        if any(c in v for v in variants.values())
    ]
    lines += [
        "## Similar products and text search",
        "",
        "| model | " + " | ".join(cols) + " |",
        "|---|" + "---|" * len(cols),
    ]
    lines += [
        f"| {n} | " + " | ".join(_f(v.get(c)) for c in cols) + " |" for n, v in variants.items()
    ]
    conds = sorted({k.split(" R@10 [")[0] for v in variants.values() for k in v if " R@10 [" in k})
    for cname in conds:
        strat = []
        for v in variants.values():
            for k in v:
                if k.startswith(f"{cname} R@10 ["):
                    s = k[len(cname) + 7 : -1]
                    if s not in strat:
                        strat.append(s)
        lines += [
            "",
            f"## Exact product from `{cname}` photos: Recall@10 (Recall@1)",
            "",
            "| model | " + " | ".join(strat) + " |",
            "|---|" + "---|" * len(strat),
        ]
        for n, v in variants.items():
            lines.append(
                f"| {n} | "
                + " | ".join(
                    f"{_f(v.get(f'{cname} R@10 [{s}]'))} ({_f(v.get(f'{cname} R@1 [{s}]'))})"
                    for s in strat
                )
                + " |"
            )
        tuned = variants.get(VARIANT_FINETUNED, {})
        bands = {s: tuned.get(f"{cname} by width [{s}]") for s in strat}
        if any(bands.values()):
            names = list(next(b for b in bands.values() if b))
            lines += [
                "",
                f"Fine-tuned model, `{cname}` Recall@10 by query width:",
                "",
                "| upscaling | " + " | ".join(names) + " |",
                "|---|" + "---|" * len(names),
            ]
            lines += [
                f"| {s} | " + " | ".join(_f((b or {}).get(x)) for x in names) + " |"
                for s, b in bands.items()
                if b
            ]
    verdict = summary.get("auto_upscaling") or {}
    if verdict.get("reason"):
        lines += [
            "",
            "## Auto upscaling",
            "",
            (
                f"{verdict['reason']}. Stored as the model's "
                "`upscale_verdict.json`: `auto` follows it."
            ),
        ]
    if summary.get("command"):
        lines += ["", "Reproduce:", "", "```", summary["command"], "```"]
    return "\n".join(lines) + "\n"
