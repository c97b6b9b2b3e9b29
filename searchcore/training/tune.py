"""``searchcore tune``: the shop owner's whole loop in one command.

    split -> finetune -> index build -> evaluate (next to the baselines) -> report

1. **Split** the catalog by product (hash of the id, ``seed``): ``test_fraction`` of the
   products are never trained or validated on; validation (early stopping) is drawn from the
   rest (:func:`.data.split_masks`).
2. **Fine-tune** (:func:`.finetune.finetune`) into ``OUT/model``. A finished model whose
   ``training.json`` records the same catalog and configuration is reused, so an interrupted
   run picks up after the training.
3. **Train an upscaler for the new model** (:mod:`.sr_retrieval`, ``upscaler``; None: skip)
   into ``OUT/upscaler``: shopper-sized photos of the training products, upscaled, must find
   their product through the frozen fine-tuned model. Reused like the model when finished for
   the same weights, catalog and configuration.
   **Build the index** of the *whole* catalog with the new model into ``OUT/index``, recording
   that upscaler: what ``searchcore search`` and the page then serve, without further flags.
4. **Evaluate** on the test products, with the same queries and upscaling strategies, the
   fine-tuned model and every comparison: raw pixels and the starting model as they are,
   weight-space ensembles of the two (WiSE-FT, ``wise``), and any other trained model folder
   (``compare``, e.g. a from-scratch run). Each gets ``OUT/eval/<name>/report.{json,md}``.
5. **Decide** whether upscaling helps the fine-tuned model (paired sign test on shrunk shopper
   photos, overall and per photo width) and store it as the model's ``upscale_verdict.json``,
   which ``auto`` follows.
6. **Report**: ``OUT/report.json``, ``OUT/report.md`` (one table, every variant) and plots.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from searchcore.catalog import Catalog
from searchcore.degrade import Degradation, parse_condition
from searchcore.embed.heads import heads_for
from searchcore.errors import ConfigError
from searchcore.training.data import HASH, TRAINING_FILE, split_masks
from searchcore.training.evaluate import EvalConfig, evaluate
from searchcore.training.finetune import FinetuneConfig, finetune
from searchcore.training.report import VARIANT_FINETUNED, headline, write_comparison
from searchcore.training.sr_retrieval import RetrievalUpscalerConfig

# Shopper photos of held-out products (see the issue of record): a slightly tilted, cropped,
# colour-cast photo shrunk to 20-60 px wide, blurred and saved as a low-quality JPEG; and the
# same size without the geometric changes, where upscalers can also be scored by PSNR.
SHOPPER_CONDITIONS: tuple[tuple[str, Degradation], ...] = tuple(
    parse_condition(c)
    for c in (
        # the headline: a shopper's photo at a shop photo's real 3:4 portrait shape, 60x80 px
        # (the square-squashed catalog photo as it was before: degrade.Degradation.aspect),
        # a little tilted, off-centre and soft
        "portrait-60x80:aspect=0.75,rotate=5,crop=0.9,cast=0.05,min_width=60,max_width=60,"
        "blur=0.5,jpeg=75",
        "shopper:rotate=8,crop=0.85,cast=0.08,min_width=20,max_width=60,blur=0.6,jpeg=50",
        "small-blurry:min_width=20,max_width=60,blur=0.8,jpeg=70",
    )
)


@dataclass(frozen=True)
class TuneConfig:
    finetune: FinetuneConfig = field(default_factory=lambda: FinetuneConfig(test_fraction=0.2))
    baselines: tuple[str, ...] = ("pixels", "base")  # "base": the starting model, untrained
    wise: tuple[float, ...] = (0.5,)  # theta = (1 - a) * base + a * fine-tuned
    compare: tuple[str, ...] = ()  # further model folders, e.g. a from-scratch run
    upscalers: tuple[str, ...] = ("never", "bicubic", "psnr", "auto")
    conditions: tuple[tuple[str, Degradation], ...] = SHOPPER_CONDITIONS
    query_attrs: tuple[str, ...] = ("gender", "colour", "category")
    similar_attrs: tuple[str, ...] = ("category", "colour", "gender")
    max_queries: int = 1000
    quality_images: int = 100
    text_queries: tuple[dict[str, Any], ...] = ()  # fixed text query families
    build_index: bool = True
    # the upscaler trained for the fine-tuned model (its model, seed and split come from
    # ``finetune``), scored beside the others, used by ``auto`` and recorded in the index
    upscaler: RetrievalUpscalerConfig | None = field(
        default_factory=lambda: RetrievalUpscalerConfig(model="")
    )

    def __post_init__(self) -> None:
        if not 0.0 < self.finetune.test_fraction < 1.0:
            raise ConfigError("tune needs a test split: test fraction strictly between 0 and 1")
        if any(not 0.0 <= a <= 1.0 for a in self.wise):
            raise ConfigError("WiSE-FT mixing weights must be in [0, 1]")


def tune(
    catalog: Catalog,
    out: str | Path,
    config: TuneConfig,
    settings: Any,
    *,
    say: Callable[[str], None] | None = None,
    command: str = "",
    progress: bool = False,
) -> dict[str, Any]:
    """Run the loop (module docstring); returns the comparison report (also written)."""
    from searchcore.training.strategies import build_strategies

    log = say or (lambda _m: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    timings: dict[str, float] = {}
    ft = config.finetune
    _, test = split_masks(catalog.df, ft.seed, ft.val_fraction, ft.test_fraction, ft.split_by)
    not_test = [i for i, t in enumerate(test) if not t]
    how = "a hash split" if ft.split_by == HASH else f"the newest by {ft.split_by}"
    log(
        f"split ({how}): {int(test.sum())} test products, {len(not_test)} for training and "
        "validation"
    )

    model_dir = out / "model"
    t0 = time.perf_counter()
    if _trained(model_dir, catalog, ft) is not None:
        log(f"{model_dir} is already trained with this catalog and configuration: reusing it")
        timings["finetune_s"] = json.loads((model_dir / TRAINING_FILE).read_text("utf-8"))[
            "seconds"
        ]
        timings["finetune_reused"] = True
    else:
        result = finetune(
            catalog,
            model_dir,
            ft,
            say=log,
            command=command,
            progress=progress,
            cache_dir=settings.cache_dir,
        )
        timings["finetune_s"] = round(result.seconds, 1)
    log(f"fine-tuning: {timings['finetune_s'] / 60:.1f} min")

    from searchcore.embed import load_embedder

    tuned = load_embedder(str(model_dir), device=settings.device)
    upscaler_dir = None
    if config.upscaler is not None:
        upscaler_dir = out / "upscaler"
        timings["upscaler_s"] = _train_upscaler(
            catalog, upscaler_dir, config, str(model_dir), tuned.fingerprint, log, command
        )
    if config.build_index:
        from searchcore.build import build_index

        t0 = time.perf_counter()
        built = build_index(
            catalog,
            tuned,
            out / "index",
            settings=settings.index,
            progress=progress,
            upscaler=upscaler_dir,
        )
        timings["index_s"] = round(time.perf_counter() - t0, 1)
        log(built.summary())

    variants = _variants(config, model_dir, tuned, out, settings, log)
    eval_cfg = EvalConfig(
        seed=ft.seed,
        test_fraction=1.0,
        split_by=ft.split_by,
        conditions=config.conditions,
        query_attrs=config.query_attrs,
        similar_attrs=config.similar_attrs,
        max_queries=config.max_queries,
        quality_images=config.quality_images,
        text_queries=config.text_queries,
    )
    from searchcore.training.report import write_report
    from searchcore.upscale.verdict import auto_rule, upscaler_sha256

    # The upscalers are built (their weights loaded) once; only ``auto``'s skip reason
    # depends on the model being scored.
    tokens = config.upscalers
    if upscaler_dir is not None:  # the first named upscaler is the one auto uses and judges
        plain = tuple(t for t in tokens if t in ("never", "bicubic"))
        tokens = (*plain, str(upscaler_dir), *(t for t in tokens if t not in plain))
    shared = build_strategies(tokens, settings, str(model_dir), tuned.fingerprint)
    cache: dict[Any, Any] = {}
    reports: dict[str, dict[str, Any]] = {}
    t0 = time.perf_counter()
    for name, (spec, embedder) in variants.items():
        log(f"evaluating {name} ({spec}) on {int(test.sum())} test products")
        strategies = [
            replace(
                s,
                skip_reason=auto_rule(
                    spec, s.upscaler.name, embedder.fingerprint, upscaler_sha256(s.upscaler)
                ),
            )
            if s.policy is not None
            else s
            for s in shared
        ]
        quality = (
            config.quality_images if not reports else 0
        )  # upscalers do not depend on the model
        rep = evaluate(
            catalog,
            embedder,
            strategies,
            replace(eval_cfg, quality_images=quality),
            exclude_rows=not_test,
            progress=log,
            cache=cache,
            heads=heads_for(spec, embedder)[0],
            verdict_applies=name == VARIANT_FINETUNED,  # tune stores its verdict below
        )
        rep["model"] = {"spec": spec, "dim": embedder.dim, "variant": name}
        write_report(rep, out / "eval" / _slug(name), title=f"Evaluation of {name}")
        reports[name] = rep
    timings["eval_s"] = round(time.perf_counter() - t0, 1)

    verdict = reports[VARIANT_FINETUNED].get("verdict") or {}
    if "helps" in verdict:
        from searchcore.upscale.verdict import write_verdict

        write_verdict(str(model_dir), verdict, tuned.fingerprint)
        log(f"auto upscaling for this model: {verdict['reason']}")
    timings["total_s"] = round(time.perf_counter() - started, 1)
    summary = {
        "format_version": 1,
        "command": command,
        "catalog": {"path": str(catalog.source), "sha256": catalog.sha256, "rows": len(catalog)},
        "split": {
            "seed": ft.seed,
            "test_fraction": ft.test_fraction,
            "val_fraction": ft.val_fraction,
            "by": ft.split_by,
            "test": int(test.sum()),
            "train_and_val": len(not_test),
        },
        "finetune": asdict(ft),
        "model": str(model_dir),
        "index": str(out / "index") if config.build_index else None,
        "upscaler": str(upscaler_dir) if upscaler_dir is not None else None,
        "timings": timings,
        "hardware": _hardware(settings),
        "auto_upscaling": verdict,
        "variants": {name: headline(r) for name, r in reports.items()},
        "order": list(reports),  # the JSON file's keys are sorted; this is the table's order
    }
    write_comparison(summary, out)
    return summary


def _trained(
    folder: Path, catalog: Catalog, config: Any, embedder: str | None = None
) -> dict[str, Any] | None:
    """``folder``'s training record when it was trained on this catalog with this
    configuration (the device aside) and, when given, for the ``embedder`` of this weights
    fingerprint; else None (train it)."""
    path = folder / TRAINING_FILE
    if not path.is_file():
        return None
    meta = json.loads(path.read_text(encoding="utf-8"))

    def plain(c: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in c.items() if k != "device"}

    same = (
        meta.get("catalog", {}).get("sha256") == catalog.sha256
        and plain(meta.get("config", {}))
        == plain(json.loads(json.dumps(asdict(config), default=str)))
        and (embedder is None or meta.get("embedder", {}).get("fingerprint") == embedder)
    )
    return meta if same else None


def _train_upscaler(
    catalog: Catalog,
    folder: Path,
    config: TuneConfig,
    model: str,
    fingerprint: str,
    log: Callable[[str], None],
    command: str,
) -> float:
    """Train (or reuse) the retrieval upscaler for the fine-tuned model; its seconds."""
    from searchcore.training.sr_retrieval import train_retrieval_upscaler

    ft = config.finetune
    assert config.upscaler is not None
    cfg = replace(
        config.upscaler,
        model=model,
        seed=ft.seed,
        val_fraction=ft.val_fraction,
        test_fraction=ft.test_fraction,
        split_by=ft.split_by,
    )
    meta = _trained(folder, catalog, cfg, embedder=fingerprint)
    if meta is not None:
        log(f"{folder} is already trained for this model, catalog and configuration: reusing it")
        return float(meta["seconds"])
    log(f"training an upscaler for the fine-tuned model ({cfg.steps} steps) into {folder}")
    result = train_retrieval_upscaler(catalog, folder, cfg, say=log, command=command)
    log(f"upscaler training: {result.seconds / 60:.1f} min")
    return round(result.seconds, 1)


def _variants(
    config: TuneConfig,
    model_dir: Path,
    tuned: Any,
    out: Path,
    settings: Any,
    log: Callable[[str], None],
) -> dict[str, tuple[str, Any]]:
    """name -> (spec, embedder), the fine-tuned model (already loaded) first."""
    from searchcore.embed import load_embedder

    base_spec = config.finetune.base
    found: dict[str, tuple[str, Any]] = {VARIANT_FINETUNED: (str(model_dir), tuned)}
    base = None
    for b in config.baselines:
        spec = base_spec if b == "base" else b
        name = {"pixels": "raw pixels", "base": f"{base_spec} (not fine-tuned)"}.get(b, b)
        # the seed makes an architecture name the very initialisation training started from
        emb = load_embedder(
            spec,
            device=settings.device,
            allow_download=settings.allow_download,
            cache_dir=settings.cache_dir,
            seed=config.finetune.seed,
        )
        found[name] = (spec, emb)
        if b == "base":
            base = emb
    for a in config.wise:
        if base is None:
            base = load_embedder(
                base_spec,
                device=settings.device,
                cache_dir=settings.cache_dir,
                allow_download=settings.allow_download,
                seed=config.finetune.seed,
            )
        folder = out / f"wise-{a:g}"
        try:
            wise_ft(base, tuned, a, folder, half=config.finetune.half)
        except ConfigError as exc:
            log(f"WiSE-FT {a:g} skipped: {exc}")
            continue
        found[f"WiSE-FT a={a:g}"] = (
            str(folder),
            load_embedder(str(folder), device=settings.device),
        )
    for item in config.compare:
        name, spec = _named(item)
        found[name] = (
            spec,
            load_embedder(
                spec,
                device=settings.device,
                cache_dir=settings.cache_dir,
                allow_download=settings.allow_download,
            ),
        )
    return found


def _named(item: str) -> tuple[str, str]:
    """``"NAME=SPEC"`` or a bare spec (named after its folder)."""
    name, sep, spec = item.partition("=")
    if sep and name and not Path(item).exists():
        return name, spec
    return (Path(item).name if Path(item).exists() else item), item


def wise_ft(base: Any, tuned: Any, alpha: float, folder: Path, *, half: bool = True) -> Path:
    """Weight-space ensemble (Wortsman et al., 2022): ``(1 - alpha) * base + alpha * tuned``,
    saved as a model folder. Both must be the same architecture."""
    import torch

    from searchcore.embed import ClipEmbedder, save_model

    if not isinstance(base, ClipEmbedder) or not isinstance(tuned, ClipEmbedder):
        raise ConfigError("both models must be CLIP models")
    a, b = base.model.state_dict(), tuned.model.state_dict()
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        raise ConfigError("the starting model and the fine-tuned one differ in architecture")
    mixed = {
        k: ((1 - alpha) * a[k].float() + alpha * b[k].float()).to(b[k].dtype)
        if torch.is_floating_point(b[k])
        else b[k]
        for k in b
    }
    model_cfg = json.loads((Path(tuned.spec) / "open_clip_config.json").read_text("utf-8"))[
        "model_cfg"
    ]
    model = copy.deepcopy(tuned.model)
    model.load_state_dict(mixed)
    emb = ClipEmbedder(
        model, tuned.transform, tuned.tokenizer, spec=str(folder), device=tuned.device
    )
    save_model(emb, folder, model_cfg, half=half)
    return folder


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name).strip("-").lower()


def _hardware(settings: Any) -> str:
    from searchcore.training.common import hardware

    return hardware(settings.device if settings.device != "auto" else "cpu")


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"expected comma-separated numbers, not {text!r}") from None


__all__ = ["SHOPPER_CONDITIONS", "TuneConfig", "tune", "wise_ft"]
