"""The Python API of export/: a trained model in, every artifact the device flow needs out.

    result = export.from_onnx("net.onnx", "calib.npz", requant="float")
    result.save("build/net")   # model.onnx, model.q.onnx, model.tcm, model_data.c/.h, report.json
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export import calibrate as _calibrate
from export.c_codegen import write_c_sources
from export.graph import FloatGraph
from export.onnx_clean import clean_model
from export.onnx_import import load_model, to_graph
from export.plan import plan_arena
from export.qimport import dequantize_model, is_quantized
from export.qonnx import to_qonnx
from export.qonnx_check import stamp
from export.quantize import quantize
from export.report import build_report, format_report
from export.swap import MANIFEST, locked, new_prefix, recover, swap
from export.tflm_arena import tflm_entry
from runtime.errors import TinyconvError
from runtime.model import UMASK, QuantModel

@dataclass
class ExportResult:
    float_model: onnx.ModelProto | None  # model.onnx (None for a .tflite source)
    quant_onnx: onnx.ModelProto | None  # model.q.onnx (None where onnxruntime cannot run it)
    model: QuantModel  # model.tcm
    report: dict  # report.json
    graph: FloatGraph | None  # the float layers, for tooling
    # model.tflite for --against tflm: the source, or the one export/tflite_writer.py wrote
    tflite: bytes | None = None

    def table(self) -> str:
        return format_report(self.report)

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write every artifact into ``out_dir``, all or nothing: afterwards either the complete
        new export is there, or the previous one (or none) is left untouched; a save killed
        mid-way is settled by the next one (export/swap.py).

        tinyconv replaces only what it wrote there (the names in MANIFEST); the user's own
        files beside them (the source model, calibration data, notes) stay. A directory holding
        other files but no export is refused, and so is an artifact name taken by a file
        tinyconv did not write. A symbolic link is followed, never replaced."""
        out_dir = Path(out_dir)
        target = Path(os.path.realpath(out_dir))
        made: list[Path] = []
        try:
            made = _make_dirs(target.parent)
            with locked(target.parent, target):
                recover(target)
                self._write(target)
        except BaseException as exc:
            for directory in reversed(made):  # nothing written: not even the folders
                with suppress(OSError):
                    directory.rmdir()
            if isinstance(exc, OSError):
                raise TinyconvError(f"cannot write {out_dir}: {exc.strerror or exc}") from None
            raise
        return out_dir

    def _write(self, target: Path) -> None:
        owned = _owned_artifacts(target)
        anchor = target if target.is_dir() else target.parent
        tmp = Path(tempfile.mkdtemp(dir=anchor, prefix=new_prefix(target)))
        try:
            os.chmod(tmp, 0o777 & ~UMASK)
            if self.float_model is not None:
                onnx.save(self.float_model, tmp / "model.onnx")
            if self.quant_onnx is not None:
                onnx.save(self.quant_onnx, tmp / "model.q.onnx")
            if self.tflite is not None:
                (tmp / "model.tflite").write_bytes(self.tflite)
            (tmp / "model.tcm").write_bytes(self.model.to_bytes())
            (tmp / "report.json").write_text(json.dumps(self.report, indent=2) + "\n")
            write_c_sources(self.model, tmp)
            names = sorted(p.name for p in tmp.iterdir())
            (tmp / MANIFEST).write_text(json.dumps({"artifacts": names}, indent=1) + "\n")
            if not target.exists():
                os.replace(tmp, target)
            else:
                _clashes(target, names, owned)
                swap(tmp, target, [*names, MANIFEST], owned | {MANIFEST})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


_LEGACY = {"model.onnx", "model.q.onnx", "model.tcm", "report.json", "model_data.c",
           "model_data.h"}  # an export from before the manifest existed


