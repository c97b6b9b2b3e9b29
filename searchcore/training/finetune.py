"""``searchcore finetune``: contrastive training of an open_clip model on a shop's catalog.

Each step takes a batch of products and makes, for each:

* a *clean view* of its photo (random crop, flip, mild brightness/contrast jitter; no hue
  jitter by default, because colour is what shoppers search for),
* a *shopper view* (:func:`.degrade.sample_shopper`: smaller, blurrier, JPEG'd, cropped,
  tilted, colour cast),
* a *text* built from its title and attribute columns (:func:`.data.training_text`).

The loss is open_clip's ``ClipLoss`` between clean views and texts, plus (weight
``image_image_weight``, on by default) the same symmetric InfoNCE loss between clean and
shopper views. The second term is what makes a blurry, cropped phone photo find *its*
product and not just one of the same kind and colour: measured on a real catalog, it lifted
exact-product Recall@10 from shopper-like photos from 0.10 to 0.68.

A held-out split (by product id hash, :func:`.data.held_out_mask`) is evaluated after every
epoch with :func:`.evaluate.evaluate`; the best epoch's weights are kept and training stops
after ``patience`` epochs without improvement.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from searchcore.catalog import Catalog
from searchcore.console import progress_bar
from searchcore.degrade import DEFAULT_CONDITIONS
from searchcore.embed import ModelSpec, pick_device
from searchcore.embed.heads import SCALE, head_classes, heads_from_weights
from searchcore.errors import ConfigError, SearchError
from searchcore.training.batches import Batches
from searchcore.training.common import (
    autocast_dtype,
    count_params,
    freeze_first_groups,
    hardware,
    is_conv_tower,
    lr_at,
    seed_everything,
)
from searchcore.training.data import TRAINING_FILE, attribute_columns, load_photos, split_masks
from searchcore.training.evaluate import EvalConfig, Strategy, evaluate
from searchcore.training.heads import calibrate

VAL_CONDITIONS = ("x4-blur", "shopper")


@dataclass(frozen=True)
class FinetuneConfig:
    base: str = "default"
    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 50
    weight_decay: float = 0.1
    image_image_weight: float = 1.0
    text_attrs: tuple[str, ...] = ()  # empty: every categorical column (data.attribute_columns)
    lock_image: bool = False  # LiT: train the text tower against a frozen image tower
    lock_text: bool = False
    unlocked_groups: int | None = None  # freeze all but the last N groups of both towers
    crop_scale: float = 0.7  # clean view keeps 70-100% of the photo's area
    flip: bool = True
    jitter: float = 0.15  # brightness and contrast, +-15%
    hue_jitter: float = 0.0  # off: colour is the point of most product searches
    shopper_strength: float = 1.0
    shopper_max_down: float = 6.0  # the smallest shopper view is 1/6 of the photo's width
    # Auxiliary attribute classification: a cosine classifier per attribute column on the image
    # embedding (clean and shopper views), weighted against the contrastive terms. The heads
    # are kept beside the weights (calibrated on validation) for "we think this is...".
    attr_weight: float = 0.0
    attr_columns: tuple[str, ...] = ()  # empty: the text attribute columns
    # Products never trained or validated on (the same split as ``searchcore eval``): a test
    # split for the final evaluation, the newest products by ``split_by`` ("id", any column,
    # or "hash"). The validation split is then drawn from the rest.
    test_fraction: float = 0.0
    split_by: str = "id"
    val_fraction: float = 0.1
    val_max_queries: int = 300
    patience: int = 3
    # Progressive resizing (fast.ai, EfficientNetV2): the first ``low_res_epochs`` epochs see
    # both views shrunk to ``low_res`` px (a ResNet-18 step at 64 px costs half of one at 96),
    # the rest (and every validation) the model's own size; timm (conv) towers only. From then
    # on the tower's first ``freeze_groups`` layer groups (timm's: stem, then blocks) stop, as
    # in FreezeOut (Brock et al. 2017): 3 groups (a ResNet's stem, layer1) are a third of a step.
    low_res_epochs: int = 0
    low_res: int = 64
    freeze_groups: int = 0
    max_steps: int | None = None  # stop early after this many steps (smoke tests)
    precision: str = "auto"  # towers run in bf16 autocast where the hardware has it
    seed: int = 0
    device: str = "auto"
    half: bool = True  # store fp16 weights
    allow_download: bool = False

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2:
            raise ConfigError("epochs must be >= 1 and the batch size >= 2 (contrastive loss)")
        if self.lr <= 0 or self.weight_decay < 0 or self.image_image_weight < 0:
            raise ConfigError("learning rate must be > 0, weight decay and loss weights >= 0")
        if (
            not 0.1 <= self.crop_scale <= 1.0
            or not 0 <= self.jitter < 1
            or not 0 <= self.hue_jitter <= 0.5
        ):
            raise ConfigError("crop scale must be 0.1-1, jitter 0-1 and hue jitter 0-0.5")
        if not 0.0 <= self.val_fraction < 1.0 or not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError("the validation and test fractions must be in [0, 1)")
        if self.attr_weight < 0 or not 1.0 <= self.shopper_max_down <= 32.0:
            raise ConfigError("the attribute loss weight must be >= 0 and shopper_max_down 1-32")
        if self.low_res_epochs < 0 or self.freeze_groups < 0 or not 16 <= self.low_res <= 1024:
            raise ConfigError("low-resolution epochs and frozen groups >= 0, low-res 16-1024 px")


@dataclass
class FinetuneResult:
    folder: Path
    steps: int
    seconds: float
    best_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    val: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- model


def load_base(
    base: str, *, device: str, seed: int, allow_download: bool, cache_dir: Path | None = None
) -> tuple[Any, dict[str, Any]]:
    """The starting :class:`~searchcore.embed.ClipEmbedder` and its open_clip model config."""
    import open_clip

    from searchcore.embed import load_embedder, model_config

    spec = ModelSpec.parse(base)
    # Training may start from an architecture alone (from scratch): random weights, asked for.
    embedder = load_embedder(
        f"random:{spec.name}" if spec.kind == "arch" else base,
        device=device,
        seed=seed,
        allow_download=allow_download,
        cache_dir=cache_dir,
    )
    if spec.kind == "local":
        cfg = json.loads((Path(spec.name) / "open_clip_config.json").read_text("utf-8"))[
            "model_cfg"
        ]
    elif spec.kind == "hub":
        from open_clip.factory import _get_hf_config

        cfg = _get_hf_config(spec.name, cache_dir=str(cache_dir) if cache_dir else None)[
            "model_cfg"
        ]
    else:
        cfg = (
            model_config(spec.name)
            if spec.kind in ("arch", "random")
            else open_clip.get_model_config(spec.name)
        )
    return embedder, dict(cfg)


def _freeze(model: Any, config: FinetuneConfig) -> None:
    if config.lock_image:
        model.lock_image_tower(unlocked_groups=0, freeze_bn_stats=True)
    if config.lock_text:
        model.lock_text_tower(unlocked_layers=0)
    if config.unlocked_groups is not None:
        if not config.lock_image:
            model.lock_image_tower(unlocked_groups=config.unlocked_groups, freeze_bn_stats=False)
        if not config.lock_text:
            model.lock_text_tower(unlocked_layers=config.unlocked_groups)


def _optimizer(model: Any, config: FinetuneConfig, extra: Sequence[Any] = ()) -> Any:
    import torch

    # open_clip's recipe: no weight decay on gains, biases, norms, embeddings or the temperature.
    def no_decay(name: str, p: Any) -> bool:
        return p.ndim < 2 or any(
            s in name for s in ("bn", "ln", "bias", "logit_scale", "embedding", "norm")
        )

    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise ConfigError("every parameter is frozen: unlock a tower or some groups")
    groups = [
        {"params": [p for n, p in params if no_decay(n, p)] + list(extra), "weight_decay": 0.0},
        {
            "params": [p for n, p in params if not no_decay(n, p)],
            "weight_decay": config.weight_decay,
        },
    ]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6)


# ---------------------------------------------------------------------------- training


def validation_score(report: dict[str, Any]) -> float:
    """One number to early-stop on: text Recall@10 (attributes, titles), exact Recall@1 and
    similar-product precision@10 (each attribute), equally weighted by task."""
    parts = [t["R@10"] for t in report.get("text", {}).values()]
    exact = [c["never"]["R@1"] for c in report.get("exact", {}).values()]
    if exact:
        parts.append(float(np.mean(exact)))
    similar = [v["P@10"] for v in report.get("similar", {}).values() if isinstance(v, dict)]
    if similar:
        parts.append(float(np.mean(similar)))
    return float(np.mean(parts)) if parts else 0.0


class _AttributeHeads:
    """Cosine classifiers (one per attribute column) over normalised image embeddings, trained
    with the model (:mod:`searchcore.embed.heads` keeps and serves them)."""

    def __init__(
        self, df: Any, rows: Sequence[int], columns: Sequence[str], dim: int, device: str
    ) -> None:
        import torch

        self.columns, self.classes, self.targets, self.weights = [], [], [], []
        for col in columns:
            classes, targets = head_classes([df[col].iat[r] for r in rows])
            if len(classes) < 2:
                continue
            # -100: products without a value are ignored by cross_entropy
            self.targets.append(torch.from_numpy(targets).to(device))
            self.weights.append(
                torch.nn.Parameter(torch.randn(len(classes), dim, device=device) * 0.01)
            )
            self.columns.append(col)
            self.classes.append(classes)

    def parameters(self) -> list[Any]:
        return list(self.weights)

    def state(self) -> list[np.ndarray]:
        return [w.detach().float().cpu().numpy().copy() for w in self.weights]

    def loss(self, feats: Any, idx: Any) -> Any:
        import torch.nn.functional as F

        total = feats.new_zeros(())
        for w, t in zip(self.weights, self.targets, strict=True):
            logits = SCALE * feats @ F.normalize(w, dim=-1).T
            total = total + F.cross_entropy(logits, t[idx], ignore_index=-100)
        return total / max(1, len(self.weights))


def finetune(
    catalog: Catalog,
    out: str | Path,
    config: FinetuneConfig = FinetuneConfig(),
    *,
    progress: bool = False,
    say: Callable[[str], None] | None = None,
    command: str = "",
    cache_dir: Path | None = None,
) -> FinetuneResult:
    import torch
    import torch.nn.functional as F
    from open_clip.loss import ClipLoss

    from searchcore.embed import ClipEmbedder, load_embedder, save_model
    from searchcore.training.cards import clip_card

    log = say or (lambda _m: None)
    started = time.perf_counter()
    seed_everything(config.seed)
    device = pick_device(config.device)
    embedder, model_cfg = load_base(
        config.base,
        device=device,
        seed=config.seed,
        allow_download=config.allow_download,
        cache_dir=cache_dir,
    )
    model = embedder.model
    _freeze(model, config)
    amp = autocast_dtype(config.precision, device)
    conv = is_conv_tower(model.visual)
    if conv:  # oneDNN's fast convolution kernels want NHWC
        model.visual.to(memory_format=torch.channels_last)
    elif config.low_res_epochs or config.freeze_groups:
        raise ConfigError(
            "low-resolution epochs and frozen layer groups need a convolutional (timm) image "
            f"tower: {config.base}'s takes {embedder.image_size} px only"
        )

    df = catalog.df
    attrs = attribute_columns(df, config.text_attrs or None)
    held, test = split_masks(
        df, config.seed, config.val_fraction, config.test_fraction, config.split_by
    )
    train_rows = [i for i, (h, t) in enumerate(zip(held, test, strict=True)) if not (h or t)]
    # validation never sees the test products either
    val_exclude = [i for i, h in enumerate(held) if not h]
    rows, photos, skipped = load_photos(
        catalog, train_rows, max_side=max(256, 2 * embedder.image_size)
    )
    if len(rows) < 2:
        raise SearchError(f"only {len(rows)} usable training photos; a contrastive loss needs more")
    texts = [(str(df["title"].iat[r]), {c: str(df[c].iat[r]) for c in attrs}) for r in rows]
    batch = min(config.batch_size, len(rows))
    steps_per_epoch = max(1, len(rows) // batch)
    total = config.epochs * steps_per_epoch
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    log(
        f"{len(rows)} training products ({len(skipped)} unreadable photos skipped), "
        f"{int(held.sum())} for validation, {int(test.sum())} for testing; "
        f"texts from title + {', '.join(attrs) or 'no attributes'}; "
        f"{count_params(model, trainable_only=True):,} trainable parameters; "
        f"{total} steps of {batch} on {device}"
    )

    heads = None
    if config.attr_weight > 0:
        columns = attribute_columns(df, config.attr_columns) if config.attr_columns else attrs
        heads = _AttributeHeads(df, rows, columns, embedder.dim, device)
        log(f"attribute heads: {', '.join(heads.columns) or 'none'} (weight {config.attr_weight})")
    opt = _optimizer(model, config, extra=heads.parameters() if heads else ())
    loss_fn = ClipLoss()
    data = Batches(photos, texts, embedder.preprocess, embedder.tokenizer, config)
    val_cfg = EvalConfig(
        seed=config.seed,
        test_fraction=1.0,
        max_queries=config.val_max_queries,
        quality_images=0,
        conditions=tuple((c, DEFAULT_CONDITIONS[c]) for c in VAL_CONDITIONS),
    )
    do_val = int(held.sum()) >= 2  # retrieval needs at least two held-out products
    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, Any] | None] = (-1.0, 0, None)
    best_heads: list[np.ndarray] = []
    bar = progress_bar(total, "fine-tuning", "step", progress)
    step, stale = 0, 0
    try:
        for epoch in range(config.epochs):
            model.train()
            order = np.random.default_rng([config.seed, epoch]).permutation(len(rows))
            losses = []
            small = epoch < config.low_res_epochs and config.low_res < embedder.image_size
            if epoch == config.low_res_epochs and config.freeze_groups:
                n = freeze_first_groups(model.visual, config.freeze_groups)
                log(f"from epoch {epoch + 1}: {n:,} parameters of the first layer groups frozen")
            for clean, shop, tokens, idx in data.epoch(order, batch, config.seed, epoch):
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, total, config.warmup_steps, config.lr)
                pixels = torch.cat([clean, shop]).to(device)
                if small:
                    pixels = F.interpolate(
                        pixels, size=config.low_res, mode="bilinear", antialias=True
                    )
                if conv:
                    pixels = pixels.contiguous(memory_format=torch.channels_last)
                with torch.autocast(device.split(":")[0], dtype=amp, enabled=amp is not None):
                    feats = model.encode_image(pixels)
                    txt = model.encode_text(tokens.to(device))
                # The loss stays in fp32: logits scaled by up to 100 need more than bf16's
                # three significant digits to rank near-duplicate products.
                feats = F.normalize(feats.float(), dim=-1)
                img_f, shop_f = feats[: len(clean)], feats[len(clean) :]
                txt_f = F.normalize(txt.float(), dim=-1)
                scale = model.logit_scale.exp()
                loss = loss_fn(img_f, txt_f, scale)
                if config.image_image_weight > 0:
                    loss = loss + config.image_image_weight * loss_fn(img_f, shop_f, scale)
                if heads is not None:
                    loss = loss + config.attr_weight * heads.loss(
                        feats, torch.cat([idx, idx]).to(device)
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                with torch.no_grad():  # as open_clip's trainer: temperature at most 100
                    model.logit_scale.clamp_(0, math.log(100))
                losses.append(float(loss.item()))
                step += 1
                bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.3f}")
                bar.update(1)
                if step >= total:
                    break
            entry: dict[str, Any] = {
                "epoch": epoch + 1,
                "px": config.low_res if small else embedder.image_size,
                "step": step,
                "loss": float(np.mean(losses)),
                "seconds": round(time.perf_counter() - started, 1),
            }
            if do_val:
                current = ClipEmbedder(
                    model, embedder.transform, embedder.tokenizer, spec="training", device=device
                )
                report = evaluate(
                    catalog, current, [Strategy("never")], val_cfg, exclude_rows=val_exclude
                )
                entry["val_score"] = validation_score(report)
                entry["val"] = _summary(report)
            history.append(entry)
            log(
                f"epoch {epoch + 1}: loss {entry['loss']:.3f}"
                + (f", validation score {entry['val_score']:.3f}" if "val_score" in entry else "")
            )
            score = entry.get("val_score", -entry["loss"])
            if best[2] is None or score > best[0]:
                best, stale = (score, epoch + 1, _copy_state(model)), 0
                best_heads = heads.state() if heads is not None else []
            else:
                stale += 1
            if step >= total or stale >= config.patience:
                break
    finally:
        data.close()
        bar.close()
    assert best[2] is not None
    model.load_state_dict(best[2])
    if conv:
        model.visual.to(memory_format=torch.contiguous_format)
    folder = Path(out)
    trained = ClipEmbedder(
        model, embedder.transform, embedder.tokenizer, spec=str(folder), device=device
    )
    save_model(trained, folder, model_cfg, half=config.half)
    seconds = time.perf_counter() - started
    # The card's figures come from the weights as saved (fp16 when ``half``), reloaded from disk.
    val: dict[str, Any] = {}
    head_metrics: dict[str, Any] = {}
    reloaded = load_embedder(str(folder), device=device)
    if do_val:
        val = evaluate(catalog, reloaded, [Strategy("never")], val_cfg, exclude_rows=val_exclude)
    if heads is not None and heads.columns:  # kept beside the weights they read
        kept = heads_from_weights(
            heads.columns, heads.classes, best_heads, df.iloc[rows], reloaded.fingerprint
        )
        calibrate(kept, catalog, [i for i, h in enumerate(held) if h], reloaded, config.seed)
        kept.save(folder)
        head_metrics = kept.metrics
        log(f"attribute heads kept for {', '.join(kept.columns)}")
    meta = {
        "format_version": 1,
        "command": command,
        "config": asdict(config),
        "catalog": {
            "path": str(catalog.source),
            "sha256": catalog.sha256,
            "rows": len(catalog),
            "column_map": [list(p) for p in catalog.column_map],
        },
        "split": {
            "seed": config.seed,
            "val_fraction": config.val_fraction,
            "test_fraction": config.test_fraction,
            "by": config.split_by,
            "train": len(rows),
            "val": int(held.sum()),
            "test": int(test.sum()),
            "skipped": len(skipped),
        },
        "text_attributes": attrs,
        "steps": step,
        "best_epoch": best[1],
        "seconds": round(seconds, 1),
        "hardware": hardware(device),
        "parameters": count_params(model),
        "history": history,
        "val": _summary(val) if val else {},
        "attribute_heads": head_metrics,
    }
    from searchcore.fsutil import write_json_atomic

    write_json_atomic(folder / TRAINING_FILE, meta)
    (folder / "README.md").write_text(clip_card(model_cfg, meta), encoding="utf-8")
    return FinetuneResult(folder, step, seconds, best[1], history, meta["val"])


def _copy_state(model: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    """The few validation numbers worth keeping per epoch."""
    out: dict[str, Any] = {f"text_{k}_R@10": v["R@10"] for k, v in report.get("text", {}).items()}
    for name, cond in report.get("exact", {}).items():
        out[f"exact_{name}_R@1"] = cond["never"]["R@1"]
    for col, v in report.get("similar", {}).items():
        if isinstance(v, dict):
            out[f"similar_{col}_P@10"] = v["P@10"]
    return out
