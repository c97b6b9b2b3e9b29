"""Live shop commits: the whole-snapshot design and the change-log design side by side.

For each catalog size, a shop folder is made as ``index build`` makes one (catalog file, HNSW
index of synthetic clustered 256-d vectors, BM25 lexical index, manifest), then one writer
(:class:`searchcore.live.LiveShop`, a fake embedder that hashes the photo: the model is not what
is measured) makes single-product changes, each timed from the call to its acknowledgement: a
price edit (40%), a new product with its photo (30%), a new title (15%), a removal (15%).

- ``snapshot``: ``compact_every=1``, every commit writes the whole catalog file, index file and
  (when words changed) lexical index, as each commit did before the change log;
- ``log``: the default (``compact_every=5000``): a commit appends one record; the run's last
  commit compacts, so its cost is inside the figures (throughput counts it; it is the max).

Also: opening a 100k-product shop with a 10k-record log (``open_engine``, what the app and a
writer do) beside opening the same state compacted, and query latency over that state.

    python benchmarks/bench_live.py                      # ~15 min on 2 cores
    python benchmarks/bench_live.py --sizes 1000 --commits 50 --log-entries 500   # a quick look
"""

from __future__ import annotations

import hashlib
import io
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import _common as C
import numpy as np
import pandas as pd

DIM = 256
TARGET_RATE = 50.0  # commits/s at 100k products
TARGET_RATIO = 2.0  # commit time at 100k within 2x of 1k
TARGET_OPEN_S = 2.0
MIX = (("price", 0.40), ("add", 0.30), ("title", 0.15), ("remove", 0.15))
WORDS = "classic slim premium urban retro sport comfort lite cotton linen denim wool".split()


class HashEmbedder:
    """A photo's vector from its bytes' hash (deterministic, ~0.05 ms): no model in the way."""

    spec = "bench-synthetic"
    fingerprint = "bench-synthetic-v1"
    dim = DIM
    has_text = True
    runtime = "torch"

    def embed_images(self, images: list[Any]) -> np.ndarray:
        out = []
        for img in images:
            seed = int.from_bytes(hashlib.sha256(img.tobytes()).digest()[:8], "little")
            v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        rng = np.random.default_rng(len(texts))
        v = rng.normal(size=(len(texts), DIM)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


def photo(i: int) -> bytes:
    from PIL import Image

    rgb = ((37 * i) % 256, (91 * i) % 256, (53 * i) % 256)
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), rgb).save(buf, format="PNG")
    return buf.getvalue()


