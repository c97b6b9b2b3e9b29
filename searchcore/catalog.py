"""The product catalog: a pandas table read from CSV or Parquet, plus an image folder.

Canonical columns are ``id``, ``title`` and ``image`` (a path relative to the catalog file's
folder), optionally ``category``, ``price`` and ``colour``; every other column is kept. A column
mapping (``title=productDisplayName``) lets a shop keep its own headers. Everything is read as
text, so ids like ``00123`` and titles like ``NA`` survive.

Validation refuses a catalog it cannot read as a whole (unreadable file, missing columns, a
bad mapping). A row that would make search wrong or unsafe (empty or duplicate id, empty title,
unparsable price, image path absolute or leaving the catalog folder, NUL byte, oversized field)
is *left out*, listed with its reasons: it is not in the catalog at all, so index label ==
catalog row holds for what remains, and an unchanged catalog always leaves out the same rows.
With ``strict`` such a row refuses the whole catalog instead. Missing or undecodable images
only cost a product its vector. More than ``max_bad_fraction`` of the rows bad (left out or
without a usable photo) refuses the catalog: that is a broken export, not a few typos.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from searchcore.errors import CatalogError, ConfigError, ImageError
from searchcore.facets import filterable_columns
from searchcore.fsutil import (
    InsideRoot,
    NotRegularFileError,
    file_sha256,
    is_regular_file,
    open_regular,
)
from searchcore.images import decode_image
from searchcore.rowcheck import image_path_problem, parse_price

REQUIRED = ("id", "title", "image")
OPTIONAL = ("category", "price", "colour")
MAX_LISTED = 20  # problems shown per kind in a report; all are counted
MAX_FIELD = 10_000  # characters in one catalog cell: a title is not a novel
MAX_BAD_FRACTION = 0.5  # more bad rows than this refuses the catalog (a broken export)
MAX_RECORDED = 100  # left-out rows listed in an index manifest; all are counted
MAX_REASON = 300  # characters of one left-out row's reasons kept in a listing
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

    def record(self) -> dict[str, object]:
        """A row problem for a manifest or JSON: ``row`` as in the file (the header is row 1,
        as the text messages count), ``id`` and ``reason``."""
        return {
            "row": self.row + 2 if self.row is not None else None,
            "id": self.id,
            "reason": self.message[:MAX_REASON],
        }


@dataclass
class ValidationReport:
    """What validation found.

    ``errors``: every problem found (catalog-level ones always refuse; row problems refuse a
    strict load). ``left_out``: the rows a forgiving load left out, one per row, its reasons
    joined. Image problems only cost products their vectors. ``rows`` counts the file's rows.
    """

    path: str
    rows: int = 0
    errors: list[Problem] = field(default_factory=list)
    left_out: list[Problem] = field(default_factory=list)
    missing_images: list[Problem] = field(default_factory=list)
    bad_images: list[Problem] = field(default_factory=list)
    images_checked: bool = False
    strict: bool = False

    @property
    def ok(self) -> bool:
        return not (self.errors or self.missing_images or self.bad_images)

    @property
    def bad(self) -> list[Problem]:
        """One problem per bad row: left out, or without a usable photo."""
        return [*self.left_out, *self.missing_images, *self.bad_images]

    def summary(self) -> str:
        lines = [f"catalog {self.path}: {self.rows} products"]
        rows = ("left out", self.left_out) if self.left_out else ("refused", self.errors)
        for title, items in (
            rows,
            ("missing images", self.missing_images),
            ("undecodable images", self.bad_images),
        ):
            if items:
                lines.append(f"{title}: {len(items)}")
                lines += [f"  {p}" for p in items[:MAX_LISTED]]
                if len(items) > MAX_LISTED:
                    lines.append(f"  ... and {len(items) - MAX_LISTED} more")
        if self.bad and self.rows:
            lines.append(
                f"bad rows (left out, not indexed; or without a usable photo): {len(self.bad)} "
                f"of {self.rows} ({len(self.bad) / self.rows:.0%})"
            )
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
            "strict": self.strict,
            "bad_rows": len(self.bad),
            "errors": as_list(self.errors),
            "left_out": [p.record() for p in self.left_out],
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
    strict: bool = False  # loaded strictly: a row with a problem refused the whole catalog

    def __len__(self) -> int:
        return len(self.df)

    @property
    def left_out(self) -> list[Problem]:
        """The file's rows left out of this catalog (none for a strict load)."""
        return self.report.left_out if self.report is not None else []

    def left_out_meta(self) -> dict[str, object]:
        """What an index manifest records of the rows left out: their count, the first
        :data:`MAX_RECORDED` (row as in the file, id, reason), and a digest of all their row
        numbers, so a reload can check that it left out the very same rows."""
        rows = ",".join(str(p.row) for p in self.left_out)
        return {
            "count": len(self.left_out),
            "rows": [p.record() for p in self.left_out[:MAX_RECORDED]],
            "digest": hashlib.sha256(rows.encode()).hexdigest(),
        }

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

    @cached_property
    def filterable(self) -> list[str]:
        """Columns a query may filter on (:func:`searchcore.facets.filterable_columns`)."""
        return filterable_columns(self.df)

    def categories(self) -> list[str]:
        if "category" not in self.df:
            return []
        return sorted(c for c in self.df["category"].unique() if c)

    def rows_for_ids(self, ids: Iterable[str]) -> list[int]:
        """The rows of the products on sale with these ids (a removed id may come back)."""
        live = np.flatnonzero(self.live)
        wanted = list(ids)
        pos = pd.Index(self.df["id"].to_numpy()[live]).get_indexer(wanted)
        missing = [i for i, p in zip(wanted, pos, strict=True) if p < 0]
        if missing:
            raise CatalogError(f"unknown product id(s): {', '.join(missing[:5])}")
        return [int(live[p]) for p in pos]


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
    strict: bool = False,
    max_bad_fraction: float | None = MAX_BAD_FRACTION,
    check_images: bool = False,
    workers: int = 4,
    root: Path | None = None,
    find_photos: bool = True,
) -> Catalog:
    """Load and validate.

    Catalog-level problems (unreadable file, missing columns, a bad mapping) always raise
    CatalogError. A row with a problem is left out and listed in ``report.left_out``; with
    ``strict`` it refuses the whole catalog instead. More than ``max_bad_fraction`` of the rows
    bad (left out, or with a missing or, with ``check_images``, undecodable photo) raises
    CatalogError; None checks no fraction (reloading an index's catalog, reporting).

    Image paths are relative to ``root``, by default the catalog file's folder (a live shop's
    catalog snapshot lives in its index folder but keeps pointing at the shop's images).
    ``find_photos=False`` skips looking for each photo file (reopening an index, whose build
    recorded the photos it could not read; their paths are checked all the same).
    """
    path = Path(path)
    column_map = tuple(column_map)
    check_fraction(max_bad_fraction)
    df = read_table(path)
    report = ValidationReport(path=str(path), rows=len(df), strict=strict)
    df = _apply_mapping(df, column_map, report)
    root = (root or path.parent).resolve()
    if report.errors:  # the catalog as a whole: refused in every mode
        _refuse(path, report)
    _check_rows(df, root, report)
    if report.errors and strict:
        _refuse(path, report)
    report.left_out = _left_out(report.errors)
    keep = np.ones(len(df), dtype=bool)
    keep[[p.row for p in report.left_out]] = False
    kept = np.flatnonzero(keep)  # the file's row of each catalog row
    df = df.iloc[kept].reset_index(drop=True)
    if find_photos or check_images:
        _check_images(df, kept, root, report, decode=check_images, workers=workers)
    check_bad_fraction(report, report.bad, max_bad_fraction)
    extra = json.dumps(column_map).encode()
    return Catalog(
        df=df,
        root=root,
        source=path,
        column_map=column_map,
        sha256=file_sha256(path, extra),
        report=report,
        strict=strict,
    )


