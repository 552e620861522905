"""Device throughput and wire efficiency: images/s through ``verify`` over the host device's
pseudo-terminal and its TCP mode, and under QEMU on the ARM boards (when qemu-system-arm, the
ARM toolchain and the ports are there), plus the protocol's wire efficiency for a 28x28 image.

    .venv/bin/python benchmarks/bench_device.py [--images 1000] [--targets host,lm3s6965evb]
        [--devices 1,2,4] [--shard-targets host,lm3s6965evb]

The sharded part runs ``verify(..., devices=[target] * N)`` for each N given (repeat them,
``--devices 1,2,1,2,1,2``, for medians: on a shared machine single runs spread widely) and
prints the streaming throughput, its speedup over one device, and the CPU per image while
streaming: this process (``host``; of it, the references and the tally) and the devices'
processes (read from /proc). CPU per image barely moves with the machine's load, images/s
does: the load average before and after each row is printed with it. The medians line says
how many cores the run kept busy; near the machine's core count, the cores limit the scaling.

The model is a small 28x28x1 CNN (conv 3x3x8, maxpool, conv 3x3x16, maxpool, global average,
dense 10) exported in fixed mode (float mode on mps2-an386, the board with an FPU). Every run
also checks device == runtime on every image; a figure from a failing run is not printed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import export  # noqa: E402
from firmware_host import wire  # noqa: E402
from firmware_host.verify import verify  # noqa: E402


def cnn_28x28(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def init(name, *shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32),
                                       name)
    inits = [init("w1", 8, 1, 3, 3), init("b1", 8, scale=0.1), init("w2", 16, 8, 3, 3, scale=0.1),
             init("b2", 16, scale=0.1), init("wf", 10, 16), init("bf", 10, scale=0.1)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["p2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    graph = helper.make_graph(
        nodes, "bench28",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1, 28, 28])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def wire_efficiency(rng: np.random.Generator) -> tuple[float, int]:
    """Payload bytes / bytes on the wire for one INFER of a 28x28 int8 image (mean of 100)."""
    sizes = [len(wire.encode_frame(wire.Frame(wire.Msg.INFER, i, rng.integers(
        -128, 128, 784, dtype=np.int8).tobytes()))) for i in range(100)]
    return 784 / float(np.mean(sizes)), max(sizes)


def host_tcp_url(executable: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([str(executable), "--tcp", "0"], stdout=subprocess.PIPE)
    return process, process.stdout.readline().decode().strip()


def _children_cpu() -> float:
    """CPU seconds so far of this process's running children (the devices verify started:
    QEMU or the host build), from /proc; 0 where there is no /proc."""
    me, total = str(os.getpid()), 0
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not pid.isdigit():
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # state, ppid, ..., utime, stime
        if fields[1] == me:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


@contextmanager
def metered() -> Iterator[dict]:
    """CPU seconds of the streaming part of each verify call in the block (start-up, the
    handshake and the devices' boot left out): ``host`` is this process, all threads;
    ``references`` and ``tally`` are the parts of it spent in References.compute (its worker
    thread) and Tally.add; ``devices`` the devices' processes. Measured by wrapping those
    functions here, so verify itself carries no instrumentation."""
    from firmware_host import references, shard, summary
    from firmware_host import verify as verify_module

    cpu = {"host": 0.0, "references": 0.0, "tally": 0.0, "devices": 0.0}

    def thread_timed(key, function):
        def timed(*args, **kwargs):
            begin = time.thread_time()
            try:
                return function(*args, **kwargs)
            finally:
                cpu[key] += time.thread_time() - begin
        return timed

    def stream_timed(function):
        def timed(*args, **kwargs):
            host, devices = time.process_time(), _children_cpu()
            try:
                return function(*args, **kwargs)
            finally:
                cpu["host"] += time.process_time() - host
                cpu["devices"] += _children_cpu() - devices
        return timed

    patches = [(references.References, "compute", lambda f: thread_timed("references", f)),
               (summary.Tally, "add", lambda f: thread_timed("tally", f)),
               (shard, "_run", stream_timed), (verify_module, "_stream", stream_timed)]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in patches]
    for owner, name, wrap in patches:
        setattr(owner, name, wrap(getattr(owner, name)))
    try:
        yield cpu
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def sharded(export_dir: Path, x: np.ndarray, target: str, counts: list[int]) -> None:
    """Throughput and CPU per image of verify over 1, 2, 4... local instances of ``target``,
    in the order given (repeat counts, e.g. 1,2,1,2, to see the spread), then the medians."""
    rows: dict[int, list] = {}
    for n in counts:
        load = os.getloadavg()[0]
        try:
            with metered() as cpu:
                result = verify(export_dir, x, devices=[target] * n, progress=False)
        except Exception as exc:
            print(f"{target} x{n}: not measured ({type(exc).__name__}: {exc})")
            continue
        if result.exit_status != 0:
            print(f"{target} x{n}: device != runtime, figures withheld")
            continue
        ms = {key: 1000 * value / result.images for key, value in cpu.items()}
        rows.setdefault(n, []).append((result.images_per_s, ms))
        base = statistics.median(r[0] for r in rows.get(1, rows[n]))
        shares = "/".join(str(d["images"]) for d in result.devices) or str(result.images)
        print(f"{target:<12} {n:>2} {result.images:>6} {result.images_per_s:>8.1f} "
              f"{result.images_per_s / base:>6.2f}x {ms['host']:>6.2f} {ms['references']:>5.2f} "
              f"{ms['tally']:>5.2f} {ms['devices']:>7.2f} {load:>5.1f}-{os.getloadavg()[0]:<4.1f}"
              f" {shares}")
    if any(len(r) > 1 for r in rows.values()):
        base = statistics.median(r[0] for r in rows.get(1, next(iter(rows.values()))))
        for n, runs in sorted(rows.items()):
            rate = statistics.median(r[0] for r in runs)
            host = statistics.median(r[1]["host"] for r in runs)
            devices = statistics.median(r[1]["devices"] for r in runs)
            print(f"{target:<12} {n:>2} median of {len(runs)}: {rate:.1f} images/s, "
                  f"{rate / base:.2f}x, host {host:.2f} ms/image, devices {devices:.2f} "
                  f"ms/image: {rate * (host + devices) / 1000:.2f} cores busy")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--qemu-images", type=int, default=200)
    parser.add_argument("--targets", default="host,host-tcp,lm3s6965evb,mps2-an386")
    parser.add_argument("--devices", default="1,2,4",
                        help="device counts for the sharded runs ('' to skip them)")
    parser.add_argument("--shard-targets", default="host,lm3s6965evb")
    args = parser.parse_args()
    rng = np.random.default_rng(0)

    efficiency, largest = wire_efficiency(rng)
    print(f"wire efficiency, 28x28 INFER: {100 * efficiency:.2f} % "
          f"(784 payload bytes in at most {largest} on the wire; target >= 97 %)")

    x = rng.random((max(args.images, args.qemu_images), 1, 28, 28)).astype(np.float32)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        dirs = {}
        for mode in ("fixed", "float"):
            dirs[mode] = export.from_onnx(cnn_28x28(), x[:64], requant=mode,
                                          name="bench28").save(Path(tmp) / mode)
        for target in filter(None, args.targets.split(",")):
            mode = "float" if target == "mps2-an386" else "fixed"
            count = args.images if target.startswith("host") else args.qemu_images
            if not target.startswith("host") and not (shutil.which("qemu-system-arm")
                                                      and shutil.which("arm-none-eabi-gcc")):
                print(f"{target}: skipped (qemu-system-arm or arm-none-eabi-gcc missing)")
                continue
            process = None
            try:
                device = target
                if target == "host-tcp":
                    from firmware_host.build import build_firmware
                    process, device = host_tcp_url(build_firmware(dirs[mode], "host"))
                result = verify(dirs[mode], x[:count], device=device, progress=False)
            except Exception as exc:  # a port still missing must not hide the other figures
                print(f"{target}: not measured ({type(exc).__name__}: {exc})")
                continue
            finally:
                if process is not None:
                    process.terminate()
                    process.wait()
            if result.exit_status != 0:
                print(f"{target}: device != runtime, figures withheld")
                continue
            link = result.link
            rows.append((target, mode, result.images, result.images_per_s,
                         result.ticks_per_inference, result.ticks_unit, result.ticks_per_mac,
                         link["payload_bytes_sent"] / link["bytes_sent"]))
        print(f"\n{'device':<12} {'mode':<6} {'images':>6} {'images/s':>9} "
              f"{'ticks/inference':>22} {'ticks/MAC':>9} {'tx efficiency':>13}")
        for target, mode, n, ips, ticks, unit, per_mac, eff in rows:
            print(f"{target:<12} {mode:<6} {n:>6} {ips:>9.1f} {ticks:>9.0f} {unit:<12} "
                  f"{per_mac:>9.4g} {100 * eff:>12.2f}%")
        if args.devices:  # while the export directories exist
            counts = [int(n) for n in args.devices.split(",")]
            print(f"\nsharded verify on {os.cpu_count()} cores. CPU in ms per image while "
                  "streaming: host = this process (all threads), of which refs = the "
                  "references and tally = the score; devices = the device processes, "
                  "together; load = the 1-minute load average before-after")
            print(f"{'device':<12} {'N':>2} {'images':>6} {'images/s':>8} {'speedup':>7} "
                  f"{'host':>6} {'refs':>5} {'tally':>5} {'devices':>7} {'load':>9} "
                  "images per device")
            for target in args.shard_targets.split(","):
                count = args.images if target == "host" else args.qemu_images
                sharded(dirs["float" if target == "mps2-an386" else "fixed"], x[:count],
                        target, counts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
