"""Attribute heads in the shop owner's loop: calibrate them, fit them on a frozen model, score them.

* :func:`calibrate` fits each head's temperature on validation products' photos, each as the
  catalog has it and as a shopper would send it (:data:`~searchcore.degrade.DEFAULT_CONDITIONS`
  ``shopper``): what the page predicts from;
* :func:`fit_for_model` (``searchcore model heads``) fits heads on a model's frozen
  embeddings of the training products (the split ``finetune`` uses, so test products stay
  unseen), then calibrates them on the validation products;
* :func:`attribute_report` (``eval``) scores them on the test products: top-1 accuracy and
  expected calibration error per column, from catalog photos and from shoppers' photos.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from searchcore.catalog import Catalog
from searchcore.degrade import DEFAULT_CONDITIONS, degrade
from searchcore.embed.heads import AttributeHeads, fit_heads, score
from searchcore.errors import SearchError
from searchcore.training.data import attribute_columns, load_photos, sample, split_masks

CALIBRATION_PRODUCTS = 1000  # validation products whose photos fit the temperatures
SHOPPER = "shopper"


def shopper_copies(photos: Sequence[Image.Image], rows: Sequence[int], seed: int) -> list[Any]:
    """Each photo as a shopper would send it (seeded per product: same seed, same photos)."""
    d = DEFAULT_CONDITIONS[SHOPPER]
    return [
        degrade(p, d, np.random.default_rng([seed, 7, int(r)]))
        for p, r in zip(photos, rows, strict=True)
    ]


def _two_views(
    catalog: Catalog, rows: Sequence[int], embedder: Any, seed: int
) -> tuple[list[int], np.ndarray]:
    """The readable rows, and the embeddings of their catalog photos, then of shopper copies
    of them (``kept + kept`` rows, in that order)."""
    kept, photos, _ = load_photos(catalog, rows)
    if not kept:
        return kept, np.zeros((0, 0), np.float32)
    copies = shopper_copies(photos, kept, seed)
    return kept, np.concatenate([embedder.embed_images(photos), embedder.embed_images(copies)])


def calibrate(
    heads: AttributeHeads, catalog: Catalog, rows: Sequence[int], embedder: Any, seed: int
) -> None:
    """Fit ``heads``' temperatures on ``rows`` (validation products): their catalog photos and
    shopper copies of them, side by side."""
    rng = np.random.default_rng([seed, 8])
    rows = [rows[i] for i in sorted(sample(len(rows), CALIBRATION_PRODUCTS, rng))]
    kept, vectors = _two_views(catalog, rows, embedder, seed)
    if len(kept) < 2:
        return
    df = catalog.df.iloc[kept + kept]
    heads.calibrate(vectors, df, f"{len(kept)} validation products, catalog + shopper photos")


def fit_for_model(
    catalog: Catalog,
    embedder: Any,
    *,
    columns: Sequence[str] = (),
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    split_by: str = "id",
    say: Callable[[str], None] = lambda _m: None,
) -> AttributeHeads:
    """Heads for a model trained without them: fitted on its frozen embeddings of the training
    products (catalog photos and shopper copies), calibrated on the validation products."""
    df = catalog.df
    cols = attribute_columns(df, columns or None)
    if not cols:
        raise SearchError("this catalog has no attribute columns to predict")
    val, test = split_masks(df, seed, val_fraction, test_fraction, split_by)
    train = [i for i in range(len(df)) if not (val[i] or test[i]) and catalog.live[i]]
    say(f"embedding {len(train)} training products' photos (catalog + shopper copies)")
    kept, vectors = _two_views(catalog, train, embedder, seed)
    heads = fit_heads(vectors, df.iloc[kept + kept], cols, embedder.fingerprint, seed=seed)
    say(f"heads for {', '.join(heads.columns)}; calibrating on {int(val.sum())} products")
    calibrate(heads, catalog, [i for i in range(len(df)) if val[i]], embedder, seed)
    heads.metrics["split"] = {
        "seed": seed,
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "by": split_by,
        "train": len(kept),
    }
    return heads


def attribute_report(
    heads: AttributeHeads, rows: pd.DataFrame, vectors: dict[str, np.ndarray]
) -> dict[str, Any]:
    """Accuracy and ECE of each head on the products in ``rows``, for each set of photo
    ``vectors`` (name -> one embedding per row), with the share of products a head could
    be scored on (those whose value is one of its classes)."""
    out: dict[str, Any] = {"trained": heads.trained}
    for head in heads.heads:
        targets = head.targets(rows[head.column].tolist()) if head.column in rows else None
        if targets is None:
            out[head.column] = {"note": "not a column of this catalog"}
            continue
        ok = targets >= 0
        entry: dict[str, Any] = {"classes": len(head.classes), "known": round(float(ok.mean()), 4)}
        for name, v in vectors.items():
            if ok.sum():
                entry[name] = score(head, v[ok], targets[ok])
        out[head.column] = entry
    return out
