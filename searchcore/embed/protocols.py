"""What callers may rely on from a model: :class:`Embedder`, and :class:`BatchEmbedder` for the
fast index build. Anything in searchcore may import this; it imports nothing heavy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from PIL import Image


@runtime_checkable
class Embedder(Protocol):
    """What the engine, the index build and evaluation need from a model.

    ``spec`` names it (as ``--model`` does), ``fingerprint`` identifies its weights (an index
    built with other weights is refused), ``dim`` is the vectors' size, and ``has_text`` says
    whether it embeds words too (the raw-pixels baseline does not). Vectors are L2-normalised
    float32 rows.
    """

    spec: str
    dim: int
    has_text: bool

    @property
    def fingerprint(self) -> str: ...

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class BatchEmbedder(Embedder, Protocol):
    """An embedder whose preprocessing splits for fast index builds: ``prepare`` one photo on
    any thread (no torch op), ``collate`` a batch and ``embed_pixels`` it on the model's
    ``device``. The build runs such a model in lanes on a CPU (:mod:`searchcore.build`); any
    other embedder is built through ``embed_images``."""

    device: str

    def prepare(self, img: Image.Image) -> np.ndarray: ...

    def collate(self, arrays: Sequence[np.ndarray]) -> Any: ...

    def embed_pixels(self, pixels: Any) -> np.ndarray: ...


def weights_fingerprint(embedder: Embedder) -> str:
    """The fingerprint of the trained weights behind ``embedder``: its own, or for an ONNX
    export (int8 included) the torch weights' it was exported from. What is measured about the
    weights rather than a runtime (attribute heads, the upscaling verdict) is bound to it."""
    return str(getattr(embedder, "torch_fingerprint", embedder.fingerprint))
