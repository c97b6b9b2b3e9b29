"""One behavioural suite, run against both vector stores (hnswlib and a real Milvus Lite)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ColourEmbedder
from PIL import Image

from searchcore.build import build_index
from searchcore.catalog import load_catalog
from searchcore.engine import SearchEngine, View
from searchcore.errors import ConfigError
from searchcore.stores.base import Filters, VectorStore, is_milvus
from searchcore.stores.hnsw import HnswIndex

pytest.importorskip("pymilvus")
BACKENDS = ["hnswlib", "milvus"]


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _records(n: int, start: int = 0) -> list[dict]:
    return [
        {
            "id": f"p{i}",
            "category": ["Shoes", "Bags", "Mugs"][i % 3],
            "price": str(i % 100),
            "colour": "red",
        }
        for i in range(start, start + n)
    ]


class Harness:
    def __init__(self, backend: str, tmp: Path) -> None:
        self.backend, self.tmp = backend, tmp
        self.location = str(tmp / ("store.db" if backend == "milvus" else "store"))

    def create(self, dim: int) -> VectorStore:
        if self.backend == "milvus":
            from searchcore.stores.milvus import MilvusStore

            return MilvusStore.create(self.location, "t", dim)
        return HnswIndex(dim)

    def reopen(self, store: VectorStore) -> VectorStore:
        if self.backend == "milvus":
            from searchcore.stores.milvus import MilvusStore

            store.save({"model": {"spec": "x"}})
            store.client.close()
            return MilvusStore.open(self.location, "t")[0]
        store.save(self.location)
        return HnswIndex.load(self.location)[0]

    def search(
        self,
        store: VectorStore,
        q: np.ndarray,
        k: int,
        filters: Filters | None,
        records: list[dict],
    ) -> np.ndarray:
        if filters is None or store.pushes_filters:
            return store.search(q, k, filters=filters).labels
        mask = np.array([_passes(r, filters) for r in records])
        return store.search(q, k, allowed=mask).labels


def _passes(rec: dict, f: Filters) -> bool:
    ok = not f.category or rec["category"].casefold() == f.category.casefold()
    price = float(rec["price"])
    ok &= f.min_price is None or price >= f.min_price
    return bool(ok and (f.max_price is None or price <= f.max_price))


@pytest.fixture(params=BACKENDS)
def harness(request, tmp_path: Path) -> Harness:
    return Harness(request.param, tmp_path)


def test_self_recall_against_brute_force(harness: Harness) -> None:
    data = _unit(2000, 24)
    store = harness.create(24)
    store.add(data, np.arange(2000), records=_records(2000))
    queries = _unit(50, 24, seed=1)
    hits = 0
    for q in queries:
        truth = set(np.argsort(-(data @ q))[:10].tolist())
        hits += len(truth & set(store.search(q, 10).labels.tolist()))
    assert hits / 500 >= 0.99
    found = store.search(data[17], 1)
    assert found.labels[0] == 17 and found.scores[0] == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize(
    "filters",
    [
        Filters(category="shoes"),
        Filters(min_price=10, max_price=12),
        Filters(category="Bags", max_price=5),
    ],
)
def test_filters_return_k_when_k_match(harness: Harness, filters: Filters) -> None:
    data, records = _unit(1500, 16), _records(1500)
    store = harness.create(16)
    store.add(data, np.arange(1500), records=records)
    q = _unit(1, 16, seed=4)[0]
    labels = harness.search(store, q, 10, filters, records)
    matching = np.array([i for i, r in enumerate(records) if _passes(r, filters)])
    assert len(labels) == min(10, len(matching))
    assert all(_passes(records[i], filters) for i in labels)
    truth = matching[np.argsort(-(data[matching] @ q))[:10]]
    assert len(set(labels.tolist()) & set(truth.tolist())) >= 0.9 * len(labels)


def test_add_remove_and_upsert_idempotence(harness: Harness) -> None:
    data = _unit(300, 8)
    store = harness.create(8)
    store.add(data, np.arange(300), records=_records(300))
    store.add(data[:50], np.arange(50), records=_records(50))  # the same products again
    assert len(store) == 300
    store.remove([5, 6])
    assert len(store) == 298
    assert 5 not in store.search(data[5], 5).labels
    new = _unit(1, 8, seed=9)
    store.add(new, [300], records=_records(1, start=300))
    assert store.search(new[0], 1).labels[0] == 300
    np.testing.assert_allclose(store.get_vectors([300])[0], new[0], atol=1e-5)
    assert sorted(store.live_labels().tolist()) == [i for i in range(301) if i not in (5, 6)]


def test_restart_persistence(harness: Harness) -> None:
    data = _unit(500, 12)
    store = harness.create(12)
    store.add(data, np.arange(500), records=_records(500))
    store.remove([3])
    q = _unit(1, 12, seed=2)[0]
    before = store.search(q, 10).labels.tolist()
    again = harness.reopen(store)
    assert len(again) == 499 and again.search(q, 10).labels.tolist() == before
    assert 3 not in again.live_labels()


@pytest.mark.parametrize("backend", BACKENDS)
def test_engine_builds_and_searches_on_either_backend(
    backend: str, colour_catalog: Path, fake_embedder, tmp_path: Path
) -> None:
    catalog = load_catalog(colour_catalog)
    out = tmp_path / ("ix.db" if backend == "milvus" else "ix")
    report = build_index(catalog, fake_embedder, out)
    assert report.indexed == 24 and is_milvus(out) == (backend == "milvus")
    if backend == "milvus":
        from searchcore.stores.milvus import MilvusStore

        store, manifest = MilvusStore.open(str(out), "products")
        assert manifest.catalog.sha256 == catalog.sha256 and manifest.store["dim"] == 4
        # a rerun with the same model skips everything and changes nothing
        assert build_index(catalog, fake_embedder, out).indexed == 0 and len(store) == 24
    else:
        store, manifest = HnswIndex.load(out)
    engine = SearchEngine(catalog, fake_embedder, None, store)
    # red products are all caps (rows 0, 6, 12, 18 at prices 10, 70, 130, 190)
    r = engine.search_text("red", k=10, filters=Filters(category="CAPS", max_price=200))
    assert len(r.hits) == 10 and {h.fields["category"] for h in r.hits} == {"caps"}
    assert all(float(h.price) <= 200 for h in r.hits)
    assert {h.id for h in r.hits[:4]} == {"00000", "00006", "00012", "00018"}
    rows = pd.DataFrame(
        [
            {
                "id": "n1",
                "title": "Purple mug",
                "image": "images/n1.png",
                "category": "mugs",
                "colour": "purple",
                "price": "5.00",
            }
        ]
    )
    purple = Image.new("RGB", (40, 40), (128, 0, 128))
    # a new product: its vector in the store under its catalog row, then both served as one view
    grown = replace(catalog, df=pd.concat([catalog.df, rows], ignore_index=True).fillna(""))
    store.add(fake_embedder.embed_images([purple]), [24], records=rows.to_dict("records"))
    engine.swap(View(grown, store))
    assert engine.search_image(purple.resize((200, 200)), k=1, upscale="never").hits[0].id == "n1"
    store.remove([24])
    assert "n1" not in [h.id for h in engine.search_text("red", k=30).hits]


@pytest.mark.parametrize("backend", BACKENDS)
def test_attribute_filters_on_either_backend(
    backend: str, colour_catalog: Path, fake_embedder, tmp_path: Path
) -> None:
    """Any facet column filters the same way on both backends: any of a column's values, every
    column, case and spacing ignored; photo, words and "more like this" alike."""
    catalog = load_catalog(colour_catalog)
    out = tmp_path / ("ix.db" if backend == "milvus" else "ix")
    build_index(catalog, fake_embedder, out)
    if backend == "milvus":
        from searchcore.stores.milvus import MilvusStore

        store = MilvusStore.open(str(out), "products")[0]
    else:
        store = HnswIndex.load(out)[0]
    engine = SearchEngine(catalog, fake_embedder, None, store)
    red = Image.new("RGB", (64, 64), (220, 30, 30))
    wanted = Filters(attributes=(("colour", ("GREEN", " yellow ")), ("category", ("mugs",))))
    for result in (
        engine.search_image(red, k=8, filters=wanted, upscale="never"),
        engine.search_text("red mug", k=8, filters=wanted),
        engine.similar("00000", k=8, filters=wanted),
    ):
        assert len(result.hits) == 8  # all 8 green and yellow mugs, nothing else
        assert {h.fields["colour"] for h in result.hits} == {"green", "yellow"}
        assert {h.fields["category"] for h in result.hits} == {"mugs"}
    none = Filters(attributes=(("colour", ("red",)), ("category", ("mugs",))))
    assert engine.search_image(red, k=5, filters=none, upscale="never").hits == []
    with pytest.raises(ConfigError, match="cannot be filtered on 'title'"):
        engine.search_text("red", filters=Filters(attributes=(("title", ("Red cap 0",)),)))
    if backend == "milvus":  # a collection from before the attrs field: a clear way out
        store.has_attrs = False
        with pytest.raises(ConfigError, match="built before attribute filters: rebuild"):
            engine.search_image(red, k=5, filters=wanted, upscale="never")


def test_sharded_milvus_build_fills_one_collection(
    colour_catalog: Path, fake_embedder, tmp_path: Path
) -> None:
    from searchcore.stores.milvus import MilvusStore

    catalog = load_catalog(colour_catalog)
    out = tmp_path / "sharded.db"
    counts = [build_index(catalog, fake_embedder, out, shard=(i, 3)).indexed for i in range(3)]
    assert counts == [8, 8, 8]
    store, _ = MilvusStore.open(str(out), "products")
    assert sorted(store.live_labels().tolist()) == list(range(24))
    with pytest.raises(Exception, match="Milvus"):
        build_index(catalog, fake_embedder, tmp_path / "folder", shard=(0, 2))


def test_a_milvus_rebuild_upserts_exactly_what_changed(
    colour_catalog: Path, tmp_path: Path
) -> None:
    """Milvus takes a shop's changes by upsert (the product id is its key): a rebuild after the
    catalog file changed re-embeds and upserts the changed products only, and a build killed
    part-way leaves products whole (old or new), which the next run completes."""
    from searchcore.stores.milvus import MilvusStore

    out = str(tmp_path / "shop.db")
    embedder = ColourEmbedder()
    assert build_index(load_catalog(colour_catalog), embedder, out).indexed == 24
    df = pd.read_csv(colour_catalog, dtype=str, keep_default_na=False)
    df.loc[df["id"] == "00004", "price"] = "999.00"  # a price edit
    df.loc[df["id"] == "00005", "title"] = "Zanzibar mug"  # a title edit
    Image.new("RGB", (48, 48), (0, 0, 0)).save(colour_catalog.parent / df.at[7, "image"])  # a photo
    df = df[df["id"] != "00009"]  # a product that left the shop
    df.to_csv(colour_catalog, index=False)
    catalog = load_catalog(colour_catalog)
    calls = embedder.image_calls
    report = build_index(catalog, embedder, out)
    # rows after the removed one moved up: they are re-stored under their new rows as well
    assert report.indexed == len({4, 5, 7} | set(range(9, 23))), report
    store, _ = MilvusStore.open(out, "products")
    assert len(store) == 23 and "00009" not in set(store.stamps())
    engine = SearchEngine(catalog, embedder, None, store)
    over = engine.search_text("red", k=30, filters=Filters(min_price=500)).hits
    assert [h.id for h in over] == ["00004"]  # the new price is the filtered one
    assert engine.search_text("zanzibar", k=1, mode="lexical").hits[0].id == "00005"
    assert build_index(catalog, embedder, out).indexed == 0  # converged
    assert embedder.image_calls > calls


def test_an_interrupted_milvus_rebuild_leaves_products_whole_and_a_rerun_completes(
    colour_catalog: Path, tmp_path: Path
) -> None:
    """A rebuild that dies part-way (here: the model fails after a few batches) has upserted
    some products whole and none in part; the next run upserts exactly the rest."""
    out = str(tmp_path / "shop.db")
    assert build_index(load_catalog(colour_catalog), ColourEmbedder(), out).indexed == 24
    df = pd.read_csv(colour_catalog, dtype=str, keep_default_na=False)
    df["price"] = "77.00"  # every product changes
    df.to_csv(colour_catalog, index=False)
    catalog = load_catalog(colour_catalog)

    class Dying(ColourEmbedder):
        seen = 0

        def embed_images(self, images):  # type: ignore[no-untyped-def]
            Dying.seen += len(images)
            if Dying.seen > 8:
                raise RuntimeError("killed")
            return super().embed_images(images)

    with pytest.raises(Exception, match="killed"):
        build_index(catalog, Dying(), out, batch_size=4, lanes=1)
    from searchcore.stores.milvus import MilvusStore

    store, _ = MilvusStore.open(out, "products")
    engine = SearchEngine(catalog, ColourEmbedder(), None, store)
    new = Filters(min_price=77, max_price=77)
    done = {h.id for h in engine.search_text("red", k=24, filters=new, mode="vector").hits}
    assert 0 < len(done) < 24 and len(store) == 24  # part got through; nothing was lost
    assert build_index(catalog, ColourEmbedder(), out).indexed == 24 - len(done)
    assert len(engine.search_text("red", k=24, filters=new, mode="vector").hits) == 24
