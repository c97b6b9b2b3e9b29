"""The command line through ``main(argv)``: the contract other tools rely on."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import SHARED_CATALOG, needs_shared
from PIL import Image

from searchcore.cli import main


@pytest.fixture(scope="module")
def shop(tmp_path_factory, tiny_clip: str) -> dict[str, Path]:
    """A generated demo shop and its index, built once through the CLI."""
    base = tmp_path_factory.mktemp("cli")
    assert (
        main(
            [
                "catalog",
                "generate",
                "--out",
                str(base / "shop"),
                "--n",
                "60",
                "--seed",
                "3",
                "--size",
                "128",
            ]
        )
        == 0
    )
    csv = base / "shop" / "products.csv"
    assert (
        main(
            [
                "index",
                "build",
                "--catalog",
                str(csv),
                "--model",
                tiny_clip,
                "--out",
                str(base / "index"),
                "--no-progress",
            ]
        )
        == 0
    )
    return {"base": base, "csv": csv, "index": base / "index"}


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_validate_exit_codes(shop, capsys, tmp_path: Path) -> None:
    assert main(["catalog", "validate", "--catalog", str(shop["csv"])]) == 0
    assert "ok: no problems found" in capsys.readouterr().out
    broken = tmp_path / "broken"
    shutil.copytree(shop["csv"].parent, broken)
    (broken / "images" / "P00001.jpg").write_bytes(b"")
    argv = ["catalog", "validate", "--catalog", str(broken / "products.csv"), "--json"]
    # one bad photo of 60 costs one product its vector: listed, but a build would go on
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bad_images"][0]["id"] == "P00001" and not report["ok"]
    assert report["refused"] is None and report["bad_rows"] == 1
    assert main([*argv, "--strict"]) == 1  # strict: any problem at all
    assert json.loads(capsys.readouterr().out)["refused"]


def test_text_search_json(shop, capsys) -> None:
    code = main(
        [
            "search",
            "--index",
            str(shop["index"]),
            "--text",
            "red sneakers with white soles",
            "--json",
        ]
    )
    assert code == 0
    (line,) = _json_lines(capsys.readouterr().out)
    assert line["query"] == "red sneakers with white soles"
    # the same answer as the page's API, "no good match" included (calibrated, then cached)
    assert isinstance(line["good_match"], bool) and isinstance(line["min_score"], float)
    assert (shop["index"] / "calibration.json").is_file()
    assert len(line["results"]) == 10
    assert [r["rank"] for r in line["results"]] == list(range(1, 11))
    assert {"id", "title", "score", "rank"} <= set(line["results"][0])
    assert line["upscaled"] is False and "total" in line["timings_ms"]


def test_image_batch_with_a_bad_file_goes_on(shop, capsys, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    src = shop["csv"].parent / "images"
    Image.open(src / "P00002.jpg").save(photos / "a.png")
    Image.open(src / "P00005.jpg").resize((40, 40)).save(photos / "b.jpg")
    (photos / "c.jpg").write_text("<html>not a photo</html>")
    code = main(
        [
            "search",
            "--index",
            str(shop["index"]),
            "--images",
            str(photos),
            "--k",
            "3",
            "--upscale",
            "never",
            "--json",
        ]
    )
    assert code == 1
    lines = _json_lines(capsys.readouterr().out)
    assert [Path(x["query"]).name for x in lines] == ["a.png", "b.jpg", "c.jpg"]
    assert lines[0]["results"][0]["id"] == "P00002"  # a catalog photo finds itself
    assert len(lines[1]["results"]) == 3 and "error" in lines[2] and "results" not in lines[2]


def test_filters_from_the_command_line(shop, capsys) -> None:
    df = pd.read_csv(shop["csv"], dtype=str, keep_default_na=False)
    category = df["category"].iat[0]
    main(
        [
            "search",
            "--index",
            str(shop["index"]),
            "--text",
            "anything",
            "--category",
            category,
            "--max-price",
            "1000000",
            "--json",
            "--k",
            "5",
        ]
    )
    (line,) = _json_lines(capsys.readouterr().out)
    expected = min(5, int((df["category"] == category).sum()))
    assert len(line["results"]) == expected

    assert {r["category"] for r in line["results"]} == {category}


def test_attribute_filters_and_a_crop_from_the_command_line(shop, capsys) -> None:
    df = pd.read_csv(shop["csv"], dtype=str, keep_default_na=False).set_index("id")
    colours = list(df["colour"].value_counts().index[:2])
    photo = shop["csv"].parent / "images" / "P00004.jpg"
    index = str(shop["index"])
    args = ["search", "--index", index, "--image", str(photo), "--k", "4", "--json"]
    for c in colours:
        args += ["--attributes", f"colour={c.upper()}"]
    assert main([*args, "--crop", "0.25,0.25,0.75,0.75", "--upscale", "never"]) == 0
    (line,) = _json_lines(capsys.readouterr().out)
    assert len(line["results"]) == 4 and line["crop"] == [0.25, 0.25, 0.75, 0.75]
    assert {df.loc[r["id"], "colour"] for r in line["results"]} <= set(colours)
    assert all(r["why"] for r in line["results"])
    # the shopper-facing text says why each match (and nothing is predicted without heads)
    assert main(["search", "--index", index, "--text", "mug", "--k", "2"]) == 0
    assert "why: " in capsys.readouterr().out
    assert main(["search", "--index", index, "--text", "x", "--attributes", "colour"]) == 2
    assert "COLUMN=VALUE" in capsys.readouterr().err
    assert main(["search", "--index", index, "--text", "x", "--attributes", "nope=1"]) == 2
    assert "cannot be filtered on 'nope'" in capsys.readouterr().err


def test_user_errors_are_one_line(shop, capsys, tmp_path: Path) -> None:
    cases = [
        ["search", "--index", str(tmp_path / "nope"), "--text", "x"],
        ["search", "--index", str(shop["index"])],
        ["search", "--index", str(shop["index"]), "--image", str(tmp_path / "missing.jpg")],
        ["index", "build", "--catalog", str(tmp_path / "none.csv"), "--out", str(tmp_path / "i")],
        ["catalog", "validate", "--catalog", str(shop["csv"]), "--map", "title"],
        [
            "index",
            "build",
            "--catalog",
            str(shop["csv"]),
            "--model",
            "no-such-model",
            "--out",
            str(tmp_path / "j"),
        ],
        ["upscale", str(tmp_path / "in.png"), str(tmp_path / "out.png"), "--model", "nope"],
    ]
    for argv in cases:
        assert main(argv) != 0, argv
        err = capsys.readouterr().err.strip()
        assert (
            err.startswith("searchcore: error:") and "\n" not in err and "Traceback" not in err
        ), err


def test_changed_catalog_is_refused_with_the_fix(shop, capsys, tmp_path: Path) -> None:
    copy = tmp_path / "shop"
    shutil.copytree(shop["csv"].parent, copy)
    index = tmp_path / "index"
    shutil.copytree(shop["index"], index)
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["catalog"]["relative_path"] = str(Path("..") / "shop" / "products.csv")
    (index / "manifest.json").write_text(json.dumps(manifest))
    assert (
        main(["search", "--index", str(index), "--text", "x", "--json"]) == 0
    )  # moved together: fine
    capsys.readouterr()
    df = pd.read_csv(copy / "products.csv", dtype=str, keep_default_na=False)
    df.loc[0, "title"] = "Something else"
    df.to_csv(copy / "products.csv", index=False)
    assert main(["search", "--index", str(index), "--text", "x"]) == 1
    err = capsys.readouterr().err
    assert "changed since" in err and "searchcore index build --catalog" in err


def test_other_model_weights_are_refused(shop, capsys, tmp_path: Path) -> None:
    index = tmp_path / "index"
    shutil.copytree(shop["index"], index)
    manifest = json.loads((index / "manifest.json").read_text())
    manifest["model"]["fingerprint"] = "0" * 64
    (index / "manifest.json").write_text(json.dumps(manifest))
    assert main(["search", "--index", str(index), "--text", "x"]) == 1
    assert "other weights" in capsys.readouterr().err


def test_milvus_lite_index_through_the_cli(shop, capsys, tmp_path: Path, tiny_clip: str) -> None:
    pytest.importorskip("milvus_lite")
    db = tmp_path / "milvus.db"
    argv = [
        "index",
        "build",
        "--catalog",
        str(shop["csv"]),
        "--model",
        tiny_clip,
        "--out",
        str(db),
        "--no-progress",
    ]
    assert main(argv) == 0
    assert main(argv) == 0  # idempotent: the rerun skips what is there
    assert "indexed 0 products" in capsys.readouterr().out
    assert (
        main(["search", "--index", str(db), "--text", "red sneakers with white soles", "--json"])
        == 0
    )
    (milvus,) = _json_lines(capsys.readouterr().out)
    main(
        [
            "search",
            "--index",
            str(shop["index"]),
            "--text",
            "red sneakers with white soles",
            "--json",
        ]
    )
    (hnsw,) = _json_lines(capsys.readouterr().out)
    assert len(milvus["results"]) == 10
    # same model, same catalog: both backends agree on the best matches
    assert [r["id"] for r in milvus["results"][:5]] == [r["id"] for r in hnsw["results"][:5]]


def test_upscale_command(tmp_path: Path, capsys) -> None:
    import torch

    from searchcore._compat import patch_torchvision_for_basicsr
    from searchcore.upscale import UpscalerSpec, register_upscaler

    patch_torchvision_for_basicsr()
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    spec = UpscalerSpec(
        name="tiny-cli-x4",
        arch="srvgg",
        scale=4,
        url=None,
        sha256=None,
        filename="tiny.pth",
        arch_kwargs={
            "num_in_ch": 3,
            "num_out_ch": 3,
            "num_feat": 8,
            "num_conv": 2,
            "act_type": "prelu",
        },
    )
    register_upscaler(spec, replace=True)
    net = SRVGGNetCompact(**spec.kwargs)
    torch.save({"params": net.state_dict()}, tmp_path / "tiny.pth")
    Image.new("RGB", (24, 20), (9, 99, 199)).save(tmp_path / "in.png")
    code = main(
        [
            "upscale",
            str(tmp_path / "in.png"),
            str(tmp_path / "out.png"),
            "--model",
            "tiny-cli-x4",
            "--weights",
            str(tmp_path / "tiny.pth"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert Image.open(tmp_path / "out.png").size == (96, 80)


@pytest.mark.shared
@needs_shared(SHARED_CATALOG)
def test_shared_catalog_builds_through_a_mapping(tmp_path: Path, tiny_clip: str, capsys) -> None:
    """A 300-product slice of the real catalog (the full build is in the README's figures)."""
    df = pd.read_csv(SHARED_CATALOG, dtype=str, keep_default_na=False).head(300)
    sub = tmp_path / "slice"
    (sub / "images").mkdir(parents=True)
    for rel in df["image"]:
        shutil.copy(SHARED_CATALOG.parent / rel, sub / rel)
    df.to_csv(sub / "metadata.csv", index=False)
    maps = [
        "--map",
        "title=productDisplayName",
        "--map",
        "category=subCategory",
        "--map",
        "colour=baseColour",
    ]
    assert (
        main(
            [
                "index",
                "build",
                "--catalog",
                str(sub / "metadata.csv"),
                *maps,
                "--model",
                tiny_clip,
                "--out",
                str(tmp_path / "ix"),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "indexed 300 products" in capsys.readouterr().out
    assert (
        main(
            [
                "search",
                "--index",
                str(tmp_path / "ix"),
                "--image",
                str(sub / "images" / f"{df['id'][7]}.jpg"),
                "--category",
                df["subCategory"][7],
                "--json",
                "--upscale",
                "never",
            ]
        )
        == 0
    )
    line = json.loads(capsys.readouterr().out)
    assert line["results"][0]["id"] == df["id"][7]
    assert {r["category"] for r in line["results"]} == {df["subCategory"][7]}


def test_refused_live_changes_are_one_line_and_write_nothing(shop, capsys) -> None:
    """The exact commands of the live-shop report: a duplicate id, an id changed by --set."""
    index = str(shop["index"])
    df = pd.read_csv(shop["csv"], dtype=str, keep_default_na=False)
    first, photo = df["id"].iat[3], str(shop["csv"].parent / df["image"].iat[5])

    def files() -> dict[str, bytes]:
        return {str(p): p.read_bytes() for p in sorted(shop["base"].rglob("*")) if p.is_file()}

    before = files()
    cases = [
        ["catalog", "remove", "--index", index, "--id", first, "--id", first],
        ["catalog", "update", "--index", index, "--id", first, "--set", "id=other"],
        ["catalog", "update", "--index", index, "--id", first, "--set", "image=x.jpg"],
        ["catalog", "update", "--index", index, "--id", first, "--set", "_removed=1"],
        [
            "catalog",
            "add",
            "--index",
            index,
            "--id",
            "N9",
            "--title",
            "t",
            "--set",
            "id=N10",
            "--image",
            photo,
        ],
        ["catalog", "add", "--index", index, "--id", first, "--title", "t", "--image", photo],
    ]
    for argv in cases:
        assert main(argv) != 0, argv
        err = capsys.readouterr().err.strip()
        assert (
            err.startswith("searchcore: error:") and "\n" not in err and "Traceback" not in err
        ), err
        assert files() == before, argv
    assert main(["catalog", "check", "--index", index]) == 0
