"""Upscale small or blurry query photos before they are embedded.

Three parts, each usable on its own:

* a registry of Real-ESRGAN models by name (:data:`UPSCALERS`, :func:`get_upscaler_spec`,
  :func:`register_upscaler`) and the code that finds, downloads and verifies their weights
  (:func:`resolve_weights`, :func:`load_state_dict`);
* the upscalers themselves, which share one small protocol (``name``, ``scale``,
  ``upscale(img) -> img``): :class:`RealESRGANUpscaler` and the :class:`BicubicUpscaler`
  baseline used in evaluation;
* :class:`UpscalePolicy`, which decides per photo whether upscaling is worth it and says why in
  words a shopper can read.

Importing this module is cheap: torch, basicsr and realesrgan are imported inside the functions
that need them (basicsr's package ``__init__`` pulls in all of its training code).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

import numpy as np
from PIL import Image

from searchcore._compat import patch_torchvision_for_basicsr
from searchcore.config import UPSCALE_MODES, Settings, UpscaleSettings
from searchcore.errors import ConfigError, UpscaleError, WeightsError, first_line
from searchcore.fsutil import file_sha256, is_regular_file, read_json
from searchcore.images import to_rgb

if TYPE_CHECKING:
    import torch

__all__ = [
    "UPSCALERS",
    "BicubicUpscaler",
    "RealESRGANUpscaler",
    "UpscaleDecision",
    "UpscalePolicy",
    "Upscaler",
    "UpscalerSpec",
    "build_upscaler",
    "get_upscaler_spec",
    "load_state_dict",
    "register_upscaler",
    "resolve_weights",
    "sharpness",
]

Arch = Literal["srvgg", "rrdb"]
_ARCHS: tuple[str, ...] = ("srvgg", "rrdb")
# The keyword each architecture uses for its upscale factor; it is filled in from
# UpscalerSpec.scale so the factor is written down once and cannot disagree with the network.
_SCALE_KWARG = {"srvgg": "upscale", "rrdb": "scale"}
_DOWNLOAD_TIMEOUT_S = 60
_CHUNK = 1 << 20


# --------------------------------------------------------------------------- registry


@dataclass(frozen=True)
class UpscalerSpec:
    """Everything needed to build one upscaling network and fetch its weights.

    ``arch_kwargs`` are the network's constructor arguments except the upscale factor, which
    comes from ``scale``. A plain ``dict`` is accepted and stored as a sorted tuple of pairs, so
    the spec stays immutable and hashable. ``sha256`` is the digest of the file at ``url``;
    ``None`` means unknown, and then a cached or downloaded file is only used when the caller
    explicitly accepts unverified weights (see :func:`resolve_weights`).
    """

    name: str
    arch: Arch
    arch_kwargs: tuple[tuple[str, Any], ...]
    scale: int
    url: str | None
    sha256: str | None
    filename: str
    description: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.arch_kwargs, Mapping):
            object.__setattr__(self, "arch_kwargs", tuple(sorted(self.arch_kwargs.items())))
        if self.arch not in _ARCHS:
            raise ConfigError(f"upscaler {self.name!r}: arch must be one of {', '.join(_ARCHS)}")
        if self.scale not in (1, 2, 4, 8):
            raise ConfigError(
                f"upscaler {self.name!r}: scale must be 1, 2, 4 or 8, not {self.scale}"
            )
        if _SCALE_KWARG[self.arch] in dict(self.arch_kwargs):
            raise ConfigError(
                f"upscaler {self.name!r}: give the factor as scale=, not in arch_kwargs"
            )
        if not self.filename or Path(self.filename).name != self.filename:
            raise ConfigError(f"upscaler {self.name!r}: filename must be a bare file name")
        if self.sha256 is not None and (
            len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256)
        ):
            raise ConfigError(f"upscaler {self.name!r}: sha256 must be 64 lowercase hex digits")

    @property
    def kwargs(self) -> dict[str, Any]:
        """The network's full constructor arguments, upscale factor included."""
        return {**dict(self.arch_kwargs), _SCALE_KWARG[self.arch]: self.scale}


