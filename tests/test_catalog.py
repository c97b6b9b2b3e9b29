from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from conftest import SHARED_CATALOG, needs_shared, write_catalog
from PIL import Image

from searchcore.catalog import load_catalog
from searchcore.config import parse_column_map
from searchcore.errors import CatalogError, ConfigError


def _img() -> Image.Image:
    return Image.new("RGB", (32, 32), (200, 10, 10))


def _rows(n: int = 3) -> list[dict]:
    return [
        {"id": f"{i:05d}", "title": f"Product {i}", "image": f"images/{i}.png", "price": "9.99"}
        for i in range(n)
    ]


def _shop(tmp_path: Path, rows: list[dict], images: bool = True, **kw) -> Path:
    imgs = {r["image"]: _img() for r in rows if images and r["image"].startswith("images/")}
    return write_catalog(tmp_path / "shop", rows, imgs, **kw)


def _kinds(err: CatalogError) -> set[str]:
    return {p.kind for p in err.report.errors}


def test_text_is_kept_as_text(tmp_path: Path) -> None:
    rows = _rows(2)
    rows[1]["title"] = "NA"
    cat = load_catalog(_shop(tmp_path, rows))
    assert cat.df["id"].tolist() == ["00000", "00001"]
    assert cat.df["title"].iat[1] == "NA"
    assert cat.prices.tolist() == [9.99, 9.99]
    assert cat.report.ok


def test_parquet_and_extra_columns(tmp_path: Path) -> None:
    rows = _rows(2)
    for r in rows:
        r["brand"] = "Acme"
    path = _shop(tmp_path, rows)
    pq = path.with_suffix(".parquet")
    pd.read_csv(path, dtype=str).to_parquet(pq)
    cat = load_catalog(pq)
    assert cat.df["brand"].tolist() == ["Acme", "Acme"]
    assert cat.df["id"].tolist() == ["00000", "00001"]


def test_column_mapping(tmp_path: Path) -> None:
    rows = [{"sku": "1", "name": "Red cap", "photo": "images/1.png", "kind": "caps"}]
    path = write_catalog(tmp_path / "s", rows, {"images/1.png": _img()})
    cat = load_catalog(
        path, parse_column_map(["id=sku", "title=name", "image=photo", "category=kind"])
    )
    assert cat.df.loc[0, ["id", "title", "image", "category"]].tolist() == [
        "1",
        "Red cap",
        "images/1.png",
        "caps",
    ]


def test_missing_columns_name_the_fix(tmp_path: Path) -> None:
    path = write_catalog(tmp_path / "s", [{"id": "1", "name": "x", "image": "a.png"}])
    with pytest.raises(CatalogError, match=r"missing column.*title.*--map title="):
        load_catalog(path)
    with pytest.raises(CatalogError, match="'nope'"):
        load_catalog(path, [("title", "nope")])


def test_bad_mapping_syntax() -> None:
    with pytest.raises(ConfigError):
        parse_column_map(["title"])
    with pytest.raises(ConfigError):
        parse_column_map(["title=a", "title=b"])


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"id": "00000"}, "id"),  # duplicate of row 0
        ({"id": "  "}, "id"),
        ({"title": " "}, "title"),
        ({"price": "cheap"}, "price"),
        ({"price": "-3"}, "price"),
        ({"price": "inf"}, "price"),
        ({"image": "/etc/passwd"}, "image_path"),
        ({"image": "../outside.png"}, "image_path"),
        ({"image": "images/../../outside.png"}, "image_path"),
        ({"image": "C:\\photos\\a.png"}, "image_path"),
        ({"title": "bad\x00title"}, "nul"),
    ],
)
def test_refused_rows(tmp_path: Path, change: dict, kind: str) -> None:
    rows = _rows(3)
    rows[2].update(change)
    path = _shop(tmp_path, rows)
    with pytest.raises(CatalogError) as info:
        load_catalog(path, strict=True)
    assert kind in _kinds(info.value)
    assert "catalog validate" in str(info.value)
    # not strict (the default): the row is left out and listed, the rest loads
    cat = load_catalog(path)
    report = cat.report
    assert not report.ok and any(p.row == 2 for p in report.errors)
    assert [(p.row, p.kind) for p in report.left_out] == [(2, kind)]
    assert cat.df["id"].tolist() == ["00000", "00001"] and len(cat.left_out) == 1


