"""Where the shipped models and example photos live: ``assets/`` at the root of a checkout.

The one lookup for every module that needs a shipped file (the default CLIP model, the default
upscaler, the page's example photos). Without the folder (an installed wheel), those modules
fall back as they document: a random-weights architecture, the official Real-ESRGAN weights.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[2] / "assets"
MODELS = ASSETS / "models"
DEFAULT_MODEL_DIR = MODELS / "clip-default"
SHIPPED_UPSCALER_DIR = MODELS / "upscaler-default"
EXAMPLES = ASSETS / "examples"
