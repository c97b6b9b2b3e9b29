"""Tests for searchcore.upscale: registry, weights resolution, safe loading, upscalers, policy.

Everything runs offline on tiny random networks written to ``tmp_path``; the tests marked
``shared`` use the real Real-ESRGAN weights and photos in ../shared and skip without them.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter

from searchcore import upscale as up
from searchcore.config import Settings, UpscaleSettings
from searchcore.errors import ConfigError, UpscaleError, WeightsError

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_WEIGHTS = SHARED / "weights" / "realesrgan" / "realesr-general-x4v3.pth"
SHARED_IMAGES = SHARED / "data" / "fashion-224" / "images"

TINY_KWARGS = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 8, "num_conv": 2, "act_type": "prelu"}


def tiny_spec(name: str = "test-tiny-srvgg", **changes: Any) -> up.UpscalerSpec:
    fields: dict[str, Any] = {
        "name": name,
        "arch": "srvgg",
        "arch_kwargs": TINY_KWARGS,
        "scale": 4,
        "url": None,
        "sha256": None,
        "filename": f"{name}.pth",
        "description": "tiny random network for tests",
    }
    fields.update(changes)
    return up.UpscalerSpec(**fields)


def random_image(w: int, h: int, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, len(mode))
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode)


def save_tiny_weights(path: Path, spec: up.UpscalerSpec, seed: int = 0) -> dict[str, Any]:
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    state = up.build_network(spec).state_dict()
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"params": state}, path)
    return state


@pytest.fixture
def spec() -> Any:
    """A custom spec registered like a project-trained model, removed again afterwards."""
    s = up.register_upscaler(tiny_spec(), replace=True)
    yield s
    up.UPSCALERS.pop(s.name, None)


@pytest.fixture
def tiny_pth(tmp_path: Path, spec: up.UpscalerSpec) -> Path:
    path = tmp_path / "tiny.pth"
    save_tiny_weights(path, spec)
    return path


# --------------------------------------------------------------------------- import


def test_import_is_light() -> None:
    code = (
        "import sys, searchcore.upscale\n"
        "heavy = [m for m in ('torch', 'basicsr', 'realesrgan', 'cv2') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- registry


def test_unknown_upscaler_lists_valid_names() -> None:
    with pytest.raises(ConfigError) as info:
        up.get_upscaler_spec("esrgan-9000")
    message = str(info.value)
    for name in ("realesr-general-x4v3", "RealESRGAN_x4plus", "RealESRGAN_x2plus"):
        assert name in message


@pytest.mark.parametrize("name", sorted(up.UPSCALERS))
def test_official_specs_are_complete(name: str) -> None:
    s = up.get_upscaler_spec(name)
    assert s.url and s.url.startswith("https://github.com/xinntao/Real-ESRGAN/releases/download/")
    assert s.url.endswith("/" + s.filename)
    assert s.sha256 is not None and len(s.sha256) == 64
    assert s.kwargs[{"srvgg": "upscale", "rrdb": "scale"}[s.arch]] == s.scale
    hash(s)  # frozen and hashable, arch_kwargs included


def test_official_spec_table() -> None:
    assert up.get_upscaler_spec("RealESRGAN_x2plus").scale == 2
    assert up.get_upscaler_spec("realesr-animevideov3").kwargs["num_conv"] == 16
    assert up.get_upscaler_spec("realesr-general-x4v3").kwargs["num_conv"] == 32
    assert up.get_upscaler_spec("RealESRGAN_x4plus").kwargs["num_block"] == 23


def test_register_refuses_to_shadow(spec: up.UpscalerSpec) -> None:
    assert up.get_upscaler_spec(spec.name) is spec
    with pytest.raises(ConfigError, match="already registered"):
        up.register_upscaler(tiny_spec())


def test_spec_validation() -> None:
    with pytest.raises(ConfigError, match="scale="):
        tiny_spec(arch_kwargs={**TINY_KWARGS, "upscale": 2})
    with pytest.raises(ConfigError, match="sha256"):
        tiny_spec(sha256="abc")
    with pytest.raises(ConfigError, match="file name"):
        tiny_spec(filename="../evil.pth")


# --------------------------------------------------------------------------- resolve_weights


def _file_with_digest(path: Path, data: bytes) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def test_explicit_path_wins(tmp_path: Path) -> None:
    official = up.get_upscaler_spec("realesr-general-x4v3")
    cached = tmp_path / "cache" / "realesrgan" / official.filename
    _file_with_digest(cached, b"not the official file")
    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"my own copy, not the official bytes")
    got = up.resolve_weights(official, mine, tmp_path / "cache", allow_download=False)
    assert got == mine


def test_explicit_path_must_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match=r"nope\.pth"):
        up.resolve_weights(tiny_spec(), missing, tmp_path, allow_download=False)


def test_missing_everywhere_says_how_to_fix(tmp_path: Path) -> None:
    official = up.get_upscaler_spec("realesr-general-x4v3")
    with pytest.raises(WeightsError) as info:
        up.resolve_weights(official, None, tmp_path / "cache", allow_download=False)
    message = str(info.value)
    assert official.url is not None and official.url in message
    assert "SEARCHCORE_UPSCALER_WEIGHTS" in message
    assert "SEARCHCORE_ALLOW_DOWNLOAD=1" in message
    assert str(tmp_path / "cache" / "realesrgan" / official.filename) in message


def test_download_with_right_sha(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)  # several read chunks
    source = tmp_path / "server" / "w.pth"
    digest = _file_with_digest(source, data)
    s = tiny_spec(url=source.as_uri(), sha256=digest, filename="w.pth")
    cache = tmp_path / "cache"
    got = up.resolve_weights(s, None, cache, allow_download=True)
    assert got == cache / "realesrgan" / "w.pth"
    assert got.read_bytes() == data
    assert sorted(p.name for p in got.parent.iterdir()) == ["w.pth"]  # no temp file left
    # A second resolution uses the verified cache, even with downloads off.
    assert up.resolve_weights(s, None, cache, allow_download=False) == got


def test_download_with_wrong_sha_leaves_nothing(tmp_path: Path) -> None:
    source = tmp_path / "server" / "w.pth"
    _file_with_digest(source, b"tampered bytes")
    s = tiny_spec(url=source.as_uri(), sha256="0" * 64, filename="w.pth")
    cache = tmp_path / "cache"
    with pytest.raises(WeightsError, match="nothing was saved"):
        up.resolve_weights(s, None, cache, allow_download=True)
    assert list((cache / "realesrgan").iterdir()) == []


def test_download_failure_is_reported_as_offline(tmp_path: Path) -> None:
    url = (tmp_path / "server" / "absent.pth").as_uri()
    s = tiny_spec(url=url, sha256="0" * 64, filename="absent.pth")
    with pytest.raises(WeightsError) as info:
        up.resolve_weights(s, None, tmp_path / "cache", allow_download=True)
    assert "offline or unreachable" in str(info.value) and url in str(info.value)
    assert list((tmp_path / "cache" / "realesrgan").iterdir()) == []


def test_cached_file_with_wrong_sha_is_refused(tmp_path: Path) -> None:
    official = up.get_upscaler_spec("realesr-general-x4v3")
    cached = tmp_path / "realesrgan" / official.filename
    _file_with_digest(cached, b"a truncated or foreign file")
    with pytest.raises(WeightsError) as info:
        up.resolve_weights(official, None, tmp_path, allow_download=True)
    assert str(cached) in str(info.value) and "delete it" in str(info.value)


def test_cached_file_with_right_sha_is_used(tmp_path: Path) -> None:
    cached = tmp_path / "realesrgan" / "w.pth"
    digest = _file_with_digest(cached, b"verified bytes")
    s = tiny_spec(sha256=digest, filename="w.pth")
    assert up.resolve_weights(s, None, tmp_path, allow_download=False) == cached


def test_unverifiable_cache_needs_explicit_consent(tmp_path: Path) -> None:
    cached = tmp_path / "realesrgan" / "w.pth"
    _file_with_digest(cached, b"bytes nobody can verify")
    s = tiny_spec(sha256=None, filename="w.pth")
    with pytest.raises(WeightsError, match="no known sha256"):
        up.resolve_weights(s, None, tmp_path, allow_download=False)
    got = up.resolve_weights(s, None, tmp_path, allow_download=False, allow_unverified=True)
    assert got == cached


# --------------------------------------------------------------------------- safe loading


def test_load_state_dict_formats(tmp_path: Path, spec: up.UpscalerSpec) -> None:
    torch = pytest.importorskip("torch")
    state = save_tiny_weights(tmp_path / "a.pth", spec, seed=1)
    for obj in ({"params_ema": state, "params": {}}, state):
        torch.save(obj, tmp_path / "b.pth")
        loaded = up.load_state_dict(tmp_path / "b.pth")
        assert loaded.keys() == state.keys()
        assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_truncated_file(tmp_path: Path, tiny_pth: Path) -> None:
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(tiny_pth.read_bytes()[: tiny_pth.stat().st_size // 2])
    with pytest.raises(WeightsError, match=r"truncated\.pth"):
        up.load_state_dict(bad)


def test_random_bytes(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    bad = tmp_path / "random.pth"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError, match=r"random\.pth"):
        up.load_state_dict(bad)
    bad_st = tmp_path / "random.safetensors"
    bad_st.write_bytes(os.urandom(4096))
    with pytest.raises(WeightsError, match=r"random\.safetensors"):
        up.load_state_dict(bad_st)


class _Payload:
    """Unpickling this calls open(marker, "w"): the file appears if the pickle is executed."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_does_not_run(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    torch.save({"params": {"body.0.weight": _Payload(marker)}}, evil)
    with pytest.raises(WeightsError, match=r"evil\.pth: .* could run code"):
        up.load_state_dict(evil)
    assert not marker.exists()
    # The payload is live: an unsafe load would have run it.
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_not_a_state_dict(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="no state dict"):
        up.load_state_dict(path)


