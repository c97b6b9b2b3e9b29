"""A writer process for the crash-loop tests: random catalog changes, each printed when acked.

Usage: python live_writer.py INDEX_DIR SEED [--unsafe] [--no-lock]
Prints ``BEGIN op id payload`` before and ``ACK op id payload`` after each committed change.
A writer adds products ``w<SEED>-<n>`` and removes and updates only its own, so that several
writers at once have disjoint histories the test can check one by one (their commits still
interleave, reuse each other's tombstone rows and rewrite one shared catalog and index).
``--unsafe`` makes the writer append each change-log record in two halves, slowly, at the
file's end without first cutting off a dead writer's torn record (and write manifests in place),
and ``--no-lock`` takes away the folder's writer lock: the negative controls the tests must
catch.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from conftest import ColourEmbedder

from searchcore.config import Settings, UpscaleSettings
from searchcore.live import LiveShop
from searchcore.live import shop as live_module
from searchcore.service import open_engine
from searchcore.stores import hnsw as index_module
from searchcore.stores.changelog import LOG_FORMAT, ChangeLog, frame


def unsafe_write_json(path: Path, data: object) -> None:
    text = json.dumps(data, indent=2, sort_keys=True)
    with open(path, "w", encoding="utf-8") as f:  # truncates the live manifest in place
        f.write(text[: len(text) // 2])
        f.flush()
        time.sleep(0.05)
        f.write(text[len(text) // 2 :])


def unsafe_append(self: ChangeLog, payload: dict, valid_end: int) -> int:
    data = frame(payload)
    if valid_end == 0:
        data = frame({"log": LOG_FORMAT, "base": self.base}) + data
    with open(self.path, "ab") as f:  # after whatever is there, a torn record included
        f.write(data[: len(data) // 2])
        f.flush()
        time.sleep(0.05)
        f.write(data[len(data) // 2 :])
        f.flush()
        os.fsync(f.fileno())
        return f.tell()


def photo(rng: np.random.Generator) -> tuple[bytes, list[int]]:
    rgb = [int(x) for x in rng.integers(0, 256, 3)]
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), tuple(rgb)).save(buf, format="PNG")
    return buf.getvalue(), rgb


def main() -> None:
    folder, seed = sys.argv[1], int(sys.argv[2])
    if "--unsafe" in sys.argv:
        index_module.write_json_atomic = unsafe_write_json
        ChangeLog.append = unsafe_append
    if "--no-lock" in sys.argv:
        live_module.folder_lock = lambda *a, **k: contextlib.nullcontext()
    settings = Settings(upscale=UpscaleSettings(mode="never"))
    shop = LiveShop(open_engine(settings, folder, embedder=ColourEmbedder()), folder)
    rng = np.random.default_rng(seed)
    shop.engine.embedder.embed_images([Image.new("RGB", (8, 8))])  # imports torch before READY
    print("READY", flush=True)
    n = 0
    while True:
        n += 1
        live = [i for i in shop.live_ids if i.startswith(f"w{seed}-")]  # its own products only
        op = rng.choice(["add", "add", "remove", "update"]) if len(live) > 3 else "add"
        if op == "add":
            pid = f"w{seed}-{n}"
            data, rgb = photo(rng)
            payload = {"title": f"Product {pid}", "rgb": rgb}
            print(f"BEGIN add {pid} {json.dumps(payload)}", flush=True)
            shop.add(
                [{"id": pid, "title": payload["title"], "price": "9.50", "category": "mugs"}],
                [data],
            )
        elif op == "remove":
            pid = str(rng.choice(live))
            payload = {}
            print(f"BEGIN remove {pid} {{}}", flush=True)
            shop.remove([pid])
        else:
            pid = str(rng.choice(live))
            payload = {"title": f"Renamed {n}"}
            print(f"BEGIN update {pid} {json.dumps(payload)}", flush=True)
            shop.update(pid, {"title": payload["title"]})
        print(f"ACK {op} {pid} {json.dumps(payload)}", flush=True)


if __name__ == "__main__":
    main()
