"""An index folder's manifest: what it holds, checked before anything else is read, and the
commits and clean-up that move a folder from one state to the next.

``manifest.json`` records the format version, dim, space, HNSW parameters, counts, deleted
labels, the index file and its sha256, a ``generation`` counting commits, and whatever the
writer records about model and catalog. Writers hold the folder's lock
(:func:`searchcore.fsutil.folder_lock`) from reading the manifest to committing the next one.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from searchcore.errors import IndexMismatchError
from searchcore.fsutil import read_json
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


def manifest_files(manifest: dict[str, Any] | None) -> set[str]:
    """The file names a manifest needs in its folder (index file, catalog snapshot, the
    lexical index's folder)."""
    if not isinstance(manifest, dict):
        return set()
    names = {str(manifest.get("index_file", ""))} | lexical_files(manifest.get("lexical"))
    catalog = manifest.get("catalog")
    if isinstance(catalog, dict) and catalog.get("snapshot"):
        names.add(str(catalog["snapshot"]))
    return names - {""}


def manifest_version(manifest: dict[str, Any]) -> str:
    """Names one committed state of a folder: equal versions, equal index and catalog."""
    catalog = manifest.get("catalog") if isinstance(manifest.get("catalog"), dict) else {}
    return f"{manifest.get('generation', 0)}:{manifest.get('index_sha256')}:{catalog.get('sha256')}"


def current_manifest(folder: Path) -> dict[str, Any] | None:
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
    ):
        for path in folder.glob(pattern):
            if path.name not in keep:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def read_manifest(folder: Path, *, fix: str = "searchcore index build") -> dict[str, Any]:
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
    return manifest