def _refuse(path: Path, report: ValidationReport) -> None:
    first = report.errors[0]
    more = f" (and {len(report.errors) - 1} more problems)" if len(report.errors) > 1 else ""
    raise CatalogError(
        f"catalog {path.name} refused: {first}{more}; "
        f"see `searchcore catalog validate --catalog {path}`",
        report=report,
    )


def _left_out(errors: list[Problem]) -> list[Problem]:
    """One problem per row with problems, in file order: its first kind, all its reasons."""
    by_row: dict[int, list[Problem]] = {}
    for p in errors:
        if p.row is not None:
            by_row.setdefault(p.row, []).append(p)
    return [
        Problem(
            ps[0].kind,
            "; ".join(dict.fromkeys(p.message for p in ps))[:MAX_REASON],
            row,
            next((p.id for p in ps if p.id), ps[0].id),
        )
        for row, ps in sorted(by_row.items())
    ]


def check_fraction(limit: float | None) -> None:
    if limit is not None and not (isinstance(limit, int | float) and 0 <= limit <= 1):
        raise ConfigError(
            f"--max-bad-fraction (SEARCHCORE_MAX_BAD_FRACTION) must be between 0 and 1, "
            f"not {limit!r}"
        )


def bad_fraction_problem(
    report: ValidationReport, bad: Sequence[Problem], limit: float | None
) -> str | None:
    """Why ``bad`` rows (one problem each) of the report's catalog are too many, or None."""
    if limit is None or not report.rows or len(bad) <= limit * report.rows:
        return None
    first = min(bad, key=lambda p: -1 if p.row is None else p.row)
    return (
        f"{len(bad)} of {report.rows} rows ({len(bad) / report.rows:.0%}) are bad (left out, "
        f"or without a usable photo), more than --max-bad-fraction {limit:g} allows; "
        f"first: {first}"
    )


