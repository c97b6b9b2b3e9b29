"""The synthetic demo shop: deterministic, complete, and its pictures show what its rows say."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from searchcore.demo import synth
from searchcore.demo.synth import (
    COLOURS,
    COLUMNS,
    KINDS,
    PATTERNS,
    generate_catalog,
    render_product,
)

SIZE = 128  # the smallest supported size keeps the file fast; nothing here depends on it
CATEGORY_TO_KIND = {k.category: k for k in KINDS.values()}
# How a title names each pattern ("striped"/"stripes", "dotted"/"polka-dot"/"dots", "check...").
PATTERN_STEMS = {"striped": "stripe", "dotted": "dot", "checked": "check"}


def read(csv: Path) -> pd.DataFrame:
    return pd.read_csv(csv, dtype=str, keep_default_na=False)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 300-product shop shared by the read-only tests below."""
    return generate_catalog(tmp_path_factory.mktemp("shop"), n=300, seed=3, size=SIZE)


def test_same_seed_gives_identical_files_and_another_seed_another_shop(tmp_path: Path) -> None:
    a = generate_catalog(tmp_path / "a", n=40, seed=7, size=SIZE)
    b = generate_catalog(tmp_path / "b", n=40, seed=7, size=SIZE)
    assert a == tmp_path / "a" / "products.csv"
    assert a.read_bytes() == b.read_bytes()
    names = sorted(p.name for p in (tmp_path / "a" / "images").iterdir())
    assert len(names) == 40
    assert names == sorted(p.name for p in (tmp_path / "b" / "images").iterdir())
    for name in names:
        assert (tmp_path / "a" / "images" / name).read_bytes() == (
            tmp_path / "b" / "images" / name
        ).read_bytes(), name

    c = generate_catalog(tmp_path / "c", n=40, seed=8, size=SIZE)
    assert c.read_bytes() != a.read_bytes()
    first, other = read(a), read(c)
    assert (first["title"] != other["title"]).mean() > 0.8  # a different shop, not a tweak
    assert set(other["colour"]) <= set(COLOURS)  # ...with the same vocabulary
    assert set(other["category"]) <= set(CATEGORY_TO_KIND)


def test_a_process_pool_draws_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    serial = generate_catalog(tmp_path / "serial", n=24, seed=11, size=SIZE)
    monkeypatch.setattr(synth, "_workers", lambda n: 2)  # big shops are drawn by a pool
    pooled = generate_catalog(tmp_path / "pooled", n=24, seed=11, size=SIZE)
    assert pooled.read_bytes() == serial.read_bytes()
    for rel in read(serial)["image"]:
        assert (serial.parent / rel).read_bytes() == (pooled.parent / rel).read_bytes(), rel


def test_csv_has_the_exact_columns_and_round_trips(shop: Path) -> None:
    df = read(shop)
    assert (
        list(df.columns)
        == list(COLUMNS)
        == [
            "id",
            "title",
            "image",
            "category",
            "colour",
            "pattern",
            "trim_colour",
            "material",
            "price",
        ]
    )
    assert len(df) == 300
    # Reading back with dtype=str and writing again gives the very same bytes.
    assert df.to_csv(index=False, lineterminator="\n") == shop.read_text()
    assert df["id"].is_unique
    assert df["id"].str.fullmatch(r"P\d{5}").all()
    assert (df["image"] == "images/" + df["id"] + ".jpg").all()


def test_every_image_is_an_rgb_jpeg_of_the_requested_size(shop: Path) -> None:
    for rel in read(shop)["image"]:
        with Image.open(shop.parent / rel) as im:
            assert (im.format, im.mode, im.size) == ("JPEG", "RGB", (SIZE, SIZE)), rel


def test_rows_use_the_vocabulary_and_prices_are_positive(shop: Path) -> None:
    for row in read(shop).itertuples():
        kind = CATEGORY_TO_KIND[row.category]
        assert row.colour in COLOURS
        assert row.pattern in kind.patterns
        assert row.material in kind.materials
        if kind.trim:
            assert row.trim_colour in COLOURS
        else:
            assert row.trim_colour == ""
        assert re.fullmatch(r"\d+\.\d\d", row.price), row.price
        assert float(row.price) > 0


def test_titles_name_colour_pattern_kind_and_trim(shop: Path) -> None:
    for row in read(shop).itertuples():
        kind, title = CATEGORY_TO_KIND[row.category], row.title.lower()
        # The "kind word" is Kind.name, the noun every title of that kind contains.
        assert re.search(rf"\b{re.escape(kind.name)}\b", title), row.title
        others = [k.name for k in KINDS.values() if k.name != kind.name]
        assert not any(re.search(rf"\b{re.escape(o)}\b", title) for o in others), row.title
        assert row.colour in words(title), row.title
        if row.pattern != "solid":
            assert PATTERN_STEMS[row.pattern] in title, row.title
        if row.trim_colour and row.trim_colour != row.colour:
            assert row.trim_colour in words(title), row.title
            assert kind.trim in title, row.title


