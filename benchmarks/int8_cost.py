"""int8's retrieval cost on a real catalog's held-out products, paired against torch fp32.

torch fp32, ONNX fp32 and ONNX int8 of one exported model folder on the same held-out products
(the newest ``--fraction`` by id, as ``searchcore eval`` splits) and the same shopper photos of
them (:mod:`searchcore.training.runtime_cost`: the measurement ``searchcore model export --int8
--catalog`` records in ``onnx.json`` for ``--runtime auto``): each query's rank of its own
product's catalog photo among the queried products' (``--n``, 1,000 by default), each title's
rank of its product's photo there, a paired two-sided sign test per measure, the int8 verdict,
and each runtime's time. Export with the whole catalog: int8's convolutions are calibrated on
its products that are not held out.

    searchcore model export --model MODEL_DIR --out MODEL_DIR --int8 --catalog CATALOG_CSV ...
    python benchmarks/int8_cost.py --catalog ../shared/data/fashion-224/metadata.csv \\
        --map title=productDisplayName --model MODEL_DIR
"""

from __future__ import annotations

import sys
import time
from typing import Any

import _common as C

RUNTIMES = ("torch", "onnx", "onnx-int8")


def main(argv: list[str] | None = None) -> int:
    from searchcore.catalog import load_catalog
    from searchcore.config import parse_column_map
    from searchcore.embed import load_embedder
    from searchcore.training import runtime_cost as rc

    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--catalog", required=True)
    p.add_argument("--map", action="append", default=[], metavar="CANONICAL=COLUMN")
    p.add_argument("--model", required=True, help="a model folder exported with --int8")
    p.add_argument("--fraction", type=float, default=0.2, help="newest share held out (0.2)")
    p.add_argument("--condition", help="shopper photos: NAME:SPEC (default: tune's headline)")
    p.add_argument("--n", type=int, default=1000, help="queries at most")
    args = p.parse_args(argv)
    if not args.tag:
        args.tag = "int8"
    run = C.Run("runtime_cost", args)
    catalog = load_catalog(args.catalog, parse_column_map(args.map))
    qs = rc.held_out_queries(catalog, fraction=args.fraction, n=args.n, condition=args.condition)
    run.say(f"{qs.held_out} held-out products, {len(qs.rows)} queries ({qs.condition})")
    hits: dict[str, Any] = {}
    out: dict[str, Any] = {"products": qs.held_out, "queries": len(qs.rows)}
    out["condition"] = qs.condition
    for runtime in RUNTIMES:
        started = time.perf_counter()
        emb = load_embedder(args.model, runtime=runtime)
        hits[runtime] = ranked = rc.runtime_ranks(emb, qs)
        out[runtime] = {
            "fingerprint": emb.fingerprint[:16],
            "seconds": round(time.perf_counter() - started, 1),
            **{f"{w} R@{k}": float((r <= k).mean()) for w, r in ranked.items() for k in (1, 10)},
        }
        run.say(f"{runtime}: {out[runtime]}")
    rows_md = []
    for runtime in RUNTIMES[1:]:
        measures = rc.paired(hits["torch"], hits[runtime])
        out.setdefault("paired", {})[runtime] = measures
        out.setdefault("verdict", {})[runtime] = rc.int8_verdict(measures, len(qs.rows))
        for key, m in measures.items():
            ref, cand = f"{m['reference']:.3f}", f"{m['candidate']:.3f}"
            rows_md.append([runtime, key, ref, cand, m["gained"], m["lost"], f"{m['p']:.3g}"])
    run.section(
        f"{out['queries']} queries of {out['products']} held-out products, paired with torch fp32",
        C.md_table(
            ["runtime", "measure", "torch", "runtime", "gained", "lost", "sign test p"], rows_md
        )
        + f"\n\nphoto: a shopper photo ({qs.condition}) -> its product's catalog photo among "
        "the queried products' photos; title: the product's title -> its photo among the same. "
        "gained / lost: queries the runtime gets right and torch wrong / the reverse. "
        + "Seconds to embed the photos, shopper photos and titles (model load included): "
        + ", ".join(f"{r} {out[r]['seconds']}" for r in RUNTIMES)
        + ". "
        f"int8 verdict (the rule `model export --int8 --catalog` records for `--runtime auto`): "
        f"{out['verdict']['onnx-int8']['why']}.",
    )
    run.finish(out, C.command_line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
