"""For the reliability tests: a small CNN exported by export/, and the POSIX ``host`` device built
natively for it, started and stopped by the tests themselves (so a test can kill and restart
it: a device reset); the real ``tinyconv`` command in a child process.

The model is a 16x16 grey image -> conv 3x3 (4 filters) + ReLU -> max pool 2 -> fully connected
10: its INFER frame (256 payload bytes) spans two COBS blocks, which is what the faults should
have a chance to break.
"""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from _tools import require_tool

SIDE = 16
ROOT = Path(__file__).resolve().parents[1]


def conv_pool_dense(name: str, image: tuple[int, int, int], filters: int, classes: int,
                    scales: tuple[float, float, float, float], seed: int = 0,
                    pool: str = "MaxPool", **conv) -> onnx.ModelProto:
    """The reliability tests' model family, so that each test says only what its model is for:
    image (C, H, W) -> conv 3x3 (``filters``; ``conv``: its strides/pads) + ReLU -> ``pool``
    (MaxPool 2x2 after a ``same`` conv, or GlobalAveragePool) -> fully connected ``classes``.
    The weights are drawn from N(0, scale), ``scales`` giving conv weight, conv bias, dense
    weight and dense bias."""
    rng = np.random.default_rng(seed)
    channels, height, width = image
    pool_attrs = dict(kernel_shape=[2, 2], strides=[2, 2]) if pool == "MaxPool" else {}
    features = filters * (height // 2) * (width // 2) if pool == "MaxPool" else filters
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", **conv),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node(pool, ["r"], ["p"], name="pool", **pool_attrs),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    shapes = {"cw": (filters, channels, 3, 3), "cb": filters, "fw": (classes, features),
              "fb": classes}
    inits = [numpy_helper.from_array(rng.normal(0, scale, shape).astype(np.float32), key)
             for (key, shape), scale in zip(shapes.items(), scales)]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *image])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", classes])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def small_cnn(seed: int = 0) -> onnx.ModelProto:
    return conv_pool_dense("small_cnn", (1, SIDE, SIDE), 4, 10, (0.5, 0.1, 0.1, 0.1), seed,
                           pads=[1, 1, 1, 1])


def images(count: int, seed: int = 1, shape: tuple[int, ...] = (1, SIDE, SIDE)) -> np.ndarray:
    """Float NCHW images in [0, 1), like a user's dataset."""
    return np.random.default_rng(seed).uniform(0, 1, (count, *shape)).astype(np.float32)


def save_images(path: Path, x: np.ndarray, **arrays) -> Path:
    """A dataset file as users give it to verify (``x``, and ``y`` etc. in ``arrays``)."""
    np.savez(path, x=x, **arrays)
    return path


def export_small_cnn(out_dir: Path) -> Path:
    import export

    export.from_onnx(small_cnn(), images(32, seed=99), name="small_cnn").save(out_dir)
    return out_dir


def tinyconv(*args, timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    """``tinyconv ARGS`` as a user runs it: a child process (its own exit status, stdout and
    stderr), from this checkout; ``env`` adds to the environment."""
    return subprocess.run([sys.executable, "-m", "tinyconv.cli", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def build_host_device(export_dir: Path) -> Path:
    """The POSIX device, built the way users build it (``tinyconv build --target host``)."""
    require_tool("gcc")
    require_tool("make")
    from firmware_host.build import build_firmware

    return Path(build_firmware(export_dir, "host"))


def built_small_cnn(directory: Path) -> tuple[Path, Path]:
    """small_cnn exported into ``directory`` and its host device built: (export, executable)."""
    out = export_small_cnn(directory / "small_cnn")
    return out, build_host_device(out)


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
