"""Activation ranges from calibration data, measured by onnxruntime's own calibrators.

Reusing ``onnxruntime.quantization.calibrate`` (MinMax, Percentile, Entropy) means our ranges are
the ones ``quantize_static`` would pick for the same data, and no histogram code is written twice.
Ranges are asymmetric for every method (``symmetric=False``): activations are quantized
asymmetrically, and a symmetric range would waste half the codes of every post-ReLU tensor.
"""
from __future__ import annotations

import contextlib
import itertools
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import onnx

from runtime.errors import TinyconvError
from runtime.progress import Progress

METHODS = ("minmax", "percentile", "entropy")
_BATCH = 32
# Samples per collect_data call, which bounds the activations onnxruntime holds. min/max merge
# exactly across calls; histograms merge only approximately (rebinned), so the histogram methods
# take large chunks: up to 4096 samples their ranges equal one pass over everything.
_CHUNK = {"minmax": 256, "percentile": 4096, "entropy": 4096}
# The entropy calibrator tries every symmetric cut of a num_bins histogram at least
# num_quantized_bins wide and keeps the one losing least information (KL divergence) when
# squeezed into num_quantized_bins levels. With onnxruntime's default of 128 histogram bins
# for 128 levels there is one candidate, the full range: minmax. 2048 bins give 961 cuts.
_OPTIONS = {"minmax": {"symmetric": False}, "percentile": {"symmetric": False},
            "entropy": {"symmetric": False, "num_bins": 2048, "num_quantized_bins": 128}}


