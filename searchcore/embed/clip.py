"""The open_clip embedder: loading by spec, batched preprocessing, saving a model folder."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from searchcore.config import RUNTIMES
from searchcore.embed.pixels import PixelEmbedder
from searchcore.embed.protocols import BatchEmbedder
from searchcore.embed.spec import (
    DEFAULT_SEED,
    ModelSpec,
    ensure_package_configs,
    registered_architectures,
)
from searchcore.errors import ConfigError, WeightsError, first_line
from searchcore.fsutil import atomic_write, is_regular_file, read_json


class BatchTransform:
    """open_clip's inference transform, batched: ``uint8`` ``(n, 3, H, W)`` in, model input out.

    open_clip's transform works on one PIL image at a time. Its usual steps map onto
    torchvision's tensor transforms, which resize ``uint8`` batches natively (``Resize``,
    ``CenterCrop``), and onto one per-channel affine map (``ToTensor``'s 1/255, then
    ``Normalize``) done in numpy: torch would spread those passes over its thread pool, whose
    idle threads then spin on the cores the decoding threads need.
    """

    def __init__(self, geometry: Any, scale: np.ndarray, shift: np.ndarray) -> None:
        self.geometry = geometry
        self.scale = scale.astype(np.float32).reshape(1, -1, 1, 1)
        self.shift = shift.astype(np.float32).reshape(1, -1, 1, 1)

    @classmethod
    def from_open_clip(cls, transform: Any) -> BatchTransform | None:
        """None when ``transform`` has a step this does not know: run it as it is then."""
        from torchvision.transforms import v2

        geometry: list[Any] = []
        scale, shift = np.ones(3), np.zeros(3)
        to_tensor = False
        for t in getattr(transform, "transforms", [None]):
            kind = type(t).__name__
            if kind == "Resize" and not to_tensor:
                geometry.append(
                    v2.Resize(
                        t.size, interpolation=t.interpolation, max_size=t.max_size, antialias=True
                    )
                )
            elif kind == "CenterCrop" and not to_tensor:
                geometry.append(v2.CenterCrop(t.size))
            elif (kind == "MaybeConvertMode" and t.mode == "RGB") or getattr(
                t, "__name__", ""
            ) == "_convert_to_rgb":
                continue  # prepare() already gives RGB
            elif kind in ("ToTensor", "MaybeToTensor") and not to_tensor:
                to_tensor, scale = True, scale / 255.0
            elif kind == "Normalize" and to_tensor and not t.inplace:
                mean, std = np.asarray(t.mean, np.float64), np.asarray(t.std, np.float64)
                scale, shift = scale / std, (shift - mean) / std
            else:
                return None
        if not to_tensor:
            return None
        return cls(v2.Compose(geometry), scale, shift)

    def __call__(self, batch: Any) -> Any:
        import torch

        # planar (NCHW) float: numpy's per-channel passes are 4x faster on whole planes
        out = np.ascontiguousarray(self.geometry(batch).numpy()).astype(np.float32)
        out *= self.scale
        out += self.shift
        return torch.from_numpy(out)


SQUASH, CROP = "squash", "shortest"  # open_clip's resize modes


def photo_geometry(model: Any, preprocess: Any) -> tuple[str, Any]:
    """How photos reach the model, and the transform that does it.

    Shop photos are often 3:4 portraits and shoppers' photos any shape; open_clip's default
    (resize the shorter side, crop the centre) cuts the top and bottom off a portrait (the toes
    of a shoe, the hem of a dress) but not off a square catalog photo, so query and catalog
    would reach the model differently. Photos are squashed to the model's square instead (a
    square photo is unchanged): measured on 3:4 shopper photos of new products, exact-product
    retrieval and similar-product precision both rise (README, "Quality on new products"). A
    model whose ``preprocess_cfg`` asks for padding (``resize_mode`` ``longest``) keeps it, and
    so does a transform without a centre crop (one already squashing, or a caller's own).
    """
    cfg = getattr(model.visual, "preprocess_cfg", None)
    mode = cfg.get("resize_mode") if isinstance(cfg, dict) else None
    if mode not in (None, "", CROP, SQUASH):
        return str(mode), preprocess
    cropped = "CenterCrop" in {type(t).__name__ for t in getattr(preprocess, "transforms", [])}
    if not cropped or not isinstance(cfg, dict) or "size" not in cfg:
        return (CROP if cropped else SQUASH), preprocess
    from open_clip.transform import PreprocessCfg, image_transform_v2

    known = {k: v for k, v in cfg.items() if k in PreprocessCfg.__dataclass_fields__}
    return SQUASH, image_transform_v2(PreprocessCfg(**{**known, "resize_mode": SQUASH}), False)


class ClipEmbedder:
    """An open_clip model with its preprocessing and tokenizer, ready for inference."""

    has_text = True
    runtime = "torch"

    def __init__(
        self,
        model: Any,
        preprocess: Any,
        tokenizer: Any,
        *,
        spec: str,
        device: str = "cpu",
        batch_size: int = 32,
    ) -> None:
        import torch

        self.model = model.eval().to(device)
        # channels_last: oneDNN's convolutions run 1.7x faster on it on CPU (110 -> 184 img/s
        # for the default ResNet tower, bench_indexing.py); harmless for a ViT.
        self.model.visual.to(memory_format=torch.channels_last)
        self.geometry, preprocess = photo_geometry(model, preprocess)
        self.transform = preprocess
        self._batch_transform = BatchTransform.from_open_clip(preprocess)
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = device
        self.batch_size = batch_size
        with torch.inference_mode():
            self.dim = int(self._text_features(["a"]).shape[1])
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        """sha256 of the weights (names, shapes, dtypes and bytes) and of how a photo reaches
        them (``geometry``, where it is not open_clip's centre crop), computed once."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            if self.geometry != CROP:
                h.update(f"geometry:{self.geometry}\n".encode())
            for key, tensor in sorted(self.model.state_dict().items()):
                t = tensor.detach().to("cpu").contiguous()
                h.update(f"{key}:{tuple(t.shape)}:{t.dtype}".encode())
                h.update(t.view(-1).view(dtype=__import__("torch").uint8).numpy().tobytes())
            self._fingerprint = h.hexdigest()
        return self._fingerprint

    @property
    def image_size(self) -> int:
        size = getattr(self.model.visual, "image_size", 224)
        return int(size[0] if isinstance(size, (tuple, list)) else size)

    def prepare(self, img: Image.Image) -> np.ndarray:
        """First half of preprocessing, for decoding threads: RGB ``uint8`` pixels ``(H, W, 3)``.

        Large photos get a cheap integer shrink (``Image.reduce``, a box filter) to no less
        than twice the model's input: a 1000 px photo then preprocesses in 1.5 ms instead of
        21 ms, with embeddings at cosine >= 0.9999 to the direct resize (bench_query.py). No
        torch op runs here, so decoding threads never compete for torch's thread pool.
        """
        if img.mode != "RGB":
            img = img.convert("RGB")
        factor = min(img.size) // (2 * self.image_size)
        if factor >= 2:
            img = img.reduce(factor)
        return np.asarray(img)

    def collate(self, arrays: Sequence[np.ndarray]) -> Any:
        """Second half, batched: ``prepare``'s pixels -> the model's ``(n, 3, H, W)`` input.

        open_clip's own resize, crop and normalisation as a :class:`BatchTransform` over
        same-sized photos: 0.1 ms a photo instead of 0.5-0.7 ms through PIL, at most two grey
        levels from open_clip's PIL path and embeddings at cosine > 0.99999 to it
        (bench_indexing.py, test_embed.py). A transform it does not know runs as is.
        """
        import torch

        if not arrays:
            return torch.zeros((0, 3, self.image_size, self.image_size))
        if self._batch_transform is None:
            return torch.stack([self.transform(Image.fromarray(a)) for a in arrays])
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, a in enumerate(arrays):
            groups.setdefault(a.shape, []).append(i)
        out: list[Any] = [None] * len(arrays)
        for rows in groups.values():
            # NHWC memory seen as NCHW: channels_last, the layout the uint8 resize is fast on
            batch = torch.from_numpy(np.stack([arrays[i] for i in rows])).permute(0, 3, 1, 2)
            pixels = self._batch_transform(batch)
            if len(groups) == 1:
                return pixels
            for j, i in enumerate(rows):
                out[i] = pixels[j]
        return torch.stack(out)

    def preprocess(self, img: Image.Image) -> Any:
        """One photo -> the model's ``(3, H, W)`` input; queries and index builds alike."""
        return self.collate([self.prepare(img)])[0]

    def preprocess_images(self, images: Sequence[Image.Image]) -> Any:
        return self.collate([self.prepare(img) for img in images])

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        out = [
            self.embed_pixels(self.preprocess_images(images[i : i + self.batch_size]))
            for i in range(0, len(images), self.batch_size)
        ]
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def embed_pixels(self, pixels: Any) -> np.ndarray:
        """Embed an already preprocessed ``(n, 3, H, W)`` tensor."""
        import torch

        with torch.inference_mode():
            x = pixels.to(self.device).contiguous(memory_format=torch.channels_last)
            feats = self.model.encode_image(x, normalize=True)
        return feats.float().cpu().numpy()

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                out.append(
                    self._text_features(list(texts[i : i + self.batch_size])).float().cpu().numpy()
                )
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def _text_features(self, texts: list[str]) -> Any:
        tokens = self.tokenizer(texts).to(self.device)
        return self.model.encode_text(tokens, normalize=True)


def load_embedder(
    spec: str,
    *,
    cache_dir: Path | None = None,
    allow_download: bool = False,
    device: str = "cpu",
    batch_size: int = 32,
    seed: int = DEFAULT_SEED,
    runtime: str = "torch",
    auto_int8: bool = True,
) -> ClipEmbedder | PixelEmbedder | BatchEmbedder:
    """Build an embedder from a spec string (see the module docstring).

    ``runtime``: ``torch``; ``onnx`` or ``onnx-int8``, a model folder's ONNX export (written by
    ``searchcore model export``); ``auto``, the folder's int8 export where its retrieval cost
    was measured within the noise (unless ``auto_int8`` is false), else its fp32 export when it
    is there, current and verified, else torch (:func:`searchcore.embed.onnx.with_runtime`).
    """
    import torch

    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    onnx_only = runtime in ("onnx", "onnx-int8")
    if spec == "pixels" or spec.startswith("pixels:"):
        if onnx_only:
            raise ConfigError(f"{spec} is not a model: it has no ONNX runtime (use torch)")
        size = spec.partition(":")[2] or "16"
        w, x, h = size.partition("x")
        if not w.isdigit() or (x and not h.isdigit()):
            raise ConfigError(f"pixels:SIZE or pixels:WxH needs whole numbers, not {size!r}")
        return PixelEmbedder(int(w), spec=spec, height=int(h or w))

    from searchcore._compat import hf_hub_offline

    parsed = ModelSpec.parse(spec)
    if onnx_only and parsed.kind != "local":
        raise ConfigError(
            f"runtime {runtime} runs a model folder's ONNX export, and {spec!r} is not a folder: "
            f"run `searchcore model export --model {spec} --out DIR`, then use --model DIR"
        )
    device = pick_device(device)
    if onnx_only and device != "cpu":
        raise ConfigError(f"runtime {runtime} runs on the CPU, not on {device}")
    import open_clip

    ensure_package_configs()
    cache = str(cache_dir / "open_clip") if cache_dir else None
    try:
        with hf_hub_offline(not allow_download):
            if parsed.kind == "local":
                folder = Path(parsed.name)
                _check_local_dir(folder)
                name = f"local-dir:{folder}"
                model, _, preprocess = open_clip.create_model_and_transforms(name, device=device)
                tokenizer = open_clip.get_tokenizer(name)
            elif parsed.kind == "hub":
                name = f"hf-hub:{parsed.name}"
                model, _, preprocess = open_clip.create_model_and_transforms(
                    name, cache_dir=cache, device=device
                )
                tokenizer = open_clip.get_tokenizer(name, cache_dir=cache)
            else:
                if parsed.name not in open_clip.list_models():
                    raise ConfigError(
                        f"unknown model {parsed.name!r}; use NAME:TAG (a pretrained open_clip "
                        "model, e.g. ViT-B-32:openai), hf-hub:ORG/REPO, a model folder, or "
                        "random:NAME for an architecture with random weights "
                        f"({', '.join(open_clip.list_models()[:6])}, ..., or this package's "
                        f"{', '.join(registered_architectures()) or 'none'})"
                    )
                _check_has_weights(parsed)
                if (
                    parsed.tag
                    and not Path(parsed.tag).is_file()
                    and not open_clip.is_pretrained_cfg(parsed.name, parsed.tag)
                ):
                    tags = open_clip.list_pretrained_tags_by_model(parsed.name)
                    raise ConfigError(
                        f"{parsed.name} has no pretrained tag {parsed.tag!r}; "
                        f"known tags: {', '.join(tags) or 'none'}"
                    )
                torch.manual_seed(seed)  # random init is part of the spec: same seed, same model
                model, _, preprocess = open_clip.create_model_and_transforms(
                    parsed.name, pretrained=parsed.tag, cache_dir=cache, device=device
                )
                tokenizer = open_clip.get_tokenizer(parsed.name)
    except (ConfigError, WeightsError):
        raise
    except Exception as exc:
        offline = (
            ""
            if allow_download
            else (
                " (downloads are off: set SEARCHCORE_ALLOW_DOWNLOAD=1, or pass a local model "
                "folder)"
            )
        )
        raise WeightsError(f"cannot load model {spec!r}: {first_line(exc)}{offline}") from None
    embedder = ClipEmbedder(
        model, preprocess, tokenizer, spec=spec, device=device, batch_size=batch_size
    )
    if runtime == "torch" or parsed.kind != "local" or device != "cpu":
        return embedder  # auto: only a model folder on the CPU can have an ONNX export
    from searchcore.embed.onnx import with_runtime

    return with_runtime(embedder, Path(parsed.name), runtime, int8=auto_int8)


def _check_has_weights(parsed: ModelSpec) -> None:
    """A bare architecture has no weights: building, searching or serving with one would
    return noise that looks like results. Say which weights exist instead."""
    if parsed.kind != "arch":
        return
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(parsed.name)
    pretrained = (
        f"a pretrained tag ({', '.join(f'{parsed.name}:{t}' for t in tags[:4])}"
        + (", ..." if len(tags) > 4 else "")
        + ")"
        if tags
        else f"a model folder trained from it (`searchcore finetune --base {parsed.name}`)"
    )
    raise ConfigError(
        f"model {parsed.raw!r} names an architecture without weights: use {pretrained}, "
        f"or say random:{parsed.name} for random weights (tests and speed measurements only)"
    )


def _check_local_dir(folder: Path) -> None:
    config = folder / "open_clip_config.json"
    if not config.is_file():
        raise WeightsError(f"model folder {folder} has no open_clip_config.json")
    try:
        read_json(config, 1 << 20)["model_cfg"]
    except (OSError, ValueError, KeyError, TypeError):
        raise WeightsError(
            f"{config} is not a valid open_clip config (needs 'model_cfg')"
        ) from None
    weights = [p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pth", ".pt")]
    odd = [p.name for p in weights if not is_regular_file(p)]
    if odd:  # a FIFO or device would block the loader forever
        raise WeightsError(f"model folder {folder.name}: {odd[0]} is not a regular file")
    if not weights:
        raise WeightsError(
            f"model folder {folder} has no weights file (open_clip_model.safetensors)"
        )


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is present, else ``cpu``; refuse a missing GPU."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device cuda requested but no GPU is available")
    return device


def save_model(
    embedder: ClipEmbedder,
    folder: str | Path,
    model_cfg: dict[str, Any],
    *,
    half: bool = False,
    card: str | None = None,
) -> Path:
    """Write a model folder that ``load_embedder(PATH)`` and ``hf-hub:`` uploads both read.

    Layout (open_clip's Hugging Face format): ``open_clip_config.json`` with ``model_cfg``
    and ``preprocess_cfg``, ``open_clip_model.safetensors``, and an optional ``README.md``
    model card.
    """
    from safetensors.torch import save_file

    from searchcore.fsutil import write_json_atomic

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    visual = embedder.model.visual
    preprocess_cfg = {
        "size": embedder.image_size,
        "mean": list(getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)),
        "std": list(getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)),
    }
    state = {
        k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in embedder.model.state_dict().items()
    }
    atomic_write(folder / "open_clip_model.safetensors", lambda tmp: save_file(state, str(tmp)))
    write_json_atomic(
        folder / "open_clip_config.json", {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg}
    )
    if card is not None:
        (folder / "README.md").write_text(card, encoding="utf-8")
    return folder
