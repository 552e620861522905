"""From the images a user hands us to the int8 NHWC batch runtime/ and the device take.

One place decides layouts and quantization of inputs, so `tinyconv run`, `verify` and `report`
cannot disagree about what "the same input" means. ONNX models are NCHW (PyTorch) or NHWC behind
a Transpose (tf2onnx); export/ records which in ``model.metadata["input_layout"]``.
"""
from __future__ import annotations

import numpy as np

from runtime import kernels
from runtime.kernels import INT8_MAX, INT8_MIN
from runtime.errors import TinyconvError
from runtime.model import QuantModel


def onnx_layout(model: QuantModel) -> str:
    """``"NCHW"`` or ``"NHWC"``: the layout of model.onnx's input."""
    return model.metadata.get("input_layout", "NCHW")


def to_nhwc(model: QuantModel, x: np.ndarray) -> np.ndarray:
    """A batch in the model's NHWC per-sample shape. Accepts NHWC, NCHW and, for one-channel
    models, ``[N, H, W]``; where a shape fits both layouts, model.onnx's layout wins."""
    shape = tuple(model.input_spec.shape)
    given = tuple(x.shape[1:])
    if len(shape) == 3:
        nchw = (shape[2], shape[0], shape[1])
        if shape[2] == 1 and given == shape[:2]:
            return x[..., None]
        if given == nchw and (given != shape or onnx_layout(model) == "NCHW"):
            return x.transpose(0, 2, 3, 1)
        if given != shape:
            raise TinyconvError(f"inputs have shape {given} per sample; the model takes {shape} "
                                f"(NHWC) or {nchw} (NCHW)")
    elif given != shape:
        raise TinyconvError(f"inputs have shape {given} per sample; the model takes {shape}")
    return x


def to_onnx_layout(model: QuantModel, x_nhwc: np.ndarray) -> np.ndarray:
    """The inverse of ``to_nhwc`` for model.onnx / model.q.onnx."""
    if x_nhwc.ndim == 4 and onnx_layout(model) == "NCHW":
        return np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))
    return x_nhwc


def quantize_input(model: QuantModel, x: np.ndarray) -> np.ndarray:
    """int8 NHWC for runtime/ and the device: int8 is taken as it is, floats are quantized with
    the model's input scale and zero point (onnxruntime's QuantizeLinear arithmetic; TFLite's
    QUANTIZE, ties away from zero, for a model exported from a .tflite file)."""
    x = to_nhwc(model, np.asarray(x))
    if x.dtype == np.int8:
        return np.ascontiguousarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TinyconvError(f"inputs must be float or int8, got {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise TinyconvError("inputs hold NaN or infinity")
    spec = model.input_spec
    rounding = "away" if model.metadata.get("source_format") == "tflite" else "even"
    return kernels.quantize(x.astype(np.float32, copy=False), spec.scale, spec.zero_point,
                            rounding)


SATURATION_WARNING = 0.01  # a larger share of clipped input values is a scale mistake, not noise


def saturated(model: QuantModel, x: np.ndarray) -> np.ndarray:
    """Per input, how many of its float values the int8 input cannot hold (quantization clips
    them by more than half a step): images of 0..255 into a model calibrated on 0..1 clip
    almost every pixel. int8 inputs are codes already and count 0."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        return np.zeros(len(x), np.int64)
    spec = model.input_spec
    steps = x.reshape(len(x), -1).astype(np.float32) / np.float32(spec.scale)
    low, high = INT8_MIN - spec.zero_point - 0.5, INT8_MAX - spec.zero_point + 0.5
    return np.count_nonzero((steps < low) | (steps > high), axis=1)


def saturation_warning(clipped: int, values: int) -> str | None:
    if values == 0 or clipped <= SATURATION_WARNING * values:
        return None
    return (f"{100 * clipped / values:.1f} % of the input values lie outside the range the "
            "model was calibrated on and are clipped: are the inputs on the same scale "
            "(e.g. 0..1, not 0..255)?")


def refuse_int8_values(dtype, codes: bool, source) -> None:
    """int8 inputs are taken as the model's quantized codes; int8 pixel values would be
    silently misread, so a file of int8 needs the user to say they are codes."""
    if np.dtype(dtype) == np.int8 and not codes:
        raise TinyconvError(f"{source}: 'x' is int8; if it holds the model's quantized input "
                            "codes, pass --int8-codes, otherwise convert it to float32")


def float_input(model: QuantModel, x: np.ndarray) -> np.ndarray:
    """float32 in model.onnx's layout (int8 inputs are dequantized), for onnxruntime."""
    x = to_nhwc(model, np.asarray(x))
    if x.dtype == np.int8:
        spec = model.input_spec
        x = kernels.dequantize(x, spec.scale, spec.zero_point)
    return to_onnx_layout(model, np.asarray(x, dtype=np.float32))


def float_output_to_nhwc(model: QuantModel, y: np.ndarray, tensor: str | None = None
                         ) -> np.ndarray:
    """A float batch that model.onnx computed for ``tensor`` (default: the model's output) in
    the per-sample shape runtime/ gives that tensor, so float and int8 values meet element by
    element. ONNX convolutions are NCHW whatever the input layout (a tf2onnx model transposes
    its NHWC input first, and export refuses a Transpose back at the end), so a 4-D float
    tensor is NCHW; a vector keeps its order."""
    shape = tuple(model.tensors[tensor or model.output].shape)
    y = np.asarray(y)
    given = tuple(y.shape[1:])
    if len(shape) == 3 and given == (shape[2], shape[0], shape[1]):
        return y.transpose(0, 2, 3, 1)
    if len(shape) != 3 and int(np.prod(given)) == int(np.prod(shape)):
        return y.reshape((len(y),) + shape)
    raise TinyconvError(f"model.onnx gives {tensor or model.output!r} the shape {given} per "
                        f"sample; the model's is {shape} (NHWC)")
