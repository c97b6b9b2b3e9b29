"""Regenerate the example photos the page offers (``python assets/examples/make_examples.py``).

Each one is a product of the default demo shop (``generate_catalog(n=1200, seed=0, size=192)``,
the shop ``python app.py`` creates) made worse the way a shopper's photo is: shrunk to a
thumbnail, blurred, or saved as a low-quality JPEG. So a visitor sees the upscaler decide to run
(and why) on small and blurry photos, and skip a sharp one. Drawing the shop is deterministic,
so the same product ids always give the same pictures.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageFilter

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from searchcore.demo.synth import generate_catalog

HERE = Path(__file__).resolve().parent

# file name: (product id, how the photo is made worse)
EXAMPLES = {
    "tiny-red-sneakers.png": ("P00142", "tiny"),  # 40 px thumbnail
    "blurry-striped-tshirt.jpg": ("P00215", "blur"),  # out of focus
    "lowres-orange-handbag.jpg": ("P00155", "jpeg"),  # 56 px, heavy JPEG artefacts
    "blurry-yellow-mug.jpg": ("P00306", "blur"),
    "sharp-grey-watch.jpg": ("P00001", "sharp"),  # left alone: upscaling is skipped
}


def degrade(img: Image.Image, how: str) -> Image.Image:
    if how == "tiny":
        return img.resize((40, 40), Image.Resampling.BOX)
    if how == "blur":
        return img.filter(ImageFilter.GaussianBlur(3.5))
    if how == "jpeg":
        return img.resize((56, 56), Image.Resampling.BILINEAR)
    return img


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        shop = Path(tmp) / "shop"
        generate_catalog(shop, n=1200, seed=0, size=192)
        for name, (pid, how) in EXAMPLES.items():
            img = degrade(Image.open(shop / "images" / f"{pid}.jpg").convert("RGB"), how)
            out = HERE / name
            if out.suffix == ".jpg":
                img.save(out, "JPEG", quality=25 if how == "jpeg" else 85)
            else:
                img.save(out)
            print(f"{out.name}: {pid}, {how}, {img.width}x{img.height}")


if __name__ == "__main__":
    main()
