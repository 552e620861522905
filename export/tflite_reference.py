"""runtime/ against the interpreters a TFLite user trusts, tensor by tensor.

TFLite Micro (the ``tflite-micro`` package: the real interpreter with its reference kernels) is
the oracle: runtime/ must equal it on every element of every tensor, and ``compare`` names the
first tensor, in execution order, where it does not. LiteRT (``ai-edge-litert``, its optimized
kernels) is reported only: exact rate and largest difference of the int8 output.

A model exported from a .tflite file names its tensors ``t<i>`` after TFLite tensor ``i``
(export/tflite_import.py), so each runtime/ tensor is read back from TFLM by that index; both
interpreters keep every tensor (TFLM's ``kPreserveAllTensors``, LiteRT's
``experimental_preserve_all_tensors``).
"""
from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

import runtime
from export.tflite_import import _MALFORMED, TFLITE_PREFIX
from runtime.errors import TinyconvError
from runtime.inputs import quantize_input
from runtime.model import QuantModel


@dataclass
class Difference:
    tensor: str
    layer: str  # the layer writing it ("input" for the model input)
    op: str
    sample: int  # first input where it differs
    count: int  # differing elements over all inputs
    size: int  # elements over all inputs
    largest: int


@dataclass
class Comparison:
    inputs: int
    tensors: int
    first: Difference | None  # None: runtime == TFLM on every element of every tensor
    litert_exact: float | None = None  # fraction of output elements equal to LiteRT's
    litert_largest: int | None = None

    def summary(self) -> str:
        if self.first is None:
            line = (f"runtime == TFLM: every element of {self.tensors} tensors on "
                    f"{self.inputs} inputs")
        else:
            d = self.first
            line = (f"runtime != TFLM: first tensor that differs is {d.tensor!r} (written by "
                    f"{d.layer}, {d.op}): {d.count} of {d.size} elements, largest difference "
                    f"{d.largest}, first on input {d.sample}")
        if self.litert_exact is not None:
            line += (f"\nvs LiteRT (optimized kernels, not gating): output exact on "
                     f"{100 * self.litert_exact:.2f}% of elements, largest difference "
                     f"{self.litert_largest}")
        return line


def _index(name: str) -> int:
    if not name.startswith(TFLITE_PREFIX) or not name[len(TFLITE_PREFIX):].isdigit():
        raise TinyconvError(f"tensor {name!r} does not come from a .tflite file; --against "
                            "tflm needs a model exported from one")
    return int(name[len(TFLITE_PREFIX):])


def tensor_indices(data: bytes, model: QuantModel) -> dict[str, int]:
    """Model tensor -> TFLite tensor index. A model imported from a .tflite names tensor ``i``
    ``t<i>``; a file export/tflite_writer.py wrote names each activation after the model's
    tensor."""
    names = [model.input] + [layer.output for layer in model.layers]
    if model.metadata.get("source_format") == "tflite":
        return {name: _index(name) for name in names}
    import tflite

    where: dict[str, int] = {}
    with _readable("the flatbuffer reader"):
        graph = tflite.Model.GetRootAsModel(data, 0).Subgraphs(0)
        for i in range(graph.TensorsLength()):
            where.setdefault((graph.Tensors(i).Name() or b"").decode("utf-8", "replace"), i)
    missing = [name for name in names if name not in where]
    if missing:
        raise TinyconvError(f"tensor {missing[0]!r} is not in the .tflite file: --against tflm "
                            "needs the model.tflite exported with this model")
    return {name: where[name] for name in names}


def _feed(details: dict, x_float: np.ndarray | None, x_q: np.ndarray, i: int) -> np.ndarray:
    """What the TFLite input takes: the float sample (it quantizes itself) or the int8 one."""
    shape = tuple(details["shape"])
    if details["dtype"] == np.float32 and x_float is not None:
        return x_float[i:i + 1].astype(np.float32).reshape(shape)
    if details["dtype"] == np.float32:
        raise TinyconvError("the .tflite model takes float input; give float inputs")
    return x_q[i:i + 1].reshape(shape)


def tflm_interpreter(data: bytes):
    """TFLM keeping every tensor, in an arena of at least 1 MiB: the package's default (ten
    times the file) is too small for a small model's tensors."""
    from tflite_micro.python.tflite_micro import runtime as tflm

    with _readable("TFLite Micro"):
        return tflm.Interpreter.from_bytes(
            data, arena_size=max(10 * len(data), 1 << 20),
            intrepreter_config=tflm.InterpreterConfig.kPreserveAllTensors)


@contextmanager
def _readable(reader: str):
    """A truncated or overwritten model.tflite fails deep inside the flatbuffer readers
    (struct.error, IndexError, RuntimeError from the interpreter): one line for the user."""
    try:
        yield
    except (RuntimeError, *_MALFORMED) as exc:
        raise TinyconvError(f"model.tflite cannot be read by {reader} ({type(exc).__name__}: "
                            f"{exc}); restore it or export again") from None


