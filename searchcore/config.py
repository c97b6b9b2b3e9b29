"""One frozen settings object, built at the edge (CLI flags, ``SEARCHCORE_*`` variables).

Nothing inside the core reads the environment: the CLI and the app build a :class:`Settings`
with :meth:`Settings.from_env` and pass it (or parts of it) down. Use ``dataclasses.replace``
to derive a variant.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from searchcore.errors import ConfigError

UPSCALE_MODES = ("auto", "always", "never")
# How the model runs (searchcore.embed.onnx): torch; a model folder's ONNX export (fp32, or
# int8 with a fingerprint of its own); auto = the folder's verified fp32 export, else torch.
RUNTIMES = ("auto", "torch", "onnx", "onnx-int8")


def usable_cpus() -> int:
    """The CPUs this process may run on (a container's share, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def default_cache_dir() -> Path:
    """Where downloaded weights live: ``$SEARCHCORE_CACHE``, else ``$XDG_CACHE_HOME/searchcore``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "searchcore"


@dataclass(frozen=True)
class UpscaleSettings:
    """When and how query photos are upscaled (see :class:`searchcore.upscale.UpscalePolicy`)."""

    mode: str = "auto"
    # auto upscales when the shorter side is below this many pixels...
    min_side: int = 160
    # ...or when the variance of the Laplacian (grey levels 0-255, measured on the photo
    # resized to a 256 px shorter side) is below this: the photo is blurry.
    min_sharpness: float = 40.0
    # Photos are shrunk to this longest side before upscaling: Real-ESRGAN's memory and time
    # grow with the x4 output, and a CLIP model only sees 224 px anyway.
    max_input_side: int = 256
    # Tile size for Real-ESRGAN (0 = whole image at once).
    tile: int = 0

    def __post_init__(self) -> None:
        if self.mode not in UPSCALE_MODES:
            raise ConfigError(
                f"upscale mode must be one of {', '.join(UPSCALE_MODES)}, not {self.mode!r}"
            )
        if self.min_side < 1 or self.max_input_side < 8:
            raise ConfigError("upscale sizes must be positive (max_input_side >= 8)")


@dataclass(frozen=True)
class ImageLimits:
    """What the pipeline can afford to decode (see :func:`searchcore.images.decode_image`)."""

    max_bytes: int = 20 * 1024 * 1024
    # 36 MP: a 6000x6000 photo decodes to ~108 MB of RGB, which one worker can hold.
    max_pixels: int = 36_000_000
    min_side: int = 8
    max_aspect: float = 20.0


@dataclass(frozen=True)
class IndexSettings:
    """HNSW parameters; ``ef_search`` is the default query-time beam width."""

    space: str = "cosine"
    m: int = 16
    ef_construction: int = 200
    # 64: recall@10 0.996-0.999 against exact search on real and synthetic embeddings, 1.5x
    # faster than 128 at 1M vectors (benchmarks/README.md, bench_ann.py).
    ef_search: int = 64

    def __post_init__(self) -> None:
        if self.space not in ("cosine", "ip", "l2"):
            raise ConfigError(f"index space must be cosine, ip or l2, not {self.space!r}")
        if self.m < 2 or self.ef_construction < 1 or self.ef_search < 1:
            raise ConfigError("HNSW parameters must be positive (M >= 2)")


@dataclass(frozen=True)
class ServeSettings:
    """The shopper's page (``app.py``): its server, queue, upload limits and match gate."""

    max_upload_mb: float = 10.0
    # "No good match" thresholds; None: calibrated on the index (searchcore.calibrate).
    min_image_score: float | None = None
    min_text_score: float | None = None
    match_percentile: float = 5.0
    queue_size: int = 16
    uploads_per_minute: int = 60  # per client address
    upload_folder_mb: float = 512.0  # all clients, per 20 minutes (the folder's clean-up)
    follow_seconds: float = 2.0  # how often the page looks for changes other processes commit

    def __post_init__(self) -> None:
        if self.max_upload_mb <= 0 or self.queue_size < 1 or self.uploads_per_minute < 1:
            raise ConfigError("upload size, queue size and uploads per minute must be positive")
        if not 0 < self.match_percentile < 100 or self.upload_folder_mb <= 0:
            raise ConfigError("match percentile must be in (0, 100), the upload folder positive")


@dataclass(frozen=True)
class Settings:
    """Everything a command or the app needs to know, in one place."""

    catalog: Path | None = None
    column_map: tuple[tuple[str, str], ...] = ()
    # A row with a problem (empty title, bad price, unsafe image path...) is left out of the
    # index; strict refuses the whole catalog instead. More than max_bad_fraction of the rows
    # bad (left out, or without a usable photo) refuses a build in either mode.
    strict_catalog: bool = False
    max_bad_fraction: float = 0.5
    model: str = "default"
    # An index folder (hnswlib) or a Milvus URI / Milvus Lite *.db file (see searchcore.stores).
    index_dir: str | None = None
    milvus_collection: str = "products"
    milvus_token: str | None = None
    # An upscaler name or trained folder. None: the one the index records (`tune` records the
    # upscaler it trained for the model), else "default": the project's trained compact
    # upscaler when shipped, else realesr-general-x4v3.
    upscaler: str | None = None
    upscaler_weights: Path | None = None
    cache_dir: Path = field(default_factory=default_cache_dir)
    allow_download: bool = False
    device: str = "cpu"
    threads: int | None = None
    batch_size: int = 32
    upscale: UpscaleSettings = field(default_factory=UpscaleSettings)
    index: IndexSettings = field(default_factory=IndexSettings)
    images: ImageLimits = field(default_factory=ImageLimits)
    serve: ServeSettings = field(default_factory=ServeSettings)
    # How text queries fuse the lexical and vector rankings (searchcore.fusion): "rrf" or
    # "weighted" (measured side by side by `searchcore eval`).
    fusion: str = "weighted"
    # "auto": a model folder's ONNX export where `searchcore model export` wrote a verified
    # one (faster on a CPU, same fingerprint), else torch; see RUNTIMES.
    runtime: str = "auto"

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise ConfigError(
                f"runtime (SEARCHCORE_RUNTIME, --runtime) must be one of {', '.join(RUNTIMES)}, "
                f"not {self.runtime!r}"
            )

    @property
    def columns(self) -> dict[str, str]:
        return dict(self.column_map)

    def with_(self, **changes: Any) -> Settings:
        return replace(self, **changes)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read ``SEARCHCORE_*`` variables; explicit ``overrides`` (not None) win."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}

        def get(name: str) -> str | None:
            v = env.get(f"SEARCHCORE_{name}")
            return v if v not in (None, "") else None

        if (v := get("CATALOG")) is not None:
            values["catalog"] = Path(v)
        if (v := get("MAP")) is not None:
            values["column_map"] = parse_column_map(v.split(","))
        if (v := get("STRICT_CATALOG")) is not None:
            values["strict_catalog"] = v.lower() in ("1", "true", "yes", "on")
        if (v := get("MAX_BAD_FRACTION")) is not None:
            values["max_bad_fraction"] = _number("SEARCHCORE_MAX_BAD_FRACTION", v, float)
        if (v := get("MODEL")) is not None:
            values["model"] = v
        if (v := get("INDEX")) is not None:
            values["index_dir"] = v
        if (v := get("MILVUS_COLLECTION")) is not None:
            values["milvus_collection"] = v
        if (v := get("MILVUS_TOKEN")) is not None:
            values["milvus_token"] = v
        if (v := get("UPSCALER")) is not None:
            values["upscaler"] = v
        if (v := get("UPSCALER_WEIGHTS")) is not None:
            values["upscaler_weights"] = Path(v)
        if (v := get("CACHE")) is not None:
            values["cache_dir"] = Path(v)
        if (v := get("ALLOW_DOWNLOAD")) is not None:
            values["allow_download"] = v.lower() in ("1", "true", "yes", "on")
        if (v := get("DEVICE")) is not None:
            values["device"] = v
        if (v := get("THREADS")) is not None:
            values["threads"] = _int("SEARCHCORE_THREADS", v)
        if (v := get("UPSCALE")) is not None:
            values["upscale"] = UpscaleSettings(mode=v)
        if (v := get("FUSION")) is not None:
            values["fusion"] = v
        if (v := get("RUNTIME")) is not None:
            values["runtime"] = v
        serve = {}
        for f in fields(ServeSettings):
            if (v := get(f.name.upper())) is not None:
                serve[f.name] = _number(f"SEARCHCORE_{f.name.upper()}", v, f.type)
        if serve:
            values["serve"] = ServeSettings(**serve)
        names = {f.name for f in fields(cls)}
        for key, value in overrides.items():
            if key not in names:
                raise ConfigError(f"unknown setting {key!r}")
            if value is not None:
                values[key] = value
        return cls(**values)


def _number(name: str, value: str, kind: object) -> float | int:
    try:
        return int(value) if str(kind).startswith("int") else float(value)
    except ValueError:
        raise ConfigError(f"{name} must be a number, not {value!r}") from None


def _int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, not {value!r}") from None


def parse_column_map(items: list[str] | tuple[str, ...] | None) -> tuple[tuple[str, str], ...]:
    """``["title=productDisplayName", ...]`` -> ``(("title", "productDisplayName"), ...)``.

    The left side is the canonical column (``id``, ``title``, ``image``, ``category``,
    ``price``, ``colour`` or any other name), the right side the shop's own header.
    """
    pairs: list[tuple[str, str]] = []
    for item in items or ():
        item = item.strip()
        if not item:
            continue
        canonical, sep, source = item.partition("=")
        if not sep or not canonical.strip() or not source.strip():
            raise ConfigError(
                f"column mapping must look like canonical=source_column, not {item!r}"
            )
        pairs.append((canonical.strip(), source.strip()))
    canon = [c for c, _ in pairs]
    if len(set(canon)) != len(canon):
        raise ConfigError(f"column mapping names a canonical column twice: {', '.join(canon)}")
    return tuple(pairs)
