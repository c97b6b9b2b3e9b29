"""searchcore: find products from a shopper's photo or words.

Pipeline: decode and check the upload (:mod:`searchcore.images`), upscale small or blurry
photos with Real-ESRGAN (:mod:`searchcore.upscale`), embed with a CLIP model
(:mod:`searchcore.embed`), retrieve from an HNSW index (:mod:`searchcore.stores`) over a
pandas catalog (:mod:`searchcore.catalog`); :class:`searchcore.engine.SearchEngine` ties them
together. Around it: :mod:`searchcore.live` (changes while serving), :mod:`searchcore.web` (the
page and the REST API), :mod:`searchcore.cli` (the command), :mod:`searchcore.training`, and
:mod:`searchcore.demo` (the demo shop and shipped assets). Modules at the top level are the core;
the packages around it import the core, and the core imports none of cli, web or training.

Importing this package is cheap: torch, open_clip and basicsr load only when a model is used.
"""

from searchcore.errors import (
    CatalogError,
    ConfigError,
    ImageError,
    IndexMismatchError,
    SearchError,
    UpscaleError,
    WeightsError,
)

__version__ = "0.1.0"

__all__ = [
    "CatalogError",
    "ConfigError",
    "ImageError",
    "IndexMismatchError",
    "SearchError",
    "UpscaleError",
    "WeightsError",
    "__version__",
]
