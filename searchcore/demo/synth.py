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
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageFilter

from searchcore.config import usable_cpus
from searchcore.console import progress_bar
from searchcore.fsutil import atomic_write

RGB = tuple[int, int, int]

# Named colours with fixed RGB values. They are kept far apart (also after the +-15% that the
# lighting applies), so the median colour of a product is nearest to its own name.
COLOURS: dict[str, RGB] = {
    "red": (196, 30, 40),
    "orange": (236, 118, 30),
    "yellow": (240, 198, 40),
    "green": (40, 135, 65),
    "teal": (20, 128, 134),
    "blue": (40, 95, 200),
    "navy": (28, 38, 88),
    "purple": (115, 60, 160),
    "pink": (236, 140, 178),
    "brown": (112, 70, 40),
    "beige": (216, 196, 158),
    "grey": (116, 118, 122),
    "black": (28, 28, 30),
    "white": (242, 242, 238),
}

PATTERNS: tuple[str, ...] = ("solid", "striped", "dotted", "checked")

# Stripes, dots and checks are drawn in a contrasting "ink": white, except on light colours.
_INK = {"white": "navy", "beige": "brown", "yellow": "navy"}

# How titles name a pattern: (adjective before the kind, noun after "with <ink>").
_PATTERN_WORDS = {
    "striped": (("striped",), "stripes"),
    "dotted": (("dotted", "polka-dot"), "dots"),
    "checked": (("checked", "check"), "check"),
}

# Materials that shine (specular strength) and that show a fine weave (noise amplitude).
_GLOSS = {
    "leather": 0.16,
    "ceramic": 0.32,
    "porcelain": 0.38,
    "stoneware": 0.14,
    "glass": 0.45,
    "steel": 0.42,
    "aluminium": 0.32,
    "titanium": 0.3,
    "plastic": 0.22,
}
_WEAVE = {
    "cotton": 0.014,
    "jersey": 0.012,
    "linen": 0.022,
    "silk": 0.006,
    "fleece": 0.018,
    "wool": 0.022,
    "canvas": 0.022,
    "nylon": 0.008,
    "mesh": 0.03,
    "suede": 0.018,
    "paper": 0.012,
}
# Leather, metal and glass things come in one colour here (no striped leather handbags).
_SOLID_ONLY = {"leather", "suede", "steel", "titanium", "aluminium", "glass"}
_MATERIAL_PRICE = {
    "leather": 1.6,
    "suede": 1.45,
    "silk": 1.8,
    "wool": 1.3,
    "linen": 1.2,
    "fleece": 1.1,
    "titanium": 1.7,
    "steel": 1.2,
    "porcelain": 1.3,
    "glass": 1.15,
    "stoneware": 1.1,
    "mesh": 1.05,
    "plastic": 0.8,
    "paper": 0.9,
}
_PATTERN_PRICE = {"solid": 1.0, "striped": 1.05, "dotted": 1.08, "checked": 1.1}
BRANDS: tuple[str, ...] = (
    "Nordwind",
    "Kestrel",
    "Lumen",
    "Marlow",
    "Oakridge",
    "Solvei",
    "Tidewater",
    "Brisa",
)


@dataclass(frozen=True)
class Kind:
    """One product kind. ``name`` is the noun every title of this kind contains."""

    name: str
    category: str  # plural, the catalog's filter value
    materials: tuple[str, ...]
    patterns: tuple[str, ...]
    base_price: float
    trim: str = ""  # noun for the second-colour part ("soles"); "" when the kind has none
    trim_article: str = ""  # "a " when ``trim`` is singular
    trim_colours: tuple[str, ...] = ()  # "same" means the main colour
    form: str = "soft"  # shading: "cloth" folds, "cyl" (turned objects), "soft" dome


