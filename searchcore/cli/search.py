"""``searchcore index build``, ``search``, ``upscale`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from searchcore.cli.catalog import bad_row_args
from searchcore.cli.common import (
    Handler,
    catalog_args,
    model_args,
    runtime_arg,
    settings_from_args,
    upscaler_args,
)
from searchcore.config import UPSCALE_MODES, IndexSettings, UpscaleSettings, parse_column_map
from searchcore.errors import ConfigError, SearchError
from searchcore.fusion import MODES
from searchcore.images import IMAGE_SUFFIXES

DEMO_QUERIES = ("red sneakers with white soles", "navy striped t-shirt", "black leather handbag")


def add_commands(sub: argparse._SubParsersAction) -> dict[tuple[str, str | None], Handler]:
    idx = sub.add_parser("index", help="build an index").add_subparsers(
        dest="action", required=True
    )
    b = idx.add_parser("build", help="embed a catalog's photos into an index folder")
    catalog_args(b)
    model_args(b)
    b.add_argument(
        "--out",
        required=True,
        help="index folder (hnswlib), or a Milvus URI (http://host:19530) / Milvus Lite "
        "file (x.db)",
    )
    b.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="embed only rows r with r %% N == I (parallel jobs into one Milvus collection)",
    )
    b.add_argument(
        "--upscaler",
        default=None,
        metavar="FOLDER",
        help="a trained upscaler folder (train-upscaler, tune) the index records: searches of "
        "it upscale with this one unless told otherwise",
    )
    b.add_argument("--collection", default=None, help="Milvus collection (default: products)")
    b.add_argument("--M", dest="m", type=int, default=IndexSettings.m)
    b.add_argument("--ef-construction", type=int, default=IndexSettings.ef_construction)
    b.add_argument("--ef-search", type=int, default=IndexSettings.ef_search)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument(
        "--workers",
        type=int,
        default=2,
        help="threads decoding photos for a single lane (GPU, or one torch thread)",
    )
    b.add_argument(
        "--lanes",
        type=int,
        default=None,
        help="batches embedded at once, one torch thread each (default: one per "
        "torch thread on the CPU, 1 on a GPU)",
    )
    b.add_argument("--no-progress", action="store_true")
    bad_row_args(
        b,
        "refuse the whole catalog when any row has a problem (default: leave such "
        "rows out of the index and list them)",
    )

    s = sub.add_parser("search", help="query an index")
    s.add_argument("--index", required=True, help="index folder or Milvus URI / *.db file")
    s.add_argument("--collection", default=None, help="Milvus collection (default: products)")
    s.add_argument("--text", help="what the shopper wants; with --image, refines the photo")
    s.add_argument("--image", type=Path, action="append", default=[], help="a photo (repeatable)")
    s.add_argument("--images", type=Path, help="a folder of photos, one query each")
    s.add_argument(
        "--texts", type=Path, help="a text file of descriptions, one query per line (UTF-8)"
    )
    s.add_argument(
        "--mode",
        choices=MODES,
        default="hybrid",
        help="how words are searched: hybrid (words and the model together, the default), "
        "vector (the model only) or lexical (the words only)",
    )
    s.add_argument(
        "--text-weight", type=float, default=0.5, help="weight of --text next to a photo"
    )
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--upscale", choices=UPSCALE_MODES, default=None)
    s.add_argument("--category")
    s.add_argument("--min-price", type=float)
    s.add_argument("--max-price", type=float)
    s.add_argument(
        "--attributes",
        action="append",
        default=[],
        metavar="COLUMN=VALUE",
        help="only products with this value (repeatable: any value of a column, every column), "
        "e.g. --attributes colour=red --attributes gender=women",
    )
    s.add_argument(
        "--crop",
        metavar="X0,Y0,X1,Y1",
        help="search only this part of each photo (fractions of its width and height)",
    )
    s.add_argument("--json", action="store_true", help="one JSON object per query per line")
    upscaler_args(s)
    s.add_argument("--threads", type=int)
    runtime_arg(s)  # the index's model, on torch or its ONNX export

    u = sub.add_parser("upscale", help="upscale one photo with Real-ESRGAN")
    u.add_argument("input", type=Path)
    u.add_argument("output", type=Path)
    u.add_argument("--model", dest="upscaler", default=None, help="upscaler name")
    u.add_argument("--weights", dest="upscaler_weights", type=Path)
    u.add_argument("--tile", type=int, default=0)
    u.add_argument("--max-input-side", type=int, default=UpscaleSettings.max_input_side)
    u.add_argument("--allow-download", action="store_true", default=None)

    return {
        ("index", "build"): cmd_build,
        ("search", None): cmd_search,
        ("upscale", None): cmd_upscale,
    }


def add_demo(sub: argparse._SubParsersAction) -> dict[tuple[str, str | None], Handler]:
    d = sub.add_parser("demo", help="generate the demo shop, index it, answer a few queries")
    d.add_argument("--dir", type=Path, default=Path("catalog/demo"))
    d.add_argument("--index", type=Path, default=None)
    model_args(d)
    return {("demo", None): cmd_demo}


def cmd_build(args: argparse.Namespace) -> int:
    from searchcore.build import build_index
    from searchcore.catalog import load_catalog
    from searchcore.service import make_embedder

    settings = settings_from_args(
        args,
        milvus_collection=args.collection,
        strict_catalog=args.strict,
        max_bad_fraction=args.max_bad_fraction,
    )
    shard = _parse_shard(args.shard)
    catalog = load_catalog(
        args.catalog,
        parse_column_map(args.map),
        strict=settings.strict_catalog,
        max_bad_fraction=settings.max_bad_fraction,
    )
    embedder = make_embedder(settings)
    print(f"embedding with {embedder.spec} on the {getattr(embedder, 'runtime', 'torch')} runtime")
    index_settings = IndexSettings(
        m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search
    )
    report = build_index(
        catalog,
        embedder,
        args.out,
        settings=index_settings,
        batch_size=args.batch_size,
        workers=args.workers,
        lanes=args.lanes,
        progress=not args.no_progress and sys.stderr.isatty(),
        shard=shard,
        collection=settings.milvus_collection,
        token=settings.milvus_token,
        max_bad_fraction=settings.max_bad_fraction,
        upscaler=args.upscaler,
    )
    print(report.summary())
    return 0


def _parse_shard(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    try:
        return int(i), int(n) if sep else 1
    except ValueError:
        raise ConfigError(f"--shard must look like I/N (e.g. 0/4), not {text!r}") from None


def cmd_search(args: argparse.Namespace) -> int:
    from searchcore.calibrate import calibrate
    from searchcore.engine import Filters
    from searchcore.query import Query, answer
    from searchcore.service import open_engine

    images = list(args.image)
    if args.images is not None:
        if not args.images.is_dir():
            raise SearchError(f"--images {args.images} is not a folder")
        images += sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise SearchError(f"no photos ({', '.join(sorted(IMAGE_SUFFIXES))}) in {args.images}")
    texts = _read_texts(args.texts) if args.texts is not None else []
    if texts and (images or args.text):
        raise SearchError("--texts is one query per line: give it alone, without --text or photos")
    if not images and not args.text and not texts:
        raise SearchError("give --text, --texts, --image or --images")
    upscale = UpscaleSettings(mode=args.upscale) if args.upscale else None
    settings = settings_from_args(
        args, milvus_collection=args.collection, **({"upscale": upscale} if upscale else {})
    )
    engine = open_engine(settings, args.index)
    gate = calibrate(engine, args.index)  # "no good match": cached in the index folder
    wanted: dict[str, list[str]] = {}
    for item in args.attributes:
        column, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--attributes takes COLUMN=VALUE, not {item!r}")
        wanted.setdefault(column.strip(), []).append(value)
    asked = Query.parse(attributes=wanted or None, crop=args.crop)  # the page's rules
    filters = Filters(
        category=args.category,
        min_price=args.min_price,
        max_price=args.max_price,
        attributes=asked.filters.attributes,
    )
    queries: list[dict] = (
        [{"image": p, "text": args.text, "label": str(p)} for p in images]
        or [{"image": None, "text": t, "label": t} for t in texts]
        or [{"image": None, "text": args.text, "label": args.text}]
    )
    failed = 0
    for q in queries:
        try:
            text = Query.parse(text=q["text"]).text  # the page's rules for what a query may be
            result = engine.search(
                image=q["image"],
                text=text,
                text_weight=args.text_weight,
                k=args.k,
                filters=filters,
                query_label=q["label"],
                mode=args.mode,
                crop=asked.crop if q["image"] is not None else None,
            )
        except SearchError as exc:
            if len(queries) == 1 and not args.json:
                raise
            failed += 1
            out = {"query": q["label"], "error": str(exc)}
            print(json.dumps(out) if args.json else f"{q['label']}: error: {exc}", flush=True)
            continue
        threshold = gate.threshold(q["image"] is not None, bool(q["text"]), args.text_weight)
        print(
            json.dumps(answer(result, threshold)) if args.json else _format(result, threshold),
            flush=True,
        )
    return 1 if failed else 0


def _read_texts(path: Path) -> list[str]:
    """The non-empty lines of a UTF-8 text file (at most 100,000 queries, 10 MB)."""
    from searchcore.fsutil import read_regular

    try:
        data = read_regular(path, 10 * 2**20)
    except OSError as exc:
        raise SearchError(f"cannot read --texts {path}: {exc.strerror or exc}") from None
    try:
        lines = data.decode("utf-8-sig").splitlines()
    except UnicodeDecodeError:
        raise SearchError(f"--texts {path} is not UTF-8 text") from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise SearchError(f"--texts {path} has no queries (one per line)")
    if len(texts) > 100_000:
        raise SearchError(f"--texts {path} has {len(texts)} queries; at most 100,000 per run")
    return texts


def _format(result, threshold: float | None = None) -> str:
    from searchcore.query import good_match

    lines = [f"query: {result.query}"]
    if result.decision is not None:
        lines.append(f"upscaled: {'yes' if result.upscaled else 'no'} ({result.decision.reason})")
    lines += [f"note: {n}" for n in result.notes]
    if result.predicted:
        lines.append(
            "we think this is: "
            + "; ".join(f"{c} {o[0][0]} ({o[0][1]:.0%})" for c, o in result.predicted.items() if o)
        )
    for h in result.hits:
        price = f"  {h.price}" if h.price else ""
        found = "+".join(h.matched)
        lines.append(f"{h.rank:>3}  {h.score:6.3f}  {found:<14} {h.id:<12} {h.title}{price}")
        if h.why:
            lines.append(f"{'':>23}why: {' · '.join(h.why)}")
    if not result.hits:
        lines.append("  no products match")
    elif threshold is not None and not good_match(result, threshold):
        lines.append(f"  no good match: a good match scores at least {threshold:.3f}")
    lines.append("timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings_ms.items()))
    return "\n".join(lines)


def cmd_upscale(args: argparse.Namespace) -> int:
    from searchcore.images import decode_image
    from searchcore.upscale import build_upscaler

    settings = settings_from_args(
        args, upscale=UpscaleSettings(tile=args.tile, max_input_side=args.max_input_side)
    )
    img = decode_image(args.input)
    out = build_upscaler(settings).upscale(img)
    try:
        out.save(args.output)
    except (OSError, ValueError) as exc:
        raise SearchError(f"cannot write {args.output}: {exc}") from None
    print(f"{args.input} {img.width}x{img.height} -> {args.output} {out.width}x{out.height}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """The command-line demo: the demo shop, its index (built once), a few text queries."""
    from searchcore.service import open_or_build

    settings = settings_from_args(args)
    index_dir = str(args.index or args.dir / "index")
    engine = open_or_build(
        settings,
        args.dir / "products.csv",
        index_dir,
        demo=True,
        say=lambda m: print(m, flush=True),
        progress=sys.stderr.isatty(),
    )
    for text in DEMO_QUERIES:
        print()
        print(_format(engine.search(text=text, k=5)))
    return 0
