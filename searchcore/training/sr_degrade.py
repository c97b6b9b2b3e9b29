"""Real-ESRGAN's synthetic degradations, for training an upscaler on clean catalog photos.

This is the two-stage ("high-order") pipeline of Real-ESRGAN's ``RealESRGANDataset`` and
``RealESRGANModel.feed_data`` (blur with random mixed/sinc kernels, random resize, Gaussian or
Poisson noise, differentiable JPEG; twice; then a final resize with a sinc filter), built from
the same ``basicsr`` functions, without its data loader, training queue or option files.
JPEG goes through basicsr's OpenCV ``add_jpg_compression`` (real libjpeg) rather than its
``DiffJPEG``: nothing here needs gradients through the JPEG step, and DiffJPEG costs about half
of a CPU step.

Ranges follow Real-ESRGAN's ``finetune_realesrgan_x4plus.yml`` with noise halved: catalog
and shopper photos are much cleaner than the old film scans Real-ESRGAN aims at, and
blur/downscaling matter more here than heavy sensor noise. Two further changes for that
reason: a share of pairs (``plain_prob``) is only resized and JPEG'd (a model trained on the
full pipeline alone lost 0.3 dB to bicubic on plain 4x thumbnails: it "restored" blur that was
not there), and bilinear/bicubic downscaling is antialiased, as phones and browsers do it
(torch's default aliases).

basicsr draws from the global ``random`` and ``numpy.random`` generators; the trainer seeds
them (and torch) once, so a run is reproducible.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np

from searchcore._compat import patch_torchvision_for_basicsr

KERNELS = ["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
KERNEL_PROB = [0.45, 0.25, 0.12, 0.03, 0.12, 0.03]
KERNEL_SIZES = [2 * v + 1 for v in range(3, 11)]  # 7..21, padded to 21


@dataclass(frozen=True)
class SRDegradeConfig:
    scale: int = 4
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    second_blur_prob: float = 0.8
    sinc_prob: float = 0.1
    final_sinc_prob: float = 0.8
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)  # up, down, keep
    resize_range: tuple[float, float] = (0.15, 1.5)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (0.5, 15.0)
    poisson_scale_range: tuple[float, float] = (0.05, 1.5)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[int, int] = (30, 95)
    second_order_prob: float = 0.8  # Real-ESRGAN always runs stage two; clean inputs exist too
    plain_prob: float = 0.3  # pairs that are only resized (+ JPEG with plain_jpeg_prob)
    plain_jpeg_prob: float = 0.7
    plain_jpeg_range: tuple[int, int] = (60, 95)


def _kernel(sigma: tuple[float, float], sinc_prob: float) -> Any:
    patch_torchvision_for_basicsr()
    import torch
    from basicsr.data.degradations import circular_lowpass_kernel, random_mixed_kernels

    size = random.choice(KERNEL_SIZES)
    if np.random.uniform() < sinc_prob:
        omega = np.random.uniform(math.pi / 3 if size < 13 else math.pi / 5, math.pi)
        k = circular_lowpass_kernel(omega, size, pad_to=False)
    else:
        k = random_mixed_kernels(
            KERNELS,
            KERNEL_PROB,
            size,
            sigma,
            sigma,
            [-math.pi, math.pi],
            [0.5, 4],
            [1, 2],
            noise_range=None,
        )
    pad = (21 - size) // 2
    return torch.FloatTensor(np.pad(k, ((pad, pad), (pad, pad))))


def _sinc_or_pulse(prob: float) -> Any:
    patch_torchvision_for_basicsr()
    import torch
    from basicsr.data.degradations import circular_lowpass_kernel

    if np.random.uniform() < prob:
        size = random.choice(KERNEL_SIZES)
        return torch.FloatTensor(
            circular_lowpass_kernel(np.random.uniform(math.pi / 3, math.pi), size, pad_to=21)
        )
    pulse = torch.zeros(21, 21)
    pulse[10, 10] = 1
    return pulse


def _filter(img: Any, kernel: Any) -> Any:
    """basicsr's ``filter2D`` (reflect-padded per-sample kernels), made safe for small inputs.

    It reshapes with ``view`` (needs a contiguous tensor) and reflect-pads by 10 px (needs more
    than 10 px a side); an image that small after a random downscale is left unfiltered.
    """
    from basicsr.utils.img_process_util import filter2D

    if min(img.shape[-2:]) <= kernel.shape[-1] // 2:
        return img
    return filter2D(img.contiguous(), kernel)


_MODES = ("area", "bilinear", "bicubic")


def _resize(img: Any, size: tuple[int, int], mode: str) -> Any:
    import torch.nn.functional as F

    return F.interpolate(img, size=size, mode=mode, antialias=mode in ("bilinear", "bicubic"))


class RealESRGANDegrader:
    """``degrade(gt)``: a batch of clean photos (B, 3, H, W in [0, 1]) -> low-quality inputs
    (B, 3, H/scale, W/scale), rounded to 8 bits as a real upload would be."""

    def __init__(self, config: SRDegradeConfig = SRDegradeConfig()) -> None:
        patch_torchvision_for_basicsr()
        self.c = config

    def _noise(self, out: Any) -> Any:
        from basicsr.data.degradations import (
            random_add_gaussian_noise_pt,
            random_add_poisson_noise_pt,
        )

        c = self.c
        if np.random.uniform() < c.gaussian_noise_prob:
            return random_add_gaussian_noise_pt(
                out, sigma_range=c.noise_range, clip=True, rounds=False, gray_prob=c.gray_noise_prob
            )
        return random_add_poisson_noise_pt(
            out,
            scale_range=c.poisson_scale_range,
            gray_prob=c.gray_noise_prob,
            clip=True,
            rounds=False,
        )

    def _jpeg(self, out: Any, quality: tuple[int, int] | None = None) -> Any:
        import torch
        from basicsr.data.degradations import add_jpg_compression

        qualities = np.random.uniform(*(quality or self.c.jpeg_range), size=out.size(0))
        hwc = torch.clamp(out, 0, 1).permute(0, 2, 3, 1).cpu().numpy()
        # OpenCV encodes BGR: flip the channels so chroma subsampling treats colours rightly.
        done = [
            add_jpg_compression(np.ascontiguousarray(im[..., ::-1]), int(q))[..., ::-1]
            for im, q in zip(hwc, qualities, strict=True)
        ]
        return torch.from_numpy(np.stack(done).copy()).permute(0, 3, 1, 2).to(out)

    def degrade(self, gt: Any) -> Any:
        """One batch shares one draw of the pipeline's branches (as in Real-ESRGAN), so the
        trainer degrades small batches and pools them (see ``upscaler.py``)."""
        import torch

        with torch.no_grad():
            out = self._plain(gt) if np.random.uniform() < self.c.plain_prob else self._full(gt)
            return torch.clamp((out * 255.0).round(), 0, 255) / 255.0

    def _plain(self, gt: Any) -> Any:
        c = self.c
        _, _, h, w = gt.shape
        out = _resize(gt, (h // c.scale, w // c.scale), random.choice(_MODES))
        if np.random.uniform() < c.plain_jpeg_prob:
            out = self._jpeg(out, c.plain_jpeg_range)
        return out

    def _full(self, gt: Any) -> Any:
        import torch

        c = self.c
        b, _, h, w = gt.shape

        def kernels(sigma: tuple[float, float]) -> Any:
            return torch.stack([_kernel(sigma, c.sinc_prob) for _ in range(b)])

        out = _filter(gt, kernels(c.blur_sigma))
        f = self._resize_factor(c.resize_range)
        out = _resize(out, (max(4, int(h * f)), max(4, int(w * f))), random.choice(_MODES))
        out = self._jpeg(self._noise(out))
        if np.random.uniform() < c.second_order_prob:
            if np.random.uniform() < c.second_blur_prob:
                out = _filter(out, kernels(c.blur_sigma2))
            f = self._resize_factor(c.resize_range2)
            size = (max(4, int(h / c.scale * f)), max(4, int(w / c.scale * f)))
            out = self._noise(_resize(out, size, random.choice(_MODES)))
        sinc = torch.stack([_sinc_or_pulse(c.final_sinc_prob) for _ in range(b)])
        final = (h // c.scale, w // c.scale)
        mode = random.choice(_MODES)
        if np.random.uniform() < 0.5:  # resize + sinc, then JPEG (or the reverse)
            return self._jpeg(_filter(_resize(out, final, mode), sinc))
        return _filter(_resize(self._jpeg(out), final, mode), sinc)

    def _resize_factor(self, rng: tuple[float, float]) -> float:
        kind = random.choices(["up", "down", "keep"], list(self.c.resize_prob))[0]
        if kind == "up":
            return float(np.random.uniform(1, rng[1]))
        if kind == "down":
            return float(np.random.uniform(rng[0], 1))
        return 1.0
