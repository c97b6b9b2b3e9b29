"""The demo shop's world: its product kinds, colours, patterns and materials, and its columns.

Every attribute a row can have is defined here once; :mod:`.draw` makes it visible in a photo
and :mod:`.synth` writes it into the catalog.
"""

from __future__ import annotations

from dataclasses import dataclass

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
INK = {"white": "navy", "beige": "brown", "yellow": "navy"}

# How titles name a pattern: (adjective before the kind, noun after "with <ink>").
PATTERN_WORDS = {
    "striped": (("striped",), "stripes"),
    "dotted": (("dotted", "polka-dot"), "dots"),
    "checked": (("checked", "check"), "check"),
}

# Materials that shine (specular strength) and that show a fine weave (noise amplitude).
GLOSS = {
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
WEAVE = {
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
SOLID_ONLY = {"leather", "suede", "steel", "titanium", "aluminium", "glass"}
MATERIAL_PRICE = {
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
PATTERN_PRICE = {"solid": 1.0, "striped": 1.05, "dotted": 1.08, "checked": 1.1}
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
CATEGORY_TO_KIND = {k.category: k.name for k in KINDS.values()}
STEEL: RGB = (188, 190, 196)
GOLD: RGB = (204, 168, 84)
LACE: RGB = (238, 238, 232)
