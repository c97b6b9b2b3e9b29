"""The product catalog: a pandas table read from CSV or Parquet, plus an image folder.

Canonical columns are ``id``, ``title`` and ``image`` (a path relative to the catalog file's
folder), optionally ``category``, ``price`` and ``colour``; every other column is kept. A column
mapping (``title=productDisplayName``) lets a shop keep its own headers. Everything is read as
text, so ids like ``00123`` and titles like ``NA`` survive.

Validation refuses what would make search wrong or unsafe (missing columns, duplicate or empty
ids, empty titles, unparsable prices, image paths that are absolute or leave the catalog folder)
and lists, without refusing, what only costs a product its place in the index (missing or
undecodable images).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pandas as pd

from searchcore.errors import CatalogError, ImageError
from searchcore.fsutil import NotRegularFileError, file_sha256, is_regular_file, open_regular
from searchcore.images import decode_image

REQUIRED = ("id", "title", "image")
OPTIONAL = ("category", "price", "colour")
MAX_LISTED = 20  # problems shown per kind in a report; all are counted
MAX_FIELD = 10_000  # characters in one catalog cell: a title is not a novel
# Columns a live shop writes itself: a removed product stays as a tombstone row (label == row).
REMOVED = "_removed"
IMAGE_SHA = "image_sha256"
MANAGED = (REMOVED, IMAGE_SHA, "image")


@dataclass(frozen=True)
class Problem:
    kind: str
    message: str
    row: int | None = None
    id: str | None = None

    def __str__(self) -> str:
        where = f"row {self.row + 2}" if self.row is not None else "catalog"  # +2: header, 1-based
        who = f" (id {self.id})" if self.id else ""
        return f"{where}{who}: {self.message}"


@dataclass
class ValidationReport:
    """What validation found. ``errors`` refuse the catalog; image problems only skip products."""

    path: str
    rows: int = 0
    errors: list[Problem] = field(default_factory=list)
    missing_images: list[Problem] = field(default_factory=list)
    bad_images: list[Problem] = field(default_factory=list)
    images_checked: bool = False

    @property
    def ok(self) -> bool:
        return not (self.errors or self.missing_images or self.bad_images)

    def summary(self) -> str:
        lines = [f"catalog {self.path}: {self.rows} products"]
        for title, items in (
            ("refused", self.errors),
            ("missing images", self.missing_images),
            ("undecodable images", self.bad_images),
        ):
            if items:
                lines.append(f"{title}: {len(items)}")
                lines += [f"  {p}" for p in items[:MAX_LISTED]]
                if len(items) > MAX_LISTED:
                    lines.append(f"  ... and {len(items) - MAX_LISTED} more")
        if self.ok:
            checked = "all images decode" if self.images_checked else "image files present"
            lines.append(f"ok: no problems found ({checked})")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        as_list = lambda ps: [p.__dict__ for p in ps]  # noqa: E731
        return {
            "path": self.path,
            "rows": self.rows,
            "ok": self.ok,
            "errors": as_list(self.errors),
            "missing_images": as_list(self.missing_images),
            "bad_images": as_list(self.bad_images),
        }


@dataclass
class Catalog:
    """A validated catalog. Row position ``i`` is the product's index label."""

    df: pd.DataFrame
    root: Path
    source: Path | None = None
    column_map: tuple[tuple[str, str], ...] = ()
    sha256: str = ""
    report: ValidationReport | None = None

    def __len__(self) -> int:
        return len(self.df)

    @property
    def prices(self) -> np.ndarray:
        """Prices as float64, NaN where a product has none."""
        if "price" not in self.df:
            return np.full(len(self.df), np.nan)
        # Vectorised (this runs for every price-filtered query); same rules as parse_price.
        text = self.df["price"].astype(str).str.strip().str.replace(",", "", regex=False)
        prices = pd.to_numeric(text, errors="coerce").to_numpy(dtype=np.float64, copy=True)
        prices[~np.isfinite(prices) | (prices < 0)] = np.nan
        return prices

    @property
    def live(self) -> np.ndarray:
        """Boolean mask over rows: True for products on sale (not removed tombstones)."""
        if REMOVED not in self.df:
            return np.ones(len(self.df), dtype=bool)
        return (self.df[REMOVED] != "1").to_numpy()

    def image_path(self, row: int) -> Path:
        return self.root / self.df["image"].iat[row]

    def image_paths(self) -> list[Path]:
        return [self.root / p for p in self.df["image"]]

    def categories(self) -> list[str]:
        if "category" not in self.df:
            return []
        return sorted(c for c in self.df["category"].unique() if c)

    def rows_for_ids(self, ids: Iterable[str]) -> list[int]:
        index = pd.Index(self.df["id"])
        wanted = list(ids)
        pos = index.get_indexer(wanted)
        missing = [i for i, p in zip(wanted, pos, strict=True) if p < 0]
        if missing:
            raise CatalogError(f"unknown product id(s): {', '.join(missing[:5])}")
        return [int(p) for p in pos]


