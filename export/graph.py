"""The float intermediate representation that calibration and quantization both read.

An imported ONNX graph becomes a short list of ``FloatLayer``s in execution order, already in
the device's vocabulary (the ops of ``runtime.model.OPS``): batch norm folded, activations fused
into a clamp, weights transposed to NHWC order. Tensor names are the ONNX tensor names of
``model.onnx``, so calibration ranges (keyed by ONNX name) and per-layer comparisons line up
without a translation table.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


@dataclass
class FloatLayer:
    op: str  # one of runtime.model.OPS
    name: str  # the ONNX node name it came from (first node of a fused group)
    inputs: list[str]
    output: str
    params: dict = field(default_factory=dict)  # stride, padding, kernel, ... as in MODEL_FORMAT
    weights: np.ndarray | None = None  # float32, conv OHWI, fully connected [M, K] (NHWC order)
    bias: np.ndarray | None = None  # float32 [M]
    clamp: tuple[float, float] = (-math.inf, math.inf)  # a fused Relu / Clip, in real units
    # Already-quantized sources (onnxruntime QDQ / QOperator) carry their own weights:
    weights_q: np.ndarray | None = None  # int8, same layout as ``weights``
    weight_scales: np.ndarray | None = None  # float32 [M] or [1]
    bias_q: np.ndarray | None = None  # int32 [M]


@dataclass
class Boundary:
    """How the quantized model meets the ONNX world: names, shapes and layout at the edges.

    ``onnx_input``/``onnx_output`` are the ONNX ValueInfoProtos of ``model.onnx`` (float), copied
    as they are into ``model.q.onnx`` so it is a drop-in replacement."""

    onnx_input: object
    onnx_output: object
    input_layout: str  # "NCHW" (PyTorch) or "NHWC" (tf2onnx: a Transpose follows the input)


@dataclass
class FloatGraph:
    input: str  # tensor the first layer reads (the ONNX graph input's name)
    output: str  # tensor holding the model output (NHWC view of the ONNX output)
    shapes: dict[str, tuple[int, ...]]  # per-sample NHWC shapes: (H, W, C) or (K,)
    layers: list[FloatLayer]
    boundary: Boundary
    # (scale, zero_point) fixed by an already-quantized source; calibration fills the rest.
    quantization: dict[str, tuple[float, int]] = field(default_factory=dict)
    # ONNX tensors that are views of a layer tensor (Flatten/Reshape, the NHWC input Transpose)
    aliases: dict[str, str] = field(default_factory=dict)

    def set_quantization(self, by_onnx_name: dict[str, tuple[float, int]]) -> None:
        """Adopt a source's quantization, also where it sits on a view of a layer tensor."""
        self.quantization = dict(by_onnx_name)
        for view, tensor in self.aliases.items():
            if view in by_onnx_name:
                self.quantization.setdefault(tensor, by_onnx_name[view])
