"""Whether upscaling helps a model: measured by ``searchcore eval``, kept next to the model.

``searchcore eval --write-verdict`` stores ``upscale_verdict.json`` in the model folder:
which upscaler was measured, whether it raised exact-product Recall@1 on shrunk queries, a
one-line reason, and the fingerprint of the weights it was measured with. ``auto`` upscaling
reads it through :func:`auto_rule` and skips an upscaler that was measured not to help, saying
why; where the verdict was measured per photo width (``bands``), ``auto`` upscales a photo in a
width band where upscaling measurably helped, skips it in one where it measurably hurt (the
crossover), and elsewhere follows the overall verdict. A verdict measured for other
weights (the folder was trained again) or that does not say which (written before verdicts named
their weights) is stale: ``auto`` skips upscaling and says to measure again. Reading it imports
nothing heavy.
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


def auto_rule(
    model_spec: str, upscaler_name: str, fingerprint: str, upscaler_sha256: str | None = None
) -> AutoRule | None:
    """What ``auto`` does with this upscaler for this model (weights ``fingerprint``), photo by
    photo: a function of the photo's width that says why not to upscale it (None: upscale).
    None when the model folder has no verdict for this upscaler."""
    v = read_verdict(model_spec)
    if not v or v.get("upscaler") != upscaler_name:
        return None
    return AutoRule(v, fingerprint, upscaler_sha256)


class AutoRule:
    """``rule(width)``: why ``auto`` should not upscale a photo that wide (None: upscale it);
    ``rule.why(width)``: what was measured that makes it upscale one (for the page's text)."""

    def __init__(
        self, verdict: dict[str, Any], fingerprint: str, upscaler_sha256: str | None = None
    ) -> None:
        self.verdict, self.fingerprint = verdict, fingerprint
        self.upscaler_sha256 = upscaler_sha256

    def __call__(self, width: int) -> str | None:
        measured = self.verdict.get("upscaler_sha256")
        if measured and self.upscaler_sha256 and measured != self.upscaler_sha256:
            return (
                f"upscaling skipped: the model folder's upscaling verdict was measured with "
                f"other weights of {self.verdict.get('upscaler')}; measure again with "
                "`searchcore eval --write-verdict`"
            )
        return _skip(self.verdict, self.fingerprint, width)

    def why(self, width: int) -> str:
        band = _band(self.verdict, width)
        if band is not None and band.get("helps"):
            return (
                f"measured to help this model at {band.get('label')} "
                f"({float(band.get('delta_R@1', 0)):+.3f} Recall@1, {band.get('gained')} "
                f"queries gained, {band.get('lost')} lost, p={float(band.get('p', 1)):.2f})"
            )
        return f"measured to help this model: {self.verdict.get('reason', 'see its verdict')}"


def auto_skip_reason(
    model_spec: str, upscaler_name: str, fingerprint: str, width: int | None = None
) -> str | None:
    """Why ``auto`` should not upscale a photo ``width`` px wide (None: any width, the overall
    verdict) for this model with this upscaler, or None."""
    rule = auto_rule(model_spec, upscaler_name, fingerprint)
    return rule(-1 if width is None else width) if rule is not None else None


def _skip(v: dict[str, Any], fingerprint: str, width: int) -> str | None:
    if v.get("fingerprint") != fingerprint:
        return (
            "upscaling skipped: the model folder's upscaling verdict was measured for other "
            "weights; measure again with `searchcore eval --write-verdict`"
        )
    band = _band(v, width)  # the measured crossover, where a band tells
    if band is not None and band.get("helps"):
        return None
    if band is not None and band.get("hurts"):
        return (
            f"upscaling skipped: at {width} px wide it lowers this model's retrieval "
            f"({band.get('label')}: {band.get('gained')} queries gained, "
            f"{band.get('lost')} lost, p={float(band.get('p', 1)):.2f})"
        )
    # neither (too few photos of this width to tell on their own): the overall verdict
    if v.get("helps") is False:
        return f"upscaling skipped: {v.get('reason', 'it does not help this model')}"
    return None


def _band(v: dict[str, Any], width: int) -> dict[str, Any] | None:
    """The verdict's width band a photo ``width`` px wide falls in, if measured there."""
    for band in v.get("bands") or []:
        if isinstance(band, dict) and band.get("lo", 0) <= width < band.get("hi", 0):
            return band
    return None


def upscaler_sha256(upscaler: Any) -> str | None:
    """The sha256 of an upscaler's weights, where it has one (a verdict is bound to it)."""
    sha = getattr(getattr(upscaler, "spec", None), "sha256", None)
    return sha if isinstance(sha, str) else None
