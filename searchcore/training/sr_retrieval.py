"""``searchcore train-upscaler --objective retrieval``: an upscaler trained to find products.

Upscalers trained for PSNR (or for looks) invent texture that moves a photo away from its
product. Here the loss is the search's own (task-driven super-resolution, as SR4IR, CVPR 2024,
puts the recognition network's features in the SR loss): a shopper-sized copy of a catalog photo
(20-60 px wide, tilted, cropped, from clean to blurred and JPEG'd, as :mod:`searchcore.degrade`
makes shoppers' photos) goes through the upscaler, then through the **frozen** embedder, and
must land on its own product's embedding of the catalog photo, closer than on the other
products of the batch (InfoNCE, plus ``1 - cos``), with a small L1 term against the catalog
photo so the output still looks like a photo for the page's before/after. The embedder never
changes (its weights' fingerprint is recorded: the upscaler is bound to it, see
:mod:`searchcore.upscale.verdict`). It trains on ``finetune``'s split: the test products (the
newest, by default) are never seen, so ``eval`` on them is fair.

Validation: exact-product Recall@1 of shopper-sized copies of the validation products against
their catalog photos, upscaled by the network, next to the photos as they are; the best step is
kept (ties, common on a small shop's saturated gallery, to the higher mean cosine between the
upscaled photos and their products).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from searchcore.catalog import Catalog
from searchcore.degrade import Degradation, degrade
from searchcore.errors import ConfigError
from searchcore.training.common import count_params, hardware, lr_at, seed_everything
from searchcore.training.data import load_photos, split_masks


@dataclass(frozen=True)
class RetrievalUpscalerConfig:
    model: str  # the frozen embedder (a model spec), the one the index serves
    name: str = "sc-retrieval-x4"
    init: Path | None = None  # weights to start from (default: the PSNR-trained "psnr")
    # the recipe measured on the real catalog (README, "Upscaling for retrieval"): 1,000 steps
    # from the PSNR-trained upscaler, 19 min on 2 CPU cores for a ResNet-18 embedder at 96 px
    steps: int = 1000
    batch_size: int = 24
    lr: float = 2e-4
    warmup: int = 30
    min_width: int = 20  # shopper photo widths trained on
    max_width: int = 60
    blur: float = 0.6  # the strongest blur (sigma) and lowest JPEG quality; each batch draws
    jpeg: int = 60  # its own between these and a clean photo (blur 0, JPEG 95), see shopper_photo
    portrait_share: float = 0.5  # batches of 3:4 portraits (the shop's own shape restored)
    # batches of plain shrunk copies, neither tilted, cropped nor cast (a thumbnail or a
    # screenshot: eval's x4 conditions); 0 on the real catalog's measured recipe
    plain_share: float = 0.0
    rotate: float = 8.0  # ... tilted, cropped and colour-cast as a shopper's photo is
    crop: float = 0.85
    cast: float = 0.08
    temperature: float = 0.05  # InfoNCE over the batch
    pixel_weight: float = 0.05  # L1 against the catalog photo, so the output stays a photo
    val_fraction: float = 0.1
    test_fraction: float = 0.2  # the newest products (finetune's split): never trained on
    split_by: str = "id"
    val_images: int = 800  # a gallery of 300 saturated (0.97-0.98): too easy to pick a step
    val_every: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.portrait_share <= 1 and 0 <= self.plain_share <= 1):
            raise ConfigError("the shares of portrait and plain batches must be between 0 and 1")
        if not (0 <= self.blur <= 10 and 1 <= self.jpeg <= 95):
            raise ConfigError("the strongest blur must be 0-10 px and the lowest JPEG 1-95")
        if not 8 <= self.min_width <= self.max_width:
            raise ConfigError("shopper widths must satisfy 8 <= min width <= max width")
        if self.steps < 1 or self.batch_size < 2 or self.val_every < 1:
            raise ConfigError("steps >= 1, batch size >= 2 (InfoNCE), validation interval >= 1")
        if self.pixel_weight < 0 or self.temperature <= 0:
            raise ConfigError("the pixel weight must be >= 0 and the temperature > 0")


def shopper_photo(
    img: Image.Image,
    width: int,
    config: RetrievalUpscalerConfig,
    rng: Any,
    aspect: float = 0.0,
    strength: float = 1.0,
    plain: bool = False,
) -> Any:
    """A shopper's photo of ``img``, ``width`` px wide; ``strength`` in [0, 1] goes from a
    clean small photo (no blur, JPEG 95) to the config's blurriest, most compressed one. Trained
    on full strength only, an upscaler learns to sharpen every photo, and over-sharpens clean
    small ones (measured on the demo shop: -0.040 Recall@1 on crisp 48 px copies, p < 0.001).
    ``plain``: only shrunk, blurred and compressed, in the catalog photo's own frame."""
    d = Degradation(
        aspect=aspect,
        rotate=0.0 if plain else config.rotate,
        crop=1.0 if plain else config.crop,
        cast=0.0 if plain else config.cast,
        min_width=width,
        max_width=width,
        blur=round(strength * config.blur, 3),
        jpeg=round(95 - strength * (95 - config.jpeg)),
    )
    return degrade(img, d, rng)


