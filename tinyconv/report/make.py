"""Assemble a report: read the export directory and the data, compute the tables, draw the
pictures, write ``index.html`` and the PNGs into the report directory in one atomic step."""
from __future__ import annotations

import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import numpy_helper

import runtime
from runtime.dataset import class_labels, label_classes
from runtime.errors import TinyconvError
from runtime.inputs import float_input, float_output_to_nhwc, quantize_input
from runtime.model import QuantModel
from tinyconv.report import figures, page, quality
from tinyconv.report.verified import verify_rows


@dataclass
class Report:
    """What ``make_report`` wrote, for callers that print or test it."""

    out_dir: Path
    results: list[quality.Result]
    files: list[str]
    device_outputs: np.ndarray | None = None  # int8, the pictured inputs, when a device ran


def load_inputs(path: Path, want_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """``x`` (float inputs in model.onnx's layout) and, with ``want_labels``, ``y``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if "x" not in data.files:
                raise TinyconvError(f"{path}: no array 'x' (it has "
                                    f"{', '.join(data.files) or 'none'})")
            x = np.asarray(data["x"])
            if not want_labels:
                return x, None
            if "y" not in data.files:
                raise TinyconvError(f"{path}: --labels given but there is no array 'y'")
            y = np.asarray(data["y"])  # checked by make_report (runtime.dataset)
    except (OSError, zipfile.BadZipFile) as exc:  # a truncated or damaged file
        raise TinyconvError(f"cannot read {path}: {exc}") from None
    except ValueError as exc:
        raise TinyconvError(f"{path}: not a readable .npz file ({exc})") from None
    return x, y


def checked_inputs(model: QuantModel, x: np.ndarray, path) -> np.ndarray:
    """What run and verify take (float, NCHW or NHWC), in model.onnx's layout; the report
    compares with the float model, so int8 codes do not do. An empty file, another dtype, a
    wrong shape or NaN is one line, as in run and verify, not an error inside onnxruntime."""
    if x.ndim == 0:
        raise TinyconvError(f"{path}: array 'x' is a scalar, not a batch")
    if len(x) == 0:
        raise TinyconvError(f"{path}: array 'x' holds no inputs")
    if not np.issubdtype(x.dtype, np.floating):
        raise TinyconvError(f"{path}: 'x' is {x.dtype}; the report compares int8 with the float "
                            "model and takes float inputs, as in training")
    try:
        quantize_input(model, x)
    except TinyconvError as exc:
        raise TinyconvError(f"{path}: {exc}") from None
    return float_input(model, x)


def first_conv_filters(onnx_path: Path, model: QuantModel) -> tuple[np.ndarray, np.ndarray]:
    """The first conv layer's float filters (ONNX OIHW) and its int8 codes, in the same layout."""
    layer = next((l for l in model.layers if l.op == "conv2d"), None)
    if layer is None:
        raise TinyconvError(f"{model.name}: no conv layer to picture")
    graph = onnx.load(str(onnx_path)).graph
    initializers = {i.name: i for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    node = next((n for n in convs if n.name == layer.name), convs[0] if convs else None)
    if node is None or node.input[1] not in initializers:
        raise TinyconvError(f"{onnx_path}: cannot find the weights of conv {layer.name!r}")
    float_w = numpy_helper.to_array(initializers[node.input[1]])
    int8_w = layer.arrays["weights"].transpose(0, 3, 1, 2)  # OHWI -> OIHW
    if float_w.shape != int8_w.shape:
        raise TinyconvError(f"{onnx_path}: conv {node.name!r} weights {list(float_w.shape)} do "
                            f"not match the int8 layer's {list(int8_w.shape)}")
    return float_w, int8_w


def _picture_of(sample: np.ndarray) -> np.ndarray:
    """One input as a 2-D image: channels averaged, whichever axis holds them."""
    if sample.ndim == 3:
        channel_axis = 0 if sample.shape[0] <= 4 else -1
        return sample.mean(axis=channel_axis)
    return sample.reshape(1, -1) if sample.ndim == 1 else sample


def memory_fact(export_dir: Path, model: QuantModel) -> str:
    """tinyconv's arena beside TFLite Micro's for the same model (report.json's ``tflm``,
    written by export), or why TFLM's is not known."""
    import json

    from export.report import tflm_line

    try:
        tflm = json.loads((export_dir / "report.json").read_text()).get("tflm")
    except (OSError, ValueError, AttributeError):
        tflm = None
    if not isinstance(tflm, dict):
        tflm = {"arena_bytes": None, "reason": "report.json has no tflm entry (exported before "
                                               "it was measured)"}
    return tflm_line(tflm, model.arena_size)


def make_report(export_dir: Path, inputs: Path, out_dir: Path, *, labels: bool = False,
                calibration: Path | None = None, pictured: int = 3,
                device: str | None = None, device_outputs: np.ndarray | None = None,
                verify_json: Path | None = None, say: Callable[[str], None] = print) -> Report:
    """Write the report for the model in ``export_dir`` evaluated on ``inputs``.

    ``calibration`` (an .npz with ``x``) calibrates the re-exports; by default the inputs do,
    which flatters them (calibrated on the data they are scored on): said on stderr and the
    page. ``verify_json`` (written by ``tinyconv verify --json``) adds the device's verdict.
    The device's outputs for the pictured inputs join outputs.png when ``device`` (a target or
    pyserial URL, as ``tinyconv verify --device`` takes) or ``device_outputs`` (int8, one row
    per pictured input) is given."""
    export_dir, out_dir = Path(export_dir), Path(out_dir)
    onnx_path = export_dir / "model.onnx"
    if not onnx_path.is_file():
        raise TinyconvError(f"{export_dir}: no model.onnx (is it a tinyconv export directory?)")
    page.check_out_dir(out_dir)  # before the re-exports: minutes of work, then a refusal
    if device is not None:
        from firmware_host.devices import resolve_device

        resolve_device(device, export_dir)  # a typo, likewise
    model = runtime.load(export_dir)
    x, y = load_inputs(Path(inputs), labels)
    x = checked_inputs(model, x, inputs)
    if y is not None:
        y, note = class_labels(y, len(x), label_classes(model), str(inputs))
        if note:
            say(f"report: note: {note}")
    verification = [] if verify_json is None else verify_rows(Path(verify_json), model.hash)
    cal = x if calibration is None else checked_inputs(
        model, load_inputs(Path(calibration), False)[0], calibration)
    warnings = [] if calibration is not None else [
        "The int8 re-exports are calibrated on the test inputs (--input), which they are then "
        "scored on: their accuracy is optimistic. Pass --calibration with separate data."]
    for warning in warnings:
        print(f"report: warning: {warning}", file=sys.stderr)
    say(f"report: {model.name}, {len(x)} inputs, {len(quality.CONFIGS)} int8 configurations")
    results = quality.compare_configs(export_dir, model, x, y, cal,
                                      on_step=lambda label: say(f"report: exporting {label}"))

    pictured = max(1, min(pictured, len(x)))
    floats = quality.float_activations(onnx_path, x[:pictured])
    int8 = quality.int8_activations(model, x[:pictured])
    files: dict[str, bytes] = {}
    images: list[tuple[str, str]] = []

    conv_outputs = [l.output for l in model.layers if l.op == "conv2d" and l.output in floats]
    if conv_outputs:  # a fully connected model has neither filters nor feature maps
        float_w, int8_w = first_conv_filters(onnx_path, model)
        files["filters.png"] = figures.filters_png(float_w, int8_w)
        images.append(("filters.png", "Learned first-layer filters: float weights and int8 codes"))
    for i in range(pictured if conv_outputs else 0):
        maps = [(name, float_output_to_nhwc(model, floats[name][i:i + 1], name)[0],
                 int8[name][i]) for name in conv_outputs]
        caption = f"input {i}" + ("" if y is None else f" (label {y[i]})")
        files[f"features_{i}.png"] = figures.features_png(_picture_of(x[i]), maps,
                                                          f"{caption}: feature maps after each "
                                                          "conv layer, float vs int8")
        images.append((f"features_{i}.png", f"Feature maps of {caption}"))

    out_spec = model.output_spec
    float_out = floats[quality.float_output_name(onnx_path)].reshape(pictured, -1)
    int8_out = int8[model.output].reshape(pictured, -1)
    if device is not None and device_outputs is None:
        from tinyconv.report.device import device_outputs as fetch

        say(f"report: running the {pictured} pictured inputs on device {device}")
        device_outputs = fetch(export_dir, model, device,
                               quantize_input(model, x[:pictured]))
    device_out = None
    if device_outputs is not None:
        from runtime import kernels

        device_out = kernels.dequantize(
            np.asarray(device_outputs, np.int8).reshape(pictured, -1), out_spec.scale,
            out_spec.zero_point)
    files["outputs.png"] = figures.outputs_png(
        float_out, int8_out, device_out,
        [None] * pictured if y is None else [int(v) for v in y[:pictured]])
    images.append(("outputs.png", "Model outputs of the pictured inputs"))

    facts = [("model", f"{model.name} (hash {model.hash}, requant {model.requant_mode})"),
             ("export directory", str(export_dir)), ("inputs", f"{inputs} ({len(x)} samples)"),
             ("calibration of the re-exports",
              str(calibration) if calibration else f"{inputs} (the test inputs themselves)"),
             ("labels", "yes" if y is not None else "no"),
             ("device outputs", device or ("given" if device_outputs is not None else "none")),
             ("RAM (arena)", memory_fact(export_dir, model))]
    layers = [(l.op, l.output) for l in model.layers]
    files["index.html"] = page.render(f"tinyconv report: {model.name}", facts, results, layers,
                                      images, verification, warnings).encode()
    page.write_dir_atomic(out_dir, files)
    return Report(out_dir, results, sorted(files), device_outputs)


def format_table(results: list[quality.Result]) -> str:
    """The accuracy table as Markdown, for the terminal and docs/QUANTIZATION.md."""
    width = max(len(r.label) for r in results)
    lines = [f"| {'model':<{width}} | top-1 accuracy | top-1 = float | output SQNR (dB) |",
             f"|{'-' * (width + 2)}|---------------:|--------------:|-----------------:|"]
    for r in results:
        lines.append(f"| {r.label:<{width}} | {page.percent(r.accuracy):>14} | "
                     f"{page.percent(r.agreement):>13} | {page.decibels(r.output_sqnr):>16} |")
    lines += [f"{r.label}: export failed: {r.error}" for r in results if r.error]
    return "\n".join(lines)


def format_layer_table(results: list[quality.Result], model: QuantModel) -> str:
    """SQNR per layer (rows) and int8 configuration (columns), as Markdown."""
    int8 = [r for r in results if r.layer_sqnr]
    lines = ["| layer | " + " | ".join(r.label for r in int8) + " |",
             "|---|" + "---:|" * len(int8)]
    for layer in model.layers:
        cells = [page.decibels(r.layer_sqnr[layer.output]) if layer.output in r.layer_sqnr
                 else "—" for r in int8]
        lines.append(f"| {layer.op} → `{layer.output}` | " + " | ".join(cells) + " |")
    return "\n".join(lines)
