"""Whether upscaling helps a model: measured by ``searchcore eval``, kept next to the model.

``searchcore eval --write-verdict`` stores ``upscale_verdict.json`` in the model folder:
which upscaler was measured, whether it raised exact-product Recall@1 on shrunk queries, a
one-line reason, and the fingerprint of the weights it was measured with. ``auto`` upscaling
reads it through :func:`auto_skip_reason` and skips an upscaler that was measured not to help,
saying why. A verdict measured for other weights (the folder was trained again) or that does not
say which (written before verdicts named their weights) is stale: ``auto`` skips upscaling and
says to measure again. Reading it imports nothing heavy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from searchcore.embed import ModelSpec
from searchcore.fsutil import read_json, write_json_atomic

VERDICT_FILE = "upscale_verdict.json"


def model_folder(model_spec: str) -> Path | None:
    spec = ModelSpec.parse(model_spec)
    return Path(spec.name) if spec.kind == "local" else None


def read_verdict(model_spec: str) -> dict[str, Any] | None:
    folder = model_folder(model_spec)
    path = folder / VERDICT_FILE if folder else None
    if path is None or not path.is_file():
        return None
    try:
        data = read_json(path, 1 << 20)
    except (OSError, ValueError):
        return None  # a damaged verdict only costs the optimisation, never a search
    return data if isinstance(data, dict) else None


def write_verdict(model_spec: str, verdict: dict[str, Any], fingerprint: str) -> Path | None:
    """Keep ``verdict`` in the model folder, bound to the weights it was measured with."""
    folder = model_folder(model_spec)
    if folder is None:
        return None
    write_json_atomic(folder / VERDICT_FILE, {**verdict, "fingerprint": fingerprint})
    return folder / VERDICT_FILE


def auto_skip_reason(model_spec: str, upscaler_name: str, fingerprint: str) -> str | None:
    """Why ``auto`` should not upscale for this model (weights ``fingerprint``) with this
    upscaler, or None."""
    v = read_verdict(model_spec)
    if not v or v.get("upscaler") != upscaler_name:
        return None
    if v.get("fingerprint") != fingerprint:
        return (
            "upscaling skipped: the model folder's upscaling verdict was measured for other "
            "weights; measure again with `searchcore eval --write-verdict`"
        )
    if v.get("helps") is False:
        return f"upscaling skipped: {v.get('reason', 'it does not help this model')}"
    return None
