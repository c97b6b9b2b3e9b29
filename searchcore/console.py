"""What commands show on a terminal while they work: one progress bar for every long loop."""

from __future__ import annotations

from typing import Any


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True) -> Any:
    """A tqdm bar over ``total`` ``unit``s; when not ``enabled`` it shows nothing and its
    ``update``, ``set_postfix`` and ``close`` do nothing, so callers never test for it."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, desc=desc, dynamic_ncols=True, disable=not enabled)