def make_shop(folder: Path, n: int, titles: list[str], rng: np.random.Generator) -> Path:
    """A shop folder of ``n`` products with its index folder, as `index build` writes one."""
    from searchcore.build import catalog_record
    from searchcore.catalog import load_catalog
    from searchcore.stores.changelog import new_log_name
    from searchcore.stores.hnsw import HnswIndex, commit_folder
    from searchcore.stores.lexical import LexicalIndex
    from searchcore.stores.manifest import ModelRecord

    shutil.rmtree(folder, ignore_errors=True)
    (folder / "images").mkdir(parents=True)
    for j in range(50):
        (folder / "images" / f"{j:02d}.png").write_bytes(photo(j))
    pick = rng.integers(0, len(titles), n)
    df = pd.DataFrame(
        {
            "id": [f"P{i:07d}" for i in range(n)],
            "title": [f"{titles[p]} {WORDS[p % len(WORDS)]} Z{i:06d}" for i, p in enumerate(pick)],
            "price": [f"{10 + i % 190}.00" for i in range(n)],
            "category": [("shoes", "shirts", "bags", "watches")[i % 4] for i in range(n)],
            "colour": [("red", "blue", "black", "white", "green")[i % 5] for i in range(n)],
            "image": [f"images/{i % 50:02d}.png" for i in range(n)],
        }
    )
    df.to_csv(folder / "products.csv", index=False)
    catalog = load_catalog(folder / "products.csv", max_bad_fraction=None)
    centres = rng.normal(size=(max(8, n // 200), DIM)).astype(np.float32)
    vecs = centres[rng.integers(0, len(centres), n)] + 0.5 * rng.normal(size=(n, DIM)).astype(
        np.float32
    )
    index = HnswIndex(DIM, capacity=n)
    index.add(vecs, np.arange(n))
    out = folder / "index"
    out.mkdir()
    emb = HashEmbedder()
    meta = {
        "model": ModelRecord(emb.spec, emb.fingerprint, DIM).to_dict(),
        "catalog": catalog_record(catalog, out, left_out=catalog.left_out_meta()).to_dict(),
        "skipped": [],
        "lexical": LexicalIndex.build(catalog).save(out),
        "log": new_log_name(),
    }
    commit_folder(out, index, meta, None)
    return out


def open_shop(index: Path, compact_every: int):
    from searchcore.config import Settings, UpscaleSettings
    from searchcore.live import LiveShop
    from searchcore.service import open_engine

    settings = Settings(upscale=UpscaleSettings(mode="never"))
    engine = open_engine(settings, index, embedder=HashEmbedder())
    return LiveShop(engine, index, compact_every=compact_every)


def commits(shop: Any, count: int, rng: np.random.Generator, start: int) -> dict[str, list[float]]:
    """``count`` single-product changes of the mix; milliseconds per kind and all together."""
    kinds = [k for k, _ in MIX]
    weights = [w for _, w in MIX]
    times: dict[str, list[float]] = {k: [] for k in kinds}
    ids = shop.live_ids
    for i in range(count):
        kind = str(rng.choice(kinds, p=weights))
        pid = ids[int(rng.integers(0, len(ids)))]
        data = photo(start + i) if kind == "add" else None
        t0 = time.perf_counter()
        if kind == "price":
            shop.update(pid, {"price": f"{rng.integers(5, 500)}.99"})
        elif kind == "title":
            shop.update(pid, {"title": f"Renamed {WORDS[i % len(WORDS)]} Y{start + i}"})
        elif kind == "remove":
            shop.remove([pid])
        else:
            new = f"N{start + i:07d}"
            shop.add([{"id": new, "title": f"New {WORDS[i % len(WORDS)]} {new}"}], [data])
        times[kind].append((time.perf_counter() - t0) * 1000)
        if kind == "remove":
            ids.remove(pid)
        elif kind == "add":
            ids.append(new)
    times["all"] = [t for k in kinds for t in times[k]]
    return times


def run_design(
    args: Any, run: C.Run, n: int, design: str, titles: list[str]
) -> dict[str, Any] | None:
    rng = np.random.default_rng(n)
    folder = args.work / "live" / f"{design}-{n}"
    t0 = time.perf_counter()
    index = make_shop(folder, n, titles, rng)
    setup_s = time.perf_counter() - t0
    from searchcore.live import COMPACT_EVERY

    shop = open_shop(index, 1 if design == "snapshot" else COMPACT_EVERY)
    budget = args.snapshot_budget_s if design == "snapshot" else None
    count = args.commits if design == "log" else min(args.commits, args.snapshot_commits)
    done: dict[str, list[float]] = {}
    started = time.perf_counter()
    if budget is None:
        done = commits(shop, count, rng, 10_000_000)
    else:  # the old design is slow at scale: as many commits as fit the time budget
        chunks = []
        while len(chunks) < count and time.perf_counter() - started < budget:
            chunks.append(commits(shop, 1, rng, 10_000_000 + len(chunks)))
        done = {k: [t for c in chunks for t in c[k]] for k in chunks[0]}
    wall = time.perf_counter() - started
    from searchcore.live import check_invariants

    problems = check_invariants(shop)
    shutil.rmtree(folder, ignore_errors=True)
    all_ms = done["all"]
    row = {
        "products": n,
        "design": design,
        "commits": len(all_ms),
        "commits_per_s": round(len(all_ms) / wall, 2),
        "ms": C.percentiles(all_ms),
        "by_kind": {k: C.percentiles(v) for k, v in done.items() if k != "all" and v},
        "setup_s": round(setup_s, 1),
        "problems": problems,
    }
    run.say(
        f"{design:8s} n={n:>7,}: {row['commits']} commits, {row['commits_per_s']}/s, "
        f"p50 {row['ms']['p50']} ms, p99 {row['ms']['p99']} ms, max {row['ms']['max']} ms"
    )
    return row


def open_with_log(args: Any, run: C.Run, titles: list[str]) -> dict[str, Any]:
    """Open time of a shop whose log holds ``--log-entries`` records, and of it compacted;
    query latency in both states."""
    from searchcore.config import Settings, UpscaleSettings
    from searchcore.service import open_engine

    n = max(args.sizes)
    rng = np.random.default_rng(7)
    folder = args.work / "live" / f"open-{n}"
    index = make_shop(folder, n, titles, rng)
    shop = open_shop(index, 0)  # never compacts: the log grows
    t0 = time.perf_counter()
    commits(shop, args.log_entries, rng, 20_000_000)
    fill_s = time.perf_counter() - t0
    log_bytes = (index / shop.manifest.log).stat().st_size
    settings = Settings(upscale=UpscaleSettings(mode="never"))
    out: dict[str, Any] = {
        "products": n,
        "log_entries": args.log_entries,
        "log_mb": log_bytes / 2**20,
    }
    out["fill_commits_per_s"] = round(args.log_entries / fill_s, 1)
    for state in ("log", "compacted"):
        if state == "compacted":
            t0 = time.perf_counter()
            shop.compact()
            out["compact_s"] = round(time.perf_counter() - t0, 2)
        opens = []
        for _ in range(args.open_repeats):
            t0 = time.perf_counter()
            engine = open_engine(settings, index, embedder=HashEmbedder())
            opens.append(time.perf_counter() - t0)
        out[f"open_s_{state}"] = C.percentiles(opens)
        qrng = np.random.default_rng(3)
        text_ms, vec_ms = [], []
        for i in range(args.queries):
            t0 = time.perf_counter()
            engine.search(text=f"{titles[i % len(titles)]} {WORDS[i % len(WORDS)]}", k=10)
            text_ms.append((time.perf_counter() - t0) * 1000)
            q = qrng.normal(size=DIM).astype(np.float32)
            t0 = time.perf_counter()
            engine.index.search(q / np.linalg.norm(q), 10)
            vec_ms.append((time.perf_counter() - t0) * 1000)
        out[f"text_query_ms_{state}"] = C.percentiles(text_ms)
        out[f"vector_search_ms_{state}"] = C.percentiles(vec_ms)
        run.say(f"open {state}: {out[f'open_s_{state}']}")
    shutil.rmtree(folder, ignore_errors=True)
    return out


def titles_of(args: Any, run: C.Run) -> list[str]:
    from searchcore.catalog import load_catalog

    csv, why = C.shared_catalog(args.shared)
    if csv is None:
        run.skip("the shared catalog's titles", why + "; using the demo shop's")
        return load_catalog(C.demo_catalog(args.work)).df["title"].tolist()
    return load_catalog(csv, C.SHARED_COLUMN_MAP).df["title"].tolist()


def main(argv: list[str] | None = None) -> int:
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", type=C.int_list, default=[1_000, 10_000, 100_000])
    p.add_argument("--commits", type=int, default=5000, help="commits per size (log design)")
    p.add_argument("--snapshot-commits", type=int, default=200)
    p.add_argument("--snapshot-budget-s", type=float, default=60.0)
    p.add_argument("--log-entries", type=int, default=10_000)
    p.add_argument("--open-repeats", type=int, default=3)
    p.add_argument("--queries", type=int, default=200)
    args = p.parse_args(argv)
    run = C.Run("live_commits", args)
    titles = titles_of(args, run)
    rows = []
    for n in args.sizes:
        for design in ("snapshot", "log"):
            rows.append(run_design(args, run, n, design, titles))
    small = {r["design"]: r["ms"]["p50"] for r in rows if r["products"] == min(args.sizes)}
    table = []
    for r in rows:
        ratio = r["ms"]["p50"] / small[r["design"]] if small.get(r["design"]) else None
        big = r["products"] == max(args.sizes) and r["design"] == "log"
        table.append(
            [
                r["products"],
                r["design"],
                r["commits"],
                r["commits_per_s"],
                r["ms"]["p50"],
                r["ms"]["p99"],
                r["ms"]["max"],
                round(ratio, 2) if ratio else None,
                (
                    f"{C.verdict(r['commits_per_s'], TARGET_RATE, True)} / "
                    f"{C.verdict(ratio, TARGET_RATIO, False)}"
                    if big
                    else ""
                ),
            ]
        )
    run.section(
        "Single-product commits, acknowledged (one writer; the mix: "
        + ", ".join(f"{k} {int(w * 100)}%" for k, w in MIX)
        + ")",
        C.md_table(
            [
                "products",
                "design",
                "commits",
                "commits/s",
                "p50 ms",
                "p99 ms",
                "max ms",
                f"p50 / p50 at {min(args.sizes):,}",
                f"≥ {TARGET_RATE:.0f}/s / within {TARGET_RATIO:.0f}x",
            ],
            table,
        ),
    )
    kinds = []
    for r in rows:
        for kind, pc in r["by_kind"].items():
            kinds.append([r["products"], r["design"], kind, pc["n"], pc["p50"], pc["p99"]])
    run.section(
        "By kind of change",
        C.md_table(["products", "design", "change", "n", "p50 ms", "p99 ms"], kinds),
    )
    opened = open_with_log(args, run, titles) if args.log_entries else {}
    if opened:
        run.section(
            f"Opening a {opened['products']:,}-product shop with a "
            f"{opened['log_entries']:,}-record change log ({opened['log_mb']:.1f} MB), "
            "and the same state compacted",
            C.md_table(
                [
                    "state",
                    "open s p50",
                    "open s max",
                    "text query p50 ms",
                    "vector search p50 ms",
                    f"open ≤ {TARGET_OPEN_S:.0f} s",
                ],
                [
                    [
                        state,
                        opened[f"open_s_{state}"]["p50"],
                        opened[f"open_s_{state}"]["max"],
                        opened[f"text_query_ms_{state}"]["p50"],
                        opened[f"vector_search_ms_{state}"]["p50"],
                        C.verdict(opened[f"open_s_{state}"]["max"], TARGET_OPEN_S, False)
                        if state == "log"
                        else "",
                    ]
                    for state in ("log", "compacted")
                ],
            )
            + f"\n\nCompacting that log took {opened['compact_s']} s; filling it ran at "
            f"{opened['fill_commits_per_s']} commits/s.",
        )
    bad = [r for r in rows if r["problems"]]
    if bad:
        run.section(
            "Problems", "\n".join(f"- {r['design']} {r['products']}: {r['problems']}" for r in bad)
        )
    run.finish({"commits": rows, "open": opened}, C.command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
