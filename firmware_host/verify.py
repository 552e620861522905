"""``tinyconv verify``: prove over the serial link that the device computes what runtime/ does.

For every input, four answers meet: the device's int8 output, runtime/'s (``==`` is the
verdict), onnxruntime's on ``model.q.onnx`` (exact rate and largest LSB difference) and the float
model's on ``model.onnx`` (SQNR, cosine, accuracy); for a model exported from a .tflite file,
TFLM on ``model.tflite`` gates (runtime/ == TFLM) and LiteRT is reported. Inputs are streamed in bounded batches with
several requests in flight; the host references for a batch are computed on a worker thread
while the device works, so the link stays busy.

This module runs the show and holds the command line; the host's answers come from
references.py, and summary.py keeps the score (``VerifyResult``, importable from here too).
"""
from __future__ import annotations

import argparse
import io
import json
import numbers
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

import runtime
from firmware_host.devices import start_device
from firmware_host.link import Link, LinkError, check_link_options
from firmware_host.references import BadInput, References
from firmware_host.summary import Tally, VerifyResult
from runtime.dataset import NpzArray, class_labels, label_classes, read_labels
from runtime.errors import TinyconvError
from runtime.inputs import refuse_int8_values
from runtime.model import check_writable, write_atomic
from runtime.progress import Progress
from runtime.threads import one_blas_thread

BATCH = 256


# -- inputs ------------------------------------------------------------------------------------

def _input_batches(inputs, labels, limit, model
                   ) -> tuple[int, Iterator[tuple[int, np.ndarray, object]], str | None]:
    """``(count, iterator of (start, x, labels), note)`` from an array or an .npz path; the
    labels are checked (runtime.dataset.class_labels) before anything is sent, and ``note``
    says when they were converted."""
    want = labels is not None and labels is not False
    if isinstance(inputs, (str, Path)):
        xs = NpzArray(inputs, "x")
        y_all, note = (read_labels(inputs, len(xs), label_classes(model)) if labels is True
                       else (None, None))
        count = len(xs) if limit is None else min(limit, len(xs))

        def from_file():
            start = 0
            for x in xs.batches(BATCH, count):
                yield start, x, (y_all[start:start + len(x)] if y_all is not None else None)
                start += len(x)
        return count, from_file(), note
    x_all = np.asarray(inputs)
    if x_all.ndim < 2:
        raise TinyconvError(f"inputs must be a batch [N, ...], got shape {x_all.shape}")
    y_all, note = class_labels(labels, len(x_all), label_classes(model)) if want else (None, None)
    count = len(x_all) if limit is None else min(limit, len(x_all))

    def from_array():
        for start in range(0, count, BATCH):
            stop = min(start + BATCH, count)
            yield start, x_all[start:stop], (y_all[start:stop] if y_all is not None else None)
    return count, from_array(), note


# -- the run -----------------------------------------------------------------------------------

