"""Forgiving catalogs: rows with problems are left out (and listed), the build goes on; strict on
request; too many bad rows refuse the catalog; every reload leaves out the very same rows."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import ColourEmbedder, png, write_catalog
from PIL import Image

from searchcore.build import build_index
from searchcore.catalog import load_catalog
from searchcore.cli import main
from searchcore.config import Settings, UpscaleSettings
from searchcore.errors import CatalogError, ConfigError, IndexMismatchError
from searchcore.images import decode_image
from searchcore.live import LiveShop, check_invariants
from searchcore.service import open_engine, open_or_build

SETTINGS = Settings(upscale=UpscaleSettings(mode="never"))
GOOD = [f"g{i}" for i in range(8)]
# (row as in the file: the header is row 1, the first product row 2) of each bad row
LEFT_OUT = {
    4: ("t", "empty title"),
    6: ("p", "price 'cheap' is not a number"),
    8: ("u", "leaves the catalog folder"),
    10: ("g0", "duplicate id 'g0' (first on row 2)"),
}


def _photo(i: int) -> Image.Image:
    """A distinct, noisy colour per product (noise: the pixel model needs some variance)."""
    base = np.array([(37 * i) % 256, (91 * i + 60) % 256, (53 * i + 120) % 256], np.float32)
    noise = np.random.default_rng(i).normal(0, 8, (32, 32, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _row(pid: str, i: int, **change: str) -> dict:
    return {"id": pid, "title": f"Product {pid}", "image": f"images/{i}.png", "price": "9.50"} | (
        change
    )


@pytest.fixture
def messy(tmp_path: Path) -> Path:
    """8 good products and, between them, an empty title, a bad price, a path out of the
    catalog folder and a repeated id (the repeat has its own photo)."""
    rows = [
        _row("g0", 0),
        _row("g1", 1),
        _row("t", 20, title=" "),
        _row("g2", 2),
        _row("p", 21, price="cheap"),
        _row("g3", 3),
        _row("u", 22, image="../x.png"),
        _row("g4", 4),
        _row("g0", 23),
        *(_row(f"g{i}", i) for i in range(5, 8)),
    ]
    images = {f"images/{i}.png": _photo(i) for i in [*range(8), 20, 21, 23]}
    return write_catalog(tmp_path / "shop", rows, images)


def _few_good(tmp_path: Path, good: int, bad: int) -> Path:
    rows = [_row(f"g{i}", i) for i in range(good)]
    rows += [_row(f"b{i}", i, title="") for i in range(bad)]
    return write_catalog(tmp_path / "few", rows, {f"images/{i}.png": _photo(i) for i in range(8)})


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _build(argv: list[str]) -> int:
    return main(["index", "build", *argv, "--model", "pixels:8", "--no-progress"])


def test_rows_with_problems_are_left_out_and_the_build_goes_on(messy: Path) -> None:
    catalog = load_catalog(messy)
    assert catalog.df["id"].tolist() == GOOD  # the first g0 kept, the repeat left out
    assert len(catalog.left_out) == 4 and catalog.report.rows == 12
    out = messy.parent / "index"
    report = build_index(catalog, ColourEmbedder(), out)
    assert report.indexed == 8 and report.rows == 12
    listed = {r["row"]: (r["id"], r["reason"]) for r in report.left_out}
    assert listed.keys() == LEFT_OUT.keys()
    for row, (pid, reason) in LEFT_OUT.items():
        assert listed[row][0] == pid and reason in listed[row][1]
    text = report.summary()
    assert "left out 4 of 12 catalog rows" in text and "row 4 (id t): empty title" in text

    record = _manifest(out)["catalog"]
    assert record["strict"] is False and record["rows"] == 8
    assert record["left_out"]["count"] == 4
    assert [r["row"] for r in record["left_out"]["rows"]] == sorted(LEFT_OUT)
    assert "leaves the catalog folder" in record["left_out"]["rows"][2]["reason"]

    # reopened: the same rows are left out, and every label is its catalog row
    engine = open_engine(SETTINGS, out, embedder=ColourEmbedder())
    assert engine.catalog.df["id"].tolist() == GOOD
    photos = [decode_image(p) for p in engine.catalog.image_paths()]
    expected = ColourEmbedder().embed_images(photos)
    assert np.allclose(engine.index.get_vectors(list(range(8))), expected, atol=1e-5)
    for i, pid in enumerate(GOOD):
        hit = engine.search_image(photos[i], k=1).hits[0]
        assert hit.id == pid and hit.title == f"Product {pid}"


def test_strict_refuses_the_whole_catalog(messy: Path, capsys) -> None:
    with pytest.raises(CatalogError, match=r"refused: row 10 \(id g0\): duplicate id.*more"):
        load_catalog(messy, strict=True)
    out = messy.parent / "index"
    assert _build(["--catalog", str(messy), "--out", str(out), "--strict"]) != 0
    err = capsys.readouterr().err
    assert err.startswith("searchcore: error: catalog products.csv refused:")
    assert "catalog validate" in err and not (out / "manifest.json").exists()
    with pytest.raises(CatalogError, match="refused"):  # the app's start-up build too
        open_or_build(SETTINGS.with_(model="pixels:8", strict_catalog=True), messy, str(out))
    # an index built forgivingly is not served once strict is asked: it is rebuilt, and refused
    open_or_build(SETTINGS.with_(model="pixels:8"), messy, str(out))
    with pytest.raises(CatalogError, match="refused"):
        open_or_build(SETTINGS.with_(model="pixels:8", strict_catalog=True), messy, str(out))


def test_too_many_bad_rows_refuse_the_catalog(tmp_path: Path, capsys) -> None:
    csv = _few_good(tmp_path, good=2, bad=3)
    with pytest.raises(CatalogError, match=r"3 of 5 rows \(60%\) are bad.*--max-bad-fraction 0.5"):
        load_catalog(csv)
    out = tmp_path / "index"
    assert _build(["--catalog", str(csv), "--out", str(out)]) != 0
    assert "3 of 5 rows (60%) are bad" in capsys.readouterr().err
    assert not (out / "manifest.json").exists()

    assert _build(["--catalog", str(csv), "--out", str(out), "--max-bad-fraction", "0.9"]) == 0
    assert "left out 3 of 5 catalog rows" in capsys.readouterr().out
    assert len(open_engine(SETTINGS, out).catalog) == 2
    # exactly half is not more than half
    assert len(load_catalog(_few_good(tmp_path / "half", good=2, bad=2))) == 2
    with pytest.raises(ConfigError, match="between 0 and 1"):
        load_catalog(csv, max_bad_fraction=1.5)


def test_photos_that_fail_count_as_bad_rows(tmp_path: Path) -> None:
    rows = [_row("a", 0), _row("b", 1), _row("c", 2, title=""), _row("d", 3), _row("e", 4)]
    csv = write_catalog(tmp_path / "s", rows, {f"images/{i}.png": _photo(i) for i in range(5)})
    (csv.parent / "images" / "3.png").unlink()  # missing: seen when loading
    (csv.parent / "images" / "4.png").write_bytes(b"<html>not a photo</html>")  # when embedding
    catalog = load_catalog(csv)  # 2 of 5 bad as far as loading can tell: not refused
    assert catalog.df["id"].tolist() == ["a", "b", "d", "e"]
    assert [p.row for p in catalog.report.missing_images] == [3]  # the file's row, not the label
    out = tmp_path / "index"
    with pytest.raises(CatalogError, match=r"3 of 5 rows \(60%\)"):
        build_index(catalog, ColourEmbedder(), out)
    assert not (out / "manifest.json").exists()
    report = build_index(catalog, ColourEmbedder(), out, max_bad_fraction=0.6)
    assert report.indexed == 2 and {s["id"] for s in report.skipped} == {"d", "e"}
    assert [r["id"] for r in report.left_out] == ["c"]


def test_cli_build_and_validate_list_the_rows_left_out(messy: Path, capsys) -> None:
    out = messy.parent / "index"
    assert _build(["--catalog", str(messy), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "indexed 8 products" in text and "left out 4 of 12 catalog rows" in text
    for row, (pid, reason) in LEFT_OUT.items():
        assert f"row {row} (id {pid}): " in text and reason in text
    assert open_engine(SETTINGS, out).catalog.df["id"].tolist() == GOOD

    validate = ["catalog", "validate", "--catalog", str(messy)]
    assert main(validate) == 0  # a build would go on: listed, not refused
    text = capsys.readouterr().out
    assert "left out: 4" in text and "row 6 (id p): price 'cheap' is not a number" in text
    assert main([*validate, "--strict"]) == 1
    assert "refused: 4" in capsys.readouterr().out
    assert main([*validate, "--json", "--max-bad-fraction", "0.2"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [r["row"] for r in report["left_out"]] == sorted(LEFT_OUT)
    assert "4 of 12 rows (33%) are bad" in report["refused"]
    assert main([*validate, "--max-bad-fraction", "2"]) == 2  # a ConfigError


def test_a_reload_must_leave_out_the_same_rows(tmp_path: Path) -> None:
    """Which row is left out can depend on a symlink, not only on the file: a reload that
    leaves out another row (the count unchanged) would shift labels, so it is refused."""
    outside = tmp_path / "outside.png"
    _photo(9).save(outside)
    rows = [_row(f"g{i}", i) for i in range(4)] + [_row("s1", 0, image="images/s1.png")]
    rows.append(_row("s2", 0, image="images/s2.png"))
    csv = write_catalog(tmp_path / "s", rows, {f"images/{i}.png": _photo(i) for i in range(4)})
    os.symlink(csv.parent / "images" / "0.png", csv.parent / "images" / "s1.png")
    os.symlink(outside, csv.parent / "images" / "s2.png")  # left out
    out = tmp_path / "index"
    build_index(load_catalog(csv), ColourEmbedder(), out)
    assert "s2" not in open_engine(SETTINGS, out, embedder=ColourEmbedder()).catalog.df["id"]
    for name, target in (("s1.png", outside), ("s2.png", csv.parent / "images" / "0.png")):
        (csv.parent / "images" / name).unlink()
        os.symlink(target, csv.parent / "images" / name)
    with pytest.raises(IndexMismatchError, match="changed since"):
        open_engine(SETTINGS, out, embedder=ColourEmbedder())


def test_older_manifests_without_the_new_keys_still_open(tmp_path: Path) -> None:
    csv = _few_good(tmp_path, good=3, bad=0)
    out = tmp_path / "index"
    build_index(load_catalog(csv, strict=True), ColourEmbedder(), out)
    manifest = _manifest(out)
    assert manifest["catalog"]["strict"] is True and manifest["catalog"]["left_out"]["count"] == 0
    for key in ("strict", "left_out"):
        del manifest["catalog"][key]
    (out / "manifest.json").write_text(json.dumps(manifest))
    assert len(open_engine(SETTINGS, out, embedder=ColourEmbedder()).catalog) == 3


def test_a_live_shop_over_a_forgiving_build_still_refuses_bad_products(messy: Path) -> None:
    out = messy.parent / "index"
    build_index(load_catalog(messy), ColourEmbedder(), out)
    shop = LiveShop(open_engine(SETTINGS, out, embedder=ColourEmbedder()), out)
    with pytest.raises(CatalogError, match="needs title"):
        shop.add([{"id": "new", "title": " "}], [png((1, 2, 3))])
    with pytest.raises(CatalogError):
        shop.update("g1", {"price": "cheap"})
    shop.add([{"id": "new", "title": "New mug"}], [png((200, 0, 90))])
    again = LiveShop(open_engine(SETTINGS, out, embedder=ColourEmbedder()), out)
    assert check_invariants(again) == [] and again.live_ids == [*GOOD, "new"]


def test_catalog_check_lists_the_rows_the_build_left_out_after_live_changes_too(
    messy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = messy.parent / "index"
    assert _build(["--catalog", str(messy), "--out", str(out)]) == 0
    shop = LiveShop(open_engine(SETTINGS, out), out)
    shop.add([{"id": "new", "title": "New mug"}], [png((200, 0, 90))])  # a live commit
    capsys.readouterr()
    assert main(["catalog", "check", "--index", str(out)]) == 0
    said = capsys.readouterr().out
    assert "9 products live; ok" in said
    assert "4 catalog rows were left out when the index was built:" in said
    assert "row 4 (id t): empty title" in said and "row 10 (id g0): duplicate id" in said


def test_settings_from_the_environment() -> None:
    env = {"SEARCHCORE_STRICT_CATALOG": "1", "SEARCHCORE_MAX_BAD_FRACTION": "0.9"}
    settings = Settings.from_env(env)
    assert settings.strict_catalog is True and settings.max_bad_fraction == 0.9
    assert Settings.from_env({}).strict_catalog is False
    assert Settings.from_env({}).max_bad_fraction == 0.5
    with pytest.raises(ConfigError, match="SEARCHCORE_MAX_BAD_FRACTION"):
        Settings.from_env({"SEARCHCORE_MAX_BAD_FRACTION": "half"})
