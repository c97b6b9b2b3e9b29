"""The demo products' shapes: a pen that draws parts in the unit square, and one function per
kind that draws it back to front, with a little per-product variation of proportions."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from searchcore.demo.world import (
    GOLD,
    LACE,
    RGB,
    STEEL,
)

# --------------------------------------------------------------------------- drawing helpers


class Layer:
    """One painted part: a 2x-resolution mask plus how to colour and shade it."""

    def __init__(self, pen: Pen, paint: str | RGB, pattern: bool, ao: bool, tone: float):
        self.pen, self.paint, self.pattern, self.ao, self.tone = pen, paint, pattern, ao, tone
        self.mask = Image.new("L", (pen.px, pen.px), 0)
        self._d = ImageDraw.Draw(self.mask)

    def _box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [*self.pen.at(x0, y0), *self.pen.at(x1, y1)]

    def poly(self, pts: list[tuple[float, float]]) -> Layer:
        self._d.polygon([self.pen.at(x, y) for x, y in pts], fill=255)
        return self

    def ellipse(self, x0: float, y0: float, x1: float, y1: float) -> Layer:
        self._d.ellipse(self._box(x0, y0, x1, y1), fill=255)
        return self

    def rect(self, x0: float, y0: float, x1: float, y1: float, r: float = 0.0) -> Layer:
        self._d.rounded_rectangle(self._box(x0, y0, x1, y1), radius=r * self.pen.k, fill=255)
        return self

    def chord(self, x0: float, y0: float, x1: float, y1: float, a0: float, a1: float) -> Layer:
        self._d.chord(self._box(x0, y0, x1, y1), a0, a1, fill=255)
        return self

    def arc(
        self, x0: float, y0: float, x1: float, y1: float, a0: float, a1: float, w: float
    ) -> Layer:
        self._d.arc(self._box(x0, y0, x1, y1), a0, a1, fill=255, width=self.pen.w(w))
        return self

    def line(self, pts: list[tuple[float, float]], w: float) -> Layer:
        self._d.line(
            [self.pen.at(x, y) for x, y in pts], fill=255, width=self.pen.w(w), joint="curve"
        )
        return self


class Pen:
    """Maps unit-square coordinates (product centred at 0.5, 0.5) to canvas pixels."""

    def __init__(self, px: int, scale: float, main: RGB):
        self.px, self.k, self.main = px, px * scale, main
        self.layers: list[Layer] = []
        self.cyl = (0.5, 0.2)  # axis x and half width used by the "cyl" shading
        self.dome = (0.4, 0.36)  # brightest point of the "soft" shading (light: top left)

    def at(self, x: float, y: float) -> tuple[float, float]:
        return (self.px / 2 + (x - 0.5) * self.k, self.px / 2 + (y - 0.5) * self.k)

    def w(self, width: float) -> int:
        return max(1, round(width * self.k))

    def layer(
        self, paint: str | RGB, pattern: bool = False, ao: bool = True, tone: float = 1.0
    ) -> Layer:
        """``paint``: "main", "trim", "dark" (insides), "seam", or a fixed RGB."""
        lay = Layer(self, paint, pattern, ao, tone)
        self.layers.append(lay)
        return lay


def sym(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Left-half outline (top to bottom) -> closed, mirror-symmetric outline about x = 0.5."""
    return pts + [(1.0 - x, y) for x, y in reversed(pts)]


# ------------------------------------------------------------------------- the product kinds
# Each function draws one kind in the unit square, back to front, with a little per-product
# variation of proportions so that no two products of a kind are the same silhouette.


