"""Training batches for ``finetune``: a clean view and a shopper-like view of each catalog photo,
and the words that go with it, prepared on a helper thread one batch ahead.

``config`` is the :class:`~searchcore.training.finetune.FinetuneConfig` (its view settings:
``crop_scale``, ``flip``, ``jitter``, ``hue_jitter``, ``shopper_strength``, ``shopper_max_down``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from searchcore.degrade import degrade, sample_shopper
from searchcore.training.data import training_text


def clean_view(img: Image.Image, rng: np.random.Generator, config: Any) -> Image.Image:
    """Random crop (area ``crop_scale``-1, aspect 0.9-1.1), flip, brightness/contrast jitter."""
    w, h = img.size
    area = rng.uniform(config.crop_scale, 1.0) * w * h
    aspect = math.exp(rng.uniform(math.log(0.9), math.log(1.1)))
    cw = min(w, max(8, round(math.sqrt(area * aspect))))
    ch = min(h, max(8, round(math.sqrt(area / aspect))))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    img = img.crop((x, y, x + cw, y + ch))
    if config.flip and rng.uniform() < 0.5:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if config.jitter > 0:
        img = ImageEnhance.Brightness(img).enhance(
            rng.uniform(1 - config.jitter, 1 + config.jitter)
        )
        img = ImageEnhance.Contrast(img).enhance(rng.uniform(1 - config.jitter, 1 + config.jitter))
    if config.hue_jitter > 0:
        hsv = np.asarray(img.convert("HSV")).copy()
        hsv[..., 0] = (
            hsv[..., 0].astype(int) + int(rng.uniform(-1, 1) * config.hue_jitter * 255)
        ) % 256
        img = Image.fromarray(hsv, "HSV").convert("RGB")
    return img


class Batches:
    """Makes batches (clean pixels, shopper pixels, tokens) on a helper thread, one ahead.

    PIL releases the GIL while it resizes, blurs and encodes JPEGs, so preparing the next batch
    overlaps with the model's step even on two cores.
    """

    def __init__(
        self,
        photos: list[Image.Image],
        texts: list[tuple[str, dict[str, str]]],
        preprocess: Any,
        tokenizer: Any,
        config: Any,
    ) -> None:
        self.photos, self.texts = photos, texts
        self.preprocess, self.tokenizer, self.config = preprocess, tokenizer, config
        self.pool = ThreadPoolExecutor(max_workers=1)

    def make(self, idx: np.ndarray, seed: Sequence[int]) -> tuple[Any, Any, Any]:
        import torch

        rng = np.random.default_rng(list(seed))
        clean, shop, words = [], [], []
        for i in idx:
            img = self.photos[i]
            clean.append(self.preprocess(clean_view(img, rng, self.config)))
            view = sample_shopper(rng, self.config.shopper_strength, self.config.shopper_max_down)
            shop.append(self.preprocess(degrade(img, view, rng)))
            title, attrs = self.texts[i]
            words.append(training_text(title, attrs, rng))
        return (
            torch.stack(clean),
            torch.stack(shop),
            self.tokenizer(words),
            torch.as_tensor(np.asarray(idx), dtype=torch.long),
        )

    def epoch(self, order: np.ndarray, batch: int, seed: int, epoch: int) -> Any:
        starts = list(range(0, len(order) - batch + 1, batch)) or [0]
        pending = self.pool.submit(
            self.make, order[starts[0] : starts[0] + batch], (seed, epoch, 0)
        )
        for j in range(len(starts)):
            result = pending.result()
            if j + 1 < len(starts):
                s = starts[j + 1]
                pending = self.pool.submit(self.make, order[s : s + batch], (seed, epoch, j + 1))
            yield result

    def close(self) -> None:
        self.pool.shutdown(wait=True)
