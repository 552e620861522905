"""``tinyconv verify``: prove over the serial link that the device computes what runtime/ does.

For every input, four answers meet: the device's int8 output, runtime/'s (``==`` is the
verdict), onnxruntime's on ``model.q.onnx`` (exact rate and largest LSB difference) and the float
model's on ``model.onnx`` (SQNR, cosine, accuracy). Inputs are streamed in bounded batches with
several requests in flight; the host references for a batch are computed on a worker thread
while the device works, so the link stays busy.
"""
from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

import runtime
from runtime.dataset import NpzArray
from firmware_host.devices import LOCAL_TARGETS, start_device
from firmware_host.link import Link
from runtime import kernels
from runtime.inputs import float_input, quantize_input
from runtime.errors import TinyconvError
from runtime.model import QuantModel, write_atomic
from tinyconv.progress import Progress

BATCH = 256
MAX_RECORDS = 1000  # per-image mismatch records kept for the JSON report


@dataclass
class VerifyResult:
    """The summary of one run; ``exit_status`` is 0 only when every device output == runtime's."""

    model: str
    model_hash: str
    device: str
    target: str
    requant_mode: str
    images: int = 0
    device_equal_images: int = 0
    device_equal_elements: int = 0
    elements: int = 0
    failed_images: int = 0  # no valid reply after every retry
    ort_images: int | None = None  # images compared with onnxruntime (None: no model.q.onnx)
    ort_equal_images: int = 0
    ort_max_lsb: int = 0
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

    @property
    def exit_status(self) -> int:
        ok = self.images > 0 and self.device_equal_images == self.images
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

    def accuracy(self, which: str) -> float | None:
        if not self.labelled_images:
            return None
        return getattr(self, f"correct_{which}") / self.labelled_images

    def as_dict(self) -> dict:
        data = asdict(self)
        for key in ("exit_status", "images_per_s", "ticks_per_inference", "ticks_per_mac"):
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
        if self.ort_images is not None:
            m = max(self.ort_images, 1)
            rows.append(("device vs onnxruntime", f"{self.ort_equal_images}/{self.ort_images} "
                         f"exact ({100 * self.ort_equal_images / m:.2f} %), max diff "
                         f"{self.ort_max_lsb} LSB"))
        if self.labelled_images:
            acc = " / ".join(f"{100 * self.accuracy(k):.2f} %"
                             for k in ("float", "runtime", "device"))
            rows.append(("accuracy float/runtime/device", acc))
        if self.sqnr_db is not None:
            rows.append(("int8 output vs float", f"SQNR {self.sqnr_db:.2f} dB, cosine "
                         f"{self.cosine:.5f}"))
        rows.append(("throughput", f"{self.images_per_s:.1f} images/s ({self.seconds:.2f} s)"))
        if self.ticks_per_inference is not None:
            per_mac = (f", {self.ticks_per_mac:.3g} per MAC" if self.ticks_per_mac else "")
            rows.append(("device ticks", f"{self.ticks_per_inference:.0f} {self.ticks_unit} "
                         f"per inference{per_mac}"))
        link = self.link
        if link:
            rows.append(("frames", f"{link['frames_sent']} sent, {link['retries']} retried, "
                         f"{link['corrupt']} corrupt, {link['timeouts']} timed out"))
        width = max(len(k) for k, _ in rows)
        for key, value in rows:
            print(f"  {key:<{width}}  {value}", file=file)
        for note in self.notes:
            print(f"  note: {note}", file=file)
        verdict = ("PASS: every device output equals runtime/'s" if self.exit_status == 0
                   else f"FAIL: {self.images - self.device_equal_images} of {self.images} "
                   "images differ from runtime/ or got no reply")
        print(verdict, file=file)


# -- inputs ------------------------------------------------------------------------------------

@dataclass
class _Batch:
    start: int
    x_q: np.ndarray  # int8, model layout (NHWC)
    x_f: np.ndarray  # float32, model.onnx's layout
    labels: np.ndarray | None


class _References:
    """The host side's answers for a batch: runtime/, onnxruntime on model.q.onnx, float."""

    def __init__(self, export_dir: Path, model: QuantModel):
        import onnx

        self.model = model
        self.q_onnx = None
        self.float_session = None
        q_path, f_path = export_dir / "model.q.onnx", export_dir / "model.onnx"
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

    def batch(self, start: int, x: np.ndarray, labels) -> _Batch:
        """Bring a batch to int8 NHWC (for the device and runtime/) and float in the ONNX
        layout (for onnxruntime)."""
        try:
            x_q = quantize_input(self.model, x)
        except TinyconvError as exc:
            raise TinyconvError(f"inputs {start}..{start + len(x) - 1}: {exc}") from None
        x_f = float_input(self.model, x)
        return _Batch(start, x_q, x_f, labels)

    def compute(self, batch: _Batch) -> dict:
        from export.qonnx import run_qonnx

        out = {"runtime": runtime.run(self.model, batch.x_q)}
        if self.q_onnx is not None:
            out["ort"] = run_qonnx(self.q_onnx, self.model, batch.x_f)
        if self.float_session is not None:
            name = self.float_session.get_inputs()[0].name
            y = self.float_session.run(None, {name: batch.x_f})[0]
            out["float"] = y.transpose(0, 2, 3, 1) if y.ndim == 4 else y
        return out


