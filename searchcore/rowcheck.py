"""The checks of one catalog row's fields that a shop's every write goes through too: a price
that is a number, a photo path that stays inside the shop's folder."""

from __future__ import annotations

import math
import re
from pathlib import Path, PurePosixPath, PureWindowsPath

from searchcore.fsutil import InsideRoot

_PLAIN_PATH = re.compile(r"[\w\-. ]+(?:/[\w\-. ]+)*")


def parse_price(value: str) -> tuple[float, str | None]:
    text = str(value).strip().replace(",", "")
    if text == "":
        return math.nan, None
    try:
        price = float(text)
    except ValueError:
        return math.nan, f"price {value!r} is not a number"
    if not math.isfinite(price) or price < 0:
        return math.nan, f"price {value!r} must be a finite, non-negative number"
    return price, None


def image_path_problem(value: str, root: Path, inside: InsideRoot | None = None) -> str | None:
    """Why a photo's path is refused (None: it is fine). ``inside``: a checker of ``root`` to
    share between the rows of one catalog."""
    text = str(value)
    if not text.strip():
        return "empty image path"
    if _PLAIN_PATH.fullmatch(text) and ".." not in text.split("/"):
        # a relative path of plain names: only a symlink could take it out of the folder
        if not (inside or InsideRoot(root))(text):
            return f"image path {text!r} is a symlink pointing outside the catalog folder"
        return None
    if (
        PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).is_absolute()
        or PureWindowsPath(text).drive
    ):
        return f"image path {text!r} is absolute; give it relative to the catalog folder"
    if ".." in PurePosixPath(text.replace("\\", "/")).parts:
        return f"image path {text!r} leaves the catalog folder"
    # ".." is refused above, so a path that resolves outside the root went through a symlink.
    if not (root / text).resolve().is_relative_to(root):
        return f"image path {text!r} is a symlink pointing outside the catalog folder"
    return None
