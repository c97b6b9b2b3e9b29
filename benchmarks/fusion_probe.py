"""Does fusing the learned embedding with raw pixels or a colour histogram help on new products?

A quality probe, not a speed benchmark: the newest 20% of the shared fashion catalog (split by
id, as ``tune`` and ``eval`` hold out), 1,000 of them as 60x80 3:4 shopper photos (the
``portrait-60x80`` condition); similar-product P@10 per column and exact-product R@1/R@10 for
the learned embedding, raw pixels, a 4x4x4 colour histogram, and weighted concatenations of the
learned embedding with them (each part L2-normalised, then weighted).

    python benchmarks/fusion_probe.py MODEL [--shared ../shared]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _common as C
import numpy as np

from searchcore.degrade import degrade
from searchcore.embed import load_embedder
from searchcore.embed.pixels import PixelEmbedder
from searchcore.training.data import load_photos, split_masks
from searchcore.training.tune import SHOPPER_CONDITIONS

COLUMNS = ("masterCategory", "category", "colour", "gender")


def histogram(images: list) -> np.ndarray:
    """4x4x4 RGB bins of a 32x32 copy, square-rooted, centred and L2-normalised."""
    out = []
    for im in images:
        a = np.asarray(im.convert("RGB").resize((32, 32)), np.int64) // 64
        h = np.bincount((a[..., 0] * 16 + a[..., 1] * 4 + a[..., 2]).ravel(), minlength=64)
        h = np.sqrt(h.astype(np.float32) / h.sum())
        h -= h.mean()
        out.append(h / (np.linalg.norm(h) + 1e-9))
    return np.stack(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--shared", type=Path, default=C.SHARED)
    args = ap.parse_args()
    catalog = C.load_shared_catalog(args.shared)
    if catalog is None:
        return 2
    _, test = split_masks(catalog.df, 0, 0.1, 0.2, "id")
    rows, photos, _ = load_photos(catalog, [i for i, t in enumerate(test) if t])
    pick = np.random.default_rng(0).choice(len(rows), 1000, replace=False)
    cond = dict(SHOPPER_CONDITIONS)["portrait-60x80"]  # tune's headline condition
    queries = [degrade(photos[i], cond, np.random.default_rng([0, int(i)])) for i in pick]
    labels = {c: catalog.df[c].to_numpy()[rows] for c in COLUMNS}

    def score(gallery: np.ndarray, query: np.ndarray) -> dict[str, float]:
        sims = query @ gallery.T
        own = sims[np.arange(len(pick)), pick][:, None]
        rank = (sims > own).sum(1)
        sims[np.arange(len(pick)), pick] = -np.inf  # similar products: not itself
        top = np.argsort(-sims, axis=1)[:, :10]
        out = {f"{c} P@10": float((v[top] == v[pick][:, None]).mean()) for c, v in labels.items()}
        return {**out, "R@1": float((rank == 0).mean()), "R@10": float((rank < 10).mean())}

    emb = load_embedder(args.model)
    parts = {
        "learned": (emb.embed_images(photos), emb.embed_images(queries)),
        "pixels 16x16": tuple(PixelEmbedder(16).embed_images(x) for x in (photos, queries)),
        "pixels 30x40": tuple(
            PixelEmbedder(30, height=40).embed_images(x) for x in (photos, queries)
        ),
        "colour histogram": (histogram(photos), histogram(queries)),
    }
    runs = {name: score(*p) for name, p in parts.items()}
    for other in ("pixels 16x16", "pixels 30x40", "colour histogram"):
        for w in (0.3, 0.5, 0.7, 1.0):
            g, q = (np.concatenate([parts["learned"][i], w * parts[other][i]], 1) for i in (0, 1))
            runs[f"learned + {w:g} x {other}"] = score(g, q)
    keys = [*(f"{c} P@10" for c in COLUMNS), "R@1", "R@10"]
    print("| embedding | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for name, r in runs.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.3f}" for k in keys) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
