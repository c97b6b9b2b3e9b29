"""Typed errors raised by the core and converted to one-line messages at the edges.

The CLI prints ``str(err)`` and exits non-zero; the Gradio app shows it as ``gr.Error``.
Every message says what went wrong and, where there is one, the command that fixes it.
"""

from __future__ import annotations


def first_line(exc: BaseException, limit: int = 200) -> str:
    """An exception as one short line (third-party messages run to pages)."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


class SearchError(Exception):
    """Base class of every error the core raises on purpose."""

    exit_code = 1


class ConfigError(SearchError):
    """A setting, flag or spec that cannot be used as given."""

    exit_code = 2


class CatalogError(SearchError):
    """A catalog that cannot be loaded or is refused by validation."""

    def __init__(self, message: str, report: object | None = None) -> None:
        super().__init__(message)
        self.report = report


class ImageError(SearchError):
    """An image (upload or catalog photo) that cannot be decoded or is refused."""


class WeightsError(SearchError):
    """Model weights that are missing, unreachable, corrupt or of the wrong shape."""


class IndexMismatchError(SearchError):
    """An index folder that is corrupt or was built for another model or catalog."""


class LockTimeoutError(SearchError):
    """Another writer held an index folder's lock for longer than the caller would wait."""


class UpscaleError(SearchError):
    """The upscaler could not process an image."""


class BusyError(SearchError):
    """The server has as many queries waiting as it takes; the client should retry later."""

    def __init__(self, message: str, retry_after: int = 5) -> None:
        super().__init__(message)
        self.retry_after = retry_after
