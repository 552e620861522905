"""TFLite Micro's arena for the same model, beside tinyconv's own plan in report.json.

Why: issue 13 holds tinyconv's static RAM to at most TFLM's arena for the same model. The
figure is measured, not estimated: the tflite-micro package's interpreter prepares the model
and its RecordingMicroAllocator reports what it allocated ("head": activations and kernel
scratch, planned; "tail": persistent structures, sized for this 64-bit host, so a little
larger than on a 32-bit MCU). It runs in-process (preparing a model takes about a millisecond)
with file descriptors 1 and 2 captured, since the allocator prints from C.

The model measured is the source .tflite when the export came from one (kept as it is), else
the one export/tflite_writer.py writes. When the writer refuses because TFLM would compute a
layer differently, the nearest operators are measured (the same tensors, the same arena) and
the entry says so; no model.tflite is written then, since that file is an oracle.
"""
from __future__ import annotations

import ctypes
import os
import re
import tempfile

from export.tflite_writer import Unwritable, write
from runtime.model import QuantModel

_LINE = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")
_ARENA_LIMIT = 1 << 26


def _captured(call) -> tuple[object, str]:
    """``call()``'s result and what it printed on file descriptors 1 and 2 (C's stdio too)."""
    libc = ctypes.CDLL(None)
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        try:
            libc.fflush(None)
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
            try:
                result, error = call(), None
            except Exception as exc:  # TFLM's own failure: reported with what it printed
                result, error = None, exc
            libc.fflush(None)
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
        sink.seek(0)
        text = sink.read().decode("utf-8", "replace")
    if error is not None:
        last = [line for line in text.splitlines() if line.strip()][-2:]
        raise RuntimeError(" / ".join(last) or str(error))
    return result, text


def _recorder(data: bytes, size: int, written: bool):
    """The allocation printer of a TFLM interpreter prepared on ``data``. For a file the writer
    made (no resource variables, by construction) the package's wrapper is called directly:
    its public constructor first unpacks the whole model in Python to count them, which costs
    more than everything else here (56 of 90 ms on ResNet-8)."""
    from tflite_micro.python.tflite_micro import runtime as tflm

    if written:
        try:
            native = tflm._runtime
            return native.InterpreterWrapper(
                data, [], size, 0, native.PythonInterpreterConfig.kAllocationRecording,
                0).PrintAllocations
        except (AttributeError, TypeError):  # another package version: the public way
            pass
    return tflm.Interpreter.from_bytes(data, arena_size=size).print_allocations


def measure(data: bytes, written: bool = False) -> dict[str, int]:
    """``{"total", "head", "tail"}`` bytes of TFLM's arena for the .tflite ``data``
    (``written``: by export/tflite_writer.py).

    The interpreter is given an arena of ten times the file (the package's own rule), at
    least 1 MiB, and four times more while that is too small; what it reports is what it used."""
    size = max(10 * len(data), 1 << 20)
    while True:
        try:
            report, _ = _captured(lambda: _recorder(data, size, written))
            break
        except RuntimeError:
            if size >= _ARENA_LIMIT:
                raise
            size *= 4
    _, text = _captured(report)
    found = {kind: int(n) for kind, n in _LINE.findall(text)}
    if not {"total", "head", "tail"} <= found.keys():
        raise RuntimeError("TFLM printed no arena allocation")
    return {k: found[k] for k in ("total", "head", "tail")}


def tflm_entry(model: QuantModel, weight_scales: dict | None = None,
               source: bytes | None = None) -> tuple[dict, bytes | None]:
    """report.json's ``tflm`` entry, and the .tflite to save as model.tflite (the written
    file when it is exact; ``source`` itself is already kept by the caller, so None then).

    The entry holds ``arena_bytes`` (TFLM's total), ``head_bytes``, ``tail_bytes`` and
    ``model`` (which file was measured), ``exact`` and ``differences`` (layers TFLM computes
    otherwise); or ``arena_bytes: null`` and ``reason``."""
    if model.requant_mode != "fixed":
        return _unavailable(f"{model.requant_mode} requantization: TFLite Micro computes "
                            "fixed mode only"), None
    try:
        import tflite_micro  # noqa: F401
    except ImportError:
        return _unavailable("the tflite-micro package is not installed"), None
    artifact, differences = None, []
    if source is not None:
        data, what = source, "the source model.tflite"
    else:
        try:
            written = write(model, weight_scales, check=False)
        except Unwritable as exc:
            return _unavailable(f"no TFLite equivalent: {exc}"), None
        except (ValueError, KeyError, IndexError, TypeError) as exc:  # the export goes on
            return _unavailable(f"export/tflite_writer.py failed: {exc!r}"), None
        data, differences = written.data, written.differences
        if differences:
            what = ("not written: TFLM computes a layer differently; measured with the nearest "
                    "TFLite operators")
        else:
            artifact, what = data, "model.tflite, written by export/tflite_writer.py"
    try:
        arena = measure(data, written=source is None)
    except RuntimeError as exc:
        return _unavailable(f"TFLite Micro could not prepare the model: {exc}"), None
    entry = {"arena_bytes": arena["total"], "head_bytes": arena["head"],
             "tail_bytes": arena["tail"], "model": what, "exact": not differences}
    if differences:
        entry["differences"] = differences
    return entry, artifact


def _unavailable(reason: str) -> dict:
    return {"arena_bytes": None, "reason": reason}
