"""``searchcore catalog``: generate the demo shop, validate a catalog, and live changes
(add, update, remove, check) to an index folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from searchcore.cli.common import Handler, catalog_args, settings_from_args
from searchcore.config import Settings, UpscaleSettings, parse_column_map
from searchcore.errors import CatalogError, ConfigError, SearchError

VALIDATE_HELP = (
    "check a catalog and its images: lists every problem. Rows with problems (empty title, "
    "bad price, unsafe image path, duplicate id...) are left out of an index, so this exits "
    "0 unless the catalog cannot be read, or more than --max-bad-fraction of its rows are bad "
    "(the build would be refused), or, with --strict, anything at all is wrong"
)


def bad_row_args(p: argparse.ArgumentParser, strict_help: str) -> None:
    """``--strict`` and ``--max-bad-fraction`` (over SEARCHCORE_STRICT_CATALOG and
    SEARCHCORE_MAX_BAD_FRACTION)."""
    p.add_argument("--strict", action="store_true", default=None, help=strict_help)
    p.add_argument(
        "--max-bad-fraction",
        type=float,
        default=None,
        metavar="F",
        help="refuse the catalog when more than this fraction of its rows are bad: left out, "
        "or without a usable photo (default 0.5)",
    )


def add_commands(sub: argparse._SubParsersAction) -> dict[tuple[str, str | None], Handler]:
    cat = sub.add_parser("catalog", help="make or check a catalog").add_subparsers(
        dest="action", required=True
    )
    gen = cat.add_parser("generate", help="write the synthetic demo shop")
    gen.add_argument("--out", type=Path, required=True)
    gen.add_argument("--n", type=int, default=1200)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--size", type=int, default=192, help="image side in pixels (128-256)")
    val = cat.add_parser(
        "validate", help="check a catalog and its images", description=VALIDATE_HELP
    )
    catalog_args(val)
    val.add_argument("--no-decode", action="store_true", help="only check that image files exist")
    val.add_argument("--json", action="store_true")
    bad_row_args(
        val,
        "exit 1 on any problem at all, missing or undecodable photos included",
    )

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
    cmp = cat.add_parser(
        "compact",
        help="write a live index's changes as a new snapshot (writers do it every "
        "5,000 changes; a quiet hour is a good time for it too)",
    )
    cmp.add_argument("--index", required=True)

    return {
        ("catalog", "generate"): cmd_generate,
        ("catalog", "validate"): cmd_validate,
        ("catalog", "add"): cmd_live,
        ("catalog", "update"): cmd_live,
        ("catalog", "remove"): cmd_live,
        ("catalog", "check"): cmd_check,
        ("catalog", "compact"): cmd_compact,
    }


def cmd_generate(args: argparse.Namespace) -> int:
    from searchcore.demo.synth import generate_catalog

    path = generate_catalog(args.out, n=args.n, seed=args.seed, size=args.size, progress=True)
    print(f"wrote {args.n} products to {path}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Print the report; exit 1 when a build would refuse the catalog (or, --strict, on any
    problem at all), else 0."""
    from searchcore.catalog import bad_fraction_problem, check_fraction, load_catalog

    settings = Settings.from_env(strict_catalog=args.strict, max_bad_fraction=args.max_bad_fraction)
    limit = settings.max_bad_fraction
    check_fraction(limit)
    try:
        catalog = load_catalog(
            args.catalog,
            parse_column_map(args.map),
            strict=settings.strict_catalog,
            max_bad_fraction=None,
            check_images=not args.no_decode,
        )
    except CatalogError as exc:
        if exc.report is None:  # unreadable: one line, as every user error
            raise
        report, refused, listed = exc.report, str(exc), True  # the summary lists why
    else:
        report, refused, listed = catalog.report, None, False
    assert report is not None
    if refused is None and settings.strict_catalog and not report.ok:
        refused = "--strict: the catalog has problems (listed in the report)"
    refused = refused or bad_fraction_problem(report, report.bad, limit)
    if args.json:
        out = {**report.to_dict(), "max_bad_fraction": limit, "refused": refused}
        print(json.dumps(out, indent=2))
    else:
        print(report.summary())
        if refused and not listed:
            print(f"refused: {refused}")
    return 1 if refused else 0


def _live_shop(args: argparse.Namespace):
    from searchcore.live import LiveShop
    from searchcore.service import open_engine

    settings = settings_from_args(args, upscale=UpscaleSettings(mode="never"))
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


def cmd_compact(args: argparse.Namespace) -> int:
    shop = _live_shop(args)
    manifest = shop.compact()
    print(
        f"compacted the change log into snapshot generation {manifest.generation} "
        f"({len(shop.live_ids)} products live)"
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from searchcore.live import check_invariants
    from searchcore.stores.manifest import read_manifest

    shop = _live_shop(args)
    problems = check_invariants(shop)
    for p in problems:
        print(f"problem: {p}")
    print(
        f"{len(shop.live_ids)} products live; "
        + ("ok" if not problems else f"{len(problems)} problems")
    )
    left_out = read_manifest(Path(args.index)).catalog.left_out or {}
    if left_out.get("count"):  # rows the build left out of the shop's catalog, and why
        listed = left_out.get("rows", [])
        print(f"{left_out['count']} catalog rows were left out when the index was built:")
        for r in listed[:20]:
            who = f" (id {r.get('id')})" if r.get("id") else ""
            print(f"  row {r.get('row')}{who}: {r.get('reason')}")
        if left_out["count"] > min(20, len(listed)):
            print(f"  ... and {left_out['count'] - min(20, len(listed))} more")
    return 1 if problems else 0
