"""Training and evaluation: degradations, metrics on hand-checkable cases, tiny training runs.

Everything here is offline and small: the fake colour embedder, the tiny random CLIP from
conftest, a 40-product generated catalog at 64 px, and a few optimisation steps.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TINY_CLIP_CONFIG
from PIL import Image, ImageFilter

from searchcore.catalog import load_catalog
from searchcore.cli import main
from searchcore.config import UpscaleSettings
from searchcore.degrade import (
    DEFAULT_CONDITIONS,
    Degradation,
    degrade,
    parse_condition,
    parse_degradation,
    sample_shopper,
)
from searchcore.errors import ConfigError, WeightsError
from searchcore.training import metrics
from searchcore.training.data import attribute_columns, held_out_mask, training_text
from searchcore.training.evaluate import EvalConfig, Strategy, evaluate
from searchcore.training.report import write_report
from searchcore.upscale import UpscalePolicy

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _photo(seed: int = 0, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    return Image.fromarray(base).resize((size, size), Image.Resampling.BILINEAR)


# ------------------------------------------------------------------------------ degrade


def test_degrade_is_seeded_and_shrinks_as_asked() -> None:
    d = DEFAULT_CONDITIONS["shopper"]
    a = degrade(_photo(), d, np.random.default_rng(1))
    b = degrade(_photo(), d, np.random.default_rng(1))
    c = degrade(_photo(), d, np.random.default_rng(2))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    assert not np.array_equal(np.asarray(a), np.asarray(c))
    # crop keeps 85% of 64 px (54), then /3 -> 18 px
    assert a.size == (18, 18)
    assert degrade(_photo(), Degradation(down=4), np.random.default_rng(0)).size == (16, 16)
    same = degrade(_photo(), Degradation(), np.random.default_rng(0))
    assert np.array_equal(np.asarray(same), np.asarray(_photo()))


def test_degradation_specs_round_trip_and_refuse_nonsense() -> None:
    d = parse_degradation("down=4,blur=1,jpeg=75")
    assert d == Degradation(down=4.0, blur=1.0, jpeg=75) and not d.geometric
    assert parse_degradation(d.spec()) == d
    assert parse_degradation("none") == Degradation()
    assert parse_condition("x4-blur") == ("x4-blur", DEFAULT_CONDITIONS["x4-blur"])
    assert parse_condition("tiny:down=8")[1].down == 8.0
    assert Degradation(crop=0.9).geometric
    for bad in ("down=0.5", "zoom=2", "jpeg=abc", "down"):
        with pytest.raises(ConfigError):
            parse_degradation(bad)
    with pytest.raises(ConfigError):
        parse_condition("unknown-condition")


def test_shopper_recipes_stay_in_range() -> None:
    rng = np.random.default_rng(0)
    recipes = [sample_shopper(rng) for _ in range(200)]
    assert all(1.0 <= r.down <= 6.0 and r.crop >= 0.7 and r.rotate <= 10 for r in recipes)
    assert any(r.down > 3 for r in recipes) and any(r.jpeg is None for r in recipes)
    assert sample_shopper(rng, strength=0.0).down == 1.0


# ------------------------------------------------------------------------------ metrics


def test_ranks_recall_and_mrr_by_hand() -> None:
    scores = np.array(
        [
            [0.9, 0.1, 0.5],  # relevant item 2 ranks 2nd
            [0.2, 0.8, 0.3],  # relevant item 1 ranks 1st
            [0.5, 0.4, 0.3],
        ]
    )  # nothing relevant
    relevant = np.array([[0, 0, 1], [1, 1, 0], [0, 0, 0]], dtype=bool)
    ranks = metrics.first_relevant_ranks(scores, relevant)
    assert ranks.tolist() == [2.0, 1.0, np.inf]
    assert metrics.recall_at_k(ranks, 1) == pytest.approx(1 / 3)
    assert metrics.recall_at_k(ranks, 2) == pytest.approx(2 / 3)
    assert metrics.mrr(ranks) == pytest.approx((0.5 + 1.0 + 0.0) / 3)


def test_precision_at_k_excludes_the_query_itself() -> None:
    scores = np.array([[1.0, 0.9, 0.8, 0.1], [0.2, 1.0, 0.1, 0.9]])
    labels = ["red", "red", "blue", "blue"]
    self_mask = np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=bool)
    # query 0 (red): next best are 1 (red), 2 (blue); query 1 (red): 3 (blue), 0 (red)
    assert metrics.precision_at_k(scores, ["red", "red"], labels, 1, self_mask) == 0.5
    assert metrics.precision_at_k(scores, ["red", "red"], labels, 2, self_mask) == 0.5
    assert metrics.precision_at_k(scores, ["red", ""], labels, 1, self_mask) == 1.0


def test_psnr_and_ssim_match_definitions_and_basicsr() -> None:
    a = np.full((16, 16, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0, 0] = 110  # one error of 10 over 768 values: MSE = 100 / 768
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(255**2 / (100 / 768)))
    assert metrics.psnr(a, a) == np.inf
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 36, 3)).astype(np.uint8)
    y = np.clip(x + rng.normal(0, 20, x.shape), 0, 255).astype(np.uint8)
    assert metrics.ssim(x, x) == pytest.approx(1.0)
    from searchcore._compat import patch_torchvision_for_basicsr

    patch_torchvision_for_basicsr()
    from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim

    assert metrics.ssim(x, y) == pytest.approx(calculate_ssim(x, y, crop_border=0), abs=1e-9)
    assert metrics.psnr(x, y) == pytest.approx(calculate_psnr(x, y, crop_border=0), abs=1e-9)


# ------------------------------------------------------------------------------ data


def test_held_out_split_is_by_id_and_stable() -> None:
    ids = [f"P{i:04d}" for i in range(500)]
    mask = held_out_mask(ids, 0.2, seed=0)
    assert 0.14 < mask.mean() < 0.26
    again = held_out_mask(list(reversed(ids)), 0.2, seed=0)[::-1]
    assert np.array_equal(mask, again)  # row order does not matter
    assert not np.array_equal(mask, held_out_mask(ids, 0.2, seed=1))
    assert held_out_mask(ids, 1.0, 0).all() and not held_out_mask(ids, 0.0, 0).any()
    assert held_out_mask(["a", "b"], 0.01, 0).sum() == 1  # never an empty side


def test_attribute_columns_and_texts(demo_shop: Path) -> None:
    df = pd.read_csv(demo_shop, dtype=str, keep_default_na=False)
    cols = attribute_columns(df)
    assert {"category", "colour", "pattern"} <= set(cols) and "title" not in cols
    assert "id" not in cols and "price" not in cols
    with pytest.raises(ConfigError):
        attribute_columns(df, ["nope"])
    rng = np.random.default_rng(0)
    attrs = {"colour": "red", "pattern": "striped", "category": "t-shirts"}
    texts = {training_text("Kestrel red striped t-shirt", attrs, rng) for _ in range(100)}
    assert "Kestrel red striped t-shirt" in texts and "red striped t-shirts" in texts
    assert all(t.endswith("t-shirts") or t.startswith("Kestrel") for t in texts)


# ------------------------------------------------------------------------------ evaluation


class _FakeUpscaler:
    """x2 nearest, or a black image: a "useless" upscaler that must lose recall."""

    def __init__(self, black: bool = False) -> None:
        self.black = black
        self.calls = 0
        self.scale = 2

    @property
    def name(self) -> str:
        return "black" if self.black else "nearest"

    def upscale(self, img: Image.Image) -> Image.Image:
        self.calls += 1
        size = (img.width * 2, img.height * 2)
        return Image.new("RGB", size) if self.black else img.resize(size, Image.Resampling.NEAREST)


def test_evaluate_by_hand_with_the_colour_embedder(colour_catalog: Path, fake_embedder) -> None:
    catalog = load_catalog(colour_catalog)
    black = _FakeUpscaler(black=True)
    config = EvalConfig(
        conditions=(("clean", Degradation()), ("x2", Degradation(down=2))),
        query_attrs=("colour", "category"),
        similar_attrs=("colour", "category"),
        quality_images=4,
    )
    strategies = [
        Strategy("never"),
        Strategy("black", black),
        Strategy("auto", black, UpscalePolicy(UpscaleSettings(min_side=30, min_sharpness=0.0))),
    ]
    report = evaluate(catalog, fake_embedder, strategies, config)
    # 24 products, 6 colours x 4; every colour is one category (even rows caps, odd mugs).
    assert report["split"]["gallery"] == 24
    attrs = report["text"]["attributes"]
    assert attrs["queries"] == 6 and attrs["R@1"] == 1.0 and "red caps" in attrs["examples"]
    assert report["text"]["titles"]["R@5"] == 1.0  # the 4 products of a colour come first
    # Nearest photo is always the same colour; only 3 others share it, so P@10 is 3/10.
    assert report["similar"]["colour"] == {"P@1": 1.0, "P@10": pytest.approx(0.3)}
    # the same from the first condition's query photos (a shopper's, not the catalog's own)
    shop = report["similar_shop"]
    assert shop["condition"] == "clean" and shop["queries"] == 24
    assert shop["colour"] == {"P@1": 1.0, "P@10": pytest.approx(0.3)}
    # "clean" leaves the photos as they are: the catalog's own similar-product figures
    assert shop["category"] == pytest.approx(report["similar"]["category"])
    exact = report["exact"]
    # The fake's same-colour vectors tie in float32, so "exact" only means "one of the 4".
    assert exact["clean"]["never"]["R@5"] == 1.0 and exact["clean"]["never"]["MRR"] >= 0.25
    assert exact["x2"]["black"]["R@1"] < 0.5  # black images find nothing in particular
    # auto upscales only photos under 30 px: the 24 px x2 queries, not the 48 px clean ones
    assert exact["clean"]["auto"]["upscaled"] == 0.0 and exact["x2"]["auto"]["upscaled"] == 1.0
    verdict = report["verdict"]["paired"]["x2"]
    assert report["verdict"]["helps"] is False and verdict["delta_R@1"] < 0
    assert verdict["lost"] > verdict["gained"]
    quality = report["upscaler_quality"]["x2"]
    assert set(quality) == {"black", "bicubic"} and quality["black"]["PSNR_vs_bicubic"] < 0


def test_auto_is_scored_as_it_will_serve_under_the_verdict_the_run_stores(
    colour_catalog: Path, fake_embedder
) -> None:
    """A first evaluation has no verdict, so auto upscaled what its policy chose; where the
    caller stores the run's verdict (tune, eval --write-verdict), auto is scored under it."""
    catalog = load_catalog(colour_catalog)
    black = _FakeUpscaler(black=True)  # ruins every photo: the verdict is that it hurts
    config = EvalConfig(
        conditions=(("clean", Degradation()), ("x2", Degradation(down=2))), quality_images=0
    )
    policy = UpscalePolicy(UpscaleSettings(min_side=30, min_sharpness=0.0))
    strategies = [Strategy("never"), Strategy("black", black), Strategy("auto", black, policy)]
    as_measured = evaluate(catalog, fake_embedder, strategies, config)["exact"]["x2"]
    report = evaluate(catalog, fake_embedder, strategies, config, verdict_applies=True)
    assert report["verdict"]["helps"] is False
    x2 = report["exact"]["x2"]
    assert as_measured["auto"]["upscaled"] == 1.0 and as_measured["auto"]["R@1"] < 0.5
    assert x2["auto"]["upscaled"] == 0.0 and "verdict this run measured" in x2["auto"]["note"]
    for k in ("R@1", "R@5", "MRR", "queries"):
        assert x2["auto"][k] == x2["never"][k]
    # the other strategies are as measured (but for the time upscaling took)
    assert {k: v for k, v in x2["black"].items() if k != "upscale_ms"} == {
        k: v for k, v in as_measured["black"].items() if k != "upscale_ms"
    }
    assert report["exact"]["clean"]["auto"]["upscaled"] == 0.0  # 48 px: never upscaled anyway
    # with a verdict already stored (auto ran under it), nothing is re-scored
    ran_under_one = [*strategies[:2], Strategy("auto", black, policy, skip_reason="no")]
    again = evaluate(catalog, fake_embedder, ran_under_one, config, verdict_applies=True)
    assert again["exact"]["x2"]["auto"]["note"] == "no"


