"""When a query photo is worth upscaling, and why, in words a shopper can read."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image

from searchcore.config import UPSCALE_MODES, UpscaleSettings
from searchcore.errors import ConfigError


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
