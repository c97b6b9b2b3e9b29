"""Small pieces the trainers share: seeding, the learning-rate schedule, the hardware line, the
image tower's kind and its layer groups."""

from __future__ import annotations

import math
import os
import platform
import random
from typing import Any

import numpy as np

from searchcore.errors import ConfigError


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (basicsr's degradations draw from the global generators)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def autocast_dtype(precision: str, device: str) -> Any:
    """The dtype to autocast to (None: plain fp32) for ``precision`` = fp32, bf16 or auto.

    ``auto`` picks bf16 on a GPU and on CPUs with native bf16 (AVX512-BF16 / AMX), where it
    roughly triples convolution throughput; elsewhere bf16 is emulated and slower than fp32.
    """
    import torch

    if precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"precision must be auto, fp32 or bf16, not {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16" or device.startswith("cuda"):
        return torch.bfloat16
    try:  # private helpers, present since torch 2.1; without them stay in fp32
        native = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except AttributeError:
        native = False
    return torch.bfloat16 if native else None


def lr_at(step: int, total: int, warmup: int, base: float, floor: float = 0.0) -> float:
    """Linear warm-up for ``warmup`` steps, then cosine decay from ``base`` to ``floor``."""
    if step < warmup:
        return base * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def hardware(device: str) -> str:
    import torch

    if device.startswith("cuda"):
        return f"GPU {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or platform.machine()
    return (
        f"CPU {cpu}, {os.cpu_count()} cores ({torch.get_num_threads()} torch threads), "
        f"torch {torch.__version__}"
    )


def count_params(module: Any, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def is_conv_tower(visual: Any) -> bool:
    """Whether ``visual`` is a timm tower (the project's ResNets): channels-last, any input size,
    layer groups to freeze."""
    from open_clip.timm_model import TimmModel

    return isinstance(visual, TimmModel)


def freeze_first_groups(visual: Any, n: int) -> int:
    """Stop training the first ``n`` layer groups of a timm image tower (timm's grouping: the
    stem, then each block); returns how many parameters stopped. Their gradients are no longer
    computed, so the backward pass ends above them."""
    from timm.models import group_parameters

    trunk = visual.trunk
    groups = group_parameters(trunk, trunk.group_matcher())
    stopped = 0
    for gid in sorted(groups)[:n]:
        for name in groups[gid]:
            param = trunk.get_parameter(name)
            param.requires_grad_(False)
            stopped += param.numel()
    return stopped
