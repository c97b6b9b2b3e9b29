"""Wiring: build the real collaborators from settings and an index folder.

The index folder remembers its catalog (path and hash) and its model (spec and weights
fingerprint), so opening it needs nothing else; anything that no longer matches is refused
with the command that rebuilds it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from searchcore.build import rebuild_command
from searchcore.catalog import Catalog, load_catalog
from searchcore.config import Settings, usable_cpus
from searchcore.embed import (
    ClipEmbedder,
    Embedder,
    PixelEmbedder,
    load_embedder,
    recorded_spec,
    weights_fingerprint,
)
from searchcore.embed.heads import heads_for
from searchcore.engine import SearchEngine, View
from searchcore.errors import CatalogError, IndexMismatchError, SearchError, WeightsError
from searchcore.stores.base import VectorStore, is_milvus
from searchcore.stores.hnsw import HnswIndex
from searchcore.stores.lexical import LexicalIndex
from searchcore.stores.manifest import (
    CatalogRecord,
    IndexManifest,
    UpscalerRecord,
    read_manifest,
)

log = logging.getLogger(__name__)


def set_threads(threads: int | None) -> None:
    """Cap torch's intra-op threads (a process-wide setting, so only the edges call it)."""
    if threads:
        import torch

        torch.set_num_threads(threads)


def make_embedder(
    settings: Settings,
    spec: str | None = None,
    runtime: str | None = None,
    *,
    auto_int8: bool = True,
) -> ClipEmbedder | PixelEmbedder | Embedder:
    """The model ``spec`` (default: the settings') on ``runtime`` (default: the settings');
    ``auto_int8=False`` keeps ``auto`` off int8 (an index built without it)."""
    return load_embedder(
        spec or settings.model,
        cache_dir=settings.cache_dir,
        allow_download=settings.allow_download,
        device=settings.device,
        batch_size=settings.batch_size,
        runtime=runtime or settings.runtime,
        auto_int8=auto_int8,
    )


def catalog_for_index(location: str, manifest: IndexManifest) -> Catalog:
    """The catalog an index was built from, refused if it changed since.

    Loaded as the build loaded it (strictly or not: older manifests, built strictly, leave out
    nothing either way), with no bad-row limit (the build applied its own), and refused unless
    it leaves out the very rows the build left out: labels are catalog rows.
    """
    record = manifest.catalog
    if record.snapshot:  # a live shop: the catalog is a snapshot inside the index folder
        return _snapshot_catalog(Path(location), record)
    folder = None if is_milvus(location) else Path(location)
    source = next((p for p in record.sources(folder) if p.is_file()), None)
    if source is None:
        raise IndexMismatchError(
            f"the catalog of index {location} is gone ({record.path}); rebuild with "
            f"`searchcore index build --catalog FILE --out {location}`"
        )
    catalog = load_catalog(
        source, record.column_map, strict=record.strict, max_bad_fraction=None, find_photos=False
    )
    digest = (record.left_out or {}).get("digest")
    if (
        catalog.sha256 != record.sha256
        or len(catalog) != record.rows
        or (digest is not None and catalog.left_out_meta()["digest"] != digest)
    ):
        raise IndexMismatchError(
            f"catalog {source} changed since index {location} was built; rebuild with "
            f"`{rebuild_command(catalog, _spec(manifest), location)}`"
        )
    return catalog


def _spec(manifest: IndexManifest) -> str:
    return manifest.model.spec if manifest.model is not None else "MODEL"


def _snapshot_catalog(folder: Path, record: CatalogRecord) -> Catalog:
    name = str(record.snapshot)
    if "/" in name or "\\" in name or not name.startswith("catalog-"):
        raise IndexMismatchError(
            f"{folder}/manifest.json names an invalid catalog snapshot {name!r}"
        )
    path = folder / name
    if not path.is_file():
        raise IndexMismatchError(f"catalog snapshot {path} is missing; the index folder is damaged")
    # A live shop writes only rows it checked: strict, as ever (a row left out would move labels).
    catalog = load_catalog(
        path, strict=True, max_bad_fraction=None, root=folder / record.root, find_photos=False
    )
    if catalog.sha256 != record.sha256 or len(catalog) != record.rows:
        raise IndexMismatchError(f"catalog snapshot {path} does not match its manifest")
    return catalog


def open_store(settings: Settings, location: str) -> tuple[VectorStore, IndexManifest]:
    """The vector store at ``location`` (folder or Milvus URI) and its manifest."""
    fix = f"searchcore index build --catalog FILE --out {location}"
    if is_milvus(location):
        from searchcore.stores.milvus import MilvusStore

        return MilvusStore.open(
            location, settings.milvus_collection, token=settings.milvus_token, fix=fix
        )
    read_manifest(Path(location), fix=fix)  # a clear message before anything heavy loads
    return HnswIndex.load(Path(location), fix=fix)


