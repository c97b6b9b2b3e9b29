"""How a model's towers become ONNX graphs: torch's TorchScript exporter, with self-attention
written so that the graph does not compute sizes that never change.

Traced as it is, ``nn.MultiheadAttention`` brings ~50 Shape/Gather/Unsqueeze/Concat/Reshape
nodes per layer into the graph (about 650 for ViT-B-32's image tower) to work out sizes that
never change for a tower: a ViT sees as many tokens as its positional embedding has, a text
tower its context length. onnxruntime runs each of them on every call: ViT-B-32's int8 image
tower spent ~9 of ~55 ms in them. :func:`lean_attention` swaps each self-attention layer for
:class:`LeanSelfAttention` while a tower is traced (only the batch axis stays free); the
export's fidelity check against torch decides, as for any export. Imported only by the export
(it imports torch).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from searchcore.fsutil import atomic_write


@contextlib.contextmanager
def lean_attention(tower: Any, tokens: int | None) -> Iterator[None]:
    """Within the context, every batch-first ``nn.MultiheadAttention`` of ``tower`` (a
    module) runs as :class:`LeanSelfAttention` for ``tokens`` tokens; nothing changes when
    ``tokens`` is None (a tower whose token count is not known)."""
    swaps = []
    if tokens:
        for module in tower.modules():
            for name, child in module.named_children():
                if _plain_self_attention(child):
                    swaps.append((module, name, child))
    try:
        for module, name, child in swaps:
            setattr(module, name, LeanSelfAttention(child, tokens))
        yield
    finally:
        for module, name, child in swaps:
            setattr(module, name, child)


def _plain_self_attention(m: Any) -> bool:
    return (
        isinstance(m, torch.nn.MultiheadAttention)
        and m.batch_first
        and m._qkv_same_embed_dim
        and m.in_proj_bias is not None
        and m.bias_k is None
        and not m.add_zero_attn
    )


class LeanSelfAttention(torch.nn.Module):
    """``nn.MultiheadAttention(x, x, x, need_weights=False, attn_mask=mask)`` for inputs of
    ``(batch, tokens, dim)``; anything else goes to the wrapped module."""

    def __init__(self, mha: Any, tokens: int) -> None:
        super().__init__()
        self.mha = mha
        self.tokens = int(tokens)
        self.heads = int(mha.num_heads)
        self.head_dim = int(mha.embed_dim // mha.num_heads)

    def forward(self, query: Any, key: Any, value: Any, **kwargs: Any) -> Any:
        mask = kwargs.pop("attn_mask", None)
        kwargs.pop("need_weights", None)
        plain = query is key is value and query.dim() == 3 and query.shape[1] == self.tokens
        plain = plain and (mask is None or mask.is_floating_point())  # added, as torch does
        if not plain or any(v is not None for v in kwargs.values()):
            return self.mha(query, key, value, need_weights=False, attn_mask=mask, **kwargs)
        n, dim = self.tokens, self.mha.embed_dim
        qkv = F.linear(query, self.mha.in_proj_weight, self.mha.in_proj_bias)
        qkv = qkv.reshape(-1, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
        if mask is not None:
            scores = scores + mask
        out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(-1, n, dim)
        return F.linear(out, self.mha.out_proj.weight, self.mha.out_proj.bias), None


def export_towers(
    model: Any, examples: dict[str, Any], names: dict[str, str], paths: dict[str, Path], opset: int
) -> None:
    """Write ``model``'s image and text towers (``encode_image`` / ``encode_text``, normalised)
    to ``paths``, each traced on its ``examples`` batch with its input named ``names[tower]``."""
    tokens = _token_counts(model)
    for tower, module in _tower_modules(model).items():
        with lean_attention(model, tokens[tower]):
            _export_tower(module, examples[tower], names[tower], paths[tower], opset)


def _token_counts(model: Any) -> dict[str, int | None]:
    """How many tokens each tower's transformer sees (its positional embedding's rows), where
    it has one: a ViT's patches and class token, a text tower's context length."""
    text = getattr(model, "text", model)
    out: dict[str, int | None] = {}
    for tower, module in (("image", model.visual), ("text", text)):
        pos = getattr(module, "positional_embedding", None)
        out[tower] = int(pos.shape[0]) if getattr(pos, "ndim", 0) == 2 else None
    return out


def _tower_modules(model: Any) -> dict[str, Any]:
    class ImageTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            return self.model.encode_image(pixels, normalize=True)

    class TextTower(ImageTower):
        def forward(self, tokens: torch.Tensor) -> torch.Tensor:
            return self.model.encode_text(tokens, normalize=True)

    return {"image": ImageTower().eval(), "text": TextTower().eval()}


def _export_tower(module: Any, example: Any, input_name: str, path: Path, opset: int) -> None:
    """torch's TorchScript exporter (``dynamo=False``): it needs no package beyond torch and
    traces open_clip's towers as they run. Its warnings (a traced shape check, a deprecation,
    the EOT token's gather) are silenced: the fidelity check runs the graph at batch 1 and at
    the samples' size, against torch, and is what decides. Gradients stay on while it traces:
    without them ``nn.MultiheadAttention`` takes its fused fast path, an op ONNX lacks."""

    def write(tmp: Path) -> None:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=opset,
                input_names=[input_name],
                output_names=["embedding"],
                dynamic_axes={input_name: {0: "batch"}, "embedding": {0: "batch"}},
            )

    atomic_write(path, write)
