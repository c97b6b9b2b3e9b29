"""The embedder: an open_clip model that puts photos and words in one space.

Model specs (``--model`` / ``SEARCHCORE_MODEL``):

==============================  ==========================================================
``default``                     the project's shipped model (``clip-default``, package data);
                                an error, never a stand-in, where it is not installed
``random:NAME``                 an open_clip architecture (``ViT-B-32``, ``RN50``...) or one
                                of this package's (``sc-small``), randomly initialised with a
                                fixed seed: deterministic, for tests and speed measurements.
                                A bare ``NAME`` is refused (it would search with noise), except
                                as the starting point of ``finetune --base``
``NAME:TAG``                    a pretrained open_clip tag (``ViT-B-32:openai``,
                                ``ViT-B-32:laion2b_s34b_b79k``), downloaded into the cache dir
                                when downloads are allowed; TAG may also be a weights file
``hf-hub:ORG/REPO``             an open_clip model on the Hugging Face Hub
``PATH`` or ``local-dir:PATH``  a folder with ``open_clip_config.json`` and
                                ``open_clip_model.safetensors`` (what ``finetune`` writes)
``pixels`` / ``pixels:SIZE``    the raw-pixels baseline (no model; photos only)
==============================  ==========================================================

Custom architectures are open_clip JSON configs (``model_configs/*.json`` here, or any file
passed to :func:`register_architecture`). Embeddings are float32, L2-normalised, ``(n, dim)``.

Runtimes (``--runtime`` / ``SEARCHCORE_RUNTIME``): ``torch``; ``onnx`` and ``onnx-int8``, a
model folder's ONNX export (``searchcore model export``, :mod:`.onnx`); ``auto``, the folder's
int8 export where the export measured its retrieval loss within the noise, else its verified
fp32 export, else torch. fp32 ONNX keeps the weights' fingerprint (indexes serve with either
runtime), int8 gets its own.

Layout: :mod:`.protocols` (what callers may rely on), :mod:`.spec` (model specs and this
package's architectures), :mod:`.clip` (the open_clip embedder), :mod:`.onnx` (its ONNX export
and runtime), :mod:`.pixels` (the baseline). Anything in searchcore may import it; torch,
open_clip and onnxruntime load when a model does.
"""

from searchcore.demo.assets import ASSETS, DEFAULT_MODEL_DIR
from searchcore.embed.clip import (
    BatchTransform,
    ClipEmbedder,
    load_embedder,
    pick_device,
    save_model,
)
from searchcore.embed.onnx import FIDELITY_TOLERANCE, OnnxEmbedder, export_onnx
from searchcore.embed.pixels import PixelEmbedder
from searchcore.embed.protocols import BatchEmbedder, Embedder, weights_fingerprint
from searchcore.embed.spec import (
    PACKAGE_CONFIGS,
    ModelSpec,
    model_config,
    recorded_spec,
    register_architecture,
)

__all__ = [
    "ASSETS",
    "DEFAULT_MODEL_DIR",
    "FIDELITY_TOLERANCE",
    "PACKAGE_CONFIGS",
    "BatchEmbedder",
    "BatchTransform",
    "ClipEmbedder",
    "Embedder",
    "ModelSpec",
    "OnnxEmbedder",
    "PixelEmbedder",
    "export_onnx",
    "load_embedder",
    "model_config",
    "pick_device",
    "recorded_spec",
    "register_architecture",
    "save_model",
    "weights_fingerprint",
]