def load_state(settings: Settings, location: str, attempts: int = 5) -> tuple[View, IndexManifest]:
    """The committed state at ``location``: its catalog, vector and lexical index (one
    :class:`View`) and its manifest, consistent.

    Readers take no lock. A writer may commit twice while a reader loads, and prune the files
    the reader's manifest named: then the manifest has moved on, and the reader starts over
    from the new one (``attempts`` times). A folder whose manifest did not move is damaged.
    """
    for attempt in range(1, attempts + 1):
        before = _version(location)
        try:
            store, manifest = open_store(settings, location)
            catalog = catalog_for_index(location, manifest)
            lexical = _lexical(location, manifest)
            _check_labels(store, catalog, manifest, location)
            view = View(catalog, store, manifest.version, lexical)
            if isinstance(store, HnswIndex):  # a folder: its change log is part of its state
                from searchcore.live.state import replay

                view = replay(view, Path(location), manifest)
                _check_labels(view.index, view.catalog, manifest, location)
            if before is None or attempt == attempts or _version(location) == before:
                break  # (a compaction meanwhile may have cut the log short: open again)
        except (IndexMismatchError, CatalogError):
            if attempt == attempts or before is None or _version(location) == before:
                raise
        log.info("index %s changed while it was being opened; opening the new state", location)
    return view.complete(), manifest


def _check_labels(
    store: VectorStore, catalog: Catalog, manifest: IndexManifest, location: str
) -> None:
    labels = store.live_labels()
    if len(labels) and int(labels.max()) >= len(catalog):  # label == catalog row, or nothing
        fix = rebuild_command(catalog, _spec(manifest), location)
        raise IndexMismatchError(
            f"index {location} has labels beyond the catalog's {len(catalog)} rows; "
            f"rebuild with `{fix}`"
        )


def _lexical(location: str, manifest: IndexManifest) -> LexicalIndex | None:
    """The lexical index the manifest names; None where it names none (a folder written before
    text search had one, or Milvus): the view then builds one from its catalog."""
    if is_milvus(location) or manifest.lexical is None:
        return None
    fix = f"searchcore index build --catalog FILE --out {location}"
    return LexicalIndex.load(Path(location), manifest.lexical, fix=fix)


def _version(location: str) -> str | None:
    if is_milvus(location):
        return None
    try:
        return read_manifest(Path(location)).version
    except IndexMismatchError:
        return None


def open_engine(
    settings: Settings, index_dir: str | Path | None = None, *, embedder: Embedder | None = None
) -> SearchEngine:
    """Open an index (folder or Milvus) with its catalog and model, and the configured upscaler.

    ``embedder`` replaces the model named in the manifest (tests pass a fake); its
    fingerprint must still match the index's.
    """
    location = str(index_dir or settings.index_dir or "")
    if not location:
        raise SearchError("no index given: pass --index DIR or set SEARCHCORE_INDEX")
    view, manifest = load_state(settings, location)
    store, catalog = view.index, view.catalog
    model = manifest.model
    if model is None:
        raise IndexMismatchError(
            f"the manifest of {location} does not name its model; rebuild the index"
        )
    fix = rebuild_command(catalog, model.spec, location)
    # int8 has weights of its own: an index built with it is served with it unless told
    # otherwise, and one built without it is not served with it by ``auto``
    runtime = settings.runtime
    if runtime == "auto" and model.runtime == "onnx-int8":
        runtime = "onnx-int8"
    embedder = embedder or make_embedder(
        settings, recorded_spec(model.spec), runtime, auto_int8=False
    )
    if embedder.fingerprint != model.fingerprint:
        now = getattr(embedder, "runtime", "torch")
        raise IndexMismatchError(
            f"model {model.spec!r} ({now}) has other weights than when index {location} "
            f"was built ({model.runtime}); rebuild with `{fix}`"
        )
    if store.dim != embedder.dim:
        raise IndexMismatchError(
            f"index {location} has dimension {store.dim}, the model {embedder.dim}"
        )
    folder = None if is_milvus(location) else Path(location)
    upscaler, problem = make_upscaler(settings, manifest.upscaler, folder)
    skip = None
    if upscaler is not None:  # did evaluation find that this upscaler does not help this model?
        from searchcore.upscale.verdict import auto_rule, upscaler_sha256

        weights = weights_fingerprint(embedder)  # int8: torch's
        skip = auto_rule(model.spec, upscaler.name, weights, upscaler_sha256(upscaler))
    heads, heads_problem = heads_for(model.spec, embedder)
    if heads_problem:
        log.warning("no attribute predictions: %s", heads_problem)
    return SearchEngine(
        catalog,
        embedder,
        upscaler,
        store,
        upscale=settings.upscale,
        upscaler_problem=problem,
        image_limits=settings.images,
        auto_skip=skip,
        version=view.version,
        lexical=view.lexical,
        fusion=settings.fusion,
        heads=heads,
        heads_problem=heads_problem,
    )


