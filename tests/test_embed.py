from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY_CLIP_CONFIG
from PIL import Image

from searchcore.embed import ClipEmbedder, ModelSpec, load_embedder, save_model
from searchcore.errors import ConfigError, WeightsError


def _images(n: int = 3) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)) for _ in range(n)]


def test_spec_parsing(tmp_path: Path) -> None:
    assert ModelSpec.parse("ViT-B-32:openai") == ModelSpec(
        "pretrained", "ViT-B-32", "openai", "ViT-B-32:openai"
    )
    assert ModelSpec.parse("RN50").kind == "arch"
    assert ModelSpec.parse("random:RN50") == ModelSpec("random", "RN50", raw="random:RN50")
    for bad in ("random:", "random:RN50:openai", "random:a/b"):
        with pytest.raises(ConfigError, match="random:ARCH"):
            ModelSpec.parse(bad)
    assert (
        ModelSpec.parse("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K").name
        == "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
    )
    assert ModelSpec.parse(str(tmp_path)).kind == "local"
    assert ModelSpec.parse("local-dir:models/x").name == "models/x"
    assert ModelSpec.parse("default").kind == "local"  # the shipped model, or an error
    with pytest.raises(ConfigError):
        ModelSpec.parse("  ")


def test_tiny_model_embeds_normalised_float32(tiny_clip: str) -> None:
    emb = load_embedder(tiny_clip)
    v = emb.embed_images(_images())
    t = emb.embed_texts(["red sneakers with white soles", "a mug"])
    assert v.shape == (3, 16) and t.shape == (2, 16) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1, atol=1e-5)
    assert emb.embed_images([]).shape == (0, 16)
    # batching does not change results
    emb.batch_size = 2
    np.testing.assert_allclose(emb.embed_images(_images()), v, atol=1e-5)


def test_random_init_is_deterministic_and_seeded(tiny_clip: str) -> None:
    a, b = load_embedder(tiny_clip), load_embedder(tiny_clip)
    assert a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(a.embed_texts(["x"]), b.embed_texts(["x"]))
    assert load_embedder(tiny_clip, seed=1).fingerprint != a.fingerprint


def test_saved_model_reloads_and_embeds_identically(tiny_clip: str, tmp_path: Path) -> None:
    emb = load_embedder(tiny_clip, seed=3)
    folder = save_model(emb, tmp_path / "model", TINY_CLIP_CONFIG, card="# tiny\n")
    assert (
        json.loads((folder / "open_clip_config.json").read_text())["model_cfg"] == TINY_CLIP_CONFIG
    )
    again = load_embedder(str(folder))
    assert again.fingerprint == emb.fingerprint
    np.testing.assert_allclose(
        again.embed_images(_images()), emb.embed_images(_images()), atol=1e-6
    )
    np.testing.assert_allclose(
        again.embed_texts(["blue cap"]), emb.embed_texts(["blue cap"]), atol=1e-6
    )


