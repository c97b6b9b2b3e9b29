"""Shared test fixtures: tiny models, a hand-checkable fake embedder, small catalogs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_CATALOG = SHARED / "data" / "fashion-224" / "metadata.csv"
SHARED_WEIGHTS = SHARED / "weights" / "realesrgan"

# A tiny CLIP (two small towers, ~1.7M parameters, mostly the token embedding), as open_clip's
# own tests do: built from an inline config, randomly initialised, never downloaded.
TINY_CLIP = "sc-test-tiny"
TINY_CLIP_CONFIG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}

COLOURS = {
    "red": (220, 30, 30),
    "green": (30, 180, 40),
    "blue": (30, 60, 220),
    "yellow": (230, 220, 40),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
}


class ColourEmbedder:
    """Embeds an image as its mean colour and a text as the colour word it names.

    Results can be checked by hand: a query for "red" ranks red products first.
    """

    spec = "fake-colour"
    dim = 4
    has_text = True

    def __init__(self) -> None:
        self.image_calls = 0

    @property
    def fingerprint(self) -> str:
        return "fake-colour-v1"

    def _vec(self, rgb: tuple[float, float, float]) -> np.ndarray:
        v = np.array([*rgb, 60.0], dtype=np.float32)  # constant 4th dim keeps black non-zero
        return v / np.linalg.norm(v)

    def preprocess(self, img: Image.Image):
        import torch

        return torch.from_numpy(np.asarray(img.convert("RGB"), np.float32).reshape(-1, 3).mean(0))

    def embed_pixels(self, pixels) -> np.ndarray:
        return np.stack([self._vec(tuple(p)) for p in np.asarray(pixels)])

    def embed_images(self, images) -> np.ndarray:
        self.image_calls += len(images)
        return self.embed_pixels([self.preprocess(i) for i in images])

    def embed_texts(self, texts) -> np.ndarray:
        out = []
        for t in texts:
            rgb = next((c for name, c in COLOURS.items() if name in t.lower()), (128, 128, 128))
            out.append(self._vec(rgb))
        return np.stack(out)


def png(rgb: tuple[int, int, int], size: int = 48) -> bytes:
    """A plain-colour PNG's bytes (a live shop's new photo)."""
    import io

    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, format="PNG")
    return buf.getvalue()


def write_catalog(
    folder: Path,
    rows: list[dict],
    images: dict[str, Image.Image] | None = None,
    name: str = "products.csv",
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, img in (images or {}).items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        img.save(folder / rel)
    path = folder / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


@pytest.fixture
def colour_catalog(tmp_path: Path) -> Path:
    """24 products: 4 of each colour, 2 categories, prices 10..240."""
    rows, images = [], {}
    for i in range(24):
        colour = list(COLOURS)[i % len(COLOURS)]
        category = "mugs" if i % 2 else "caps"
        rel = f"images/{i:05d}.png"
        base = np.array(COLOURS[colour], dtype=np.float32)
        noise = np.random.default_rng(i).normal(0, 6, (48, 48, 3))
        images[rel] = Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))
        rows.append(
            {
                "id": f"{i:05d}",
                "title": f"{colour.title()} {category[:-1]} {i}",
                "image": rel,
                "category": category,
                "colour": colour,
                "price": f"{10 * (i + 1)}.00",
            }
        )
    return write_catalog(tmp_path / "shop", rows, images)


@pytest.fixture
def fake_embedder() -> ColourEmbedder:
    return ColourEmbedder()


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run on one thread: on a busy machine, OpenMP threads waiting for each other
    made a 4 ms step of the tiny upscaler take 600 ms with two threads. Modules that train or
    embed use it with ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo_shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 40-product generated shop with 64 px photos, one per test module."""
    from searchcore.demo.synth import generate_catalog

    return generate_catalog(tmp_path_factory.mktemp("demo"), n=40, seed=5, size=64)


@pytest.fixture(scope="session")
def tiny_clip() -> str:
    from searchcore.embed import register_architecture

    return "random:" + register_architecture(TINY_CLIP_CONFIG, name=TINY_CLIP)


def needs_shared(path: Path):
    return pytest.mark.skipif(
        not path.exists(), reason=f"{path} is absent (../shared is not checked out)"
    )


@pytest.fixture
def live_folder(colour_catalog: Path) -> Path:
    """The colour catalog's index folder, for live changes (tests/test_live.py and
    tests/test_changelog.py)."""
    from searchcore.build import build_index
    from searchcore.catalog import load_catalog

    out = colour_catalog.parent / "index"
    build_index(load_catalog(colour_catalog), ColourEmbedder(), out)
    return out


def open_live(folder: Path, **kw):  # -> LiveShop
    """A live shop on ``folder`` with the colour embedder and no upscaling."""
    from searchcore.config import Settings, UpscaleSettings
    from searchcore.live import LiveShop
    from searchcore.service import open_engine

    settings = Settings(upscale=UpscaleSettings(mode="never"))
    return LiveShop(open_engine(settings, folder, embedder=ColourEmbedder()), folder, **kw)