_RELEASES = "https://github.com/xinntao/Real-ESRGAN/releases/download"


def _pairs(**kwargs: Any) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(kwargs.items()))


_SRVGG: dict[str, Any] = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "act_type": "prelu"}
_RRDB: dict[str, Any] = {"num_in_ch": 3, "num_out_ch": 3, "num_feat": 64, "num_grow_ch": 32}

# sha256 of the official release assets. Upstream publishes no checksums, so these come from
# third-party manifests that verify the downloads: the Arch Linux AUR PKGBUILD of
# python-realesrgan 0.3.0 (its sha256sums list all five files, checked by makepkg on every
# build), cross-checked against TensoRaws/ccrestoration's model zoo (x2plus, animevideov3) and
# several independent download scripts that pin the same digests (all agree). The copies in
# ../shared are NOT byte-identical to these files: pass them by path, do not put them in the cache.
UPSCALERS: dict[str, UpscalerSpec] = {
    spec.name: spec
    for spec in (
        UpscalerSpec(
            name="realesr-general-x4v3",
            arch="srvgg",
            arch_kwargs=_pairs(**_SRVGG, num_conv=32),
            scale=4,
            url=f"{_RELEASES}/v0.2.5.0/realesr-general-x4v3.pth",
            sha256="8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
            filename="realesr-general-x4v3.pth",
            description="general photos, small and fast (SRVGG, 32 convs); the default",
        ),
        UpscalerSpec(
            name="realesr-general-wdn-x4v3",
            arch="srvgg",
            arch_kwargs=_pairs(**_SRVGG, num_conv=32),
            scale=4,
            url=f"{_RELEASES}/v0.2.5.0/realesr-general-wdn-x4v3.pth",
            sha256="1641f8c4464b9f097c9fdda5589273713f67cf59f3d909e0bd688f0cee269dca",
            filename="realesr-general-wdn-x4v3.pth",
            description="general photos with stronger denoising (noisy phone shots)",
        ),
        UpscalerSpec(
            name="realesr-animevideov3",
            arch="srvgg",
            arch_kwargs=_pairs(**_SRVGG, num_conv=16),
            scale=4,
            url=f"{_RELEASES}/v0.2.5.0/realesr-animevideov3.pth",
            sha256="b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d",
            filename="realesr-animevideov3.pth",
            description="anime and drawings, the smallest model (SRVGG, 16 convs)",
        ),
        UpscalerSpec(
            name="RealESRGAN_x4plus",
            arch="rrdb",
            arch_kwargs=_pairs(**_RRDB, num_block=23),
            scale=4,
            url=f"{_RELEASES}/v0.1.0/RealESRGAN_x4plus.pth",
            sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
            filename="RealESRGAN_x4plus.pth",
            description="general photos, large RRDB model (67 MB, ~20x slower on CPU)",
        ),
        UpscalerSpec(
            name="RealESRGAN_x2plus",
            arch="rrdb",
            arch_kwargs=_pairs(**_RRDB, num_block=23),
            scale=2,
            url=f"{_RELEASES}/v0.2.1/RealESRGAN_x2plus.pth",
            sha256="49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
            filename="RealESRGAN_x2plus.pth",
            description="general photos, x2, large RRDB model",
        ),
    )
}


def get_upscaler_spec(name: str) -> UpscalerSpec:
    try:
        return UPSCALERS[name]
    except KeyError:
        valid = ", ".join(sorted(UPSCALERS))
        raise ConfigError(f"unknown upscaler {name!r}; choose one of: {valid}") from None


def register_upscaler(spec: UpscalerSpec, *, replace: bool = False) -> UpscalerSpec:
    """Add a model (e.g. one trained for this project); refuses to shadow a name by accident."""
    if spec.name in UPSCALERS and not replace:
        raise ConfigError(f"upscaler {spec.name!r} is already registered (pass replace=True)")
    UPSCALERS[spec.name] = spec
    return spec


