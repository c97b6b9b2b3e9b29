"""Upscale small or blurry query photos before they are embedded.

* :mod:`.registry`: Real-ESRGAN models by name (:data:`UPSCALERS`, :func:`get_upscaler_spec`,
  :func:`register_upscaler`);
* :mod:`.weights`: finding, downloading, verifying and loading their weights, and trained
  upscaler folders (what ``train-upscaler`` writes; the shipped default is one);
* :mod:`.network`: the upscalers, :class:`RealESRGANUpscaler` and the :class:`BicubicUpscaler`
  baseline, behind one small protocol;
* :mod:`.policy`: :class:`UpscalePolicy`, which decides per photo whether upscaling is worth it.

:func:`build_upscaler` is the one factory: the app, the CLI, ``eval`` and ``tune`` all build
their upscalers through it. Importing the package is cheap (torch and basicsr load on first use).
Anything in searchcore may import it; it imports only config, errors, fsutil and images.
"""

from __future__ import annotations

from pathlib import Path

from searchcore.config import Settings
from searchcore.demo.assets import PSNR_UPSCALER_DIR, SHIPPED_UPSCALER_DIR
from searchcore.errors import ConfigError
from searchcore.upscale.network import (
    BicubicUpscaler,
    RealESRGANUpscaler,
    Upscaler,
    build_network,
    load_network,
)
from searchcore.upscale.policy import UpscaleDecision, UpscalePolicy, sharpness
from searchcore.upscale.registry import (
    UPSCALERS,
    UpscalerSpec,
    get_upscaler_spec,
    register_upscaler,
)
from searchcore.upscale.weights import (
    FALLBACK_UPSCALER,
    FOLDER_CONFIG,
    load_state_dict,
    load_upscaler_folder,
    resolve_weights,
)

__all__ = [
    "FALLBACK_UPSCALER",
    "FOLDER_CONFIG",
    "PSNR_UPSCALER_DIR",
    "SHIPPED_UPSCALERS",
    "SHIPPED_UPSCALER_DIR",
    "UPSCALERS",
    "BicubicUpscaler",
    "RealESRGANUpscaler",
    "UpscaleDecision",
    "UpscalePolicy",
    "Upscaler",
    "UpscalerSpec",
    "build_network",
    "build_upscaler",
    "get_upscaler_spec",
    "load_network",
    "load_state_dict",
    "load_upscaler_folder",
    "register_upscaler",
    "resolve_weights",
    "sharpness",
]


# the project's own upscalers by name: folders shipped with it
SHIPPED_UPSCALERS = {"default": SHIPPED_UPSCALER_DIR, "psnr": PSNR_UPSCALER_DIR}


def build_upscaler(settings: Settings) -> RealESRGANUpscaler:
    """The configured Real-ESRGAN upscaler: weights are found now, the network on first use.

    ``settings.upscaler`` is ``default`` or None (the project's compact upscaler trained to find
    products, ``assets/models/upscaler-default``, when present, else ``realesr-general-x4v3``),
    ``psnr`` (the project's compact upscaler trained for pixels), a name from
    :data:`UPSCALERS`, or a trained upscaler folder.
    """
    name = settings.upscaler or "default"
    folder = None
    if name in SHIPPED_UPSCALERS:
        shipped = SHIPPED_UPSCALERS[name]
        # weights given with "default" are the official fallback's (realesr-general-x4v3)
        fallback = name == "default" and settings.upscaler_weights is not None
        if (shipped / FOLDER_CONFIG).is_file() and not fallback:
            folder = shipped
        elif name == "default":
            name = FALLBACK_UPSCALER
        else:
            raise ConfigError(f"upscaler {name!r} is not shipped with this install ({shipped})")
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
