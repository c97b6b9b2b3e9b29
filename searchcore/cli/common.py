"""What every command group shares: argument groups and the settings built from flags."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from searchcore.config import RUNTIMES, Settings

Handler = Callable[[argparse.Namespace], int]


def catalog_args(
    p: argparse.ArgumentParser, *, required: bool = True, what: str = "CSV or Parquet file"
) -> None:
    p.add_argument("--catalog", type=Path, required=required, help=what)
    p.add_argument(
        "--map",
        action="append",
        default=[],
        metavar="CANONICAL=COLUMN",
        help="use the shop's own header, e.g. --map title=productDisplayName",
    )


def split_option(p: argparse.ArgumentParser) -> None:
    """``--split-by``: which products are held out (``eval``'s split, shared by every command
    that trains, evaluates or measures on the products a model never saw)."""
    p.add_argument(
        "--split-by",
        default="id",
        metavar="COLUMN",
        help="hold out the newest products for testing: those with the highest values of this "
        "column (default id; a date column works too), or 'hash' for random products",
    )


def model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="model spec (default: the shipped model)")
    p.add_argument("--threads", type=int)
    p.add_argument("--device", default=None)
    p.add_argument("--allow-download", action="store_true", default=None)
    runtime_arg(p)


def runtime_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=None,
        help="torch, a model folder's ONNX export (onnx, onnx-int8), or auto: its int8 export "
        "where the export measured int8's retrieval loss within the noise, else its verified "
        "fp32 export, else torch; an index is served as it was built (default auto; env "
        "SEARCHCORE_RUNTIME)",
    )


def upscaler_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--upscaler", default=None, help="upscaler name")
    p.add_argument("--upscaler-weights", type=Path)
    p.add_argument("--allow-download", action="store_true", default=None)


def settings_from_args(args: argparse.Namespace, **extra: object) -> Settings:
    """Flags (those the command has) over ``SEARCHCORE_*`` variables; sets torch's threads."""
    from searchcore.service import set_threads

    fields = {
        name: getattr(args, name, None)
        for name in (
            "model",
            "device",
            "threads",
            "allow_download",
            "upscaler",
            "upscaler_weights",
            "runtime",
        )
    }
    settings = Settings.from_env(**fields, **extra)
    set_threads(settings.threads)
    return settings


def training_options(p: argparse.ArgumentParser, device: str = "auto") -> None:
    """Device, threads, downloads and progress bars: the options every training command takes."""
    p.add_argument("--device", default=device, help="cpu, cuda or auto")
    p.add_argument("--threads", type=int)
    p.add_argument("--allow-download", action="store_true", default=None)
    p.add_argument("--no-progress", action="store_true")


def say(msg: str) -> None:
    """Progress for a person, on stderr (stdout carries the command's result)."""
    print(msg, file=sys.stderr, flush=True)


def command_line() -> str:
    """The command as run, for records and model cards."""
    return "searchcore " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def catalog_from_args(args: argparse.Namespace) -> Any:
    """The catalog ``--catalog`` and ``--map`` name."""
    from searchcore.catalog import load_catalog
    from searchcore.config import parse_column_map

    return load_catalog(args.catalog, parse_column_map(args.map))