def _tshirt(p: Pen, rng: np.random.Generator) -> None:
    w, sl, bot = rng.uniform(0.17, 0.2), rng.uniform(0.12, 0.16), rng.uniform(0.78, 0.82)
    p.layer("dark").chord(0.42, 0.17, 0.58, 0.29, 0, 180)  # inside back seen through the neck
    p.layer("main", pattern=True).poly(
        sym(
            [
                (0.425, 0.2),
                (0.5 - w - 0.025, 0.23),
                (0.5 - w - sl, 0.37),
                (0.5 - w - sl + 0.065, 0.45),
                (0.5 - w, 0.39),
                (0.5 - w + 0.01, bot),
            ]
        )
    )
    p.layer("dark").chord(0.425, 0.15, 0.575, 0.29, 0, 180)
    p.layer("main", tone=0.9).arc(0.425, 0.15, 0.575, 0.29, 0, 180, 0.018)  # ribbed collar
    seam = p.layer("seam", ao=False)
    for s in (-1, 1):  # sleeve seams and hems
        seam.line([(0.5 + s * (w + 0.02), 0.235), (0.5 + s * w, 0.39)], 0.005)
        seam.line([(0.5 + s * (w + sl - 0.01), 0.385), (0.5 + s * (w + sl - 0.055), 0.43)], 0.004)
    seam.line([(0.5 - w + 0.015, bot - 0.025), (0.5 + w - 0.015, bot - 0.025)], 0.004)


def _hoodie(p: Pen, rng: np.random.Generator) -> None:
    w, bot = rng.uniform(0.18, 0.21), rng.uniform(0.8, 0.84)
    p.layer("main", pattern=True).ellipse(0.375, 0.11, 0.625, 0.33)  # hood lying behind
    p.layer("main", pattern=True).poly(
        sym(
            [
                (0.42, 0.22),
                (0.5 - w - 0.03, 0.26),
                (0.5 - w - 0.15, 0.7),
                (0.5 - w - 0.07, 0.72),
                (0.5 - w, 0.42),
                (0.5 - w, bot),
            ]
        )
    )
    p.layer("dark").chord(0.425, 0.16, 0.575, 0.32, 0, 180)  # hood opening
    rib = p.layer("main", tone=0.85)
    rib.rect(0.5 - w, bot - 0.05, 0.5 + w, bot, 0.01)  # waistband and cuffs
    for s in (-1, 1):
        rib.poly(
            [
                (0.5 + s * (w + 0.15), 0.7),
                (0.5 + s * (w + 0.07), 0.72),
                (0.5 + s * (w + 0.063), 0.675),
                (0.5 + s * (w + 0.137), 0.655),
            ]
        )
    p.layer("seam", ao=False).poly([(0.39, 0.58), (0.61, 0.58), (0.66, 0.74), (0.34, 0.74)])
    p.layer("main", pattern=True).poly(
        [(0.396, 0.587), (0.604, 0.587), (0.65, 0.733), (0.35, 0.733)]
    )  # kangaroo pocket (seam shows)
    p.layer(LACE, ao=False).line([(0.47, 0.27), (0.465, 0.42)], 0.008).line(
        [(0.53, 0.27), (0.535, 0.42)], 0.008
    )


def _dress(p: Pen, rng: np.random.Generator) -> None:
    hw, waist = rng.uniform(0.25, 0.3), rng.uniform(0.42, 0.46)
    p.layer("dark").poly([(0.43, 0.15), (0.57, 0.15), (0.5, 0.27)])  # inside back, V neck
    hem = [
        (0.5 + hw * t, 0.86 + 0.025 * (1 - t * t) + 0.008 * math.sin(9 * t))
        for t in np.linspace(1, -1, 21)
    ]
    p.layer("main", pattern=True).poly(
        [
            (0.41, 0.12),
            (0.44, 0.12),
            (0.5, 0.26),
            (0.56, 0.12),
            (0.59, 0.12),
            (0.63, 0.27),
            (0.605, waist),
            *hem,
            (0.395, waist),
            (0.37, 0.27),
        ]
    )
    p.layer("seam", ao=False).line([(0.395, waist), (0.605, waist)], 0.006)