def tflm_tensors(data: bytes, model: QuantModel, x_float, x_q,
                 indices: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """Every tensor of ``model`` as TFLM computes it, batched like runtime.run's. ``indices``
    maps a model tensor to its TFLite tensor (export/tflite_writer.py) where the names do not."""
    indices = indices if indices is not None else tensor_indices(data, model)
    interpreter = tflm_interpreter(data)
    details = interpreter.get_input_details(0)
    names = [model.input] + [layer.output for layer in model.layers]
    values = {name: [] for name in names}
    for i in range(len(x_q)):
        interpreter.set_input(_feed(details, x_float, x_q, i), 0)
        interpreter.invoke()
        for name in names:
            values[name].append(interpreter.GetTensor(indices[name], 0)["tensor_data"].copy())
    return {name: np.stack(v).reshape((len(x_q),) + model.tensors[name].shape)
            for name, v in values.items()}


class OutputReference:
    """The int8 output of one interpreter on a .tflite file, image by image: TFLM (reference
    kernels, the oracle) or LiteRT (optimized kernels). Built once, reused for every batch
    (tinyconv verify)."""

    def __init__(self, data: bytes, model: QuantModel, which: str):
        self.model, self.which = model, which
        if which == "tflm":
            self.interpreter = tflm_interpreter(data)
            self.details = self.interpreter.get_input_details(0)
        else:
            from ai_edge_litert.interpreter import Interpreter

            with warnings.catch_warnings(), _readable("LiteRT"):
                warnings.simplefilter("ignore")
                self.interpreter = Interpreter(model_content=data, num_threads=1,
                                               experimental_preserve_all_tensors=True)
                self.interpreter.allocate_tensors()
            self.details = self.interpreter.get_input_details()[0]
        self.index = tensor_indices(data, model)[model.output]

    def __call__(self, x_float, x_q) -> np.ndarray:
        """``x_float`` (NHWC float, or None) is fed to a float-input file, ``x_q`` otherwise."""
        out = []
        for i in range(len(x_q)):
            x = _feed(self.details, x_float, x_q, i)
            if self.which == "tflm":
                self.interpreter.set_input(x, 0)
                self.interpreter.invoke()
                out.append(self.interpreter.GetTensor(self.index, 0)["tensor_data"].copy())
            else:
                self.interpreter.set_tensor(self.details["index"], x)
                self.interpreter.invoke()
                out.append(self.interpreter.get_tensor(self.index).copy())
        return np.stack(out).reshape((len(x_q),) + self.model.output_spec.shape)


def litert_output(data: bytes, model: QuantModel, x_float, x_q,
                  index: int | None = None) -> np.ndarray:
    """The int8 output tensor (TFLite tensor ``index``, else by name) as LiteRT's optimized
    kernels compute it."""
    index = tensor_indices(data, model)[model.output] if index is None else index
    from ai_edge_litert.interpreter import Interpreter

    # "preserve_all_tensors is for debugging": it is
    with warnings.catch_warnings(), _readable("LiteRT"):
        warnings.simplefilter("ignore")
        interpreter = Interpreter(model_content=data, experimental_preserve_all_tensors=True,
                                  num_threads=1)
        interpreter.allocate_tensors()
    details = interpreter.get_input_details()[0]
    out = []
    for i in range(len(x_q)):
        interpreter.set_tensor(details["index"], _feed(details, x_float, x_q, i))
        interpreter.invoke()
        out.append(interpreter.get_tensor(index).copy())
    return np.stack(out).reshape((len(x_q),) + model.output_spec.shape)


def compare(model: QuantModel, data: bytes, x, *, litert: bool = True,
            indices: dict[str, int] | None = None) -> Comparison:
    """runtime/ vs TFLM on every tensor (and LiteRT on the output) for inputs ``x`` (float, or
    int8 already quantized), NHWC. ``indices``: as ``tflm_tensors``."""
    x = np.asarray(x)
    x_float = x if np.issubdtype(x.dtype, np.floating) else None
    x_q = quantize_input(model, x)
    if x_float is not None:
        x_float = x_float.reshape(x_q.shape)
    ours = runtime.run(model, x_q, collect=True)[1]
    theirs = tflm_tensors(data, model, x_float, x_q, indices)
    writers = {layer.output: layer for layer in model.layers}
    first = None
    for name in theirs:  # execution order: the input, then each layer's output
        a, b = ours[name].astype(np.int32), theirs[name].astype(np.int32)
        diff = np.abs(a - b).reshape(len(x_q), -1)
        if diff.any():
            layer = writers.get(name)
            first = Difference(name, layer.name if layer else "input",
                               layer.op if layer else "quantize", int(diff.any(axis=1).argmax()),
                               int((diff > 0).sum()), int(diff.size), int(diff.max()))
            break
    result = Comparison(len(x_q), len(theirs), first)
    if litert:
        index = (indices or tensor_indices(data, model))[model.output]
        lite = litert_output(data, model, x_float, x_q, index).astype(np.int32)
        diff = np.abs(ours[model.output].astype(np.int32) - lite)
        result.litert_exact = float((diff == 0).mean())
        result.litert_largest = int(diff.max())
    return result