def _input_batches(inputs, labels, limit) -> tuple[int, Iterator[tuple[int, np.ndarray, object]]]:
    """``(count, iterator of (start, x, labels))`` from an array or an .npz path."""
    if isinstance(inputs, (str, Path)):
        xs = NpzArray(inputs, "x")
        ys = None
        if labels is True:
            ys = NpzArray(inputs, "y")
            if len(ys) != len(xs):
                raise TinyconvError(f"{inputs}: {len(xs)} inputs but {len(ys)} labels")
        count = len(xs) if limit is None else min(limit, len(xs))

        def from_file():
            y_iter = ys.batches(BATCH, count) if ys is not None else None
            start = 0
            for x in xs.batches(BATCH, count):
                y = next(y_iter).reshape(-1).astype(np.int64) if y_iter is not None else None
                yield start, x, y
                start += len(x)
        return count, from_file()
    x_all = np.asarray(inputs)
    if x_all.ndim < 2:
        raise TinyconvError(f"inputs must be a batch [N, ...], got shape {x_all.shape}")
    y_all = None
    if labels is not None and labels is not False:
        y_all = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(y_all) != len(x_all):
            raise TinyconvError(f"{len(x_all)} inputs but {len(y_all)} labels")
    count = len(x_all) if limit is None else min(limit, len(x_all))

    def from_array():
        for start in range(0, count, BATCH):
            stop = min(start + BATCH, count)
            yield start, x_all[start:stop], (y_all[start:stop] if y_all is not None else None)
    return count, from_array()


# -- the run -----------------------------------------------------------------------------------

class _Tally:
    """Accumulates one batch after another into a VerifyResult."""

    def __init__(self, result: VerifyResult, model: QuantModel):
        self.r = result
        self.out_scale = model.output_spec.scale
        self.out_zp = model.output_spec.zero_point
        self.signal = 0.0
        self.noise = 0.0
        self.cosines = 0.0

    def add(self, batch: _Batch, outcomes, refs: dict) -> None:
        r = self.r
        ref = refs["runtime"]
        for i, outcome in enumerate(outcomes):
            r.images += 1
            want = ref[i]
            r.elements += want.size
            if outcome.attempts > 1 or not outcome.ok:
                r.retried.append({"index": outcome.index, "attempts": outcome.attempts,
                                  "failures": outcome.failures, "ok": outcome.ok})
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
                    problems.append("device != onnxruntime")
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
                self.signal += float(f @ f)
                self.noise += float((f - d) @ (f - d))
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
               "runtime": refs["runtime"][i].ravel().tolist()}
        if "ort" in refs:
            rec["onnxruntime"] = refs["ort"][i].ravel().tolist()
        if batch.labels is not None:
            rec["label"] = int(batch.labels[i])
        return rec

    def finish(self) -> None:
        r = self.r
        if r.float_images:
            r.sqnr_db = (math.inf if self.noise == 0 else
                         10 * math.log10(self.signal / self.noise) if self.signal else -math.inf)
            r.cosine = self.cosines / r.float_images