def test_verdict_bands_find_the_crossover() -> None:
    """Queries pooled per width band: upscaling that gains only on photos under 30 px helps
    there, and nowhere else."""
    from types import SimpleNamespace

    from searchcore.degrade import Degradation
    from searchcore.training.verdicts import paired_verdict

    widths = np.repeat([20, 25, 35, 50], 50)
    never = np.where(widths < 30, 2, 1)  # small photos miss, larger ones find their product
    always = np.ones_like(never)  # upscaling finds them all
    config = SimpleNamespace(conditions=(("shop", Degradation(min_width=20, max_width=60)),))
    ranks = {("shop", "never"): never, ("shop", "up"): always}
    exact = {"shop": {"never": {"R@1": 0.5, "R@10": 1}, "up": {"R@1": 1.0, "R@10": 1}}}
    v = paired_verdict(exact, config, ranks, {"shop": widths}, "never", "up", "up")
    by = {b["label"]: b for b in v["bands"]}
    assert by["0-29 px"]["helps"] and by["0-29 px"]["gained"] == 100 and by["0-29 px"]["lost"] == 0
    assert not by["30-44 px"]["helps"] and not by["45-63 px"]["helps"]
    assert by["30-44 px"]["queries"] == 50 and v["helps"]


def test_sign_test_by_hand() -> None:
    from searchcore.training.verdicts import sign_test

    assert sign_test(0, 0) == 1.0
    assert sign_test(3, 0) == pytest.approx(2 * 1 / 8)  # P(0 of 3) = 1/8, two-sided
    assert sign_test(1, 4) == pytest.approx(2 * (1 + 5) / 32)
    assert sign_test(77, 61) > 0.05 and sign_test(60, 30) < 0.01


