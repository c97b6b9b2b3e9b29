"""``searchcore finetune``, ``tune`` and ``eval``: the training commands.

This module imports only argparse at the top, so ``searchcore --help`` stays fast; handlers
import the training package when they run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from searchcore.cli.common import (
    Handler,
    catalog_args,
    catalog_from_args,
    command_line,
    say,
    settings_from_args,
    split_option,
    training_options,
)


def add_commands(sub: argparse._SubParsersAction) -> dict[tuple[str, str | None], Handler]:
    ft = sub.add_parser("finetune", help="train a CLIP model on a catalog (contrastive)")
    catalog_args(ft)
    ft.add_argument("--out", type=Path, required=True, help="model folder to write")
    _finetune_options(ft)
    ft.add_argument(
        "--test-fraction",
        type=float,
        default=0.0,
        help="products never trained or validated on (what 'searchcore eval' tests on)",
    )
    split_option(ft)
    ft.add_argument("--val-fraction", type=float, default=0.1)
    training_options(ft)

    tn = sub.add_parser(
        "tune",
        help="the whole loop: split, finetune, index build, evaluate against the baselines, report",
    )
    catalog_args(tn)
    tn.add_argument(
        "--out",
        type=Path,
        required=True,
        help="run folder: model/, index/, eval/, report.{json,md}, plots",
    )
    _finetune_options(tn)
    tn.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="products held out from training and validation, to test on",
    )
    split_option(tn)
    tn.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the remaining products used for early stopping",
    )
    tn.add_argument(
        "--baselines",
        default="pixels,base",
        help="evaluated as they are: 'pixels', 'base' (the starting model) or model "
        "specs; comma-separated, '' for none",
    )
    tn.add_argument(
        "--wise",
        default="0.5",
        help="WiSE-FT mixing weights to evaluate "
        "(base-to-fine-tuned), comma-separated, '' for none",
    )
    tn.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="[NAME=]MODEL",
        help="another trained model to score on the same test split, e.g. "
        "'from scratch=runs/scratch/model' (repeatable)",
    )
    _eval_options(
        tn,
        conditions="shopper photos 20-60 px wide, and small blurry ones",
        query_attrs="gender,colour,category",
        similar_attrs="category,colour,gender",
        # the shipped "default" is trained for the shipped model; a fine-tuned one gets its
        # own (--upscaler-steps), scored first, next to the upscaler trained for pixels
        upscalers="never,bicubic,psnr,auto",
    )
    tn.add_argument("--no-index", action="store_true", help="skip building OUT/index")
    tn.add_argument(
        "--upscaler-steps",
        type=int,
        default=None,
        help="steps of the upscaler trained for the fine-tuned model (train-upscaler "
        "--objective retrieval; default: its measured recipe's); 0: train none",
    )
    training_options(tn)
    return _more_commands(sub)


def _finetune_options(ft: argparse.ArgumentParser) -> None:
    ft.add_argument(
        "--base",
        default="default",
        help="start from: 'default' (the shipped model), an open_clip NAME:TAG "
        "(fine-tuning), a model folder, or an architecture name (from scratch, "
        "e.g. sc-small)",
    )
    ft.add_argument("--epochs", type=int, default=10)
    ft.add_argument("--batch-size", type=int, default=64)
    ft.add_argument(
        "--lr",
        type=float,
        default=5e-4,
        help="peak learning rate (1e-5 for a pretrained ViT, ~5e-4 from scratch)",
    )
    ft.add_argument("--warmup-steps", type=int, default=50)
    ft.add_argument("--weight-decay", type=float, default=0.1)
    ft.add_argument(
        "--image-image-weight",
        type=float,
        default=1.0,
        help="weight of the clean-vs-shopper-photo loss (0 turns it off)",
    )
    ft.add_argument(
        "--text-attrs",
        default="",
        help="attribute columns for texts, comma-separated (default: every categorical column)",
    )
    ft.add_argument("--lock-image", action="store_true", help="freeze the image tower (LiT)")
    ft.add_argument("--lock-text", action="store_true", help="freeze the text tower")
    ft.add_argument(
        "--unlocked-groups",
        type=int,
        default=None,
        help="freeze all but the last N layer groups of each tower",
    )
    ft.add_argument("--crop-scale", type=float, default=0.7)
    ft.add_argument("--no-flip", action="store_true")
    ft.add_argument("--jitter", type=float, default=0.15, help="brightness/contrast jitter")
    ft.add_argument(
        "--hue-jitter",
        type=float,
        default=0.0,
        help="hue jitter (keep 0 when shoppers search by colour)",
    )
    ft.add_argument(
        "--shopper-strength",
        type=float,
        default=1.0,
        help="how degraded the shopper view gets (0-1)",
    )
    ft.add_argument(
        "--shopper-max-down",
        type=float,
        default=6.0,
        help="largest shrink factor of the shopper view (12: a 224 px photo becomes 19 px wide)",
    )
    ft.add_argument(
        "--attr-weight",
        type=float,
        default=0.0,
        help="weight of the attribute classification loss on image embeddings (0: off)",
    )
    ft.add_argument(
        "--attr-columns",
        default="",
        help="attribute columns to classify, comma-separated (default: the text's)",
    )
    ft.add_argument("--val-max-queries", type=int, default=300)
    ft.add_argument("--patience", type=int, default=3, help="epochs without improvement")
    ft.add_argument(
        "--low-res-epochs",
        type=int,
        default=0,
        help="train the first N epochs at --low-res px (convolutional towers; ~2x faster each)",
    )
    ft.add_argument("--low-res", type=int, default=64, help="size of the low-resolution epochs")
    ft.add_argument(
        "--freeze-groups",
        type=int,
        default=0,
        help="from the first full-size epoch, freeze the image tower's first N layer groups "
        "(timm's: stem, then blocks; 3 = a ResNet's stem and layer1)",
    )
    ft.add_argument("--max-steps", type=int, default=None)
    ft.add_argument("--seed", type=int, default=0)
    ft.add_argument("--fp32", action="store_true", help="store fp32 weights (default fp16)")
    ft.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="compute precision: auto uses bf16 autocast on GPUs and on CPUs with "
        "native bf16 (AVX512-BF16/AMX)",
    )


def _more_commands(sub: argparse._SubParsersAction) -> dict[tuple[str, str | None], Handler]:
    ev = sub.add_parser("eval", help="measure a model (and upscalers) on a catalog")
    catalog_args(ev)
    ev.add_argument("--model", default=None, help="model spec (default: the shipped model)")
    ev.add_argument("--out", type=Path, required=True, help="report folder")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument(
        "--test-fraction",
        type=float,
        default=1.0,
        help="share of the products the model never trained on to test on",
    )
    split_option(ev)
    _eval_options(
        ev,
        conditions="clean, x4, x4-blur, x2-jpeg, shopper",
        query_attrs="colour,pattern,category",
        similar_attrs="category,colour",
        upscalers="never,bicubic,default,auto",
    )
    ev.add_argument("--quality-images", type=int, default=100)
    ev.add_argument("--no-plots", action="store_true")
    ev.add_argument(
        "--write-verdict",
        action="store_true",
        help="store whether upscaling helps in the model folder "
        "(upscale_verdict.json), which 'auto' then follows",
    )
    training_options(ev, device="cpu")
    return {
        ("finetune", None): cmd_finetune,
        ("eval", None): cmd_eval,
        ("tune", None): cmd_tune,
    }


def _eval_options(
    p: argparse.ArgumentParser,
    *,
    conditions: str,
    query_attrs: str,
    similar_attrs: str,
    upscalers: str,
) -> None:
    """What ``eval`` and ``tune`` measure: upscaling strategies, query conditions, attributes."""
    p.add_argument(
        "--upscalers",
        default=upscalers,
        help="never, bicubic, auto, 'default' (the shipped upscaler, trained to find products "
        "with the shipped model), 'psnr' (the shipped one trained for pixels), a registered "
        "upscaler name or an upscaler folder; comma-separated",
    )
    p.add_argument(
        "--upscaler-weights",
        type=Path,
        default=None,
        help="weights for a registered upscaler name (e.g. ../shared/...pth)",
    )
    p.add_argument(
        "--condition",
        action="append",
        default=[],
        metavar="NAME[:SPEC]",
        help="query degradation, e.g. x4-blur:down=4,blur=1,jpeg=75 (repeatable; "
        f"default: {conditions})",
    )
    p.add_argument("--query-attrs", default=query_attrs)
    p.add_argument("--similar-attrs", default=similar_attrs)
    p.add_argument("--max-queries", type=int, default=1000)
    p.add_argument(
        "--text-queries",
        type=Path,
        default=None,
        help="fixed text query families (synonyms, paraphrases), a JSON file such as "
        "benchmarks/text_queries/fashion.json",
    )


def _csv(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def _finetune_config(args: argparse.Namespace, settings: Any) -> Any:
    from searchcore.training.finetune import FinetuneConfig

    return FinetuneConfig(
        base=args.base,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup_steps=args.warmup_steps,
        weight_decay=args.weight_decay,
        image_image_weight=args.image_image_weight,
        text_attrs=_csv(args.text_attrs),
        lock_image=args.lock_image,
        lock_text=args.lock_text,
        unlocked_groups=args.unlocked_groups,
        crop_scale=args.crop_scale,
        flip=not args.no_flip,
        jitter=args.jitter,
        hue_jitter=args.hue_jitter,
        shopper_strength=args.shopper_strength,
        shopper_max_down=args.shopper_max_down,
        attr_weight=args.attr_weight,
        attr_columns=_csv(args.attr_columns),
        test_fraction=args.test_fraction,
        split_by=args.split_by,
        val_fraction=args.val_fraction,
        val_max_queries=args.val_max_queries,
        patience=args.patience,
        low_res_epochs=args.low_res_epochs,
        low_res=args.low_res,
        freeze_groups=args.freeze_groups,
        max_steps=args.max_steps,
        seed=args.seed,
        device=args.device,
        half=not args.fp32,
        allow_download=settings.allow_download,
        precision=args.precision,
    )


def cmd_finetune(args: argparse.Namespace) -> int:
    from searchcore.training.finetune import finetune

    settings = settings_from_args(args)
    config = _finetune_config(args, settings)
    result = finetune(
        catalog_from_args(args),
        args.out,
        config,
        progress=not args.no_progress and sys.stderr.isatty(),
        say=say,
        command=command_line(),
        cache_dir=settings.cache_dir,
    )
    print(
        f"wrote {result.folder} ({result.steps} steps, best epoch {result.best_epoch}, "
        f"{result.seconds / 60:.1f} min)"
    )
    for k, v in result.val.items():
        print(f"  {k}: {v:.3f}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from searchcore.degrade import DEFAULT_CONDITIONS, parse_condition
    from searchcore.embed import weights_fingerprint
    from searchcore.embed.heads import heads_for
    from searchcore.service import make_embedder
    from searchcore.training.data import trained_rows
    from searchcore.training.evaluate import EvalConfig, evaluate
    from searchcore.training.report import write_report
    from searchcore.training.strategies import build_strategies
    from searchcore.upscale.verdict import write_verdict

    settings = settings_from_args(args)
    catalog = catalog_from_args(args)
    embedder = make_embedder(settings)
    conditions = tuple(map(parse_condition, args.condition)) or tuple(DEFAULT_CONDITIONS.items())
    config = EvalConfig(
        seed=args.seed,
        test_fraction=args.test_fraction,
        split_by=args.split_by,
        conditions=conditions,
        query_attrs=_csv(args.query_attrs),
        similar_attrs=_csv(args.similar_attrs),
        max_queries=args.max_queries,
        quality_images=args.quality_images,
        text_queries=_text_queries(args),
    )
    exclude, note = trained_rows(settings.model, catalog)
    heads, problem = heads_for(settings.model, embedder)  # scored when the folder has them
    say(f"model {settings.model}: {note}" + (f"; heads not scored: {problem}" if problem else ""))
    weights = weights_fingerprint(embedder)  # an int8 runtime's verdict is its weights'
    strategies = build_strategies(_csv(args.upscalers), settings, settings.model, weights)
    report = evaluate(
        catalog,
        embedder,
        strategies,
        config,
        exclude_rows=exclude,
        progress=say,
        heads=heads,
        verdict_applies=args.write_verdict,
    )
    report["model"] = {
        "spec": settings.model,
        "dim": embedder.dim,
        "fingerprint": embedder.fingerprint,
        "training_split": note,
    }
    report["command"] = command_line()
    paths = write_report(
        report, args.out, title=f"Evaluation of {settings.model}", plots=not args.no_plots
    )
    if args.write_verdict and "helps" in report.get("verdict", {}):
        where = write_verdict(settings.model, report["verdict"], weights)
        say(f"wrote {where}" if where else "--write-verdict needs a model folder; nothing written")
    print((Path(args.out) / "report.md").read_text(encoding="utf-8"))
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _text_queries(args: argparse.Namespace) -> tuple[dict, ...]:
    from searchcore.training.text_eval import load_text_queries

    return tuple(load_text_queries(args.text_queries)) if args.text_queries else ()


def _upscaler_config(steps: int | None) -> Any:
    """tune's upscaler: the measured defaults (its model and split come from finetune's)."""
    from dataclasses import replace

    from searchcore.errors import ConfigError
    from searchcore.training.sr_retrieval import RetrievalUpscalerConfig

    if steps is not None and steps < 0:
        raise ConfigError("--upscaler-steps must be >= 0 (0: train no upscaler)")
    if steps == 0:
        return None
    config = RetrievalUpscalerConfig(model="")
    return config if steps is None else replace(config, steps=steps)


def cmd_tune(args: argparse.Namespace) -> int:
    from searchcore.degrade import parse_condition
    from searchcore.training.tune import SHOPPER_CONDITIONS, TuneConfig, parse_floats, tune

    settings = settings_from_args(args)
    config = TuneConfig(
        finetune=_finetune_config(args, settings),
        baselines=_csv(args.baselines),
        wise=parse_floats(args.wise),
        compare=tuple(args.compare),
        upscalers=_csv(args.upscalers),
        conditions=tuple(parse_condition(c) for c in args.condition) or SHOPPER_CONDITIONS,
        query_attrs=_csv(args.query_attrs),
        similar_attrs=_csv(args.similar_attrs),
        max_queries=args.max_queries,
        text_queries=_text_queries(args),
        build_index=not args.no_index,
        upscaler=_upscaler_config(args.upscaler_steps),
    )
    summary = tune(
        catalog_from_args(args),
        args.out,
        config,
        settings,
        say=say,
        command=command_line(),
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    print((Path(args.out) / "report.md").read_text(encoding="utf-8"))
    print(f"wrote {args.out}/report.md, report.json, comparison.png; model {summary['model']}")
    return 0