@contextmanager
def _one_blas_thread():
    """The references run on a worker thread next to the device and the link loop; BLAS
    spreading over every core as well only makes them fight (when threadpoolctl is there)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(1):
        yield


def verify(export_dir, inputs, *, labels=None, device: str = "host", baud: int = 115200,
           json_path=None, progress: bool = True, limit: int | None = None,
           timeout: float | None = None, window: int = 4, retries: int = 3,
           silence: float | None = None) -> VerifyResult:
    """Stream ``inputs`` through the device and compare with runtime/ (and onnxruntime, and
    the float model, when the export directory has them).

    ``inputs``: an array ``[N, ...]`` (int8 or float32 in the model's NHWC layout, or float
    NCHW images), or the path of an ``.npz`` with ``x`` (streamed; ``labels=True`` reads ``y``).
    ``device``: ``host``/``lm3s6965evb``/``mps2-an386`` (built, started and stopped here) or a
    pyserial URL or path. ``silence``: seconds without a valid frame from the device after
    which the run ends with LinkError (default ``(retries + 1) * timeout``). Raises
    TinyconvError when nothing can be compared at all (bad arguments, no device, a model hash
    that differs from the export's, a device that falls silent)."""
    export_dir = Path(export_dir)
    if limit is not None and limit < 1:
        raise TinyconvError(f"--limit must be at least 1, got {limit}")
    model = runtime.load(export_dir)
    refs = _References(export_dir, model)
    total, batches = _input_batches(inputs, labels, limit)
    if total == 0:
        raise TinyconvError("no inputs to verify")
    if timeout is None:
        timeout = 2.0 if device == "host" else 10.0
    with start_device(device, export_dir) as dev, \
            Link(dev.url, baud=baud, timeout=timeout, window=window, retries=retries,
                 connect_timeout=dev.connect_timeout, silence=silence) as link, \
            ThreadPoolExecutor(1) as pool, _one_blas_thread():
        link.sync()
        info = link.info()
        if info.model_hash != model.hash:
            raise TinyconvError(
                f"the device runs model {info.model_name!r} {info.model_hash}, but "
                f"{export_dir / 'model.tcm'} is {model.name!r} {model.hash}: build and load "
                f"this export first (tinyconv build {export_dir})")
        if tuple(info.input_shape) != tuple(model.input_spec.shape) or \
                tuple(info.output_shape) != tuple(model.output_spec.shape):
            raise TinyconvError(f"device shapes {info.input_shape} -> {info.output_shape} "
                                f"differ from the model's")
        result = VerifyResult(model.name, model.hash, device, info.target, model.requant_mode,
                              ort_images=0 if refs.q_onnx is not None else None,
                              float_images=0 if refs.float_session is not None else None,
                              ticks_unit="us" if info.target == "host" else "instructions",
                              total_macs=info.total_macs)
        if refs.q_onnx is None:
            result.notes.append("no model.q.onnx in the export directory: no onnxruntime check")
        if refs.float_session is None:
            result.notes.append("no model.onnx in the export directory: no float reference")
        tally = _Tally(result, model)
        bar = Progress(total, "verify", stream=None if progress else io.StringIO())
        waiting: deque = deque()  # (batch, future of its references), in input order

        def device_inputs() -> Iterable[np.ndarray]:
            for start, x, y in batches:
                batch = refs.batch(start, x, y)
                waiting.append((batch, pool.submit(refs.compute, batch)))
                yield from batch.x_q

        started = time.perf_counter()
        done: list = []
        for outcome in link.infer_many(device_inputs()):
            done.append(outcome)
            batch, future = waiting[0]
            if len(done) == len(batch.x_q):
                waiting.popleft()
                tally.add(batch, done, future.result())
                bar.update(len(done))
                done = []
        bar.close()
        result.seconds = time.perf_counter() - started
        tally.finish()
        result.link = link.stats.as_dict()
    if json_path is not None:
        text = json.dumps(result.as_dict(), indent=1)
        write_atomic(Path(json_path), text.encode())
    return result


# -- command line ------------------------------------------------------------------------------

def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="stream a dataset through a device and compare with runtime/",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  tinyconv verify build/digits --input test.npz --labels\n"
               "  tinyconv verify build/digits --input test.npz --device lm3s6965evb\n"
               "  tinyconv verify build/digits --input test.npz --device /dev/ttyACM0 "
               "--baud 921600\n"
               "exit status: 0 all equal, 1 any mismatch, 2 usage or connection error "
               "(also a device silent for --silence seconds)")
    parser.add_argument("dir", type=Path, help="export directory (model.tcm, model.q.onnx, ...)")
    parser.add_argument("--input", type=Path, required=True,
                        help=".npz with inputs 'x' (float in model.onnx's layout, or int8 NHWC)")
    parser.add_argument("--labels", action="store_true", help="also score top-1 against 'y'")
    parser.add_argument("--device", default="host",
                        help=f"{' | '.join(LOCAL_TARGETS)} (started here) or a pyserial URL or "
                             "path: /dev/ttyACM0, socket://127.0.0.1:4444, rfc2217://... "
                             "(default: host)")
    parser.add_argument("--baud", type=int, default=115200, help="baud rate (default: 115200)")
    parser.add_argument("--json", type=Path, metavar="REPORT", help="write the full report here")
    parser.add_argument("--limit", type=int, metavar="N", help="verify only the first N inputs")
    parser.add_argument("--timeout", type=float,
                        help="seconds to wait for one reply (default: 2 host, 10 otherwise)")
    parser.add_argument("--window", type=int, default=4, help="requests in flight (default: 4)")
    parser.add_argument("--retries", type=int, default=3,
                        help="resends of a lost or corrupted request (default: 3)")
    parser.add_argument("--silence", type=float, metavar="S",
                        help="give up (exit 2) when the device sends no valid frame for S "
                             "seconds while requests wait (default: (retries + 1) x timeout)")
    parser.set_defaults(func=_main)


def _main(args) -> int:
    if args.window < 1 or args.retries < 0 or (args.timeout is not None and args.timeout <= 0) \
            or (args.silence is not None and args.silence <= 0):
        raise TinyconvError("--window must be >= 1, --retries >= 0, --timeout > 0 and "
                            "--silence > 0")
    if not args.input.exists():
        raise TinyconvError(f"input file {args.input} does not exist")
    result = verify(args.dir, args.input, labels=args.labels, device=args.device,
                    baud=args.baud, json_path=args.json, progress=True, limit=args.limit,
                    timeout=args.timeout, window=args.window, retries=args.retries,
                    silence=args.silence)
    result.print_summary()
    return result.exit_status
