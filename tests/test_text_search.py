"""Text search: the lexical index, its place in the index folder, and hybrid fusion."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import COLOURS, ColourEmbedder, png, write_catalog
from PIL import Image

from searchcore.build import build_index
from searchcore.catalog import load_catalog
from searchcore.config import Settings
from searchcore.errors import ConfigError, IndexMismatchError
from searchcore.fusion import fuse
from searchcore.live import LiveShop, check_invariants
from searchcore.query import Query, answer
from searchcore.service import open_engine
from searchcore.stores.base import Filters
from searchcore.stores.lexical import LexicalIndex, tokenize
from searchcore.stores.manifest import read_manifest

SETTINGS = Settings(upscale=Settings().upscale.__class__(mode="never"))

# Brands and words a colour model cannot know: the photos are plain colours, the fake text
# tower reads only colour names.
PRODUCTS = [
    ("p01", "Puma Men Black Running Shoes", "shoes", "black"),
    ("p02", "Nike Women White Sports Shoes", "shoes", "white"),
    ("p03", "Titan Women Silver Watch", "watches", "white"),
    ("p04", "Fossil Men Brown Leather Watch", "watches", "black"),
    ("p05", "Café Crème Women Red T-Shirt", "tshirts", "red"),
    ("p06", "Levis Men Blue Jeans", "jeans", "blue"),
    ("p07", "Puma Women Yellow Tshirts", "tshirts", "yellow"),
    ("p08", "Baggit Women Green Handbag", "bags", "green"),
    ("p09", "Wildcraft Unisex Black Backpack", "bags", "black"),
    ("p10", "Nike Men Red Flip Flops", "shoes", "red"),
    ("p11", "Red Tape Men Red Casual Shoes", "shoes", "red"),
    ("p12", "Plain Blue Cap", "caps", "blue"),
]


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    rows, images = [], {}
    for i, (pid, title, category, colour) in enumerate(PRODUCTS):
        rel = f"images/{pid}.png"
        images[rel] = Image.new("RGB", (32, 32), COLOURS[colour])
        rows.append(
            {
                "id": pid,
                "title": title,
                "image": rel,
                "category": category,
                "colour": colour,
                "price": f"{10 * (i + 1)}.00",
            }
        )
    catalog = write_catalog(tmp_path / "shop", rows, images)
    build_index(load_catalog(catalog), ColourEmbedder(), tmp_path / "shop" / "index")
    return tmp_path / "shop" / "index"


def _engine(folder: Path):
    return open_engine(SETTINGS, folder, embedder=ColourEmbedder())


def _ids(result) -> list[str]:
    return [h.id for h in result.hits]


def test_words_are_folded_stemmed_and_compounds_joined() -> None:
    assert tokenize(["Café CRÈME T-Shirts, running!"]) == [
        ["cafe", "creme", "shirt", "run", "tshirt"]
    ]
    assert tokenize(["the and of", "!!! ???"]) == [[], []]


def test_lexical_index_finds_brands_typos_and_split_compounds() -> None:
    df = pd.DataFrame(
        [{"id": p, "title": t, "category": c, "colour": col} for p, t, c, col in PRODUCTS]
    )
    lex = LexicalIndex.build(df)
    ids = df["id"].tolist()

    def top(query: str, k: int = 3) -> list[str]:
        return [ids[r] for r in lex.search(query, k).rows]

    assert set(top("PUMA", 2)) == {"p01", "p07"}
    assert top("fossil")[0] == "p04"
    assert top("Fosil")[0] == "p04"  # one letter missing
    assert top("fossill")[0] == "p04"  # one letter too many
    assert top("creme cafe")[0] == "p05"  # accents and order do not matter
    assert set(top("t shirt", 2)) == {"p05", "p07"}  # "T-Shirt" and "Tshirts"
    assert lex.search("watches", 5).words == ("watch",)  # plural -> singular
    assert set(top("watches", 5)) == {"p03", "p04"}
    assert lex.search("the of and", 5).rows.size == 0  # only stop words: nothing, no error
    assert lex.words("zz") == ()  # too short for the typo rule, not in the vocabulary
    mask = (df["category"] == "bags").to_numpy()
    assert top("black", 5) != [] and set(top("black", 5)) >= {"p01", "p09"}
    assert [ids[r] for r in lex.search("black", 5, allowed=mask).rows] == ["p09"]


def test_rrf_and_weighted_fusion() -> None:
    fused = fuse([1, 2, 3], [3, 4], 4, method="rrf")
    assert fused[0].row == 3  # found by both sides: first
    assert {f.row: f.matched for f in fused}[3] == ("lexical", "vector")
    assert {f.row: f.matched for f in fused}[4] == ("lexical",)
    assert fused[1].row == 1 and fused[2].row == 2  # ties: the vector side's order first
    weighted = fuse(
        [1, 2],
        [2, 5],
        3,
        method="weighted",
        weight=0.5,
        cosine={1: 0.9, 2: 0.5, 5: 0.1},
        bm25={2: 4.0, 5: 2.0},
    )
    assert [f.row for f in weighted] == [2, 1, 5]  # 0.75, 0.45, 0.3
    with pytest.raises(ValueError):
        fuse([1], [1], 1, method="max")


def test_hybrid_finds_what_the_model_cannot_read(shop: Path) -> None:
    engine = _engine(shop)
    # The colour model reads "Fossil" as no colour at all: the vector side alone cannot find it.
    assert _ids(engine.search(text="Fossil watch", k=3, mode="vector"))[0] != "p04"
    hybrid = engine.search(text="Fossil watch", k=3)
    assert _ids(hybrid)[0] == "p04"
    assert "lexical" in hybrid.hits[0].matched and hybrid.hits[0].lexical > 0
    # words the catalog does not have: the vector side still answers ("red" is a colour)
    red = engine.search(text="something red to wear", k=4)
    assert {h.fields["colour"] for h in red.hits[:2]} == {"red"}
    lexical = engine.search(text="Fossil watch", k=5, mode="lexical")
    assert set(_ids(lexical)) == {"p03", "p04"}
    assert all(h.matched == ("lexical",) for h in lexical.hits)
    data = answer(hybrid, threshold=0.99)
    assert "lexical" in data["results"][0]["matched"]
    assert data["good_match"] is True  # its words found it, whatever its similarity
    json.dumps(data)


def test_filters_apply_to_both_sides_and_k_comes_back(shop: Path) -> None:
    engine = _engine(shop)
    shoes = engine.search(text="Puma", k=4, filters=Filters(category="shoes"))
    assert len(shoes.hits) == 4  # the words match one shoe; the vector side fills the rest
    assert all(h.fields["category"] == "shoes" for h in shoes.hits)
    assert shoes.hits[0].id == "p01"
    cheap = engine.search(text="Puma", k=12, filters=Filters(max_price=30))
    assert {h.id for h in cheap.hits} == {"p01", "p02", "p03"}


def test_only_stop_words_or_symbols_is_an_answer_not_an_error(shop: Path) -> None:
    engine = _engine(shop)
    for text in ("the and of", "!!! ???"):
        lexical = engine.search(text=text, k=3, mode="lexical")
        assert lexical.hits == [] and "common words or symbols" in lexical.notes[0]
        hybrid = engine.search(text=text, k=3)
        assert len(hybrid.hits) == 3 and all(h.matched == ("vector",) for h in hybrid.hits)
        assert hybrid.notes


def test_mode_is_checked_once() -> None:
    assert Query.parse(mode="lexical").mode == "lexical"
    assert Query.parse().mode == "hybrid"
    for bad in ("bm25", 3, ["hybrid"]):
        with pytest.raises(ConfigError):
            Query.parse(mode=bad)


def test_lexical_index_is_in_the_manifest_and_checked(shop: Path) -> None:
    entry = read_manifest(shop).lexical
    assert (shop / entry["dir"]).is_dir() and entry["rows"] == len(PRODUCTS)
    assert set(entry["files"]) >= {"vocab.index.json", "params.index.json"}
    victim = shop / entry["dir"] / "vocab.index.json"
    victim.write_bytes(victim.read_bytes().replace(b"fossil", b"fossix"))
    with pytest.raises(IndexMismatchError, match=r"lexical index file .* corrupt"):
        _engine(shop)
    shutil.rmtree(shop / entry["dir"])
    with pytest.raises(IndexMismatchError, match="missing or corrupt"):
        _engine(shop)


def test_live_changes_update_the_words_in_the_same_commit(shop: Path) -> None:
    """Each change reaches the words at once (the log's overlay); a snapshot indexes them anew
    only when they changed."""
    live = LiveShop(_engine(shop), shop)
    first = read_manifest(shop).lexical["dir"]
    live.add(
        [{"id": "n1", "title": "Zephyr Orange Raincoat", "category": "coats", "price": "9"}],
        [png((250, 120, 20))],
    )
    assert _ids(live.engine.search(text="zephyr", k=1)) == ["n1"]
    live.update("p04", {"title": "Quartzline Men Brown Watch"})
    assert "p04" not in _ids(live.engine.search(text="fossil", k=5, mode="lexical"))
    assert _ids(live.engine.search(text="quartzline", k=1)) == ["p04"]
    live.remove(["p01"])
    assert "p01" not in _ids(live.engine.search(text="puma running", k=12))
    assert read_manifest(shop).lexical["dir"] == first  # the changed words are in the log
    again = _engine(shop)  # what was committed is what a new process serves
    assert _ids(again.search(text="quartzline", k=1)) == ["p04"]
    live.compact()  # a snapshot: the words indexed anew
    words = read_manifest(shop).lexical["dir"]
    live.update("p02", {"price": "99.00"})
    live.compact()  # no word changed since: the same lexical folder
    assert read_manifest(shop).lexical["dir"] == words != first
    assert check_invariants(live) == []
    again = _engine(shop)  # what was committed is what a new process serves
    assert _ids(again.search(text="zephyr", k=1)) == ["n1"]
    assert _ids(again.search(text="quartzline", k=1)) == ["p04"]
    assert "p01" not in _ids(again.search(text="puma running", k=12))
    lexical_dirs = sorted(p.name for p in shop.glob("lexical-*"))
    assert first not in lexical_dirs and len(lexical_dirs) <= 2  # pruned: current + previous


def test_a_folder_without_a_lexical_index_still_searches_words(shop: Path) -> None:
    manifest = json.loads((shop / "manifest.json").read_text())
    shutil.rmtree(shop / manifest.pop("lexical")["dir"])
    (shop / "manifest.json").write_text(json.dumps(manifest))  # as written before text search
    assert _ids(_engine(shop).search(text="Fossil watch", k=1)) == ["p04"]


def test_cli_texts_file_gives_one_json_line_per_query(shop: Path, tmp_path: Path) -> None:
    queries = tmp_path / "q.txt"
    queries.write_text("Fossil watch\n\nthe of\nbaggit handbag\n", encoding="utf-8")
    out = _search_cli(shop, ["--texts", str(queries), "--json", "--mode", "lexical"])
    lines = [json.loads(line) for line in out.splitlines()]
    assert [d["query"] for d in lines] == ["Fossil watch", "the of", "baggit handbag"]
    assert lines[0]["results"][0]["id"] == "p04" and lines[0]["results"][0]["matched"] == [
        "lexical"
    ]
    assert lines[1]["results"] == [] and lines[1]["notes"]
    assert lines[2]["results"][0]["id"] == "p08"


def _search_cli(index: Path, args: list[str]) -> str:
    """``searchcore search`` in a child process whose model loader returns the fake model."""
    code = (
        "import sys; sys.path.insert(0, 'tests')\n"
        "from conftest import ColourEmbedder\n"
        "import searchcore.service as s\n"
        "s.make_embedder = lambda settings, spec=None, runtime=None, **_: ColourEmbedder()\n"
        "from searchcore.cli.main import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    cmd = [sys.executable, "-c", code, "search", "--index", str(index), "--k", "2", *args]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, cwd=Path(__file__).parents[1]
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_milvus_searches_words_with_its_own_bm25(shop: Path, tmp_path: Path) -> None:
    pytest.importorskip("pymilvus")
    from searchcore.stores.milvus import MilvusLexical

    catalog = load_catalog(shop.parent / "products.csv")
    db = tmp_path / "shop.db"
    build_index(catalog, ColourEmbedder(), db)
    engine = open_engine(SETTINGS, str(db), embedder=ColourEmbedder())
    assert isinstance(engine.lexical, MilvusLexical)  # Milvus answers the words itself
    lexical = engine.search(text="Fossil watches", k=5, mode="lexical")
    assert _ids(lexical)[0] == "p04" and set(_ids(lexical)) == {"p03", "p04"}
    assert all(h.matched == ("lexical",) and h.lexical > 0 for h in lexical.hits)
    assert _ids(engine.search(text="creme cafe t-shirts", k=1, mode="lexical")) == ["p05"]
    bags = engine.search(text="black", k=5, mode="lexical", filters=Filters(category="bags"))
    assert _ids(bags) == ["p09"]  # the filter is pushed down to Milvus's BM25 search too
    assert engine.search(text="the of", k=3, mode="lexical").hits == []
    hybrid = engine.search(text="Fossil watches", k=4)
    assert "p04" in _ids(hybrid) and len(hybrid.hits) == 4


def test_query_families_are_what_shoppers_type(tmp_path: Path) -> None:
    import numpy as np

    from searchcore.training.text_eval import (
        brands,
        build_families,
        load_text_queries,
        text_search_task,
    )

    df = pd.DataFrame(
        [
            {"id": p, "title": t, "category": c, "colour": col, "gender": "Men"}
            for p, t, c, col in PRODUCTS
        ]
    )
    df.loc[1, "title"] = df.loc[0, "title"]  # two products share a title: both count
    assert brands(df.iloc[:2]) == ["Puma", "Puma"]
    assert (
        brands(pd.DataFrame({"title": ["Nordwind red cap", "Red cap"], "colour": ["red"] * 2}))[1]
        == ""
    )  # a colour is no brand
    queries = tmp_path / "q.json"
    queries.write_text(
        json.dumps(
            {
                "queries": [
                    {"family": "synonym", "query": "timepiece", "title_has": ["watch"]},
                    {"family": "synonym", "query": "umbrella", "title_has": ["umbrella"]},
                    {"family": "paraphrase", "query": "keep my hands warm", "title_has": ["x y"]},
                ]
            }
        )
    )
    fixed = load_text_queries(queries)
    fams = build_families(
        df, np.random.default_rng(0), max_queries=50, query_attrs=("colour",), fixed=fixed
    )
    title = fams["title"]
    assert title.relevant[0, 0] and title.relevant[0, 1] and title.relevant.sum(axis=1)[0] == 2
    for q, t in zip(fams["typo title"].queries, df["title"], strict=True):
        assert q != t and len(q.split()) == len(t.split())  # one word, one edit
    assert all(len(q.split()) == 3 for q in fams["partial title"].queries)
    assert "Puma" in fams["brand"].queries
    assert fams["synonym"].queries == ["timepiece"]  # nothing relevant: the query is left out
    assert fams["synonym"].relevant[0].sum() == 2 and "paraphrase" not in fams
    task = text_search_task(df, None, None, fams)  # no text tower: the lexical side alone
    assert task["title"]["lexical"]["R@1"] == 1.0 and "vector" not in task["title"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"queries": [{"family": 3}]}')
    with pytest.raises(ConfigError, match="not a text query file"):
        load_text_queries(bad)