def test_300_products_cover_the_vocabulary(shop: Path) -> None:
    df = read(shop)
    assert set(df["category"]) == {k.category for k in KINDS.values()}
    assert len(KINDS) >= 10
    assert len(COLOURS) >= 12
    assert df["colour"].nunique() >= 10
    assert set(df["pattern"]) == set(PATTERNS)
    with_trim = df[df["category"].isin(["sneakers", "mugs", "caps"])]
    assert len(with_trim) > 0
    assert (with_trim["trim_colour"] != "").all()


def product_pixels(img: Image.Image) -> np.ndarray:
    """RGB of the pixels that differ from the background, shrunk by 2 px (which drops the
    anti-aliased rim and most of the soft shadow). The background is a vertical gradient, so
    each row is compared with its own edge pixels (products never reach the side edges)."""
    a = np.asarray(img, np.float32)
    ref = np.median(np.concatenate([a[:, :4], a[:, -4:]], axis=1), axis=1)
    mask = np.linalg.norm(a - ref[:, None, :], axis=2) > 40
    for _ in range(2):
        mask &= np.roll(mask, 1, 0) & np.roll(mask, -1, 0)
        mask &= np.roll(mask, 1, 1) & np.roll(mask, -1, 1)
    return a[mask]


def solid(kind: str, colour: str, seed: int) -> Image.Image:
    spec = KINDS[kind]
    # A contrasting second colour where the kind has one: the hardest case for dominance.
    trims = [t for t in spec.trim_colours if t not in ("same", colour)]
    attrs = {
        "kind": kind,
        "colour": colour,
        "pattern": "solid",
        "trim_colour": trims[seed % len(trims)] if spec.trim else "",
        "material": spec.materials[seed % len(spec.materials)],
    }
    return render_product(attrs, SIZE, np.random.default_rng(seed))


# White is left out: on a light studio background no fixed threshold separates a white
# product from the background, so "pixels differing from the background" would miss it.
@pytest.mark.parametrize("kind", list(KINDS))
def test_main_colour_dominates_the_product(kind: str) -> None:
    names = list(COLOURS)
    table = np.array([COLOURS[n] for n in names], np.float32)
    for i, colour in enumerate(n for n in names if n != "white"):
        px = product_pixels(solid(kind, colour, seed=i))
        assert len(px) > 0.05 * SIZE * SIZE, (kind, colour)
        median = np.median(px, axis=0)
        nearest = names[int(np.argmin(np.linalg.norm(table - median, axis=1)))]
        assert nearest == colour, (kind, colour, median.round().tolist())


@pytest.mark.parametrize("kind", ["t-shirt", "mug", "handbag", "watch"])
def test_products_are_shaded_and_the_background_has_a_gradient(kind: str) -> None:
    img = solid(kind, "red", seed=1)
    px = product_pixels(img)
    luminance = px @ np.array([0.299, 0.587, 0.114], np.float32)
    assert luminance.std() > 8.0  # shading, not one flat fill (measured: 14 and more)
    a = np.asarray(img, np.float32).mean(axis=2)
    edges = np.concatenate([a[:, :4], a[:, -4:]], axis=1).mean(axis=1)  # background per row
    assert edges[:8].mean() - edges[-8:].mean() > 10.0  # not uniform: lighter at the top


def test_render_product_is_deterministic_and_accepts_a_category() -> None:
    attrs = {"kind": "mug", "colour": "yellow", "pattern": "dotted", "trim_colour": "white"}
    one = render_product(attrs, 160, np.random.default_rng(5))
    two = render_product(attrs, 160, np.random.default_rng(5))
    assert (one.mode, one.size) == ("RGB", (160, 160))
    assert one.tobytes() == two.tobytes()
    by_category = render_product(
        {**attrs, "kind": None, "category": "mugs"}, 160, np.random.default_rng(5)
    )
    assert by_category.tobytes() == one.tobytes()
    with pytest.raises(ValueError, match="unknown product kind"):
        render_product({"kind": "spaceship", "colour": "red"}, 160, np.random.default_rng(0))


def test_generate_catalog_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must be"):
        generate_catalog(tmp_path, n=0)
    with pytest.raises(ValueError, match="size must be"):
        generate_catalog(tmp_path, n=5, size=16)
    assert not (tmp_path / "products.csv").exists()
