"""What a verify run found: ``VerifyResult`` (the numbers, the per-image records, the printed
summary and the JSON report) and ``Tally``, which folds one batch of device outcomes and host
references after another into it.

The statistics stream: a run over a million images keeps sums and at most MAX_RECORDS records,
never the outputs.
"""
from __future__ import annotations

import math
import sys
from dataclasses import asdict, dataclass, field

import numpy as np

from firmware_host.references import Batch
from runtime import kernels
from runtime.inputs import saturation_warning
from runtime.model import QuantModel
from runtime.metrics import SqnrAccumulator

MAX_RECORDS = 1000  # per-image mismatch records kept for the JSON report
LAYER_BOUND_LSB = 1  # float vs integer requantization: at most 1 LSB apart per layer


@dataclass
class VerifyResult:
    """The summary of one run; ``exit_status`` is 0 only when every device output == runtime's."""

    model: str
    model_hash: str
    device: str
    target: str
    requant_mode: str
    inputs: int = 0  # how many the run was given
    images: int = 0  # how many were verified (all of the inputs, unless the run was aborted)
    device_equal_images: int = 0
    device_equal_elements: int = 0
    elements: int = 0
    failed_images: int = 0  # no valid reply after every retry
    ort_images: int | None = None  # images compared with onnxruntime (None: no model.q.onnx)
    ort_equal_images: int = 0
    ort_max_lsb: int = 0
    ort_failed_images: int = 0  # float mode: device != onnxruntime (fails the run)
    ort_layer_images: int | None = None  # fixed mode: images checked layer by layer
    ort_layer_max_lsb: dict = field(default_factory=dict)  # layer -> largest |ort - runtime/|
    ort_gating: bool = True  # False for a TFLite source: TFLM gates, onnxruntime is reported
    tflm_images: int | None = None  # TFLite source: runtime/ vs TFLM on model.tflite
    tflm_equal_images: int = 0
    tflm_max_lsb: int = 0
    litert_images: int | None = None  # TFLite source: device vs LiteRT (reported)
    litert_equal_elements: int = 0
    litert_elements: int = 0
    litert_max_lsb: int = 0
    input_values: int = 0  # float input values of the verified images (0: int8 codes given)
    input_clipped: int = 0  # of those, how many quantization clipped
    labelled_images: int = 0
    correct_float: int = 0
    correct_runtime: int = 0
    correct_device: int = 0
    float_images: int | None = None  # images compared with the float model (None: no model.onnx)
    sqnr_db: float | None = None
    cosine: float | None = None
    seconds: float = 0.0
    ticks_unit: str = ""
    ticks_total: int = 0
    ticks_count: int = 0
    total_macs: int = 0
    link: dict = field(default_factory=dict)
    mismatches: list = field(default_factory=list)  # per-image records (first MAX_RECORDS)
    mismatch_count: int = 0
    retried: list = field(default_factory=list)  # per-image retry records
    notes: list = field(default_factory=list)
    aborted: str | None = None  # why the run stopped early (a silent device, a NaN input)
    unfinished: list = field(default_factory=list)  # requests in flight when it gave up
    devices: list = field(default_factory=list)  # per-device figures of a sharded run

    @property
    def gates(self) -> list[str]:
        """The comparisons that decide the verdict, in words."""
        gates = ["device == runtime/ on every image"]
        if self.tflm_images is not None:
            which = "every image" if self.tflm_images == self.images else \
                f"{self.tflm_images} sampled images"
            gates.append(f"runtime/ == TFLM (model.tflite) on every element of {which}")
        if self.ort_images is not None and self.requant_mode == "float" and self.ort_gating:
            gates.append("device == onnxruntime (model.q.onnx) on every image")
        if self.ort_layer_images is not None and self.ort_gating:
            gates.append(f"onnxruntime layer by layer on runtime/'s inputs within "
                         f"{LAYER_BOUND_LSB} LSB ({self.ort_layer_images} sampled images)")
        return gates

    @property
    def failed_layers(self) -> dict[str, int]:
        if not self.ort_gating:
            return {}
        return {k: v for k, v in self.ort_layer_max_lsb.items() if v > LAYER_BOUND_LSB}

    @property
    def exit_status(self) -> int:
        """0: every device output == runtime/'s and onnxruntime agrees (see ``gates``); 1: some
        differ or got no reply; 2: the run was aborted (the device stopped answering, or an
        input could not be sent)."""
        if self.aborted is not None:
            return 2
        ok = (self.images > 0 and self.device_equal_images == self.images
              and self.ort_failed_images == 0 and not self.failed_layers
              and (self.tflm_images is None or self.tflm_equal_images == self.tflm_images))
        return 0 if ok else 1

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    @property
    def ticks_per_inference(self) -> float | None:
        return self.ticks_total / self.ticks_count if self.ticks_count else None

    @property
    def ticks_per_mac(self) -> float | None:
        t = self.ticks_per_inference
        return t / self.total_macs if t is not None and self.total_macs else None

    @property
    def input_saturation(self) -> float | None:
        return self.input_clipped / self.input_values if self.input_values else None

    @property
    def saturation_warning(self) -> str | None:
        return saturation_warning(self.input_clipped, self.input_values)

    def accuracy(self, which: str) -> float | None:
        if not self.labelled_images:
            return None
        return getattr(self, f"correct_{which}") / self.labelled_images

    def as_dict(self) -> dict:
        data = asdict(self)
        for key in ("exit_status", "images_per_s", "ticks_per_inference", "ticks_per_mac",
                    "gates", "failed_layers", "input_saturation", "saturation_warning"):
            data[key] = getattr(self, key)
        data["accuracy"] = {k: self.accuracy(k) for k in ("float", "runtime", "device")}
        for key in ("sqnr_db",):  # JSON has no infinity
            if data[key] is not None and not math.isfinite(data[key]):
                data[key] = str(data[key])
        return data

    def print_summary(self, file=None) -> None:
        file = file or sys.stdout
        n = max(self.images, 1)
        rows = [
            ("model", f"{self.model} {self.model_hash} ({self.requant_mode})"),
            ("device", f"{self.device} (target {self.target})"),
            ("images", f"{self.images}" + (f", {self.failed_images} without a valid reply"
                                           if self.failed_images else "")),
            ("device == runtime", f"{self.device_equal_images}/{self.images} images "
             f"({100 * self.device_equal_images / n:.2f} %), {self.device_equal_elements}/"
             f"{self.elements} elements"),
        ]
        if self.input_values:
            rows.append(("input saturation", f"{100 * self.input_saturation:.2f} % of input "
                         f"values clipped ({self.input_clipped} of {self.input_values})"))
        if self.tflm_images is not None:
            rows.append(("runtime == TFLM", f"{self.tflm_equal_images}/{self.tflm_images} "
                         f"images, max diff {self.tflm_max_lsb} LSB"))
        if self.litert_images is not None:
            e = max(self.litert_elements, 1)
            rows.append(("device vs LiteRT", f"{100 * self.litert_equal_elements / e:.2f} % "
                         f"of elements exact, max diff {self.litert_max_lsb} LSB (optimized "
                         "kernels: informational)"))
        if self.ort_images is not None:
            m = max(self.ort_images, 1)
            informational = "" if self.requant_mode == "float" else \
                " (fixed mode: informational, see per layer)"
            if not self.ort_gating:
                informational = " (float requantization, not TFLM's: informational)"
            rows.append(("device vs onnxruntime", f"{self.ort_equal_images}/{self.ort_images} "
                         f"exact ({100 * self.ort_equal_images / m:.2f} %), max diff "
                         f"{self.ort_max_lsb} LSB{informational}"))
        if self.ort_layer_images is not None:
            worst = max(self.ort_layer_max_lsb.items(), key=lambda kv: kv[1], default=("-", 0))
            bound = f"bound {LAYER_BOUND_LSB}" if self.ort_gating else "informational"
            rows.append(("onnxruntime per layer", f"{self.ort_layer_images} images, max diff "
                         f"{worst[1]} LSB (layer {worst[0]}, {bound})"))
        if self.labelled_images:
            acc = " / ".join(f"{100 * self.accuracy(k):.2f} %"
                             for k in ("float", "runtime", "device"))
            rows.append(("accuracy float/runtime/device", acc))
        if self.sqnr_db is not None:
            rows.append(("int8 output vs float", f"SQNR {self.sqnr_db:.2f} dB, cosine "
                         f"{self.cosine:.5f}"))
        rows.append(("throughput", f"{self.images_per_s:.1f} images/s ({self.seconds:.2f} s)"))
        if self.ticks_per_inference is not None:
            per_mac = (f", {self.ticks_per_mac:.3g} {self.ticks_unit} per MAC"
                       if self.ticks_per_mac else "")
            rows.append(("device ticks", f"{self.ticks_per_inference:.0f} {self.ticks_unit} "
                         f"per inference{per_mac}"))
        for dev in self.devices:
            ticks = dev["ticks_per_inference"]
            rows.append((f"  {dev['device']}", f"{dev['images']} images, "
                         f"{dev['images_per_s']:.1f} images/s"
                         + ("" if ticks is None else f", {ticks:.0f} {dev['ticks_unit']} per "
                            "inference")
                         + ("" if dev["died"] is None else
                            f", STOPPED, {dev['handed_over']} images handed over")))
        link = self.link
        if link:
            rows.append(("frames", f"{link['frames_sent']} sent, {link['retries']} retried, "
                         f"{link['corrupt']} corrupt, {link['timeouts']} timed out"))
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"  {key:<{width}}  {value}", file=file)
        for note in self.notes:
            print(f"  note: {note}", file=file)
        print(f"  verdict gated by: {'; '.join(self.gates)}", file=file)
        if self.aborted is not None:
            verdict = (f"ABORTED after {self.images} of {self.inputs} images "
                       f"({self.device_equal_images} equal to runtime/'s): {self.aborted}")
        elif self.exit_status == 0:
            verdict = "PASS: every device output equals runtime/'s" + (
                ", and TFLM agrees" if self.tflm_images is not None else
                ", and onnxruntime agrees" if len(self.gates) > 1 else "")
        else:
            verdict = "FAIL: " + "; ".join(self._failures())
        print(verdict, file=file)

    def _failures(self) -> list[str]:
        why = []
        if self.images == 0 or self.device_equal_images != self.images:
            why.append(f"{self.images - self.device_equal_images} of {self.images} images "
                       "differ from runtime/ or got no reply")
        if self.tflm_images is not None and self.tflm_equal_images != self.tflm_images:
            why.append(f"runtime/ != TFLM on {self.tflm_images - self.tflm_equal_images} of "
                       f"{self.tflm_images} images (up to {self.tflm_max_lsb} LSB): run "
                       "tinyconv run DIR --per-layer --against tflm for the first layer")
        if self.ort_failed_images:
            why.append(f"{self.ort_failed_images} of {self.ort_images} device outputs differ "
                       f"from onnxruntime (up to {self.ort_max_lsb} LSB)")
        for layer, lsb in self.failed_layers.items():
            why.append(f"onnxruntime's layer {layer} differs from runtime/'s by {lsb} LSB "
                       f"(bound {LAYER_BOUND_LSB})")
        return why