def test_bad_local_model_folders(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match=r"open_clip_config\.json"):
        load_embedder(str(tmp_path))
    (tmp_path / "open_clip_config.json").write_text("{}")
    with pytest.raises(WeightsError, match="model_cfg"):
        load_embedder(str(tmp_path))
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CONFIG}))
    with pytest.raises(WeightsError, match="no weights"):
        load_embedder(str(tmp_path))
    (tmp_path / "open_clip_model.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError, match="cannot load"):
        load_embedder(str(tmp_path))


def test_pretrained_weights_are_not_downloaded_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="SEARCHCORE_ALLOW_DOWNLOAD"):
        load_embedder("RN50:openai", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="known tags"):
        load_embedder("RN50:no-such-tag", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown model"):
        load_embedder("no-such-arch")
    assert not any(tmp_path.rglob("*.bin")) and not any(tmp_path.rglob("*.safetensors"))


def test_an_architecture_alone_is_refused_with_what_to_write_instead(tiny_clip: str) -> None:
    # ViT-B-32 as people write it would be random weights: noise that looks like results.
    with pytest.raises(ConfigError, match=r"without weights.*ViT-B-32:openai.*random:ViT-B-32"):
        load_embedder("ViT-B-32")
    with pytest.raises(ConfigError, match=r"finetune --base sc-small.*random:sc-small"):
        load_embedder("sc-small")
    assert load_embedder("random:sc-small").spec == "random:sc-small"
    assert tiny_clip.startswith("random:")


def test_default_without_the_shipped_model_is_an_error_not_a_random_model(
    tmp_path: Path, monkeypatch
) -> None:
    import searchcore.embed.spec as spec

    monkeypatch.setattr(spec, "DEFAULT_MODEL_DIR", tmp_path / "absent")
    with pytest.raises(ConfigError, match=r"shipped model .* is not installed"):
        load_embedder("default")


def test_an_index_recorded_with_a_bare_architecture_still_opens(tiny_clip: str) -> None:
    from searchcore.embed import recorded_spec

    # Before random:ARCH, a manifest said "sc-test-tiny" for the same random weights.
    bare = tiny_clip.removeprefix("random:")
    assert recorded_spec(bare) == tiny_clip
    assert load_embedder(recorded_spec(bare)).fingerprint == load_embedder(tiny_clip).fingerprint
    assert recorded_spec("ViT-B-32:openai") == "ViT-B-32:openai"


def test_importing_the_package_is_light() -> None:
    code = (
        "import sys, searchcore, searchcore.cli, searchcore.engine, searchcore.config; "
        "heavy = [m for m in ('torch', 'open_clip', 'basicsr', 'realesrgan', 'gradio') "
        "if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_raw_pixels_baseline(colour_catalog: Path, tmp_path: Path) -> None:
    from searchcore.build import build_index
    from searchcore.catalog import load_catalog
    from searchcore.engine import SearchEngine
    from searchcore.stores.hnsw import HnswIndex

    emb = load_embedder("pixels:8")
    v = emb.embed_images(_images())
    assert v.shape == (3, 192) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    with pytest.raises(ConfigError, match="words"):
        emb.embed_texts(["red"])
    with pytest.raises(ConfigError):
        load_embedder("pixels:x")
    portrait = load_embedder("pixels:30x40")  # a 3:4 shop's thumbnail: 30 wide, 40 high
    assert portrait.dim == 3600 and portrait.prepare(_images()[0]).shape == (40, 30, 3)
    assert portrait.fingerprint != load_embedder("pixels:30").fingerprint
    assert load_embedder("pixels:8x8").fingerprint == emb.fingerprint  # a square is a square
    with pytest.raises(ConfigError):
        load_embedder("pixels:30x")
    catalog = load_catalog(colour_catalog)
    build_index(catalog, emb, tmp_path / "ix")
    engine = SearchEngine(catalog, emb, None, HnswIndex.load(tmp_path / "ix")[0])
    photo = Image.open(catalog.image_path(5))
    assert engine.search_image(photo.resize((90, 90)), k=1, upscale="never").hits[0].id == "00005"


def test_batched_preprocessing_matches_open_clips_own_transform(tiny_clip: str) -> None:
    """prepare + collate (torch ops on uint8 batches) against open_clip's PIL transform."""
    emb = load_embedder(tiny_clip)
    rng = np.random.default_rng(1)
    photos = [  # square, portrait, landscape, smaller than the model's input, large, grey
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        for h, w in [(32, 32), (90, 40), (41, 77), (12, 20), (300, 260), (64, 64), (90, 40)]
    ] + [Image.fromarray(rng.integers(0, 255, (50, 50), dtype=np.uint8), "L")]
    photos[0] = Image.new("RGB", (32, 32), (200, 30, 30))  # flat: must come out exactly
    prepared = [emb.prepare(p) for p in photos]
    assert all(a.dtype == np.uint8 and a.ndim == 3 and a.shape[2] == 3 for a in prepared)
    assert max(prepared[4].shape[:2]) < 300  # large photos are shrunk before the resize
    batch = emb.collate(prepared)
    assert tuple(batch.shape) == (len(photos), 3, 32, 32)
    # open_clip's PIL path on the same shrunk pixels: one grey level of rounding at most
    expected = torch.stack([emb.transform(Image.fromarray(a)) for a in prepared])
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    assert float(((batch - expected).abs() * std * 255).max()) <= 1.01
    assert torch.allclose(batch[0], expected[0], atol=1e-5)
    # batching, grouping by size and order do not change a photo's pixels
    for i, p in enumerate(photos):
        assert torch.allclose(emb.preprocess(p), batch[i], atol=1e-6)
    np.testing.assert_allclose(emb.embed_pixels(batch), emb.embed_images(photos), atol=1e-5)
    assert emb.collate([]).shape[0] == 0


def test_unknown_transform_steps_run_as_they_are(tiny_clip: str) -> None:
    from torchvision import transforms as T

    from searchcore.embed import BatchTransform

    emb = load_embedder(tiny_clip)
    odd = T.Compose([T.Resize((32, 32)), T.Grayscale(3), T.ToTensor()])  # squash + grey
    assert BatchTransform.from_open_clip(odd) is None
    assert BatchTransform.from_open_clip(emb.transform) is not None
    photo = _images(1)[0]
    plain = T.Compose([T.Resize((20, 30)), T.ToTensor()])  # squash, no normalisation: known
    batched = BatchTransform.from_open_clip(plain)
    x = torch.from_numpy(np.array(photo)[None]).permute(0, 3, 1, 2)
    assert float((batched(x)[0] - plain(photo)).abs().max()) <= 1.01 / 255
    other = ClipEmbedder(emb.model, odd, emb.tokenizer, spec="odd")
    assert torch.equal(other.preprocess(photo), odd(photo))
    assert torch.equal(other.collate([other.prepare(photo)] * 2)[1], odd(photo))


def test_build_in_lanes_equals_the_overlapped_build(
    tiny_clip: str, colour_catalog: Path, tmp_path: Path
) -> None:
    """Lanes (one torch thread each) embed and label every photo as one model lane does."""
    from searchcore.build import build_index
    from searchcore.catalog import load_catalog
    from searchcore.stores.hnsw import HnswIndex

    emb = load_embedder(tiny_clip)
    catalog = load_catalog(colour_catalog)
    (colour_catalog.parent / "images" / "00007.png").write_bytes(b"junk")
    before = torch.get_num_threads()
    one = build_index(catalog, emb, tmp_path / "one", batch_size=5, lanes=1)
    three = build_index(catalog, emb, tmp_path / "three", batch_size=5, lanes=3)
    assert torch.get_num_threads() == before  # the build gives torch its threads back
    assert one.indexed == three.indexed == 23
    assert [s["id"] for s in three.skipped] == [s["id"] for s in one.skipped] == ["00007"]
    a, b = HnswIndex.load(tmp_path / "one")[0], HnswIndex.load(tmp_path / "three")[0]
    labels = [i for i in range(24) if i != 7]
    np.testing.assert_array_equal(b.live_labels(), labels)
    np.testing.assert_allclose(b.get_vectors(labels), a.get_vectors(labels), atol=1e-5)
    direct = emb.embed_images([Image.open(catalog.image_path(i)) for i in labels])
    np.testing.assert_allclose(b.get_vectors(labels), direct, atol=1e-5)


def test_photos_reach_the_model_squashed_not_centre_cropped(tiny_clip: str) -> None:
    """A 3:4 portrait keeps its top and bottom (a shoe's toes, a dress's hem): the model sees
    it squashed to its square, as a square catalog photo of it would be."""
    from PIL import Image

    emb = load_embedder(tiny_clip)
    assert emb.geometry == "squash" and "CenterCrop" not in str(emb.transform)
    rng = np.random.default_rng(0)
    portrait = Image.fromarray((rng.random((80, 60, 3)) * 255).astype(np.uint8))
    a, b = emb.embed_images([portrait, portrait.resize((32, 32), Image.Resampling.BICUBIC)])
    assert float(a @ b) > 0.99
    # what a centre crop would keep: a different picture, a different vector
    crop = portrait.crop((0, 10, 60, 70)).resize((32, 32), Image.Resampling.BICUBIC)
    assert float(a @ emb.embed_images([crop])[0]) < float(a @ b)
    # a model that asks for padding keeps it, and its vectors are another model's
    emb.model.visual.preprocess_cfg = {**emb.model.visual.preprocess_cfg, "resize_mode": "longest"}
    padded = ClipEmbedder(emb.model, emb.transform, emb.tokenizer, spec="padded")
    assert padded.geometry == "longest" and padded.fingerprint != emb.fingerprint