def _shoe(p: Pen, dx: float, dy: float, tone: float) -> None:
    def m(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        # shift, and shrink by 10% about the centre: the pair is the widest product
        return [(0.5 + 0.9 * (x - 0.5) + dx, 0.5 + 0.9 * (y - 0.5) + dy) for x, y in pts]

    p.layer("main", pattern=True, tone=tone).poly(
        m(
            [
                (0.12, 0.6),
                (0.125, 0.55),
                (0.15, 0.515),
                (0.2, 0.49),
                (0.3, 0.47),
                (0.38, 0.45),
                (0.46, 0.41),
                (0.53, 0.36),
                (0.57, 0.33),
                (0.61, 0.345),
                (0.7, 0.37),
                (0.78, 0.33),
                (0.83, 0.34),
                (0.86, 0.4),
                (0.875, 0.5),
                (0.875, 0.6),
            ]
        )
    )
    p.layer("dark", tone=tone).poly(
        m([(0.6, 0.35), (0.7, 0.375), (0.78, 0.34), (0.76, 0.385), (0.63, 0.39)])
    )  # ankle opening
    p.layer("trim", tone=tone, ao=False).line(
        m([(0.42, 0.54), (0.6, 0.47), (0.76, 0.44)]), 0.014
    )  # side stripe
    p.layer("trim", tone=tone).poly(
        m(
            [  # sole, with the toe turned up
                (0.1, 0.57),
                (0.2, 0.59),
                (0.89, 0.585),
                (0.895, 0.62),
                (0.88, 0.645),
                (0.22, 0.65),
                (0.15, 0.64),
                (0.115, 0.62),
            ]
        )
    )
    p.layer("seam", ao=False, tone=tone).line(m([(0.2, 0.6), (0.875, 0.598)]), 0.004)
    lace = p.layer(LACE, ao=False, tone=tone)
    for t in (0.0, 0.25, 0.5, 0.75):
        x, y = 0.41 + 0.14 * t, 0.445 - 0.085 * t
        lace.line(m([(x - 0.02, y - 0.025), (x + 0.025, y + 0.02)]), 0.009)


def _sneakers(p: Pen, rng: np.random.Generator) -> None:
    p.dome = (0.45, 0.45)
    _shoe(p, 0.035, -0.07, 0.92)  # the pair's far shoe, in shade
    _shoe(p, -0.02, 0.05, 1.0)


def _cap(p: Pen, rng: np.random.Generator) -> None:
    h, tilt = rng.uniform(0.22, 0.27), math.radians(rng.uniform(4, 12))

    def bill(cx: float, cy: float) -> list[tuple[float, float]]:
        # a flattened ellipse, tilted down towards its tip
        return [
            (
                cx + 0.19 * math.cos(t) * math.cos(tilt) - 0.05 * math.sin(t) * math.sin(tilt),
                cy + 0.19 * math.cos(t) * math.sin(tilt) + 0.05 * math.sin(t) * math.cos(tilt),
            )
            for t in np.linspace(0, 2 * math.pi, 48, endpoint=False)
        ]

    # The bill goes in first, so the crown hides its back half: it sticks out of the front.
    p.layer("trim", tone=0.7).poly(bill(0.69, 0.61))  # its shaded underside
    p.layer("trim").poly(bill(0.69, 0.595))
    p.layer("main", pattern=True).chord(0.16, 0.6 - h, 0.7, 0.6 + h, 180, 360)
    p.layer("main", tone=0.8).rect(0.16, 0.58, 0.7, 0.62, 0.01)  # sweatband edge
    p.layer("seam", ao=False).arc(0.31, 0.6 - h, 0.55, 0.6 + h, 200, 340, 0.005).line(
        [(0.43, 0.6 - h), (0.43, 0.59)], 0.004
    )
    p.layer("main", tone=0.75).ellipse(0.41, 0.585 - h, 0.45, 0.615 - h)  # top button


def _handbag(p: Pen, rng: np.random.Generator) -> None:
    top, hh = rng.uniform(0.38, 0.43), rng.uniform(0.18, 0.24)
    p.layer("trim", tone=0.75).arc(0.37, top - hh, 0.69, top + hh, 180, 360, 0.026)
    p.layer("trim").arc(0.31, top - hh, 0.63, top + hh, 180, 360, 0.028)
    p.layer("main", pattern=True).poly(
        [(0.27, top), (0.73, top), (0.8, 0.75), (0.77, 0.8), (0.23, 0.8), (0.2, 0.75)]
    )
    p.layer("main", pattern=True, tone=0.92).poly(
        [(0.27, top), (0.73, top), (0.75, top + 0.13), (0.5, top + 0.19), (0.25, top + 0.13)]
    )
    gold = p.layer(GOLD)
    gold.rect(0.47, top + 0.15, 0.53, top + 0.2, 0.01)
    gold.ellipse(0.305, top - 0.02, 0.335, top + 0.01).ellipse(0.605, top - 0.02, 0.635, top + 0.01)


def _backpack(p: Pen, rng: np.random.Generator) -> None:
    w = rng.uniform(0.2, 0.23)
    straps = p.layer("trim", tone=0.85)
    straps.rect(0.5 - w - 0.045, 0.3, 0.5 - w + 0.03, 0.76, 0.03)
    straps.rect(0.5 + w - 0.03, 0.3, 0.5 + w + 0.045, 0.76, 0.03)
    p.layer("trim").arc(0.44, 0.11, 0.56, 0.27, 180, 360, 0.02)  # top grab handle
    p.layer("main", pattern=True).rect(0.5 - w, 0.18, 0.5 + w, 0.84, 0.12)
    p.layer("seam", ao=False).arc(0.5 - w + 0.035, 0.21, 0.5 + w - 0.035, 0.62, 195, 345, 0.006)
    p.layer("trim").rect(0.5 - w + 0.06, 0.56, 0.5 + w - 0.06, 0.8, 0.05)  # front pocket
    p.layer("dark", ao=False).line([(0.5 - w + 0.09, 0.605), (0.5 + w - 0.09, 0.605)], 0.007)
    p.layer(STEEL, ao=False).rect(0.5 + w - 0.13, 0.6, 0.5 + w - 0.105, 0.65, 0.005)


def _watch(p: Pen, rng: np.random.Generator) -> None:
    # A big dial (the main colour) with a thin case: the dial must out-area strap and case.
    sw = rng.uniform(0.11, 0.13)
    strap = p.layer("trim")
    strap.rect(0.5 - sw / 2, 0.13, 0.5 + sw / 2, 0.34, 0.02)
    strap.rect(0.5 - sw / 2, 0.66, 0.5 + sw / 2, 0.87, 0.02)
    holes = p.layer("dark", ao=False)
    for y in (0.76, 0.8):
        holes.ellipse(0.493, y - 0.007, 0.507, y + 0.007)
    p.layer(STEEL).ellipse(0.28, 0.28, 0.72, 0.72).rect(0.71, 0.475, 0.75, 0.525, 0.008)
    p.layer("main").ellipse(0.295, 0.295, 0.705, 0.705)  # the dial
    light_dial = sum(p.main) > 330
    marks = p.layer((30, 30, 34) if light_dial else (235, 235, 230), ao=False)
    for h in range(12):
        a, r0 = h * math.pi / 6, 0.165 if h % 3 else 0.15
        marks.line(
            [
                (0.5 + r0 * math.cos(a), 0.5 + r0 * math.sin(a)),
                (0.5 + 0.185 * math.cos(a), 0.5 + 0.185 * math.sin(a)),
            ],
            0.007,
        )
    ah, am = rng.uniform(0, 2 * math.pi), rng.uniform(0, 2 * math.pi)
    marks.line([(0.5, 0.5), (0.5 + 0.1 * math.cos(ah), 0.5 + 0.1 * math.sin(ah))], 0.014)
    marks.line([(0.5, 0.5), (0.5 + 0.15 * math.cos(am), 0.5 + 0.15 * math.sin(am))], 0.009)
    marks.ellipse(0.485, 0.485, 0.515, 0.515)


def _mug(p: Pen, rng: np.random.Generator) -> None:
    w, top = rng.uniform(0.19, 0.22), rng.uniform(0.27, 0.31)
    cx = 0.45
    p.cyl = (cx, w)
    p.layer("trim").arc(cx + w - 0.1, 0.38, cx + w + 0.14, 0.7, 0, 360, 0.045)  # handle
    body = p.layer("main", pattern=True)
    body.rect(cx - w, top + 0.03, cx + w, 0.8, 0.02).ellipse(cx - w, 0.76, cx + w, 0.83)
    body.ellipse(cx - w, top, cx + w, top + 0.07)
    p.layer("dark").ellipse(cx - w + 0.018, top + 0.012, cx + w - 0.018, top + 0.06)


def _bottle(p: Pen, rng: np.random.Generator) -> None:
    w = rng.uniform(0.12, 0.14)
    p.cyl = (0.5, w)
    body = p.layer("main", pattern=True)
    body.rect(0.5 - w, 0.33, 0.5 + w, 0.86, 0.05)
    body.poly([(0.5 - w, 0.39), (0.435, 0.26), (0.565, 0.26), (0.5 + w, 0.39)])
    body.rect(0.44, 0.21, 0.56, 0.27)
    p.layer("trim").rect(0.425, 0.135, 0.575, 0.23, 0.02)
    p.layer("trim").arc(0.465, 0.1, 0.535, 0.17, 180, 360, 0.015)  # carry loop
    p.layer("seam", ao=False).line([(0.425, 0.165), (0.575, 0.165)], 0.004)


def _vase(p: Pen, rng: np.random.Generator) -> None:
    rn, rb, rf = rng.uniform(0.06, 0.09), rng.uniform(0.16, 0.22), rng.uniform(0.08, 0.12)
    tb, top, bot = rng.uniform(0.45, 0.7), 0.14, 0.86
    p.cyl = (0.5, rb)
    left = []
    for t in np.linspace(0.0, 1.0, 41):
        if t < tb:
            r = rn + (rb - rn) * math.sin(0.5 * math.pi * t / tb) ** 2
        else:
            r = rb + (rf - rb) * ((t - tb) / (1 - tb)) ** 2
        left.append((0.5 - r - (0.015 if t < 0.03 else 0.0), top + t * (bot - top)))
    p.layer("main", pattern=True).poly(sym(left))
    p.layer("dark").ellipse(0.5 - rn, top - 0.012, 0.5 + rn, top + 0.016)


def _lamp(p: Pen, rng: np.random.Generator) -> None:
    tw, bw = rng.uniform(0.11, 0.14), rng.uniform(0.22, 0.26)
    p.cyl = (0.5, bw)
    trim = p.layer("trim")
    trim.rect(0.485, 0.4, 0.515, 0.79).ellipse(0.35, 0.76, 0.65, 0.84)
    p.layer("trim", tone=0.85).rect(0.47, 0.6, 0.53, 0.64, 0.01)  # switch collar
    glow = p.layer((255, 236, 190), ao=False)
    glow.ellipse(0.5 - bw + 0.03, 0.415, 0.5 + bw - 0.03, 0.47)  # lit inside of the shade
    shade = p.layer("main", pattern=True)
    shade.poly([(0.5 - tw, 0.16), (0.5 + tw, 0.16), (0.5 + bw, 0.44), (0.5 - bw, 0.44)])
    shade.ellipse(0.5 - bw, 0.42, 0.5 + bw, 0.46)


DRAW: dict[str, Callable[[Pen, np.random.Generator], None]] = {
    "t-shirt": _tshirt,
    "hoodie": _hoodie,
    "dress": _dress,
    "sneakers": _sneakers,
    "cap": _cap,
    "handbag": _handbag,
    "backpack": _backpack,
    "watch": _watch,
    "mug": _mug,
    "bottle": _bottle,
    "vase": _vase,
    "lamp": _lamp,
}