def test_evaluation_never_tests_on_training_rows(colour_catalog: Path, fake_embedder) -> None:
    catalog = load_catalog(colour_catalog)
    config = EvalConfig(conditions=(("clean", Degradation()),), quality_images=0)
    report = evaluate(catalog, fake_embedder, config=config, exclude_rows=range(0, 24, 2))
    assert report["split"]["gallery"] == 12 and report["split"]["excluded_training_rows"] == 12
    skip = Strategy("auto", _FakeUpscaler(), UpscalePolicy(UpscaleSettings()), skip_reason="no")
    report = evaluate(catalog, fake_embedder, [skip], config)
    assert report["exact"]["clean"]["auto"]["upscaled"] == 0.0
    assert report["exact"]["clean"]["auto"]["note"] == "no"


def test_report_files(colour_catalog: Path, fake_embedder, tmp_path: Path) -> None:
    catalog = load_catalog(colour_catalog)
    up = _FakeUpscaler()
    conditions = (("x2", Degradation(down=2)), ("small", Degradation(min_width=8, max_width=40)))
    config = EvalConfig(conditions=conditions, quality_images=3)
    strategies = [
        Strategy("never"),
        Strategy("nearest", up),
        Strategy("auto", up, UpscalePolicy(UpscaleSettings())),
    ]
    report = evaluate(catalog, fake_embedder, strategies, config)
    paths = write_report(report, tmp_path / "rep")
    names = {p.name for p in paths}
    assert {
        "report.json",
        "report.md",
        "exact_recall.png",
        "text_recall.png",
        "upscaler_quality.png",
        "upscale_verdict.json",
        "exact_by_width.png",  # the condition with a range of widths
    } <= names
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    assert data["exact"]["x2"]["never"]["queries"] == 24
    md = (tmp_path / "rep" / "report.md").read_text()
    assert "| x2 `down=2` | 24x24 |" in md and "Does upscaling help" in md
    assert Image.open(tmp_path / "rep" / "exact_recall.png").size[0] > 100


