"""Drawing one demo product: each kind's shape, then colour, pattern, material and lighting.

Each image is drawn at twice the output size in a canonical frame (unit square, product
centred), coloured part by part, shaded (soft edge occlusion, a per-kind form term, specular
highlights on glossy materials), rotated and shifted a little, shrunk to the output size for
anti-aliasing, then lit from above and put on a light gradient background with a soft shadow.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

from searchcore.demo.shapes import DRAW, Pen
from searchcore.demo.world import (
    CATEGORY_TO_KIND,
    COLOURS,
    GLOSS,
    INK,
    KINDS,
    WEAVE,
    Kind,
)


@cache
def _ao_lut(tone: float) -> list[int]:
    """Edge occlusion: a part's blurred mask (128 at its edge, 255 well inside) -> brightness,
    times the part's ``tone`` (parts in shade, like a pair's far shoe)."""
    return [
        round(255 * tone * (0.66 + 0.34 * min(1.0, max(0.0, (v - 128) / 110)) ** 0.6))
        for v in range(256)
    ]


# --------------------------------------------------------------------------------- rendering


def _pattern_ink(
    pattern: str, u: np.ndarray, v: np.ndarray, k: float, rng: np.random.Generator
) -> np.ndarray:
    """Ink coverage in [0, 1] on the canvas grid; ``u, v`` are the unit coords of its columns
    and rows, ``k`` canvas pixels per unit (for a one-pixel anti-aliased edge)."""
    period = rng.uniform(0.05, 0.085)
    if pattern == "striped":
        d = np.abs((v / period + rng.uniform()) % 1.0 - 0.5) * period
        band = np.clip((period * rng.uniform(0.15, 0.2) - d) * k + 0.5, 0, 1)
        return np.broadcast_to(band[:, None], (v.size, u.size))
    if pattern == "dotted":
        row = np.floor(v / period)
        du = ((u[None, :] / period + 0.5 * (row[:, None] % 2)) % 1.0 - 0.5) * period
        dv = (np.abs((v / period) % 1.0 - 0.5) * period)[:, None]
        return np.clip((period * rng.uniform(0.2, 0.26) - np.hypot(du, dv)) * k + 0.5, 0, 1)

    # checked: gingham, half-strength bands that cross at full strength
    def band(x: np.ndarray) -> np.ndarray:
        return np.clip((period * 0.18 - np.abs(x / period % 1.0 - 0.5) * period) * k + 0.5, 0, 1)

    return 0.5 * band(u)[None, :] + 0.5 * band(v)[:, None]


def _form(
    kind: Kind, pen: Pen, u: np.ndarray, v: np.ndarray, gloss: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Shading (multiplier) and specular (additive, 0-1) in the canonical frame."""
    if kind.form == "cyl":  # turned object lit from the left: darker towards both sides
        cx, hw = pen.cyl
        x = np.clip((u - cx) / hw, -1.15, 1.15)
        shade = (1.08 - 0.26 * (x + 0.2) ** 2)[None, :] * np.ones_like(v)[:, None]
        spec = gloss * np.exp(-(((x + 0.5) / 0.11) ** 2))[None, :] * np.ones_like(v)[:, None]
        return shade, spec
    if kind.form == "cloth":  # a few soft vertical folds
        f = np.zeros_like(u)
        for _ in range(3):
            f += np.sin(2 * math.pi * (rng.uniform(3, 7) * u + rng.uniform()))
        shade = (1.02 + 0.035 * f)[None, :] * (1.03 - 0.1 * (v - 0.3) ** 2)[:, None]
        return shade, np.zeros((v.size, u.size), np.float32)
    r2 = ((u - pen.dome[0]) ** 2)[None, :] + ((v - pen.dome[1]) ** 2)[:, None]
    shade = 1.08 - 0.9 * r2
    return shade, gloss * 0.8 * np.exp(-r2 / 0.006)


def _resolve_kind(attrs: dict[str, Any]) -> Kind:
    name = attrs.get("kind") or CATEGORY_TO_KIND.get(str(attrs.get("category", "")), "")
    if name not in KINDS:
        raise ValueError(f"unknown product kind {name!r}; expected one of {', '.join(KINDS)}")
    return KINDS[name]


def render_product(attrs: dict[str, Any], size: int, rng: np.random.Generator) -> Image.Image:
    """Draw one product photo (RGB, ``size`` x ``size``).

    ``attrs`` needs ``kind`` (a key of :data:`KINDS`; a ``category`` value also works) and
    ``colour``; ``pattern``, ``trim_colour`` and ``material`` are optional. ``rng`` chooses the
    pose, proportions and lighting, so the same rng state gives the same picture.
    """
    return _render(attrs, size, rng)[0]