def _answered_by(outcome) -> dict:
    """Which device answered, in a run shared by several (firmware_host/shard.py sets it)."""
    device = getattr(outcome, "device", None)
    return {} if device is None else {"answered_by": device}


class Tally:
    """Accumulates one batch after another into a VerifyResult."""

    def __init__(self, result: VerifyResult, model: QuantModel):
        self.r = result
        self.out_scale = model.output_spec.scale
        self.out_zp = model.output_spec.zero_point
        self.sqnr = SqnrAccumulator()
        self.cosines = 0.0

    def add(self, batch: Batch, outcomes, refs: dict) -> None:
        """Fold in ``outcomes`` (the link's, in input order) for the first ``len(outcomes)``
        inputs of ``batch``, whose host answers are ``refs`` (References.compute)."""
        r = self.r
        ref = refs["runtime"]
        if "layers" in refs:
            r.ort_layer_images = (r.ort_layer_images or 0) + refs["layer_images"]
            for layer, lsb in refs["layers"].items():
                r.ort_layer_max_lsb[layer] = max(r.ort_layer_max_lsb.get(layer, 0), lsb)
        for i, outcome in enumerate(outcomes):
            r.images += 1
            r.input_values += batch.values
            r.input_clipped += int(batch.clipped[i])
            want = ref[i]
            r.elements += want.size
            if outcome.attempts > 1 or not outcome.ok:
                r.retried.append({"index": outcome.index, "attempts": outcome.attempts,
                                  "failures": outcome.failures, "ok": outcome.ok,
                                  **_answered_by(outcome)})
            problems = []
            got = outcome.output
            if got is None:
                r.failed_images += 1
                problems.append("no valid reply")
            else:
                equal = int(np.count_nonzero(got == want))
                r.device_equal_elements += equal
                if equal == want.size:
                    r.device_equal_images += 1
                else:
                    problems.append("device != runtime")
                r.ticks_total += outcome.ticks
                r.ticks_count += 1
            if "ort" in refs and got is not None:
                r.ort_images += 1
                diff = int(np.max(np.abs(got.astype(np.int16) - refs["ort"][i].astype(np.int16))))
                r.ort_max_lsb = max(r.ort_max_lsb, diff)
                if diff == 0:
                    r.ort_equal_images += 1
                elif r.requant_mode == "float":
                    r.ort_failed_images += 1
                    problems.append("device != onnxruntime")
            if "tflm" in refs and i < len(refs["tflm"]):  # a sample beside onnxruntime
                r.tflm_images += 1
                diff = int(np.max(np.abs(want.astype(np.int16) - refs["tflm"][i].astype(
                    np.int16))))
                r.tflm_max_lsb = max(r.tflm_max_lsb, diff)
                if diff == 0:
                    r.tflm_equal_images += 1
                else:
                    problems.append("runtime != TFLM")
            if "litert" in refs and got is not None:
                r.litert_images += 1
                r.litert_elements += got.size
                r.litert_equal_elements += int(np.count_nonzero(got == refs["litert"][i]))
                r.litert_max_lsb = max(r.litert_max_lsb, int(np.max(np.abs(
                    got.astype(np.int16) - refs["litert"][i].astype(np.int16)))))
            if batch.labels is not None:
                label = int(batch.labels[i])
                r.labelled_images += 1
                r.correct_runtime += int(np.argmax(want)) == label
                r.correct_device += got is not None and int(np.argmax(got)) == label
                if "float" in refs:
                    r.correct_float += int(np.argmax(refs["float"][i])) == label
            if "float" in refs and got is not None:
                f = refs["float"][i].astype(np.float64).reshape(-1)
                d = kernels.dequantize(got, self.out_scale, self.out_zp).astype(
                    np.float64).reshape(-1)
                self.sqnr.add(f, d)
                denom = float(np.linalg.norm(f) * np.linalg.norm(d))
                self.cosines += float(f @ d) / denom if denom else float(np.array_equal(f, d))
                r.float_images += 1
            if problems:
                r.mismatch_count += 1
                if len(r.mismatches) < MAX_RECORDS:
                    r.mismatches.append(self._record(batch, i, outcome, refs, problems))

    def _record(self, batch, i, outcome, refs, problems) -> dict:
        rec = {"index": outcome.index, "problems": problems, "attempts": outcome.attempts,
               "failures": outcome.failures,
               "device": None if outcome.output is None else outcome.output.ravel().tolist(),
               "runtime": refs["runtime"][i].ravel().tolist(), **_answered_by(outcome)}
        if "ort" in refs:
            rec["onnxruntime"] = refs["ort"][i].ravel().tolist()
        if "tflm" in refs and i < len(refs["tflm"]):
            rec["tflm"] = refs["tflm"][i].ravel().tolist()
        if batch.labels is not None:
            rec["label"] = int(batch.labels[i])
        return rec

    def finish(self) -> None:
        r = self.r
        if r.float_images:
            r.sqnr_db = self.sqnr.db
            r.cosine = self.cosines / r.float_images
