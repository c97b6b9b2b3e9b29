"""The web edge's guards: what a stranger's request may read, upload and be served.

Three rules, each in one place:

- :func:`upload_path`: a photo parameter is only ever a file that this server received in its
  upload folder (resolved, links followed, then checked to lie inside it) and that is a regular
  file. Anything else gets one message that never says whether a path exists.
- :class:`ServedImages`: the shop's files are served as an allowlist of exact files, the image
  files of the catalog's live products (a set, rebuilt when the catalog changes), copied into
  the web server's cache on first use. Nothing else under the shop's folder is reachable, and
  copies of photos that left the catalog are deleted.
- :class:`UploadGuard`: an ASGI middleware in front of the upload routes (the page's and the
  REST API's search form) that caps the files and bytes of one request, the uploads a client
  may make per minute, and the bytes all clients may leave in the upload folder within its
  clean-up window.
- :class:`QueryQueue`: how many queries wait at once, and one photo at a time, page and REST
  API together.

The module imports no web framework at import time (the middleware speaks plain ASGI).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from searchcore.errors import BusyError, ConfigError
from searchcore.fsutil import FileTooLargeError, atomic_write, is_regular_file, read_regular
from searchcore.images import IMAGE_SUFFIXES

PHOTO_DID_NOT_ARRIVE = "The photo did not arrive; please upload it again."
MAX_PATH = 4096


# --------------------------------------------------------------------------- uploads


def upload_path(value: Any, upload_dir: str | Path) -> Path | None:
    """The uploaded photo a request names, as a checked path inside ``upload_dir``.

    ``value`` is the file record a client sent (``{"path": ...}``); ``None`` or ``""`` means no
    photo. Raises :class:`ConfigError` with :data:`PHOTO_DID_NOT_ARRIVE` for everything that is
    not a regular file inside the upload folder, whether or not it exists.
    """
    if value is None or value == "":
        return None
    path = value.get("path") if isinstance(value, dict) else None
    if not isinstance(path, str) or not path or len(path) > MAX_PATH or "\x00" in path:
        raise ConfigError(PHOTO_DID_NOT_ARRIVE)
    try:
        root = Path(os.path.realpath(upload_dir))
        real = Path(os.path.realpath(path))  # links followed: a link out of the folder is out
    except (OSError, ValueError):
        raise ConfigError(PHOTO_DID_NOT_ARRIVE) from None
    if not real.is_relative_to(root) or not is_regular_file(real):  # the folder itself: no file
        raise ConfigError(PHOTO_DID_NOT_ARRIVE)
    return real


# --------------------------------------------------------------------------- served files


class ServedImages:
    """Catalog photos handed to the web server: an exact allowlist, looked up in a set.

    :meth:`serve` returns a copy of a product's photo inside ``cache_dir`` (which the web
    server serves) when the photo is one of the catalog's live image files, else ``None``. The
    allowlist is rebuilt when the catalog's table changes (a live shop swaps it on each
    commit); copies of photos no longer in it are deleted then.
    """

    def __init__(self, cache_dir: str | Path, max_bytes: int = 20 * 1024 * 1024) -> None:
        self.folder = Path(cache_dir) / "searchcore-catalog"
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self._table: object = None
        self._allowed: frozenset[str] = frozenset()
        self._copies: dict[str, Path] = {}
        shutil.rmtree(self.folder, ignore_errors=True)  # copies from an earlier run

    def allowed(self, catalog: Any) -> frozenset[str]:
        """Catalog-relative image paths that may be served (live products, image files)."""
        df = catalog.df
        with self._lock:
            if df is not self._table:
                live = df.loc[catalog.live, "image"]
                self._allowed = frozenset(
                    p for p in live.tolist() if Path(p).suffix.lower() in IMAGE_SUFFIXES
                )
                self._table = df
                for rel in [r for r in self._copies if r not in self._allowed]:
                    with contextlib.suppress(OSError):
                        shutil.rmtree(self._copies.pop(rel).parent)
            return self._allowed

    def serve(self, catalog: Any, rel: str) -> str | None:
        """A servable copy of the catalog photo ``rel``, or None when it may not be served."""
        if rel not in self.allowed(catalog):
            return None
        source = catalog.root / rel
        try:
            st = source.stat()
            key = hashlib.sha256(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}".encode()).hexdigest()[:32]
            target = self.folder / key / Path(rel).name
            with self._lock:
                if self._copies.get(rel) == target and target.is_file():
                    return str(target)
            data = read_regular(source, self.max_bytes)  # regular files only, bounded
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, data)
        except (OSError, FileTooLargeError):
            return None
        with self._lock:
            old = self._copies.get(rel)
            self._copies[rel] = target
        if old is not None and old != target:
            with contextlib.suppress(OSError):
                shutil.rmtree(old.parent)
        return str(target)


# --------------------------------------------------------------------------- upload limits

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class QueryQueue:
    """The queries one server takes at once: at most ``size`` waiting or running, and photo
    queries one at a time (``photo_slots``), for the page and the REST API together.

    On a 2-vCPU machine one photo already keeps torch busy on both cores, and the upscaler keeps
    per-call state: the page's photo events (Gradio's ``concurrency_id="photo"``) and the REST
    API's photo queries take the same slot here. A query that finds the queue full, or waits
    longer than ``wait_s`` for the slot, gets :class:`~searchcore.errors.BusyError` (HTTP 503
    with ``Retry-After`` at the REST edge).
    """

    def __init__(self, size: int = 16, *, photo_slots: int = 1, wait_s: float = 60.0) -> None:
        self.size = int(size)
        self.wait_s = float(wait_s)
        self._photo = threading.BoundedSemaphore(photo_slots)
        self._lock = threading.Lock()
        self._inside = 0

    @contextlib.contextmanager
    def enter(self, *, photo: bool) -> Iterator[None]:
        with self._lock:
            if self._inside >= self.size:
                raise BusyError(f"the server is busy ({self.size} queries waiting); try again")
            self._inside += 1
        try:
            if not photo:
                yield
                return
            if not self._photo.acquire(timeout=self.wait_s):
                raise BusyError("the server is busy with photos; please try again")
            try:
                yield
            finally:
                self._photo.release()
        finally:
            with self._lock:
                self._inside -= 1


class UploadGuard:
    """ASGI middleware in front of the page: the limits Gradio's routes lack.

    Every other ``POST`` (API calls, queue joins) carries JSON parameters only: its body is
    capped at ``max_json_bytes`` (refused with 413 from ``Content-Length``, or cut off as a
    disconnect once a body without one passes it), so no request makes the server parse a
    huge document. For ``POST .../upload``, and each path of ``forms`` (a form with a photo and
    at most that many parts in all, such as the REST API's search):

    - ``max_in_flight`` uploads are read at once (each is held in memory up to its cap, so a
      crowd of slow clients cannot fill the server's memory);
    - ``max_files`` files per request (a photo search needs one);
    - ``max_request_bytes`` per request (the per-file cap plus room for the form's headers),
      refused from ``Content-Length`` before reading, or as soon as the body passes it;
    - ``per_minute`` uploads per client address;
    - ``window_bytes`` accepted by all clients within ``window_s`` seconds: the upload folder
      is emptied of files older than 15 minutes, so this bounds what it can hold.

    A refused request gets HTTP 413 or 429 with a one-line message and is never passed on.
    Clients are told apart by their address; behind a reverse proxy that appends the client's
    address to ``X-Forwarded-For`` (a Hugging Face Space), ``trust_forwarded`` uses the entry
    that proxy added (the last one: the ones before it are the client's own word).
    """

    def __init__(
        self,
        app: Callable[..., Awaitable[None]],
        *,
        max_request_bytes: int,
        max_files: int = 1,
        per_minute: int = 60,
        window_bytes: int = 512 * 1024 * 1024,
        window_s: float = 1200.0,
        max_in_flight: int = 8,
        max_json_bytes: int = 1024 * 1024,
        trust_forwarded: bool = False,
        forms: Mapping[str, int] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.forms = dict(forms or {})
        self.max_request_bytes = int(max_request_bytes)
        self.max_files = int(max_files)
        self.per_minute = int(per_minute)
        self.window_bytes = int(window_bytes)
        self.window_s = float(window_s)
        self.max_in_flight = int(max_in_flight)
        self.max_json_bytes = int(max_json_bytes)
        self.trust_forwarded = trust_forwarded
        self.clock = clock
        self._in_flight = 0
        self._lock = threading.Lock()
        self._by_client: dict[str, deque[float]] = {}
        self._accepted: deque[tuple[float, int]] = deque()
        self._accepted_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope.get("type") != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
        }
        length = headers.get("content-length", "")
        path = str(scope.get("path", "")).rstrip("/")
        parts = self.forms.get(path, self.max_files if path.endswith("/upload") else None)
        if parts is None:
            await self._capped(scope, receive, send, length)
            return
        if length.isdigit() and int(length) > self.max_request_bytes:
            await _refuse(send, 413, "the upload is too large")
            return
        client = (scope.get("client") or ("?", 0))[0]
        forwarded = headers.get("x-forwarded-for", "").split(",")[-1].strip()
        if self.trust_forwarded and forwarded:
            client = forwarded
        problem = self._admit(client)
        if problem:
            await _refuse(send, 429, problem)
            return
        with self._slot() as admitted:
            if not admitted:
                await _refuse(send, 429, "the server is busy with uploads; please try again")
                return
            boundary = _boundary(headers.get("content-type", ""))
            body, problem = await self._read(receive, boundary, parts)
        if problem:
            await _refuse(send, 413, problem)
            return
        if not self._take(len(body)):
            await _refuse(
                send, 429, "the server has taken too many uploads; please try again later"
            )
            return
        sent = False

        async def replay() -> MutableMapping[str, Any]:
            nonlocal sent
            if sent:
                return await receive()  # only a disconnect can come after the body
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _capped(self, scope: Scope, receive: Receive, send: Send, length: str) -> None:
        """Any other POST: a JSON body of at most ``max_json_bytes``."""
        if length.isdigit() and int(length) > self.max_json_bytes:
            await _refuse(send, 413, "the request is too large")
            return
        seen = 0

        async def counted() -> MutableMapping[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_json_bytes:  # no (or a false) length: stop reading it
                return {"type": "http.disconnect"}
            return message

        await self.app(scope, counted, send)

    @contextlib.contextmanager
    def _slot(self) -> Iterator[bool]:
        with self._lock:
            admitted = self._in_flight < self.max_in_flight
            self._in_flight += admitted
        try:
            yield admitted
        finally:
            if admitted:
                with self._lock:
                    self._in_flight -= 1

    def _admit(self, client: str) -> str | None:
        now = self.clock()
        with self._lock:
            recent = self._by_client.setdefault(client, deque())
            while recent and recent[0] <= now - 60.0:
                recent.popleft()
            if len(recent) >= self.per_minute:
                return (
                    f"too many uploads (at most {self.per_minute} a minute); please wait a moment"
                )
            recent.append(now)
            if len(self._by_client) > 10_000:  # forget idle clients
                for key in [k for k, v in self._by_client.items() if not v]:
                    del self._by_client[key]
            return None

    def _take(self, n: int) -> bool:
        now = self.clock()
        with self._lock:
            while self._accepted and self._accepted[0][0] <= now - self.window_s:
                self._accepted_bytes -= self._accepted.popleft()[1]
            if self._accepted_bytes + n > self.window_bytes:
                return False
            self._accepted.append((now, n))
            self._accepted_bytes += n
            return True

    async def _read(
        self, receive: Receive, boundary: bytes | None, max_parts: int
    ) -> tuple[bytes, str | None]:
        chunks: list[bytes] = []
        size = 0
        marker = b"--" + boundary if boundary else None
        parts, tail = 0, b""
        while True:
            message = await receive()
            if message.get("type") == "http.disconnect":
                return b"", "the upload was interrupted"
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_request_bytes:
                return b"", "the upload is too large"
            if marker is not None:  # count the form's parts as they stream in
                window = tail + chunk
                parts += window.count(marker) - tail.count(marker)
                tail = window[-(len(marker) - 1) :] if len(marker) > 1 else b""
                if parts - 1 > max_parts:  # the last marker closes the form
                    return b"", f"at most {max_parts} part(s) per upload"
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks), None


def _boundary(content_type: str) -> bytes | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.strip().partition("=")
        if key.lower() == "boundary" and value:
            return value.strip('"').encode("latin-1")
    return None


async def _refuse(send: Send, status: int, message: str) -> None:
    import json

    body = json.dumps({"detail": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