def _render(
    attrs: dict[str, Any], size: int, rng: np.random.Generator
) -> tuple[Image.Image, np.ndarray]:
    """:func:`render_product`, plus the product's coverage (0-1, ``size`` x ``size``)."""
    kind = _resolve_kind(attrs)
    main = COLOURS[attrs["colour"]]
    pattern = attrs.get("pattern") or "solid"
    trim = COLOURS[attrs.get("trim_colour") or attrs["colour"]]
    material = attrs.get("material") or kind.materials[0]
    px = 2 * size
    scale = rng.uniform(0.9, 1.1)
    pen = Pen(px, scale, main)
    DRAW[kind.name](pen, rng)

    # Colour and edge-shade every part at 2x, back to front.
    albedo = Image.new("RGB", (px, px))
    shade = Image.new("L", (px, px), 255)
    alpha = Image.new("L", (px, px), 0)
    g = (np.arange(px, dtype=np.float32) + 0.5) / px
    u = v = 0.5 + (g - 0.5) / scale  # canvas pixel centres in unit coordinates
    patterned = None
    if pattern != "solid":
        ink = _pattern_ink(pattern, u, v, pen.k, rng)
        patterned = Image.composite(
            Image.new("RGB", (px, px), COLOURS[INK.get(attrs["colour"], "white")]),
            Image.new("RGB", (px, px), main),
            Image.fromarray((ink * 255).astype(np.uint8)),
        )
    paints = {
        "main": main,
        "trim": trim,
        "dark": tuple(int(c * 0.45) for c in main),
        "seam": tuple(int(c * 0.72) for c in main),
    }
    # Where the per-kind form shading applies: fully on the main body, weakly on trims and
    # details (a mug's handle sits outside the body's cylinder and must keep its colour).
    form_weight = Image.new("L", (px, px), 0)
    blur, pad = ImageFilter.BoxBlur(px * 0.035), int(px * 0.08)
    for lay in pen.layers:
        bb = lay.mask.getbbox()
        if bb is None:
            continue
        # Work inside the part's padded bounding box only: most parts are small.
        bb = (max(0, bb[0] - pad), max(0, bb[1] - pad), min(px, bb[2] + pad), min(px, bb[3] + pad))
        m = lay.mask.crop(bb)
        if lay.pattern and patterned is not None:
            albedo.paste(patterned.crop(bb), bb, m)
        else:
            albedo.paste(paints[lay.paint] if isinstance(lay.paint, str) else lay.paint, bb, m)
        if lay.ao:
            shade.paste(m.filter(blur).point(_ao_lut(lay.tone)), bb, m)
        else:
            shade.paste(round(255 * lay.tone), bb, m)
        form_weight.paste(255 if lay.paint in ("main", "dark", "seam") else 80, bb, m)
        alpha.paste(255, bb, m)

    # 2x -> 1x (the anti-aliasing). The albedo was painted over black, so at the silhouette's
    # edge it is already premultiplied by coverage: shading it and rotating it is exact there.
    albedo, shade, form_weight, alpha = (im.reduce(2) for im in (albedo, shade, form_weight, alpha))
    u1 = 0.5 + ((np.arange(size, dtype=np.float32) + 0.5) / size - 0.5) / scale
    form, spec = _form(kind, pen, u1, u1, GLOSS.get(material, 0.0), rng)
    fw = np.asarray(form_weight, np.float32) / 255
    light1 = np.asarray(shade, np.float32) / 255 * (1 + (form - 1) * fw)
    gloss = spec * fw * np.asarray(alpha, np.float32)
    rgb = np.asarray(albedo, np.float32) * light1[..., None] + gloss[..., None]
    premult = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))

    # The pose: a small rotation and shift.
    angle = rng.uniform(-8, 8)
    shift = tuple(float(x) for x in rng.uniform(-0.035, 0.035, 2) * size)
    pose = {"resample": Image.Resampling.BILINEAR, "translate": shift}
    p1 = np.asarray(premult.rotate(angle, **pose), np.float32)
    alpha1 = alpha.rotate(angle, **pose)
    a = np.asarray(alpha1, np.float32)[..., None] / 255

    # Studio light: brighter at the top, a little from one side; plus a fine weave on fabric.
    y = ((np.arange(size, dtype=np.float32) + 0.5) / size)[:, None]
    x = ((np.arange(size, dtype=np.float32) + 0.5) / size)[None, :]
    light = rng.uniform(1.0, 1.1) * (
        1 + rng.uniform(0.12, 0.25) * (0.45 - y) + rng.uniform(-0.08, 0.08) * (0.5 - x)
    )
    weave = WEAVE.get(material, 0.0)
    if weave:
        light = light * (1 + weave * rng.standard_normal((size, size), np.float32))
    lit = p1 * light[..., None]

    # Background: light grey paper, a vertical gradient and a faint vignette.
    top, bottom = rng.uniform(232, 242), rng.uniform(206, 218)
    tint = rng.uniform(-4, 4) * np.array([1.0, 0.2, -1.0], np.float32)
    vignette = 1 - 0.06 * ((x - 0.5) ** 2 + (y - 0.45) ** 2) * 4
    bg = ((top + (bottom - top) * y) * vignette)[..., None] + tint

    # Shadow: a blurred, offset copy of the silhouette plus a soft pool under the product.
    contact = Image.new("L", (size, size), 0)
    contact.paste(
        alpha1.filter(ImageFilter.GaussianBlur(size * 0.025)),
        (round(size * 0.012), round(size * 0.025)),
    )
    bb = alpha1.getbbox() or (0, 0, size, size)
    cxp, half = (bb[0] + bb[2]) / 2 / size, (bb[2] - bb[0]) * 0.5 / size
    pool = np.exp(-(((x - cxp) / half) ** 8)) * np.exp(-(((y - bb[3] / size) / 0.035) ** 2))
    dark = 0.22 * np.asarray(contact, np.float32) / 255 + 0.16 * pool
    bg = bg * (1 - np.minimum(dark, 0.4))[..., None]

    out = bg * (1 - a) + lit + 1.2 * rng.standard_normal((size, size, 3), np.float32)
    return Image.fromarray(np.clip(out + 0.5, 0, 255).astype(np.uint8), "RGB"), a[..., 0]
