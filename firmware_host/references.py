"""The host's answers that a device's outputs are compared with: runtime/ (the verdict),
onnxruntime on ``model.q.onnx`` (a second, independent int8 implementation, which gates the
verdict too: the whole output in float requantization mode, layer by layer on runtime/'s own
layer inputs for the first LAYER_SAMPLE images of every batch in fixed mode) and onnxruntime on
the float ``model.onnx`` (what quantization cost). For a model exported from a .tflite file,
TFLM on ``model.tflite`` gates instead of onnxruntime (runtime/ == TFLM on every output element)
and LiteRT's optimized kernels are reported. A fixed-mode ONNX model whose export wrote a
``model.tflite`` (export does so only when TFLM computes the model exactly) is checked against
TFLM on the first LAYER_SAMPLE images of every batch, and onnxruntime gates as well.

verify computes them for one batch on a worker thread while the device works on the previous
one, so everything here is per batch and holds no state beyond the loaded models.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

import runtime
from runtime.errors import TinyconvError
from runtime.inputs import float_input, float_output_to_nhwc, quantize_input, saturated
from runtime.model import QuantModel

LAYER_SAMPLE = 8  # images per batch whose every layer is checked against onnxruntime (fixed)


class BadInput(TinyconvError):
    """Input ``index`` (of the whole run) cannot be sent; the ones before it can."""

    def __init__(self, index: int, why: str):
        super().__init__(f"input {index} {why}")
        self.index = index


@dataclass
class Batch:
    start: int  # index of the first input in the whole run
    x_q: np.ndarray  # int8, the model's layout (NHWC): what the device and runtime/ take
    x_f: np.ndarray  # float32, model.onnx's layout: what onnxruntime takes
    labels: np.ndarray | None
    clipped: np.ndarray  # per input, float values quantization clips (0 for int8 codes)
    values: int  # float values per input (0 for int8 codes)


class References:
    """The reference models of one export directory; ``model.q.onnx`` and ``model.onnx`` are
    optional (``q_onnx`` / ``float_session`` is then None and that comparison is skipped)."""

    def __init__(self, export_dir: Path, model: QuantModel):
        import onnx

        from export.qonnx_check import LayerRunner, check_matches

        self.model = model
        self.q_onnx = None
        self.float_session = None
        self.layers = None  # LayerRunner, fixed mode only
        self.q_stamped = False  # model.q.onnx names model.tcm's hash and its own digest
        q_path, f_path = export_dir / "model.q.onnx", export_dir / "model.onnx"
        if not q_path.exists() and _export_wrote(export_dir, q_path.name):
            raise TinyconvError(f"{q_path} is missing, but the export wrote it and onnxruntime "
                                "on it gates the verdict: restore it or export again")
        try:
            if q_path.exists():
                self.q_onnx = onnx.load(str(q_path))
            if f_path.exists():
                import onnxruntime as ort

                options = ort.SessionOptions()
                options.intra_op_num_threads = 1
                self.float_session = ort.InferenceSession(str(f_path), options,
                                                          providers=["CPUExecutionProvider"])
        except Exception as exc:  # a broken ONNX file is the user's, not ours
            raise TinyconvError(f"{export_dir}: cannot load the ONNX models ({exc})") from None
        if self.float_session is not None:
            self._probe_float(f_path)
        if self.q_onnx is not None:
            self.q_stamped = check_matches(self.q_onnx, model, q_path)
            if model.requant_mode != "float":
                self.layers = LayerRunner(self.q_onnx, model)
        self.tflm = self.litert = None  # their interpreters on model.tflite, when there is one
        self.tflite_notes: list[str] = []
        self.tflite = model.metadata.get("source_format") == "tflite"
        if self.tflite:
            self._load_tflite(export_dir / "model.tflite")
        elif _export_wrote(export_dir, "model.tflite"):
            self._load_tflite(export_dir / "model.tflite", required=False)

    def _probe_float(self, path: Path) -> None:
        """model.onnx carries no stamp: one input through it now, so that a file edited or
        replaced after export is one line before any device starts, not onnxruntime's error
        in the middle of the run."""
        x = float_input(self.model, np.zeros((1, *self.model.input_spec.shape), np.int8))
        try:
            y = self.float_session.run(None, {self.float_session.get_inputs()[0].name: x})[0]
            float_output_to_nhwc(self.model, y)
        except Exception as exc:
            raise TinyconvError(f"{path} does not run on the input model.tcm takes, or gives "
                                f"another output ({type(exc).__name__}: "
                                f"{str(exc).strip().splitlines()[0]}): restore it or export "
                                "again") from None

    @property
    def ort_gates(self) -> bool:
        """onnxruntime's float requantization is not TFLM's integer arithmetic (several LSB
        apart): for a model from a .tflite file it is reported, TFLM gates instead."""
        return not self.tflite

    def _load_tflite(self, path: Path, required: bool = True) -> None:
        """TFLM (gating) and LiteRT (reported) on the export's model.tflite: the source of a
        TFLite model (``required``), or the file export wrote for a fixed-mode ONNX model
        because TFLM computes it exactly (export/tflm_arena.py), so TFLM gates there too,
        beside onnxruntime (no LiteRT then); without the tflite-micro package that check is
        skipped, and the report says so."""
        from export.tflite_reference import OutputReference

        if not path.exists():
            why = ("a model exported from a .tflite file is verified against TFLM on it"
                   if required else "the export wrote it, and TFLM on it gates the verdict")
            raise TinyconvError(f"{path} is missing: {why} (restore it or export again)")
        data = path.read_bytes()
        try:
            self.tflm = OutputReference(data, self.model, "tflm")
        except ImportError:
            if not required:
                self.tflite_notes.append("tflite-micro is not installed: no TFLM comparison")
                return
            raise TinyconvError("verifying a TFLite model needs the tflite-micro package "
                                "(pip install tflite-micro)") from None
        if not required:  # onnxruntime is this model's second implementation already
            return
        try:
            self.litert = OutputReference(data, self.model, "litert")
        except ImportError:
            self.tflite_notes.append("ai-edge-litert is not installed: no LiteRT comparison")

    def batch(self, start: int, x: np.ndarray, labels) -> Batch:
        """Bring a batch to int8 NHWC (for the device and runtime/) and float in the ONNX
        layout (for onnxruntime). Raises BadInput naming the first input holding NaN or
        infinity, so that the ones before it can still be verified."""
        if np.issubdtype(np.asarray(x).dtype, np.floating):
            finite = np.isfinite(np.asarray(x).reshape(len(x), -1)).all(axis=1)
            if not finite.all():
                raise BadInput(start + int(np.argmin(finite)), "holds NaN or infinity")
        try:
            x_q = quantize_input(self.model, x)
        except TinyconvError as exc:
            raise TinyconvError(f"inputs {start}..{start + len(x) - 1}: {exc}") from None
        floating = np.issubdtype(np.asarray(x).dtype, np.floating)
        return Batch(start, x_q, float_input(self.model, x), labels, saturated(self.model, x),
                     int(np.asarray(x[0]).size) if floating else 0)

    def compute(self, batch: Batch) -> dict[str, np.ndarray]:
        """``runtime`` always; ``ort`` (int8) and ``float`` (NHWC like runtime/'s output) when
        the export directory has the model for them; ``layers`` (per layer, the largest
        onnxruntime - runtime/ difference in LSB over ``layer_images`` images) in fixed mode."""
        from export.qonnx import run_qonnx

        out = {"runtime": runtime.run(self.model, batch.x_q)}
        if self.layers is not None:
            sample = batch.x_q[:LAYER_SAMPLE]
            out["layers"] = self.layers.max_lsb(runtime.run(self.model, sample, collect=True)[1])
            out["layer_images"] = len(sample)
        if self.q_onnx is not None:
            out["ort"] = run_qonnx(self.q_onnx, self.model, batch.x_f)
        if self.tflm is not None:
            x_f = np.asarray(batch.x_f, np.float32).reshape(batch.x_q.shape)
            # a TFLite source: every image; beside onnxruntime: LAYER_SAMPLE images a batch
            # (TFLM's reference kernels cost more host CPU than runtime/ and onnxruntime
            # together, which a farm of QEMU boards cannot spare)
            n = len(batch.x_q) if self.tflite else LAYER_SAMPLE
            out["tflm"] = self.tflm(x_f[:n], batch.x_q[:n])
            if self.litert is not None:
                out["litert"] = self.litert(x_f, batch.x_q)
        if self.float_session is not None:
            name = self.float_session.get_inputs()[0].name
            y = self.float_session.run(None, {name: batch.x_f})[0]
            out["float"] = float_output_to_nhwc(self.model, y)
        return out


def _export_wrote(export_dir: Path, name: str) -> bool:
    """``name`` is one of the artifacts export listed in its manifest (a file the user put
    there is not an oracle)."""
    import json

    from export.api import MANIFEST

    try:
        return name in json.loads((export_dir / MANIFEST).read_text())["artifacts"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
