"""Model specs (``--model``) and the architectures this package registers with open_clip."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchcore.demo.assets import DEFAULT_MODEL_DIR
from searchcore.errors import ConfigError

PACKAGE_CONFIGS = Path(__file__).resolve().parents[1] / "model_configs"
DEFAULT_SEED = 0

_registry_lock = threading.Lock()
_registered: set[str] = set()


@dataclass(frozen=True)
class ModelSpec:
    """A parsed ``--model`` value."""

    kind: str  # "arch" | "random" | "pretrained" | "hub" | "local"
    name: str  # architecture name, hub id or folder
    tag: str | None = None
    raw: str = ""

    @classmethod
    def parse(cls, spec: str) -> ModelSpec:
        """Parse a spec. ``arch`` (a bare architecture) parses, but only training starts from
        one: :func:`searchcore.embed.load_embedder` wants weights (a tag, a folder, the hub)
        or an explicit ``random:ARCH``."""
        raw = spec.strip()
        if not raw:
            raise ConfigError("empty model spec")
        if raw == "default":
            if not (DEFAULT_MODEL_DIR / "open_clip_config.json").is_file():
                raise ConfigError(
                    "the shipped model (--model default) is not installed with this copy of "
                    f"searchcore (looked in {DEFAULT_MODEL_DIR}); reinstall the package, or "
                    "pass --model with a model folder or a pretrained tag (ViT-B-32:openai)"
                )
            return cls("local", str(DEFAULT_MODEL_DIR), raw=raw)
        if raw.startswith("random:"):
            name = raw[len("random:") :].strip()
            if not name or ":" in name or "/" in name:
                raise ConfigError(f"random:ARCH needs an architecture name, not {raw!r}")
            return cls("random", name, raw=raw)
        if raw.startswith("hf-hub:"):
            return cls("hub", raw[len("hf-hub:") :], raw=raw)
        if raw.startswith("local-dir:"):
            return cls("local", raw[len("local-dir:") :], raw=raw)
        if "/" in raw or raw.startswith(".") or Path(raw).is_dir():
            return cls("local", raw, raw=raw)
        name, _, tag = raw.partition(":")
        return cls("pretrained" if tag else "arch", name, tag or None, raw=raw)


def recorded_spec(spec: str) -> str:
    """A spec an index manifest recorded, as :func:`~searchcore.embed.load_embedder` takes it
    now: indexes built before ``random:ARCH`` was required recorded a bare architecture, and
    that meant random weights (the fingerprint check still proves they are the same)."""
    try:
        parsed = ModelSpec.parse(spec)
    except ConfigError:
        return spec  # loading says what is wrong
    return f"random:{parsed.name}" if parsed.kind == "arch" else spec


def register_architecture(
    path_or_config: str | Path | dict[str, Any], name: str | None = None
) -> str:
    """Make an open_clip JSON config available by name; returns the name."""
    import open_clip
    from open_clip import factory

    with _registry_lock:
        if isinstance(path_or_config, dict):
            if not name:
                raise ConfigError("an inline model config needs a name")
            factory._MODEL_CONFIGS[name] = path_or_config  # the registry open_clip reads
            _registered.add(name)
            return name
        path = Path(path_or_config)
        open_clip.add_model_config(path)
        names = [p.stem for p in (path.glob("*.json") if path.is_dir() else [path])]
        _registered.update(names)
        return name or names[0]


def registered_architectures() -> list[str]:
    """The architectures this package registered with open_clip (sorted)."""
    with _registry_lock:
        return sorted(_registered)


def ensure_package_configs() -> None:
    """Register this package's architectures (``model_configs/*.json``) once."""
    if not _registered.issuperset(p.stem for p in PACKAGE_CONFIGS.glob("*.json")):
        register_architecture(PACKAGE_CONFIGS)


def model_config(name: str) -> dict[str, Any]:
    """The open_clip config of a registered architecture (for :func:`save_model`)."""
    import open_clip

    ensure_package_configs()
    cfg = open_clip.get_model_config(name)
    if cfg is None:
        raise ConfigError(f"unknown model architecture {name!r}")
    return dict(cfg)
