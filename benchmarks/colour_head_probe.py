"""Can a colour head do better than a linear head on the learned embedding? A quality probe.

The real catalog's baseColour head misses its target (top-1 >= 0.70 on the newest products:
README, "Attribute heads"). This fits softmax heads on the training products' catalog photos
(``finetune``'s split: the newest 20% by id are the test products) from three inputs: the
model's embedding, a colour histogram of the photo's foreground (HSV bins of the pixels that
are not the studio's white background, grey levels apart, plus mean and median colour), and
both; then scores top-1 accuracy on the test products' catalog photos, on 60x80 3:4 shopper
copies of them (``portrait-60x80``), and on the validation products (random, same period).

``--sides 16,32,96,224`` adds the histogram alone computed at each width: does what a photo
holds about its colour label grow with resolution?

    python benchmarks/colour_head_probe.py MODEL [--shared ../shared] [--column colour] [--sides]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _common as C
import numpy as np

from searchcore.degrade import degrade
from searchcore.embed import load_embedder
from searchcore.training.data import load_photos, split_masks
from searchcore.training.tune import SHOPPER_CONDITIONS


def foreground_histogram(img, side: int = 32) -> np.ndarray:
    """8 hue x 4 saturation x 4 value bins of the coloured foreground pixels of the photo
    ``side`` px wide, 8 grey levels, square-rooted shares, then the foreground's mean and
    median RGB."""
    w, h = img.size
    px = np.asarray(img.convert("RGB").resize((side, max(1, round(side * h / w)))), np.float32)
    px = px.reshape(-1, 3) / 255.0
    fg = (px.min(1) < 0.92) | (px.max(1) - px.min(1) > 0.08)  # not the white background
    if fg.sum() > 10:
        px = px[fg]
    hi, lo = px.max(1), px.min(1)
    sat = np.where(hi > 0, (hi - lo) / np.maximum(hi, 1e-6), 0.0)
    r, g, b = px.T
    d = np.maximum(hi - lo, 1e-6)
    hue = (
        np.where(hi == r, ((g - b) / d) % 6, np.where(hi == g, (b - r) / d + 2, (r - g) / d + 4))
        / 6
    )
    grey = sat < 0.15
    bins = (np.minimum(hue * 8, 7).astype(int) * 4 + np.minimum(sat * 4, 3).astype(int)) * 4
    bins += np.minimum(hi * 4, 3).astype(int)
    chroma = np.bincount(bins[~grey], minlength=128).astype(np.float32)
    greys = np.bincount(np.minimum(hi[grey] * 8, 7).astype(int), minlength=8).astype(np.float32)
    shares = np.concatenate([chroma, greys]) / max(len(px), 1)
    return np.concatenate([np.sqrt(shares), px.mean(0), np.median(px, 0)]).astype(np.float32)


def fit_and_score(x, y, train, tests, l2=1e-2):
    """Softmax regression (L-BFGS, L2 ``l2``) on standardised ``x[train]``; top-1 per test."""
    import torch

    mu, sd = x[train].mean(0), x[train].std(0) + 1e-6
    keep = train[y[train] >= 0]
    xt = torch.from_numpy((x[keep] - mu) / sd)
    yt = torch.from_numpy(y[keep])
    classes = int(y.max()) + 1
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    out = []
    for xs, ys in tests:
        with torch.no_grad():
            pred = (torch.from_numpy((xs - mu) / sd) @ w + b).argmax(1).numpy()
        known = ys >= 0
        out.append(float(np.mean(pred[known] == ys[known])))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--shared", type=Path, default=C.SHARED)
    ap.add_argument("--column", default="colour")
    ap.add_argument("--sides", type=C.int_list, default=[], help="histogram widths to compare")
    args = ap.parse_args()
    catalog = C.load_shared_catalog(args.shared)
    if catalog is None:
        return 2
    val, test = split_masks(catalog.df, 0, 0.1, 0.2, "id")
    rows, photos, _ = load_photos(catalog, list(range(len(catalog))))
    rows = np.asarray(rows)
    labels = catalog.df[args.column].str.strip().str.lower().to_numpy()[rows]
    train = np.flatnonzero(~(val[rows] | test[rows]))
    classes = {c: i for i, c in enumerate(sorted({labels[i] for i in train if labels[i]}))}
    y = np.array([classes.get(v, -1) for v in labels])
    tst, vl = np.flatnonzero(test[rows]), np.flatnonzero(val[rows])
    cond = dict(SHOPPER_CONDITIONS)["portrait-60x80"]  # tune's headline condition
    shop = [degrade(photos[i], cond, np.random.default_rng([0, 7, int(rows[i])])) for i in tst]
    embedder = load_embedder(args.model)
    emb, emb_shop = embedder.embed_images(photos), embedder.embed_images(shop)
    hist = np.stack([foreground_histogram(p) for p in photos])
    hist_shop = np.stack([foreground_histogram(p) for p in shop])
    inputs = {
        "learned embedding": (emb, emb_shop),
        "foreground colour histogram": (hist, hist_shop),
        "both": (np.hstack([emb, hist]), np.hstack([emb_shop, hist_shop])),
    }
    for side in args.sides:
        inputs[f"histogram at {side} px"] = (
            np.stack([foreground_histogram(p, side) for p in photos]),
            np.stack([foreground_histogram(p, side) for p in shop]),
        )
    print(
        f"{args.column}: {len(classes)} classes, {len(train)} training, {len(tst)} test "
        f"(newest), {len(vl)} validation products"
    )
    print("| head input | test catalog photos | test 60x80 shopper copies | validation |")
    print("|---|---|---|---|")
    for name, (x, xs) in inputs.items():
        tests = [(x[tst], y[tst]), (xs, y[tst]), (x[vl], y[vl])]
        scores = fit_and_score(x, y, train, tests)
        print(f"| {name} | " + " | ".join(f"{s:.3f}" for s in scores) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
