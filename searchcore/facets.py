"""Facets: the catalog columns a product is described by (category, colour, gender, pattern...).

One definition for everything that treats a column as a product attribute: the words
``finetune`` builds texts from, the attribute heads that predict "we think this is...", the
attribute filters of a query (both backends), and the chips of the page. A facet is a column
whose values look categorical: at most :data:`MAX_VALUES` distinct non-empty values and fewer
than half as many as there are products (a description or a per-product code is not a facet).
``category`` and ``colour``, the catalog's canonical attributes, are always filterable.

Values compare as :func:`normalise` makes them: case-folded, white space collapsed ("Navy
Blue" == "navy  blue"), the same in hnswlib's masks, Milvus's expressions and the heads' classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from searchcore.errors import ConfigError

if TYPE_CHECKING:
    from searchcore.stores.base import Filters

# Canonical columns that are not product attributes (and the live shop's own bookkeeping).
NOT_ATTRIBUTES = ("id", "title", "image", "price", "description", "_removed", "image_sha256")
CANONICAL = ("category", "colour")  # filterable whenever the catalog has them
MAX_VALUES = 64  # distinct values a facet may have


def normalise(value: object) -> str:
    """A value as filters and heads compare it: case-folded, white space collapsed."""
    return " ".join(str(value).casefold().split())


def normalised(values: Sequence[object] | pd.Series) -> np.ndarray:
    """:func:`normalise` over many values (an object array)."""
    return np.array([normalise(v) for v in values], dtype=object)


def facet_columns(df: pd.DataFrame, requested: Sequence[str] | None = None) -> list[str]:
    """The attribute columns of ``df``: ``requested`` (each must exist), else every column
    whose values look categorical (see the module docstring)."""
    if requested:
        missing = [c for c in requested if c not in df.columns]
        if missing:
            raise ConfigError(
                f"attribute column(s) {', '.join(missing)} not in the catalog; "
                f"its columns are: {', '.join(map(str, df.columns))}"
            )
        return list(requested)
    out = []
    for col in df.columns:
        if col in NOT_ATTRIBUTES:
            continue
        values = df[col].astype(str).str.strip()
        distinct = values[values != ""].nunique()
        if 0 < distinct <= MAX_VALUES and distinct < max(2, len(df) / 2):
            out.append(str(col))
    return out


def filterable_columns(df: pd.DataFrame) -> list[str]:
    """Columns a query may filter on: the facets, and the canonical attributes it has."""
    facets = facet_columns(df)
    return facets + [c for c in CANONICAL if c in df.columns and c not in facets]


def spellings(df: pd.DataFrame, column: str) -> dict[str, str]:
    """Each normalised value of ``column`` -> the spelling the catalog uses most often, most
    common value first."""
    seen: dict[str, str] = {}
    for value in df[column].astype(str).str.strip().value_counts().index:
        if value:
            seen.setdefault(normalise(value), str(value))
    return seen


def display_values(df: pd.DataFrame, column: str) -> list[str]:
    """The distinct values of ``column`` as the catalog spells them, most common first."""
    return list(spellings(df, column).values())


def check_filters(filters: Filters | None, catalog: Any) -> None:
    """Refuse attribute filters on columns the catalog cannot be filtered on (before any backend
    sees them; the catalog's facets are worked out only for a query that has such filters)."""
    if filters is None or not filters.attributes:
        return
    allowed = catalog.filterable
    for column, _ in filters.attributes:
        if column not in allowed:
            raise ConfigError(
                f"this catalog cannot be filtered on {column!r}; "
                f"filterable columns: {', '.join(allowed) or 'none'}"
            )


def filter_mask(filters: Filters, catalog: Any) -> np.ndarray:
    """Boolean mask over the rows of a :class:`~searchcore.catalog.Catalog` that pass
    ``filters`` (vectorised): attribute values
    match any of a column's wanted values (OR within a column, AND across columns)."""
    df = catalog.df
    mask = np.ones(len(df), dtype=bool)
    if filters.category:
        if "category" not in df:
            raise ConfigError("this catalog has no category column to filter on")
        wanted = filters.category.strip().casefold()
        mask &= df["category"].str.strip().str.casefold().to_numpy() == wanted
    if filters.attributes:
        check_filters(filters, catalog)
        for column, values in filters.attributes:
            keys = {normalise(v) for v in values}
            have = df[column].astype(str).str.casefold().str.split().str.join(" ")
            mask &= have.isin(keys).to_numpy()
    if filters.min_price is not None or filters.max_price is not None:
        prices = catalog.prices
        with np.errstate(invalid="ignore"):
            if filters.min_price is not None:
                mask &= prices >= filters.min_price
            if filters.max_price is not None:
                mask &= prices <= filters.max_price
    return mask
