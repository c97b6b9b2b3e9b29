"""Wiring: build the real collaborators from settings and an index folder.

The index folder remembers its catalog (path and hash) and its model (spec and weights
fingerprint), so opening it needs nothing else; anything that no longer matches is refused
with the command that rebuilds it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from searchcore.build import rebuild_command
from searchcore.catalog import Catalog, load_catalog
from searchcore.config import Settings
from searchcore.embed import ClipEmbedder, load_embedder
from searchcore.engine import SearchEngine
from searchcore.errors import CatalogError, IndexMismatchError, SearchError
from searchcore.index import HnswIndex, read_manifest

log = logging.getLogger(__name__)


def set_threads(threads: int | None) -> None:
    """Cap torch's intra-op threads (a process-wide setting, so only the edges call it)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def make_embedder(settings: Settings, spec: str | None = None) -> ClipEmbedder:
    return load_embedder(
        spec or settings.model, cache_dir=settings.cache_dir, allow_download=settings.allow_download,
        device=settings.device, batch_size=settings.batch_size,
    )


def catalog_for_index(folder: Path, manifest: dict) -> Catalog:
    meta = manifest.get("catalog") or {}
    candidates = []
    if meta.get("relative_path"):
        candidates.append((folder / meta["relative_path"]).resolve())
    if meta.get("path"):
        candidates.append(Path(meta["path"]))
    source = next((p for p in candidates if p.is_file()), None)
    column_map = tuple(tuple(p) for p in meta.get("column_map", []))
    if source is None:
        raise IndexMismatchError(
            f"the catalog of index {folder} is gone ({meta.get('path')}); rebuild with "
            f"`searchcore index build --catalog FILE --out {folder}`"
        )
    catalog = load_catalog(source, column_map)
    if catalog.sha256 != meta.get("sha256") or len(catalog) != meta.get("rows"):
        raise IndexMismatchError(
            f"catalog {source} changed since index {folder} was built; rebuild with "
            f"`{rebuild_command(catalog, manifest['model']['spec'], folder)}`"
        )
    return catalog


def open_engine(settings: Settings, index_dir: str | Path | None = None) -> SearchEngine:
    """Open an index folder with its catalog and model, and the configured upscaler."""
    folder = Path(index_dir or settings.index_dir or "")
    if not str(folder):
        raise SearchError("no index given: pass --index DIR or set SEARCHCORE_INDEX")
    manifest = read_manifest(folder)
    model_meta = manifest.get("model")
    if not isinstance(model_meta, dict) or not isinstance(model_meta.get("spec"), str):
        raise IndexMismatchError(f"{folder}/manifest.json does not name its model; rebuild the index")
    catalog = catalog_for_index(folder, manifest)
    embedder = make_embedder(settings, model_meta["spec"])
    if embedder.fingerprint != model_meta.get("fingerprint"):
        raise IndexMismatchError(
            f"model {model_meta['spec']!r} has other weights than when index {folder} was built; "
            f"rebuild with `{rebuild_command(catalog, model_meta['spec'], folder)}`"
        )
    index, _ = HnswIndex.load(folder, fix=rebuild_command(catalog, model_meta["spec"], folder))
    if index.dim != embedder.dim:
        raise IndexMismatchError(f"index {folder} has dimension {index.dim}, the model {embedder.dim}")
    if len(index) and int(index.live_labels().max()) >= len(catalog):
        raise IndexMismatchError(f"index {folder} has labels beyond the catalog's {len(catalog)} rows")
    upscaler, problem = make_upscaler(settings)
    return SearchEngine(catalog, embedder, upscaler, index, upscale=settings.upscale,
                        upscaler_problem=problem)


def make_upscaler(settings: Settings):  # -> tuple[Upscaler | None, str | None]
    """The configured upscaler, or None and the reason (e.g. weights unavailable offline)."""
    if settings.upscale.mode == "never":
        return None, "upscaling is off"
    from searchcore.upscale import build_upscaler

    try:
        return build_upscaler(settings), None
    except SearchError as exc:
        log.warning("upscaler unavailable: %s", exc)
        return None, str(exc)


__all__ = ["CatalogError", "make_embedder", "make_upscaler", "open_engine", "set_threads"]
