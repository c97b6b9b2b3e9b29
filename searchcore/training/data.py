"""Products as training and evaluation data: splits, texts, photos.

The split is by product, never by row position, so a product stays on the same side when the
shop adds, removes or reorders rows. The held-out test products are, by default, the **newest**
ones (``split_by="id"``: the highest ids, numerically when every id is a number; or any other
column, such as a date): a shop adds products every week, and a model is judged on products
added after it was trained, as shoppers will meet them. ``split_by="hash"`` holds out products
by a hash of their id instead (random products of the same period: it flatters, see README).
Validation is always a hash split of the rest.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from searchcore.catalog import Catalog
from searchcore.embed import ModelSpec
from searchcore.errors import ConfigError, ImageError, SearchError
from searchcore.facets import facet_columns, normalised
from searchcore.fsutil import read_json
from searchcore.images import decode_image

# The columns attribute queries use by default, in word order ("red striped t-shirts").
DEFAULT_QUERY_ATTRS = ("colour", "pattern", "category")
DEFAULT_SIMILAR_ATTRS = ("category", "colour")


def held_out_mask(ids: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """Boolean mask: True for the products held out (about ``fraction`` of them).

    A product is held out when ``sha256(f"{seed}:{id}")`` maps below ``fraction``. With a
    fraction strictly between 0 and 1 and at least two products, both sides get at least one.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"the held-out fraction must be between 0 and 1, not {fraction}")
    u = np.array(
        [
            int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:8], "big") / 2**64
            for i in ids
        ]
    )
    mask = u < fraction
    if 0.0 < fraction < 1.0 and len(ids) >= 2:
        if not mask.any():
            mask[int(np.argmin(u))] = True
        if mask.all():
            mask[int(np.argmax(u))] = False
    return mask


HASH = "hash"


def newest_mask(keys: Sequence[str], fraction: float) -> np.ndarray:
    """Boolean mask: True for the ``fraction`` of products with the highest ``keys`` (ties go
    by row order). Keys compare as numbers when all are numbers, else as text."""
    if not 0.0 <= fraction <= 1.0:
        raise ConfigError(f"the held-out fraction must be between 0 and 1, not {fraction}")
    n = len(keys)
    count = round(fraction * n)
    if 0.0 < fraction < 1.0 and n >= 2:
        count = min(max(count, 1), n - 1)
    numbers = pd.to_numeric(pd.Series(list(keys), dtype=object), errors="coerce")
    if n and numbers.notna().all():
        order = np.argsort(numbers.to_numpy(dtype=np.float64), kind="stable")
    else:
        order = np.argsort(np.array([str(k) for k in keys], dtype=object), kind="stable")
    mask = np.zeros(n, dtype=bool)
    if count:
        mask[order[n - count :]] = True
    return mask


def test_mask(df: pd.DataFrame, fraction: float, seed: int, split_by: str = "id") -> np.ndarray:
    """The held-out test products of ``df``: the newest by ``split_by``, or a hash split."""
    if split_by == HASH:
        return held_out_mask(df["id"].astype(str).tolist(), fraction, seed)
    if split_by not in df.columns:
        raise ConfigError(
            f"--split-by {split_by!r} is not a column of the catalog; its columns are: "
            f"{', '.join(map(str, df.columns))} (or 'hash' for a random split)"
        )
    return newest_mask(df[split_by].astype(str).tolist(), fraction)


