"""Attribute heads: "we think this is..." read off a photo's embedding.

One head per facet column (:mod:`searchcore.facets`: category, colour, gender...), each a cosine
classifier over the model's normalised image embedding (NormFace):
``p(class) = softmax(SCALE * cos(v, w_class) / T)``. Since a head reads the embedding the search
already computed, a prediction costs one small matrix product and works the same under every
runtime (torch, ONNX).

``finetune --attr-weight`` trains the heads with the model and keeps them; ``searchcore model
heads`` fits them on any model's frozen embeddings. Either way the temperature ``T`` of each head
is fitted on validation products (negative log-likelihood over a grid), so a 0.9 means right
nine times in ten; accuracy and expected calibration error (ECE) before and after are recorded.

Files in the model folder: ``attribute_heads.safetensors`` (one ``(classes, dim)`` matrix per
column) and ``attribute_heads.json`` (columns, classes, temperatures, metrics, and the
fingerprint of the weights they read). Heads are bound to those weights: next to other weights
they are stale, and nothing is predicted (:meth:`AttributeHeads.problem` says why).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from searchcore.embed.protocols import weights_fingerprint
from searchcore.errors import WeightsError
from searchcore.facets import normalise, spellings
from searchcore.fsutil import atomic_write, is_regular_file, read_json, write_json_atomic

HEADS_WEIGHTS = "attribute_heads.safetensors"
HEADS_META = "attribute_heads.json"
SCALE = 16.0  # logit scale of the normalised-softmax classifiers
FORMAT_VERSION = 1
MAX_COLUMNS = 64
MAX_CLASSES = 4096
ECE_BINS = 15
TEMPERATURES = np.exp(np.linspace(np.log(0.05), np.log(20.0), 241))


@dataclass(frozen=True)
class Head:
    """One column's classifier: ``classes`` as :func:`normalise` makes them, ``labels`` as the
    catalog spells them most often, ``weights`` (classes, dim) L2-normalised."""

    column: str
    classes: tuple[str, ...]
    labels: tuple[str, ...]
    weights: np.ndarray
    temperature: float = 1.0

    def logits(self, vectors: np.ndarray) -> np.ndarray:
        return SCALE * (np.asarray(vectors, dtype=np.float32) @ self.weights.T)

    def probabilities(self, vectors: np.ndarray, temperature: float | None = None) -> np.ndarray:
        z = self.logits(vectors) / (temperature or self.temperature)
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def targets(self, values: Sequence[object]) -> np.ndarray:
        """Class index of each value, -1 where it is none of the classes (or empty)."""
        index = {c: i for i, c in enumerate(self.classes)}
        return np.array([index.get(normalise(v), -1) for v in values], dtype=np.int64)


@dataclass
class AttributeHeads:
    heads: list[Head]
    fingerprint: str  # the weights whose embeddings the heads read
    trained: str = "with the model"  # or "on the frozen model"
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        return [h.column for h in self.heads]

    # -- predictions ------------------------------------------------------------------------
    def predict(self, vector: np.ndarray, top: int = 3) -> dict[str, list[tuple[str, float]]]:
        """The ``top`` most likely values of each column for one image embedding."""
        out = {}
        for head in self.heads:
            p = head.probabilities(np.asarray(vector)[None])[0]
            best = np.argsort(-p)[:top]
            out[head.column] = [(head.labels[i], round(float(p[i]), 4)) for i in best]
        return out

    def problem(self, fingerprint: str) -> str | None:
        """Why these heads cannot serve a model with ``fingerprint`` (None: they can)."""
        if fingerprint != self.fingerprint:
            return (
                "the attribute heads were fitted to other weights than this model's; refit them "
                "(`searchcore model heads`) or fine-tune again"
            )
        return None

    # -- calibration ------------------------------------------------------------------------
    def calibrate(self, vectors: np.ndarray, rows: pd.DataFrame, name: str) -> None:
        """Fit each head's temperature on ``vectors`` (validation photos of the products in
        ``rows``) and record accuracy and ECE before and after, under ``name``."""
        fitted = []
        for head in self.heads:
            t = head.targets(rows[head.column].tolist())
            ok = t >= 0
            if ok.sum() < 2:
                fitted.append(head)
                continue
            logits = head.logits(vectors[ok])
            nll = [_nll(logits / temp, t[ok]) for temp in TEMPERATURES]
            best = float(TEMPERATURES[int(np.argmin(nll))])
            before = score(head, vectors[ok], t[ok], 1.0)
            head = replace(head, temperature=best)
            self.metrics[head.column] = {
                "calibrated_on": name,
                "temperature": round(best, 4),
                "uncalibrated": before,
                **score(head, vectors[ok], t[ok]),
            }
            fitted.append(head)
        self.heads = fitted

    # -- files ------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        from safetensors.numpy import save_file

        folder = Path(folder)
        tensors = {f"head.{i}": h.weights.astype(np.float32) for i, h in enumerate(self.heads)}
        atomic_write(folder / HEADS_WEIGHTS, lambda tmp: save_file(tensors, str(tmp)))
        meta = {
            "format_version": FORMAT_VERSION,
            "fingerprint": self.fingerprint,
            "scale": SCALE,
            "trained": self.trained,
            "heads": [
                {
                    "column": h.column,
                    "classes": list(h.classes),
                    "labels": list(h.labels),
                    "temperature": h.temperature,
                }
                for h in self.heads
            ],
            "metrics": self.metrics,
        }
        write_json_atomic(folder / HEADS_META, meta)

    @classmethod
    def load(cls, folder: str | Path) -> AttributeHeads | None:
        """The heads in a model folder; None when it has none; WeightsError when they are
        damaged (a broken or hostile file is refused, never half-used)."""
        folder = Path(folder)
        meta_path, weights_path = folder / HEADS_META, folder / HEADS_WEIGHTS
        if not meta_path.exists() and not weights_path.exists():
            return None
        where = f"attribute heads in {folder}"
        for path in (meta_path, weights_path):
            if not is_regular_file(path):
                raise WeightsError(f"{where}: {path.name} is missing or not a regular file")
        try:
            meta = read_json(meta_path, 4 << 20)
            from safetensors.numpy import load_file

            tensors = load_file(str(weights_path))
        except Exception as exc:
            raise WeightsError(f"{where} cannot be read: {str(exc).splitlines()[0]}") from None
        try:
            return cls._from(meta, tensors)
        except (KeyError, TypeError, ValueError) as exc:
            raise WeightsError(f"{where} are damaged: {exc}") from None

    @classmethod
    def _from(cls, meta: Any, tensors: dict[str, np.ndarray]) -> AttributeHeads:
        if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
            raise ValueError("unknown format")
        if float(meta.get("scale", 0)) != SCALE:
            raise ValueError(f"logit scale {meta.get('scale')!r}, not {SCALE}")
        entries = meta["heads"]
        if not isinstance(entries, list) or not 0 < len(entries) <= MAX_COLUMNS:
            raise ValueError("no heads, or too many")
        heads, dim = [], None
        for i, e in enumerate(entries):
            classes, labels = e["classes"], e["labels"]
            w = np.asarray(tensors[f"head.{i}"], dtype=np.float32)
            if not (isinstance(e["column"], str) and isinstance(classes, list)):
                raise ValueError(f"head {i} has no column or classes")
            if not 2 <= len(classes) <= MAX_CLASSES or len(labels) != len(classes):
                raise ValueError(f"head {e['column']!r} has {len(classes)} classes")
            if not all(isinstance(c, str) for c in (*classes, *labels)):
                raise ValueError(f"head {e['column']!r} has a class that is not text")
            if w.ndim != 2 or w.shape[0] != len(classes) or (dim is not None and w.shape[1] != dim):
                raise ValueError(f"head {e['column']!r} has weights of shape {w.shape}")
            if not np.isfinite(w).all():
                raise ValueError(f"head {e['column']!r} has weights that are not finite")
            t = float(e["temperature"])
            if not 0.01 <= t <= 100:
                raise ValueError(f"head {e['column']!r} has temperature {t}")
            dim = w.shape[1]
            w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
            heads.append(Head(e["column"], tuple(classes), tuple(labels), w, t))
        metrics = meta.get("metrics") or {}
        return cls(heads, str(meta["fingerprint"]), str(meta.get("trained", "")), dict(metrics))

    @property
    def dim(self) -> int:
        return int(self.heads[0].weights.shape[1])


def heads_for(spec: str, embedder: Any) -> tuple[AttributeHeads | None, str | None]:
    """The attribute heads of model ``spec``'s folder, when it has heads for these very
    weights; else None and why not (None when the model simply has none)."""
    from searchcore.embed.spec import ModelSpec, recorded_spec

    parsed = ModelSpec.parse(recorded_spec(spec))
    if parsed.kind != "local":
        return None, None
    try:
        heads = AttributeHeads.load(parsed.name)
    except WeightsError as exc:
        return None, str(exc)
    if heads is None:
        return None, None
    # an ONNX int8 runtime has weights of its own; its heads are the torch weights'
    problem = heads.problem(weights_fingerprint(embedder))
    if problem is None and heads.dim != embedder.dim:
        problem = f"the attribute heads read {heads.dim}-d embeddings, not {embedder.dim}-d"
    return (None, problem) if problem else (heads, None)


def heads_from_weights(
    columns: Sequence[str],
    classes: Sequence[Sequence[str]],
    weights: Sequence[np.ndarray],
    rows: pd.DataFrame,
    fingerprint: str,
    trained: str = "with the model",
) -> AttributeHeads:
    """Heads from trained class weights; each class is labelled as ``rows`` (the training
    products) spell it most often."""
    heads = []
    for col, names, w in zip(columns, classes, weights, strict=True):
        spelled = spellings(rows, col)
        w = np.asarray(w, dtype=np.float32)
        w = w / np.maximum(np.linalg.norm(w, axis=1, keepdims=True), 1e-12)
        heads.append(Head(col, tuple(names), tuple(spelled.get(c, c) for c in names), w))
    return AttributeHeads(heads, fingerprint, trained)


def head_classes(values: Sequence[object]) -> tuple[list[str], np.ndarray]:
    """The classes of one column's training values (normalised, sorted) and each value's
    class index (-100, what cross-entropy ignores, where a product has no value)."""
    keys = [normalise(v) for v in values]
    classes = sorted({k for k in keys if k})
    index = {c: i for i, c in enumerate(classes)}
    return classes, np.array([index.get(k, -100) for k in keys], dtype=np.int64)


def fit_heads(
    vectors: np.ndarray,
    rows: pd.DataFrame,
    columns: Sequence[str],
    fingerprint: str,
    *,
    steps: int = 300,
    seed: int = 0,
) -> AttributeHeads:
    """Heads fitted on a frozen model's normalised image embeddings of the products in ``rows``
    (cross-entropy, Adam, full batch; each class starts at its mean embedding)."""
    import torch
    import torch.nn.functional as F

    torch.manual_seed(seed)
    x = torch.from_numpy(np.asarray(vectors, dtype=np.float32))
    kept, all_classes, weights = [], [], []
    for col in columns:
        classes, targets = head_classes(rows[col].tolist())
        if len(classes) < 2:
            continue
        t = torch.from_numpy(targets)
        init = torch.stack([x[t == i].mean(0) for i in range(len(classes))])
        w = torch.nn.Parameter(F.normalize(init, dim=-1))
        opt = torch.optim.Adam([w], lr=0.01)
        for _ in range(steps):
            loss = F.cross_entropy(SCALE * x @ F.normalize(w, dim=-1).T, t, ignore_index=-100)
            opt.zero_grad()
            loss.backward()
            opt.step()
        kept.append(col)
        all_classes.append(classes)
        weights.append(w.detach().numpy())
    if not kept:
        raise WeightsError(f"no column of {', '.join(columns)} has two values to tell apart")
    return heads_from_weights(kept, all_classes, weights, rows, fingerprint, "on the frozen model")


def score(
    head: Head, vectors: np.ndarray, targets: np.ndarray, temperature: float | None = None
) -> dict[str, Any]:
    """Top-1 accuracy and expected calibration error of ``head`` on labelled ``vectors``."""
    p = head.probabilities(vectors, temperature)
    confidence, predicted = p.max(axis=1), p.argmax(axis=1)
    correct = predicted == targets
    return {
        "accuracy": round(float(correct.mean()), 4),
        "ece": round(expected_calibration_error(confidence, correct), 4),
        "n": len(targets),
    }


def expected_calibration_error(
    confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS
) -> float:
    """ECE: the gap between confidence and accuracy, averaged over equal-width confidence bins
    weighted by how many predictions fall in each (Guo et al., 2017)."""
    if len(confidence) == 0:
        return 0.0
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        sel = which == b
        if sel.any():
            total += sel.mean() * abs(float(correct[sel].mean()) - float(confidence[sel].mean()))
    return float(total)


def _nll(logits: np.ndarray, targets: np.ndarray) -> float:
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return float(-log_p[np.arange(len(targets)), targets].mean())
