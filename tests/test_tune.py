"""The real-catalog loop: shopper-sized degradations, the test split, attribute heads, WiSE-FT,
the shared upscale cache, and ``searchcore tune`` end to end on a tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from searchcore.catalog import load_catalog
from searchcore.cli import main
from searchcore.degrade import Degradation, degrade, parse_condition, sample_shopper
from searchcore.embed.heads import AttributeHeads
from searchcore.errors import ConfigError
from searchcore.training import metrics
from searchcore.training.data import held_out_mask
from searchcore.training.evaluate import EvalConfig, Strategy, evaluate
from searchcore.upscale import SHIPPED_UPSCALER_DIR, load_upscaler_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")
SHIPPED = load_upscaler_folder(SHIPPED_UPSCALER_DIR)[0].name  # the shipped upscaler's name


def test_width_range_shrinks_to_shopper_sizes_whatever_the_photo() -> None:
    name, d = parse_condition("shopper:rotate=8,crop=0.85,min_width=20,max_width=60,jpeg=50")
    assert name == "shopper" and d.shrinks and d.geometric
    assert parse_condition(f"x:{d.spec()}")[1] == d  # spec round trip, integer fields
    for size in (224, 1000):
        img = Image.new("RGB", (size, size), (200, 10, 10))
        widths = [degrade(img, d, np.random.default_rng(i)).width for i in range(40)]
        assert 20 <= min(widths) and max(widths) <= 60 and len(set(widths)) > 10
    a = degrade(Image.new("RGB", (224, 224)), d, np.random.default_rng(3))
    b = degrade(Image.new("RGB", (224, 224)), d, np.random.default_rng(3))
    assert a.size == b.size
    with pytest.raises(ConfigError, match="either down or a width range"):
        Degradation(down=2, min_width=20, max_width=60)
    with pytest.raises(ConfigError, match="width range"):
        Degradation(min_width=60, max_width=20)
    assert not Degradation(blur=1).shrinks and Degradation(down=2).shrinks


def test_shopper_views_reach_the_smallest_shopper_photos() -> None:
    img = Image.new("RGB", (224, 224))
    rng = np.random.default_rng(0)
    widths = [degrade(img, sample_shopper(rng, max_down=12), rng).width for _ in range(300)]
    assert min(widths) < 24  # 224 / 12 = 19 px at the extreme
    # a square catalog photo back to its 3:4 portrait shape, at a shop's 60x80
    portrait = parse_condition("p:aspect=0.75,min_width=60,max_width=60")[1]
    assert degrade(img, portrait, rng).size == (60, 80) and portrait.geometric
    with pytest.raises(ConfigError, match="aspect"):
        parse_condition("p:aspect=9")
    rng = np.random.default_rng(0)
    # the default keeps them at least 224 * 0.7 (crop) / 6 = 26 px wide
    assert min(degrade(img, sample_shopper(rng), rng).width for _ in range(300)) >= 25


def test_test_split_is_eval_split_and_never_validated_on() -> None:
    import pandas as pd

    from searchcore.training.data import split_masks, test_mask

    ids = [f"{i:05d}" for i in range(2000)]
    df = pd.DataFrame({"id": ids, "added": [f"2026-{1 + i % 12:02d}" for i in range(2000)]})
    val, test = split_masks(df, 0, 0.1, 0.2, "hash")
    assert not (val & test).any()
    assert np.array_equal(test, held_out_mask(ids, 0.2, 0))  # what `eval --split-by hash` holds out
    assert 0.15 < test.mean() < 0.25 and 0.06 < val.mean() < 0.1
    # the default: the newest products (highest ids) are the test products, as eval holds out
    val, test = split_masks(df, 0, 0.1, 0.2)
    assert not (val & test).any() and test.sum() == 400 and test[1600:].all()
    assert np.array_equal(test, test_mask(df, 0.2, 0))
    newest = test_mask(df, 0.249, 0, "added")  # a date column: the 498 products of Oct-Dec
    assert newest.sum() == 498 and set(df["added"][newest]) == {"2026-10", "2026-11", "2026-12"}
    numeric = pd.DataFrame({"id": ["9", "10", "100", "11"]})  # numbers compare as numbers
    assert test_mask(numeric, 0.5, 0).tolist() == [False, False, True, True]
    with pytest.raises(ConfigError, match="not a column"):
        test_mask(df, 0.2, 0, "date")
    # without a test split: the historical validation split, unchanged
    val0, test0 = split_masks(df, 0, 0.1)
    assert np.array_equal(val0, held_out_mask(ids, 0.1, 0)) and not test0.any()


def test_precision_of_relevant_items_by_hand() -> None:
    scores = np.array([[0.9, 0.8, 0.1, 0.7], [0.1, 0.2, 0.3, 0.4]])
    relevant = np.array([[True, False, False, True], [False, False, False, True]])
    assert metrics.relevant_precision_at_k(scores, relevant, 2) == pytest.approx((0.5 + 0.5) / 2)
    assert metrics.relevant_precision_at_k(scores, relevant, 3) == pytest.approx(
        (2 / 3 + 1 / 3) / 2
    )


class _CountingUpscaler:
    name = "nearest-x2"
    scale = 2

    def __init__(self) -> None:
        self.calls = 0

    def upscale(self, img: Image.Image) -> Image.Image:
        self.calls += 1
        return img.resize((img.width * 2, img.height * 2), Image.Resampling.NEAREST)


def test_width_bands_and_a_shared_cache_upscale_each_photo_once(
    colour_catalog: Path, fake_embedder
) -> None:
    catalog = load_catalog(colour_catalog)
    up = _CountingUpscaler()
    cond = parse_condition("small:min_width=10,max_width=40")
    config = EvalConfig(conditions=(cond,), quality_images=0)
    strategies = [Strategy("never"), Strategy("nearest", up)]
    cache: dict = {}
    first = evaluate(catalog, fake_embedder, strategies, config, cache=cache)
    assert up.calls == 24
    second = evaluate(catalog, fake_embedder, strategies, config, cache=cache)
    assert up.calls == 24  # every upscaled photo came from the cache

    def results(r: dict) -> dict:
        return {
            k: {m: x for m, x in v.items() if m != "upscale_ms"}
            for k, v in r["exact"]["small"].items()
            if isinstance(v, dict)
        }

    assert results(first) == results(second)
    # the cached photos keep the cost of their first upscaling
    assert (
        second["exact"]["small"]["nearest"]["upscale_ms"]
        >= first["exact"]["small"]["nearest"]["upscale_ms"] * 0.5
        > 0
    )
    bands = first["exact"]["small"]["never"]["by_width"]
    assert sum(b["queries"] for b in bands.values()) == 24 and "0-29 px" in bands
    assert first["exact"]["small"]["query_size"].endswith("px wide")
    assert set(first["verdicts"]) == {"nearest"} and "paired" in first["verdicts"]["nearest"]


def test_attribute_heads_train_and_are_kept_calibrated(
    demo_shop: Path, tiny_clip: str, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from searchcore.embed import load_embedder
    from searchcore.training.finetune import FinetuneConfig, finetune

    catalog = load_catalog(demo_shop)
    config = FinetuneConfig(
        base=tiny_clip,
        epochs=2,
        batch_size=8,
        val_fraction=0.2,
        test_fraction=0.25,
        attr_weight=1.0,
        attr_columns=("category", "colour"),
        val_max_queries=10,
        half=False,
        shopper_max_down=12,
    )
    result = finetune(catalog, tmp_path / "m", config)
    assert all(np.isfinite(h["loss"]) for h in result.history)
    keys = set(load_file(str(tmp_path / "m" / "open_clip_model.safetensors")))
    assert keys == set(load_embedder(tiny_clip).model.state_dict())  # open_clip's file stays
    # the heads live beside it, bound to the weights as saved, calibrated on validation
    heads = AttributeHeads.load(tmp_path / "m")
    assert heads is not None and heads.columns == ["category", "colour"]
    model = load_embedder(str(tmp_path / "m"))
    assert heads.problem(model.fingerprint) is None
    assert heads.problem(load_embedder(tiny_clip).fingerprint) is not None
    for column in heads.columns:
        m = heads.metrics[column]
        assert 0.0 <= m["accuracy"] <= 1.0 and 0.0 <= m["ece"] <= 1.0 and m["n"] > 0
        assert m["temperature"] > 0 and "validation" in m["calibrated_on"]
    vec = model.embed_images([Image.open(catalog.image_path(0))])[0]
    guess = heads.predict(vec)
    assert set(guess) == {"category", "colour"}
    for options in guess.values():
        probs = [p for _, p in options]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert set(catalog.df["category"]) >= {label for label, _ in guess["category"]}
    meta = json.loads((tmp_path / "m" / "training.json").read_text())
    assert set(meta["attribute_heads"]) == {"category", "colour"}
    assert "Attribute heads" in (tmp_path / "m" / "README.md").read_text()
    # the heads shape the embedding: the same run without them ends elsewhere
    from dataclasses import replace

    finetune(catalog, tmp_path / "plain", replace(config, attr_weight=0.0))
    assert (
        load_embedder(str(tmp_path / "m")).fingerprint
        != load_embedder(str(tmp_path / "plain")).fingerprint
    )
    assert AttributeHeads.load(tmp_path / "plain") is None  # trained without: none kept
    assert meta["config"]["attr_weight"] == 1.0
    split = meta["split"]
    assert split["train"] + split["val"] + split["test"] == 40 and split["test"] > 0
    with pytest.raises(ConfigError, match="not in the catalog"):
        finetune(
            catalog,
            tmp_path / "x",
            FinetuneConfig(base=tiny_clip, attr_weight=1.0, attr_columns=("nope",), max_steps=1),
        )


def test_tune_runs_the_whole_loop(
    demo_shop: Path, tiny_clip: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import load_file

    from searchcore.config import Settings, UpscaleSettings
    from searchcore.embed import load_embedder
    from searchcore.service import open_engine
    from searchcore.stores.manifest import read_manifest
    from searchcore.training.data import trained_rows

    out = tmp_path / "run"
    args = [
        "tune",
        "--catalog",
        str(demo_shop),
        "--base",
        tiny_clip,
        "--out",
        str(out),
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--max-steps",
        "2",
        "--test-fraction",
        "0.3",
        "--val-max-queries",
        "10",
        "--attr-weight",
        "0.5",
        "--wise",
        "0,0.5",
        "--upscalers",
        "never,bicubic,default,auto",
        "--max-queries",
        "12",
        "--compare",
        f"again={tiny_clip}",
        "--query-attrs",
        "colour,category",
        "--similar-attrs",
        "category,colour",
        "--device",
        "cpu",
        "--fp32",
        "--no-progress",
        "--upscaler-steps",
        "2",
    ]
    assert main(args) == 0
    summary = json.loads((out / "report.json").read_text())
    names = summary["order"]
    assert names[0] == "fine-tuned" and "raw pixels" in names and "WiSE-FT a=0.5" in names
    assert f"{tiny_clip} (not fine-tuned)" in names and "again" in names
    tuned = summary["variants"]["fine-tuned"]
    assert {
        "category P@10",
        "colour P@10",
        "title R@10",
        "shopper R@10 [never]",
        f"shopper R@10 [{SHIPPED}]",
        "small-blurry R@10 [auto]",
    } <= set(tuned)
    assert "title R@10" not in summary["variants"]["raw pixels"]  # no text tower
    # text search as served (hybrid) is in the comparison; its lexical side needs no text tower
    assert {"hybrid title R@1", "hybrid partial title R@10", "hybrid typo title R@10"} <= set(tuned)
    pixels = json.loads((out / "eval" / "raw-pixels" / "report.json").read_text())
    assert set(pixels["text_search"]["title"]) == {"queries", "examples", "lexical"}
    assert (
        "## Text search: vector / lexical / hybrid"
        in (out / "eval" / "fine-tuned" / "report.md").read_text()
    )
    # WiSE-FT at 0 is the starting model, weight for weight; 0.5 is halfway
    base = summary["variants"][f"{tiny_clip} (not fine-tuned)"]
    assert summary["variants"]["WiSE-FT a=0"]["category P@10"] == base["category P@10"]
    w0, w5 = (
        load_file(str(out / f"wise-{a}" / "open_clip_model.safetensors")) for a in ("0", "0.5")
    )
    ft = load_file(str(out / "model" / "open_clip_model.safetensors"))
    key = "visual.conv1.weight"
    np.testing.assert_allclose(w5[key].numpy(), (w0[key].numpy() + ft[key].numpy()) / 2, atol=1e-6)
    # every variant was tested on exactly the products training never saw
    test_rows = json.loads((out / "eval" / "fine-tuned" / "report.json").read_text())["split"]
    rows, _ = trained_rows(str(out / "model"), load_catalog(demo_shop))
    assert test_rows["gallery"] == 40 - len(rows) == summary["split"]["test"]
    # the upscaler trained for the fine-tuned model: scored, judged, recorded in the index
    trained = json.loads((out / "upscaler" / "training.json").read_text())
    assert trained["embedder"]["fingerprint"] == load_embedder(str(out / "model")).fingerprint
    assert {"shopper R@10 [sc-retrieval-x4]", f"shopper R@10 [{SHIPPED}]"} <= set(tuned)
    verdict = json.loads((out / "model" / "upscale_verdict.json").read_text())
    assert verdict["upscaler"] == "sc-retrieval-x4" and summary["upscaler"] == str(out / "upscaler")
    assert verdict["upscaler_sha256"] == read_manifest(out / "index").upscaler.sha256  # its weights
    recorded = read_manifest(out / "index").upscaler
    assert recorded is not None and recorded.relative_path == "../upscaler"
    engine = open_engine(Settings(upscale=UpscaleSettings(mode="auto")), out / "index")
    assert engine.upscaler is not None and engine.upscaler.name == "sc-retrieval-x4"
    md = (out / "report.md").read_text()
    assert "| raw pixels |" in md and "Recall@10 by query width" in md
    assert "upscaler training" in md and "upscaler_s" in summary["timings"]
    assert Image.open(out / "comparison.png").size[0] > 100
    assert (out / "shopper_by_width.png").is_file()
    # a second run reuses the trained model and redoes the rest
    capsys.readouterr()
    assert main([*args, "--no-index", "--baselines", "", "--wise", ""]) == 0
    said = capsys.readouterr().err
    assert "reusing it" in said and "already trained for this model" in said
    assert json.loads((out / "report.json").read_text())["order"] == ["fine-tuned", "again"]


def test_model_heads_fits_heads_on_a_frozen_model_folder(
    demo_shop: Path, tiny_clip: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from conftest import TINY_CLIP_CONFIG

    from searchcore.embed import load_embedder, save_model
    from searchcore.embed.heads import heads_for

    folder = save_model(load_embedder(tiny_clip), tmp_path / "m", TINY_CLIP_CONFIG)
    args = ["model", "heads", "--model", str(folder), "--catalog", str(demo_shop)]
    for _ in range(2):  # a refit replaces the heads and their section of the card
        split = ["--test-fraction", "0.25", "--val-fraction", "0.3"]
        assert main([*args, "--columns", "category,colour", *split]) == 0
    out = capsys.readouterr().out
    assert "category:" in out and "validation accuracy" in out
    heads, problem = heads_for(str(folder), load_embedder(str(folder)))
    assert problem is None and heads is not None and heads.columns == ["category", "colour"]
    assert heads.metrics["split"]["test_fraction"] == 0.25  # the test products stay unseen
    card = (folder / "README.md").read_text()
    assert card.count("## Attribute heads") == 1 and "searchcore model heads" in card
    assert main(["model", "heads", "--model", tiny_clip, "--catalog", str(demo_shop)]) == 2
    assert "not a model folder" in capsys.readouterr().err
