"""``searchcore train-upscaler``: a compact Real-ESRGAN generator trained on catalog photos.

The network is realesrgan's ``SRVGGNetCompact`` (the architecture of
``realesr-general-x4v3``), by default much smaller (32 features, 8 convolutions instead of 64
and 32: ~15x fewer multiply-adds) so that upscaling a query costs milliseconds on a CPU.
Training pairs are made on the fly: random patches of catalog photos, degraded by Real-ESRGAN's
two-stage synthetic pipeline (:mod:`.sr_degrade`). The loss is L1 only (Real-ESRNet): a GAN
and a perceptual loss would need a pretrained VGG that cannot be downloaded here, and the
evaluation measures fidelity (PSNR/SSIM) and retrieval, not perceived sharpness.

A model folder holds ``upscaler_config.json`` (architecture, its arguments, scale, the
weights' sha256), ``model.safetensors`` and a ``README.md`` model card;
the core loads it like any upscaler (``build_upscaler`` with ``--upscaler FOLDER``; the
shipped default is one), so a folder trained here is one the app can serve.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from searchcore.catalog import Catalog
from searchcore.console import progress_bar
from searchcore.degrade import DEFAULT_CONDITIONS, Degradation, degrade
from searchcore.embed import pick_device
from searchcore.errors import ConfigError, WeightsError
from searchcore.fsutil import atomic_write, file_sha256, write_json_atomic
from searchcore.training import metrics
from searchcore.training.common import count_params, hardware, lr_at, seed_everything
from searchcore.training.data import held_out_mask, load_photos
from searchcore.upscale import FOLDER_CONFIG

WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class UpscalerTrainConfig:
    name: str = "sc-compact-x4"
    num_feat: int = 32
    num_conv: int = 8
    scale: int = 4
    init: Path | None = None  # weights to start from; their shapes decide the architecture
    steps: int = 2000
    batch_size: int = 16
    patch: int = 128  # side of the clean training patch; the input is patch / scale
    lr: float = 5e-4
    warmup: int = 100
    weight_decay: float = 0.0
    val_fraction: float = 0.1
    val_every: int = 250
    val_conditions: tuple[str, ...] = ("x4", "x4-blur")
    val_images: int = 48
    # Real-ESRGAN's degradations cost far more than a step of the compact network on a CPU,
    # so pairs live in a pool (as Real-ESRGAN's own training queue): each step trains on a
    # random batch from it and replaces ``refresh`` of its pairs with fresh ones.
    pool_size: int = 1024
    refresh: int = 4
    seed: int = 0
    device: str = "auto"

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1 or self.val_every < 1:
            raise ConfigError("steps, batch size and validation interval must be positive")
        if self.pool_size < self.batch_size or not 0 <= self.refresh <= self.pool_size:
            raise ConfigError("the pair pool must hold at least one batch; refresh <= pool size")
        if self.patch % self.scale or self.patch < 8 * self.scale:
            raise ConfigError(f"patch must be a multiple of the scale and >= {8 * self.scale} px")
        for c in self.val_conditions:
            if c not in DEFAULT_CONDITIONS or DEFAULT_CONDITIONS[c].geometric:
                raise ConfigError(
                    f"validation condition {c!r} must be a non-geometric one of "
                    f"{', '.join(DEFAULT_CONDITIONS)}"
                )


@dataclass
class UpscalerTrainResult:
    folder: Path
    arch_kwargs: dict[str, Any]
    steps: int
    seconds: float
    best_step: int
    history: list[dict[str, float]] = field(default_factory=list)
    val: dict[str, dict[str, float]] = field(default_factory=dict)


def infer_srvgg_kwargs(state: dict[str, Any]) -> dict[str, Any]:
    """SRVGGNetCompact's arguments (without the scale) and the scale, from a state dict."""
    convs = sorted(
        (int(k.split(".")[1]), v)
        for k, v in state.items()
        if k.startswith("body.") and k.endswith(".weight") and v.ndim == 4
    )
    if len(convs) < 2:
        raise WeightsError("these weights are not an SRVGGNetCompact (too few body convolutions)")
    first, last = convs[0][1], convs[-1][1]
    out_ch = 3
    scale = round((last.shape[0] / out_ch) ** 0.5)
    if scale * scale * out_ch != last.shape[0]:
        raise WeightsError(f"cannot infer the scale from a last layer of {last.shape[0]} channels")
    has_prelu = any(v.ndim == 1 and k.startswith("body.") for k, v in state.items())
    if not has_prelu:
        raise WeightsError("only PReLU SRVGGNetCompact weights are supported")
    kwargs = {
        "num_in_ch": int(first.shape[1]),
        "num_out_ch": out_ch,
        "num_feat": int(first.shape[0]),
        "num_conv": len(convs) - 2,
        "act_type": "prelu",
    }
    return {**kwargs, "scale": scale}