# --------------------------------------------------------------------------- weights


def _sha256(path: Path) -> str:
    return file_sha256(path)


def resolve_weights(
    spec: UpscalerSpec,
    weights_path: Path | None,
    cache_dir: Path,
    allow_download: bool,
    *,
    allow_unverified: bool = False,
) -> Path:
    """Find the weights file for ``spec``; download it only when allowed.

    Order: ``weights_path`` if given (the user's own copy: it is not checked against the
    official sha256, but it is still loaded safely and shape-checked when the model is built);
    else ``cache_dir/realesrgan/<filename>``, which must match ``spec.sha256``; else a download
    of ``spec.url`` into that cache path, verified before it is moved into place.

    A spec without a known sha256 makes cached and downloaded files unverifiable; they are then
    refused unless ``allow_unverified=True``.
    """
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise WeightsError(f"upscaler weights not found: {path} (no such file)")
        return path

    cached = Path(cache_dir).expanduser() / "realesrgan" / spec.filename
    if cached.is_file():
        _check_digest(spec, cached, allow_unverified, what="cached file")
        return cached

    if spec.url is None:
        raise WeightsError(
            f"no weights for upscaler {spec.name} (it has no download URL): pass --weights PATH "
            f"or set SEARCHCORE_UPSCALER_WEIGHTS, or put {spec.filename} at {cached}"
        )
    if not allow_download:
        raise WeightsError(
            f"no weights for upscaler {spec.name}: pass --weights PATH or set "
            f"SEARCHCORE_UPSCALER_WEIGHTS, or put {spec.filename} at {cached}, or allow downloads "
            f"(SEARCHCORE_ALLOW_DOWNLOAD=1) to fetch {spec.url}"
        )
    if spec.sha256 is None and not allow_unverified:
        raise WeightsError(
            f"upscaler {spec.name} has no known sha256, so a download from {spec.url} cannot be "
            "verified; download it yourself and pass it with --weights PATH"
        )
    _download(spec, spec.url, cached)
    return cached


def _check_digest(spec: UpscalerSpec, path: Path, allow_unverified: bool, what: str) -> None:
    if spec.sha256 is None:
        if allow_unverified:
            return
        raise WeightsError(
            f"{what} {path} cannot be verified: upscaler {spec.name} has no known sha256; "
            "pass it explicitly with --weights PATH if you trust it"
        )
    actual = _sha256(path)
    if actual != spec.sha256:
        raise WeightsError(
            f"{what} {path} does not match the official {spec.name} weights "
            f"(sha256 {actual[:12]}..., expected {spec.sha256[:12]}...): delete it so it is "
            "downloaded again, or pass your own copy with --weights PATH"
        )


