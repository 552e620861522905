"""For the reliability tests: a small CNN exported by export/, and the POSIX ``host`` device built
natively for it, started and stopped by the tests themselves (so a test can kill and restart
it: a device reset).

The model is a 16x16 grey image -> conv 3x3 (4 filters) + ReLU -> max pool 2 -> fully connected
10: its INFER frame (256 payload bytes) spans two COBS blocks, which is what the faults should
have a chance to break.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from _tools import require_tool

SIDE = 16


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    pooled = 4 * (SIDE // 2) ** 2
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32), "cw"),
        numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "cb"),
        numpy_helper.from_array(rng.normal(0, 0.1, (10, pooled)).astype(np.float32), "fw"),
        numpy_helper.from_array(rng.normal(0, 0.1, 10).astype(np.float32), "fb"),
    ]
    graph = helper.make_graph(
        nodes, "small_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, SIDE, SIDE])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def images(count: int, seed: int = 1) -> np.ndarray:
    """Float NCHW images, like a user's dataset."""
    return np.random.default_rng(seed).uniform(0, 1, (count, 1, SIDE, SIDE)).astype(np.float32)


def export_small_cnn(out_dir: Path) -> Path:
    import export

    export.from_onnx(small_cnn(), images(32, seed=99), name="small_cnn").save(out_dir)
    return out_dir


def build_host_device(export_dir: Path) -> Path:
    """The POSIX device, built the way users build it (``tinyconv build --target host``)."""
    require_tool("gcc")
    require_tool("make")
    from firmware_host.build import build_firmware

    return Path(build_firmware(export_dir, "host"))


class HostDevice:
    """The host device as a child process on a TCP port; ``restart`` is a power cycle."""

    def __init__(self, executable: Path):
        self.executable = executable
        self.process: subprocess.Popen | None = None
        self.starts = 0
        self.url = self.restart()

    def restart(self) -> str:
        self.stop()
        self.process = subprocess.Popen([str(self.executable), "--tcp", "0"],
                                        stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
        self.starts += 1
        ready, _, _ = select.select([self.process.stdout], [], [], 10)
        assert ready, "the host device printed no URL within 10 s"
        self.url = self.process.stdout.readline().decode().strip()
        assert self.url.startswith("socket://"), self.url
        return self.url

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=5)
        if self.process is not None:
            self.process.stdout.close()

    def __enter__(self) -> "HostDevice":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (Linux /proc)."""
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(predicate, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def child_processes(pid: int, executable: Path) -> list[int]:
    """Child processes of ``pid`` running ``executable`` (verify also runs make as a child)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid and \
                        os.readlink(entry / "exe") == str(executable):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
