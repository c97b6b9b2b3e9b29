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

``--tower-sides 96,160,224`` goes past frozen features: for each width, the model's image tower
is fine-tuned end to end for this column alone (cross-entropy through a cosine head on its
embedding; ``finetune``'s clean view without its brightness/contrast jitter, so crop to
70-100% of the area and flip, nothing that changes a colour; bf16 autocast where the CPU has
it), ``--tower-epochs`` epochs on the training products' catalog photos at that width, and
scored after the last epoch (nothing is chosen on the test products). What a tower of this
size learns when colour is all it is asked.

It also says how often the products' titles name a value of the column and agree with it: are
the labels the catalog's own words, or noise?

    python benchmarks/colour_head_probe.py MODEL [--shared ../shared] [--column colour] [--sides]
        [--tower-sides 96,160] [--tower-epochs 6]
"""

from __future__ import annotations

import argparse
import time
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


def title_agreement(titles, labels) -> tuple[float, float]:
    """(share of titles naming one of the column's values, share of those naming the label)."""
    values = sorted({v for v in labels if v}, key=len, reverse=True)  # "navy blue" before "blue"
    named = agree = 0
    for title, label in zip(titles, labels, strict=True):
        words = f" {title.lower()} "
        hit = next((v for v in values if f" {v} " in words), None)
        if hit is not None and label:
            named += 1
            agree += hit == label
    return named / max(len(labels), 1), agree / max(named, 1)


def finetune_tower(model, photos, y, train, tests, *, side, epochs, lr=2e-4, seed=0):
    """Fine-tune ``model``'s image tower for ``y`` alone at ``side`` px (module docstring);
    top-1 on each (photos, labels) of ``tests`` after the last epoch."""
    import torch
    from torchvision import transforms as T

    from searchcore.training.batches import clean_view
    from searchcore.training.common import autocast_dtype, lr_at, seed_everything
    from searchcore.training.finetune import FinetuneConfig

    seed_everything(seed)
    embedder = load_embedder(model)
    visual = embedder.model.float().visual.train()
    norm = next(t for t in embedder.transform.transforms if isinstance(t, T.Normalize))
    to_input = T.Compose(
        [
            T.Resize((side, side), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
            T.ToTensor(),
            norm,
        ]
    )  # squashed to a square, as the model's own preprocessing does
    head = torch.nn.Linear(embedder.dim, int(y.max()) + 1)
    opt = torch.optim.AdamW(
        [{"params": visual.parameters()}, {"params": head.parameters()}], weight_decay=0.05
    )
    dtype = autocast_dtype("auto", "cpu")
    rng = np.random.default_rng(seed)
    train = train[y[train] >= 0]
    view = FinetuneConfig(jitter=0.0)  # finetune's clean view, no brightness/contrast jitter

    def logits(imgs):
        x = torch.stack([to_input(im.convert("RGB")) for im in imgs])
        with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            f = torch.nn.functional.normalize(visual(x).float(), dim=-1)
        return 20.0 * head(f)  # a cosine-style head, as the attribute heads are

    batch, step = 64, 0
    total = epochs * (len(train) // batch)
    for _ in range(epochs):
        order = rng.permutation(train)
        for i in range(0, len(order) - batch + 1, batch):
            idx = order[i : i + batch]
            rate = lr_at(step, total, 0, lr)
            opt.param_groups[0]["lr"], opt.param_groups[1]["lr"] = rate, rate * 10
            step += 1
            target = torch.from_numpy(y[idx])
            loss = torch.nn.functional.cross_entropy(
                logits([clean_view(photos[j], rng, view) for j in idx]), target, label_smoothing=0.1
            )
            opt.zero_grad()
            loss.backward()
            opt.step()
    visual.eval()
    out = []
    with torch.inference_mode():
        for imgs, ys in tests:
            pred = np.concatenate(
                [logits(imgs[i : i + 128]).argmax(1).numpy() for i in range(0, len(imgs), 128)]
            )
            known = ys >= 0
            out.append(float(np.mean(pred[known] == ys[known])))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--shared", type=Path, default=C.SHARED)
    ap.add_argument("--column", default="colour")
    ap.add_argument("--sides", type=C.int_list, default=[], help="histogram widths to compare")
    ap.add_argument("--tower-sides", type=C.int_list, default=[], help="widths to fine-tune at")
    ap.add_argument("--tower-epochs", type=int, default=6)
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
    titles = catalog.df["title"].astype(str).to_numpy()[rows]
    named, agree = title_agreement(titles[tst], labels[tst])
    print(
        f"test products' titles naming a {args.column} value: {named:.3f}; "
        f"of those, naming the label: {agree:.3f}"
    )
    print("| head input | test catalog photos | test 60x80 shopper copies | validation |")
    print("|---|---|---|---|")
    for name, (x, xs) in inputs.items():
        tests = [(x[tst], y[tst]), (xs, y[tst]), (x[vl], y[vl])]
        scores = fit_and_score(x, y, train, tests)
        print(f"| {name} | " + " | ".join(f"{s:.3f}" for s in scores) + " |")
    for side in args.tower_sides:
        t0 = time.perf_counter()
        tests = [
            ([photos[i] for i in tst], y[tst]),
            (shop, y[tst]),
            ([photos[i] for i in vl], y[vl]),
        ]
        scores = finetune_tower(
            args.model, photos, y, train, tests, side=side, epochs=args.tower_epochs
        )
        print(
            f"| tower fine-tuned for {args.column} alone at {side} px, {args.tower_epochs} epochs "
            f"({time.perf_counter() - t0:.0f} s) | "
            + " | ".join(f"{s:.3f}" for s in scores)
            + " |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
