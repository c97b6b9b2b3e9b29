"""The ``searchcore`` command line. ``main(argv)`` returns the exit status (tests call it).

User errors print one line (``searchcore: error: ...``) and exit non-zero; no tracebacks.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from searchcore.config import (
    UPSCALE_MODES,
    IndexSettings,
    Settings,
    UpscaleSettings,
    parse_column_map,
)
from searchcore.errors import ConfigError, SearchError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"}
DEMO_QUERIES = ("red sneakers with white soles", "navy striped t-shirt", "black leather handbag")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="searchcore", description="Visual product search.")
    p.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = p.add_subparsers(dest="command", required=True)

    cat = sub.add_parser("catalog", help="make or check a catalog").add_subparsers(
        dest="action", required=True
    )
    gen = cat.add_parser("generate", help="write the synthetic demo shop")
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--n", type=int, default=1200)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--size", type=int, default=192, help="image side in pixels (128-256)")
    val = cat.add_parser("validate", help="check a catalog and its images")
    _catalog_args(val)
    val.add_argument("--no-decode", action="store_true", help="only check that image files exist")
    val.add_argument("--json", action="store_true")

    for action, text in (
        ("add", "add a product (with its photo) to a live index"),
        ("update", "change a product's fields or photo"),
        ("remove", "remove products"),
    ):
        live = cat.add_parser(action, help=text)
        live.add_argument("--index", required=True, help="index folder")
        live.add_argument("--id", dest="ids", action="append", required=True)
        if action != "remove":
            live.add_argument("--image", type=Path, required=action == "add")
            for field in ("title", "category", "price", "colour"):
                live.add_argument(f"--{field}")
            live.add_argument(
                "--set",
                action="append",
                default=[],
                metavar="FIELD=VALUE",
                help="any other catalog field",
            )
    chk = cat.add_parser("check", help="check a live index's invariants")
    chk.add_argument("--index", required=True)

    idx = sub.add_parser("index", help="build an index").add_subparsers(
        dest="action", required=True
    )
    b = idx.add_parser("build", help="embed a catalog's photos into an index folder")
    _catalog_args(b)
    _model_args(b)
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

    s = sub.add_parser("search", help="query an index")
    s.add_argument("--index", required=True, help="index folder or Milvus URI / *.db file")
    s.add_argument("--collection", default=None, help="Milvus collection (default: products)")
    s.add_argument("--text", help="what the shopper wants; with --image, refines the photo")
    s.add_argument("--image", type=Path, action="append", default=[], help="a photo (repeatable)")
    s.add_argument("--images", type=Path, help="a folder of photos, one query each")
    s.add_argument(
        "--text-weight", type=float, default=0.5, help="weight of --text next to a photo"
    )
    s.add_argument("--k", type=int, default=10)
    s.add_argument("--upscale", choices=UPSCALE_MODES, default=None)
    s.add_argument("--category")
    s.add_argument("--min-price", type=float)
    s.add_argument("--max-price", type=float)
    s.add_argument("--json", action="store_true", help="one JSON object per query per line")
    _upscaler_args(s)
    s.add_argument("--threads", type=int)

    u = sub.add_parser("upscale", help="upscale one photo with Real-ESRGAN")
    u.add_argument("input", type=Path)
    u.add_argument("output", type=Path)
    u.add_argument("--model", dest="upscaler", default=None, help="upscaler name")
    u.add_argument("--weights", dest="upscaler_weights", type=Path)
    u.add_argument("--tile", type=int, default=0)
    u.add_argument("--max-input-side", type=int, default=UpscaleSettings.max_input_side)
    u.add_argument("--allow-download", action="store_true", default=None)

    _add_extensions(sub)

    d = sub.add_parser("demo", help="generate the demo shop, index it, answer a few queries")
    d.add_argument("--dir", type=Path, default=Path("catalog/demo"))
    d.add_argument("--index", type=Path, default=None)
    _model_args(d)
    return p


# Subcommands that live in their own subpackage register themselves here: each module has
# ``add_commands(subparsers) -> {(command, action): handler}`` and imports nothing heavy.
EXTENSIONS = ("searchcore.training.commands",)


def _add_extensions(sub: argparse._SubParsersAction) -> None:
    import importlib

    for name in EXTENSIONS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name and name.startswith(exc.name):
                continue  # that part of the package is not installed in this checkout
            raise
        COMMANDS.update(module.add_commands(sub))


def _catalog_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", type=Path, required=True, help="CSV or Parquet file")
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="CANONICAL=COLUMN",
        help="use the shop's own header, e.g. --map title=productDisplayName",
    )


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model spec (default: the shipped model)")
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default=None)
    p.add_argument("--allow-download", action="store_true", default=None)


def _upscaler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--upscaler", default=None, help="upscaler name")
    p.add_argument("--upscaler-weights", type=Path)
    p.add_argument("--allow-download", action="store_true", default=None)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed its usage message
        return int(exc.code or 0)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return COMMANDS[(args.command, getattr(args, "action", None))](args)
    except SearchError as exc:
        print(f"searchcore: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("searchcore: interrupted", file=sys.stderr)
        return 130


def _settings(args: argparse.Namespace, **extra: object) -> Settings:
    from searchcore.service import set_threads

    fields = {
        name: getattr(args, name, None)
        for name in ("model", "device", "threads", "allow_download", "upscaler", "upscaler_weights")
    }
    settings = Settings.from_env(**fields, **extra)
    set_threads(settings.threads)
    return settings


def cmd_generate(args: argparse.Namespace) -> int:
    from searchcore.synth import generate_catalog

    path = generate_catalog(args.out, n=args.n, seed=args.seed, size=args.size, progress=True)
    print(f"wrote {args.n} products to {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from searchcore.catalog import load_catalog

    catalog = load_catalog(
        args.catalog, parse_column_map(args.map), strict=False, check_images=not args.no_decode
    )
    report = catalog.report
    assert report is not None
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.summary())
    return 0 if report.ok else 1


def _live_shop(args: argparse.Namespace):
    from searchcore.live import LiveShop
    from searchcore.service import open_engine

    settings = _settings(args, upscale=UpscaleSettings(mode="never"))
    return LiveShop(open_engine(settings, args.index), args.index)


def _fields(args: argparse.Namespace) -> dict[str, str]:
    fields = {
        f: getattr(args, f)
        for f in ("title", "category", "price", "colour")
        if getattr(args, f, None) is not None
    }
    for item in getattr(args, "set", []):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set must look like FIELD=VALUE, not {item!r}")
        if key.strip() in fields or key.strip() == "id":
            raise ConfigError(
                f"--set {key.strip()}=... is refused: use --{key.strip()} (ids never change)"
            )
        fields[key.strip()] = value
    return fields


def _read_photo(path: Path | None, max_bytes: int) -> bytes | None:
    if path is None:
        return None
    from searchcore.fsutil import read_regular

    try:  # a regular file within the upload cap: a FIFO or a huge file is refused unread
        return read_regular(path, max_bytes)
    except OSError as exc:
        raise SearchError(f"cannot read {path}: {exc.strerror or exc}") from None


def cmd_live(args: argparse.Namespace) -> int:
    shop = _live_shop(args)
    if args.action == "add":
        if len(args.ids) != 1:
            raise ConfigError("add one product at a time (one --id)")
        limit = shop.engine.image_limits.max_bytes
        shop.add([{"id": args.ids[0], **_fields(args)}], [_read_photo(args.image, limit)])
    elif args.action == "update":
        if len(args.ids) != 1:
            raise ConfigError("update one product at a time (one --id)")
        limit = shop.engine.image_limits.max_bytes
        shop.update(args.ids[0], _fields(args), _read_photo(args.image, limit))
    else:
        shop.remove(args.ids)
    print(f"{args.action}: {', '.join(args.ids)} (committed; {len(shop.live_ids)} products live)")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from searchcore.live import check_invariants

    shop = _live_shop(args)
    problems = check_invariants(shop)
    for p in problems:
        print(f"problem: {p}")
    print(
        f"{len(shop.live_ids)} products live; "
        + ("ok" if not problems else f"{len(problems)} problems")
    )
    return 1 if problems else 0


def cmd_build(args: argparse.Namespace) -> int:
    from searchcore.build import build_index
    from searchcore.catalog import load_catalog
    from searchcore.service import make_embedder

    settings = _settings(args, milvus_collection=args.collection)
    shard = _parse_shard(args.shard)
    catalog = load_catalog(args.catalog, parse_column_map(args.map))
    embedder = make_embedder(settings)
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
    from searchcore.query import answer
    from searchcore.service import open_engine

    images = list(args.image)
    if args.images is not None:
        if not args.images.is_dir():
            raise SearchError(f"--images {args.images} is not a folder")
        images += sorted(p for p in args.images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise SearchError(f"no photos ({', '.join(sorted(IMAGE_SUFFIXES))}) in {args.images}")
    if not images and not args.text:
        raise SearchError("give --text, --image or --images")
    upscale = UpscaleSettings(mode=args.upscale) if args.upscale else None
    settings = _settings(
        args, milvus_collection=args.collection, **({"upscale": upscale} if upscale else {})
    )
    engine = open_engine(settings, args.index)
    gate = calibrate(engine, args.index)  # "no good match": cached in the index folder
    filters = Filters(category=args.category, min_price=args.min_price, max_price=args.max_price)
    queries: list[dict] = [{"image": p, "label": str(p)} for p in images] or [
        {"image": None, "label": args.text}
    ]
    failed = 0
    for q in queries:
        try:
            result = engine.search(
                image=q["image"],
                text=args.text,
                text_weight=args.text_weight,
                k=args.k,
                filters=filters,
                query_label=q["label"],
            )
        except SearchError as exc:
            if len(queries) == 1 and not args.json:
                raise
            failed += 1
            out = {"query": q["label"], "error": str(exc)}
            print(json.dumps(out) if args.json else f"{q['label']}: error: {exc}", flush=True)
            continue
        threshold = gate.threshold(q["image"] is not None, bool(args.text), args.text_weight)
        print(
            json.dumps(answer(result, threshold)) if args.json else _format(result, threshold),
            flush=True,
        )
    return 1 if failed else 0


def _format(result, threshold: float | None = None) -> str:
    lines = [f"query: {result.query}"]
    if result.decision is not None:
        lines.append(f"upscaled: {'yes' if result.upscaled else 'no'} ({result.decision.reason})")
    lines += [f"note: {n}" for n in result.notes]
    for h in result.hits:
        price = f"  {h.price}" if h.price else ""
        lines.append(f"{h.rank:>3}  {h.score:6.3f}  {h.id:<12} {h.title}{price}")
    if not result.hits:
        lines.append("  no products match")
    elif threshold is not None and result.hits[0].score < threshold:
        lines.append(f"  no good match: a good match scores at least {threshold:.3f}")
    lines.append("timings (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings_ms.items()))
    return "\n".join(lines)


def cmd_upscale(args: argparse.Namespace) -> int:
    from searchcore.images import decode_image
    from searchcore.upscale import build_upscaler

    settings = _settings(
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

    settings = _settings(args)
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


COMMANDS = {
    ("catalog", "generate"): cmd_generate,
    ("catalog", "validate"): cmd_validate,
    ("catalog", "add"): cmd_live,
    ("catalog", "update"): cmd_live,
    ("catalog", "remove"): cmd_live,
    ("catalog", "check"): cmd_check,
    ("index", "build"): cmd_build,
    ("search", None): cmd_search,
    ("upscale", None): cmd_upscale,
    ("demo", None): cmd_demo,
}