class ArrayReader:
    """A ``CalibrationDataReader`` over an in-memory array, in batches the model accepts."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int):
        self.input_name, self.x, self.batch, self.position = input_name, x, batch, 0

    def get_next(self):
        if self.position >= len(self.x):
            return None
        chunk = self.x[self.position:self.position + self.batch]
        self.position += self.batch
        return {self.input_name: chunk}

    def rewind(self):
        self.position = 0


class _Source:
    """Calibration data as batches, from an array or streamed from an .npz, so that a file of
    gigabytes is never held whole: ``shape``, ``dtype`` and ``batches(n)``."""

    def __init__(self, data, uint8: bool):
        if isinstance(data, (str, os.PathLike)):
            from runtime.dataset import NpzArray

            path = Path(data)
            try:
                self.array = NpzArray(path, "x")
            except TinyconvError as exc:
                raise TinyconvError(str(exc).replace(": no array", ": calibration file has no "
                                                     "array", 1)) from None
            self.what = f"{path}: calibration data"
        else:
            self.array, self.what = np.asarray(data), "calibration data"
        self.shape, self.dtype, self.uint8 = tuple(self.array.shape), self.array.dtype, uint8
        _as_float(np.zeros(0, self.dtype), uint8, self.what)

    def batches(self, batch: int):
        if isinstance(self.array, np.ndarray):
            parts = (self.array[i:i + batch] for i in range(0, len(self.array), batch))
        else:
            parts = self.array.batches(batch)
        for part in parts:
            x = _as_float(part, self.uint8, self.what)
            if not np.all(np.isfinite(x)):
                raise TinyconvError("calibration data holds NaN or infinity")
            yield x


class _Chunk:
    """At most ``count`` batches of a shared iterator: one ``collect_data`` call. onnxruntime's
    calibrators keep every batch's activations until the call ends; chunks bound that memory,
    and ranges (and histograms) merge across calls."""

    def __init__(self, input_name: str, batches, count: int, bar):
        self.input_name, self.batches, self.left, self.bar = input_name, batches, count, bar
        self.exhausted = False

    def get_next(self):
        if self.left == 0:
            return None
        x = next(self.batches, None)
        if x is None:
            self.exhausted = True
            return None
        self.left -= 1
        self.bar.update(len(x))
        return {self.input_name: x}


def load_calibration(source, uint8: bool = False) -> np.ndarray:
    """The array ``x`` of an .npz file (or an array given directly), as float32.

    uint8 data is refused unless ``uint8``: it is nearly always images of 0..255 for a model
    trained on 0..1, which then calibrates every range 255 times too wide."""
    if isinstance(source, np.ndarray):
        return _as_float(source, uint8, "calibration data")
    path = Path(source)
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files:
                raise TinyconvError(f"{path}: calibration file has no array 'x' "
                                    f"(it has {', '.join(data.files) or 'none'})")
            return _as_float(data["x"], uint8, f"{path}: calibration data")
    except TinyconvError:
        raise
    except Exception as exc:
        raise TinyconvError(f"{path}: cannot read calibration data ({exc})") from None


def _as_float(x, uint8: bool, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype == np.uint8 and not uint8:
        raise TinyconvError(f"{what} is uint8 (0..255?): scale it as the model was trained "
                            "(e.g. x / 255 as float32), or pass --uint8-calibration if the "
                            "model really takes 0..255")
    return x.astype(np.float32, copy=False)


def _check_data(shape: tuple, input_info) -> None:
    dims = [d.dim_value if d.HasField("dim_value") else -1
            for d in input_info.type.tensor_type.shape.dim]
    if len(shape) != len(dims) or any(d > 0 and d != s for d, s in zip(dims[1:], shape[1:])):
        raise TinyconvError(f"calibration data has shape {list(shape)} but model input "
                            f"{input_info.name!r} expects {['N'] + dims[1:]}")
    if shape[0] == 0:
        raise TinyconvError("calibration data is empty")


def _even_batch(count: int) -> int:
    """The largest batch of at most 32 that divides ``count``: onnxruntime's histogram
    collectors (percentile, entropy) stack per-batch outputs and fail on a short last batch."""
    return max(d for d in range(1, min(_BATCH, count) + 1) if count % d == 0)


def _chunks(input_name: str, batches, count: int, bar):
    """Readers of ``count`` batches each until the batches run out (see _Chunk)."""
    while True:
        chunk = _Chunk(input_name, batches, count, bar)
        yield chunk
        if chunk.exhausted:
            return
        # peek: a chunk that ended exactly at the last batch must not start an empty one
        following = next(batches, None)
        if following is None:
            return
        batches = itertools.chain([following], batches)


def calibrate(model: onnx.ModelProto, data, method: str = "minmax", uint8: bool = False
              ) -> dict[str, tuple[float, float]]:
    """(min, max) of every float tensor of ``model`` over the calibration data.

    ``data`` is an array in the model's input layout, an .npz path, or any object with
    onnxruntime's ``CalibrationDataReader`` interface (``get_next()``); uint8 data needs
    ``uint8`` (see load_calibration)."""
    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise TinyconvError(f"unknown calibration method {method!r}; choose one of "
                            f"{', '.join(METHODS)}")
    input_info = model.graph.input[0]
    if hasattr(data, "get_next"):
        readers, total, batch = iter([data]), None, None
    else:
        source = _Source(data, uint8)
        _check_data(source.shape, input_info)
        total = source.shape[0]
        batch_dim = input_info.type.tensor_type.shape.dim[0]
        batch = batch_dim.dim_value if batch_dim.HasField("dim_value") else _even_batch(total)
        batches = source.batches(batch)
    bar = Progress(total, f"calibrating ({method})")
    if batch is not None:
        readers = _chunks(input_info.name, batches, max(1, _CHUNK[method] // batch), bar)
    with tempfile.TemporaryDirectory(prefix="tinyconv-calib-") as tmp:
        model_path = os.path.join(tmp, "model.onnx")
        onnx.save(model, model_path)
        try:
            calibrator = create_calibrator(
                model_path, augmented_model_path=os.path.join(tmp, "augmented.onnx"),
                calibrate_method=methods[method], extra_options=_OPTIONS[method])
            with contextlib.redirect_stdout(io.StringIO()):  # onnxruntime prints progress
                for reader in readers:
                    calibrator.collect_data(reader)
                ranges = calibrator.compute_data()
        except TinyconvError:
            raise
        except Exception as exc:
            raise TinyconvError(f"calibration failed: {str(exc).splitlines()[0]}") from None
        finally:
            bar.close()
    return {name: (float(np.min(value.range_value[0])), float(np.max(value.range_value[1])))
            for name, value in ranges.data.items()}
