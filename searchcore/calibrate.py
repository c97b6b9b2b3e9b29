"""The "no good match" threshold, calibrated on the index's own score distribution.

A cosine score means different things for different models and catalogs, so a fixed cut-off
would be a guess. Instead, genuine queries are simulated from the catalog (its photos shrunk and
blurred as shoppers send them, its titles as words) and the threshold is a low percentile of
their best scores: by construction about that share of genuine queries fall below it. Queries
that are not products at all (noise, flat colours, off-topic phrases) are scored as well, and
the share of them the threshold turns away is reported, so the figure can be judged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from searchcore.degrade import Degradation, degrade
from searchcore.engine import SearchEngine
from searchcore.errors import ImageError, LockTimeoutError
from searchcore.fsutil import folder_lock, read_json

CALIBRATION_FILE = "calibration.json"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MatchGate:
    """Scores below which the best hit is "no good match", per kind of query.

    Image-to-image and text-to-image cosine scores live on different scales in CLIP, so each
    has its own threshold; an image+text query uses the blend of the two by the text weight.
    """

    image: float = -1.0
    text: float = -1.0
    how: str = "off"

    def threshold(self, has_image: bool, has_text: bool, text_weight: float) -> float:
        if has_image and has_text:
            return (1 - text_weight) * self.image + text_weight * self.text
        return self.image if has_image else self.text


NONSENSE_TEXT = (
    "a tax return form",
    "the moon over a lake",
    "qwerty asdf zxcv",
    "pizza with mushrooms",
    "a cat asleep on a sofa",
    "quarterly sales spreadsheet",
    "mountain landscape at dawn",
    "a diesel engine",
    "snow on a pine forest",
    "a bowl of ramen",
    "railway timetable",
    "an x-ray of a hand",
    "lorem ipsum dolor sit amet",
    "a flock of seagulls",
    "a traffic jam",
    "wedding cake",
    "an electric guitar",
    "the periodic table",
    "a burning candle",
    "sand dunes",
)


def _shopper_photo(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A catalog photo as a shopper might send it: 48-111 px wide (its shape kept) and softened
    by a blur drawn per photo; the shopper degradation training and evaluation use."""
    softer = Degradation(min_width=48, max_width=111, blur=round(float(rng.uniform(0, 1.5)), 3))
    return degrade(img, softer, rng)


def _nonsense_image(rng: np.random.Generator, side: int = 96) -> Image.Image:
    """Not a product: noise, a flat colour field or a smooth gradient."""
    kind = int(rng.integers(3))
    if kind == 0:
        arr = rng.integers(0, 256, (side, side, 3))
    elif kind == 1:
        arr = np.broadcast_to(rng.integers(0, 256, 3), (side, side, 3))
    else:
        t = np.linspace(0, 1, side)[:, None, None]
        arr = rng.integers(0, 256, 3) * t + rng.integers(0, 256, 3) * (1 - t)
        arr = np.broadcast_to(arr, (side, side, 3))
    return Image.fromarray(np.ascontiguousarray(arr, dtype=np.uint8))


def calibrate(
    engine: SearchEngine, index_dir: str | None, percentile: float = 5.0, n: int = 80
) -> MatchGate:
    """Thresholds from the index's own score distribution, cached next to the index.

    Genuine queries are degraded photos and titles of ``n`` catalog products; the threshold is
    the ``percentile`` of their top-1 scores, so about that share of genuine queries would be
    called "no good match". Nonsense queries (noise, flat colours, off-topic phrases) are scored
    too, and the share of them the threshold rejects is logged and shown on the page. Costs
    about ``1.5 n`` image embeddings, once per index (seconds on a CPU).
    """
    from searchcore.fsutil import write_json_atomic
    from searchcore.images import decode_image
    from searchcore.stores.base import is_milvus
    from searchcore.stores.manifest import read_manifest

    cache = (
        None if index_dir is None or is_milvus(index_dir) else Path(index_dir) / CALIBRATION_FILE
    )
    if cache is not None:  # keyed by the committed state: a rebuilt or changed index recalibrates
        key = {
            "index": read_manifest(Path(index_dir)).version,
            "percentile": percentile,
            "model": engine.embedder.fingerprint,
            "n": n,
            "version": 2,  # 2: the shared shopper degradation (searchcore.degrade)
        }
        try:
            saved = read_json(cache, 1 << 20)
            if saved.get("key") == key:
                return MatchGate(saved["image"], saved["text"], saved["how"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    rng = np.random.default_rng(0)
    live = engine.index.live_labels()
    rows = rng.choice(live, size=min(n, len(live)), replace=False)
    photos = []
    for r in rows:
        try:
            photos.append(_shopper_photo(decode_image(engine.catalog.image_path(int(r))), rng))
        except ImageError:  # a photo that went bad after indexing: calibrate without it
            continue
    titles = engine.catalog.df["title"].iloc[rows].tolist()

    def top1(vectors: np.ndarray) -> np.ndarray:
        return np.array([engine.index.search(v, 1).scores[0] for v in vectors])

    good_img = top1(engine.embedder.embed_images(photos))
    bad_img = top1(engine.embedder.embed_images([_nonsense_image(rng) for _ in range(n // 2)]))
    good_txt = top1(engine.embedder.embed_texts(titles))
    bad_txt = top1(engine.embedder.embed_texts(list(NONSENSE_TEXT)))
    t_img, t_txt = (float(np.percentile(g, percentile)) for g in (good_img, good_txt))
    how = (
        f"the {percentile:g}th percentile of the best scores of {len(photos)} degraded catalog "
        f"photos ({t_img:.3f}) and titles ({t_txt:.3f}); it turns away "
        f"{np.mean(bad_img < t_img):.0%} of {len(bad_img)} non-product images and "
        f"{np.mean(bad_txt < t_txt):.0%} of {len(bad_txt)} off-topic phrases"
    )
    if cache is not None:  # a write to the index folder: under its writers' lock, atomic
        try:
            with folder_lock(cache.parent, timeout=10):
                write_json_atomic(cache, {"key": key, "image": t_img, "text": t_txt, "how": how})
        except (OSError, LockTimeoutError) as exc:  # read-only, or busy: calibrate again later
            log.warning("cannot save %s: %s", cache, exc)
    return MatchGate(t_img, t_txt, how)
