from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from searchcore.errors import ImageError
from searchcore.images import ImageLimits, decode_image


def _bytes(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_plain_jpeg_and_path(tmp_path) -> None:
    img = Image.new("RGB", (40, 30), (10, 200, 30))
    data = _bytes(img, "JPEG")
    out = decode_image(data)
    assert out.mode == "RGB" and out.size == (40, 30)
    p = tmp_path / "a.jpg"
    p.write_bytes(data)
    assert decode_image(p).size == (40, 30)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"<html><body>hello</body></html>", "not an image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 10, "damaged|not an image"),
        (b"%!PS-Adobe-3.0 EPSF-3.0\n", "not an image"),  # EPS would run Ghostscript
    ],
)
def test_refused_bytes(data: bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        decode_image(data)


def test_truncated_jpeg() -> None:
    rng = np.random.default_rng(0)
    data = _bytes(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)), "JPEG")
    with pytest.raises(ImageError, match=r"damaged|truncated"):
        decode_image(data[: len(data) // 2])


def test_transparency_is_composited_on_white() -> None:
    rgba = Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # fully transparent red
    assert decode_image(_bytes(rgba)).getpixel((5, 5)) == (255, 255, 255)
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([0, 0, 0] * 256)
    pal.info["transparency"] = 0
    assert decode_image(_bytes(pal, transparency=0)).getpixel((5, 5)) == (255, 255, 255)


def test_cmyk_16bit_and_greyscale() -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in CMYK
    r, g, b = decode_image(_bytes(cmyk, "JPEG")).getpixel((8, 8))
    assert r > 200 and g < 60 and b < 60
    arr = np.full((16, 16), 65535, dtype=np.uint16)
    arr[:8] = 0
    out = decode_image(_bytes(Image.fromarray(arr)))
    assert out.getpixel((0, 12)) == (255, 255, 255) and out.getpixel((0, 2)) == (0, 0, 0)
    assert decode_image(_bytes(Image.new("L", (16, 16), 77))).getpixel((1, 1)) == (77, 77, 77)


def test_exif_rotation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _bytes(img, "JPEG", exif=exif)
    assert decode_image(data).size == (20, 40)
    # from a file, and from a caller's image, which stays as it was
    callers = Image.open(io.BytesIO(data))
    assert decode_image(callers).size == (20, 40) and callers.size == (40, 20)
    assert callers.getexif()[0x0112] == 6


def test_animated_gif_gives_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 255, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    r, g, _ = decode_image(buf.getvalue()).getpixel((8, 8))
    assert r > 200 and g < 50


@pytest.mark.parametrize("size", [(1, 1), (1, 400), (4000, 10)])
def test_degenerate_sizes(size) -> None:
    with pytest.raises(ImageError, match=r"too small|too narrow"):
        decode_image(_bytes(Image.new("RGB", size)))


def test_limits() -> None:
    data = _bytes(Image.new("RGB", (300, 300)))
    with pytest.raises(ImageError, match="megapixels"):
        decode_image(data, ImageLimits(max_pixels=50_000))
    with pytest.raises(ImageError, match="file is too large"):
        decode_image(data, ImageLimits(max_bytes=100))


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with one empty data chunk."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("size", [(30000, 30000), (100000, 100000), (7000, 7000)])
def test_decompression_bomb_by_header(size) -> None:
    # A few dozen bytes claiming gigapixels: refused from the header, before any decoding.
    bomb = _png_header(*size)
    assert len(bomb) < 100
    with pytest.raises(ImageError, match="too large"):
        decode_image(bomb)


def test_decompression_bomb_by_content() -> None:
    # A real 6000x6000 PNG of zeros compresses to ~100 kB but decodes to 108 MB.
    bomb = _bytes(Image.new("L", (6000, 6000)))
    assert len(bomb) < 200_000
    with pytest.raises(ImageError, match="too large"):
        decode_image(bomb, ImageLimits(max_pixels=20_000_000))