def test_symlink_out_of_the_catalog_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret.png"
    _img().save(outside)
    rows = _rows(2)
    path = _shop(tmp_path, rows)
    link = path.parent / "images" / "link.png"
    os.symlink(outside, link)
    rows.append({"id": "x", "title": "t", "image": "images/link.png", "price": ""})
    pd.DataFrame(rows).to_csv(path, index=False)
    with pytest.raises(CatalogError) as info:
        load_catalog(path, strict=True)
    assert "symlink" in str(info.value.report.errors[0])
    cat = load_catalog(path)  # not strict: the row is left out, the photo never opened
    assert "x" not in cat.df["id"].tolist() and "symlink" in cat.left_out[0].message


def test_symlink_inside_the_catalog_is_fine(tmp_path: Path) -> None:
    rows = _rows(1)
    path = _shop(tmp_path, rows)
    os.symlink(path.parent / "images" / "0.png", path.parent / "images" / "alias.png")
    rows.append({"id": "y", "title": "t", "image": "images/alias.png", "price": ""})
    pd.DataFrame(rows).to_csv(path, index=False)
    assert load_catalog(path).report.ok


def test_missing_and_broken_images_are_listed_not_refused(tmp_path: Path) -> None:
    rows = _rows(4)
    path = _shop(tmp_path, rows)
    (path.parent / "images" / "1.png").unlink()
    (path.parent / "images" / "2.png").write_bytes(b"<html>not an image</html>")
    cat = load_catalog(path, check_images=True)  # not refused
    report = cat.report
    assert [p.id for p in report.missing_images] == ["00001"]
    assert [p.id for p in report.bad_images] == ["00002"]
    assert not report.ok
    assert "missing images: 1" in report.summary()
    # without decoding, only the missing file is seen
    assert load_catalog(path).report.bad_images == []


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="not found"):
        load_catalog(tmp_path / "nope.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes("id,title,image\n1,caf\xe9,a.png\n".encode("latin-1"))
    with pytest.raises(CatalogError, match="UTF-8"):
        load_catalog(bad)
    other = tmp_path / "x.xlsx"
    other.write_bytes(b"PK")
    with pytest.raises(CatalogError, match="csv"):
        load_catalog(other)
    garbage = tmp_path / "g.parquet"
    garbage.write_bytes(b"\x00" * 64)
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(garbage)


def test_hash_changes_with_content_and_mapping(tmp_path: Path) -> None:
    path = _shop(tmp_path, _rows(2))
    a = load_catalog(path).sha256
    assert load_catalog(path).sha256 == a
    assert load_catalog(path, [("category", "price")]).sha256 != a
    rows = _rows(2)
    rows[0]["title"] = "Changed"
    pd.DataFrame(rows).to_csv(path, index=False)
    assert load_catalog(path).sha256 != a


@pytest.mark.shared
@needs_shared(SHARED_CATALOG)
def test_shared_catalog_validates_with_a_mapping() -> None:
    cat = load_catalog(
        SHARED_CATALOG,
        parse_column_map(["title=productDisplayName", "category=subCategory", "colour=baseColour"]),
    )
    assert len(cat) == 9583
    assert cat.report.errors == [] and cat.report.missing_images == []
    assert "Topwear" in cat.categories()
    assert (cat.df["usage"] == "NA").any()  # the literal string survives


@pytest.mark.parametrize("scan", [False, True])
def test_photo_paths_through_links_out_of_the_shop_are_refused(tmp_path: Path, scan) -> None:
    """The fast path check (a folder resolved once, a file's link seen in its folder's listing)
    refuses what a full resolution of each path refuses."""
    from searchcore.fsutil import InsideRoot
    from searchcore.rowcheck import image_path_problem

    shop, outside = tmp_path / "shop", tmp_path / "outside"
    (shop / "images" / "deep").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    (shop / "images" / "ok.png").write_bytes(b"x")
    (shop / "images" / "out.png").symlink_to(outside / "secret.png")
    (shop / "images" / "in.png").symlink_to(shop / "images" / "ok.png")
    (shop / "linked").symlink_to(outside)
    (shop / "images" / "deep" / "up").symlink_to(outside)
    inside = InsideRoot(shop, scan=scan)
    verdicts = {
        rel: image_path_problem(rel, shop.resolve(), inside)
        for rel in (
            "images/ok.png",
            "images/in.png",
            "images/missing.png",
            "images/out.png",
            "linked/secret.png",
            "images/deep/up/secret.png",
            "images/../../outside/secret.png",
            "/etc/passwd",
        )
    }
    assert [rel for rel, problem in verdicts.items() if problem is None] == [
        "images/ok.png",
        "images/in.png",
        "images/missing.png",
    ]