def train_upscaler(
    catalog: Catalog,
    out: str | Path,
    config: UpscalerTrainConfig = UpscalerTrainConfig(),
    *,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
    command: str = "",
) -> UpscalerTrainResult:
    import torch

    from searchcore.training.sr_degrade import RealESRGANDegrader, SRDegradeConfig
    from searchcore.upscale import build_network, load_state_dict

    log = say or (lambda _m: None)
    started = time.perf_counter()
    seed_everything(config.seed)
    device = pick_device(config.device)
    init_state = load_state_dict(config.init) if config.init else None
    if init_state is not None:
        inferred = infer_srvgg_kwargs(init_state)
        scale = inferred.pop("scale")
        kwargs = inferred
    else:
        scale = config.scale
        kwargs = {
            "num_in_ch": 3,
            "num_out_ch": 3,
            "num_feat": config.num_feat,
            "num_conv": config.num_conv,
            "act_type": "prelu",
        }
    if config.patch % scale:
        raise ConfigError(f"patch {config.patch} is not a multiple of the scale {scale}")
    spec = srvgg_spec(config.name, kwargs, scale, sha256=None)
    net = build_network(spec)
    if init_state is not None:
        net.load_state_dict(init_state, strict=True)
    net = net.to(device).train()

    ids = catalog.df["id"].astype(str).tolist()
    held = held_out_mask(ids, config.val_fraction, config.seed)
    train_rows, photos, skipped = load_photos(catalog, [i for i, h in enumerate(held) if not h])
    val_rows, val_photos, _ = load_photos(
        catalog, [i for i, h in enumerate(held) if h][: config.val_images]
    )
    patch = min(config.patch, min(min(p.size) for p in photos) // scale * scale)
    log(
        f"{len(train_rows)} training photos ({len(skipped)} unreadable), {len(val_rows)} for "
        f"validation; {count_params(net)} parameters; {patch} px patches on {device}"
    )
    arrays = [torch.from_numpy(np.asarray(p, np.uint8).copy()).permute(2, 0, 1) for p in photos]
    degrader = RealESRGANDegrader(SRDegradeConfig(scale=scale))
    opt = torch.optim.AdamW(
        net.parameters(), lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99)
    )
    gen = torch.Generator().manual_seed(config.seed)
    history: list[dict[str, float]] = []
    best = (-float("inf"), 0, {k: v.detach().clone() for k, v in net.state_dict().items()})

    def fresh(n: int) -> tuple[Any, Any]:
        gts = [
            _patches(arrays, min(config.batch_size, n - i), patch, gen)
            for i in range(0, n, config.batch_size)
        ]
        return torch.cat(gts), torch.cat([degrader.degrade(g) for g in gts])

    log(f"making a pool of {config.pool_size} degraded training pairs")
    pool_gt, pool_lq = fresh(config.pool_size)
    bar = progress_bar(config.steps, "training upscaler", "step", progress)
    interval: list[float] = []
    ring = 0
    for step in range(config.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, config.steps, config.warmup, config.lr)
        if config.refresh:
            slots = (ring + torch.arange(config.refresh)) % config.pool_size
            pool_gt[slots], pool_lq[slots] = fresh(config.refresh)
            ring = int(slots[-1] + 1)
        pick = torch.randint(config.pool_size, (config.batch_size,), generator=gen)
        gt, lq = _dihedral(pool_gt[pick], pool_lq[pick], gen)
        gt, lq = gt.to(device), lq.to(device)
        loss = torch.nn.functional.l1_loss(net(lq), gt)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        interval.append(float(loss.item()))
        bar.set_postfix(loss=f"{loss.item():.4f}")
        bar.update(1)
        if (step + 1) % config.val_every == 0 or step + 1 == config.steps:
            val = validate(
                net.eval(), val_photos, val_rows, config.val_conditions, scale, config.seed
            )
            net.train()
            score = float(np.mean([v["PSNR"] for v in val.values()]))
            history.append(
                {"step": step + 1, "interval_loss": float(np.mean(interval)), "val_psnr": score}
            )
            log(f"step {step + 1}: L1 {np.mean(interval):.4f}, validation PSNR {score:.2f} dB")
            interval = []
            if score > best[0]:
                best = (
                    score,
                    step + 1,
                    {k: v.detach().clone() for k, v in net.state_dict().items()},
                )
    bar.close()
    net.load_state_dict(best[2])
    net = net.eval().cpu()
    final = validate(net, val_photos, val_rows, config.val_conditions, scale, config.seed)
    seconds = time.perf_counter() - started
    folder = Path(out)
    meta = {
        "command": command,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "catalog": {
            "path": str(catalog.source),
            "sha256": catalog.sha256,
            "rows": len(catalog),
            "train": len(train_rows),
            "val": len(val_rows),
        },
        "steps": config.steps,
        "best_step": best[1],
        "seconds": round(seconds, 1),
        "hardware": hardware(device),
        "parameters": count_params(net),
        "history": history,
        "val": final,
    }
    save_upscaler(net, folder, config.name, kwargs, scale, meta)
    return UpscalerTrainResult(folder, kwargs, config.steps, seconds, best[1], history, final)


