"""An index's manifest, typed (:class:`IndexManifest`: its :class:`ModelRecord`,
:class:`CatalogRecord` and :class:`UpscalerRecord`), checked before anything else is read; and
the commits and clean-up that move a folder from one state to the next.

``manifest.json`` records the format version, dim, space, HNSW parameters, counts, deleted
labels, the index file and its sha256 (the folder's own fields, read by :mod:`.hnsw`), a
``generation`` counting commits, the model, catalog and upscaler records, the lexical index's
entry and the photos skipped. A Milvus collection keeps the same records in its properties.
Writers hold the folder's lock (:func:`searchcore.fsutil.folder_lock`) from reading the
manifest to committing the next one.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from searchcore.errors import IndexMismatchError
from searchcore.fsutil import read_json
from searchcore.stores.changelog import NAME as LOG_NAME
from searchcore.stores.lexical import lexical_files

FORMAT_VERSION = 1
MANIFEST = "manifest.json"

MANIFEST_TYPES: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "dim": int,
    "space": str,
    "M": int,
    "ef_construction": int,
    "ef_search": int,
    "count": int,
    "total": int,
    "capacity": int,
    "deleted": list,
    "index_file": str,
    "index_sha256": str,
    "index_bytes": int,
}
# The folder's own fields: MANIFEST_TYPES, and when it was saved.
STORE_KEYS = (*MANIFEST_TYPES, "saved_at")


@dataclass(frozen=True)
class ModelRecord:
    """The model an index was built with: what opening it loads and checks."""

    spec: str
    fingerprint: str = ""
    dim: int = 0
    runtime: str = "torch"  # torch, onnx or onnx-int8 (searchcore.embed.onnx)

    @classmethod
    def parse(cls, raw: Any) -> ModelRecord | None:
        """None where ``raw`` names no model (a damaged or foreign manifest)."""
        if not isinstance(raw, dict) or not isinstance(raw.get("spec"), str):
            return None
        dim = raw.get("dim")
        return cls(
            raw["spec"],
            str(raw.get("fingerprint") or ""),
            dim if isinstance(dim, int) and not isinstance(dim, bool) else 0,
            str(raw.get("runtime") or "torch"),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CatalogRecord:
    """The catalog an index was built from: where it is, what it hashed to, how it was read.

    A catalog file beside the index is found by ``relative_path`` (from the index folder: a
    shop folder moved as a whole) or ``path``; a live shop's catalog is ``snapshot``, a file in
    the index folder whose image paths start at ``root`` (relative to the folder).
    """

    sha256: str | None = None
    rows: int | None = None
    path: str | None = None
    relative_path: str | None = None
    column_map: tuple[tuple[str, str], ...] = ()
    snapshot: str | None = None
    root: str = ".."
    strict: bool = False
    left_out: dict[str, Any] | None = None  # {"count", "rows" (the first 100), "digest"}

    @classmethod
    def parse(cls, raw: Any) -> CatalogRecord:
        raw = raw if isinstance(raw, dict) else {}
        text = lambda k: str(raw[k]) if raw.get(k) else None  # noqa: E731
        rows = raw.get("rows")
        pairs = raw.get("column_map") if isinstance(raw.get("column_map"), list) else []
        return cls(
            sha256=text("sha256"),
            rows=rows if isinstance(rows, int) and not isinstance(rows, bool) else None,
            path=text("path"),
            relative_path=text("relative_path"),
            column_map=tuple((str(p[0]), str(p[1])) for p in pairs if len(p) == 2),
            snapshot=text("snapshot"),
            root=str(raw.get("root") or ".."),
            strict=raw.get("strict") is True,
            left_out=raw["left_out"] if isinstance(raw.get("left_out"), dict) else None,
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["column_map"] = [list(p) for p in self.column_map]
        return {k: v for k, v in out.items() if v is not None}

    def sources(self, folder: Path | None) -> list[Path]:
        """Where the catalog file may be, in order (``folder``: the index folder, if any)."""
        return _places(self.relative_path, self.path, folder)


@dataclass(frozen=True)
class UpscalerRecord:
    """The upscaler an index's queries are served with (``tune`` records the one it trained
    for the index's model): a trained upscaler folder, found by ``relative_path`` (from the
    index folder: a shop folder moved as a whole) or ``path``, and its weights' sha256, so a
    folder changed since is refused, never silently served."""

    name: str
    sha256: str
    path: str | None = None
    relative_path: str | None = None

    @classmethod
    def parse(cls, raw: Any) -> UpscalerRecord | None:
        """None where ``raw`` names no upscaler (absent, damaged or foreign)."""
        if not isinstance(raw, dict) or not all(
            isinstance(raw.get(k), str) for k in ("name", "sha256")
        ):
            return None
        text = lambda k: raw[k] if isinstance(raw.get(k), str) and raw[k] else None  # noqa: E731
        return cls(raw["name"], raw["sha256"], text("path"), text("relative_path"))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def sources(self, folder: Path | None) -> list[Path]:
        """Where the upscaler folder may be, in order (``folder``: the index folder, if any)."""
        return _places(self.relative_path, self.path, folder)


def _places(relative_path: str | None, path: str | None, folder: Path | None) -> list[Path]:
    """A recorded file's possible places: beside the index folder first (a shop folder moved
    as a whole), then where it was."""
    found = []
    if relative_path and folder is not None:
        found.append((folder / relative_path).resolve())
    if path:
        found.append(Path(path))
    return found


@dataclass(frozen=True)
class IndexManifest:
    """One committed state of an index (a folder's ``manifest.json``, or a Milvus collection's
    record), typed: what the rest of searchcore reads of it.

    ``store`` holds the backend's own fields (for a folder: format version, dim, space, HNSW
    parameters, counts, deleted labels, the index file and its sha256), read by the backend
    only; ``extra`` what writers record without anyone interpreting it (build time, shards).
    """

    model: ModelRecord | None = None
    catalog: CatalogRecord = field(default_factory=CatalogRecord)
    generation: int = 0
    lexical: Any = None  # as recorded: LexicalIndex.load checks it (a bad entry is refused)
    skipped: tuple[dict[str, Any], ...] = ()
    store: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    log: str | None = None  # the change log of this snapshot (searchcore.stores.changelog)
    upscaler: UpscalerRecord | None = None  # what queries are upscaled with, if recorded

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IndexManifest:
        known = {"model", "catalog", "generation", "lexical", "skipped", "log", "upscaler"}
        known |= set(STORE_KEYS)
        generation = raw.get("generation", 0)
        skipped = raw.get("skipped") if isinstance(raw.get("skipped"), list) else []
        return cls(
            model=ModelRecord.parse(raw.get("model")),
            catalog=CatalogRecord.parse(raw.get("catalog")),
            generation=generation if isinstance(generation, int) else 0,
            lexical=raw.get("lexical"),
            skipped=tuple(s for s in skipped if isinstance(s, dict)),
            store={k: raw[k] for k in STORE_KEYS if k in raw},
            extra={k: v for k, v in raw.items() if k not in known},
            log=raw["log"] if isinstance(raw.get("log"), str) else None,
            upscaler=UpscalerRecord.parse(raw.get("upscaler")),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {**self.store, **self.extra, "generation": self.generation}
        out["catalog"] = self.catalog.to_dict()
        out["skipped"] = list(self.skipped)
        if self.model is not None:
            out["model"] = self.model.to_dict()
        if self.lexical is not None:
            out["lexical"] = self.lexical
        if self.log:
            out["log"] = self.log
        if self.upscaler is not None:
            out["upscaler"] = self.upscaler.to_dict()
        return out

    def carried(self) -> dict[str, Any]:
        """What a writer's next commit keeps of this state: model, skipped photos, build info,
        lexical index (the writer replaces what its change touches; a new snapshot starts a
        log of its own)."""
        out = {k: v for k, v in self.to_dict().items() if k not in STORE_KEYS}
        out.pop("generation", None)
        out.pop("log", None)
        return out

    @property
    def version(self) -> str:
        """Names one committed snapshot: equal versions, equal index and catalog (the records
        of its change log add ``+N``: see :mod:`searchcore.live.state`)."""
        return f"{self.generation}:{self.store.get('index_sha256')}:{self.catalog.sha256}"

    @property
    def files(self) -> set[str]:
        """The file names this state needs in its folder (index file, catalog snapshot, the
        lexical index's folder)."""
        names = {str(self.store.get("index_file", ""))} | lexical_files(self.lexical)
        if self.catalog.snapshot:
            names.add(self.catalog.snapshot)
        if self.log:
            names.add(self.log)
        return names - {""}


def manifest_files(manifest: IndexManifest | None) -> set[str]:
    return manifest.files if manifest is not None else set()


def current_manifest(folder: Path) -> IndexManifest | None:
    """The folder's manifest, or None where there is none (or none that can be read)."""
    try:
        return read_manifest(folder)
    except IndexMismatchError:
        return None


def prune_folder(folder: Path, keep: set[str]) -> list[Path]:
    """Delete index files, catalog snapshots and lexical folders not named in ``keep``, and
    temp files.

    Call it holding the folder's writer lock (:func:`searchcore.fsutil.folder_lock`): then no
    writer is between writing its files and committing them, so every temp file is a dead
    writer's. ``keep`` holds the files of the current and the previous manifest, so a reader
    that read the previous manifest a moment ago still finds its files (and a reader that
    loses that race re-reads the manifest: see ``searchcore.service.open_engine``).
    """
    removed = []
    for pattern in (
        "index-*.bin",
        "catalog-*.csv",
        ".index-*.tmp",
        ".catalog-*.tmp",
        ".manifest.json.*.tmp",
        "lexical-*",
        ".lexical-*.tmp",
        "changes-*.log",
    ):
        for path in folder.glob(pattern):
            if path.name not in keep:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def read_manifest(folder: Path, *, fix: str = "searchcore index build") -> IndexManifest:
    """The folder's manifest, checked (types, format version, file name, sizes) before anything
    else is read; :class:`IndexMismatchError` with ``fix`` where it cannot be used."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise IndexMismatchError(f"no index at {folder}; build one with `{fix}`")
    try:
        manifest = read_json(path)
    except FileNotFoundError:
        raise IndexMismatchError(
            f"{folder} has no {MANIFEST}; build the index with `{fix}`"
        ) from None
    except (OSError, ValueError) as exc:
        raise IndexMismatchError(f"{path} is unreadable ({exc}); rebuild with `{fix}`") from None
    if not isinstance(manifest, dict):
        raise IndexMismatchError(f"{path} is not a manifest; rebuild with `{fix}`")
    for key, typ in MANIFEST_TYPES.items():
        if not isinstance(manifest.get(key), typ) or isinstance(manifest.get(key), bool):
            raise IndexMismatchError(f"{path} lacks a valid {key!r}; rebuild with `{fix}`")
    if manifest["format_version"] != FORMAT_VERSION:
        raise IndexMismatchError(
            f"index format {manifest['format_version']} is not supported (expected "
            f"{FORMAT_VERSION}); rebuild with `{fix}`"
        )
    name = manifest["index_file"]
    if "/" in name or "\\" in name or not name.startswith("index-") or not name.endswith(".bin"):
        raise IndexMismatchError(
            f"{path} names an invalid index file {name!r}; rebuild with `{fix}`"
        )
    if not (1 <= manifest["dim"] <= 65536) or manifest["space"] not in ("cosine", "ip", "l2"):
        raise IndexMismatchError(f"{path} has an invalid dim or space; rebuild with `{fix}`")
    if not (0 <= manifest["total"] <= manifest["capacity"]) or not (2 <= manifest["M"] <= 4096):
        raise IndexMismatchError(f"{path} has invalid sizes; rebuild with `{fix}`")
    if not all(isinstance(x, int) and 0 <= x for x in manifest["deleted"]):
        raise IndexMismatchError(f"{path} has invalid deleted labels; rebuild with `{fix}`")
    log = manifest.get("log")
    if log is not None and not (isinstance(log, str) and LOG_NAME.fullmatch(log)):
        raise IndexMismatchError(f"{path} names an invalid change log; rebuild with `{fix}`")
    return IndexManifest.from_dict(manifest)
