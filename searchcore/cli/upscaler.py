"""``searchcore train-upscaler``: a compact Real-ESRGAN upscaler trained on a shop's catalog,
for fidelity (``--objective pixels``) or to find products (``--objective retrieval``).

Handlers import the training package when they run, so ``searchcore --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from searchcore.cli.common import (
    Handler,
    catalog_args,
    catalog_from_args,
    command_line,
    say,
    settings_from_args,
    training_options,
)


def add_commands(sub: argparse._SubParsersAction) -> dict[tuple[str, str | None], Handler]:
    up = sub.add_parser("train-upscaler", help="train a compact Real-ESRGAN upscaler on a catalog")
    catalog_args(up)
    up.add_argument("--out", type=Path, required=True, help="model folder to write")
    up.add_argument(
        "--init",
        type=Path,
        default=None,
        help="start from these weights (.pth/.safetensors, e.g. realesr-general-x4v3."
        "pth); their shapes set the architecture",
    )
    # Flags left out take the objective's own recipe (RetrievalUpscalerConfig or
    # UpscalerTrainConfig: what was measured best for each), so no default is written twice.
    up.add_argument("--name", default=None, help="default: sc-compact-x4 / sc-retrieval-x4")
    up.add_argument("--num-feat", type=int, default=None, help="pixels: network width")
    up.add_argument("--num-conv", type=int, default=None, help="pixels: network depth")
    up.add_argument("--scale", type=int, default=None, choices=(2, 4))
    up.add_argument("--steps", type=int, default=None)
    up.add_argument("--batch-size", type=int, default=None)
    up.add_argument("--patch", type=int, default=None, help="pixels: training patch side")
    up.add_argument("--lr", type=float, default=None)
    up.add_argument("--warmup-steps", type=int, default=None)
    up.add_argument("--val-fraction", type=float, default=None)
    up.add_argument("--val-every", type=int, default=None)
    up.add_argument(
        "--pool-size",
        type=int,
        default=None,
        help="pixels: degraded pairs kept in memory (degrading is the slow part on a CPU)",
    )
    up.add_argument(
        "--refresh", type=int, default=None, help="pixels: pool pairs replaced per step"
    )
    up.add_argument("--seed", type=int, default=None)
    up.add_argument(
        "--objective",
        choices=("pixels", "retrieval"),
        default="pixels",
        help="pixels: L1 to the original under Real-ESRGAN's degradations (PSNR); retrieval: "
        "shopper-sized photos upscaled must find their product through the frozen --model",
    )
    up.add_argument(
        "--model",
        default=None,
        help="the embedder the retrieval objective trains for (frozen; default: the shipped one)",
    )
    up.add_argument("--min-width", type=int, default=None, help="retrieval: shopper photo widths")
    up.add_argument("--max-width", type=int, default=None)
    up.add_argument(
        "--pixel-weight", type=float, default=None, help="retrieval: weight of the L1 photo term"
    )
    up.add_argument(
        "--test-fraction",
        type=float,
        default=None,
        help="retrieval: products never trained on (finetune's and eval's test split)",
    )
    up.add_argument("--split-by", default=None, help="retrieval: newest by this column, or hash")
    up.add_argument(
        "--val-images", type=int, default=None, help="photos validated on (retrieval: the gallery)"
    )
    up.add_argument(
        "--portrait-share",
        type=float,
        default=None,
        help="retrieval: share of batches whose photos are 3:4 portraits (shop photos' shape)",
    )
    up.add_argument(
        "--plain-share",
        type=float,
        default=None,
        help="retrieval: share of batches of plain shrunk copies (not tilted, cropped or cast)",
    )
    up.add_argument(
        "--blur", type=float, default=None, help="retrieval: the strongest blur (sigma, px)"
    )
    up.add_argument("--jpeg", type=int, default=None, help="retrieval: the lowest JPEG quality")
    training_options(up)
    return {("train-upscaler", None): cmd_train_upscaler}


# the config fields each objective takes from the command line (flag = field, but --warmup-steps)
_SHARED = (
    "name",
    "init",
    "steps",
    "batch_size",
    "lr",
    "warmup",
    "val_fraction",
    "val_every",
    "val_images",
    "seed",
)
_PIXELS = ("num_feat", "num_conv", "scale", "patch", "pool_size", "refresh")
_RETRIEVAL = (
    "min_width",
    "max_width",
    "blur",
    "jpeg",
    "pixel_weight",
    "test_fraction",
    "split_by",
    "portrait_share",
    "plain_share",
)
_FLAG = {"warmup": "warmup_steps"}


def _given(args: argparse.Namespace, *tables: tuple[str, ...]) -> dict[str, object]:
    """The config fields the command line set (the others keep the objective's recipe)."""
    given = {field: getattr(args, _FLAG.get(field, field), None) for t in tables for field in t}
    return {field: value for field, value in given.items() if value is not None}


def cmd_train_upscaler(args: argparse.Namespace) -> int:
    from searchcore.training.upscaler import UpscalerTrainConfig, train_upscaler

    settings = settings_from_args(args)  # threads
    if args.objective == "retrieval":
        return _train_for_retrieval(args, settings.model)
    config = UpscalerTrainConfig(**_given(args, _SHARED, _PIXELS), device=args.device)  # type: ignore[arg-type]
    result = train_upscaler(
        catalog_from_args(args),
        args.out,
        config,
        progress=not args.no_progress and sys.stderr.isatty(),
        say=say,
        command=command_line(),
    )
    print(
        f"wrote {result.folder} ({result.steps} steps, best at {result.best_step}, "
        f"{result.seconds / 60:.1f} min)"
    )
    for name, v in result.val.items():
        print(
            f"  {name}: PSNR {v['PSNR']:.2f} dB (bicubic {v['PSNR_bicubic']:.2f}), "
            f"SSIM {v['SSIM']:.3f} (bicubic {v['SSIM_bicubic']:.3f})"
        )
    return 0


def _train_for_retrieval(args: argparse.Namespace, model: str) -> int:
    from searchcore.training.sr_retrieval import RetrievalUpscalerConfig, train_retrieval_upscaler

    config = RetrievalUpscalerConfig(model=model, **_given(args, _SHARED, _RETRIEVAL))  # type: ignore[arg-type]
    result = train_retrieval_upscaler(
        catalog_from_args(args), args.out, config, say=say, command=command_line()
    )
    print(
        f"wrote {result.folder} ({result.steps} steps, best at {result.best_step}, "
        f"{result.seconds / 60:.1f} min)"
    )
    return 0
