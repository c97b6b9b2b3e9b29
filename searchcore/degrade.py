"""Shopper-like degradations of product photos, seeded: one implementation for train and eval.

A shopper's photo of a product differs from the catalog photo in predictable ways: it is
smaller (a thumbnail, a screenshot, a crop of a larger picture), blurrier, JPEG-compressed,
framed differently, a little tilted, and lit with another white balance. Training makes a
"shopper view" of every catalog photo with :func:`sample_shopper` so the model learns to match
such photos to the clean one; evaluation degrades held-out catalog photos with fixed
:class:`Degradation` conditions (``--condition``) to measure how well that works.

Every random choice comes from the ``numpy.random.Generator`` passed in, so a seed fixes the
result exactly (PIL's operations themselves are deterministic).
"""

from __future__ import annotations

import io
import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from PIL import Image, ImageFilter

from searchcore.errors import ConfigError

__all__ = [
    "DEFAULT_CONDITIONS",
    "Degradation",
    "degrade",
    "parse_condition",
    "parse_degradation",
    "sample_shopper",
]


@dataclass(frozen=True)
class Degradation:
    """One degradation recipe; applied in the order of the fields.

    ``aspect`` first gives the photo this width:height ratio by resizing its width (0.75
    restores a 3:4 portrait that a catalog squashed into a square: shop photos' real shape).
    ``rotate`` and ``cast`` are bounds: each application draws a tilt in ``[-rotate, rotate]``
    degrees and per-channel gains in ``[1 - cast, 1 + cast]``. ``crop`` is the fraction of each
    side kept, at a random position. ``down`` divides both sides (after the crop); instead,
    ``min_width``/``max_width`` shrink the photo to a width drawn in that range, in pixels (a
    shopper's 20-60 px thumbnail, whatever the catalog photo's size); ``blur`` is
    a Gaussian sigma in pixels of the *downscaled* photo (a blurry small photo, not a blurry
    large one that the downscale would sharpen again); ``jpeg`` is the quality of one final
    JPEG round trip (None: none).
    """

    aspect: float = 0.0  # 0: keep the photo's shape
    rotate: float = 0.0
    crop: float = 1.0
    cast: float = 0.0
    down: float = 1.0
    min_width: int = 0
    max_width: int = 0
    blur: float = 0.0
    jpeg: int | None = None

    def __post_init__(self) -> None:
        if self.aspect and not 0.2 <= self.aspect <= 5.0:
            raise ConfigError(f"aspect must be a width:height ratio of 0.2-5, not {self.aspect}")
        if not 0.0 <= self.rotate <= 45.0:
            raise ConfigError(f"rotate must be 0-45 degrees, not {self.rotate}")
        if not 0.2 <= self.crop <= 1.0:
            raise ConfigError(f"crop must keep 0.2-1.0 of each side, not {self.crop}")
        if not 0.0 <= self.cast <= 0.5:
            raise ConfigError(f"cast must be 0-0.5, not {self.cast}")
        if not 1.0 <= self.down <= 32.0:
            raise ConfigError(f"down must be a factor of 1-32, not {self.down}")
        if self.max_width or self.min_width:
            if not 8 <= self.min_width <= self.max_width <= 4096:
                raise ConfigError(
                    "a width range needs 8 <= min_width <= max_width <= 4096, "
                    f"not {self.min_width}-{self.max_width}"
                )
            if self.down != 1.0:
                raise ConfigError("give either down or a width range, not both")
        if not 0.0 <= self.blur <= 10.0:
            raise ConfigError(f"blur must be a sigma of 0-10 pixels, not {self.blur}")
        if self.jpeg is not None and not 1 <= self.jpeg <= 100:
            raise ConfigError(f"jpeg quality must be 1-100, not {self.jpeg}")

    @property
    def shrinks(self) -> bool:
        """True when the photo comes out smaller than it went in (what upscaling is for)."""
        return self.down > 1.0 or self.max_width > 0

    @property
    def geometric(self) -> bool:
        """True when the output is not the original's frame (so pixels cannot be compared)."""
        return self.rotate > 0 or self.crop < 1.0 or self.aspect > 0

    def spec(self) -> str:
        """The canonical ``key=value,...`` form; :func:`parse_degradation` reads it back."""
        default = Degradation()
        parts = [f"{k}={_fmt(v)}" for k, v in asdict(self).items() if v != getattr(default, k)]
        return ",".join(parts) or "none"


def _fmt(v: float | None) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def parse_degradation(text: str) -> Degradation:
    """``"down=4,blur=1,jpeg=75"`` -> :class:`Degradation`; ``"none"`` is the identity."""
    text = text.strip()
    if text in ("", "none"):
        return Degradation()
    names = {f.name for f in fields(Degradation)}
    values: dict[str, float | int] = {}
    for item in text.split(","):
        key, sep, raw = item.strip().partition("=")
        if not sep or key not in names:
            raise ConfigError(
                f"degradation item {item!r} must be KEY=VALUE with KEY one of "
                f"{', '.join(sorted(names))}"
            )
        try:
            values[key] = int(raw) if key in _INT_FIELDS else float(raw)
        except ValueError:
            raise ConfigError(f"degradation {key} must be a number, not {raw!r}") from None
    return Degradation(**values)  # type: ignore[arg-type]


