"""An index folder's change log: the changes committed since its last snapshot, one checksummed
record each, appended and fsynced before a change is acknowledged.

A folder's state is the snapshot its ``manifest.json`` names (index file, catalog snapshot,
lexical index) plus the records of the log the manifest names (``changes-<hex>.log``), replayed
in order (:mod:`searchcore.live.state`). A commit appends one record and fsyncs it: the record
being whole on disk is the commit point, so a commit costs what it changes, not what the shop
holds. Compaction writes a new snapshot with an empty log and swaps the manifest (the old
commit point); it never rewrites a log in place.

A record is ``SCR1``, the payload's length and its CRC-32 (little-endian ``uint32`` each), then
the payload: UTF-8 JSON. The first record names the snapshot the log belongs to, so a log is
never replayed onto another snapshot. Reading stops at a torn tail, the record a writer killed
mid-append left unfinished (an unacknowledged change: it never happened); the next writer cuts
it off, under the folder's lock, before it appends. A damaged record anywhere else is refused.
"""

from __future__ import annotations

import json
import os
import re
import struct
import uuid
import zlib
from pathlib import Path
from typing import Any

from searchcore.errors import IndexMismatchError
from searchcore.fsutil import fsync_dir, open_regular

LOG_FORMAT = 1
MAGIC = b"SCR1"
HEAD = struct.Struct("<4sII")  # magic, payload length, crc32
MAX_RECORD = 256 * 1024 * 1024  # one change of ~100k products with their vectors fits
NAME = re.compile(r"changes-[0-9a-f]{16}\.log")


def frame(payload: dict[str, Any]) -> bytes:
    """One record: header and payload, ready to append."""
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(data) > MAX_RECORD:
        raise ValueError(f"a change of {len(data)} bytes is over the log's {MAX_RECORD}")
    return HEAD.pack(MAGIC, len(data), zlib.crc32(data)) + data


class ChangeLog:
    """The log file ``path`` of the snapshot ``base`` (the manifest's ``index_sha256`` and
    catalog sha256: what the log's first record must name)."""

    def __init__(self, path: Path, base: str, *, fix: str = "searchcore index build") -> None:
        if not NAME.fullmatch(path.name):
            raise IndexMismatchError(f"invalid change log name {path.name!r}; rebuild with `{fix}`")
        self.path, self.base, self.fix = path, base, fix

    def read(self, start: int = 0) -> tuple[list[dict[str, Any]], int]:
        """The whole records from byte ``start`` (0: the file's beginning, its first record
        checked), and the offset where the last one ends; a missing file holds none."""
        try:
            with open_regular(self.path) as f:
                f.seek(start)
                data = f.read()
        except FileNotFoundError:
            if start:
                raise self._damaged("is gone") from None
            return [], 0
        except OSError as exc:
            raise self._damaged(f"cannot be read ({exc.strerror or exc})") from None
        records: list[dict[str, Any]] = []
        pos = 0
        while pos < len(data):
            rest = len(data) - pos
            if rest < HEAD.size:
                if data[pos : pos + 4] != MAGIC[:rest] and any(data[pos:]):
                    raise self._damaged(f"has a damaged record at byte {start + pos}")
                break  # a header cut short: a torn tail
            magic, length, crc = HEAD.unpack_from(data, pos)
            end = pos + HEAD.size + length
            if magic != MAGIC or length > MAX_RECORD:
                if not any(data[pos:]):
                    break  # zeros where a record was being written
                raise self._damaged(f"has a damaged record at byte {start + pos}")
            if end > len(data):
                break  # a record cut short: a torn tail
            payload = data[pos + HEAD.size : end]
            if zlib.crc32(payload) != crc:
                if end == len(data):
                    break  # the last record, half written: a torn tail
                raise self._damaged(f"has a record failing its checksum at byte {start + pos}")
            try:
                record = json.loads(payload.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise self._damaged(f"has an unreadable record at byte {start + pos}") from None
            if not isinstance(record, dict):
                raise self._damaged(f"has an unreadable record at byte {start + pos}")
            records.append(record)
            pos = end
        if start == 0 and records:
            head = records.pop(0)
            if head.get("log") != LOG_FORMAT or head.get("base") != self.base:
                raise self._damaged("belongs to another snapshot or format")
        elif start == 0 and pos:  # bytes, but not even a whole first record: nothing committed
            pos = 0
        return records, start + pos

    def append(self, payload: dict[str, Any], valid_end: int) -> int:
        """Append one record after byte ``valid_end`` (where the caller's replay ended: beyond
        it is only a dead writer's torn tail, cut off first) and fsync; returns the new end.

        The caller holds the folder's writer lock. When this returns, the change is committed.
        """
        data = frame(payload)
        if valid_end == 0:
            data = frame({"log": LOG_FORMAT, "base": self.base}) + data
        flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags, 0o644)
        try:
            os.ftruncate(fd, valid_end)
            view = memoryview(data)
            offset = valid_end
            while view:
                written = os.pwrite(fd, view, offset)
                view, offset = view[written:], offset + written
            os.fsync(fd)
        finally:
            os.close(fd)
        if valid_end == 0:  # a new file: its name must survive a crash too
            fsync_dir(self.path.parent)
        return offset

    def _damaged(self, what: str) -> IndexMismatchError:
        return IndexMismatchError(
            f"change log {self.path} {what}; the changes since the last snapshot cannot be "
            f"trusted: rebuild with `{self.fix}` (and re-apply recent catalog changes)"
        )


def new_log_name() -> str:
    return f"changes-{uuid.uuid4().hex[:16]}.log"