def _patches(arrays: list[Any], n: int, size: int, gen: Any) -> Any:
    """``n`` random ``size`` crops (random photo, position, horizontal flip), floats in [0, 1]."""
    import torch

    out = []
    for i in torch.randint(len(arrays), (n,), generator=gen).tolist():
        a = arrays[i]
        _, h, w = a.shape
        y = int(torch.randint(h - size + 1, (1,), generator=gen))
        x = int(torch.randint(w - size + 1, (1,), generator=gen))
        crop = a[:, y : y + size, x : x + size]
        if torch.rand(1, generator=gen) < 0.5:
            crop = crop.flip(-1)
        out.append(crop)
    return torch.stack(out).float() / 255.0


def _dihedral(gt: Any, lq: Any, gen: Any) -> tuple[Any, Any]:
    """The same random flip/transpose of a whole batch of pairs (fresh views of pooled pairs)."""
    import torch

    k = int(torch.randint(8, (1,), generator=gen))
    if k & 1:
        gt, lq = gt.flip(-1), lq.flip(-1)
    if k & 2:
        gt, lq = gt.flip(-2), lq.flip(-2)
    if k & 4:
        gt, lq = gt.transpose(-1, -2), lq.transpose(-1, -2)
    return gt.contiguous(), lq.contiguous()


def run_network(net: Any, img: Image.Image) -> Image.Image:
    """Upscale one photo with a bare network (validation; the app goes through RealESRGANer)."""
    import torch

    x = torch.from_numpy(np.asarray(img.convert("RGB"), np.float32) / 255.0).permute(2, 0, 1)
    with torch.inference_mode():
        y = net(x[None].to(next(net.parameters()).device))[0].clamp(0, 1)
    return Image.fromarray((y.permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8))


def validate(
    net: Any,
    photos: list[Image.Image],
    rows: list[int],
    conditions: tuple[str, ...],
    scale: int,
    seed: int,
) -> dict[str, dict[str, float]]:
    """Mean PSNR/SSIM of the network and of bicubic against the originals, per condition."""
    out: dict[str, dict[str, float]] = {}
    for ci, name in enumerate(conditions):
        d: Degradation = DEFAULT_CONDITIONS[name]
        p_net, p_bic, s_net, s_bic = [], [], [], []
        for img, row in zip(photos, rows, strict=True):
            low = degrade(img, d, np.random.default_rng([seed, ci, row]))
            for fn, ps, ss in (
                (lambda x: run_network(net, x), p_net, s_net),
                (
                    lambda x: x.resize(
                        (x.width * scale, x.height * scale), Image.Resampling.BICUBIC
                    ),
                    p_bic,
                    s_bic,
                ),
            ):
                hi = fn(low)
                if hi.size != img.size:
                    hi = hi.resize(img.size, Image.Resampling.BICUBIC)
                ps.append(metrics.psnr(np.asarray(hi), np.asarray(img)))
                ss.append(metrics.ssim(np.asarray(hi), np.asarray(img)))
        out[name] = {
            "PSNR": float(np.mean(p_net)),
            "PSNR_bicubic": float(np.mean(p_bic)),
            "SSIM": float(np.mean(s_net)),
            "SSIM_bicubic": float(np.mean(s_bic)),
        }
    return out


# ----------------------------------------------------------------------------- model folders


def srvgg_spec(
    name: str, kwargs: dict[str, Any], scale: int, sha256: str | None, description: str = ""
) -> Any:
    from searchcore.upscale import UpscalerSpec

    return UpscalerSpec(
        name=name,
        arch="srvgg",
        arch_kwargs=dict(kwargs),
        scale=scale,
        url=None,
        sha256=sha256,
        filename=WEIGHTS_FILE,
        description=description,
    )


def save_upscaler(
    net: Any,
    folder: Path,
    name: str,
    kwargs: dict[str, Any],
    scale: int,
    meta: dict[str, Any],
    card: str | None = None,
) -> Path:
    """Write weights (fp32 safetensors: the compact model is a few hundred KB), config, card."""
    from safetensors.torch import save_file

    from searchcore.training.cards import upscaler_card

    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    atomic_write(folder / WEIGHTS_FILE, lambda tmp: save_file(state, str(tmp)))
    config = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "arch": "srvgg",
        "arch_kwargs": kwargs,
        "scale": scale,
        "weights": WEIGHTS_FILE,
        "sha256": file_sha256(folder / WEIGHTS_FILE),
    }
    write_json_atomic(folder / FOLDER_CONFIG, config)
    write_json_atomic(folder / "training.json", meta)
    (folder / "README.md").write_text(card or upscaler_card(config, meta), encoding="utf-8")
    return folder