@pytest.mark.parametrize(
    "other", [{"num_feat": 16}, {"num_conv": 3}], ids=["wrong-shapes", "extra-keys"]
)
def test_weights_of_another_network(
    tmp_path: Path, spec: up.UpscalerSpec, other: dict[str, Any]
) -> None:
    path = tmp_path / "other.pth"
    save_tiny_weights(path, tiny_spec("other", arch_kwargs={**TINY_KWARGS, **other}))
    upscaler = up.RealESRGANUpscaler(spec, path)
    with pytest.raises(WeightsError, match=f"other.pth do not fit {spec.name}"):
        upscaler.load()


# --------------------------------------------------------------------------- upscalers


def test_tiny_network_upscales(tmp_path: Path, spec: up.UpscalerSpec, tiny_pth: Path) -> None:
    pytest.importorskip("safetensors")
    st = tmp_path / "tiny.safetensors"
    save_tiny_weights(st, spec)  # same seed, same weights as tiny_pth
    img = random_image(20, 16)
    outputs = []
    for weights in (tiny_pth, st):
        upscaler = up.RealESRGANUpscaler(spec, weights)
        assert (upscaler.name, upscaler.scale) == (spec.name, 4)
        out = upscaler.upscale(img)
        assert out.mode == "RGB" and out.size == (80, 64)
        outputs.append(np.asarray(out))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    # The residual network changes the nearest-neighbour base image: it really ran.
    assert not np.array_equal(
        outputs[0], np.asarray(img.resize((80, 64), Image.Resampling.NEAREST))
    )