def read_table(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet file with every cell as text ('' for missing)."""
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".tsv", ".txt", ".parquet", ".pq"):
        raise CatalogError(f"catalog must be a .csv, .tsv or .parquet file, not {path.name}")
    try:
        with open_regular(path) as f:  # a FIFO or device is refused, never waited on
            if suffix in (".parquet", ".pq"):
                df = pd.read_parquet(f)
                return df.apply(lambda col: col.map(lambda v: "" if _is_missing(v) else str(v)))
            sep = "\t" if suffix == ".tsv" else ","
            return pd.read_csv(f, dtype=str, keep_default_na=False, sep=sep, encoding="utf-8")
    except FileNotFoundError:
        raise CatalogError(f"catalog not found: {path}") from None
    except NotRegularFileError:
        raise CatalogError(f"catalog {path.name} is not a regular file") from None
    except UnicodeDecodeError:
        raise CatalogError(f"catalog {path.name} is not UTF-8 text") from None
    except Exception as exc:
        raise CatalogError(
            f"cannot read catalog {path.name}: {str(exc).splitlines()[0][:160]}"
        ) from None


def _is_missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def load_catalog(
    path: str | Path,
    column_map: Iterable[tuple[str, str]] = (),
    *,
    strict: bool = True,
    check_images: bool = False,
    workers: int = 4,
    root: Path | None = None,
) -> Catalog:
    """Load and validate. With ``strict`` (the default), refusing errors raise CatalogError.

    Image paths are relative to ``root``, by default the catalog file's folder (a live shop's
    catalog snapshot lives in its index folder but keeps pointing at the shop's images).
    """
    path = Path(path)
    column_map = tuple(column_map)
    df = read_table(path)
    report = ValidationReport(path=str(path), rows=len(df))
    df = _apply_mapping(df, column_map, report)
    root = (root or path.parent).resolve()
    if not report.errors:
        _check_rows(df, root, report)
    if not report.errors:
        _check_images(df, root, report, decode=check_images, workers=workers)
    if strict and report.errors:
        first = report.errors[0]
        more = f" (and {len(report.errors) - 1} more problems)" if len(report.errors) > 1 else ""
        raise CatalogError(
            f"catalog {path.name} refused: {first}{more}; "
            f"see `searchcore catalog validate --catalog {path}`",
            report=report,
        )
    extra = json.dumps(column_map).encode()
    return Catalog(
        df=df.reset_index(drop=True),
        root=root,
        source=path,
        column_map=column_map,
        sha256=file_sha256(path, extra),
        report=report,
    )


def _apply_mapping(
    df: pd.DataFrame, column_map: tuple[tuple[str, str], ...], report: ValidationReport
) -> pd.DataFrame:
    renames: dict[str, str] = {}
    for canonical, source in column_map:
        if source not in df.columns:
            report.errors.append(
                Problem(
                    "column",
                    f"column {source!r} (mapped to {canonical}) is not in the "
                    f"catalog; its columns are: {', '.join(map(str, df.columns))}",
                )
            )
        elif (
            canonical in df.columns
            and canonical != source
            and canonical not in dict(column_map).values()
        ):
            report.errors.append(
                Problem(
                    "column", f"both {canonical!r} and {source!r} (mapped to {canonical}) exist"
                )
            )
        else:
            renames[source] = canonical
    if report.errors:
        return df
    df = df.rename(columns=renames)
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        hint = " ".join(f"--map {c}=YOUR_COLUMN" for c in missing)
        report.errors.append(
            Problem("column", f"missing column(s) {', '.join(missing)}; map your own with {hint}")
        )
    return df


def _check_rows(df: pd.DataFrame, root: Path, report: ValidationReport) -> None:
    errors = report.errors
    ids = df["id"].astype(str)
    for col in df.columns:
        text = df[col].astype(str)
        bad = text.str.contains("\x00", regex=False)
        for row in np.flatnonzero(bad.to_numpy()):
            errors.append(
                Problem("nul", f"column {col} contains a NUL byte", int(row), ids.iat[row])
            )
        for row in np.flatnonzero((text.str.len() > MAX_FIELD).to_numpy()):
            errors.append(
                Problem(
                    "size",
                    f"column {col} is over {MAX_FIELD} characters",
                    int(row),
                    ids.iat[row][:40],
                )
            )
    stripped = ids.str.strip()
    for row in np.flatnonzero((stripped == "").to_numpy()):
        errors.append(Problem("id", "empty id", int(row)))
    dup = stripped.duplicated(keep="first") & (stripped != "")
    for row in np.flatnonzero(dup.to_numpy()):
        errors.append(Problem("id", f"duplicate id {ids.iat[row]!r}", int(row), ids.iat[row]))
    for row in np.flatnonzero((df["title"].str.strip() == "").to_numpy()):
        errors.append(Problem("title", "empty title", int(row), ids.iat[row]))
    if "price" in df:
        for row, value in enumerate(df["price"]):
            _, problem = parse_price(value)
            if problem:
                errors.append(Problem("price", problem, row, ids.iat[row]))
    for row, value in enumerate(df["image"]):
        problem = image_path_problem(value, root)
        if problem:
            errors.append(Problem("image_path", problem, row, ids.iat[row]))


def parse_price(value: str) -> tuple[float, str | None]:
    text = str(value).strip().replace(",", "")
    if text == "":
        return math.nan, None
    try:
        price = float(text)
    except ValueError:
        return math.nan, f"price {value!r} is not a number"
    if not math.isfinite(price) or price < 0:
        return math.nan, f"price {value!r} must be a finite, non-negative number"
    return price, None


def image_path_problem(value: str, root: Path) -> str | None:
    text = str(value)
    if not text.strip():
        return "empty image path"
    if (
        PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).is_absolute()
        or PureWindowsPath(text).drive
    ):
        return f"image path {text!r} is absolute; give it relative to the catalog folder"
    if ".." in PurePosixPath(text.replace("\\", "/")).parts:
        return f"image path {text!r} leaves the catalog folder"
    # ".." is refused above, so a path that resolves outside the root went through a symlink.
    if not (root / text).resolve().is_relative_to(root):
        return f"image path {text!r} is a symlink pointing outside the catalog folder"
    return None


def _check_images(
    df: pd.DataFrame, root: Path, report: ValidationReport, *, decode: bool, workers: int
) -> None:
    ids = df["id"].tolist()
    paths = [root / p for p in df["image"]]

    def check(i: int) -> Problem | None:
        p = paths[i]
        if not is_regular_file(p):  # missing, or a FIFO, device or folder: never opened
            return Problem("missing_image", f"image {df['image'].iat[i]} not found", i, ids[i])
        if decode:
            try:
                decode_image(p)
            except ImageError as exc:
                return Problem("bad_image", f"image {df['image'].iat[i]}: {exc}", i, ids[i])
        return None

    with ThreadPoolExecutor(
        max_workers=max(1, min(workers, os.cpu_count() or 1) if decode else 8)
    ) as pool:
        for problem in pool.map(check, range(len(paths))):
            if problem is None:
                continue
            (
                report.missing_images if problem.kind == "missing_image" else report.bad_images
            ).append(problem)
    report.images_checked = decode