# ------------------------------------------------------------------------------ finetune


def test_finetune_learns_saves_and_reloads(demo_shop: Path, tiny_clip: str, tmp_path: Path) -> None:
    from searchcore.embed import load_embedder
    from searchcore.training.data import trained_rows
    from searchcore.training.finetune import FinetuneConfig, finetune

    catalog = load_catalog(demo_shop)
    config = FinetuneConfig(
        base=tiny_clip,
        epochs=4,
        batch_size=8,
        lr=2e-3,
        warmup_steps=2,
        val_fraction=0.25,
        val_max_queries=20,
        half=False,
        patience=5,
    )
    result = finetune(catalog, tmp_path / "m", config)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 4 and losses[-1] < losses[0]
    assert "val_score" in result.history[0] and result.val
    meta = json.loads((tmp_path / "m" / "training.json").read_text())
    assert meta["split"]["train"] + meta["split"]["val"] == 40 and meta["steps"] == result.steps
    assert "## Validation" in (tmp_path / "m" / "README.md").read_text()
    # The saved folder embeds exactly like the weights it was written from (fp32).
    from safetensors.torch import load_file

    again = load_embedder(str(tmp_path / "m"))
    state = load_file(str(tmp_path / "m" / "open_clip_model.safetensors"))
    assert all(
        np.array_equal(state[k].numpy(), v.numpy()) for k, v in again.model.state_dict().items()
    )
    img = Image.open(catalog.image_path(0))
    np.testing.assert_allclose(
        again.embed_images([img]), load_embedder(str(tmp_path / "m")).embed_images([img]), atol=1e-6
    )
    rows, note = trained_rows(str(tmp_path / "m"), catalog)
    assert len(rows) == meta["split"]["train"] and "excluded" in note


