"""Retrieval and image-quality metrics: pure numpy functions, checkable by hand.

Retrieval takes a score matrix ``(queries, gallery)`` (higher is better) and a boolean
relevance matrix of the same shape. The *rank* of a query is the 1-based position of its
best-ranked relevant item (``inf`` when none is relevant); ties in score keep gallery order.
Recall@k is the fraction of queries with a relevant item in the top k (the usual definition
for retrieval with one correct answer or a set of equally correct ones), MRR the mean of
``1 / rank``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = [
    "first_relevant_ranks",
    "mrr",
    "precision_at_k",
    "psnr",
    "rank_metrics",
    "recall_at_k",
    "retrieval",
    "ssim",
]


def first_relevant_ranks(scores: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """1-based rank of each query's best-ranked relevant gallery item (float, inf if none)."""
    scores = np.asarray(scores, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if scores.shape != relevant.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and relevance {relevant.shape} must be equal 2-D")
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = np.take_along_axis(relevant, order, axis=1)
    ranks = np.argmax(hits, axis=1).astype(np.float64) + 1.0
    ranks[~hits.any(axis=1)] = np.inf
    return ranks


def retrieval(scores: np.ndarray, relevant: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Recall@k for each k, MRR and the number of queries, from scores and relevance."""
    return rank_metrics(first_relevant_ranks(scores, relevant), ks)


def rank_metrics(ranks: np.ndarray, ks: Sequence[int]) -> dict[str, float]:
    """Recall@k for each k, MRR and the number of queries, from each query's first rank."""
    out = {f"R@{k}": recall_at_k(ranks, k) for k in ks}
    out["MRR"] = mrr(ranks)
    out["queries"] = len(ranks)
    return out


def recall_at_k(ranks: np.ndarray, k: int) -> float:
    ranks = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(ranks <= k)) if ranks.size else float("nan")


def mrr(ranks: np.ndarray) -> float:
    ranks = np.asarray(ranks, dtype=np.float64)
    return float(np.mean(1.0 / ranks)) if ranks.size else float("nan")


def precision_at_k(
    scores: np.ndarray,
    query_labels: Sequence[str],
    gallery_labels: Sequence[str],
    k: int,
    exclude: np.ndarray | None = None,
) -> float:
    """Mean fraction of the top ``k`` gallery items whose label equals the query's.

    ``exclude`` (bool, same shape as ``scores``) removes items from a query's list, e.g. the
    query product itself in "more like this". Queries with an empty label are not counted.
    """
    s = np.array(scores, dtype=np.float64)
    if exclude is not None:
        s[np.asarray(exclude, dtype=bool)] = -np.inf
    q = np.asarray(query_labels, dtype=object)
    g = np.asarray(gallery_labels, dtype=object)
    keep = np.array([bool(str(x).strip()) for x in q])
    if not keep.any():
        return float("nan")
    k = min(k, s.shape[1] - (1 if exclude is not None else 0))
    top = np.argsort(-s[keep], axis=1, kind="stable")[:, :k]
    same = g[top] == q[keep][:, None]
    return float(same.mean())


def relevant_precision_at_k(scores: np.ndarray, relevant: np.ndarray, k: int) -> float:
    """Mean fraction of each query's top ``k`` items that are relevant (bool matrix)."""
    s = np.asarray(scores, dtype=np.float64)
    if not len(s):
        return float("nan")
    k = min(k, s.shape[1])
    top = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return float(np.take_along_axis(np.asarray(relevant, dtype=bool), top, axis=1).mean())


# ------------------------------------------------------------------------ image quality


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two uint8-range images of equal shape (all channels)."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        raise ValueError(f"images differ in shape: {a64.shape} vs {b64.shape}")
    mse = float(np.mean((a64 - b64) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(255.0**2 / mse)


def _gaussian(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2
    g = np.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _filter_valid(x: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable 2-D filter, 'valid' region only (no padding artefacts at the borders)."""
    rows = sliding_window_view(x, len(g), axis=1) @ g
    return sliding_window_view(rows, len(g), axis=0) @ g


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """SSIM of two uint8-range images, Gaussian window 11 / sigma 1.5, channels averaged.

    The same definition as ``basicsr.metrics.calculate_ssim`` (and Wang et al. 2004), which a
    test checks; images must be at least 11 px a side.
    """
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a64.shape != b64.shape:
        raise ValueError(f"images differ in shape: {a64.shape} vs {b64.shape}")
    if a64.ndim == 2:
        a64, b64 = a64[..., None], b64[..., None]
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian()
    values = []
    for ch in range(a64.shape[-1]):
        x, y = a64[..., ch], b64[..., ch]
        mx, my = _filter_valid(x, g), _filter_valid(y, g)
        sxx = _filter_valid(x * x, g) - mx**2
        syy = _filter_valid(y * y, g) - my**2
        sxy = _filter_valid(x * y, g) - mx * my
        m = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
        values.append(float(m.mean()))
    return float(np.mean(values))