_ALL = PATTERNS
KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind("t-shirt", "t-shirts", ("cotton", "jersey", "linen"), _ALL, 19.0, form="cloth"),
        Kind(
            "hoodie",
            "hoodies",
            ("cotton", "fleece"),
            ("solid", "striped", "checked"),
            49.0,
            form="cloth",
        ),
        Kind("dress", "dresses", ("cotton", "linen", "silk"), _ALL, 59.0, form="cloth"),
        Kind(
            "sneakers",
            "sneakers",
            ("canvas", "leather", "suede", "mesh"),
            ("solid", "checked"),
            74.0,
            "soles",
            "",
            ("white", "white", "white", "black", "beige", "brown"),
        ),
        Kind(
            "cap",
            "caps",
            ("cotton", "wool", "canvas"),
            ("solid", "striped", "checked"),
            22.0,
            "brim",
            "a ",
            ("same", "same", "black", "white", "navy"),
        ),
        Kind(
            "handbag",
            "handbags",
            ("leather", "suede", "canvas"),
            ("solid", "striped", "checked"),
            95.0,
            "handles",
            "",
            ("same", "brown", "black", "beige"),
        ),
        Kind(
            "backpack",
            "backpacks",
            ("canvas", "nylon", "leather"),
            ("solid", "checked"),
            64.0,
            "straps",
            "",
            ("same", "black", "grey", "brown"),
        ),
        Kind(
            "watch",
            "watches",
            ("steel", "titanium", "aluminium"),
            ("solid",),
            139.0,
            "strap",
            "a ",
            ("black", "brown", "beige", "grey", "navy"),
        ),
        Kind(
            "mug",
            "mugs",
            ("ceramic", "porcelain", "stoneware"),
            _ALL,
            13.0,
            "handle",
            "a ",
            ("same", "same", "white", "black"),
            form="cyl",
        ),
        Kind(
            "bottle",
            "bottles",
            ("steel", "aluminium", "plastic"),
            ("solid", "striped", "dotted"),
            24.0,
            "lid",
            "a ",
            ("black", "white", "grey", "same"),
            form="cyl",
        ),
        Kind(
            "vase",
            "vases",
            ("ceramic", "glass", "stoneware"),
            ("solid", "striped", "dotted"),
            36.0,
            form="cyl",
        ),
        Kind(
            "lamp",
            "lamps",
            ("linen", "paper", "cotton"),
            _ALL,
            52.0,
            "base",
            "a ",
            ("white", "black", "brown", "grey", "beige"),
            form="cyl",
        ),
    )
}

COLUMNS = (
    "id",
    "title",
    "image",
    "category",
    "colour",
    "pattern",
    "trim_colour",
    "material",
    "price",
)
_CATEGORY_TO_KIND = {k.category: k.name for k in KINDS.values()}
_STEEL: RGB = (188, 190, 196)
_GOLD: RGB = (204, 168, 84)
_LACE: RGB = (238, 238, 232)


# --------------------------------------------------------------------------- drawing helpers


class _Layer:
    """One painted part: a 2x-resolution mask plus how to colour and shade it."""

    def __init__(self, pen: _Pen, paint: str | RGB, pattern: bool, ao: bool, tone: float):
        self.pen, self.paint, self.pattern, self.ao, self.tone = pen, paint, pattern, ao, tone
        self.mask = Image.new("L", (pen.px, pen.px), 0)
        self._d = ImageDraw.Draw(self.mask)

    def _box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        return [*self.pen.at(x0, y0), *self.pen.at(x1, y1)]

    def poly(self, pts: list[tuple[float, float]]) -> _Layer:
        self._d.polygon([self.pen.at(x, y) for x, y in pts], fill=255)
        return self

    def ellipse(self, x0: float, y0: float, x1: float, y1: float) -> _Layer:
        self._d.ellipse(self._box(x0, y0, x1, y1), fill=255)
        return self

    def rect(self, x0: float, y0: float, x1: float, y1: float, r: float = 0.0) -> _Layer:
        self._d.rounded_rectangle(self._box(x0, y0, x1, y1), radius=r * self.pen.k, fill=255)
        return self

    def chord(self, x0: float, y0: float, x1: float, y1: float, a0: float, a1: float) -> _Layer:
        self._d.chord(self._box(x0, y0, x1, y1), a0, a1, fill=255)
        return self

    def arc(
        self, x0: float, y0: float, x1: float, y1: float, a0: float, a1: float, w: float
    ) -> _Layer:
        self._d.arc(self._box(x0, y0, x1, y1), a0, a1, fill=255, width=self.pen.w(w))
        return self

    def line(self, pts: list[tuple[float, float]], w: float) -> _Layer:
        self._d.line(
            [self.pen.at(x, y) for x, y in pts], fill=255, width=self.pen.w(w), joint="curve"
        )
        return self


class _Pen:
    """Maps unit-square coordinates (product centred at 0.5, 0.5) to canvas pixels."""

    def __init__(self, px: int, scale: float, main: RGB):
        self.px, self.k, self.main = px, px * scale, main
        self.layers: list[_Layer] = []
        self.cyl = (0.5, 0.2)  # axis x and half width used by the "cyl" shading
        self.dome = (0.4, 0.36)  # brightest point of the "soft" shading (light: top left)

    def at(self, x: float, y: float) -> tuple[float, float]:
        return (self.px / 2 + (x - 0.5) * self.k, self.px / 2 + (y - 0.5) * self.k)

    def w(self, width: float) -> int:
        return max(1, round(width * self.k))

    def layer(
        self, paint: str | RGB, pattern: bool = False, ao: bool = True, tone: float = 1.0
    ) -> _Layer:
        """``paint``: "main", "trim", "dark" (insides), "seam", or a fixed RGB."""
        lay = _Layer(self, paint, pattern, ao, tone)
        self.layers.append(lay)
        return lay


