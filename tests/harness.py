"""Driving the real page from tests and benchmarks: ``app.py`` in its own process.

One implementation for the test suite (``tests/apphelpers.py``), the query benchmark and the
soak run: start ``python app.py`` on a free port, wait until it answers HTTP 200 (or fail with
the end of its log), and always stop it afterwards.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# app.py sits at the root of a source checkout, beside tests/
APP = Path(__file__).resolve().parents[1] / "app.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class RunningApp:
    url: str
    process: subprocess.Popen
    log: Path


@contextmanager
def launched_app(
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str],
    log: Path,
    cwd: Path | None = None,
    timeout: float = 120.0,
    app: Path = APP,
) -> Iterator[RunningApp]:
    """``python app.py ARGS --host 127.0.0.1 --port N``, until the ``with`` block ends.

    ``env`` is the child's whole environment. Raises ``RuntimeError`` with the log's tail when
    the app exits or does not answer within ``timeout`` seconds.
    """
    import httpx

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    cmd = [sys.executable, str(app), *args, "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=cwd or app.parent, env=dict(env), stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"app.py exited with {proc.returncode}:\n{_tail(log)}")
            try:
                if httpx.get(url, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"app.py did not answer in {timeout:.0f} s:\n{_tail(log)}")
            time.sleep(0.3)
        yield RunningApp(url, proc, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else "(no log)"
