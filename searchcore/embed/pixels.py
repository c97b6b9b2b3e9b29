"""The traditional baseline: a photo's own pixels as its embedding (no model, no words)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from searchcore.errors import ConfigError


class PixelEmbedder:
    """The traditional baseline: the photo's own pixels, shrunk to ``size`` x ``height``.

    Spec ``pixels``, ``pixels:SIZE`` (a square) or ``pixels:WxH`` (``pixels:30x40`` for 3:4
    portrait shops: about as many pixels as 35x35). Each image is squashed to that shape,
    centred per channel and L2-normalised, so the index's cosine score is the pixels'
    correlation. It has no text tower: text queries are refused with a clear message.
    """

    has_text = False

    def __init__(self, size: int = 16, spec: str = "pixels", height: int | None = None) -> None:
        height = size if height is None else height
        if not (2 <= size <= 128 and 2 <= height <= 128):
            raise ConfigError(f"pixels:WxH needs sides of 2-128, not {size}x{height}")
        self.size, self.height, self.spec, self.dim = size, height, spec, 3 * size * height
        shape = str(size) if height == size else f"{size}x{height}"  # squares: as before
        self.fingerprint = hashlib.sha256(f"pixels:{shape}:v1".encode()).hexdigest()
        self.batch_size = 256

    def prepare(self, img: Image.Image) -> np.ndarray:
        return np.asarray(
            img.convert("RGB").resize((self.size, self.height), Image.Resampling.BILINEAR)
        )

    def collate(self, arrays: Sequence[np.ndarray]) -> Any:
        import torch

        flat = np.stack(arrays).reshape(len(arrays), -1) if len(arrays) else np.zeros((0, self.dim))
        return torch.from_numpy(flat.astype(np.float32) / 255.0)

    def preprocess(self, img: Image.Image) -> Any:
        return self.collate([self.prepare(img)])[0]

    def embed_pixels(self, pixels: Any) -> np.ndarray:
        x = np.asarray(pixels, dtype=np.float32).reshape(len(pixels), self.size * self.height, 3)
        x = (x - x.mean(axis=1, keepdims=True)).reshape(len(pixels), -1)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_pixels(np.stack([np.asarray(self.preprocess(i)) for i in images]))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise ConfigError("the raw-pixels baseline cannot search by words; use a CLIP model")
