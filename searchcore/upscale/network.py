"""The upscalers: Real-ESRGAN networks (basicsr/realesrgan) and the bicubic baseline, sharing
one small protocol (``name``, ``scale``, ``upscale(img) -> img``).

torch, basicsr and realesrgan are imported inside the functions that need them (basicsr's
package ``__init__`` pulls in all of its training code).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from PIL import Image

from searchcore._compat import patch_torchvision_for_basicsr
from searchcore.errors import ConfigError, UpscaleError, WeightsError, first_line
from searchcore.images import to_rgb
from searchcore.upscale.registry import UpscalerSpec
from searchcore.upscale.weights import load_state_dict

if TYPE_CHECKING:
    import torch


def build_network(spec: UpscalerSpec) -> torch.nn.Module:
    patch_torchvision_for_basicsr()  # must run before the first basicsr/realesrgan import
    if spec.arch == "srvgg":
        from realesrgan.archs.srvgg_arch import SRVGGNetCompact

        return SRVGGNetCompact(**spec.kwargs)
    from basicsr.archs.rrdbnet_arch import RRDBNet

    return RRDBNet(**spec.kwargs)


def load_network(spec: UpscalerSpec, weights: Path) -> torch.nn.Module:
    """The network of ``spec`` with ``weights`` loaded strictly (every key, every shape)."""
    state = load_state_dict(weights)
    net = build_network(spec)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        # torch lists every missing key and mismatched shape; keep the first problem only.
        lines = [s.strip() for s in str(exc).splitlines()[1:] if s.strip()]
        detail = first_line(RuntimeError(lines[0])) if lines else first_line(exc)
        raise WeightsError(
            f"upscaler weights {weights} do not fit {spec.name} ({spec.arch}, x{spec.scale}): "
            f"{detail}"
        ) from exc
    return net.eval()


# --------------------------------------------------------------------------- upscalers


class Upscaler(Protocol):
    """What the engine needs: a pure function of the image, safe to call from many threads."""

    @property
    def name(self) -> str: ...

    @property
    def scale(self) -> int: ...

    def upscale(self, img: Image.Image) -> Image.Image: ...


def _shrink_to(img: Image.Image, max_side: int) -> Image.Image:
    w, h = img.size
    if max(w, h) <= max_side:
        return img
    f = max_side / max(w, h)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    return img.resize(size, Image.Resampling.LANCZOS)


class RealESRGANUpscaler:
    """Real-ESRGAN behind the :class:`Upscaler` protocol.

    The network is built on first use, exactly once even when the first calls arrive together.
    Inputs whose longest side exceeds ``max_input_side`` are first shrunk (Lanczos) to that
    side, so the output is at most ``max_input_side * scale`` pixels wide and memory and time
    stay bounded whatever the upload size; the output is ``scale`` times the (shrunk) input.

    ``RealESRGANer`` keeps each call's tensors on the instance (``self.img``, ``self.output``),
    so calls on one instance are serialised with a lock; use one instance per worker for
    parallelism. ``threads`` sets torch's intra-op thread count, which is process-wide.
    """

    def __init__(
        self,
        spec: UpscalerSpec,
        weights: Path,
        *,
        tile: int = 0,
        device: str = "cpu",
        max_input_side: int = 256,
        threads: int | None = None,
    ) -> None:
        if tile < 0 or max_input_side < 8 or (threads is not None and threads < 1):
            raise ConfigError("tile must be >= 0, max_input_side >= 8 and threads >= 1")
        self.spec = spec
        self.weights = Path(weights)
        self.tile = tile
        self.device = device
        self.max_input_side = max_input_side
        self.threads = threads
        self._engine: Any = None
        self._build_lock = threading.Lock()
        self._run_lock = threading.Lock()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def scale(self) -> int:
        return self.spec.scale

    def load(self) -> None:
        """Build the network now (idempotent): fail fast on bad weights, or warm up a server."""
        if self._engine is None:
            with self._build_lock:
                if self._engine is None:
                    self._engine = self._build_engine()

    def _build_engine(self) -> Any:
        import torch

        if self.threads is not None:
            torch.set_num_threads(self.threads)
        from searchcore.embed import pick_device

        net = load_network(self.spec, self.weights)
        device = torch.device(pick_device(self.device))  # "auto": the GPU when there is one
        net = net.to(device)
        half = device.type == "cuda"  # fp16 is slow or unsupported on CPU
        if half:
            net = net.half()
        patch_torchvision_for_basicsr()
        from realesrgan import RealESRGANer

        class _PreloadedRealESRGANer(RealESRGANer):  # type: ignore[misc]
            """RealESRGANer around a network we loaded ourselves.

            ``RealESRGANer.__init__`` insists on a ``model_path`` and ``torch.load``s it with
            torch's default ``weights_only`` (unsafe before torch 2.6 or when
            TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set) and cannot read safetensors. Skipping it
            keeps one, safe, load. This sets the same attributes as realesrgan 0.3.0's
            ``__init__`` (its last release; a test compares them).
            """

            def __init__(self, model: Any, scale: int, tile: int, half: bool, dev: Any) -> None:
                self.scale = scale
                self.tile_size = tile
                self.tile_pad = 10
                self.pre_pad = 10
                self.mod_scale = None
                self.half = half
                self.device = dev
                self.model = model

        return _PreloadedRealESRGANer(
            _RaisingForward(net), self.spec.scale, self.tile, half, device
        )

    def upscale(self, img: Image.Image) -> Image.Image:
        self.load()
        import torch

        rgb = _shrink_to(to_rgb(img), self.max_input_side)
        bgr = np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8)[:, :, ::-1])
        engine = self._engine
        with self._run_lock:
            # RealESRGANer pads by reflection, which needs the pad to be smaller than the image.
            engine.pre_pad = min(10, min(rgb.size) - 1)
            try:
                with torch.inference_mode():
                    out, _ = engine.enhance(bgr, outscale=None)
            except UpscaleError:
                raise
            except Exception as exc:  # anything from the network is an upscale failure
                raise UpscaleError(
                    f"{self.name} could not upscale a {rgb.width}x{rgb.height} image: "
                    f"{first_line(exc)}"
                ) from exc
        return Image.fromarray(np.ascontiguousarray(out[:, :, ::-1]), "RGB")

    def __repr__(self) -> str:
        return f"RealESRGANUpscaler({self.name!r}, weights={str(self.weights)!r}, tile={self.tile})"


class _RaisingForward:
    """Calls the network and turns its RuntimeErrors (e.g. out of memory) into UpscaleError.

    ``RealESRGANer.tile_process`` catches RuntimeError per tile, prints it and carries on with a
    stale or missing tile; raising a different type makes such a failure reach the caller.
    """

    def __init__(self, net: Any) -> None:
        self.net = net

    def __call__(self, x: Any) -> Any:
        try:
            return self.net(x)
        except RuntimeError as exc:
            raise UpscaleError(f"upscaling network failed: {first_line(exc)}") from exc


class BicubicUpscaler:
    """Plain PIL bicubic resize: the baseline Real-ESRGAN is measured against."""

    def __init__(self, scale: int = 4) -> None:
        if scale < 1:
            raise ConfigError(f"bicubic scale must be >= 1, not {scale}")
        self._scale = scale

    @property
    def name(self) -> str:
        return f"bicubic-x{self._scale}"

    @property
    def scale(self) -> int:
        return self._scale

    def upscale(self, img: Image.Image) -> Image.Image:
        rgb = to_rgb(img)
        return rgb.resize(
            (rgb.width * self._scale, rgb.height * self._scale), Image.Resampling.BICUBIC
        )