def test_odd_inputs(spec: up.UpscalerSpec, tiny_pth: Path) -> None:
    upscaler = up.RealESRGANUpscaler(spec, tiny_pth)
    assert upscaler.upscale(random_image(12, 9, mode="RGBA")).size == (48, 36)
    assert upscaler.upscale(random_image(5, 3, mode="L")).size == (20, 12)  # < reflect pad
    tiled = up.RealESRGANUpscaler(spec, tiny_pth, tile=8)
    assert tiled.upscale(random_image(20, 16)).size == (80, 64)


def test_large_input_is_shrunk_first(spec: up.UpscalerSpec, tiny_pth: Path) -> None:
    upscaler = up.RealESRGANUpscaler(spec, tiny_pth, max_input_side=32)
    out = upscaler.upscale(random_image(100, 50))
    assert out.size == (32 * 4, 16 * 4)


class _CountingUpscaler(up.RealESRGANUpscaler):
    builds = 0

    def _build_engine(self) -> Any:
        type(self).builds += 1
        return super()._build_engine()


def test_concurrent_calls_match_sequential(spec: up.UpscalerSpec, tiny_pth: Path) -> None:
    images = [random_image(24 + 4 * i, 16 + 2 * i, seed=i) for i in range(8)]
    sequential = up.RealESRGANUpscaler(spec, tiny_pth)
    expected = [np.asarray(sequential.upscale(img)) for img in images]

    shared = _CountingUpscaler(spec, tiny_pth)  # not loaded yet: the first calls race to build
    barrier = threading.Barrier(len(images))

    def work(img: Image.Image) -> np.ndarray:
        barrier.wait()
        return np.asarray(shared.upscale(img))

    def run_all() -> None:
        with ThreadPoolExecutor(max_workers=len(images)) as pool:
            for got, want in zip(pool.map(work, images), expected, strict=True):
                np.testing.assert_array_equal(got, want)

    run_all()
    assert _CountingUpscaler.builds == 1

    # RealESRGANer keeps the current image on itself between pre_process and process; make
    # that window wide (a sleep releases the GIL) and check that calls never overlap in it.
    engine = shared._engine
    original_process = engine.process
    in_flight, overlaps = [0], [0]

    def slow_process() -> None:
        in_flight[0] += 1
        overlaps[0] += in_flight[0] > 1
        time.sleep(0.01)
        original_process()
        in_flight[0] -= 1

    engine.process = slow_process
    run_all()
    assert overlaps[0] == 0


