"""Wiring: open-or-build, and the calibrated "no good match" threshold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from searchcore.calibrate import CALIBRATION_FILE, MatchGate, calibrate
from searchcore.config import Settings, UpscaleSettings
from searchcore.service import open_engine, open_or_build


@pytest.fixture
def settings(tiny_clip: str) -> Settings:
    return Settings(model=tiny_clip, upscale=UpscaleSettings(mode="never"))


def test_open_or_build_builds_once_then_reuses(
    settings: Settings, colour_catalog: Path, tmp_path: Path
) -> None:
    said: list[str] = []
    index = str(tmp_path / "ix")
    open_or_build(settings, colour_catalog, index, say=said.append, progress=False)
    assert any("building the index" in m for m in said)
    said.clear()
    engine = open_or_build(settings, colour_catalog, index, say=said.append, progress=False)
    assert said == [] and len(engine.index) == 24


def test_open_or_build_rebuilds_for_another_model(
    settings: Settings, colour_catalog: Path, tmp_path: Path
) -> None:
    index = str(tmp_path / "ix")
    open_or_build(settings, colour_catalog, index, progress=False)
    said: list[str] = []
    other = settings.with_(model="random:sc-small")
    engine = open_or_build(other, colour_catalog, index, say=said.append, progress=False)
    assert any("built for model" in m for m in said) and engine.embedder.spec == "random:sc-small"


def test_an_index_whose_manifest_records_a_bare_architecture_opens(
    settings: Settings, colour_catalog: Path, tmp_path: Path
) -> None:
    index = tmp_path / "ix"
    open_or_build(settings, colour_catalog, str(index), progress=False)
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["model"]["spec"] = settings.model.removeprefix("random:")  # as written before
    (index / "manifest.json").write_text(json.dumps(manifest))
    engine = open_engine(settings, index)
    assert engine.embedder.spec == settings.model and len(engine.index) == 24


def test_open_or_build_draws_the_demo_shop(settings: Settings, tmp_path: Path, monkeypatch) -> None:
    import searchcore.demo.synth as synth

    real = synth.generate_catalog
    monkeypatch.setattr(
        synth, "generate_catalog", lambda out, progress=False: real(out, n=30, size=64)
    )
    engine = open_or_build(
        settings,
        tmp_path / "demo" / "products.csv",
        str(tmp_path / "demo" / "index"),
        demo=True,
        progress=False,
    )
    assert len(engine.catalog) == 30


def test_calibration_is_cached_and_reported(
    settings: Settings, colour_catalog: Path, tmp_path: Path
) -> None:
    index = str(tmp_path / "ix")
    engine = open_or_build(settings, colour_catalog, index, progress=False)
    gate = calibrate(engine, index, percentile=10, n=20)
    assert isinstance(gate, MatchGate) and -1 <= gate.image <= 1 and -1 <= gate.text <= 1
    assert "10th percentile" in gate.how and "non-product images" in gate.how
    saved = json.loads((Path(index) / CALIBRATION_FILE).read_text())
    assert saved["image"] == gate.image
    again = calibrate(open_engine(settings, index), index, percentile=10, n=20)
    assert again == gate
    assert (
        calibrate(engine, index, percentile=50, n=20).image >= gate.image
    )  # a new key: recalibrated
    assert gate.threshold(True, True, 0.25) == pytest.approx(0.75 * gate.image + 0.25 * gate.text)


def test_a_cold_start_build_takes_every_core_then_serves_on_one_thread(
    settings: Settings, colour_catalog: Path, tmp_path: Path, monkeypatch
) -> None:
    import torch

    import searchcore.build
    from searchcore.config import usable_cpus

    asked: list[int | None] = []
    real = searchcore.build.build_index

    def spy(*args, **kwargs):
        asked.append(kwargs.get("lanes"))
        return real(*args, **kwargs)

    monkeypatch.setattr(searchcore.build, "build_index", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # what app.py serves with
    try:
        engine = open_or_build(settings, colour_catalog, str(tmp_path / "ix"), progress=False)
        assert torch.get_num_threads() == 1  # the lanes gave the serving setting back
    finally:
        torch.set_num_threads(before)
    assert asked == [usable_cpus()] and len(engine.index) == 24


def test_calibration_is_saved_under_the_writers_lock(tmp_path: Path, monkeypatch) -> None:
    """The match gate's cache is a write to the index folder: it waits for the writers' lock
    (and is skipped, not forced, when a writer holds it too long)."""
    from conftest import ColourEmbedder, write_catalog

    import searchcore.calibrate as cal
    from searchcore.build import build_index
    from searchcore.catalog import load_catalog
    from searchcore.config import Settings, UpscaleSettings
    from searchcore.fsutil import folder_lock
    from searchcore.service import open_engine

    rows = [{"id": str(i), "title": f"red {i}", "image": f"{i}.png"} for i in range(6)]
    csv = write_catalog(
        tmp_path / "s",
        rows,
        {f"{i}.png": Image.new("RGB", (32, 32), (40 * i, 0, 0)) for i in range(6)},
    )
    build_index(load_catalog(csv), ColourEmbedder(), tmp_path / "ix")
    engine = open_engine(
        Settings(upscale=UpscaleSettings(mode="never")), tmp_path / "ix", embedder=ColourEmbedder()
    )
    real = cal.folder_lock
    monkeypatch.setattr(cal, "folder_lock", lambda folder, timeout: real(folder, timeout=0.2))
    with folder_lock(tmp_path / "ix"):  # a writer is committing: the cache is not written
        cal.calibrate(engine, str(tmp_path / "ix"), n=6)
    assert not (tmp_path / "ix" / cal.CALIBRATION_FILE).exists()
    cal.calibrate(engine, str(tmp_path / "ix"), n=6)
    assert (tmp_path / "ix" / cal.CALIBRATION_FILE).is_file()


def test_an_index_serves_the_upscaler_it_records(colour_catalog: Path, tmp_path: Path) -> None:
    """What ``tune`` relies on: the index records the upscaler trained for its model, and
    searches of it use that one without being told (an explicit upscaler still wins); a
    recorded upscaler that is gone or changed is never swapped for an unmeasured one."""
    import shutil

    from conftest import ColourEmbedder

    from searchcore.build import build_index
    from searchcore.catalog import load_catalog
    from searchcore.errors import UpscaleError, WeightsError
    from searchcore.stores.manifest import read_manifest
    from searchcore.upscale import FOLDER_CONFIG, SHIPPED_UPSCALER_DIR

    shop = colour_catalog.parent
    up = shop / "upscaler"
    shutil.copytree(SHIPPED_UPSCALER_DIR, up)
    config = json.loads((up / FOLDER_CONFIG).read_text())
    (up / FOLDER_CONFIG).write_text(json.dumps({**config, "name": "shop-up"}))
    catalog = load_catalog(colour_catalog)
    with pytest.raises(WeightsError, match=r"no upscaler_config\.json"):  # a name, not a folder
        build_index(catalog, ColourEmbedder(), shop / "bad", upscaler="realesr-general-x4v3")
    assert not (shop / "bad").exists()  # refused before anything was written
    build_index(catalog, ColourEmbedder(), shop / "index", upscaler=up)
    record = read_manifest(shop / "index").upscaler
    assert record is not None and record.name == "shop-up" and record.relative_path == "../upscaler"
    assert read_manifest(shop / "index").carried()["upscaler"] == record.to_dict()  # live commits

    def opened(folder: Path, **kw: object):
        return open_engine(Settings(**kw), folder, embedder=ColourEmbedder())  # type: ignore[arg-type]

    engine = opened(shop / "index")
    assert engine.upscaler.name == "shop-up"
    small = engine.search(image=Image.new("RGB", (24, 24), (200, 30, 30)), k=3, upscale="auto")
    assert small.upscaled and small.to_dict()["upscale"]["upscaler"] == "shop-up"  # the answer says
    assert opened(shop / "index", upscaler="default").upscaler.name == config["name"]
    moved = tmp_path / "moved"
    shutil.move(shop, moved)  # the shop folder moved as a whole: found beside the index
    assert opened(moved / "index").upscaler.name == "shop-up"
    weights = moved / "upscaler" / config["weights"]
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")  # other weights than recorded
    for damage in ("weights changed", "folder gone"):
        engine = opened(moved / "index")
        assert engine.upscaler is None, damage
        assert "not found with those weights" in str(engine.upscaler_problem)
        shutil.rmtree(moved / "upscaler", ignore_errors=True)
    photo = Image.new("RGB", (24, 24), (200, 30, 30))
    hits = engine.search(image=photo, k=3, upscale="auto")
    assert len(hits.hits) == 3 and not hits.upscaled  # searches go on, saying why
    assert "upscaler" not in hits.to_dict()["upscale"]
    assert any("not found with those weights" in n for n in hits.notes)
    with pytest.raises(UpscaleError, match="not found with those weights"):
        engine.search(image=photo, k=3, upscale="always")  # asked for: a clear error


def test_a_damaged_upscaler_record_is_ignored(colour_catalog: Path, tmp_path: Path) -> None:
    """A manifest's upscaler entry that is not an object, or lacks a text name and sha256, names
    no upscaler: the index opens and serves with the default one."""
    from conftest import ColourEmbedder

    from searchcore.build import build_index
    from searchcore.catalog import load_catalog
    from searchcore.stores.manifest import UpscalerRecord
    from searchcore.upscale import SHIPPED_UPSCALER_DIR, load_upscaler_folder

    for raw in (None, "x", [], {"name": "a"}, {"name": 1, "sha256": "b"}, {"sha256": None}):
        assert UpscalerRecord.parse(raw) is None
    index = tmp_path / "ix"
    build_index(load_catalog(colour_catalog), ColourEmbedder(), index)
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["upscaler"] = {"name": ["not", "text"], "sha256": {}}
    (index / "manifest.json").write_text(json.dumps(manifest))
    engine = open_engine(Settings(), index, embedder=ColourEmbedder())
    shipped = load_upscaler_folder(SHIPPED_UPSCALER_DIR)[0].name
    assert engine.upscaler is not None and engine.upscaler.name == shipped
