from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from searchcore.errors import IndexMismatchError, SearchError
from searchcore.stores.hnsw import HnswIndex, commit_folder
from searchcore.stores.manifest import MANIFEST, ModelRecord


def _unit(n: int, d: int, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _exact_top(data: np.ndarray, q: np.ndarray, k: int, labels: np.ndarray | None = None) -> set:
    labels = np.arange(len(data)) if labels is None else labels
    sims = data[labels] @ q
    return set(labels[np.argsort(-sims)[:k]].tolist())


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return _unit(3000, 32)


@pytest.fixture
def index(data: np.ndarray) -> HnswIndex:
    idx = HnswIndex(32, capacity=100)  # starts small: add() must grow it
    idx.add(data, np.arange(len(data)))
    return idx


def test_self_recall_against_brute_force(index: HnswIndex, data: np.ndarray) -> None:
    queries = _unit(200, 32, seed=1)
    hits = 0
    for q in queries:
        found = index.search(q, 10)
        hits += len(set(found.labels.tolist()) & _exact_top(data, q, 10))
    assert hits / (10 * len(queries)) >= 0.99
    # a stored vector finds itself first with similarity 1
    found = index.search(data[123], 1)
    assert found.labels[0] == 123 and found.scores[0] == pytest.approx(1.0, abs=1e-5)


def test_k_is_clamped_to_what_exists() -> None:
    idx = HnswIndex(8)
    idx.add(_unit(5, 8), [0, 1, 2, 3, 4])
    assert len(idx.search(_unit(1, 8)[0], 50).labels) == 5
    idx.remove([0, 1])
    assert sorted(idx.search(_unit(1, 8)[0], 50).labels.tolist()) == [2, 3, 4]
    assert len(HnswIndex(8).search(_unit(1, 8)[0], 3).labels) == 0


@pytest.mark.parametrize("fraction", [0.003, 0.05, 0.5])
def test_filters_return_k_when_k_match(index: HnswIndex, data: np.ndarray, fraction: float) -> None:
    rng = np.random.default_rng(2)
    allowed = rng.random(len(data)) < fraction
    allowed[:12] = True  # at least 12 match
    q = _unit(1, 32, seed=3)[0]
    found = index.search(q, 10, allowed=allowed)
    assert len(found.labels) == 10
    assert allowed[found.labels].all()
    truth = _exact_top(data, q, 10, np.flatnonzero(allowed))
    assert len(set(found.labels.tolist()) & truth) >= 9
    assert np.all(np.diff(found.scores) <= 1e-6)  # best first


def test_filter_with_fewer_matches_than_k(index: HnswIndex) -> None:
    allowed = np.zeros(3000, bool)
    allowed[[5, 6, 7]] = True
    assert sorted(index.search(_unit(1, 32)[0], 10, allowed=allowed).labels.tolist()) == [5, 6, 7]


def test_add_and_remove_without_rebuild(index: HnswIndex, data: np.ndarray) -> None:
    index.remove([10, 11])
    assert len(index) == 2998
    assert 10 not in index.search(data[10], 5).labels
    with pytest.raises(SearchError):
        index.remove([10])  # already gone
    new = _unit(3, 32, seed=9)
    index.add(new, [3000, 3001, 10])  # label 10 comes back with a new vector
    assert len(index) == 3001
    for vec, label in zip(new, [3000, 3001, 10], strict=True):
        assert index.search(vec, 1).labels[0] == label


def test_bad_vectors_are_refused() -> None:
    idx = HnswIndex(4)
    with pytest.raises(SearchError, match="dimension"):
        idx.add(np.ones((2, 5), np.float32), [0, 1])
    with pytest.raises(SearchError, match="NaN"):
        idx.add(np.full((1, 4), np.nan, np.float32), [0])
    with pytest.raises(SearchError, match="unique"):
        idx.add(np.ones((2, 4), np.float32), [1, 1])


def test_save_load_round_trip(tmp_path: Path, index: HnswIndex, data: np.ndarray) -> None:
    index.remove([7])
    manifest = index.save(tmp_path / "idx", {"model": {"spec": "x"}, "build": {"by": "test"}})
    store = manifest.store
    assert store["count"] == 2999 and store["deleted"] == [7] and store["dim"] == 32
    loaded, m2 = HnswIndex.load(tmp_path / "idx")
    assert m2.model == ModelRecord("x") and len(loaded) == 2999
    assert m2.extra["build"] == {"by": "test"} and m2.to_dict()["build"] == {"by": "test"}
    q = _unit(1, 32, seed=5)[0]
    assert loaded.search(q, 10).labels.tolist() == index.search(q, 10).labels.tolist()
    assert 7 not in loaded.search(data[7], 3).labels
    # committing again: the previous state's file stays (a reader may be opening it), older
    # ones and temp files go
    folder = tmp_path / "idx"
    (folder / ".index-dead.tmp").write_bytes(b"a dead writer's")
    first = set(p.name for p in folder.glob("index-*.bin"))
    previous = HnswIndex.load(folder)[1]
    loaded.add(_unit(1, 32, seed=6), [5000])
    second = commit_folder(folder, loaded, {}, previous)
    assert second.generation == 1 + previous.generation
    assert {p.name for p in folder.glob("index-*.bin")} == first | second.files
    assert not (folder / ".index-dead.tmp").exists()
    loaded.add(_unit(1, 32, seed=7), [5001])
    third = commit_folder(folder, loaded, {}, second)
    assert {p.name for p in folder.glob("index-*.bin")} == second.files | third.files
    assert HnswIndex.load(folder)[1].generation == third.generation


def _saved(tmp_path: Path) -> Path:
    idx = HnswIndex(8)
    idx.add(_unit(50, 8), np.arange(50))
    idx.save(tmp_path / "idx")
    return tmp_path / "idx"


def _index_file(folder: Path) -> Path:
    return folder / json.loads((folder / MANIFEST).read_text())["index_file"]


@pytest.mark.parametrize(
    "damage",
    [
        "truncate",
        "empty",
        "flip",
        "random",
        "no_manifest",
        "bad_json",
        "version",
        "dim",
        "missing_file",
        "path_escape",
        "count",
    ],
)
def test_damaged_folders_are_refused(tmp_path: Path, damage: str) -> None:
    folder = _saved(tmp_path)
    f = _index_file(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "empty":
        f.write_bytes(b"")
    elif damage == "flip":
        f.write_bytes(data[:100] + bytes([data[100] ^ 1]) + data[101:])
    elif damage == "random":
        f.write_bytes(os.urandom(len(data)))
    elif damage == "no_manifest":
        (folder / MANIFEST).unlink()
    elif damage == "bad_json":
        (folder / MANIFEST).write_text("{not json")
    elif damage == "missing_file":
        f.unlink()
    else:
        if damage == "version":
            manifest["format_version"] = 99
        elif damage == "dim":
            manifest["dim"] = 0
        elif damage == "path_escape":
            manifest["index_file"] = "../index-x.bin"
        elif damage == "count":
            manifest["total"] = manifest["capacity"] + 1
        (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError, match=r"rebuild|build"):
        HnswIndex.load(folder)


def test_a_matching_checksum_with_a_wrong_dimension_is_refused(tmp_path: Path) -> None:
    """A manifest that lies about the dimension never reaches hnswlib's reader unchecked."""
    folder = _saved(tmp_path)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["dim"] = 16
    (folder / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(IndexMismatchError):
        HnswIndex.load(folder)


WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from searchcore.stores.hnsw import HnswIndex
    folder = sys.argv[1]
    idx, _ = HnswIndex.load(folder)
    rng = np.random.default_rng()
    label = 10_000
    print("ready", flush=True)
    while True:
        v = rng.normal(size=(200, 16)).astype(np.float32)
        idx.add(v, np.arange(label, label + 200))
        label += 200
        idx.save(folder)
    """
)


def test_kill_during_save_leaves_a_loadable_index(tmp_path: Path) -> None:
    folder = tmp_path / "idx"
    idx = HnswIndex(16)
    idx.add(_unit(2000, 16), np.arange(2000))
    idx.save(folder)
    rng = np.random.default_rng(0)
    counts = set()
    for _ in range(6):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(folder)], stdout=subprocess.PIPE)
        assert proc.stdout.readline().strip() == b"ready"
        time.sleep(float(rng.uniform(0.05, 0.4)))  # somewhere in add/save/rename
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        loaded, manifest = HnswIndex.load(folder)  # must not raise
        assert len(loaded) == manifest.store["count"] >= 2000
        counts.add(manifest.store["count"])
        assert loaded.search(_unit(1, 16)[0], 5).labels.size == 5
    assert max(counts) > 2000  # the writer did get saves through between kills


def test_queries_and_writes_interleave_safely(index: HnswIndex) -> None:
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        q = _unit(1, 32, seed=8)[0]
        try:
            while not stop.is_set():
                assert len(index.search(q, 10).labels) == 10
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(20):
        index.add(_unit(50, 32, seed=100 + i), np.arange(10_000 + 50 * i, 10_050 + 50 * i))
        index.remove([10_000 + 50 * i])
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert len(index) == 3000 + 20 * 49


def _hostile(folder: Path, patch) -> None:
    """Rewrite the index file with ``patch`` and make the manifest vouch for it (an attacker
    who controls the folder controls both)."""
    from searchcore.fsutil import file_sha256

    f = _index_file(folder)
    data = bytearray(f.read_bytes())
    patch(data)
    f.write_bytes(bytes(data))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["index_sha256"], manifest["index_bytes"] = file_sha256(f), len(data)
    (folder / MANIFEST).write_text(json.dumps(manifest))


HEADER = 6 * 8 + 4 + 4 + 3 * 8 + 8 + 8  # hnswlib's header size in bytes


def _set_u64(offset: int, value: int):
    return lambda d: d.__setitem__(slice(offset, offset + 8), value.to_bytes(8, "little"))


@pytest.mark.parametrize(
    "patch",
    [
        _set_u64(8, 10),  # max_elements below the element count
        _set_u64(16, 10**12),  # element count: a huge allocation
        _set_u64(24, 10**9),  # bytes per element
        lambda d: d.__setitem__(slice(52, 56), (2**31).to_bytes(4, "little")),  # entry point
        lambda d: d.__setitem__(
            slice(HEADER + 4, HEADER + 8), (10**6).to_bytes(4, "little")
        ),  # a neighbour id
        lambda d: d.__setitem__(
            slice(HEADER, HEADER + 2), (500).to_bytes(2, "little")
        ),  # link count
        lambda d: d.extend(b"\x00" * 16),  # trailing bytes
    ],
    ids=["max_elements", "count", "elem_size", "entry", "neighbour", "link_count", "trailing"],
)
def test_crafted_index_files_never_reach_hnswlib(tmp_path: Path, patch) -> None:
    folder = _saved(tmp_path)
    _hostile(folder, patch)
    with pytest.raises(IndexMismatchError, match="malformed"):
        HnswIndex.load(folder)


def test_crafted_upper_level_links_are_refused(tmp_path: Path) -> None:
    idx = HnswIndex(8, m=4)
    idx.add(_unit(400, 8), np.arange(400))  # with M=4 many elements get upper levels
    idx.save(tmp_path / "idx")
    folder = tmp_path / "idx"
    per_elem = 4 + 4 * 8 + 4 * 8 + 8
    start = HEADER + 400 * per_elem

    def patch(d: bytearray) -> None:
        pos = start
        while int.from_bytes(d[pos : pos + 4], "little") == 0:
            pos += 4
        d[pos + 8 : pos + 12] = (99_999).to_bytes(4, "little")  # first upper neighbour id

    _hostile(folder, patch)
    with pytest.raises(IndexMismatchError, match="upper links"):
        HnswIndex.load(folder)


def test_a_stored_label_is_updated_in_place_while_deleted_slots_wait(tmp_path: Path) -> None:
    """hnswlib's replace_deleted puts *any* label into a vacant slot, a stored one included:
    the old slot would keep the label too (two slots, one label, an unloadable file)."""
    idx = HnswIndex(8)
    idx.add(_unit(20, 8), np.arange(20))
    idx.remove([3, 4, 5])  # vacant slots
    idx.add(_unit(1, 8, seed=9), [3])  # a removed product comes back
    idx.add(_unit(1, 8, seed=10), [7])  # a live product's new photo
    idx.add(_unit(1, 8, seed=11), [20])  # a new product takes a vacant slot
    labels = sorted(idx._index.get_ids_list())
    assert len(labels) == len(set(labels)) == 20 and 3 in labels and 20 in labels
    assert idx.search(_unit(1, 8, seed=10)[0], 1).labels.tolist() == [7]
    idx.save(tmp_path / "ix")
    loaded, _ = HnswIndex.load(tmp_path / "ix")  # the file passes the structure check
    assert sorted(loaded.live_labels().tolist()) == sorted(set(range(21)) - {4, 5})