_INT_FIELDS = ("jpeg", "min_width", "max_width")


def parse_condition(text: str) -> tuple[str, Degradation]:
    """``"NAME:SPEC"`` (e.g. ``x4-blur:down=4,blur=1``) or a name of :data:`DEFAULT_CONDITIONS`."""
    name, sep, spec = text.partition(":")
    name = name.strip()
    if not sep:
        if name in DEFAULT_CONDITIONS:
            return name, DEFAULT_CONDITIONS[name]
        raise ConfigError(
            f"condition {text!r} must be NAME:SPEC or one of {', '.join(DEFAULT_CONDITIONS)}"
        )
    if not name:
        raise ConfigError(f"condition {text!r} has no name")
    return name, parse_degradation(spec)


# Evaluation's default query conditions. "x4-blur" is the headline case: a 4x smaller, blurry,
# compressed copy (192 px catalog photos become 48 px queries).
DEFAULT_CONDITIONS: dict[str, Degradation] = {
    "clean": Degradation(),
    "x4": Degradation(down=4, jpeg=90),
    "x4-blur": Degradation(down=4, blur=1.0, jpeg=75),
    "x2-jpeg": Degradation(down=2, jpeg=30),
    "shopper": Degradation(rotate=6, crop=0.85, cast=0.06, down=3, blur=0.6, jpeg=60),
}


def degrade(img: Image.Image, d: Degradation, rng: np.random.Generator) -> Image.Image:
    """Apply ``d`` to an RGB image; the output is never smaller than 8 px a side."""
    img = img.convert("RGB")
    if d.aspect:
        w, h = img.size
        img = img.resize((max(8, round(h * d.aspect)), h), Image.Resampling.BICUBIC)
    if d.rotate > 0:
        angle = float(rng.uniform(-d.rotate, d.rotate))
        # Fill the corners with the photo's own border colour, as a wider shot would show.
        fill = tuple(int(c) for c in np.median(_border(np.asarray(img)), axis=0))
        img = img.rotate(angle, resample=Image.Resampling.BICUBIC, fillcolor=fill)
    if d.crop < 1.0:
        w, h = img.size
        cw, ch = max(8, round(w * d.crop)), max(8, round(h * d.crop))
        x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        img = img.crop((x0, y0, x0 + cw, y0 + ch))
    if d.cast > 0:
        gains = rng.uniform(1 - d.cast, 1 + d.cast, 3).astype(np.float32)
        arr = np.asarray(img, np.float32) * gains
        img = Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")
    down = d.down
    if d.max_width:
        down = max(1.0, img.size[0] / int(rng.integers(d.min_width, d.max_width + 1)))
    if down > 1.0:
        w, h = img.size
        size = (max(8, round(w / down)), max(8, round(h / down)))
        img = img.resize(size, Image.Resampling.BICUBIC)  # PIL filters before shrinking
    if d.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(d.blur))
    if d.jpeg is not None:
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(d.jpeg))
        img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
    return img


def _border(arr: np.ndarray) -> np.ndarray:
    return np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]]).reshape(-1, arr.shape[-1])


def sample_shopper(
    rng: np.random.Generator, strength: float = 1.0, max_down: float = 6.0
) -> Degradation:
    """A random shopper-like recipe for training's degraded view.

    The ranges cover the evaluation conditions and a little beyond, so the model never sees
    an evaluation query that is worse than anything it trained on. ``strength`` (0-1) scales
    every effect down, e.g. for a gentler curriculum; ``max_down`` is the largest shrink factor
    (6: a 224 px catalog photo becomes at least 37 px wide; 12: 19 px).
    """
    s = float(np.clip(strength, 0.0, 1.0))
    # Downscale log-uniformly in [1, max_down]: with 6, half the views are at most ~2.4x smaller.
    down = math.exp(rng.uniform(0.0, math.log(1 + (max_down - 1) * s))) if s > 0 else 1.0
    blur = float(rng.uniform(0.0, 1.3 * s)) if rng.uniform() < 0.7 else 0.0
    jpeg = int(rng.integers(round(95 - 65 * s), 96)) if rng.uniform() < 0.8 else None
    crop = float(rng.uniform(1 - 0.3 * s, 1.0)) if rng.uniform() < 0.6 else 1.0
    rotate = 10.0 * s if rng.uniform() < 0.5 else 0.0
    cast = 0.06 * s if rng.uniform() < 0.5 else 0.0
    return Degradation(rotate=rotate, crop=crop, cast=cast, down=down, blur=blur, jpeg=jpeg)
