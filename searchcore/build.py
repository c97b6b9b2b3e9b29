"""Index building: catalog photos -> embeddings -> an index folder.

Photos are decoded and preprocessed on a thread pool while the model embeds the previous
batch, so the model rarely waits. A photo that is missing or undecodable is skipped, listed
in the manifest, counted in the report, and never stops the build.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from searchcore import __version__
from searchcore.catalog import Catalog
from searchcore.config import IndexSettings
from searchcore.embed import Embedder
from searchcore.errors import ImageError, SearchError
from searchcore.images import decode_image
from searchcore.index import HnswIndex


@dataclass
class BuildReport:
    folder: Path
    indexed: int
    skipped: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.indexed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        text = (f"indexed {self.indexed} products into {self.folder} in {self.seconds:.1f} s "
                f"({self.images_per_s:.1f} images/s)")
        if self.skipped:
            text += f"; skipped {len(self.skipped)} with unusable images:"
            text += "".join(f"\n  {s['id']}: {s['reason']}" for s in self.skipped[:20])
            if len(self.skipped) > 20:
                text += f"\n  ... and {len(self.skipped) - 20} more (listed in the manifest)"
        return text


def rebuild_command(catalog: Catalog, model: str, out: Path) -> str:
    maps = "".join(f" --map {c}={s}" for c, s in catalog.column_map)
    return f"searchcore index build --catalog {catalog.source}{maps} --model {model} --out {out}"


def catalog_meta(catalog: Catalog, folder: Path) -> dict[str, Any]:
    src = Path(catalog.source).resolve() if catalog.source else None
    rel = None
    if src is not None:
        try:
            rel = str(Path(_relpath(src, folder.resolve())))
        except ValueError:
            rel = None
    return {
        "path": str(src) if src else None,
        "relative_path": rel,
        "sha256": catalog.sha256,
        "rows": len(catalog),
        "column_map": [list(p) for p in catalog.column_map],
    }


def _relpath(target: Path, start: Path) -> str:
    import os

    return os.path.relpath(target, start)


def build_index(
    catalog: Catalog,
    embedder: Embedder,
    out: str | Path,
    *,
    settings: IndexSettings | None = None,
    batch_size: int = 32,
    workers: int = 2,
    progress: bool = False,
) -> BuildReport:
    settings = settings or IndexSettings()
    out = Path(out)
    started = time.perf_counter()
    index = HnswIndex(
        embedder.dim, space=settings.space, m=settings.m,
        ef_construction=settings.ef_construction, ef_search=settings.ef_search,
        capacity=max(len(catalog), 16),
    )
    skipped: list[dict[str, Any]] = []
    bar = _progress(len(catalog), progress)
    ids = catalog.df["id"].tolist()
    for labels, pixels, failures in _batches(catalog, embedder, batch_size, workers):
        for row, reason in failures:
            skipped.append({"row": row, "id": ids[row], "reason": reason})
        if labels:
            vectors = embedder.embed_pixels(pixels) if pixels is not None else None
            index.add(vectors, np.asarray(labels))
        if bar is not None:
            bar.update(len(labels) + len(failures))
    if bar is not None:
        bar.close()
    if len(index) == 0:
        raise SearchError(f"no product of {catalog.source} has a usable image; nothing to index")
    seconds = time.perf_counter() - started
    meta = {
        "model": {"spec": embedder.spec, "fingerprint": embedder.fingerprint, "dim": embedder.dim},
        "catalog": catalog_meta(catalog, out),
        "skipped": skipped,
        "build": {"seconds": round(seconds, 3), "searchcore_version": __version__},
    }
    index.save(out, meta)
    return BuildReport(folder=out, indexed=len(index), skipped=skipped, seconds=seconds)


def _batches(
    catalog: Catalog, embedder: Any, batch_size: int, workers: int
) -> Iterator[tuple[list[int], Any, list[tuple[int, str]]]]:
    """Yield (rows, preprocessed pixel batch, failures); decoding runs ahead on a pool."""
    import torch

    paths = catalog.image_paths()

    def load(row: int) -> tuple[int, Any, str | None]:
        try:
            return row, embedder.preprocess(decode_image(paths[row])), None
        except ImageError as exc:
            return row, None, str(exc)

    ahead = batch_size * 3  # bounded read-ahead: memory stays flat on any catalog size
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        pending: deque[Future] = deque()
        next_row = 0
        rows: list[int] = []
        tensors: list[Any] = []
        failures: list[tuple[int, str]] = []
        while pending or next_row < len(paths):
            while next_row < len(paths) and len(pending) < ahead:
                pending.append(pool.submit(load, next_row))
                next_row += 1
            row, tensor, error = pending.popleft().result()
            if error is not None:
                failures.append((row, error))
            else:
                rows.append(row)
                tensors.append(tensor)
            if len(rows) == batch_size:
                yield rows, torch.stack(tensors), failures
                rows, tensors, failures = [], [], []
        if rows or failures:
            yield rows, (torch.stack(tensors) if tensors else None), failures


def _progress(total: int, enabled: bool) -> Any:
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="img", desc="indexing", dynamic_ncols=True)