def _make_dirs(directory: Path) -> list[Path]:
    """Create ``directory`` and its missing parents; the ones created, outermost first."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()][::-1]
    made = []
    for d in missing:
        try:
            d.mkdir()
            made.append(d)
        except FileExistsError:
            pass
    return made


def _owned_artifacts(target: Path) -> set[str]:
    """The names in ``target`` that an earlier export wrote (empty for a new directory)."""
    if not target.exists():
        return set()
    if not target.is_dir():
        raise TinyconvError(f"{target} exists and is not a directory")
    manifest = target / MANIFEST
    if manifest.is_file():
        try:
            names = json.loads(manifest.read_text())["artifacts"]
        except (OSError, ValueError, KeyError, TypeError):
            raise TinyconvError(f"{manifest} is damaged; remove it or choose another --out"
                                ) from None
        # export writes plain files only: a folder of the same name is the user's
        return {n for n in names if isinstance(n, str) and n == Path(n).name
                and n not in ("", ".", "..") and not (target / n).is_dir()}
    if (target / "model.tcm").is_file():
        return set(_LEGACY)
    if any(target.iterdir()):
        raise TinyconvError(f"{target} is not empty and holds no tinyconv export (no model.tcm); "
                            "choose another --out")
    return set()


def check_output(path, *, reads=(), export_dir=None) -> None:
    """Refuse an output file that is one the command reads (``reads``: the dataset, by any
    name, links included) or an artifact of the export in use: the command would otherwise
    replace the user's data, or the model it just ran, with its results."""
    path = Path(path)
    if not path.exists():
        return
    for source in reads:
        if _same(path, source):
            raise TinyconvError(f"{path} is the --input {source}: write the output elsewhere")
    if export_dir is None:
        return
    export_dir = Path(export_dir)
    export_dir = export_dir if export_dir.is_dir() else export_dir.parent
    try:
        names = set(json.loads((export_dir / MANIFEST).read_text())["artifacts"])
    except (OSError, ValueError, KeyError, TypeError):
        names = set()
    for name in sorted({*names, *_LEGACY, "model.tflite", MANIFEST} - {""}):
        if isinstance(name, str) and _same(path, export_dir / name):
            raise TinyconvError(f"{path} is the export's {name}: write the output elsewhere")


