"""Keeping a serving engine (the app) on the newest state that writers committed to its folder.

:class:`Follower` polls the folder every ``interval`` seconds (a ``stat`` of the manifest and of
the change log it names). New log records are applied to the served view (O(change), as a
writer applies them); a new snapshot (another writer compacted, or rebuilt the index) is loaded
whole in the polling thread. Either way the engine swaps catalog, vectors and words together,
so a page sees another process's change within a few seconds and never a half of one.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from searchcore.config import Settings
from searchcore.engine import SearchEngine
from searchcore.errors import IndexMismatchError, SearchError
from searchcore.live.state import apply, log_for
from searchcore.stores.manifest import MANIFEST, IndexManifest, read_manifest
from searchcore.stores.segment import LiveIndex

log = logging.getLogger(__name__)


class Follower:
    def __init__(
        self,
        engine: SearchEngine,
        folder: str | Path,
        *,
        settings: Settings | None = None,
        interval: float = 2.0,
    ) -> None:
        self.engine = engine
        self.folder = Path(folder)
        self.settings = settings or Settings()
        self.interval = interval
        self._seen: tuple[int, ...] | None = None
        self._manifest: IndexManifest | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def check(self) -> bool:
        """One poll: True when a newer committed state is now being served."""
        try:
            st = os.stat(self.folder / MANIFEST)
        except OSError:
            return False
        seen: tuple[int, ...] = (st.st_mtime_ns, st.st_size, st.st_ino)
        if self._manifest is not None and self._manifest.log:
            try:
                seen += (os.stat(self.folder / self._manifest.log).st_size,)
            except OSError:
                seen += (0,)
        if seen == self._seen:
            return False
        try:
            changed = self._follow()
        except SearchError as exc:
            log.warning("not following the change in %s: %s", self.folder.name, exc)
            changed = False
        self._seen = seen  # until the folder changes again
        return changed

    def _follow(self) -> bool:
        from searchcore.service import load_state

        manifest = read_manifest(self.folder)
        view = self.engine.view
        base = view.version.split("+")[0]
        if manifest.version == base and isinstance(view.index, LiveIndex):
            self._manifest = manifest
            log_file = log_for(self.folder, manifest)
            records, end = log_file.read(view.log[0]) if log_file else ([], view.log[0])
            if not records:
                return False
            self.engine.swap(apply(view, records, end, manifest.version))
        else:
            view, manifest = load_state(self.settings, str(self.folder))
            if manifest.model is None or (
                manifest.model.fingerprint != self.engine.embedder.fingerprint
            ):
                raise IndexMismatchError("it was rebuilt for another model; restart to serve it")
            self._manifest = manifest
            self.engine.swap(view)
        served = self.engine.view
        log.info(
            "serving %s generation %s, change %d (%d products)",
            self.folder.name,
            manifest.generation,
            served.log[1],
            len(served.index),
        )
        return True

    def start(self) -> Follower:
        def loop() -> None:
            while not self._stop.wait(self.interval):
                try:
                    self.check()
                except Exception:
                    log.exception("following %s failed", self.folder.name)

        self._thread = threading.Thread(target=loop, name="searchcore-follower", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