def verify(export_dir, inputs, *, labels=None, device: str = "host", baud: int = 115200,
           json_path=None, progress: bool = True, limit: int | None = None,
           timeout: float | None = None, window: int = 4, retries: int = 3,
           silence: float | None = None, devices: list[str] | None = None) -> VerifyResult:
    """Stream ``inputs`` through the device and compare with runtime/ (and onnxruntime, and
    the float model, when the export directory has them).

    ``inputs``: an array ``[N, ...]`` (int8 or float32 in the model's NHWC layout, or float
    NCHW images), or the path of an ``.npz`` with ``x`` (streamed; ``labels=True`` reads ``y``).
    ``device``: ``host``/``qemu``/``lm3s6965evb``/``mps2-an386`` (built, started and stopped
    here) or a pyserial URL or path. ``silence``: seconds without a valid frame from the device
    after which the run ends with LinkError (default ``(retries + 1) * timeout``).
    ``devices``: several devices (any mix of the above) sharing the run (firmware_host/shard.py):
    the same results image for image, plus per-device figures in ``result.devices``.

    Raises TinyconvError when nothing can be compared at all (bad arguments, no device, a model
    hash that differs from the export's). A LinkError after the device has identified itself
    (it fell silent or went away) is raised too, but first the JSON report is written with
    ``aborted`` set, the images verified so far and the requests still unanswered, so the work
    done and every retry stay on record; the error's ``result`` is that VerifyResult. An input
    holding NaN or infinity ends the run the same way, but returns: the inputs before it are
    verified and reported, and ``aborted`` names it."""
    check_link_options(baud=baud, timeout=timeout, window=window, retries=retries,
                       silence=silence)
    export_dir = Path(export_dir)
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral)
                              or limit < 1):
        raise TinyconvError(f"--limit must be at least 1, got {limit!r}")
    if json_path is not None:
        from export.api import check_output

        check_writable(json_path)
        check_output(json_path, reads=[inputs] if isinstance(inputs, (str, Path)) else [],
                     export_dir=export_dir)
    model = runtime.load(export_dir)
    if export_dir.is_file():  # a .tcm file, as run takes: its export's references lie beside it
        export_dir = export_dir.parent
    refs = References(export_dir, model)
    total, batches, label_note = _input_batches(inputs, labels, limit, model)
    if total == 0:
        raise TinyconvError("no inputs to verify")
    if devices is not None and len(devices) > 1:
        from firmware_host.shard import verify_many

        return verify_many(export_dir, model, refs, total, batches, label_note,
                           devices=list(devices), baud=baud, timeout=timeout, window=window,
                           retries=retries, silence=silence, progress=progress,
                           write_report=lambda result: _write_json(json_path, result))
    if devices:
        device = devices[0]
    if timeout is None:
        timeout = 2.0 if device == "host" else 10.0
    with start_device(device, export_dir) as dev, \
            Link(dev.url, baud=baud, timeout=timeout, window=window, retries=retries,
                 connect_timeout=dev.connect_timeout, silence=silence) as link, \
            ThreadPoolExecutor(1) as pool, one_blas_thread():
        result = _handshake(link, model, refs, export_dir, device)
        result.inputs = total
        if label_note:
            result.notes.append(label_note)
        try:
            _stream(link, refs, pool, batches, Tally(result, model),
                    Progress(total, "verify", stream=None if progress else io.StringIO()))
        except LinkError as exc:
            result.aborted = str(exc)
            result.unfinished = [{"index": o.index, "attempts": o.attempts,
                                  "failures": o.failures, "ok": o.ok}
                                 for o in getattr(exc, "unfinished", ())]
            _write_report(json_path, result, link)
            exc.result = result
            raise
        _write_report(json_path, result, link)
    return result


def _write_report(json_path, result: VerifyResult, link: Link) -> None:
    result.link = link.stats.as_dict()
    _write_json(json_path, result)


def _write_json(json_path, result: VerifyResult) -> None:
    if json_path is not None:
        write_atomic(Path(json_path), json.dumps(result.as_dict(), indent=1).encode())


def _handshake(link: Link, model, refs: References, export_dir: Path,
               device: str) -> VerifyResult:
    """RESET and INFO: the device must run this export's model."""
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
                          total_macs=info.total_macs,
                          ort_layer_images=0 if refs.layers is not None else None,
                          ort_gating=refs.ort_gates,
                          tflm_images=0 if refs.tflm is not None else None,
                          litert_images=0 if refs.litert is not None else None)
    result.notes.extend(refs.tflite_notes)
    if refs.q_onnx is None:
        result.notes.append("no model.q.onnx in the export directory: no onnxruntime check")
    elif not refs.q_stamped:
        result.notes.append("model.q.onnx does not name the model.tcm it was exported from "
                            "(an older export): only the comparison itself checks it")
    if refs.float_session is None:
        result.notes.append("no model.onnx in the export directory: no float reference")
    return result


