"""A deterministic synthetic demo shop: product photos drawn with numpy + PIL, and their CSV.

The demo must work offline (no real photos can be downloaded) and a CLIP model is later trained
on this catalog, so every attribute in a row (kind, colour, pattern, second-part colour,
material) is visible in its image, and every title names what the image shows.

Each image is drawn at twice the output size in a canonical frame (unit square, product
centred), coloured part by part, shaded (soft edge occlusion, a per-kind form term, specular
highlights on glossy materials), rotated and shifted a little, shrunk to the output size for
anti-aliasing, then lit from above and put on a light gradient background with a soft shadow.

Same ``(n, seed, size)`` -> byte-identical CSV and JPEGs: the kinds are dealt from one
``default_rng(seed)``, and product ``i`` draws its attributes from ``default_rng([seed, i, 0])``
and its picture from ``default_rng([seed, i, 1])``, so rendering order cannot matter.
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import numpy as np
import pandas as pd

from searchcore.config import usable_cpus
from searchcore.console import progress_bar
from searchcore.demo.draw import render_product
from searchcore.demo.world import (
    BRANDS,
    COLOURS,
    COLUMNS,
    INK,
    KINDS,
    MATERIAL_PRICE,
    PATTERN_PRICE,
    PATTERN_WORDS,
    PATTERNS,
    SOLID_ONLY,
    Kind,
)
from searchcore.fsutil import atomic_write

__all__ = ["COLOURS", "COLUMNS", "KINDS", "PATTERNS", "generate_catalog", "render_product"]


# ------------------------------------------------------------------------------- the catalog


def _title(
    kind: Kind, colour: str, pattern: str, trim: str, material: str, rng: np.random.Generator
) -> tuple[str, bool]:
    """A natural title that always names the colour, the pattern (if any) and the kind; and
    whether it starts with a brand."""
    mat = f"{material} " if rng.uniform() < 0.4 else ""
    extras = []
    pattern_adj = ""
    if pattern != "solid":
        adjs, noun = PATTERN_WORDS[pattern]
        if rng.uniform() < 0.35:
            extras.append(f"{INK.get(colour, 'white')} {noun}")
        else:
            pattern_adj = f"{adjs[int(rng.integers(len(adjs)))]} "
    if trim and trim != colour:
        extras.append(f"{kind.trim_article}{trim} {kind.trim}")
    tail = f" with {' and '.join(extras)}" if extras else ""
    if not extras and rng.uniform() < 0.3:  # "Striped cotton t-shirt in navy"
        text = f"{pattern_adj}{mat}{kind.name} in {colour}"
    else:
        text = f"{colour} {pattern_adj}{mat}{kind.name}{tail}"
    if rng.uniform() < 0.35:
        return f"{BRANDS[int(rng.integers(len(BRANDS)))]} {text}", True
    return text[0].upper() + text[1:], False


def _product(kind: Kind, seed: int, index: int) -> dict[str, str]:
    """Attributes, title and price of product ``index`` (its own rng: order-independent)."""
    rng = np.random.default_rng([seed, index, 0])
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    material = kind.materials[int(rng.integers(len(kind.materials)))]
    pattern = "solid"
    if material not in SOLID_ONLY and len(kind.patterns) > 1 and rng.uniform() < 0.45:
        others = kind.patterns[1:]
        pattern = others[int(rng.integers(len(others)))]
    trim = ""
    if kind.trim:
        trim = kind.trim_colours[int(rng.integers(len(kind.trim_colours)))]
        trim = colour if trim == "same" else trim
    title, branded = _title(kind, colour, pattern, trim, material, rng)
    price = (
        kind.base_price
        * MATERIAL_PRICE.get(material, 1.0)
        * PATTERN_PRICE[pattern]
        * (1.15 if branded else 1.0)
        * float(np.exp(rng.normal(0, 0.12)))
    )
    cents = (0.9, 0.9, 0.95, 0.99, 0.0)[int(rng.integers(5))]
    pid = f"P{index + 1:05d}"
    return {
        "id": pid,
        "title": title,
        "image": f"images/{pid}.jpg",
        "category": kind.category,
        "colour": colour,
        "pattern": pattern,
        "trim_colour": trim,
        "material": material,
        "price": f"{max(1.0, math.floor(price)) + cents:.2f}",
        "kind": kind.name,
    }


def _render_to(args: tuple[dict[str, str], int, int, int, str]) -> None:
    row, size, seed, index, path = args
    img = render_product(row, size, np.random.default_rng([seed, index, 1]))
    img.save(path, "JPEG", quality=92)  # no EXIF, no timestamp: the bytes depend on pixels only


# A worker process costs about a second to start (it imports numpy, pandas and PIL) and
# draws ~100 products a second, so small shops are drawn in this process.
_PRODUCTS_PER_WORKER = 300


def _workers(n: int) -> int:
    return max(1, min(usable_cpus(), 8, n // _PRODUCTS_PER_WORKER))


def _draw_all(jobs: list[tuple[dict[str, str], int, int, int, str]], progress: bool) -> None:
    bar = progress_bar(len(jobs), "drawing products", "img", progress)
    workers = _workers(len(jobs))
    if workers > 1:
        # Each product has its own rng, so the pool's output is byte-identical to serial.
        try:
            with ProcessPoolExecutor(workers) as pool:
                for _ in pool.map(_render_to, jobs, chunksize=16):
                    bar.update()
            bar.close()
            return
        except (OSError, BrokenProcessPool):  # no processes here (sandbox): draw them below
            bar.reset()
    for job in jobs:
        _render_to(job)
        bar.update()
    bar.close()


def generate_catalog(
    out_dir: Path | str, n: int = 1200, seed: int = 0, size: int = 192, progress: bool = False
) -> Path:
    """Write out_dir/products.csv and out_dir/images/<id>.jpg; return the CSV path."""
    if not 1 <= n <= 99_999:
        raise ValueError(f"n must be between 1 and 99999 (ids have 5 digits), not {n}")
    if not 64 <= size <= 512:
        raise ValueError(f"size must be between 64 and 512 pixels, not {size}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, not {seed}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    # Deal the kinds evenly (then shuffle) so every kind is well represented for training.
    names = list(KINDS)
    order = np.random.default_rng(seed).permutation(np.resize(np.arange(len(names)), n))
    rows = [_product(KINDS[names[int(k)]], seed, i) for i, k in enumerate(order)]
    jobs = [(r, size, seed, i, str(out / r["image"])) for i, r in enumerate(rows)]
    _draw_all(jobs, progress)
    # The CSV is written last and atomically: its presence means the shop is complete.
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    csv_path = out / "products.csv"
    atomic_write(csv_path, lambda tmp: frame.to_csv(tmp, index=False, lineterminator="\n"))
    return csv_path