def _tensor(imgs: list[Image.Image]) -> Any:
    import torch

    arr = np.stack([np.asarray(i.convert("RGB"), np.float32) / 255.0 for i in imgs])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


class FrozenEmbedder:
    """The embedder's image tower as a differentiable function of ``[0, 1]`` pixels, frozen:
    the photo is squashed to the model's square (how every photo reaches it) and normalised."""

    def __init__(self, embedder: Any) -> None:
        import torch

        self.model = embedder.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        visual = self.model.visual
        mean = getattr(visual, "image_mean", None) or (0.48145466, 0.4578275, 0.40821073)
        std = getattr(visual, "image_std", None) or (0.26862954, 0.26130258, 0.27577711)
        self.mean = torch.tensor(mean).view(1, 3, 1, 1)
        self.std = torch.tensor(std).view(1, 3, 1, 1)
        self.size = int(embedder.image_size)

    def __call__(self, pixels: Any) -> Any:
        import torch.nn.functional as F

        x = F.interpolate(
            pixels,
            size=(self.size, self.size),
            mode="bilinear",
            antialias=True,
            align_corners=False,
        )
        return F.normalize(self.model.encode_image((x - self.mean) / self.std), dim=-1)


def train_retrieval_upscaler(
    catalog: Catalog,
    out: str | Path,
    config: RetrievalUpscalerConfig,
    *,
    say: Callable[[str], None] | None = None,
    command: str = "",
) -> Any:
    import torch
    import torch.nn.functional as F

    from searchcore.embed import load_embedder
    from searchcore.training.upscaler import (
        UpscalerTrainResult,
        infer_srvgg_kwargs,
        save_upscaler,
        srvgg_spec,
    )
    from searchcore.upscale import PSNR_UPSCALER_DIR, build_network, load_state_dict

    log = say or (lambda _m: None)
    started = time.perf_counter()
    seed_everything(config.seed)
    embedder = load_embedder(config.model)
    if not hasattr(embedder, "model"):
        raise ConfigError(f"{config.model} is not a CLIP model: there is no embedder to train for")
    frozen = FrozenEmbedder(embedder)
    init = config.init or (PSNR_UPSCALER_DIR / "model.safetensors")
    state = load_state_dict(init)
    kwargs = infer_srvgg_kwargs(state)
    scale = kwargs.pop("scale")
    net = build_network(srvgg_spec(config.name, kwargs, scale, sha256=None))
    net.load_state_dict(state, strict=True)
    net.train()

    held, test = split_masks(
        catalog.df, config.seed, config.val_fraction, config.test_fraction, config.split_by
    )
    train = [i for i in range(len(catalog)) if not (held[i] or test[i])]
    rows, photos, skipped = load_photos(catalog, train)
    val_rows, val_photos, _ = load_photos(
        catalog, [i for i, h in enumerate(held) if h][: config.val_images]
    )
    log(
        f"{len(rows)} training photos ({len(skipped)} unreadable), {len(val_rows)} for "
        f"validation; frozen embedder {config.model}; {count_params(net)} upscaler parameters"
    )
    batch = min(config.batch_size, len(photos))  # a small shop: every photo in each batch
    if batch < 2:
        raise ConfigError(f"{len(photos)} training photos: the retrieval loss needs at least 2")
    targets = torch.from_numpy(embedder.embed_images(photos))  # the catalog photos' embeddings
    val_targets = embedder.embed_images(val_photos)
    rng = np.random.default_rng(config.seed)
    val_widths = rng.integers(config.min_width, config.max_width + 1, len(val_photos))
    val_strength = rng.random(len(val_photos))
    val_plain = np.random.default_rng([config.seed, 8]).random(len(val_photos)) < config.plain_share
    val_low = [
        shopper_photo(
            p,
            int(w),
            config,
            np.random.default_rng([config.seed, 9, r]),
            strength=float(t),
            plain=q,
        )
        for p, w, r, t, q in zip(
            val_photos, val_widths, val_rows, val_strength, val_plain, strict=True
        )
    ]
    never, never_cos = _validate(embedder.embed_images(val_low), val_targets)
    log(
        f"validation: Recall@1 {never:.3f} (cosine to their product {never_cos:.4f}) for the "
        "shopper photos as they are"
    )
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=0.0, betas=(0.9, 0.99))
    history: list[dict[str, float]] = []
    # the best step: highest Recall@1, ties (common on a small shop's saturated validation
    # gallery) to the one whose photos land closest to their products' embeddings
    best = ((-1.0, -1.0), 0, {k: v.detach().clone() for k, v in net.state_dict().items()})
    losses: list[float] = []
    labels = torch.arange(batch)
    for step in range(config.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, config.steps, config.warmup, config.lr)
        pick = rng.choice(len(photos), batch, replace=False)
        width = int(rng.integers(config.min_width, config.max_width + 1))
        aspect = 0.75 if rng.random() < config.portrait_share else 0.0
        strength = float(rng.random())
        # drawn only when asked for, so the measured recipe's random stream is unchanged
        plain = bool(config.plain_share) and rng.random() < config.plain_share
        low = [shopper_photo(photos[i], width, config, rng, aspect, strength, plain) for i in pick]
        size = low[0].size
        low = [im if im.size == size else im.resize(size, Image.Resampling.BICUBIC) for im in low]
        lq = _tensor(low)
        sr = net(lq).clamp(0, 1)
        emb = frozen(sr)
        tgt = targets[torch.from_numpy(pick)]
        logits = emb @ tgt.T / config.temperature
        loss = F.cross_entropy(logits, labels) + (1 - (emb * tgt).sum(-1)).mean()
        if config.pixel_weight:
            hi = _tensor(
                [photos[i].resize(sr.shape[-1:-3:-1], Image.Resampling.BICUBIC) for i in pick]
            )
            loss = loss + config.pixel_weight * F.l1_loss(sr, hi)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.item()))
        if (step + 1) % config.val_every == 0 or step + 1 == config.steps:
            net.eval()
            score = _validate(embedder.embed_images(_upscale_all(net, val_low)), val_targets)
            net.train()
            history.append(
                {
                    "step": step + 1,
                    "loss": float(np.mean(losses)),
                    "val_R@1": score[0],
                    "val_cos": score[1],
                }
            )
            log(
                f"step {step + 1}: loss {np.mean(losses):.4f}, validation Recall@1 {score[0]:.3f} "
                f"(cosine {score[1]:.4f})"
            )
            losses = []
            if score > best[0]:
                best = (
                    score,
                    step + 1,
                    {k: v.detach().clone() for k, v in net.state_dict().items()},
                )
    net.load_state_dict(best[2])
    net = net.eval()
    seconds = time.perf_counter() - started
    meta = {
        "command": command,
        "objective": "retrieval",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "init": str(init),
        "embedder": {"spec": config.model, "fingerprint": embedder.fingerprint, "frozen": True},
        "catalog": {
            "path": str(catalog.source),
            "sha256": catalog.sha256,
            "rows": len(catalog),
            "train": len(rows),
            "val": len(val_rows),
        },
        "steps": config.steps,
        "best_step": best[1],
        "seconds": round(seconds, 1),
        "hardware": hardware("cpu"),
        "parameters": count_params(net),
        "history": history,
        "val": {
            "R@1_never": never,
            "R@1": best[0][0],
            "cos_never": never_cos,
            "cos": best[0][1],
            "widths": [config.min_width, config.max_width],
        },
    }
    save_upscaler(net, Path(out), config.name, kwargs, scale, meta, card=_card(kwargs, scale, meta))
    return UpscalerTrainResult(Path(out), kwargs, config.steps, seconds, best[1], history, {})