def _stream(link: Link, refs: References, pool: ThreadPoolExecutor, batches, tally: Tally,
            bar: Progress) -> None:
    """Every input through the device, its references computed on ``pool`` meanwhile. On a
    LinkError the outcomes already received for the current batch are tallied before it is
    passed on, so the result holds every image the device answered in order."""
    waiting: deque = deque()  # (batch, future of its references), in input order

    def device_inputs() -> Iterable[np.ndarray]:
        for start, x, y in batches:
            try:
                batch = refs.batch(start, x, y)
            except BadInput as exc:  # send the inputs before it, then stop
                tally.r.aborted = str(exc)
                good = exc.index - start
                batch = refs.batch(start, x[:good], None if y is None else y[:good]) \
                    if good else None
            if batch is not None:
                waiting.append((batch, pool.submit(refs.compute, batch)))
                yield from batch.x_q
            if tally.r.aborted is not None:
                return

    started = time.perf_counter()
    done: list = []
    try:
        for outcome in link.infer_many(device_inputs()):
            done.append(outcome)
            batch, future = waiting[0]
            if len(done) == len(batch.x_q):
                waiting.popleft()
                tally.add(batch, done, future.result())
                bar.update(len(done))
                done = []
    except LinkError:
        if done:
            batch, future = waiting[0]
            tally.add(batch, done, future.result())
        raise
    finally:
        bar.close()
        tally.r.seconds = time.perf_counter() - started
        tally.finish()


# -- command line ------------------------------------------------------------------------------

HELP = """\
Check that a device computes exactly what the host computes. Every input of the .npz is sent
to the device over serial (a real board, a board under QEMU, or a local process); each int8
answer must equal tinyconv's numpy runtime byte for byte, and onnxruntime on model.q.onnx must
agree layer by layer. Also shows accuracy against the float model and the images/s reached.
Prints PASS (exit 0) or FAIL (exit 1)."""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "verify", help="stream a dataset through a device and compare with runtime/",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  tinyconv verify build/digits --input test.npz --labels\n"
               "  tinyconv verify build/digits --input test.npz --device qemu\n"
               "  tinyconv verify build/digits --input test.npz --device qemu --devices 2\n"
               "  tinyconv verify build/digits --input test.npz --device /dev/ttyACM0 "
               "--baud 921600\n"
               "exit status: 0 all equal, 1 any mismatch, 2 usage or connection error "
               "(also a device silent for --silence seconds, or an input holding NaN; the "
               "inputs before are verified, and --json still writes the report, marked "
               "\"aborted\")")
    parser.add_argument("dir", type=Path, help="export directory (model.tcm, model.q.onnx, ...)")
    parser.add_argument("--input", type=Path, required=True,
                        help=".npz with inputs 'x' (float in model.onnx's layout, or int8 "
                             "NHWC codes with --int8-codes)")
    parser.add_argument("--labels", action="store_true", help="also score top-1 against 'y'")
    parser.add_argument("--int8-codes", action="store_true",
                        help="'x' is int8 holding the model's quantized input codes (without "
                             "this flag int8 inputs are refused: int8 pixels would be misread)")
    parser.add_argument("--device", action="append",
                        help="host | qemu | lm3s6965evb | mps2-an386 | netduinoplus2 | "
                             "mps2-an500 | microbit | mps3-an547 (built and started here; "
                             "qemu picks mps2-an386, a Cortex-M4F, for a float-mode model and "
                             "lm3s6965evb, a Cortex-M3, for a fixed-mode one) or a pyserial URL "
                             "or path: /dev/ttyACM0, socket://127.0.0.1:4444, rfc2217://... "
                             "(default: host); repeat it to share the run among several "
                             "devices")
    parser.add_argument("--devices", type=int, metavar="N",
                        help="start N instances of the local --device and share the run "
                             "among them")
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
    check_link_options(baud=args.baud, timeout=args.timeout, window=args.window,
                       retries=args.retries, silence=args.silence, flag="--")
    if not args.input.exists():
        raise TinyconvError(f"input file {args.input} does not exist")
    refuse_int8_values(NpzArray(args.input, "x").dtype, args.int8_codes, args.input)
    try:
        from firmware_host.shard import expand_devices

        devices = expand_devices(args.device, args.devices)
        result = verify(args.dir, args.input, labels=args.labels, devices=devices,
                        baud=args.baud, json_path=args.json, progress=True, limit=args.limit,
                        timeout=args.timeout, window=args.window, retries=args.retries,
                        silence=args.silence)
    except LinkError as exc:
        if getattr(exc, "result", None) is not None:  # what was verified before it gave up
            exc.result.print_summary()
        raise
    result.print_summary()
    if result.saturation_warning:
        print(f"tinyconv verify: warning: {result.saturation_warning}", file=sys.stderr)
    return result.exit_status