def _sym(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Left-half outline (top to bottom) -> closed, mirror-symmetric outline about x = 0.5."""
    return pts + [(1.0 - x, y) for x, y in reversed(pts)]


# ------------------------------------------------------------------------- the product kinds
# Each function draws one kind in the unit square, back to front, with a little per-product
# variation of proportions so that no two products of a kind are the same silhouette.


def _tshirt(p: _Pen, rng: np.random.Generator) -> None:
    w, sl, bot = rng.uniform(0.17, 0.2), rng.uniform(0.12, 0.16), rng.uniform(0.78, 0.82)
    p.layer("dark").chord(0.42, 0.17, 0.58, 0.29, 0, 180)  # inside back seen through the neck
    p.layer("main", pattern=True).poly(
        _sym(
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


def _hoodie(p: _Pen, rng: np.random.Generator) -> None:
    w, bot = rng.uniform(0.18, 0.21), rng.uniform(0.8, 0.84)
    p.layer("main", pattern=True).ellipse(0.375, 0.11, 0.625, 0.33)  # hood lying behind
    p.layer("main", pattern=True).poly(
        _sym(
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
    p.layer(_LACE, ao=False).line([(0.47, 0.27), (0.465, 0.42)], 0.008).line(
        [(0.53, 0.27), (0.535, 0.42)], 0.008
    )


def _dress(p: _Pen, rng: np.random.Generator) -> None:
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


def _shoe(p: _Pen, dx: float, dy: float, tone: float) -> None:
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
    lace = p.layer(_LACE, ao=False, tone=tone)
    for t in (0.0, 0.25, 0.5, 0.75):
        x, y = 0.41 + 0.14 * t, 0.445 - 0.085 * t
        lace.line(m([(x - 0.02, y - 0.025), (x + 0.025, y + 0.02)]), 0.009)


def _sneakers(p: _Pen, rng: np.random.Generator) -> None:
    p.dome = (0.45, 0.45)
    _shoe(p, 0.035, -0.07, 0.92)  # the pair's far shoe, in shade
    _shoe(p, -0.02, 0.05, 1.0)


def _cap(p: _Pen, rng: np.random.Generator) -> None:
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


def _handbag(p: _Pen, rng: np.random.Generator) -> None:
    top, hh = rng.uniform(0.38, 0.43), rng.uniform(0.18, 0.24)
    p.layer("trim", tone=0.75).arc(0.37, top - hh, 0.69, top + hh, 180, 360, 0.026)
    p.layer("trim").arc(0.31, top - hh, 0.63, top + hh, 180, 360, 0.028)
    p.layer("main", pattern=True).poly(
        [(0.27, top), (0.73, top), (0.8, 0.75), (0.77, 0.8), (0.23, 0.8), (0.2, 0.75)]
    )
    p.layer("main", pattern=True, tone=0.92).poly(
        [(0.27, top), (0.73, top), (0.75, top + 0.13), (0.5, top + 0.19), (0.25, top + 0.13)]
    )
    gold = p.layer(_GOLD)
    gold.rect(0.47, top + 0.15, 0.53, top + 0.2, 0.01)
    gold.ellipse(0.305, top - 0.02, 0.335, top + 0.01).ellipse(0.605, top - 0.02, 0.635, top + 0.01)


def _backpack(p: _Pen, rng: np.random.Generator) -> None:
    w = rng.uniform(0.2, 0.23)
    straps = p.layer("trim", tone=0.85)
    straps.rect(0.5 - w - 0.045, 0.3, 0.5 - w + 0.03, 0.76, 0.03)
    straps.rect(0.5 + w - 0.03, 0.3, 0.5 + w + 0.045, 0.76, 0.03)
    p.layer("trim").arc(0.44, 0.11, 0.56, 0.27, 180, 360, 0.02)  # top grab handle
    p.layer("main", pattern=True).rect(0.5 - w, 0.18, 0.5 + w, 0.84, 0.12)
    p.layer("seam", ao=False).arc(0.5 - w + 0.035, 0.21, 0.5 + w - 0.035, 0.62, 195, 345, 0.006)
    p.layer("trim").rect(0.5 - w + 0.06, 0.56, 0.5 + w - 0.06, 0.8, 0.05)  # front pocket
    p.layer("dark", ao=False).line([(0.5 - w + 0.09, 0.605), (0.5 + w - 0.09, 0.605)], 0.007)
    p.layer(_STEEL, ao=False).rect(0.5 + w - 0.13, 0.6, 0.5 + w - 0.105, 0.65, 0.005)


def _watch(p: _Pen, rng: np.random.Generator) -> None:
    # A big dial (the main colour) with a thin case: the dial must out-area strap and case.
    sw = rng.uniform(0.11, 0.13)
    strap = p.layer("trim")
    strap.rect(0.5 - sw / 2, 0.13, 0.5 + sw / 2, 0.34, 0.02)
    strap.rect(0.5 - sw / 2, 0.66, 0.5 + sw / 2, 0.87, 0.02)
    holes = p.layer("dark", ao=False)
    for y in (0.76, 0.8):
        holes.ellipse(0.493, y - 0.007, 0.507, y + 0.007)
    p.layer(_STEEL).ellipse(0.28, 0.28, 0.72, 0.72).rect(0.71, 0.475, 0.75, 0.525, 0.008)
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


def _mug(p: _Pen, rng: np.random.Generator) -> None:
    w, top = rng.uniform(0.19, 0.22), rng.uniform(0.27, 0.31)
    cx = 0.45
    p.cyl = (cx, w)
    p.layer("trim").arc(cx + w - 0.1, 0.38, cx + w + 0.14, 0.7, 0, 360, 0.045)  # handle
    body = p.layer("main", pattern=True)
    body.rect(cx - w, top + 0.03, cx + w, 0.8, 0.02).ellipse(cx - w, 0.76, cx + w, 0.83)
    body.ellipse(cx - w, top, cx + w, top + 0.07)
    p.layer("dark").ellipse(cx - w + 0.018, top + 0.012, cx + w - 0.018, top + 0.06)


def _bottle(p: _Pen, rng: np.random.Generator) -> None:
    w = rng.uniform(0.12, 0.14)
    p.cyl = (0.5, w)
    body = p.layer("main", pattern=True)
    body.rect(0.5 - w, 0.33, 0.5 + w, 0.86, 0.05)
    body.poly([(0.5 - w, 0.39), (0.435, 0.26), (0.565, 0.26), (0.5 + w, 0.39)])
    body.rect(0.44, 0.21, 0.56, 0.27)
    p.layer("trim").rect(0.425, 0.135, 0.575, 0.23, 0.02)
    p.layer("trim").arc(0.465, 0.1, 0.535, 0.17, 180, 360, 0.015)  # carry loop
    p.layer("seam", ao=False).line([(0.425, 0.165), (0.575, 0.165)], 0.004)


def _vase(p: _Pen, rng: np.random.Generator) -> None:
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
    p.layer("main", pattern=True).poly(_sym(left))
    p.layer("dark").ellipse(0.5 - rn, top - 0.012, 0.5 + rn, top + 0.016)


def _lamp(p: _Pen, rng: np.random.Generator) -> None:
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


_DRAW: dict[str, Callable[[_Pen, np.random.Generator], None]] = {
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
    kind: Kind, pen: _Pen, u: np.ndarray, v: np.ndarray, gloss: float, rng: np.random.Generator
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
    name = attrs.get("kind") or _CATEGORY_TO_KIND.get(str(attrs.get("category", "")), "")
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
    pen = _Pen(px, scale, main)
    _DRAW[kind.name](pen, rng)

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
            Image.new("RGB", (px, px), COLOURS[_INK.get(attrs["colour"], "white")]),
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
    form, spec = _form(kind, pen, u1, u1, _GLOSS.get(material, 0.0), rng)
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
    weave = _WEAVE.get(material, 0.0)
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
        adjs, noun = _PATTERN_WORDS[pattern]
        if rng.uniform() < 0.35:
            extras.append(f"{_INK.get(colour, 'white')} {noun}")
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
    if material not in _SOLID_ONLY and len(kind.patterns) > 1 and rng.uniform() < 0.45:
        others = kind.patterns[1:]
        pattern = others[int(rng.integers(len(others)))]
    trim = ""
    if kind.trim:
        trim = kind.trim_colours[int(rng.integers(len(kind.trim_colours)))]
        trim = colour if trim == "same" else trim
    title, branded = _title(kind, colour, pattern, trim, material, rng)
    price = (
        kind.base_price
        * _MATERIAL_PRICE.get(material, 1.0)
        * _PATTERN_PRICE[pattern]
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
