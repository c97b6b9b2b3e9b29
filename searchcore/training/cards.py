"""Model cards (``README.md`` in a model folder): what the model is, how it was made, how good.

Written from the training record (``training.json``), so the card cannot drift from the run.
"""

from __future__ import annotations

from typing import Any


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _arch(cfg: dict[str, Any]) -> str:
    v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    if v.get("timm_model_name"):
        vision = f"timm `{v['timm_model_name']}` ({v.get('timm_pool', 'avg')} pool)"
    else:
        vision = (
            f"ViT {v.get('layers')} layers x {v.get('width')} wide, patch {v.get('patch_size')}"
        )
    text = (
        f"transformer {t.get('layers')} layers x {t.get('width')} wide, "
        f"{t.get('context_length')} tokens"
    )
    return (
        f"image tower {vision} at {v.get('image_size')} px; text tower {text}; "
        f"embedding {cfg.get('embed_dim')}"
    )


def clip_card(model_cfg: dict[str, Any], meta: dict[str, Any], evaluation: str = "") -> str:
    c, cat, split = meta["config"], meta["catalog"], meta["split"]
    lines = [
        "# searchcore CLIP model",
        "",
        (
            "An open_clip model that embeds product photos and shopper queries in one space, "
            "trained with `searchcore finetune`."
        ),
        "",
        "## Model",
        "",
        f"- Architecture: {_arch(model_cfg)}.",
        (
            f"- Parameters: {meta['parameters']:,}; weights stored as "
            f"{'fp16' if c['half'] else 'fp32'} safetensors "
            "(open_clip's local-dir / hf-hub layout)."
        ),
        f"- Started from: `{c['base']}`.",
        "",
        "## Data",
        "",
        f"- Catalog `{cat['path']}` ({cat['rows']} products, sha256 `{cat['sha256'][:16]}...`).",
        (
            f"- Split {_split(split)}: {split['train']} products trained on, {split['val']} "
            f"held out for validation and early stopping, {split.get('test', 0)} (the test "
            "products) never seen."
        ),
        "- Texts: the title and the attribute columns "
        f"{', '.join(meta['text_attributes']) or '-'}.",
        "",
        "## Training",
        "",
    ]
    if meta.get("command"):
        lines += ["```", meta["command"], "```", ""]
    lines += [
        (
            f"- Loss: open_clip `ClipLoss` image-text + {c['image_image_weight']} x image-image "
            "(clean view vs shopper-degraded view)."
        ),
        (
            f"- {meta['steps']} steps, batch {c['batch_size']}, AdamW lr {c['lr']} "
            f"(warm-up {c['warmup_steps']} steps, cosine decay), weight decay {c['weight_decay']}; "
            f"best epoch {meta['best_epoch']} of {len(meta['history'])} (patience {c['patience']})."
        ),
        (
            f"- Augmentations: crop to {c['crop_scale']:.0%}-100% area, flip {c['flip']}, "
            f"brightness/contrast +-{c['jitter']:.0%}, hue +-{c['hue_jitter']}; shopper view "
            f"strength {c['shopper_strength']}; compute precision {c.get('precision', 'fp32')}."
        ),
        (
            f"- Frozen: image tower {c['lock_image']}, text tower {c['lock_text']}, "
            f"unlocked groups {c['unlocked_groups']}."
        ),
        f"- Time: {meta['seconds'] / 60:.1f} min on {meta['hardware']}; seed {c['seed']}.",
        "",
    ]
    if meta.get("history"):
        lines += ["| epoch | loss | validation score |", "|---|---|---|"]
        lines += [
            f"| {h['epoch']} | {h['loss']:.3f} | {_fmt(h.get('val_score', '-'))} |"
            for h in meta["history"]
        ]
        lines.append("")
    if meta.get("val"):
        lines += [
            "## Validation (held-out products of the training catalog, weights as saved)",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [f"| {k} | {_fmt(v)} |" for k, v in meta["val"].items()]
        lines.append("")
    lines += heads_section(meta.get("attribute_heads") or {})
    if evaluation:
        lines += [evaluation.strip(), ""]
    use = "searchcore index build --catalog FILE --model PATH_TO_THIS_FOLDER --out INDEX"
    lines += ["## Use", "", "```", use, "```", ""]
    return "\n".join(lines)


def heads_section(metrics: dict[str, Any]) -> list[str]:
    """The model card's lines on its attribute heads (``attribute_heads.json``'s metrics)."""
    columns = {k: v for k, v in metrics.items() if isinstance(v, dict) and "accuracy" in v}
    if not columns:
        return []
    where = next(iter(columns.values())).get("calibrated_on", "")
    lines = [
        '## Attribute heads ("we think this is...")',
        "",
        (
            "One cosine classifier per attribute column over the image embedding "
            "(`attribute_heads.safetensors`), temperature-scaled on held-out validation "
            f"products ({where}). Top-1 accuracy and expected calibration error (15 bins) on "
            "those photos:"
        ),
        "",
        "| column | accuracy | ECE | ECE before scaling | temperature | photos |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {c} | {m['accuracy']:.3f} | {m['ece']:.3f} | {m['uncalibrated']['ece']:.3f} | "
        f"{m['temperature']:.3g} | {m['n']} |"
        for c, m in columns.items()
    ]
    return [*lines, ""]


def upscaler_card(config: dict[str, Any], meta: dict[str, Any], evaluation: str = "") -> str:
    c, k = meta["config"], config["arch_kwargs"]
    lines = [
        f"# {config['name']}: a compact Real-ESRGAN upscaler",
        "",
        (
            f"`SRVGGNetCompact` (realesrgan) with {k['num_feat']} features and {k['num_conv']} "
            f"convolutions, x{config['scale']}, {meta['parameters']:,} parameters, "
            "fp32 safetensors "
            f"(sha256 `{config['sha256'][:16]}...`), trained with `searchcore train-upscaler`."
        ),
        "",
        "## Data and training",
        "",
        (
            f"- Catalog `{meta['catalog']['path']}`: {meta['catalog']['train']} photos for "
            f"training, {meta['catalog']['val']} held out for validation."
        ),
        f"- Started from: {c['init'] or 'scratch'}.",
        (
            "- Pairs made on the fly: random clean patches, degraded by Real-ESRGAN's two-stage "
            "synthetic pipeline (basicsr blur kernels, resize, Gaussian/Poisson noise, JPEG), kept "
            f"in a pool of {c.get('pool_size')} pairs of which {c.get('refresh')} are renewed "
            "per step."
        ),
        (
            f"- L1 loss, {meta['steps']} steps of {c['batch_size']} patches of {c['patch']} px, "
            f"AdamW lr {c['lr']} with warm-up and cosine decay; best validation at step "
            f"{meta['best_step']}."
        ),
        f"- Time: {meta['seconds'] / 60:.1f} min on {meta['hardware']}; seed {c['seed']}.",
        "",
    ]
    if meta.get("command"):
        lines += ["```", meta["command"], "```", ""]
    if meta.get("val"):
        lines += [
            "## Validation (held-out photos, against the original)",
            "",
            "| condition | PSNR dB | bicubic | SSIM | bicubic |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {n} | {v['PSNR']:.2f} | {v['PSNR_bicubic']:.2f} | {v['SSIM']:.3f} | "
            f"{v['SSIM_bicubic']:.3f} |"
            for n, v in meta["val"].items()
        ]
        lines.append("")
    if evaluation:
        lines += [evaluation.strip(), ""]
    return "\n".join(lines)


def _split(split: dict[str, Any]) -> str:
    by = split.get("by", "hash")
    if by == "hash" or not split.get("test_fraction"):
        return f"by product id hash (seed {split['seed']})"
    return f"with the newest products by `{by}` held out for testing"