def test_preloaded_engine_matches_realesrganer(spec: up.UpscalerSpec, tiny_pth: Path) -> None:
    """Our RealESRGANer subclass skips its __init__: it must set the same attributes."""
    torch = pytest.importorskip("torch")
    from realesrgan import RealESRGANer  # patched in by the load above

    upscaler = up.RealESRGANUpscaler(spec, tiny_pth)
    upscaler.load()
    reference = RealESRGANer(
        scale=4, model_path=str(tiny_pth), model=up.build_network(spec), device=torch.device("cpu")
    )
    assert set(vars(upscaler._engine)) == set(vars(reference))


@pytest.mark.parametrize("tile", [0, 8])
def test_network_failure_is_upscale_error(tmp_path: Path, tile: int) -> None:
    # Weights for a 4-channel network: the 3-channel input makes the first conv fail.
    s = tiny_spec("four-channels", arch_kwargs={**TINY_KWARGS, "num_in_ch": 4})
    path = tmp_path / "four.pth"
    save_tiny_weights(path, s)
    with pytest.raises(UpscaleError):
        up.RealESRGANUpscaler(s, path, tile=tile).upscale(random_image(20, 16))


def test_bicubic_upscaler() -> None:
    b = up.BicubicUpscaler(scale=3)
    assert (b.name, b.scale) == ("bicubic-x3", 3)
    out = b.upscale(random_image(10, 7, mode="RGBA"))
    assert out.mode == "RGB" and out.size == (30, 21)


def test_build_upscaler_from_settings(spec: up.UpscalerSpec, tiny_pth: Path) -> None:
    settings = Settings(
        upscaler=spec.name,
        upscaler_weights=tiny_pth,
        threads=1,
        upscale=UpscaleSettings(tile=64, max_input_side=48),
    )
    upscaler = up.build_upscaler(settings)
    assert (upscaler.spec, upscaler.weights) == (spec, tiny_pth)
    assert (upscaler.tile, upscaler.max_input_side, upscaler.threads) == (64, 48, 1)
    with pytest.raises(ConfigError, match="unknown upscaler"):
        up.build_upscaler(settings.with_(upscaler="nope"))


def test_shipped_upscalers_by_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``default`` and ``psnr`` name the project's own folders; a missing ``default`` falls
    back to the official weights' spec, a missing ``psnr`` is a clear error."""
    missing = {"default": tmp_path / "a", "psnr": tmp_path / "b"}
    monkeypatch.setattr(up, "SHIPPED_UPSCALERS", missing)
    with pytest.raises(ConfigError, match="'psnr' is not shipped"):
        up.build_upscaler(Settings(upscaler="psnr"))
    with pytest.raises(WeightsError):  # the fallback's weights: not cached, no download here
        up.build_upscaler(Settings(upscaler="default", cache_dir=tmp_path / "cache"))


# --------------------------------------------------------------------------- policy


