"""``searchcore model export`` (a model's towers as ONNX files in a model folder) and ``searchcore
model heads`` (attribute heads fitted on a model folder's frozen embeddings).

Handlers import torch, open_clip and onnxruntime when they run, so ``searchcore --help`` stays
fast.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from searchcore.cli.common import Handler, catalog_args, settings_from_args, split_option
from searchcore.errors import ConfigError, WeightsError


def add_commands(sub: argparse._SubParsersAction) -> dict[tuple[str, str | None], Handler]:
    grp = sub.add_parser(
        "model", help="model folders: ONNX export, attribute heads"
    ).add_subparsers(dest="action", required=True)
    ex = grp.add_parser(
        "export",
        help="write a model's image and text towers as ONNX files (and a fidelity report) "
        "into a model folder, for --runtime onnx / auto",
    )
    ex.add_argument(
        "--model",
        required=True,
        help="a model folder (written into when --out is the same folder), 'default', a "
        "pretrained NAME:TAG or random:ARCH (a model folder is written at --out first)",
    )
    ex.add_argument("--out", type=Path, required=True, help="the model folder to write")
    ex.add_argument(
        "--int8",
        action="store_true",
        help="also write int8 towers (--runtime onnx-int8; a fingerprint of their own: indexes "
        "are built with them to be served with them); convolutions are calibrated on --catalog's "
        "photos (other ones than the fidelity samples), else on generated ones",
    )
    catalog_args(
        ex,
        required=False,
        what="check fidelity on this catalog's photos; with --int8, calibrate on its products "
        "that are not held out and measure int8's retrieval cost on those that are (int8 "
        "becomes --runtime auto's choice where the loss is within the noise)",
    )
    ex.add_argument("--samples", type=int, default=24, help="sample photos for the fidelity check")
    ex.add_argument("--seed", type=int, default=0, help="held-out split (eval's)")
    ex.add_argument("--test-fraction", type=float, default=0.2, help="held out (eval's: 0.2)")
    split_option(ex)
    ex.add_argument(
        "--cost-queries", type=int, default=1000, help="int8 retrieval cost: queries at most"
    )
    ex.add_argument("--threads", type=int)
    ex.add_argument("--allow-download", action="store_true", default=None)
    hd = grp.add_parser(
        "heads",
        help='fit attribute heads ("we think this is...") on a model folder\'s frozen embeddings '
        "of a catalog's training products, calibrated on its validation products",
    )
    hd.add_argument("--model", required=True, help="the model folder (the heads are written there)")
    catalog_args(hd)
    hd.add_argument(
        "--columns", default="", help="attribute columns, comma-separated (default: every facet)"
    )
    hd.add_argument("--seed", type=int, default=0)
    hd.add_argument("--val-fraction", type=float, default=0.1)
    hd.add_argument("--test-fraction", type=float, default=0.2, help="never seen (eval's)")
    split_option(hd)
    hd.add_argument("--threads", type=int)
    return {("model", "export"): cmd_export, ("model", "heads"): cmd_heads}


def cmd_heads(args: argparse.Namespace) -> int:
    from searchcore.catalog import load_catalog
    from searchcore.config import parse_column_map
    from searchcore.embed import ModelSpec
    from searchcore.service import make_embedder
    from searchcore.training.heads import fit_for_model

    parsed = ModelSpec.parse(args.model)
    if parsed.kind != "local":
        raise ConfigError(
            f"{args.model} is not a model folder: heads are written beside a folder's weights "
            "(`searchcore model export --model SPEC --out DIR` writes one)"
        )
    settings = settings_from_args(args).with_(device="cpu", runtime="torch")
    embedder = make_embedder(settings)
    catalog = load_catalog(args.catalog, parse_column_map(args.map))
    heads = fit_for_model(
        catalog,
        embedder,
        columns=[c.strip() for c in args.columns.split(",") if c.strip()],
        seed=args.seed,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        split_by=args.split_by,
        say=print,
    )
    heads.save(parsed.name)
    split = f"--seed {args.seed} --val-fraction {args.val_fraction} --test-fraction "
    command = (
        f"searchcore model heads --model {args.model} --catalog {args.catalog} "
        + "".join(f"--map {m} " for m in args.map)
        + (f"--columns {args.columns} " if args.columns else "")
        + f"{split}{args.test_fraction} --split-by {args.split_by}"
    )
    _card_with_heads(Path(parsed.name), heads.metrics, command)
    for head in heads.heads:
        m = heads.metrics.get(head.column, {})
        if "accuracy" in m:
            print(
                f"  {head.column}: {len(head.classes)} values, validation accuracy "
                f"{m['accuracy']:.3f}, ECE {m['ece']:.3f} (before scaling "
                f"{m['uncalibrated']['ece']:.3f}, temperature {m['temperature']:.3g})"
            )
    print(f"wrote attribute heads into {parsed.name}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from searchcore.embed import ClipEmbedder, ModelSpec
    from searchcore.embed.onnx import ONNX_MANIFEST, export_onnx
    from searchcore.embed.quantise import SCRATCH_PREFIX
    from searchcore.service import make_embedder

    if args.samples < 2 or args.cost_queries < 2:
        raise ConfigError("--samples and --cost-queries must be at least 2")
    if not 0 < args.test_fraction < 1:
        raise ConfigError("--test-fraction must be between 0 and 1")
    settings = settings_from_args(args).with_(device="cpu", runtime="torch")
    parsed = ModelSpec.parse(args.model)
    embedder = make_embedder(settings)
    if not isinstance(embedder, ClipEmbedder):
        raise ConfigError(f"{args.model} is not a CLIP model: there is nothing to export")
    out: Path = args.out
    if parsed.kind == "local":
        source = Path(parsed.name)
        if out.resolve() != source.resolve():
            print(f"copying model folder {source} to {out}")
            shutil.copytree(
                source,
                out,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns(
                    "*.onnx", ONNX_MANIFEST, ".*.tmp", f"{SCRATCH_PREFIX}*"
                ),
            )
            embedder = make_embedder(settings, str(out))
    else:
        embedder = _write_folder(embedder, parsed, out, settings)
    catalog = _load_catalog(args) if args.catalog else None
    photos, texts, calibration = _catalog_samples(args, catalog) if catalog else (None, None, None)
    print(f"exporting {args.model} to ONNX in {out} (fidelity on sample photos and texts) ...")
    try:
        manifest = export_onnx(
            embedder,
            out,
            int8=args.int8,
            photos=photos,
            texts=texts,
            samples=args.samples,
            calibration=calibration,
        )
    except OSError as exc:
        raise WeightsError(f"cannot write the ONNX export into {out}: {exc}") from None
    print(report_text(manifest, out))
    if args.int8 and catalog is not None:
        _int8_cost(args, catalog, embedder, settings)
    elif args.int8:
        print("int8's retrieval cost was not measured (no --catalog): --runtime auto keeps fp32")
    return 0


def _int8_cost(args: argparse.Namespace, catalog: Any, embedder: Any, settings: Any) -> None:
    """Measure int8 against torch on the catalog's held-out products; record it in onnx.json."""
    from searchcore.embed.onnx import record_retrieval_cost
    from searchcore.service import make_embedder
    from searchcore.training.runtime_cost import cost_lines, held_out_queries, measure_int8

    try:
        queries = held_out_queries(
            catalog,
            fraction=args.test_fraction,
            seed=args.seed,
            split_by=args.split_by,
            n=args.cost_queries,
        )
    except ConfigError as exc:  # the export itself is written and usable
        print(f"int8's retrieval cost was not measured ({exc}): --runtime auto keeps fp32")
        return
    print(f"measuring int8's retrieval cost on {len(queries.rows)} held-out products ...")
    int8 = make_embedder(settings, str(args.out), "onnx-int8")
    cost = measure_int8(embedder, int8, queries)
    record_retrieval_cost(args.out, cost)
    print("\n".join(cost_lines(cost)))
    print(
        "--runtime auto builds with int8 from now on"
        if cost["within_noise"]
        else "--runtime auto keeps fp32 (--runtime onnx-int8 still runs int8 when asked)"
    )


