"""Small file-system helpers: safe reads, checksums and crash-safe writes.

Every file the project reads by path (uploads, catalog photos and tables, weights, index files,
manifests) is opened through :func:`open_regular`: a FIFO, device, socket or directory is
refused *before* anything blocks on it or reads from it, and :func:`read_regular` reads at most
a size cap. Both raise :class:`OSError` subclasses with a short ``strerror``, so callers' usual
``except OSError`` turns them into their own one-line errors.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


class NotRegularFileError(OSError):
    """A path that names a FIFO, device, socket or directory, not a regular file."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(errno.EINVAL, "not a regular file", str(path))


class FileTooLargeError(OSError):
    """A regular file over the size cap of the caller; ``size`` is what it holds (or more)."""

    def __init__(self, path: str | Path, size: int, limit: int) -> None:
        super().__init__(
            errno.EFBIG, f"file is too large ({size} bytes, at most {limit})", str(path)
        )
        self.size, self.limit = size, limit


@contextlib.contextmanager
def open_regular(path: str | Path) -> Iterator[IO[bytes]]:
    """Open a regular file for binary reading, or raise without blocking.

    ``O_NONBLOCK`` makes opening a FIFO return at once (instead of waiting for a writer), and
    ``fstat`` on the opened descriptor decides: whatever the path names at that moment (a link
    swapped after a check included) must be a regular file.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    flags |= getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFileError(path)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)  # a regular file: plain reads from here on
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with f:
        yield f


def read_regular(path: str | Path, max_bytes: int) -> bytes:
    """All of a regular file's bytes, refused (``FileTooLargeError``) beyond ``max_bytes``."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise FileTooLargeError(path, size, max_bytes)
        data = f.read(max_bytes + 1)  # the file may have grown since fstat
    if len(data) > max_bytes:
        raise FileTooLargeError(path, len(data), max_bytes)
    return data


def relative(path: str | Path, start: str | Path) -> str:
    """``path`` relative to ``start``, both resolved first (links followed)."""
    return os.path.relpath(Path(path).resolve(), Path(start).resolve())


class InsideRoot:
    """Whether paths relative to ``root`` stay inside it once symlinks are followed. Each folder
    is resolved once and each file costs one ``lstat`` (a full resolution only for a file that
    is itself a link): a catalog of 100k photos in a few folders is checked in a fraction of a
    second."""

    def __init__(self, root: str | Path, *, scan: bool = False) -> None:
        self.root = Path(root).resolve()
        self._prefix = os.path.join(str(self.root), "")
        self._folders: dict[str, bool] = {"": True}
        # scan: list each folder's links once (many paths to check) instead of an lstat each
        self._links: dict[str, set[str]] | None = {} if scan else None

    def __call__(self, rel: str) -> bool:
        parent, _, name = rel.rpartition("/")
        inside = self._folders.get(parent)
        if inside is None:
            inside = self._inside(os.path.realpath(self._prefix + parent))
            self._folders[parent] = inside
        full = self._prefix + rel
        if not inside:
            return False
        if self._links is not None:
            links = self._links.get(parent)
            if links is None:
                links = self._links[parent] = _links_in(self._prefix + parent)
            if name not in links and "/" not in name:
                return True
        if os.path.islink(full):
            return self._inside(os.path.realpath(full))
        return True

    def _inside(self, resolved: str) -> bool:
        return resolved == str(self.root) or resolved.startswith(self._prefix)


def _links_in(folder: str) -> set[str]:
    try:
        with os.scandir(folder) as entries:
            return {e.name for e in entries if e.is_symlink()}
    except OSError:
        return set()


def is_regular_file(path: str | Path) -> bool:
    """True for a regular file (links followed); False for anything else or nothing."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def file_sha256(path: Path, extra: bytes = b"") -> str:
    """sha256 of a regular file's bytes (followed by ``extra``), read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    h.update(extra)
    return h.hexdigest()


def atomic_write(path: Path, data: bytes | Callable[[Path], object]) -> None:
    """Write ``path`` all or nothing: a temp file beside it (``.NAME.<uuid>.tmp``), fsync,
    rename, fsync the folder. ``data`` is the bytes, or a function that writes the temp path
    (a library's own saver: safetensors, pandas)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        if callable(data):
            data(tmp)
        else:
            tmp.write_bytes(data)
        fsync_file(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def write_json_atomic(path: Path, data: Any) -> None:
    """JSON (indented, sorted keys) through :func:`atomic_write`."""
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True).encode("utf-8"))


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be fsynced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


JSON_MAX_BYTES = 256 * 1024 * 1024  # a manifest listing a million deleted labels is ~8 MB


def read_json(path: str | Path, max_bytes: int = JSON_MAX_BYTES) -> Any:
    """Parse a regular file's JSON (UTF-8). OSError for what is not a regular file or too
    large, ValueError for what is not JSON."""
    return json.loads(read_regular(path, max_bytes).decode("utf-8"))


LOCK_FILE = ".writer.lock"


@contextlib.contextmanager
def folder_lock(folder: str | Path, timeout: float = 300.0) -> Iterator[None]:
    """Hold the exclusive writer lock of ``folder`` (an index folder) across processes.

    ``filelock`` (``flock`` on POSIX, ``LockFileEx`` on Windows): the kernel drops the lock when
    its holder dies, kill -9 included, so a crashed writer never blocks the next one. The lock
    file stays in the folder (deleting it while another process waits would split the lock).
    """
    from filelock import FileLock, Timeout

    from searchcore.errors import LockTimeoutError

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = FileLock(folder / LOCK_FILE, timeout=timeout, preserve_lock_file=True)
    try:
        lock.acquire()
    except Timeout:
        raise LockTimeoutError(
            f"another writer has held {folder} for over {timeout:.0f} s; try again later"
        ) from None
    try:
        yield
    finally:
        lock.release()
