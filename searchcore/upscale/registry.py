"""Real-ESRGAN models by name: what each network is and where its official weights live."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from searchcore.errors import ConfigError

Arch = Literal["srvgg", "rrdb"]
ARCHS: tuple[str, ...] = ("srvgg", "rrdb")
# The keyword each architecture uses for its upscale factor; it is filled in from
# UpscalerSpec.scale so the factor is written down once and cannot disagree with the network.
SCALE_KWARG = {"srvgg": "upscale", "rrdb": "scale"}


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
        if self.arch not in ARCHS:
            raise ConfigError(f"upscaler {self.name!r}: arch must be one of {', '.join(ARCHS)}")
        if self.scale not in (1, 2, 4, 8):
            raise ConfigError(
                f"upscaler {self.name!r}: scale must be 1, 2, 4 or 8, not {self.scale}"
            )
        if SCALE_KWARG[self.arch] in dict(self.arch_kwargs):
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
        return {**dict(self.arch_kwargs), SCALE_KWARG[self.arch]: self.scale}


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