def check_bad_fraction(
    report: ValidationReport, bad: Sequence[Problem], limit: float | None
) -> None:
    """Refuse the catalog when more than ``limit`` of its rows are bad (see load_catalog)."""
    problem = bad_fraction_problem(report, bad, limit)
    if problem:
        path = Path(report.path)
        raise CatalogError(
            f"catalog {path.name} refused: {problem}; "
            f"see `searchcore catalog validate --catalog {path}`",
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
    # an id as a listing shows it: short, and without a raw NUL (a manifest, a terminal)
    shown = ids.str.slice(0, 100).str.replace("\x00", "\\x00", regex=False)
    for col in df.columns:
        text = df[col].astype(str)
        bad = text.str.contains("\x00", regex=False)
        for row in np.flatnonzero(bad.to_numpy()):
            errors.append(
                Problem("nul", f"column {col} contains a NUL byte", int(row), shown.iat[row])
            )
        for row in np.flatnonzero((text.str.len() > MAX_FIELD).to_numpy()):
            errors.append(
                Problem(
                    "size", f"column {col} is over {MAX_FIELD} characters", int(row), shown.iat[row]
                )
            )
    stripped = ids.str.strip()
    for row in np.flatnonzero((stripped == "").to_numpy()):
        errors.append(Problem("id", "empty id", int(row)))
    # A live shop's tombstones (removed products) keep their rows and ids: only the rows on
    # sale must have distinct ids (an id removed and added again has one of each).
    live = (df[REMOVED] != "1") if REMOVED in df else pd.Series(True, index=df.index)
    dup = stripped.where(live, "").duplicated(keep="first") & (stripped != "") & live
    if dup.any():  # the first row with an id keeps it; later ones are refused or left out
        first = pd.Series(np.arange(len(df)), index=stripped.where(live, ""))
        first = first[~first.index.duplicated(keep="first")]
        for row in np.flatnonzero(dup.to_numpy()):
            where = f"first on row {first[stripped.iat[row]] + 2}"
            errors.append(
                Problem(
                    "id", f"duplicate id {shown.iat[row]!r} ({where})", int(row), shown.iat[row]
                )
            )
    for row in np.flatnonzero((df["title"].str.strip() == "").to_numpy()):
        errors.append(Problem("title", "empty title", int(row), shown.iat[row]))
    if "price" in df:
        for row, value in enumerate(df["price"].tolist()):
            _, problem = parse_price(value)
            if problem:
                errors.append(Problem("price", problem[:MAX_REASON], row, shown.iat[row]))
    inside = InsideRoot(root, scan=True)
    for row, value in enumerate(df["image"].tolist()):
        problem = image_path_problem(value, root, inside)
        if problem:
            errors.append(Problem("image_path", problem[:MAX_REASON], row, shown.iat[row]))


def _check_images(
    df: pd.DataFrame,
    rows: np.ndarray,
    root: Path,
    report: ValidationReport,
    *,
    decode: bool,
    workers: int,
) -> None:
    """Check each photo of ``df``, whose row ``i`` is the file's row ``rows[i]``."""
    ids = df["id"].tolist()
    prefix = os.path.join(str(root), "")
    paths = [prefix + p for p in df["image"]]

    def check(i: int) -> Problem | None:
        p, row = paths[i], int(rows[i])
        if not is_regular_file(p):  # missing, or a FIFO, device or folder: never opened
            return Problem("missing_image", f"image {df['image'].iat[i]} not found", row, ids[i])
        if decode:
            try:
                decode_image(p)
            except ImageError as exc:
                return Problem("bad_image", f"image {df['image'].iat[i]}: {exc}", row, ids[i])
        return None

    with ThreadPoolExecutor(max_workers=max(1, min(workers, os.cpu_count() or 1))) as pool:
        # a stat each is faster in one thread than through a pool's futures
        found = pool.map(check, range(len(paths))) if decode else map(check, range(len(paths)))
        for problem in found:
            if problem is None:
                continue
            (
                report.missing_images if problem.kind == "missing_image" else report.bad_images
            ).append(problem)
    report.images_checked = decode
