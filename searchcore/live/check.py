"""``searchcore catalog check``: what is wrong with a live shop's state (nothing, normally)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from searchcore.catalog import IMAGE_SHA, REMOVED
from searchcore.errors import SearchError
from searchcore.fsutil import file_sha256, is_regular_file
from searchcore.live.state import log_for
from searchcore.stores.lexical import product_texts

if TYPE_CHECKING:
    from searchcore.live.shop import LiveShop


def check_invariants(shop: LiveShop) -> list[str]:
    """What is wrong with a shop's state (empty when all is well); used by tests and `check`.

    Every live product must have its row, its vector, its words and its photo: the label sets
    of catalog and index agree, each live label's vector is readable and finite, the lexical
    index holds exactly the catalog's words, each live row's photo is a regular file (with the
    recorded sha256 where one was recorded), the files the manifest names exist, and the served
    state is the snapshot with every whole record of its change log.
    """
    problems = []
    df = shop.catalog.df
    index = shop.engine.index
    view = shop.engine.view
    live_rows = set(np.flatnonzero((df[REMOVED] != "1").to_numpy()).tolist())
    labels = set(index.live_labels().tolist())
    if labels != live_rows:
        problems.append(
            f"phantoms: {len(labels - live_rows)} index labels without a live row, "
            f"{len(live_rows - labels)} live rows without a label "
            f"(e.g. {sorted(df.loc[sorted(live_rows - labels)[:3], 'id'])})"
        )
    if df.loc[sorted(live_rows), "id"].duplicated().any():
        problems.append("duplicate live ids")
    both = sorted(labels & live_rows)
    if both:
        try:
            vectors = index.get_vectors(both)
            if not np.isfinite(vectors).all() or (np.abs(vectors).sum(axis=1) == 0).any():
                problems.append("some live products have an empty or broken vector")
        except RuntimeError as exc:
            problems.append(f"some live products have no vector ({exc})")
    root = shop.catalog.root
    for row in sorted(live_rows):
        path = root / df.at[row, "image"]
        sha = df.at[row, IMAGE_SHA]
        if not is_regular_file(path):
            problems.append(f"photo of {df.at[row, 'id']} is missing")
        elif sha and file_sha256(path) != sha:
            problems.append(f"photo of {df.at[row, 'id']} changed")
    lexical = shop.engine.lexical
    if not getattr(lexical, "matches", lambda _: False)(product_texts(df)):
        problems.append("the lexical index does not hold the catalog's words")
    manifest = shop.manifest
    entry = manifest.lexical
    if not isinstance(entry, dict) or entry.get("key") != lexical.key:
        problems.append("the manifest names another lexical index than the one served")
    for name in manifest.files - {manifest.log or ""}:
        path = shop.folder / name
        if not (is_regular_file(path) or (path.is_dir() and not path.is_symlink())):
            problems.append(f"{name} named by the manifest is missing")
    log = log_for(shop.folder, manifest)
    try:
        records, end = log.read(0) if log is not None else ([], 0)
        if (end, len(records)) != view.log:
            problems.append(
                f"the change log holds {len(records)} records, the served state {view.log[1]}"
            )
    except SearchError as exc:
        problems.append(str(exc))
    return problems
