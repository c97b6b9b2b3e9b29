"""int8's retrieval cost on a real catalog's held-out products, paired against torch fp32.

The same held-out products (the newest ``--fraction`` by id, as ``searchcore eval`` splits),
the same shopper photos of them (``--condition``, seeded), embedded by each runtime of one
exported model folder; each query's rank of its own product's catalog photo among the queried
products' (``--n``, 1,000 by default), and each title's rank of its product's photo there. A
paired two-sided sign test says whether a runtime's hits differ from torch's beyond chance
(queries that one gets right and the other wrong), per measure. int8's convolutions are
calibrated on ``--catalog``'s photos at export: give it the products that are not held out, as
a shop's catalog at export time would be.

    searchcore model export --model MODEL_DIR --out MODEL_DIR --int8 --catalog OLDER_PRODUCTS_CSV
    python benchmarks/int8_cost.py --catalog ../shared/data/fashion-224/metadata.csv \\
        --map title=productDisplayName --model MODEL_DIR
"""

from __future__ import annotations

import sys
import time
from typing import Any

import _common as C
import numpy as np

RUNTIMES = ("torch", "onnx", "onnx-int8")
CONDITION = (
    "portrait-60x80:aspect=0.75,rotate=5,crop=0.9,cast=0.05,min_width=60,max_width=60,"
    "blur=0.5,jpeg=75"
)


def ranks(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """1-based rank of gallery item i for query i (ties count against it)."""
    scores = queries @ gallery.T
    own = scores[np.arange(len(queries)), np.arange(len(queries))]
    return (scores > own[:, None]).sum(axis=1) + 1


def main(argv: list[str] | None = None) -> int:
    from searchcore.catalog import load_catalog
    from searchcore.config import parse_column_map
    from searchcore.degrade import degrade, parse_condition
    from searchcore.embed import load_embedder
    from searchcore.training.data import load_photos, test_mask
    from searchcore.training.verdicts import sign_test

    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--catalog", required=True)
    p.add_argument("--map", action="append", default=[], metavar="CANONICAL=COLUMN")
    p.add_argument("--model", required=True, help="a model folder exported with --int8")
    p.add_argument("--fraction", type=float, default=0.2, help="newest share held out (0.2)")
    p.add_argument("--condition", default=CONDITION, help="shopper photos: NAME:SPEC")
    p.add_argument("--n", type=int, default=1000, help="queries at most")
    args = p.parse_args(argv)
    if not args.tag:
        args.tag = "int8"
    run = C.Run("runtime_cost", args)
    catalog = load_catalog(args.catalog, parse_column_map(args.map))
    held = np.flatnonzero(test_mask(catalog.df, args.fraction, 0))
    rows, photos, _ = load_photos(catalog, held.tolist())
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(len(rows), min(args.n, len(rows)), replace=False))
    name, cond = parse_condition(args.condition)
    queries = [degrade(photos[i], cond, np.random.default_rng([0, int(i)])) for i in pick]
    titles = catalog.df["title"].iloc[[rows[i] for i in pick]].tolist()
    run.say(f"{len(rows)} held-out products, {len(pick)} queries ({name})")
    hits: dict[str, dict[str, np.ndarray]] = {}
    out: dict[str, Any] = {"products": len(rows), "queries": len(pick), "condition": args.condition}
    for runtime in RUNTIMES:
        started = time.perf_counter()
        emb = load_embedder(args.model, runtime=runtime)
        gallery = emb.embed_images(photos)
        ranked = {
            "photo": ranks(emb.embed_images(queries), gallery[pick]),
            "title": ranks(emb.embed_texts(titles), gallery[pick]),
        }
        hits[runtime] = ranked
        out[runtime] = {
            "fingerprint": emb.fingerprint[:16],
            "seconds": round(time.perf_counter() - started, 1),
            **{
                f"{what} R@{k}": float(np.mean(r <= k))
                for what, r in ranked.items()
                for k in (1, 10)
            },
        }
        run.say(f"{runtime}: {out[runtime]}")
    rows_md = []
    for runtime in RUNTIMES[1:]:
        for what in ("photo", "title"):
            for k in (1, 10):
                a, b = hits["torch"][what] <= k, hits[runtime][what] <= k
                gained, lost = int((b & ~a).sum()), int((a & ~b).sum())
                pval = sign_test(gained, lost)
                key = f"{what} R@{k}"
                out.setdefault("paired", {})[f"{runtime} {key}"] = {
                    "torch": float(a.mean()),
                    runtime: float(b.mean()),
                    "gained": gained,
                    "lost": lost,
                    "p": pval,
                }
                rows_md.append(
                    [
                        runtime,
                        key,
                        f"{a.mean():.3f}",
                        f"{b.mean():.3f}",
                        gained,
                        lost,
                        f"{pval:.3g}",
                    ]
                )
    run.section(
        f"{out['queries']} queries of {out['products']} held-out products, paired with torch fp32",
        C.md_table(
            ["runtime", "measure", "torch", "runtime", "gained", "lost", "sign test p"], rows_md
        )
        + f"\n\nphoto: a shopper photo ({args.condition}) -> its product's catalog photo among "
        "the queried products' photos; title: the product's title -> its photo among the same. "
        "gained / lost: "
        "queries the runtime gets right and torch wrong / the reverse.",
    )
    run.finish(out, C.command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