def _same(a: Path, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except (OSError, ValueError):
        return False


def _clashes(target: Path, names, owned: set[str]) -> None:
    for name in names:
        if name not in owned and os.path.lexists(target / name):
            raise TinyconvError(f"{target / name} was not written by tinyconv; move it or "
                                "choose another --out")


def from_onnx(source, calibration, *, requant: str = "fixed", per_channel: bool = True,
              method: str = "minmax", name: str | None = None,
              uint8_calibration: bool = False) -> ExportResult:
    """Import, calibrate, quantize and plan an ONNX float model (path or ModelProto).

    ``calibration`` is an array in the model's own input layout, an .npz holding one as ``x``,
    or an onnxruntime ``CalibrationDataReader``; it may be None for a model onnxruntime
    already quantized (QDQ or QOperator), whose scales and integers are then used as they are.
    uint8 calibration data is refused unless ``uint8_calibration`` says the model takes 0..255.
    """
    if name is None:
        name = Path(source).stem if isinstance(source, (str, os.PathLike)) else "model"
    _check_name(name)
    source_model = load_model(source)
    quantization, integers = {}, None
    if is_quantized(source_model):  # onnxruntime's scales and integers are kept as they are
        source_model, quantization, integers = dequantize_model(source_model)
    float_model = clean_model(source_model, prequantized=integers is not None)
    graph = to_graph(float_model, integers)
    graph.set_quantization(quantization)
    if calibration is None and not quantization:
        raise TinyconvError("calibration data is required to quantize a float model")
    ranges = {} if calibration is None else _calibrate.calibrate(
        float_model, calibration, method, uint8_calibration)
    metadata = {"source": str(source) if isinstance(source, (str, os.PathLike)) else "ModelProto",
                "calibration_method": method if calibration is not None else None,
                "per_channel": per_channel, "input_layout": graph.boundary.input_layout,
                "prequantized": bool(quantization)}
    model, weight_scales = quantize(graph, ranges, mode=requant, per_channel=per_channel,
                                    name=name, metadata=metadata)
    plan_arena(model)
    q_onnx = stamp(to_qonnx(model, weight_scales, graph.boundary), model)
    report = build_report(model)
    report["tflm"], tflite = tflm_entry(model, weight_scales)
    return ExportResult(float_model, q_onnx, model, report, graph, tflite)


def from_tflite(source, *, name: str | None = None) -> ExportResult:
    """A full-integer int8 .tflite file (path or bytes) as it is: its scales, zero points and
    integers, TFLite Micro's constants (export/tflite_import.py). No calibration."""
    from export.tflite_import import read, to_qonnx_or_reason

    if name is not None:
        _check_name(name)
    imported = read(source, name)
    model = imported.model
    model.validate()  # wiring first: a corrupt file may read a tensor nothing writes
    plan_arena(model)
    model.validate()
    q_onnx, reason = to_qonnx_or_reason(imported)
    if q_onnx is not None:
        q_onnx = stamp(q_onnx, model)
    report = build_report(model)
    report["model_q_onnx"] = "written" if q_onnx is not None else f"not written: {reason}"
    report["tflm"], _ = tflm_entry(model, source=imported.data)
    return ExportResult(None, q_onnx, model, report, None, imported.data)


MAX_NAME_BYTES = 255  # what the device's INFO reply carries (a one-byte length)


def _check_name(name: str) -> None:
    """A longer name would be cut short on the wire, and past 4,095 bytes the firmware does not
    even compile (C99's longest string literal): refused before any work."""
    size = len(name.encode("utf-8", "surrogatepass"))
    if not 0 < size <= MAX_NAME_BYTES:
        raise TinyconvError(f"the model name must be 1 to {MAX_NAME_BYTES} bytes (UTF-8), "
                            f"got {size}")


def filters_model(weights: np.ndarray, bias: np.ndarray | None, input_shape, *,
                  stride: int = 1, padding: int | str = "same", relu: bool = False
                  ) -> onnx.ModelProto:
    """A one-Conv ONNX model from PyTorch-layout filters: weights OIHW, input (C, H, W)."""
    weights = np.asarray(weights, dtype=np.float32)
    if weights.ndim == 3:  # [O, KH, KW]: single-channel filters
        weights = weights[:, None]
    if weights.ndim != 4:
        raise TinyconvError(f"filters must be OIHW (or OHW), got shape {list(weights.shape)}")
    shape = tuple(int(d) for d in input_shape)
    if len(shape) == 2:
        shape = (weights.shape[1], *shape)
    if len(shape) != 3 or shape[0] != weights.shape[1]:
        raise TinyconvError(f"input_shape {list(input_shape)} does not match filters with "
                            f"{weights.shape[1]} input channels (expected (C, H, W))")
    bias = np.zeros(weights.shape[0], np.float32) if bias is None else np.asarray(bias, np.float32)
    if bias.shape != (weights.shape[0],):
        raise TinyconvError(f"bias must have shape [{weights.shape[0]}], got {list(bias.shape)}")
    attrs = {"strides": [stride, stride]}
    if padding == "same":
        attrs["auto_pad"] = "SAME_UPPER"
    else:
        attrs["pads"] = [int(padding)] * 4
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["conv"], name="conv", **attrs)]
    if relu:
        nodes.append(helper.make_node("Relu", ["conv"], ["y"], name="relu"))
    else:
        nodes[0].output[0] = "y"
    graph = helper.make_graph(
        nodes, "filters", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "B")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def from_filters(weights, bias, input_shape, calibration, *, stride: int = 1,
                 padding: int | str = "same", relu: bool = False, **options) -> ExportResult:
    """Export raw conv filters (e.g. 8 learned 3x3 filters, OIHW like PyTorch) as a model.

    ``calibration`` holds sample inputs, NCHW (or [N, H, W] for one channel)."""
    model = filters_model(weights, bias, input_shape, stride=stride, padding=padding, relu=relu)
    if not hasattr(calibration, "get_next"):
        x = _calibrate.load_calibration(calibration, options.get("uint8_calibration", False))
        calibration = x[:, None] if x.ndim == 3 else x
    options.setdefault("name", "filters")
    return from_onnx(model, calibration, **options)
