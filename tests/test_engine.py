"""The engine end to end, with the hand-checkable colour embedder and a fake upscaler."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import COLOURS, ColourEmbedder
from PIL import Image, ImageFilter

from searchcore.build import build_index
from searchcore.catalog import load_catalog
from searchcore.config import UpscaleSettings
from searchcore.engine import Filters, SearchEngine
from searchcore.errors import ConfigError, ImageError, SearchError, UpscaleError
from searchcore.stores.hnsw import HnswIndex


class DoublingUpscaler:
    """Upscales x2 with nearest neighbour and counts its calls."""

    name, scale = "fake-x2", 2

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def upscale(self, img: Image.Image) -> Image.Image:
        with self.lock:
            self.calls += 1
        return img.resize((img.width * 2, img.height * 2), Image.Resampling.NEAREST)


@pytest.fixture
def engine(colour_catalog: Path, fake_embedder, tmp_path: Path) -> SearchEngine:
    catalog = load_catalog(colour_catalog)
    report = build_index(catalog, fake_embedder, tmp_path / "index", batch_size=5)
    assert report.indexed == 24 and not report.skipped
    index, _ = HnswIndex.load(tmp_path / "index")
    return SearchEngine(
        catalog,
        fake_embedder,
        DoublingUpscaler(),
        index,
        upscale=UpscaleSettings(min_side=64, min_sharpness=5.0),
    )


class BulkyColourEmbedder(ColourEmbedder):
    """Prepares each photo as 3 MB (a banner's worth), embeds slowly, counts what waits.

    A batch embedder (prepare/collate) on a device other than the CPU: the build feeds its one
    lane from decoding threads, the pipeline whose read-ahead is bounded."""

    device = "accelerator"

    def __init__(self) -> None:
        super().__init__()
        self.waiting = self.peak = 0
        self.lock = threading.Lock()

    def prepare(self, img: Image.Image) -> np.ndarray:
        with self.lock:
            self.waiting += 1
            self.peak = max(self.peak, self.waiting)
        return np.tile(np.asarray(self.preprocess(img)), (2**18, 1))

    def collate(self, arrays: list[np.ndarray]) -> np.ndarray:
        time.sleep(0.05)
        with self.lock:
            self.waiting -= len(arrays)
        return np.stack([a[0] for a in arrays])


def test_build_read_ahead_is_bounded_in_bytes(
    colour_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import searchcore.build

    catalog = load_catalog(colour_catalog)
    free = BulkyColourEmbedder()  # 256 MB allow the full read-ahead: 3 batches of 4
    build_index(catalog, free, tmp_path / "a", batch_size=4, workers=2)
    monkeypatch.setattr(searchcore.build, "READ_AHEAD_BYTES", 6 * 2**20)  # two of them
    tight = BulkyColourEmbedder()
    report = build_index(catalog, tight, tmp_path / "b", batch_size=4, workers=2)
    assert report.indexed == 24 and tight.waiting == free.waiting == 0
    # one per worker and one more may wait, besides the batch being filled
    assert tight.peak <= 3 + 3 < free.peak
    a, b = HnswIndex.load(tmp_path / "a")[0], HnswIndex.load(tmp_path / "b")[0]
    np.testing.assert_allclose(a.get_vectors(list(range(24))), b.get_vectors(list(range(24))))


def _photo(colour: str, size: int = 200, blur: float = 0) -> Image.Image:
    img = Image.new("RGB", (size, size), COLOURS[colour])
    img.paste((255, 255, 255), (0, 0, size // 10, size // 10))  # some edges: sharp photo
    return img.filter(ImageFilter.GaussianBlur(blur)) if blur else img


def test_text_query_ranks_the_named_colour_first(engine: SearchEngine) -> None:
    result = engine.search_text("a red cap", k=4)
    assert [h.fields["colour"] for h in result.hits] == ["red"] * 4
    assert [h.rank for h in result.hits] == [1, 2, 3, 4]
    assert result.hits[0].score > 0.99
    assert set(result.timings_ms) >= {"embed_text", "search", "assemble", "total"}
    assert result.decision is None and not result.upscaled


def test_image_query_reports_stages_and_no_upscale_for_a_sharp_photo(engine: SearchEngine) -> None:
    result = engine.search_image(_photo("green"), k=3)
    assert [h.fields["colour"] for h in result.hits] == ["green"] * 3
    assert not result.upscaled and "sharp" in result.decision.reason
    assert result.embedded is result.original
    for stage in ("decode", "upscale_check", "embed", "search", "assemble", "total"):
        assert result.timings_ms[stage] >= 0
    assert engine.upscaler.calls == 0


def test_small_photo_is_upscaled_and_the_upscaled_image_is_embedded(engine: SearchEngine) -> None:
    result = engine.search_image(_photo("blue", size=40), k=2)
    assert result.upscaled and "small" in result.decision.reason
    assert result.embedded.size == (80, 80) and result.original.size == (40, 40)
    assert "upscale" in result.timings_ms and engine.upscaler.calls == 1
    never = engine.search_image(_photo("blue", size=40), k=2, upscale="never")
    assert not never.upscaled and engine.upscaler.calls == 1


def test_blurry_large_photo_is_upscaled_in_auto(engine: SearchEngine) -> None:
    result = engine.search_image(_photo("yellow", size=300, blur=8), k=1)
    assert result.upscaled and "blurry" in result.decision.reason


def test_image_plus_text(engine: SearchEngine) -> None:
    # A red photo refined with "blue" at weight 1.0 is a blue query; at 0.0 a red one.
    assert (
        engine.search(image=_photo("red"), text="blue", text_weight=1.0, k=1)
        .hits[0]
        .fields["colour"]
        == "blue"
    )
    assert (
        engine.search(image=_photo("red"), text="blue", text_weight=0.0, k=1)
        .hits[0]
        .fields["colour"]
        == "red"
    )
    # In between, the weight decides which side wins.
    assert (
        engine.search(image=_photo("red"), text="blue", text_weight=0.3, k=1)
        .hits[0]
        .fields["colour"]
        == "red"
    )
    assert (
        engine.search(image=_photo("red"), text="blue", text_weight=0.7, k=1)
        .hits[0]
        .fields["colour"]
        == "blue"
    )


def test_filters_and_k(engine: SearchEngine) -> None:
    r = engine.search_text("red", k=10, filters=Filters(category="MUGS"))
    assert len(r.hits) == 10 and {h.fields["category"] for h in r.hits} == {"mugs"}
    r = engine.search_text("red", k=10, filters=Filters(min_price=50, max_price=100))
    assert sorted(float(h.price) for h in r.hits) == [50, 60, 70, 80, 90, 100]
    assert len(engine.search_text("red", k=500).hits) == 24
    assert engine.search_text("red", filters=Filters(category="hats")).hits == []
    with pytest.raises(ConfigError):
        Filters(min_price=10, max_price=5)


def test_more_like_this_leaves_the_product_out(engine: SearchEngine) -> None:
    r = engine.similar("00000", k=3)  # product 0 is red
    assert "00000" not in [h.id for h in r.hits]
    assert [h.fields["colour"] for h in r.hits] == ["red"] * 3 and r.hits[0].rank == 1
    with pytest.raises(SearchError):
        engine.similar("nope")


def test_bad_queries_give_clear_errors(engine: SearchEngine) -> None:
    with pytest.raises(ImageError):
        engine.search_image(b"not an image")
    with pytest.raises(SearchError, match="photo, a description"):
        engine.search(text="   ")
    with pytest.raises(ConfigError):
        engine.search_text("red", k=0)
    with pytest.raises(ConfigError):
        engine.search_text("red", upscale="sometimes")
    assert engine.search_text("red", k=1).hits  # still answering


def test_missing_upscaler(engine: SearchEngine) -> None:
    engine.upscaler, engine.upscaler_problem = None, "no weights offline"
    auto = engine.search_image(_photo("blue", size=40), k=1)
    assert not auto.upscaled and "no weights offline" in auto.notes[0]
    with pytest.raises(UpscaleError, match="no weights offline"):
        engine.search_image(_photo("blue", size=40), k=1, upscale="always")


def test_text_embeddings_are_cached(engine: SearchEngine, monkeypatch) -> None:
    calls = []
    original = engine.embedder.embed_texts
    monkeypatch.setattr(engine.embedder, "embed_texts", lambda t: calls.append(t) or original(t))
    engine.search_text("Red  Cap")
    engine.search_text("red cap")
    assert len(calls) == 1


def test_concurrent_queries(engine: SearchEngine) -> None:
    expected = [h.id for h in engine.search_image(_photo("black", size=40), k=4).hits]
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(10):
                assert [
                    h.id for h in engine.search_image(_photo("black", size=40), k=4).hits
                ] == expected
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


@pytest.mark.parametrize("lanes", [1, 3])
def test_build_skips_broken_images(
    colour_catalog: Path, fake_embedder, tmp_path: Path, lanes: int
) -> None:
    (colour_catalog.parent / "images" / "00003.png").write_bytes(b"junk")
    (colour_catalog.parent / "images" / "00004.png").unlink()
    report = build_index(
        load_catalog(colour_catalog), fake_embedder, tmp_path / "ix", batch_size=5, lanes=lanes
    )
    assert report.indexed == 22
    assert sorted(s["id"] for s in report.skipped) == ["00003", "00004"]
    assert "skipped 2" in report.summary()
    index, manifest = HnswIndex.load(tmp_path / "ix")
    assert len(manifest.skipped) == 2 and 3 not in index.live_labels()
    assert np.array_equal(index.live_labels(), np.array([i for i in range(24) if i not in (3, 4)]))


def test_auto_skips_an_upscaler_measured_not_to_help(engine: SearchEngine) -> None:
    engine.auto_skip = "upscaling skipped: it did not raise Recall@1 for this model"
    auto = engine.search_image(_photo("blue", size=40), k=1)
    assert (
        not auto.upscaled
        and "small" in auto.decision.reason
        and "did not raise" in auto.decision.reason
    )
    forced = engine.search_image(_photo("blue", size=40), k=1, upscale="always")
    assert forced.upscaled


def test_auto_upscales_where_the_verdict_says_it_helps(engine: SearchEngine) -> None:
    """A width-aware verdict: photos under 30 px are upscaled, wider small ones are not."""
    engine.auto_skip = lambda width: None if width < 30 else f"no gain at {width} px"
    tiny = engine.search_image(_photo("blue", size=24), k=1)
    assert tiny.upscaled and tiny.embedded.size == (48, 48)
    wider = engine.search_image(_photo("blue", size=40), k=1)
    assert not wider.upscaled and "no gain at 40 px" in wider.decision.reason
    from searchcore.upscale.verdict import AutoRule

    band = {"lo": 0, "hi": 30, "label": "0-29 px", "helps": True, "delta_R@1": 0.04}
    verdict = {"helps": False, "bands": [{**band, "p": 0.01}], "fingerprint": "w"}
    engine.auto_skip = AutoRule(verdict, "w")
    tiny = engine.search_image(_photo("blue", size=24), k=1)  # the reason says what was measured
    assert (
        tiny.upscaled and "measured to help this model at 0-29 px (+0.040" in tiny.decision.reason
    )