def sample(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` items, sorted (all of them when ``n <= limit``)."""
    return np.arange(n) if n <= limit else np.sort(rng.choice(n, limit, replace=False))


def labels(values: Sequence[str]) -> np.ndarray:
    """Catalog values as labels to compare: case-folded, white space collapsed."""
    return normalised(values)


def attribute_columns(df: pd.DataFrame, requested: Sequence[str] | None = None) -> list[str]:
    """The columns texts and heads are built from: :func:`searchcore.facets.facet_columns`."""
    return facet_columns(df, requested)


def present(df: pd.DataFrame, columns: Sequence[str]) -> list[str]:
    return [c for c in columns if c in df.columns]


def attribute_phrase(values: Sequence[str]) -> str:
    """``["red", "striped", "t-shirts"]`` -> ``"red striped t-shirts"`` (empty values dropped)."""
    return " ".join(v.strip() for v in values if v and v.strip())


def training_text(title: str, attrs: dict[str, str], rng: np.random.Generator) -> str:
    """One text for a product, drawn at random so the model learns both query styles.

    Shoppers type titles ("Nordwind striped cotton t-shirt") and bare attributes ("red
    striped t-shirts"); a product's text is its title, its attributes as such a phrase (all,
    or a random subset in catalog column order), or both.
    """
    values = [v for v in attrs.values() if v and v.strip()]
    r = rng.uniform()
    if not values or r < 0.35:
        return title
    if r < 0.6:
        return attribute_phrase(values)
    if r < 0.8:
        keep = rng.uniform(size=len(values)) < 0.6
        keep[-1] = True  # keep the last column (by convention the noun: category, kind)
        return attribute_phrase([v for v, k in zip(values, keep, strict=True) if k])
    return f"{title}, {attribute_phrase(values)}"


def load_photos(
    catalog: Catalog, rows: Sequence[int], *, max_side: int | None = None, workers: int = 2
) -> tuple[list[int], list[Image.Image], list[tuple[int, str]]]:
    """Decode the photos of ``rows``; returns (rows kept, photos, (row, reason) skipped).

    ``max_side`` shrinks larger photos (Lanczos) to bound memory: a training set is held in RAM.
    A photo that is missing or undecodable is skipped, never fatal.
    """
    paths = catalog.image_paths()

    def load(row: int) -> tuple[int, Image.Image | None, str]:
        try:
            img = decode_image(paths[row])
        except ImageError as exc:
            return row, None, str(exc)
        if max_side and max(img.size) > max_side:
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        return row, img, ""

    kept, photos, skipped = [], [], []
    with ThreadPoolExecutor(max_workers=max(1, min(workers, os.cpu_count() or 1))) as pool:
        for row, img, why in pool.map(load, rows):
            if img is None:
                skipped.append((row, why))
            else:
                kept.append(row)
                photos.append(img)
    if rows and not kept:
        raise SearchError(
            f"none of the {len(rows)} photos of {catalog.source} could be read "
            f"(first problem: {skipped[0][1]})"
        )
    return kept, photos, skipped


# A model folder's training record (finetune writes it): which catalog, which split.
TRAINING_FILE = "training.json"


def split_masks(
    df: pd.DataFrame,
    seed: int,
    val_fraction: float,
    test_fraction: float = 0.0,
    split_by: str = "id",
) -> tuple[np.ndarray, np.ndarray]:
    """(validation mask, test mask) over the rows of ``df``; training is everything else.

    Without a test split this is the historical split (validation = ``held_out_mask(ids,
    val_fraction, seed)``), so older training records keep their meaning. With one, the test
    products are :func:`test_mask` (the newest by ``split_by``, or a hash split) -- exactly
    what ``searchcore eval`` holds out -- and validation is an independent hash split of the
    rest.
    """
    ids = df["id"].astype(str).tolist()
    if test_fraction <= 0:
        return held_out_mask(ids, val_fraction, seed), np.zeros(len(ids), dtype=bool)
    test = test_mask(df, test_fraction, seed, split_by)
    val = (
        held_out_mask(ids, val_fraction, seed + 1) & ~test
        if val_fraction > 0
        else np.zeros_like(test)
    )
    return val, test


def trained_rows(model_spec: str, catalog: Catalog) -> tuple[list[int], str]:
    """Rows of ``catalog`` that the model in ``model_spec`` was trained on, and a note.

    Read from the model folder's ``training.json``; only when it was trained on this very
    catalog (same sha256, same column mapping) are rows excluded from evaluation.
    """
    spec = ModelSpec.parse(model_spec)
    if spec.kind != "local":
        return [], "not a model folder: no training record"
    path = Path(spec.name) / TRAINING_FILE
    if not path.is_file():
        return [], f"{path.parent} has no {TRAINING_FILE}"
    meta = read_json(path)
    if meta.get("catalog", {}).get("sha256") != catalog.sha256:
        return [], "trained on another catalog: no products excluded"
    split = meta["split"]
    held, test = split_masks(
        catalog.df,
        split["seed"],
        split["val_fraction"],
        split.get("test_fraction", 0.0),
        split.get("by", HASH),  # records from before the newest-products split: a hash split
    )
    if test.any():  # training and validation products are both excluded: only the test is left
        rows = [i for i, t in enumerate(test) if not t]
        return rows, (
            f"trained on this catalog: its {len(rows)} training and validation products "
            "are excluded"
        )
    rows = [i for i, h in enumerate(held) if not h]
    return rows, f"trained on this catalog: its {len(rows)} training products are excluded"