def test_finetune_is_deterministic_and_locks_towers(
    demo_shop: Path, tiny_clip: str, tmp_path: Path
) -> None:
    from searchcore.embed import load_embedder
    from searchcore.training.finetune import FinetuneConfig, finetune

    catalog = load_catalog(demo_shop)
    base = {
        "base": tiny_clip,
        "epochs": 1,
        "batch_size": 8,
        "max_steps": 2,
        "val_fraction": 0.0,
        "half": False,
    }
    finetune(catalog, tmp_path / "a", FinetuneConfig(**base))
    finetune(catalog, tmp_path / "b", FinetuneConfig(**base))
    finetune(catalog, tmp_path / "c", FinetuneConfig(**base, lock_image=True))
    a, b, c = (load_embedder(str(tmp_path / x)) for x in "abc")
    start = load_embedder(tiny_clip)
    assert a.fingerprint == b.fingerprint != start.fingerprint
    sa, sc, s0 = a.model.state_dict(), c.model.state_dict(), start.model.state_dict()
    assert all(np.array_equal(sc[k].numpy(), s0[k].numpy()) for k in s0 if k.startswith("visual."))
    assert not all(
        np.array_equal(sa[k].numpy(), s0[k].numpy()) for k in s0 if k.startswith("visual.")
    )
    assert not np.array_equal(
        sc["token_embedding.weight"].numpy(), s0["token_embedding.weight"].numpy()
    )