def _card(kwargs: dict[str, Any], scale: int, meta: dict[str, Any]) -> str:
    c, e, v = meta["config"], meta["embedder"], meta["val"]
    lines = [
        f"# {c['name']}: a compact Real-ESRGAN upscaler trained to find products",
        "",
        (
            f"`SRVGGNetCompact` (realesrgan), {kwargs['num_feat']} features, "
            f"{kwargs['num_conv']} convolutions, x{scale}, {meta['parameters']:,} parameters; "
            f"started from `{meta['init']}`."
        ),
        "",
        "## Objective",
        "",
        (
            f"Shopper-sized copies of catalog photos ({c['min_width']}-{c['max_width']} px wide, "
            f"tilted up to {c['rotate']} degrees, {c['crop']:.0%} crops, colour cast "
            f"{c['cast']}, from clean to blur {c['blur']} and JPEG {c['jpeg']}"
            + (
                f"; {c['plain_share']:.0%} of batches plain shrunk copies, untilted and uncropped"
                if c.get("plain_share")
                else ""
            )
            + ") are upscaled "
            "and embedded by the **frozen** "
            f"embedder `{e['spec']}` (weights fingerprint `{e['fingerprint'][:16]}...`); the loss "
            f"pulls each onto its own product's catalog-photo embedding (InfoNCE at temperature "
            f"{c['temperature']} over the batch, plus 1 - cos) with an L1 term (weight "
            f"{c['pixel_weight']}) against the catalog photo. The embedder's weights never "
            "change: this upscaler is bound to them, and is stale for any other model."
        ),
        "",
        "## Training",
        "",
        "```",
        meta["command"],
        "```",
        "",
        (
            f"- {meta['steps']} steps of {c['batch_size']} photos, AdamW lr {c['lr']} "
            f"(warm-up {c['warmup']}, cosine decay); best step {meta['best_step']}; "
            f"{meta['seconds'] / 60:.1f} min on {meta['hardware']}."
        ),
        (
            f"- Catalog `{meta['catalog']['path']}`: {meta['catalog']['train']} training "
            f"photos, {meta['catalog']['val']} validation products; "
            + (
                f"the test products (newest {c['test_fraction']:.0%} by `{c['split_by']}`) "
                "never seen."
                if c["test_fraction"]
                else "none held out for testing (it is evaluated on another catalog)."
            )
        ),
        "",
        "| step | loss | validation exact-product Recall@1 | mean cosine to the product |",
        "|---|---|---|---|",
        *[
            f"| {h['step']} | {h['loss']:.4f} | {h['val_R@1']:.3f} | {h['val_cos']:.4f} |"
            for h in meta["history"]
        ],
        "",
        (
            f"Validation, shopper photos of the validation products against their catalog "
            f"photos: Recall@1 {v['R@1_never']:.3f} as they are, {v['R@1']:.3f} upscaled by "
            f"this network (mean cosine to their product {v['cos_never']:.4f} and "
            f"{v['cos']:.4f}); the best step is the highest Recall@1, ties to the higher cosine."
        ),
        "",
    ]
    return "\n".join(lines)


def _upscale_all(net: Any, imgs: list[Image.Image]) -> list[Image.Image]:
    from searchcore.training.upscaler import run_network

    return [run_network(net, im) for im in imgs]


def _validate(queries: np.ndarray, gallery: np.ndarray) -> tuple[float, float]:
    """Recall@1 of the queries (row i is product i) and their mean cosine to their product."""
    sims = queries @ gallery.T
    own = np.arange(len(queries))
    return float(np.mean(sims.argmax(1) == own)), float(np.mean(sims[own, own]))
