"""Decode and check images from strangers: uploads and catalog photos alike.

Every image that enters the pipeline goes through :func:`decode_image`, which returns an 8-bit
RGB :class:`PIL.Image.Image` or raises :class:`~searchcore.errors.ImageError` with a short,
human message. It never relies on Pillow's global settings (the app may lower
``Image.MAX_IMAGE_PIXELS`` too, as a first line of defence): limits are passed explicitly.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from searchcore.config import ImageLimits
from searchcore.errors import ImageError, first_line
from searchcore.fsutil import FileTooLargeError, read_regular

# Only well-known raster formats: Pillow can also open EPS (which runs Ghostscript), PSD, ICNS
# and many more, none of which a shopper needs.
# (Multi-picture JPEGs from phones open through the JPEG plugin.)
ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
SUPPORTED = "JPEG, PNG, WebP, GIF, BMP or TIFF"
# File names that hold one of those formats (photo folders, served catalog photos).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


DEFAULT_LIMITS = ImageLimits()
# Queries and catalog photos alike are decoded at a reduced JPEG scale keeping >= 512 px a side:
# well above what the upscale policy (160 px) and the model (<= 224 px) look at, and the same
# for both, so a catalog photo uploaded as a query reaches the model as the same pixels.
DRAFT = 512
__all__ = [
    "ALLOWED_FORMATS",
    "DEFAULT_LIMITS",
    "DRAFT",
    "ImageLimits",
    "crop_photo",
    "decode_image",
]


def decode_image(
    source: bytes | str | Path | Image.Image,
    limits: ImageLimits = DEFAULT_LIMITS,
    *,
    draft: int | None = None,
) -> Image.Image:
    """Return the image as 8-bit RGB, upright (EXIF orientation applied), first frame only.

    Transparent pixels are composited on white (product photos are shot on white), 16-bit
    and float images are scaled to 8 bits, CMYK and palette images converted. With ``draft``,
    a JPEG larger than ``draft`` pixels a side is decoded at a reduced scale (1/2, 1/4, 1/8)
    that keeps both sides at least ``draft``: a 12 MP phone photo decodes in a third of the
    time, and nothing downstream looks at more than a few hundred pixels.
    """
    if isinstance(source, Image.Image):
        return _normalise(source, limits, owned=False)
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:  # regular files only (a FIFO would block), never more than the cap
            data = read_regular(path, limits.max_bytes)
        except FileTooLargeError as exc:
            raise ImageError(_too_big(exc.size, limits)) from None
        except OSError as exc:
            raise ImageError(f"cannot read image {path.name}: {exc.strerror or exc}") from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    else:
        raise ImageError(
            f"expected image bytes, a path or a PIL image, not {type(source).__name__}"
        )
    if not data:
        raise ImageError("the file is empty")
    if len(data) > limits.max_bytes:
        raise ImageError(_too_big(len(data), limits))
    with warnings.catch_warnings():
        # Pillow only *warns* between MAX_IMAGE_PIXELS and twice that; make it an error.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
            _check_size(img.size, limits)
            if draft and img.format == "JPEG" and min(img.size) > 2 * draft:
                img.draft("RGB", (draft, draft))
            img.load()
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageError("image is too large to decode safely (decompression bomb?)") from None
        except UnidentifiedImageError:
            raise ImageError(f"not an image, or not a supported format ({SUPPORTED})") from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise ImageError(f"image is damaged or truncated ({first_line(exc, 120)})") from None
        except Exception as exc:
            raise ImageError(f"image could not be decoded ({type(exc).__name__})") from None
        return _normalise(img, limits, owned=True)


def crop_photo(
    img: Image.Image, box: tuple[float, float, float, float], min_side: int = 8
) -> Image.Image:
    """The part of ``img`` inside ``box`` (``x0, y0, x1, y1``, fractions of its width and
    height); refused when that part is under ``min_side`` pixels a side."""
    w, h = img.size
    x0, y0, x1, y1 = box
    left, top = min(w - 1, round(x0 * w)), min(h - 1, round(y0 * h))
    right, bottom = max(left + 1, round(x1 * w)), max(top + 1, round(y1 * h))
    if right - left < min_side or bottom - top < min_side:
        raise ImageError(
            f"the part of the photo to search is {right - left}x{bottom - top} px; "
            f"draw a box at least {min_side} px a side"
        )
    return img.crop((left, top, right, bottom))


def _normalise(img: Image.Image, limits: ImageLimits, *, owned: bool) -> Image.Image:
    """``owned``: the image was decoded here, so it may be turned upright in place (a copy
    of every photo was a third of a 224 px JPEG's decoding time); a caller's is never touched.
    """
    _check_size(img.size, limits)
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)
        if owned:
            ImageOps.exif_transpose(img, in_place=True)
        else:
            img = ImageOps.exif_transpose(img)
        return to_rgb(img)
    except ImageError:
        raise
    except Exception as exc:
        raise ImageError(f"image could not be decoded ({first_line(exc, 120)})") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB: 16-bit and float scaled, transparency composited on white (product photos
    are shot on white, and cut-outs belong on a shop page's white, not on hidden colours)."""
    mode = img.mode
    if mode == "RGB":
        return img.copy() if img.readonly else img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        top = float(arr.max()) if arr.size else 0.0
        if mode == "F":
            lo = float(arr.min())
            arr = (arr - lo) / (top - lo) * 255.0 if top > lo else np.zeros_like(arr)
        elif top > 255:
            arr = arr / 257.0  # 16-bit range -> 8-bit
        grey = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "L")
        return grey.convert("RGB")
    if (mode == "P" and "transparency" in img.info) or mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def _check_size(size: tuple[int, int], limits: ImageLimits) -> None:
    w, h = size
    if w * h > limits.max_pixels:
        raise ImageError(
            f"image is too large: {w}x{h} px is over {limits.max_pixels / 1e6:.0f} megapixels"
        )
    if min(w, h) < limits.min_side:
        raise ImageError(f"image is too small: {w}x{h} px (at least {limits.min_side} px a side)")
    if max(w, h) / min(w, h) > limits.max_aspect:
        raise ImageError(f"image is too narrow to be a product photo: {w}x{h} px")


def _too_big(n: int, limits: ImageLimits) -> str:
    return f"file is too large: {n / 1e6:.1f} MB (at most {limits.max_bytes / 1e6:.0f} MB)"