def _download(spec: UpscalerSpec, url: str, target: Path) -> None:
    """Fetch ``url`` to ``target`` through a temp file in the same folder.

    The file only appears under its final name, by an atomic rename, once its digest matched:
    an interrupted or corrupt download can never be mistaken for a good cached file.
    """
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the weights cache {target.parent}: {exc}") from exc
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        try:
            with (
                os.fdopen(fd, "wb") as out,
                urllib.request.urlopen(url, timeout=_DOWNLOAD_TIMEOUT_S) as response,
            ):
                while chunk := response.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        except urllib.error.HTTPError as exc:
            raise WeightsError(
                f"could not download {spec.name} weights: HTTP {exc.code} {exc.reason}; URL: {url}"
            ) from exc
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise WeightsError(
                f"could not download {spec.name} weights (offline or unreachable?): {reason}; "
                f"URL: {url}"
            ) from exc
        if spec.sha256 is not None and digest.hexdigest() != spec.sha256:
            raise WeightsError(
                f"download of {spec.name} from {url} is corrupt or not the official file "
                f"(sha256 {digest.hexdigest()[:12]}..., expected {spec.sha256[:12]}...); "
                "nothing was saved"
            )
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a state dict without executing code from the file.

    ``.safetensors`` files hold tensors only; ``.pth`` files go through ``torch.load`` with
    ``weights_only=True``, which refuses any pickle that names a callable. Real-ESRGAN files wrap
    the state dict as ``{"params_ema": ...}`` and/or ``{"params": ...}``; the EMA weights are
    preferred, as in Real-ESRGAN's own loader.
    """
    import torch

    path = Path(path)
    if not is_regular_file(path):  # a FIFO or device would block torch.load forever
        raise WeightsError(f"cannot load upscaler weights {path.name}: not a regular file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types here: unpickling, zip, EOF, OS errors
        # torch's own messages run to a page and suggest retrying with weights_only=False;
        # say what is wrong in one line instead (the original stays chained for debugging).
        if "Unsupported global" in str(exc):
            why = "it holds Python objects besides tensors (refused: loading them could run code)"
        elif isinstance(exc, OSError):
            why = first_line(exc)
        else:
            why = "corrupt, truncated or not a weights file"
        raise WeightsError(f"cannot load upscaler weights {path}: {why}") from exc

    if isinstance(obj, Mapping):
        for key in ("params_ema", "params"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if (
        not isinstance(obj, Mapping)
        or not obj
        or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    ):
        raise WeightsError(
            f"upscaler weights {path} hold no state dict "
            "(expected 'params_ema', 'params' or a mapping of names to tensors)"
        )
    return dict(obj)


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_network(spec: UpscalerSpec) -> torch.nn.Module:
    patch_torchvision_for_basicsr()  # must run before the first basicsr/realesrgan import
    if spec.arch == "srvgg":
        from realesrgan.archs.srvgg_arch import SRVGGNetCompact

        return SRVGGNetCompact(**spec.kwargs)
    from basicsr.archs.rrdbnet_arch import RRDBNet

    return RRDBNet(**spec.kwargs)


def _load_network(spec: UpscalerSpec, weights: Path) -> torch.nn.Module:
    """The network of ``spec`` with ``weights`` loaded strictly (every key, every shape)."""
    state = load_state_dict(weights)
    net = build_network(spec)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        # torch lists every missing key and mismatched shape; keep the first problem only.
        lines = [s.strip() for s in str(exc).splitlines()[1:] if s.strip()]
        detail = _clip(lines[0]) if lines else first_line(exc)
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

        net = _load_network(self.spec, self.weights)
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


# --------------------------------------------------------------------------- policy


def sharpness(img: Image.Image) -> float:
    """Variance of the Laplacian of the grey image (0-255), measured at a 256 px shorter side.

    Resizing first makes the figure a property of the photo rather than of its upload size
    (the same photo at twice the resolution has much weaker pixel-to-pixel edges).
    """
    grey = img.convert("L")
    w, h = grey.size
    f = 256 / min(w, h)
    grey = grey.resize((max(3, round(w * f)), max(3, round(h * f))), Image.Resampling.BICUBIC)
    g = np.asarray(grey, dtype=np.float64)
    # 4-neighbour Laplacian kernel [[0,1,0],[1,-4,1],[0,1,0]] on the interior pixels.
    lap = g[:-2, 1:-1] + g[2:, 1:-1] + g[1:-1, :-2] + g[1:-1, 2:] - 4.0 * g[1:-1, 1:-1]
    return float(lap.var())


@dataclass(frozen=True)
class UpscaleDecision:
    upscale: bool
    reason: str  # shown to shoppers: short and human
    width: int
    height: int
    sharpness: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class UpscalePolicy:
    """Decides whether a query photo is upscaled: ``never``, ``always`` or ``auto``.

    ``auto`` upscales photos that are small (shorter side below ``min_side``) or blurry
    (:func:`sharpness` below ``min_sharpness``); sharpness is only measured when the size test
    passes.
    """

    def __init__(self, settings: UpscaleSettings) -> None:
        self.settings = settings

    def decide(self, img: Image.Image, mode: str | None = None) -> UpscaleDecision:
        mode = self.settings.mode if mode is None else mode
        if mode not in UPSCALE_MODES:
            raise ConfigError(
                f"upscale mode must be one of {', '.join(UPSCALE_MODES)}, not {mode!r}"
            )
        w, h = img.size
        if mode == "never":
            return UpscaleDecision(False, "upscaling off", w, h, None)
        if mode == "always":
            return UpscaleDecision(True, "upscaling forced", w, h, None)
        s = self.settings
        if min(w, h) < s.min_side:
            reason = f"small: {w}x{h} px, shorter side < {s.min_side}"
            return UpscaleDecision(True, reason, w, h, None)
        sharp = sharpness(img)
        if sharp < s.min_sharpness:
            return UpscaleDecision(
                True, f"blurry: sharpness {sharp:.1f} < {s.min_sharpness:.1f}", w, h, sharp
            )
        return UpscaleDecision(
            False, f"sharp and large enough: {w}x{h}, sharpness {sharp:.1f}", w, h, sharp
        )


# --------------------------------------------------------------------------- factory


SHIPPED_UPSCALER_DIR = (
    Path(__file__).resolve().parents[1] / "assets" / "models" / "upscaler-default"
)
FOLDER_CONFIG = "upscaler_config.json"
FALLBACK_UPSCALER = "realesr-general-x4v3"


def load_upscaler_folder(folder: str | Path) -> tuple[UpscalerSpec, Path]:
    """``(spec, weights)`` of a trained upscaler folder (what ``train-upscaler`` writes).

    ``upscaler_config.json`` names the architecture, its arguments, the scale, the weights
    file and its sha256, which is checked here.
    """
    folder = Path(folder)
    path = folder / FOLDER_CONFIG
    try:
        cfg = read_json(path, 1 << 20)
        weights = folder / Path(str(cfg["weights"])).name
        spec = UpscalerSpec(
            name=str(cfg["name"]),
            arch=cfg.get("arch", "srvgg"),
            arch_kwargs=dict(cfg["arch_kwargs"]),
            scale=int(cfg["scale"]),
            url=None,
            sha256=str(cfg["sha256"]),
            filename=weights.name,
            description=f"trained by searchcore ({folder.name})",
        )
    except FileNotFoundError:
        raise WeightsError(f"upscaler folder {folder} has no {FOLDER_CONFIG}") from None
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise WeightsError(f"{path} is not a valid upscaler config ({first_line(exc)})") from None
    if not is_regular_file(weights):
        raise WeightsError(f"upscaler weights {weights} are missing")
    if _sha256(weights) != spec.sha256:
        raise WeightsError(f"upscaler weights {weights} do not match the sha256 in {path}")
    return spec, weights


def build_upscaler(settings: Settings) -> RealESRGANUpscaler:
    """The configured Real-ESRGAN upscaler: weights are found now, the network on first use.

    ``settings.upscaler`` is ``default`` (the project's trained compact model in
    ``assets/models/upscaler-default`` when present, else ``realesr-general-x4v3``), a name
    from :data:`UPSCALERS`, or a trained upscaler folder.
    """
    name = settings.upscaler
    folder = None
    if name == "default":
        if (SHIPPED_UPSCALER_DIR / FOLDER_CONFIG).is_file() and settings.upscaler_weights is None:
            folder = SHIPPED_UPSCALER_DIR
        else:
            name = FALLBACK_UPSCALER
    elif (Path(name) / FOLDER_CONFIG).is_file():
        folder = Path(name)
    if folder is not None:
        spec, weights = load_upscaler_folder(folder)
    else:
        spec = get_upscaler_spec(name)
        weights = resolve_weights(
            spec, settings.upscaler_weights, settings.cache_dir, settings.allow_download
        )
    return RealESRGANUpscaler(
        spec,
        weights,
        tile=settings.upscale.tile,
        device=settings.device,
        max_input_side=settings.upscale.max_input_side,
        threads=settings.threads,
    )
