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
    up.add_argument("--name", default="sc-compact-x4")
    up.add_argument("--num-feat", type=int, default=32)
    up.add_argument("--num-conv", type=int, default=8)
    up.add_argument("--scale", type=int, default=4, choices=(2, 4))
    up.add_argument("--steps", type=int, default=2000)
    up.add_argument("--batch-size", type=int, default=16)
    up.add_argument("--patch", type=int, default=128)
    up.add_argument("--lr", type=float, default=5e-4)
    up.add_argument("--warmup-steps", type=int, default=100)
    up.add_argument("--val-fraction", type=float, default=0.1)
    up.add_argument("--val-every", type=int, default=250)
    up.add_argument(
        "--pool-size",
        type=int,
        default=1024,
        help="degraded pairs kept in memory (degrading is the slow part on a CPU)",
    )
    up.add_argument("--refresh", type=int, default=4, help="pool pairs replaced per step")
    up.add_argument("--seed", type=int, default=0)
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
    up.add_argument("--min-width", type=int, default=20, help="retrieval: shopper photo widths")
    up.add_argument("--max-width", type=int, default=60)
    up.add_argument(
        "--pixel-weight", type=float, default=0.1, help="retrieval: weight of the L1 photo term"
    )
    up.add_argument(
        "--test-fraction",
        type=float,
        default=0.2,
        help="retrieval: products never trained on (finetune's and eval's test split)",
    )
    up.add_argument("--split-by", default="id", help="retrieval: newest by this column, or hash")
    up.add_argument(
        "--val-images", type=int, default=300, help="retrieval: validation products (gallery)"
    )
    up.add_argument(
        "--portrait-share",
        type=float,
        default=0.5,
        help="retrieval: share of batches whose photos are 3:4 portraits (shop photos' shape)",
    )
    training_options(up)
    return {("train-upscaler", None): cmd_train_upscaler}


def cmd_train_upscaler(args: argparse.Namespace) -> int:
    from searchcore.training.upscaler import UpscalerTrainConfig, train_upscaler

    settings = settings_from_args(args)  # threads
    if args.objective == "retrieval":
        return _train_for_retrieval(args, settings.model)
    config = UpscalerTrainConfig(
        name=args.name,
        num_feat=args.num_feat,
        num_conv=args.num_conv,
        scale=args.scale,
        init=args.init,
        steps=args.steps,
        batch_size=args.batch_size,
        patch=args.patch,
        lr=args.lr,
        warmup=args.warmup_steps,
        val_fraction=args.val_fraction,
        val_every=args.val_every,
        pool_size=args.pool_size,
        refresh=args.refresh,
        seed=args.seed,
        device=args.device,
    )
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

    name = args.name if args.name != "sc-compact-x4" else "sc-retrieval-x4"
    config = RetrievalUpscalerConfig(
        model=model,
        name=name,
        init=args.init,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        warmup=args.warmup_steps,
        min_width=args.min_width,
        max_width=args.max_width,
        pixel_weight=args.pixel_weight,
        val_fraction=args.val_fraction,
        test_fraction=args.test_fraction,
        split_by=args.split_by,
        val_images=args.val_images,
        portrait_share=args.portrait_share,
        val_every=args.val_every,
        seed=args.seed,
    )
    result = train_retrieval_upscaler(
        catalog_from_args(args), args.out, config, say=say, command=command_line()
    )
    print(
        f"wrote {result.folder} ({result.steps} steps, best at {result.best_step}, "
        f"{result.seconds / 60:.1f} min)"
    )
    return 0