def test_finetune_low_resolution_epochs_then_the_models_size(
    demo_shop: Path, tiny_clip: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Progressive resizing: the first epochs train on smaller views, the rest (and every
    validation) at the model's own size with the first layer groups frozen from then on; a
    ViT, whose positions are fixed, is refused."""
    import torch

    from searchcore.embed import register_architecture
    from searchcore.training import finetune as ft

    conv = register_architecture(
        {
            "embed_dim": 16,
            "vision_cfg": {
                "timm_model_name": "resnet18",
                "timm_model_pretrained": False,
                "timm_pool": "avg",
                "timm_proj": "linear",
                "image_size": 48,
            },
            "text_cfg": TINY_CLIP_CONFIG["text_cfg"],
        },
        name="test-tiny-resnet",
    )
    seen: list[tuple[bool, int]] = []  # (training?, side) of every batch the image tower saw
    states: list[dict[str, torch.Tensor]] = []  # the trunk's weights before each training step
    load = ft.load_base

    def spy(mod: torch.nn.Module, inp: tuple[torch.Tensor, ...]) -> None:
        seen.append((mod.training, int(inp[0].shape[-1])))
        if mod.training:
            states.append({k: v.detach().clone() for k, v in mod.trunk.state_dict().items()})

    def spying_load_base(*args: object, **kwargs: object) -> object:
        embedder, cfg = load(*args, **kwargs)
        embedder.model.visual.register_forward_pre_hook(spy)
        return embedder, cfg

    monkeypatch.setattr(ft, "load_base", spying_load_base)
    catalog = load_catalog(demo_shop)
    config = ft.FinetuneConfig(
        base="random:" + conv,
        epochs=2,
        batch_size=8,
        val_fraction=0.3,
        val_max_queries=4,
        low_res_epochs=1,
        low_res=24,
        freeze_groups=3,
        half=False,
    )
    result = ft.finetune(catalog, tmp_path / "m", config)
    assert [e["px"] for e in result.history] == [24, 48]
    trained = [side for training, side in seen if training]
    assert len(trained) == 6 and trained == [24] * 3 + [48] * 3
    assert {side for training, side in seen if not training} == {48}
    # the stem and layer1 trained at low resolution, then froze; the blocks above kept training
    start, full, last = states[0], states[3], states[5]
    for name in ("conv1.weight", "layer1.1.conv2.weight"):
        assert not torch.equal(start[name], full[name]) and torch.equal(full[name], last[name])
    assert not torch.equal(full["layer2.0.conv1.weight"], last["layer2.0.conv1.weight"])
    with pytest.raises(ConfigError, match="convolutional"):
        ft.finetune(catalog, tmp_path / "v", ft.FinetuneConfig(base=tiny_clip, low_res_epochs=1))
    with pytest.raises(ConfigError, match="low-resolution"):
        ft.FinetuneConfig(low_res=8)


# ------------------------------------------------------------------------------ upscaler


def test_train_upscaler_learns_and_round_trips(demo_shop: Path, tmp_path: Path) -> None:
    from searchcore.config import Settings
    from searchcore.training.upscaler import UpscalerTrainConfig, infer_srvgg_kwargs, train_upscaler
    from searchcore.upscale import build_upscaler, load_state_dict, load_upscaler_folder

    catalog = load_catalog(demo_shop)
    config = UpscalerTrainConfig(
        num_feat=8,
        num_conv=2,
        steps=40,
        batch_size=4,
        patch=32,
        lr=2e-3,
        warmup=2,
        val_every=20,
        val_images=4,
        val_fraction=0.2,
        pool_size=16,
        refresh=1,
    )
    result = train_upscaler(catalog, tmp_path / "up", config)
    assert [h["step"] for h in result.history] == [20, 40]
    spec, weights = load_upscaler_folder(tmp_path / "up")
    assert spec.arch == "srvgg" and spec.scale == 4 and dict(spec.arch_kwargs)["num_feat"] == 8
    assert infer_srvgg_kwargs(load_state_dict(weights)) == {**dict(spec.arch_kwargs), "scale": 4}
    # the core serves the trained folder like any upscaler (--upscaler FOLDER)
    up = build_upscaler(Settings(upscaler=str(tmp_path / "up")))
    out = up.upscale(Image.new("RGB", (20, 16), "red"))
    assert out.size == (80, 64)
    # fine-tune from the weights just written (the architecture comes from them)
    again = train_upscaler(
        catalog,
        tmp_path / "up2",
        UpscalerTrainConfig(
            init=weights, steps=2, batch_size=2, patch=32, val_every=2, val_images=2, pool_size=4
        ),
    )
    assert again.arch_kwargs["num_feat"] == 8
    weights.write_bytes(weights.read_bytes()[:-8] + b"tampered")
    with pytest.raises(WeightsError):
        load_upscaler_folder(tmp_path / "up")


def test_upscaler_loss_goes_down(demo_shop: Path, tmp_path: Path) -> None:
    from searchcore.training.upscaler import UpscalerTrainConfig, train_upscaler

    # A fixed pool of 16 pairs; per-batch losses are noisy, so compare the first 5 steps with
    # the last 15, and the held-out PSNR at step 5 with the end.
    config = UpscalerTrainConfig(
        num_feat=8,
        num_conv=2,
        steps=60,
        batch_size=4,
        patch=32,
        lr=3e-3,
        warmup=2,
        val_every=5,
        val_images=4,
        pool_size=16,
        refresh=0,
    )
    result = train_upscaler(load_catalog(demo_shop), tmp_path / "up", config)
    losses = [h["interval_loss"] for h in result.history]
    assert np.mean(losses[-3:]) < 0.95 * losses[0]
    assert result.history[-1]["val_psnr"] > result.history[0]["val_psnr"] + 0.3


def test_an_upscaler_trained_for_retrieval_moves_only_itself(
    demo_shop: Path, tiny_clip: str, tmp_path: Path
) -> None:
    """The retrieval objective trains the upscaler through the frozen embedder: the upscaler's
    weights move, the embedder's do not, and the folder records (and serves) what it was
    trained for."""
    from searchcore.config import Settings
    from searchcore.embed import load_embedder
    from searchcore.training.sr_retrieval import RetrievalUpscalerConfig, train_retrieval_upscaler
    from searchcore.training.upscaler import UpscalerTrainConfig, train_upscaler
    from searchcore.upscale import build_upscaler, load_state_dict, load_upscaler_folder

    catalog = load_catalog(demo_shop)
    small = UpscalerTrainConfig(
        num_feat=8,
        num_conv=2,
        steps=1,
        batch_size=2,
        patch=32,
        val_every=1,
        val_images=2,
        pool_size=4,
    )
    _, start = load_upscaler_folder(train_upscaler(catalog, tmp_path / "start", small).folder)
    embedder = load_embedder(tiny_clip)
    before = embedder.fingerprint
    config = RetrievalUpscalerConfig(
        model=tiny_clip,
        init=start,
        steps=6,
        batch_size=4,
        lr=1e-2,
        warmup=1,
        min_width=16,
        max_width=24,
        val_images=6,
        val_every=3,
        val_fraction=0.2,
    )
    result = train_retrieval_upscaler(catalog, tmp_path / "ret", config)
    assert [h["step"] for h in result.history] == [3, 6]
    meta = json.loads((tmp_path / "ret" / "training.json").read_text())
    assert meta["objective"] == "retrieval" and meta["embedder"]["fingerprint"] == before
    assert 0 <= meta["val"]["R@1_never"] <= 1 and 0 <= meta["val"]["R@1"] <= 1
    # the kept step: best Recall@1, ties to the photos closest to their products
    kept = max(meta["history"], key=lambda h: (h["val_R@1"], h["val_cos"]))
    assert meta["best_step"] == kept["step"] and meta["val"]["cos"] == kept["val_cos"]
    assert load_embedder(tiny_clip).fingerprint == before  # frozen
    _, trained = load_upscaler_folder(tmp_path / "ret")
    old, new = load_state_dict(start), load_state_dict(trained)
    assert any(not np.allclose(old[k].numpy(), new[k].numpy()) for k in old)  # it learned
    assert "frozen" in (tmp_path / "ret" / "README.md").read_text()
    up = build_upscaler(Settings(upscaler=str(tmp_path / "ret")))
    assert up.upscale(Image.new("RGB", (20, 16), "red")).size == (80, 64)


def test_retrieval_upscaler_photos_plain_or_as_a_shopper_takes_them() -> None:
    """A plain copy is the catalog photo only shrunk (eval's x4 conditions), in its own frame;
    a shopper's copy of the same photo is tilted, cropped and cast; strength 1 blurs it to the
    recipe's strongest; the shares and the blur are checked."""
    from searchcore.training.sr_retrieval import RetrievalUpscalerConfig, shopper_photo

    img = Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    ).filter(ImageFilter.GaussianBlur(2))
    config = RetrievalUpscalerConfig(model="default", rotate=8.0, blur=1.0, jpeg=50)
    clean = degrade(img, Degradation(min_width=24, max_width=24, jpeg=95), np.random.default_rng(1))
    plain = shopper_photo(img, 24, config, np.random.default_rng(1), strength=0.0, plain=True)
    assert plain.size == (24, 24)
    assert np.array_equal(np.asarray(plain), np.asarray(clean))
    tilted = shopper_photo(img, 24, config, np.random.default_rng(1), strength=0.0)
    assert np.abs(np.asarray(tilted, float) - np.asarray(clean, float)).mean() > 2
    blurred = shopper_photo(img, 24, config, np.random.default_rng(1), strength=1.0, plain=True)
    edges = [
        np.abs(np.diff(np.asarray(i.convert("L"), float), axis=1)).mean() for i in (plain, blurred)
    ]
    assert edges[1] < 0.8 * edges[0]
    for bad in ({"plain_share": 1.5}, {"blur": -1.0}, {"jpeg": 0}):
        with pytest.raises(ConfigError):
            RetrievalUpscalerConfig(model="default", **bad)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------ CLI


def test_cli_eval_finetune_and_train_upscaler(
    demo_shop: Path, tiny_clip: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "model"
    assert (
        main(
            [
                "finetune",
                "--catalog",
                str(demo_shop),
                "--base",
                tiny_clip,
                "--out",
                str(model),
                "--epochs",
                "1",
                "--batch-size",
                "8",
                "--max-steps",
                "2",
                "--val-fraction",
                "0.3",
                "--val-max-queries",
                "10",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    assert (model / "open_clip_model.safetensors").is_file()
    up = tmp_path / "up"
    assert (
        main(
            [
                "train-upscaler",
                "--catalog",
                str(demo_shop),
                "--out",
                str(up),
                "--num-feat",
                "8",
                "--num-conv",
                "2",
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--patch",
                "32",
                "--val-every",
                "2",
                "--pool-size",
                "4",
                "--refresh",
                "0",
            ]
        )
        == 0
    )
    out = tmp_path / "report"
    assert (
        main(
            [
                "eval",
                "--catalog",
                str(demo_shop),
                "--model",
                str(model),
                "--out",
                str(out),
                "--upscalers",
                f"never,{up},auto",
                "--condition",
                "x4",
                "--max-queries",
                "12",
                "--quality-images",
                "3",
                "--no-plots",
                "--write-verdict",
            ]
        )
        == 0
    )
    report = json.loads((out / "report.json").read_text())
    assert report["split"]["excluded_training_rows"] > 0  # trained on this catalog
    assert set(report["exact"]["x4"]) >= {"never", "sc-compact-x4", "auto"}
    assert (model / "upscale_verdict.json").is_file()
    capsys.readouterr()
    assert (
        main(
            [
                "eval",
                "--catalog",
                str(demo_shop),
                "--model",
                str(model),
                "--out",
                str(out),
                "--condition",
                "bogus",
            ]
        )
        == 2
    )
    assert capsys.readouterr().err.count("\n") == 1


def test_two_upscalers_of_one_name_are_refused() -> None:
    from searchcore.config import Settings
    from searchcore.training.strategies import build_strategies

    with pytest.raises(ConfigError, match="more than once"):
        build_strategies(("never", "bicubic", "bicubic"), Settings(), "default", "fp")
