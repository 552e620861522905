"""How much quantization costs: top-1 accuracy and SQNR of int8 against float, per configuration
and per layer.

The float side is onnxruntime on the export directory's ``model.onnx``, with every intermediate
tensor made a graph output. The int8 side is runtime/ (bit-exact with the device) on a
``QuantModel``: the directory's own ``model.tcm``, and fresh exports of ``model.onnx`` in each
configuration of ``CONFIGS``. export/ names int8 tensors after the ONNX tensors they quantize,
so a layer's int8 activation and its float activation meet by name.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import helper

from runtime.errors import TinyconvError
from runtime.inputs import float_output_to_nhwc, quantize_input
from runtime.metrics import sqnr_db
from runtime.model import QuantModel
from runtime.progress import progress


@dataclass(frozen=True)
class QuantConfig:
    """One way to quantize: the knobs ``export.from_onnx`` takes."""

    label: str
    per_channel: bool = True
    method: str = "minmax"
    requant: str = "fixed"


CONFIGS = (
    QuantConfig("per-channel, minmax, fixed"),
    QuantConfig("per-tensor, minmax, fixed", per_channel=False),
    QuantConfig("per-channel, percentile, fixed", method="percentile"),
    QuantConfig("per-channel, entropy, fixed", method="entropy"),
    QuantConfig("per-channel, minmax, float", requant="float"),
)


@dataclass
class Result:
    """One row of the accuracy table."""

    label: str
    accuracy: float | None  # top-1 against the labels, when there are labels
    agreement: float | None  # top-1 equal to the float model's top-1
    output_sqnr: float  # dB, int8 output (dequantized) against the float output; NaN for float
    layer_sqnr: dict[str, float] = field(default_factory=dict)  # tensor name -> dB
    model_hash: str = ""
    error: str | None = None  # why this configuration could not be exported


def float_activations(onnx_path: str | Path, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every tensor that a node of the float model computes, by name (ONNX layout). A
    model.onnx that cannot run on inputs model.tcm takes was edited or replaced after export:
    one line, not onnxruntime's traceback."""
    try:
        return _float_activations(onnx_path, x)
    except TinyconvError:
        raise
    except Exception as exc:  # onnx's DecodeError, onnxruntime's errors: the file is broken
        raise TinyconvError(f"{onnx_path} does not run on the inputs model.tcm takes "
                            f"({type(exc).__name__}: {str(exc).strip().splitlines()[0]}); "
                            "restore it or export again") from None


def _float_activations(onnx_path: str | Path, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    model = onnx.load(str(onnx_path))
    known = {o.name for o in model.graph.output}
    for node in model.graph.node:
        for name in node.output:
            if name and name not in known:
                model.graph.output.append(helper.make_empty_tensor_value_info(name))
                known.add(name)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = session.run(names, {session.get_inputs()[0].name: np.asarray(x, np.float32)})
    return dict(zip(names, values))


def float_output_name(onnx_path: str | Path) -> str:
    return onnx.load(str(onnx_path)).graph.output[0].name


def int8_activations(model: QuantModel, x: np.ndarray) -> dict[str, np.ndarray]:
    """Every int8 tensor of ``model`` for float inputs ``x``, dequantized to float32 (NHWC),
    by name."""
    import runtime
    from runtime import kernels

    _, collected = runtime.run(model, quantize_input(model, x), collect=True)
    return {name: kernels.dequantize(value, model.tensors[name].scale,
                                     model.tensors[name].zero_point)
            for name, value in collected.items()}


def evaluate(label: str, model: QuantModel, x: np.ndarray, labels: np.ndarray | None,
             floats: dict[str, np.ndarray], float_output: str) -> Result:
    """Compare one int8 model with the float activations ``floats`` on the same inputs."""
    int8 = int8_activations(model, x)
    reference = float_output_to_nhwc(model, floats[float_output])
    output = int8[model.output]
    layer_sqnr = {}
    for layer in model.layers:
        if layer.output in floats:
            expected = float_output_to_nhwc(model, floats[layer.output], layer.output)
            layer_sqnr[layer.output] = sqnr_db(expected, int8[layer.output])
    top1 = output.argmax(axis=1)
    return Result(
        label=label,
        accuracy=None if labels is None else float((top1 == labels).mean()),
        agreement=float((top1 == reference.argmax(axis=1)).mean()),
        output_sqnr=sqnr_db(reference, output),
        layer_sqnr=layer_sqnr,
        model_hash=model.hash)


def float_result(floats: dict[str, np.ndarray], float_output: str,
                 labels: np.ndarray | None) -> Result:
    top1 = floats[float_output].argmax(axis=1)
    return Result("float (onnxruntime, model.onnx)",
                  None if labels is None else float((top1 == labels).mean()), 1.0, math.nan)


def compare_configs(export_dir: Path, model: QuantModel, x: np.ndarray,
                    labels: np.ndarray | None, calibration: np.ndarray,
                    configs=CONFIGS, on_step: Callable[[str], None] | None = None
                    ) -> list[Result]:
    """The accuracy table: float, the directory's own int8 model, then ``model.onnx``
    re-exported in each configuration (calibrated on ``calibration``)."""
    import export

    onnx_path = export_dir / "model.onnx"
    floats = float_activations(onnx_path, x)
    out_name = float_output_name(onnx_path)
    results = [float_result(floats, out_name, labels),
               evaluate(f"as exported ({model.requant_mode}; model.tcm)", model, x, labels,
                        floats, out_name)]
    for config in progress(configs, label="report: re-exports", unit="export"):
        if on_step:
            on_step(config.label)
        try:
            exported = export.from_onnx(str(onnx_path), calibration, requant=config.requant,
                                        per_channel=config.per_channel, method=config.method,
                                        name=model.name)
        except TinyconvError as exc:  # one configuration failing should not hide the others
            results.append(Result(config.label, None, None, math.nan, error=str(exc)))
            continue
        results.append(evaluate(config.label, exported.model, x, labels, floats, out_name))
    return results
