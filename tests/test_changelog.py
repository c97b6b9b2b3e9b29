"""Live shop part 2: a commit appends one checksummed record to the folder's change log;
opening replays it; compaction writes a snapshot; a damaged log is refused, a torn tail is not
a change. (The crash loops and the several-writers test in test_live.py run on this design.)"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ColourEmbedder, open_live, png

from searchcore.config import Settings, UpscaleSettings
from searchcore.errors import IndexMismatchError
from searchcore.live import Follower, check_invariants
from searchcore.live.state import with_rows
from searchcore.service import open_engine
from searchcore.stores.changelog import HEAD, ChangeLog, frame
from searchcore.stores.hnsw import HnswIndex
from searchcore.stores.lexical import LexicalIndex, LiveLexical, product_texts
from searchcore.stores.manifest import read_manifest
from searchcore.stores.segment import LiveIndex

SETTINGS = Settings(upscale=UpscaleSettings(mode="never"))


@pytest.fixture
def folder(live_folder: Path) -> Path:
    return live_folder


_open = open_live


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_a_commit_appends_one_record_and_rewrites_nothing(folder: Path) -> None:
    shop = _open(folder)
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()}
    shop.add([{"id": "new1", "title": "Zorblax teapot", "price": "5"}], [png((10, 200, 200))])
    shop.update("00004", {"price": "99"})
    shop.remove(["00007"])
    log = folder / shop.manifest.log
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir() if p.is_file()}
    # only the log is new: no catalog snapshot, index file or manifest was written
    assert set(after) - set(before) == {log.name}
    assert {k: v for k, v in after.items() if k != log.name} == before
    assert shop.engine.view.log[1] == 3 and check_invariants(shop) == []
    again = _open(folder)  # replayed on open
    assert again.engine.view.log == shop.engine.view.log
    assert again.engine.search_image(png((10, 200, 200)), k=1).hits[0].id == "new1"
    assert again.engine.search_text("zorblax", k=1, mode="lexical").hits[0].id == "new1"
    assert again.catalog.df.set_index("id").at["00004", "price"] == "99"
    assert "00007" not in again.live_ids and check_invariants(again) == []


def test_a_torn_last_record_is_no_change_and_the_next_writer_cuts_it(folder: Path) -> None:
    shop = _open(folder)
    shop.add([{"id": "a1", "title": "Kept"}], [png((200, 10, 10))])
    log = folder / shop.manifest.log
    whole = log.stat().st_size
    rec = frame({"seq": 2, "rows": [], "vectors": [], "removed": []})
    for torn in (rec[:3], rec[: HEAD.size + 2], rec[:-1], rec[:-4] + b"\x00\x00\x00\x00"):
        with open(log, "r+b") as f:
            f.truncate(whole)
            f.seek(whole)
            f.write(torn)
        reader = _open(folder)
        assert reader.engine.view.log == (whole, 1), torn
    writer = _open(folder)
    writer.add([{"id": "a2", "title": "After the tear"}], [png((10, 10, 200))])
    assert check_invariants(_open(folder)) == []
    assert set(_open(folder).live_ids) >= {"a1", "a2"}


def test_a_damaged_record_before_the_end_is_refused(folder: Path) -> None:
    shop = _open(folder)
    for i in range(3):
        shop.add([{"id": f"d{i}", "title": f"D {i}"}], [png((30 * i, 90, 90))])
    log = folder / shop.manifest.log
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the second of three records
    log.write_bytes(bytes(data))
    with pytest.raises(IndexMismatchError, match=r"change log .* (checksum|damaged record)"):
        _open(folder)


def test_a_log_of_another_snapshot_is_refused(folder: Path, tmp_path: Path) -> None:
    shop = _open(folder)
    shop.add([{"id": "x1", "title": "X"}], [png((1, 2, 3))])
    name = shop.manifest.log
    raw = json.loads((folder / "manifest.json").read_text())
    raw["index_sha256"] = "0" * 64  # the log now names another snapshot than the manifest
    with pytest.raises(IndexMismatchError, match="another snapshot"):
        ChangeLog(folder / name, f"{raw['index_sha256']}:{raw['catalog']['sha256']}").read()


@pytest.mark.parametrize(
    "record",
    [
        {"seq": 5, "rows": [], "vectors": [], "removed": []},  # out of order
        {"seq": 2, "rows": [[99, {"id": "x"}]], "vectors": [], "removed": []},  # a gap in rows
        {"seq": 2, "rows": [[1, {"id": 3}]], "vectors": [], "removed": []},  # not text
        {"seq": 2, "rows": [], "vectors": [[1, "AAAA"]], "removed": []},  # wrong dimension
        {"seq": 2, "rows": [], "vectors": [], "removed": [-1]},
        {"seq": 2, "rows": "x", "vectors": [], "removed": []},
        # a row a catalog file would be refused for: a photo outside the shop, a NUL byte
        {
            "seq": 2,
            "rows": [[0, {"id": "0", "title": "t", "image": "../../etc/passwd"}]],
            "vectors": [],
            "removed": [],
        },
        {
            "seq": 2,
            "rows": [[0, {"id": "0", "title": "t", "image": "/etc/passwd"}]],
            "vectors": [],
            "removed": [],
        },
        {
            "seq": 2,
            "rows": [[0, {"id": "0", "title": "t\x00", "image": "a.png"}]],
            "vectors": [],
            "removed": [],
        },
        {
            "seq": 2,
            "rows": [[0, {"id": "", "title": "t", "image": "a.png"}]],
            "vectors": [],
            "removed": [],
        },
    ],
)
def test_a_hostile_record_is_refused_whole(folder: Path, record: dict) -> None:
    shop = _open(folder)
    shop.add([{"id": "h1", "title": "H"}], [png((1, 2, 3))])
    log = folder / shop.manifest.log
    with open(log, "ab") as f:
        f.write(frame(record))
    with pytest.raises(IndexMismatchError, match="change log is damaged"):
        _open(folder)


def test_compaction_writes_a_snapshot_and_a_new_log(folder: Path) -> None:
    shop = _open(folder, compact_every=4)
    first = shop.manifest
    for i in range(4):
        shop.add([{"id": f"c{i}", "title": f"Compact {i}"}], [png((60 * i, 20, 200))])
    second = shop.manifest
    assert second.generation == first.generation + 1 and second.log != first.log
    assert shop.engine.view.log == (0, 0) and shop.engine.index.changed == 0
    assert second.catalog.snapshot and (folder / second.catalog.snapshot).is_file()
    assert first.log in _files(folder)  # kept for readers of the previous state, until pruned
    shop.update("c1", {"title": "Renamed quokka"})
    reopened = _open(folder)
    assert reopened.engine.view.log[1] == 1 and check_invariants(reopened) == []
    assert reopened.engine.search_text("quokka", k=1, mode="lexical").hits[0].id == "c1"
    for i in range(4):
        shop.update("c2", {"price": str(i)})
    assert first.log not in _files(folder) and check_invariants(_open(folder)) == []


def test_every_commit_a_snapshot_is_the_old_design(folder: Path) -> None:
    """compact_every=1: each change writes the whole snapshot, as before the log."""
    shop = _open(folder, compact_every=1)
    gen = shop.manifest.generation
    shop.add([{"id": "s1", "title": "Snap"}], [png((5, 5, 250))])
    assert shop.manifest.generation == gen + 1 and shop.engine.view.log == (0, 0)
    assert check_invariants(_open(folder)) == []


def test_an_index_folder_from_before_logs_gets_one(folder: Path) -> None:
    raw = json.loads((folder / "manifest.json").read_text())
    del raw["log"]
    (folder / "manifest.json").write_text(json.dumps(raw))
    shop = _open(folder)
    shop.add([{"id": "o1", "title": "Old folder"}], [png((250, 250, 5))])
    assert shop.manifest.log and check_invariants(_open(folder)) == []


def test_a_follower_applies_new_records_in_place(folder: Path) -> None:
    served = open_engine(SETTINGS, folder, embedder=ColourEmbedder())
    follower = Follower(served, folder, settings=SETTINGS)
    writer = _open(folder)
    index_before = served.view.index
    writer.add([{"id": "f1", "title": "Followed wombat"}], [png((0, 250, 0))])
    assert follower.check()
    assert served.view.index is index_before  # records applied, not a whole reload
    assert served.search_text("wombat", k=1, mode="lexical").hits[0].id == "f1"
    assert served.view.version == writer.engine.view.version
    writer.compact()
    assert follower.check() and served.view.version == writer.engine.view.version
    assert served.search_image(png((0, 250, 0)), k=1).hits[0].id == "f1"


def test_live_index_merges_the_graph_and_the_changed_vectors() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(300, 8)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    base = HnswIndex(8, capacity=300)
    base.add(vecs[:200], np.arange(200))
    live = LiveIndex(base)
    live.add(vecs[200:], np.arange(200, 300))  # new products
    live.add(vecs[:20][::-1].copy(), np.arange(20))  # 20 products get another photo
    live.remove([50, 250])
    truth = vecs.copy()
    truth[:20] = vecs[:20][::-1]
    alive = np.setdiff1d(np.arange(300), [50, 250])
    assert np.array_equal(live.live_labels(), alive) and len(live) == 298
    for q in rng.normal(size=(20, 8)).astype(np.float32):
        got = live.search(q, 5)
        sims = truth[alive] @ (q / np.linalg.norm(q))
        assert set(got.labels.tolist()) == set(alive[np.argsort(-sims)[:5]].tolist())
        assert len(set(got.labels.tolist())) == 5
    mask = np.zeros(300, dtype=bool)
    mask[[3, 210, 250]] = True
    assert set(live.search(vecs[3], 5, allowed=mask).labels.tolist()) == {3, 210}
    assert np.allclose(live.get_vectors([5, 210, 100]), truth[[5, 210, 100]], atol=1e-6)
    graph = live.fold()
    assert live.changed == 0 and np.array_equal(graph.live_labels(), alive)
    assert np.allclose(graph.get_vectors([5]), truth[[5]], atol=1e-6)


def test_changed_words_are_searched_with_the_snapshot_statistics() -> None:
    df = pd.DataFrame(
        {"id": [str(i) for i in range(6)], "title": ["red mug", "blue mug", "red cap"] * 2}
    )
    live = LiveLexical(LexicalIndex.build(df))
    df2 = with_rows(df, {1: {"id": "1", "title": "green teapot"}, 6: {"id": "6", "title": "mug"}})
    texts = dict(enumerate(product_texts(df2)))
    new = live.with_texts({1: texts[1], 6: texts[6]}, {1: product_texts(df)[1]}, 7)
    assert new.matches(product_texts(df2)) and not live.matches(product_texts(df2))
    assert set(new.search("teapot", 5).rows.tolist()) == {1}
    assert 1 not in new.search("blue", 5).rows.tolist()  # its old words are gone
    assert set(new.search("mug", 10).rows.tolist()) == {0, 3, 4, 6}
    assert set(new.search("teapt", 5).rows.tolist()) == {1}  # the typo rule knows new words
    fresh = LexicalIndex.build(df2)
    for query in ("mug", "red cap", "teapot"):
        assert new.search(query, 3).rows.tolist()[:1] == fresh.search(query, 3).rows.tolist()[:1]


def test_with_rows_copies_only_what_changes() -> None:
    df = pd.DataFrame({"id": ["a", "b"], "title": ["A", "B"], "price": ["1", "2"]})
    out = with_rows(df, {1: {"id": "b", "title": "B", "price": "3"}, 2: {"id": "c", "x": "y"}})
    assert out["price"].tolist() == ["1", "3", ""] and out["x"].tolist() == ["", "", "y"]
    assert df["price"].tolist() == ["1", "2"]  # the old frame (a reader's) is untouched
    with pytest.raises(IndexMismatchError):
        with_rows(df, {5: {"id": "z"}})


def test_manifest_with_a_bad_log_name_is_refused(folder: Path) -> None:
    raw = json.loads((folder / "manifest.json").read_text())
    raw["log"] = "../../etc/passwd"
    (folder / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(IndexMismatchError, match="invalid change log"):
        read_manifest(folder)
