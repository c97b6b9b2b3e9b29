"""int8 towers from a model folder's fp32 ONNX export (``searchcore model export --int8``).

onnxruntime's own quantiser (``onnxruntime.quantization``) does the work; this module decides
what it quantises and how, per tower:

- **Convolutions: static** (QDQ format): int8 weights per output channel, and uint8 activations
  whose ranges are calibrated (min/max) on photos run through the fp32 tower, so onnxruntime
  runs them with its quantised convolution kernels. The shipped ResNet tower's embed stage
  drops from 12.0 to 6.2 ms at 1 thread with them (benchmarks/README.md, "Runtimes"). Dynamic
  quantisation of a convolution (``ConvInteger``) ran 3.6x *slower* than fp32, which is why
  convolutions stayed fp32 before.
- **MatMul / Gemm: dynamic**: int8 weights, activations quantised per batch as the tower runs
  (the bulk of a ViT and of every text tower: ~2x faster than fp32). Static ranges for a
  transformer's activations would be fixed on a few photos and clip the outliers of others;
  measured on ViT-B-32 they were not faster either.
- **7-bit weights** (``reduce_range``), for both: without VNNI (AVX2 only, like one kind of the
  2-core AMD EPYCs these benchmarks ran on) the uint8 x int8 kernels add pairs of products into
  int16 with saturation, and full 8-bit weights overflow it. Measured at the same speed: the shipped
  model's convolutions, cosine to torch 0.938 min / 0.988 mean on the demo shop's photos
  against 0.9985 / 0.9993; ViT-B-32's matrix products, 0.969 / 0.983 against 0.9995 / 0.9996.
  A CPU with VNNI does not need it and runs 7-bit weights at the same speed (the other kind,
  benchmarks/README.md), and an export is made on one machine and served on others.

The calibration photos are never the ones the export's fidelity is measured on
(:func:`~searchcore.embed.onnx.export_onnx` keeps the two sets apart), so the fidelity report
is not flattered by them.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from searchcore.fsutil import atomic_write

STATIC_OPS = ("Conv",)
DYNAMIC_OPS = ("MatMul", "Gemm")
CALIBRATION_BATCH = 8
SCRATCH_PREFIX = ".quantise-"  # the convolutions' static model, in the folder while it is made


def quantise_tower(
    src: Path,
    dst: Path,
    pixels: np.ndarray | None = None,
    *,
    input_name: str = "",
    source: str = "",
) -> dict[str, Any]:
    """Write ``src``'s int8 version to ``dst`` and return how it was made (for ``onnx.json``).

    ``pixels``: the calibration photos as the tower's input ``input_name`` takes them
    (``collate``'s), ``source`` saying where they came from; None for a tower without photos
    (text): then only MatMul/Gemm are quantised.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    def quantise_dynamic(model: Path, tmp: Path) -> None:
        quantize_dynamic(
            model,
            tmp,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=[*DYNAMIC_OPS],
            reduce_range=True,
        )

    made: dict[str, Any] = {}
    with _quiet_quantiser():
        if pixels is None or not _has_ops(src, STATIC_OPS):
            atomic_write(dst, lambda tmp: quantise_dynamic(src, tmp))
        else:
            with tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=dst.parent) as tmpdir:
                static = Path(tmpdir) / "static.onnx"
                _quantise_static(src, static, input_name, pixels)
                atomic_write(dst, lambda tmp: quantise_dynamic(static, tmp))
            made["static"] = {
                "op_types": list(STATIC_OPS),
                "format": "QDQ",
                "weights": "int8 per channel, 7-bit range",
                "activations": "uint8",
                "calibration": {"method": "MinMax", "photos": len(pixels), "source": source},
            }
    made["dynamic"] = {"op_types": list(DYNAMIC_OPS), "weights": "int8, 7-bit range"}
    return made


def _quantise_static(src: Path, dst: Path, name: str, pixels: np.ndarray) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Photos(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches: Iterator[dict[str, np.ndarray]] = iter(
                {name: np.ascontiguousarray(pixels[i : i + CALIBRATION_BATCH], np.float32)}
                for i in range(0, len(pixels), CALIBRATION_BATCH)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self.batches, None)

    quantize_static(
        src,
        dst,
        Photos(),
        quant_format=QuantFormat.QDQ,
        op_types_to_quantize=[*STATIC_OPS],
        per_channel=True,
        reduce_range=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )


def _has_ops(path: Path, ops: tuple[str, ...]) -> bool:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    return any(node.op_type in ops for node in graph.node)


@contextlib.contextmanager
def _quiet_quantiser() -> Iterator[None]:
    """The quantiser's advice (pre-process first, is it already quantised?) goes to the root
    logger as warnings on every run; what it did is recorded in ``onnx.json`` instead."""

    def not_quantiser(record: logging.LogRecord) -> bool:
        return "onnxruntime" not in record.pathname.replace("\\", "/").split("/")

    root = logging.getLogger()
    root.addFilter(not_quantiser)
    try:
        yield
    finally:
        root.removeFilter(not_quantiser)
