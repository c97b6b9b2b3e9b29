"""ONNX Runtime beside torch: export, load, parity and the fingerprint rules, on a tiny model.

One tiny model folder is exported once for the module (fp32 and int8); tests that change a
folder work on a copy of it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY_CLIP_CONFIG
from PIL import Image

from searchcore.config import Settings, UpscaleSettings
from searchcore.embed import (
    FIDELITY_TOLERANCE,
    ClipEmbedder,
    OnnxEmbedder,
    export_onnx,
    load_embedder,
    save_model,
)
from searchcore.embed.onnx import CALIBRATION_PHOTOS, ONNX_MANIFEST, sample_photos
from searchcore.errors import ConfigError, IndexMismatchError, WeightsError

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXTS = ["red sneakers with white soles", "navy t-shirt", "", "a mug " * 20, "blue dress"]


@pytest.fixture(scope="module")
def exported(tiny_clip: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("onnx") / "model"
    save_model(load_embedder(tiny_clip, seed=3), folder, TINY_CLIP_CONFIG)
    export_onnx(load_embedder(str(folder)), folder, int8=True, samples=8)
    return folder


@pytest.fixture
def copy(exported: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(exported, tmp_path / "model"))


def photos() -> list[Image.Image]:
    return [*sample_photos(4, 80, seed=7), Image.new("RGB", (30, 50), (200, 30, 30))]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1)


def test_onnx_embeds_like_torch_under_the_same_fingerprint(exported: Path) -> None:
    torch_emb = load_embedder(str(exported))
    onnx_emb = load_embedder(str(exported), runtime="onnx", batch_size=2)  # batches of 2, 2, 1
    assert isinstance(onnx_emb, OnnxEmbedder) and onnx_emb.runtime == "onnx"
    assert torch_emb.runtime == "torch" and onnx_emb.spec == torch_emb.spec == str(exported)
    assert onnx_emb.fingerprint == torch_emb.fingerprint and onnx_emb.dim == torch_emb.dim == 16
    imgs = photos()
    a, b = torch_emb.embed_images(imgs), onnx_emb.embed_images(imgs)
    assert b.dtype == np.float32 and b.shape == (5, 16)
    assert np.allclose(np.linalg.norm(b, axis=1), 1, atol=1e-5)
    assert cosines(a, b).min() >= FIDELITY_TOLERANCE
    ta, tb = torch_emb.embed_texts(TEXTS), onnx_emb.embed_texts(TEXTS)
    assert tb.shape == (5, 16) and cosines(ta, tb).min() >= FIDELITY_TOLERANCE
    # one photo at a time (a query) and five at once (a build) give the same vectors
    ones = np.concatenate([onnx_emb.embed_images([im]) for im in imgs])
    assert np.abs(ones - onnx_emb.embed_pixels(onnx_emb.preprocess_images(imgs))).max() < 1e-5
    assert onnx_emb.embed_images([]).shape == (0, 16) and onnx_emb.embed_texts([]).shape == (0, 16)


def test_auto_picks_onnx_and_onnx_json_records_files_and_fidelity(exported: Path) -> None:
    assert isinstance(load_embedder(str(exported), runtime="auto"), OnnxEmbedder)
    manifest = json.loads((exported / ONNX_MANIFEST).read_text())
    torch_emb = load_embedder(str(exported))
    assert manifest["model"]["torch_fingerprint"] == torch_emb.fingerprint
    assert manifest["opset"] >= 17 and manifest["tolerance"] == FIDELITY_TOLERANCE
    fp32, int8 = manifest["variants"]["fp32"], manifest["variants"]["int8"]
    assert fp32["within_tolerance"] is True and fp32["fidelity"]["min_cosine"] >= 0.9999
    for tower in ("image", "text"):
        f = fp32["files"][tower]
        assert hashlib.sha256((exported / f["path"]).read_bytes()).hexdigest() == f["sha256"]
        assert fp32["fidelity"][tower]["batch_of_1_min_cosine"] >= 0.9999
    # int8's cost is reported, not hidden: below fp32's, and measured on the same samples
    assert 0.9 < int8["fidelity"]["min_cosine"] < fp32["fidelity"]["min_cosine"]
    assert int8["files"]["image"]["path"] == "image.int8.onnx"
    calibration = {
        "method": "MinMax",
        "photos": CALIBRATION_PHOTOS,
        "source": "generated photos (seed 1)",
    }
    assert int8["quantisation"]["image"]["static"]["calibration"] == calibration
    assert int8["quantisation"]["image"]["static"]["op_types"] == ["Conv"]
    assert list(int8["quantisation"]["text"]) == ["dynamic"]  # no photos to calibrate on


def test_int8_runs_convolutions_on_calibrated_7_bit_weights_and_matmuls_dynamically(
    exported: Path,
) -> None:
    import onnx
    from onnx import numpy_helper

    image = onnx.load(str(exported / "image.int8.onnx")).graph
    weights = {t.name: numpy_helper.to_array(t) for t in image.initializer}
    made_by = {out: node for node in image.node for out in node.output}
    convs = [n for n in image.node if n.op_type == "Conv"]
    assert convs and not [n for n in image.node if n.op_type == "ConvInteger"]
    for conv in convs:  # QDQ: the pixels and the weights both come dequantised from int8
        pixels, weight = (made_by[name] for name in conv.input[:2])
        assert pixels.op_type == weight.op_type == "DequantizeLinear"
        q, scale = weights[weight.input[0]], weights[weight.input[1]]
        assert q.dtype == np.int8 and np.abs(q.astype(int)).max() <= 64  # 7-bit range
        assert scale.shape == (q.shape[0],)  # one scale per output channel
        assert weights[made_by[pixels.input[0]].input[1]].size == 1  # calibrated, fixed range
    ops = {n.op_type for n in image.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops  # the transformer's matmuls
    text = onnx.load(str(exported / "text.int8.onnx")).graph
    assert "QuantizeLinear" not in {n.op_type for n in text.node}
    for graph in (image, text):  # matmul weights in 7 bits too (no int16 saturation on AVX2)
        consts = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        products = [n for n in graph.node if n.op_type == "MatMulInteger"]
        assert products and all(n.input[1] in consts for n in products)
        assert max(np.abs(consts[n.input[1]].astype(int)).max() for n in products) <= 64


def test_attention_is_exported_without_shape_arithmetic(exported: Path) -> None:
    import onnx
    import torch

    from searchcore.embed.onnx_trace import LeanSelfAttention

    for tower in ("image", "text"):  # traced as is, each layer computed its sizes (8 Shape ops)
        attention = [
            n for n in onnx.load(str(exported / f"{tower}.onnx")).graph.node if "/attn/" in n.name
        ]
        assert {"MatMul", "Softmax"} <= {n.op_type for n in attention}
        assert not [n for n in attention if n.op_type in ("Shape", "Unsqueeze", "Concat", "Slice")]
    torch.manual_seed(0)
    mha = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    lean = LeanSelfAttention(mha, tokens=6)
    x, y = torch.randn(3, 6, 32), torch.randn(3, 6, 32)
    causal = torch.full((6, 6), float("-inf")).triu(1)
    with torch.no_grad():
        for mask in (None, causal):
            want = mha(x, x, x, need_weights=False, attn_mask=mask)[0]
            assert torch.allclose(
                lean(x, x, x, need_weights=False, attn_mask=mask)[0], want, atol=1e-5
            )
        # anything else is the wrapped module's: cross-attention, another length, a bool mask
        assert torch.equal(lean(x, y, y)[0], mha(x, y, y, need_weights=False)[0])
        z = torch.randn(2, 5, 32)
        assert torch.equal(lean(z, z, z)[0], mha(z, z, z, need_weights=False)[0])
        boolean = causal.isinf()
        want = mha(x, x, x, need_weights=False, attn_mask=boolean)[0]
        assert torch.equal(lean(x, x, x, attn_mask=boolean)[0], want)


def test_int8_loads_under_a_fingerprint_of_its_own(exported: Path) -> None:
    torch_emb = load_embedder(str(exported))
    int8 = load_embedder(str(exported), runtime="onnx-int8")
    assert isinstance(int8, OnnxEmbedder) and int8.runtime == "onnx-int8"
    assert int8.fingerprint != torch_emb.fingerprint
    imgs = photos()
    assert cosines(torch_emb.embed_images(imgs), int8.embed_images(imgs)).min() > 0.95


def test_a_changed_onnx_file_is_refused(copy: Path) -> None:
    path = copy / "image.onnx"
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF
    path.write_bytes(bytes(data))
    for runtime in ("onnx", "auto"):
        with pytest.raises(WeightsError, match=r"not the file onnx\.json recorded"):
            load_embedder(str(copy), runtime=runtime)
    (copy / ONNX_MANIFEST).write_text("{not json")
    with pytest.raises(WeightsError, match="damaged"):
        load_embedder(str(copy), runtime="auto")


def test_onnx_files_from_other_weights_fall_back_to_torch_or_are_refused(
    tiny_clip: str, copy: Path, caplog: pytest.LogCaptureFixture
) -> None:
    save_model(load_embedder(tiny_clip, seed=4), copy, TINY_CLIP_CONFIG)  # new weights, old ONNX
    with caplog.at_level(logging.WARNING, logger="searchcore.embed.onnx"):
        auto = load_embedder(str(copy), runtime="auto")
    assert isinstance(auto, ClipEmbedder) and auto.runtime == "torch"
    assert "exported from other weights" in caplog.text and "model export" in caplog.text
    with pytest.raises(WeightsError, match="re-run `searchcore model export"):
        load_embedder(str(copy), runtime="onnx")


def test_where_there_is_no_onnx_export(tiny_clip: str, tmp_path: Path) -> None:
    folder = save_model(load_embedder(tiny_clip), tmp_path / "plain", TINY_CLIP_CONFIG)
    assert isinstance(load_embedder(str(folder), runtime="auto"), ClipEmbedder)
    with pytest.raises(ConfigError, match="no ONNX export; run `searchcore model export"):
        load_embedder(str(folder), runtime="onnx")
    assert isinstance(load_embedder(tiny_clip, runtime="auto"), ClipEmbedder)
    with pytest.raises(ConfigError, match="not a folder"):
        load_embedder(tiny_clip, runtime="onnx")
    with pytest.raises(ConfigError, match="runtime must be one of"):
        load_embedder(tiny_clip, runtime="tensorrt")
    with pytest.raises(ConfigError, match="no ONNX runtime"):
        load_embedder("pixels", runtime="onnx")
    stale = folder / ".quantise-1234"  # what an export killed while quantising leaves
    stale.mkdir()
    (stale / "static.onnx").write_bytes(b"half")
    export_onnx(load_embedder(str(folder)), folder, samples=3)  # fp32 only
    assert not stale.exists()
    with pytest.raises(ConfigError, match=r"no int8 ONNX export.*--int8"):
        load_embedder(str(folder), runtime="onnx-int8")


def test_the_runtime_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().runtime == "auto"
    assert Settings.from_env({"SEARCHCORE_RUNTIME": "onnx-int8"}).runtime == "onnx-int8"
    with pytest.raises(ConfigError, match="auto, torch, onnx, onnx-int8"):
        Settings.from_env({"SEARCHCORE_RUNTIME": "bogus"})
    from searchcore.cli import main

    monkeypatch.setenv("SEARCHCORE_RUNTIME", "bogus")
    assert main(["model", "export", "--model", "random:RN50", "--out", "unused"]) == 2


def test_an_index_built_with_torch_serves_with_onnx(
    exported: Path, colour_catalog: Path, tmp_path: Path
) -> None:
    from searchcore.build import build_index
    from searchcore.catalog import load_catalog
    from searchcore.service import open_engine
    from searchcore.stores.manifest import read_manifest

    index = tmp_path / "ix"
    build_index(load_catalog(colour_catalog), load_embedder(str(exported)), index, lanes=2)
    assert read_manifest(index).model.runtime == "torch"
    base = Settings(model=str(exported), upscale=UpscaleSettings(mode="never"))
    by_torch = open_engine(base.with_(runtime="torch"), index)
    by_onnx = open_engine(base.with_(runtime="onnx"), index)
    assert by_onnx.embedder.runtime == "onnx" and by_torch.embedder.runtime == "torch"
    photo = sorted((colour_catalog.parent / "images").iterdir())[5]
    for query in ({"image": photo}, {"text": "red cap", "mode": "vector"}):
        a, b = by_torch.search(k=8, **query), by_onnx.search(k=8, **query)
        assert [h.id for h in a.hits] == [h.id for h in b.hits]
        assert np.allclose([h.score for h in a.hits], [h.score for h in b.hits], atol=1e-4)
    # an index built with int8 says so, and torch does not serve it
    int8_index = tmp_path / "ix8"
    build_index(
        load_catalog(colour_catalog),
        load_embedder(str(exported), runtime="onnx-int8"),
        int8_index,
        lanes=2,  # two lanes share one single-threaded session
    )
    assert read_manifest(int8_index).model.runtime == "onnx-int8"
    assert open_engine(base.with_(runtime="onnx-int8"), int8_index).embedder.runtime == "onnx-int8"
    # auto serves an int8 index with int8 (its weights), never a silent rebuild in fp32
    assert open_engine(base.with_(runtime="auto"), int8_index).embedder.runtime == "onnx-int8"
    with pytest.raises(IndexMismatchError, match=r"\(torch\) has other weights .* \(onnx-int8\)"):
        open_engine(base.with_(runtime="torch"), int8_index)


def test_cli_exports_a_model_folder_and_builds_with_the_runtime_flag(
    tiny_clip: str, colour_catalog: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from searchcore.cli import main
    from searchcore.stores.manifest import read_manifest

    out = tmp_path / "exported"
    assert main(["model", "export", "--model", tiny_clip, "--out", str(out), "--samples", "4"]) == 0
    printed = capsys.readouterr().out
    assert "fidelity: cosine to torch on 4 photos" in printed and "fp32: image 0.99999" in printed
    assert "serves indexes built with torch" in printed and "image.onnx" in printed
    assert (out / "open_clip_config.json").is_file() and (out / ONNX_MANIFEST).is_file()
    assert load_embedder(str(out)).fingerprint == load_embedder(tiny_clip).fingerprint
    # a model folder, exported in place with --int8, checked on a catalog's photos and titles
    argv = ["model", "export", "--model", str(out), "--out", str(out), "--int8"]
    assert main([*argv, "--catalog", str(colour_catalog), "--samples", "6"]) == 0
    manifest = json.loads((out / ONNX_MANIFEST).read_text())
    assert manifest["samples"] == {"photos": 6, "texts": 6} and "int8" in manifest["variants"]
    # int8's convolutions calibrated on the catalog's products that are neither fidelity samples
    # nor held out (the newest 20% by id: 00019-00023 of 24, sample 00020 among them)
    calibration = manifest["variants"]["int8"]["quantisation"]["image"]["static"]["calibration"]
    assert calibration["photos"] == 24 - 5 - 5 and calibration["source"] == "given photos"
    # int8's retrieval cost measured on the 5 held-out products: too few to make it auto's choice
    cost = manifest["variants"]["int8"]["retrieval_cost"]
    assert cost["queries"] == cost["held_out"] == 5 and cost["within_noise"] is False
    assert set(cost["measures"]) == {"photo R@1", "photo R@10", "title R@1", "title R@10"}
    assert cost["measures"]["photo R@10"]["reference"] == 1.0  # 5 products: all within 10
    printed = capsys.readouterr().out
    assert "own fingerprint" in printed and "only 5 held-out queries" in printed
    assert "--runtime auto keeps fp32" in printed
    assert load_embedder(str(out), runtime="auto").runtime == "onnx"
    ix = tmp_path / "ix"
    argv = ["index", "build", "--catalog", str(colour_catalog), "--model", str(out)]
    assert main([*argv, "--runtime", "onnx-int8", "--out", str(ix)]) == 0
    assert read_manifest(ix).model.runtime == "onnx-int8"


def test_int8_is_autos_choice_only_where_its_measured_loss_is_within_the_noise(
    copy: Path, colour_catalog: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from searchcore.build import build_index
    from searchcore.catalog import load_catalog
    from searchcore.embed.onnx import record_retrieval_cost
    from searchcore.service import open_engine
    from searchcore.stores.manifest import read_manifest

    ix = tmp_path / "ix"  # built before the verdict: auto built it with fp32
    build_index(load_catalog(colour_catalog), load_embedder(str(copy), runtime="auto"), ix)
    assert read_manifest(ix).model.runtime == "onnx"
    for cost in ({"within_noise": False}, {"within_noise": "yes"}, "within_noise"):
        record_retrieval_cost(copy, cost)  # type: ignore[arg-type]
        assert load_embedder(str(copy), runtime="auto").runtime == "onnx"
    record_retrieval_cost(copy, {"within_noise": True, "why": "no significant loss"})
    with caplog.at_level(logging.INFO, logger="searchcore.embed.onnx"):
        assert load_embedder(str(copy), runtime="auto").runtime == "onnx-int8"
    assert "no significant loss" in caplog.text
    assert load_embedder(str(copy), runtime="onnx").runtime == "onnx"  # asked for: still fp32
    assert load_embedder(str(copy), runtime="auto", auto_int8=False).runtime == "onnx"
    base = Settings(model=str(copy), upscale=UpscaleSettings(mode="never"), runtime="auto")
    # the index built with fp32 is still served with fp32 (not refused as other weights) ...
    assert open_engine(base, ix).embedder.runtime == "onnx"
    # ... and one built now with auto is an int8 index, served with int8
    ix8 = tmp_path / "ix8"
    build_index(load_catalog(colour_catalog), load_embedder(str(copy), runtime="auto"), ix8)
    assert read_manifest(ix8).model.runtime == "onnx-int8"
    assert open_engine(base, ix8).embedder.runtime == "onnx-int8"


def test_the_int8_verdict_needs_enough_queries_and_no_significant_loss() -> None:
    from searchcore.training.runtime_cost import MIN_QUERIES, int8_verdict, paired, ranks

    gallery = np.eye(4, dtype=np.float32)
    assert ranks(np.eye(4, dtype=np.float32)[[1, 0, 2, 3]], gallery).tolist() == [2, 2, 1, 1]
    n = MIN_QUERIES
    ref = {"photo": np.ones(n, int), "title": np.full(n, 5)}

    def changed(lost: int, gained: int) -> dict[str, np.ndarray]:
        photo = np.ones(n, int)
        photo[:lost] = 2  # out of first place
        title = np.full(n, 5)
        title[lost : lost + gained] = 1
        return {"photo": photo, "title": title}

    same = paired(ref, ref)
    assert same["photo R@1"] == {
        "reference": 1.0,
        "candidate": 1.0,
        "gained": 0,
        "lost": 0,
        "p": 1.0,
    }
    assert int8_verdict(same, n)["within_noise"] is True
    assert "only 199 held-out queries" in int8_verdict(same, n - 1)["why"]
    assert int8_verdict(same, n - 1)["within_noise"] is False
    noisy = paired(ref, changed(lost=4, gained=0))  # p = 0.125: within the noise
    assert noisy["photo R@1"]["lost"] == 4 and int8_verdict(noisy, n)["within_noise"] is True
    worse = int8_verdict(paired(ref, changed(lost=8, gained=0)), n)  # p = 0.008
    assert worse["within_noise"] is False and worse["why"].endswith("photo R@1")
    # a significant gain is no objection, but it does not make up for a significant loss
    better = paired(ref, changed(lost=0, gained=20))
    assert better["title R@1"]["p"] < 0.05 and int8_verdict(better, n)["within_noise"] is True
    assert int8_verdict(paired(ref, changed(lost=8, gained=20)), n)["within_noise"] is False


def test_cost_queries_are_shopper_photos_of_held_out_products_only(colour_catalog: Path) -> None:
    from searchcore.catalog import load_catalog
    from searchcore.training.runtime_cost import held_out_queries

    catalog = load_catalog(colour_catalog)
    qs = held_out_queries(catalog, n=3)
    assert qs.held_out == 5 and len(qs.rows) == len(qs.queries) == len(qs.titles) == 3
    assert {catalog.df["id"].iloc[r] for r in qs.rows} <= {f"{i:05d}" for i in range(19, 24)}
    # 3:4 portraits, smaller than the 48 px photos (60 px wide where the photo is larger)
    assert all(q.width < 48 and abs(q.height / q.width - 4 / 3) < 0.05 for q in qs.queries)
    again = held_out_queries(catalog, n=3)  # seeded: the same photos every time
    assert [np.asarray(q).tobytes() for q in again.queries] == [
        np.asarray(q).tobytes() for q in qs.queries
    ]
    with pytest.raises(ConfigError, match="fraction"):
        held_out_queries(catalog, fraction=0)


def test_eval_on_int8_binds_its_upscaling_verdict_to_the_weights(
    copy: Path, colour_catalog: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The verdict is about the weights, whichever runtime measured it: serving checks it
    against the torch weights' fingerprint, so an int8 evaluation must write that one."""
    from searchcore.cli import main
    from searchcore.upscale.verdict import read_verdict

    argv = ["eval", "--catalog", str(colour_catalog), "--model", str(copy)]
    monkeypatch.setenv("SEARCHCORE_RUNTIME", "onnx-int8")
    argv += ["--out", str(tmp_path / "rep"), "--no-plots"]
    argv += ["--upscalers", "never,default,auto", "--condition", "x4", "--write-verdict"]
    assert main([*argv, "--max-queries", "8", "--quality-images", "0"]) == 0
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    int8 = load_embedder(str(copy), runtime="onnx-int8")
    assert report["model"]["fingerprint"] == int8.fingerprint  # int8 ran the evaluation
    verdict = read_verdict(str(copy))
    assert verdict is not None and verdict["fingerprint"] == load_embedder(str(copy)).fingerprint