def open_or_build(
    settings: Settings,
    catalog: Path,
    index_dir: str,
    *,
    demo: bool = False,
    say: Callable[[str], None] = log.info,
    progress: bool = True,
) -> SearchEngine:
    """Open the index (a folder or a Milvus URI); draw the demo shop and (re)build it when needed.

    The index is rebuilt when it is missing, damaged, or was built for another model or
    catalog than the ones asked for (``open_engine`` alone trusts the index's own record).
    """
    from searchcore.build import build_index, runs_in_lanes

    if not catalog.is_file():
        if not demo:
            raise SearchError(f"catalog {catalog} not found")
        from searchcore.demo.synth import generate_catalog

        say(f"drawing the demo shop into {catalog.parent} (first start only) ...")
        started = time.perf_counter()
        generate_catalog(catalog.parent, progress=progress)
        say(f"drew {catalog} in {time.perf_counter() - started:.1f} s")
    try:
        if not is_milvus(index_dir):
            _check_asked_for(settings, catalog, Path(index_dir))
        return open_engine(settings, index_dir)
    except IndexMismatchError as exc:
        say(f"building the index in {index_dir} ({exc}) ...")
        loaded = load_catalog(  # refused (strict, too many bad rows) before the model loads
            catalog,
            settings.column_map,
            strict=settings.strict_catalog,
            max_bad_fraction=settings.max_bad_fraction,
        )
        embedder = make_embedder(settings)
        # Nothing is served yet, so the build takes every core, one lane each (the app serves
        # one torch thread per request, which would otherwise make it a single lane).
        lanes = usable_cpus() if runs_in_lanes(embedder) else None
        report = build_index(
            loaded,
            embedder,
            index_dir,
            progress=progress,
            lanes=lanes,
            collection=settings.milvus_collection,
            token=settings.milvus_token,
            max_bad_fraction=settings.max_bad_fraction,
        )
        say(report.summary())
        return open_engine(settings, index_dir)


def _check_asked_for(settings: Settings, catalog: Path, folder: Path) -> None:
    """open_engine trusts the index's own record of its catalog and model: check they are the
    ones asked for, so a changed --model or --catalog rebuilds instead of serving a stale index."""
    manifest = read_manifest(folder)
    model = manifest.model.spec if manifest.model is not None else None
    if model != settings.model:
        raise IndexMismatchError(f"it was built for model {model!r}, not {settings.model!r}")
    if manifest.catalog.snapshot:  # a live shop: its catalog is the snapshot in the index folder
        return
    left_out = (manifest.catalog.left_out or {}).get("count", 0)
    if settings.strict_catalog and left_out:  # built forgivingly; strict asked now: rebuild
        raise IndexMismatchError(f"it was built leaving out {left_out} rows, and strict is asked")
    # (a shop folder moved together with its index is found by its relative path)
    if catalog.resolve() not in manifest.catalog.sources(folder):
        raise IndexMismatchError("it was built for another catalog")


def make_upscaler(
    settings: Settings, recorded: UpscalerRecord | None = None, index_folder: Path | None = None
):  # -> tuple[Upscaler | None, str | None]
    """The configured upscaler, or None and the reason (e.g. weights unavailable offline).

    With no upscaler asked for (``settings.upscaler`` None), the one the index ``recorded``
    (``tune`` records the upscaler it trained for the model), found beside the index folder or
    where it was; a recorded folder that is gone or whose weights changed since is not replaced
    by another upscaler (one not measured with this model): queries go without, and say why.
    """
    if settings.upscale.mode == "never":
        return None, "upscaling is off"
    from searchcore.upscale import build_upscaler

    try:
        if settings.upscaler is None and recorded is not None:
            settings = settings.with_(upscaler=str(_recorded_folder(recorded, index_folder)))
        return build_upscaler(settings), None
    except SearchError as exc:
        log.warning("upscaler unavailable: %s", exc)
        return None, str(exc)


def _recorded_folder(recorded: UpscalerRecord, index_folder: Path | None) -> Path:
    from searchcore.upscale import load_upscaler_folder

    places = recorded.sources(index_folder)
    for place in places:
        try:
            spec, _ = load_upscaler_folder(place)
        except WeightsError:
            continue
        if spec.sha256 == recorded.sha256:
            return place
    where = ", ".join(str(p) for p in places) or "nowhere"
    raise WeightsError(
        f"the index was built for upscaler {recorded.name!r} (sha256 {recorded.sha256[:12]}...), "
        f"not found with those weights at {where}: pass --upscaler, or rebuild the index"
    )


__all__ = ["CatalogError", "make_embedder", "make_upscaler", "open_engine", "set_threads"]
