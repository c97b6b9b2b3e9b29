"""The traditional baseline: a photo's own pixels as its embedding (no model, no words)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from searchcore.errors import ConfigError


class PixelEmbedder:
    """The traditional baseline: the photo's own pixels, shrunk to ``size`` x ``size``.

    Spec ``pixels`` or ``pixels:SIZE``. Each image is squashed to a square, centred per
    channel and L2-normalised, so the index's cosine score is the pixels' correlation. It has
    no text tower: text queries are refused with a clear message.
    """

    has_text = False

    def __init__(self, size: int = 16, spec: str = "pixels") -> None:
        if not 2 <= size <= 128:
            raise ConfigError(f"pixels:SIZE needs 2 <= SIZE <= 128, not {size}")
        self.size, self.spec, self.dim = size, spec, 3 * size * size
        self.fingerprint = hashlib.sha256(f"pixels:{size}:v1".encode()).hexdigest()
        self.batch_size = 256

    def prepare(self, img: Image.Image) -> np.ndarray:
        return np.asarray(
            img.convert("RGB").resize((self.size, self.size), Image.Resampling.BILINEAR)
        )

    def collate(self, arrays: Sequence[np.ndarray]) -> Any:
        import torch

        flat = np.stack(arrays).reshape(len(arrays), -1) if len(arrays) else np.zeros((0, self.dim))
        return torch.from_numpy(flat.astype(np.float32) / 255.0)

    def preprocess(self, img: Image.Image) -> Any:
        return self.collate([self.prepare(img)])[0]

    def embed_pixels(self, pixels: Any) -> np.ndarray:
        x = np.asarray(pixels, dtype=np.float32).reshape(len(pixels), self.size * self.size, 3)
        x = (x - x.mean(axis=1, keepdims=True)).reshape(len(pixels), -1)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-6)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_pixels(np.stack([np.asarray(self.preprocess(i)) for i in images]))

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise ConfigError("the raw-pixels baseline cannot search by words; use a CLIP model")