def _card_with_heads(folder: Path, metrics: dict[str, Any], command: str) -> None:
    """The model card (README.md) with its attribute heads section replaced by these heads'."""
    import re

    from searchcore.training.cards import heads_section

    card = folder / "README.md"
    text = card.read_text(encoding="utf-8") if card.is_file() else f"# {folder.name}\n"
    text = re.sub(r"\n## Attribute heads.*?(?=\n## |\Z)", "", text, flags=re.S).rstrip()
    lines = heads_section(metrics)
    lines[2:2] = [f"Fitted on the frozen model by `{command}`.", ""]
    card.write_text(text + "\n\n" + "\n".join(lines), encoding="utf-8")


def _write_folder(embedder: Any, parsed: Any, out: Path, settings: Any) -> Any:
    """A model folder at ``out`` for a spec that is not one (pretrained tag, random:ARCH), then
    that folder loaded: the ONNX files are checked against what the folder itself serves."""
    from searchcore.embed import model_config, save_model
    from searchcore.service import make_embedder

    if parsed.kind == "hub":
        raise ConfigError(
            "an hf-hub: model is exported from a folder: download it into one first "
            "(`huggingface-cli download ORG/REPO --local-dir DIR`), then --model DIR"
        )
    print(f"writing model folder {out} for {parsed.raw}")
    card = f"# {parsed.raw}\n\nWritten by `searchcore model export` from `{parsed.raw}`.\n"
    save_model(embedder, out, model_config(parsed.name), card=card)
    return make_embedder(settings, str(out))