def checkerboard(size: int, cell: int = 8) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size]
    board = (((yy // cell) + (xx // cell)) % 2 * 255).astype(np.uint8)
    return Image.fromarray(np.stack([board] * 3, axis=-1), "RGB")


def test_sharpness_separates_sharp_from_blurred() -> None:
    sharp = checkerboard(512)
    blurred = sharp.filter(ImageFilter.GaussianBlur(6))
    assert up.sharpness(sharp) > 40.0 > up.sharpness(blurred)
    # Measured at a fixed 256 px shorter side: upload size barely matters.
    big = sharp.resize((1024, 1024), Image.Resampling.NEAREST)
    assert up.sharpness(big) == pytest.approx(up.sharpness(sharp), rel=0.1)


def test_policy_modes() -> None:
    policy = up.UpscalePolicy(UpscaleSettings(mode="auto", min_side=160, min_sharpness=40.0))
    small = random_image(60, 80)
    sharp = checkerboard(512)
    blurred = sharp.filter(ImageFilter.GaussianBlur(6))

    assert policy.decide(sharp, "never") == up.UpscaleDecision(
        False, "upscaling off", 512, 512, None
    )
    assert policy.decide(small, "always").reason == "upscaling forced"
    assert policy.decide(small, "always").upscale

    d = policy.decide(small)
    assert d.upscale and d.reason == "small: 60x80 px, shorter side < 160"

    d = policy.decide(blurred)
    assert d.upscale and d.sharpness is not None and d.sharpness < 40
    assert d.reason == f"blurry: sharpness {d.sharpness:.1f} < 40.0"

    d = policy.decide(sharp)
    assert not d.upscale and d.sharpness is not None
    assert d.reason == f"sharp and large enough: 512x512, sharpness {d.sharpness:.1f}"
    assert d.to_dict() == {
        "upscale": False,
        "reason": d.reason,
        "width": 512,
        "height": 512,
        "sharpness": d.sharpness,
    }

    never = up.UpscalePolicy(UpscaleSettings(mode="never"))
    assert not never.decide(small).upscale  # the settings' mode is the default
    with pytest.raises(ConfigError, match="upscale mode"):
        policy.decide(small, "sometimes")


# --------------------------------------------------------------------------- real weights


def _psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255.0**2 / np.mean((x - y) ** 2)))


@pytest.fixture(scope="module")
def real_upscaler() -> up.RealESRGANUpscaler:
    if not SHARED_WEIGHTS.is_file() or not SHARED_IMAGES.is_dir():
        pytest.skip(f"needs ../shared (real Real-ESRGAN weights and photos), not found at {SHARED}")
    spec = up.get_upscaler_spec("realesr-general-x4v3")
    # These copies are not the official bytes: they are accepted because given explicitly.
    weights = up.resolve_weights(spec, SHARED_WEIGHTS, Path("/nonexistent"), allow_download=False)
    upscaler = up.RealESRGANUpscaler(spec, weights)
    upscaler.load()
    return upscaler


def _degrade(path: Path) -> tuple[Image.Image, Image.Image]:
    original = Image.open(path).convert("RGB")
    assert original.size == (224, 224)
    return original, original.resize((56, 56), Image.Resampling.BICUBIC)


@pytest.mark.shared
def test_real_weights_sharper_than_bicubic(real_upscaler: up.RealESRGANUpscaler) -> None:
    _, small = _degrade(min(SHARED_IMAGES.glob("*.jpg")))
    esrgan = real_upscaler.upscale(small)
    bicubic = up.BicubicUpscaler(4).upscale(small)
    assert esrgan.size == bicubic.size == (224, 224)
    s_esrgan, s_bicubic = up.sharpness(esrgan), up.sharpness(bicubic)
    print(f"sharpness: real-esrgan {s_esrgan:.1f}, bicubic {s_bicubic:.1f}")
    assert s_esrgan > s_bicubic


@pytest.mark.shared
def test_real_weights_psnr_not_worse_than_bicubic(real_upscaler: up.RealESRGANUpscaler) -> None:
    # Averaged over 16 photos: on one flat, low-detail photo a GAN upscaler can lose ~2 dB to
    # bicubic while winning on detailed ones, so a single photo would make a flaky criterion.
    bicubic = up.BicubicUpscaler(4)
    p_esrgan, p_bicubic, sharper = [], [], 0
    for path in sorted(SHARED_IMAGES.glob("*.jpg"))[:16]:
        original, small = _degrade(path)
        e, b = real_upscaler.upscale(small), bicubic.upscale(small)
        p_esrgan.append(_psnr(e, original))
        p_bicubic.append(_psnr(b, original))
        sharper += up.sharpness(e) > up.sharpness(b)
    mean_e, mean_b = float(np.mean(p_esrgan)), float(np.mean(p_bicubic))
    print(f"mean PSNR over 16 photos: real-esrgan {mean_e:.2f} dB, bicubic {mean_b:.2f} dB")
    assert mean_e >= mean_b - 1.0
    assert sharper == 16


def test_default_upscaler_is_the_shipped_folder_when_present(tmp_path: Path) -> None:
    from searchcore.config import Settings
    from searchcore.upscale import (
        FOLDER_CONFIG,
        SHIPPED_UPSCALER_DIR,
        build_upscaler,
        load_upscaler_folder,
    )

    if not (SHIPPED_UPSCALER_DIR / FOLDER_CONFIG).is_file():
        pytest.skip("no shipped upscaler in assets/models/upscaler-default")
    up = build_upscaler(Settings())
    spec, _ = load_upscaler_folder(SHIPPED_UPSCALER_DIR)
    assert up.name == spec.name
    out = up.upscale(Image.new("RGB", (24, 20), (200, 30, 30)))
    assert out.size == (24 * spec.scale, 20 * spec.scale)
    # a damaged copy is refused by its checksum
    import shutil

    copy = tmp_path / "up"
    shutil.copytree(SHIPPED_UPSCALER_DIR, copy)
    weights = copy / spec.filename
    weights.write_bytes(weights.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(WeightsError, match="sha256"):
        load_upscaler_folder(copy)


def test_an_upscaling_verdict_is_bound_to_the_weights_it_was_measured_with(tmp_path) -> None:
    """A verdict speaks for the weights it was measured with: next to others (the folder was
    trained again) or when it names none, ``auto`` skips upscaling and says to measure again."""
    import json

    from searchcore.upscale.verdict import VERDICT_FILE, auto_skip_reason, write_verdict

    folder = str(tmp_path)
    write_verdict(folder, {"helps": False, "upscaler": "up", "reason": "no gain"}, "weights-1")
    assert auto_skip_reason(folder, "up", "weights-1") == "upscaling skipped: no gain"
    assert auto_skip_reason(folder, "other-upscaler", "weights-1") is None
    stale = auto_skip_reason(folder, "up", "weights-2")
    assert stale is not None and "other weights" in stale and "--write-verdict" in stale
    write_verdict(folder, {"helps": True, "upscaler": "up", "reason": "gain"}, "weights-1")
    assert auto_skip_reason(folder, "up", "weights-1") is None  # measured to help: auto runs it
    assert "other weights" in auto_skip_reason(folder, "up", "weights-2")
    unbound = {"helps": True, "upscaler": "up", "reason": "gain"}  # from before the binding
    (tmp_path / VERDICT_FILE).write_text(json.dumps(unbound))
    assert "other weights" in auto_skip_reason(folder, "up", "weights-1")
    assert auto_skip_reason("random:ViT-B-32", "up", "weights-1") is None  # not a folder


def test_auto_follows_the_measured_crossover_photo_by_photo(tmp_path) -> None:
    """A verdict measured per photo width: auto upscales exactly the widths where upscaling
    measurably helped, and says why it skips the others."""
    from searchcore.upscale.verdict import auto_rule, write_verdict

    bands = [
        {"lo": 0, "hi": 30, "label": "0-29 px", "helps": True, "hurts": False, "p": 0.0},
        {"lo": 30, "hi": 45, "label": "30-44 px", "helps": False, "hurts": True, "p": 0.01},
        {"lo": 45, "hi": 64, "label": "45-63 px", "helps": False, "hurts": False, "p": 0.4},
    ]
    verdict = {"helps": False, "upscaler": "up", "reason": "mixed", "bands": bands}
    write_verdict(str(tmp_path), verdict, "w1")
    rule = auto_rule(str(tmp_path), "up", "w1")
    assert rule is not None and rule(20) is None  # helps below 30 px: upscale
    assert rule.why(20).startswith("measured to help this model at 0-29 px")  # the page says so
    assert "at 40 px wide it lowers this model's retrieval" in rule(40)
    assert rule(50) == "upscaling skipped: mixed"  # cannot tell at 50 px: the overall verdict
    assert rule(200) == "upscaling skipped: mixed"  # not measured there: the overall verdict
    write_verdict(str(tmp_path), {**verdict, "helps": True}, "w1")
    assert auto_rule(str(tmp_path), "up", "w1")(50) is None  # overall it helps: upscale
    stale = auto_rule(str(tmp_path), "up", "w2")
    assert "other weights" in stale(20)
    assert auto_rule(str(tmp_path), "another", "w1") is None
    # bound to the upscaler's weights too: another upscaler trained under the same name
    write_verdict(str(tmp_path), {**verdict, "upscaler_sha256": "a" * 64}, "w1")
    assert auto_rule(str(tmp_path), "up", "w1", "a" * 64)(20) is None
    assert "other weights of up" in auto_rule(str(tmp_path), "up", "w1", "b" * 64)(20)
