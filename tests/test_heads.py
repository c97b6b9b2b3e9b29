""" "We think this is...", why each match, attribute filters and searching part of a photo.

The colour catalog and its hand-checkable embedder (conftest): heads fitted on its photos must
read the colour back; filters, reasons and crops are checked against the catalog itself.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import COLOURS
from PIL import Image

from searchcore.build import build_index
from searchcore.catalog import load_catalog
from searchcore.embed.heads import (
    HEADS_META,
    HEADS_WEIGHTS,
    AttributeHeads,
    Head,
    expected_calibration_error,
    fit_heads,
    heads_for,
)
from searchcore.engine import Filters, SearchEngine
from searchcore.errors import ConfigError, ImageError, WeightsError
from searchcore.facets import facet_columns, filter_mask, filterable_columns, normalise
from searchcore.query import Query, answer
from searchcore.stores.hnsw import HnswIndex


@pytest.fixture
def shop(colour_catalog: Path, fake_embedder, tmp_path: Path):
    catalog = load_catalog(colour_catalog)
    build_index(catalog, fake_embedder, tmp_path / "index", batch_size=8)
    index, _ = HnswIndex.load(tmp_path / "index")
    photos = [Image.open(catalog.image_path(r)) for r in range(len(catalog))]
    vectors = fake_embedder.embed_images(photos)
    heads = fit_heads(vectors, catalog.df, ["colour", "category"], fake_embedder.fingerprint)
    return catalog, index, heads, vectors


def _engine(shop, embedder, heads=True) -> SearchEngine:
    catalog, index, fitted, _ = shop
    return SearchEngine(catalog, embedder, None, index, heads=fitted if heads else None)


def _photo(rgb: tuple[int, int, int], size: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format="PNG")
    return buf.getvalue()


# ---------------------------------------------------------------------------------- facets


def test_facets_are_the_categorical_columns(colour_catalog: Path) -> None:
    df = load_catalog(colour_catalog).df
    assert facet_columns(df) == ["category", "colour"]  # not id, title, image, price
    assert filterable_columns(df) == ["category", "colour"]
    assert normalise("  Navy   BLUE ") == "navy blue"
    with pytest.raises(ConfigError, match="not in the catalog"):
        facet_columns(df, ["gender"])


def test_attribute_filters_any_value_of_a_column_every_column(colour_catalog: Path) -> None:
    catalog = load_catalog(colour_catalog)
    df = catalog.df
    one = filter_mask(Filters(attributes=(("colour", ("RED",)),)), catalog)
    assert one.sum() == 4 and set(df["colour"][one]) == {"red"}  # case does not matter
    either = filter_mask(Filters(attributes=(("colour", ("red", "blue")),)), catalog)
    assert set(df["colour"][either]) == {"red", "blue"} and either.sum() == 8
    # odd rows are mugs: green ones (rows 1, 7, 13, 19) are, red ones (even rows) are not
    both = Filters(attributes=(("colour", ("red", "green")), ("category", ("mugs",))))
    mask = filter_mask(both, catalog)
    assert mask.sum() == 4 and set(df["colour"][mask]) == {"green"}
    with pytest.raises(ConfigError, match=r"cannot be filtered on 'title'.*category, colour"):
        filter_mask(Filters(attributes=(("title", ("x",)),)), catalog)


# ----------------------------------------------------------------------------------- heads


def test_heads_read_the_colour_back_and_round_trip(shop, fake_embedder, tmp_path: Path) -> None:
    catalog, _, heads, vectors = shop
    guess = heads.predict(
        fake_embedder.embed_images([Image.open(io.BytesIO(_photo((30, 60, 220))))])[0]
    )
    assert guess["colour"][0][0] == "blue" and guess["colour"][0][1] > 0.5
    assert [p for _, p in guess["colour"]] == sorted((p for _, p in guess["colour"]), reverse=True)
    targets = heads.heads[0].targets(catalog.df["colour"].tolist())
    assert (heads.heads[0].probabilities(vectors).argmax(1) == targets).all()
    heads.calibrate(vectors, catalog.df, "the catalog")
    m = heads.metrics["colour"]
    assert m["accuracy"] == 1.0 and 0 <= m["ece"] <= m["uncalibrated"]["ece"] + 1e-9
    heads.save(tmp_path)
    back = AttributeHeads.load(tmp_path)
    assert back is not None and back.columns == ["colour", "category"]
    assert back.predict(vectors[3]) == heads.predict(vectors[3])
    assert back.problem(fake_embedder.fingerprint) is None
    assert "other weights" in back.problem("another-model")
    assert AttributeHeads.load(tmp_path / "nothing-here") is None


def test_temperature_scaling_fixes_an_overconfident_head() -> None:
    rng = np.random.default_rng(0)
    w = np.eye(3, 8, dtype=np.float32)
    head = Head("kind", ("a", "b", "c"), ("A", "B", "C"), w, temperature=1.0)
    targets = rng.integers(0, 3, 3000)
    # embeddings pointing at the right class 60% of the time, sharply (SCALE 16: p ~ 1)
    right = rng.random(3000) < 0.6
    shown = np.where(right, targets, (targets + 1) % 3)
    vectors = np.zeros((3000, 8), dtype=np.float32)
    vectors[np.arange(3000), shown] = 1.0
    vectors += rng.normal(0, 0.05, vectors.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    heads = AttributeHeads([head], "fp")
    df = pd.DataFrame({"kind": [("a", "b", "c")[t] for t in targets]})
    heads.calibrate(vectors, df, "synthetic")
    m = heads.metrics["kind"]
    assert m["uncalibrated"]["ece"] > 0.3 and m["ece"] < 0.05 and m["temperature"] > 1
    assert abs(m["accuracy"] - 0.6) < 0.03


def test_expected_calibration_error() -> None:
    assert expected_calibration_error(np.full(10, 1.0), np.ones(10, bool)) == 0.0
    half = np.array([True, False] * 50)
    assert expected_calibration_error(np.full(100, 1.0), half) == pytest.approx(0.5)
    assert expected_calibration_error(np.full(100, 0.5), half) == pytest.approx(0.0)


@pytest.mark.parametrize(
    "damage",
    ["json", "shape", "nan", "temperature", "classes", "fifo", "missing", "format"],
)
def test_damaged_heads_are_refused_whole(shop, tmp_path: Path, damage: str) -> None:
    from safetensors.numpy import save_file

    _, _, heads, _ = shop
    heads.save(tmp_path)
    meta = json.loads((tmp_path / HEADS_META).read_text())
    if damage == "json":
        (tmp_path / HEADS_META).write_text("{not json")
    elif damage == "shape":
        save_file(
            {"head.0": np.ones((3, 4), np.float32), "head.1": np.ones((2, 4), np.float32)},
            str(tmp_path / HEADS_WEIGHTS),
        )
    elif damage == "nan":
        save_file(
            {"head.0": np.full((6, 4), np.nan, np.float32), "head.1": np.ones((2, 4), np.float32)},
            str(tmp_path / HEADS_WEIGHTS),
        )
    elif damage == "temperature":
        meta["heads"][0]["temperature"] = 0.0
    elif damage == "classes":
        meta["heads"][0]["classes"][0] = 7
    elif damage == "format":
        meta["format_version"] = 99
    elif damage == "fifo":
        (tmp_path / HEADS_WEIGHTS).unlink()
        os.mkfifo(tmp_path / HEADS_WEIGHTS)
    elif damage == "missing":
        (tmp_path / HEADS_WEIGHTS).unlink()
    if damage in ("temperature", "classes", "format"):
        (tmp_path / HEADS_META).write_text(json.dumps(meta))
    with pytest.raises(WeightsError, match="attribute heads"):
        AttributeHeads.load(tmp_path)


def test_heads_for_a_model_folder_only_for_its_own_weights(
    shop, fake_embedder, tmp_path: Path
) -> None:
    _, _, heads, _ = shop
    heads.save(tmp_path)
    assert heads_for(str(tmp_path), fake_embedder)[0] is not None
    assert heads_for("random:ViT-B-32", fake_embedder) == (None, None)  # not a folder: none

    class Other:
        fingerprint, dim = "other", 4

    found, problem = heads_for(str(tmp_path), Other())
    assert found is None and "other weights" in problem


# ------------------------------------------------------------------ predictions and reasons


def test_a_photo_query_says_what_it_thinks_and_why_each_match(shop, fake_embedder) -> None:
    engine = _engine(shop, fake_embedder)
    result = engine.search(image=_photo((220, 30, 30)), k=6)
    assert result.predicted["colour"][0][0] == "red"
    out = answer(result, 0.5)
    assert out["predicted"]["colour"][0][0] == "red" and len(out["predicted"]["colour"]) == 3
    reds = [h for h in result.hits if h.fields["colour"] == "red"]
    assert len(reds) == 4
    for h in result.hits:  # a red product shares the predicted colour; every one is a look-alike
        assert ("same colour (red)" in h.why) == (h.fields["colour"] == "red")
        assert any(w.startswith("looks alike (similarity") for w in h.why)
        assert out["results"][h.rank - 1]["why"] == list(h.why)
    # without heads: nothing predicted, reasons from the look only
    plain = _engine(shop, fake_embedder, heads=False).search(image=_photo((220, 30, 30)), k=3)
    assert plain.predicted is None and "predicted" not in answer(plain, 0.5)


def test_words_and_more_like_this_say_what_they_share(shop, fake_embedder) -> None:
    engine = _engine(shop, fake_embedder)
    words = engine.search(text="green mugs", k=6)  # green products are mugs, red ones caps
    why = {h.fields["colour"]: h.why for h in words.hits}
    assert "your words: green, mugs" in why["green"], why
    assert all("your words: mugs" in w for c, w in why.items() if c != "green"), why
    catalog = shop[0]
    first = catalog.df.iloc[0]
    like = engine.similar(str(first["id"]), k=5)
    for h in like.hits:
        assert ("same colour (" + h.fields["colour"] + ")" in h.why) == (
            h.fields["colour"] == first["colour"]
        )
        assert ("same category (" + h.fields["category"] + ")" in h.why) == (
            h.fields["category"] == first["category"]
        )


def test_a_chip_filter_returns_k_products_of_that_attribute(shop, fake_embedder) -> None:
    engine = _engine(shop, fake_embedder)
    query = Query.parse(k=3, attributes={"colour": "Blue"})
    result = engine.search(image=_photo((220, 30, 30)), k=query.k, filters=query.filters)
    assert len(result.hits) == 3 and {h.fields["colour"] for h in result.hits} == {"blue"}
    words = engine.search(
        text="mug", k=4, filters=Query.parse(attributes='{"colour": ["red", "green"]}').filters
    )
    assert len(words.hits) == 4 and {h.fields["colour"] for h in words.hits} <= {"red", "green"}
    with pytest.raises(ConfigError, match="cannot be filtered on 'material'"):
        engine.search(text="mug", filters=Filters(attributes=(("material", ("wool",)),)))


# ------------------------------------------------------------------------------ crop


def test_a_crop_searches_only_that_part_of_the_photo(shop, fake_embedder) -> None:
    engine = _engine(shop, fake_embedder)
    img = Image.new("RGB", (100, 80), COLOURS["green"])
    img.paste(Image.new("RGB", (40, 40), COLOURS["blue"]), (60, 40))  # a blue item bottom right
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    whole = engine.search(image=buf.getvalue(), k=1)
    part = engine.search(image=buf.getvalue(), k=1, crop=(0.6, 0.5, 1.0, 1.0))
    assert whole.hits[0].fields["colour"] == "green"
    assert part.hits[0].fields["colour"] == "blue" and part.predicted["colour"][0][0] == "blue"
    assert part.original.size == (100, 80) and part.embedded.size == (40, 40)  # kept whole
    assert answer(part, 0.5)["crop"] == [0.6, 0.5, 1.0, 1.0]
    with pytest.raises(ImageError, match="at least 8 px"):
        engine.search(image=buf.getvalue(), crop=(0.0, 0.0, 0.05, 0.05))


@pytest.mark.parametrize(
    ("crop", "message"),
    [
        ([0, 0, 1], "four numbers"),
        ("0.1,,0.5,0.9", "four numbers"),
        ([None, 0, 1, 1], "four numbers"),
        ("a,b,c,d", "must be a number"),
        ([0.5, 0, 0.2, 1], "left to right"),
        ([0, 0, 1.5, 1], "between 0 and 1"),
        ([0, 0, float("nan"), 1], "finite"),
        ({"x0": 0}, "four numbers"),
        ([True, 0, 1, 1], "must be a number"),
    ],
)
def test_bad_crops_are_refused(crop, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Query.parse(crop=crop)


def test_crop_and_attributes_parse_from_a_form_and_json() -> None:
    assert Query.parse(crop="0.1,0.2,0.5,0.9").crop == (0.1, 0.2, 0.5, 0.9)
    assert Query.parse(crop=[0, 0, 1, 1]).crop is None  # the whole photo
    q = Query.parse(attributes='{"colour": "red", "gender": ["men", "unisex"]}')
    assert q.filters.attributes == (("colour", ("red",)), ("gender", ("men", "unisex")))
    assert q.filters.active


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ("{nope", "JSON object"),
        (["colour"], "object of column"),
        ({"colour": 3}, "a value or a list"),
        ({"colour": []}, "a value or a list"),
        ({"colour": [""]}, "cannot be empty"),
        ({"colour": ["red\x00"]}, "NUL"),
        ({f"c{i}": "x" for i in range(17)}, "at most 16 columns"),
        ({"colour": ["x"] * 33}, "a value or a list"),
    ],
)
def test_bad_attribute_filters_are_refused(attributes, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Query.parse(attributes=attributes)
