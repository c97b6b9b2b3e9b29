"""Compatibility fixes for third-party packages, kept in this one place.

basicsr 1.4.2 (and so realesrgan 0.3.0, its last release) imports
``torchvision.transforms.functional_tensor`` in ``basicsr/data/degradations.py``. torchvision
removed that private module in 0.17; the function basicsr takes from it
(``rgb_to_grayscale``) lives on in ``torchvision.transforms.functional`` with the same
signature. Registering that module under the old name before basicsr is first imported makes
basicsr and realesrgan import and work unchanged.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_done = False


def patch_torchvision_for_basicsr() -> None:
    """Idempotent; call before the first ``import basicsr`` / ``import realesrgan``."""
    global _done
    with _lock:
        if _done:
            return
        import torchvision.transforms.functional as functional

        sys.modules.setdefault("torchvision.transforms.functional_tensor", functional)
        _done = True


@contextlib.contextmanager
def hf_hub_offline(offline: bool = True) -> Iterator[None]:
    """Make huggingface_hub refuse network access inside the block (open_clip downloads through it).

    huggingface_hub reads ``constants.HF_HUB_OFFLINE`` on every request, so flipping it here
    works even after import; the process-wide ``HF_HUB_OFFLINE`` variable is left alone.
    """
    if not offline:
        yield
        return
    import huggingface_hub.constants as constants

    with _lock:
        before = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        with _lock:
            constants.HF_HUB_OFFLINE = before
