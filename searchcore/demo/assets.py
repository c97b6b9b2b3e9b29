"""Where the shipped models and example photos live.

An installed package carries them as package data (``searchcore/assets/``, see
``pyproject.toml``), found through :mod:`importlib.resources`; a checkout keeps them in
``assets/`` at its root (an editable install reads them there). This is the one lookup for
every module that needs a shipped file (the default CLIP model, the default upscaler, the
page's example photos). Where neither exists, ``--model default`` is an error (never a
random stand-in) and the default upscaler falls back to the official Real-ESRGAN weights.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

CHECKOUT_ASSETS = Path(__file__).resolve().parents[2] / "assets"


def _assets() -> Path:
    packaged = resources.files("searchcore") / "assets"
    if isinstance(packaged, Path) and (packaged / "models").is_dir():
        return packaged
    return CHECKOUT_ASSETS


ASSETS = _assets()
MODELS = ASSETS / "models"
DEFAULT_MODEL_DIR = MODELS / "clip-default"
SHIPPED_UPSCALER_DIR = MODELS / "upscaler-default"  # trained to find products with clip-default
# the project's PSNR-trained compact upscaler: where retrieval upscalers start, and the
# "trained for pixels" side of every upscaler comparison (``--upscaler psnr``)
PSNR_UPSCALER_DIR = MODELS / "upscaler-psnr"
EXAMPLES = ASSETS / "examples"