def _load_catalog(args: argparse.Namespace) -> Any:
    from searchcore.catalog import load_catalog
    from searchcore.config import parse_column_map

    return load_catalog(args.catalog, parse_column_map(args.map))


def _catalog_samples(
    args: argparse.Namespace, catalog: Any
) -> tuple[list[Any], list[str], list[Any] | None]:
    """Up to ``--samples`` photos spread over the catalog and their titles (fidelity), and up
    to CALIBRATION_PHOTOS other photos of products that are not held out (int8's calibration,
    so its retrieval cost is measured on products it never saw; None without ``--int8``)."""
    import numpy as np

    from searchcore.embed.onnx import CALIBRATION_PHOTOS
    from searchcore.training.data import load_photos, test_mask

    step = max(1, len(catalog) // args.samples)
    rows, photos, _ = load_photos(catalog, list(range(0, len(catalog), step)))
    photos, rows = photos[: args.samples], rows[: args.samples]
    texts = [str(catalog.df["title"].iloc[row]) for row in rows]
    if len(photos) < 2:
        raise ConfigError(f"catalog {args.catalog} has fewer than 2 readable photos")
    if not args.int8:
        return photos, texts, None
    held = test_mask(catalog.df, args.test_fraction, args.seed, args.split_by)
    rest = sorted(set(np.flatnonzero(~held).tolist()) - set(rows))
    picked = rest[:: max(1, len(rest) // CALIBRATION_PHOTOS)][:CALIBRATION_PHOTOS]
    calibration = load_photos(catalog, picked)[1] if picked else []
    return photos, texts, calibration or None


def report_text(manifest: dict[str, Any], out: Path) -> str:
    """The files written and the fidelity of each variant, for a person."""
    tol = manifest["tolerance"]
    lines = [f"wrote {out / 'onnx.json'}"]
    for variant, entry in manifest["variants"].items():
        for tower, f in entry["files"].items():
            lines.append(
                f"wrote {out / f['path']} ({f['bytes'] / 2**20:.1f} MiB, sha256 "
                f"{f['sha256'][:12]}...)  [{variant} {tower}]"
            )
    lines.append(
        f"fidelity: cosine to torch on {manifest['samples']['photos']} photos and "
        f"{manifest['samples']['texts']} texts (min / mean; batch of 1 min)"
    )
    for variant, entry in manifest["variants"].items():
        fid = entry["fidelity"]
        parts = [
            f"{t} {fid[t]['min_cosine']:.7f} / {fid[t]['mean_cosine']:.7f}; "
            f"{fid[t]['batch_of_1_min_cosine']:.7f}"
            for t in ("image", "text")
        ]
        agree = (
            f"top-1 agreement text->photo {fid['text_to_photo_top1_agreement']:.0%}, "
            f"photo->photo {fid['photo_to_photo_top1_agreement']:.0%}"
        )
        if variant == "fp32":
            verdict = (
                f"within {tol}: serves indexes built with torch (same fingerprint)"
                if entry["within_tolerance"]
                else f"BELOW {tol}: not used by --runtime auto; own fingerprint"
            )
        else:
            verdict = (
                "own fingerprint: an index built with it (--runtime onnx-int8, or auto where "
                "its retrieval cost is within the noise) is served with it"
            )
        lines.append(f"  {variant}: {'  '.join(parts)}  {agree}")
        lines.append(f"    {verdict}")
    lines.append(f"use it: --model {out} --runtime onnx (or auto; SEARCHCORE_RUNTIME for the app)")
    return "\n".join(lines)
