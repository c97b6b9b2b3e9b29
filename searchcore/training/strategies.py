"""Upscaling strategies to evaluate, named as on the command line (``never,bicubic,default,auto``).

Shared by ``searchcore eval`` and ``searchcore tune``; every named upscaler is built by the
core's one factory (:func:`searchcore.upscale.build_upscaler`), exactly as the app builds it.
"""

from __future__ import annotations

from searchcore.config import Settings
from searchcore.errors import ConfigError
from searchcore.training.evaluate import Strategy


def build_strategies(
    tokens: tuple[str, ...], settings: Settings, model_spec: str, fingerprint: str
) -> list[Strategy]:
    """``never`` (as uploaded), ``bicubic``, an upscaler name or folder (``default`` is the
    shipped one), and ``auto`` (the page's policy, with the measured verdict for this model's
    weights ``fingerprint``)."""
    from searchcore.upscale import BicubicUpscaler, UpscalePolicy, build_upscaler
    from searchcore.upscale.verdict import auto_rule, upscaler_sha256

    strategies: list[Strategy] = []
    named = []
    for tok in tokens:
        if tok == "never":
            strategies.append(Strategy("never"))
        elif tok == "bicubic":
            strategies.append(Strategy("bicubic", BicubicUpscaler(4)))
        elif tok != "auto":
            up = build_upscaler(settings.with_(upscaler=tok))
            named.append(up)
            strategies.append(Strategy(up.name, up))
    if "auto" in tokens:
        up = named[0] if named else build_upscaler(settings.with_(upscaler="default"))
        strategies.append(
            Strategy(
                "auto",
                up,
                UpscalePolicy(settings.upscale),
                skip_reason=auto_rule(model_spec, up.name, fingerprint, upscaler_sha256(up)),
            )
        )
    if not strategies:
        raise ConfigError("--upscalers names no strategy")
    names = [s.name for s in strategies]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:  # results are keyed by name: one would silently replace the other
        raise ConfigError(
            f"--upscalers names {', '.join(twice)} more than once (two folders with the same "
            "upscaler name?); train one with another --name"
        )
    return strategies
