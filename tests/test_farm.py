"""``--device labgrid:PLACE`` against a real labgrid farm on loopback: a labgrid coordinator, an
exporter whose two resources are QEMU boards (lm3s6965evb, UART on a pseudo-terminal) that it
serves through ser2net over RFC 2217, and two places matching them. verify acquires the places,
shards the run across them and releases them: after the run, on errors, on Ctrl-C. A place
someone else holds is refused in one line (exit 2).
"""
from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _host_device import export_small_cnn, images
from _tools import require_tool

if os.environ.get("CI") == "true":
    import labgrid  # noqa: F401  (under CI, where the test command installs it, never a skip)
else:
    pytest.importorskip("labgrid", reason="pip install -e '.[farm]'")
BIN = Path(sys.executable).parent
BOARD = "lm3s6965evb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_for(predicate, seconds: float, what: str, logs=()) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        tails = "".join(f"\n--- {log.name}:\n{log.read_text()[-2000:]}" for log in logs)
        assert time.monotonic() < deadline, f"{what} within {seconds} s{tails}"
        time.sleep(0.1)


def _qemu_on_pty(elf: Path) -> tuple[subprocess.Popen, str]:
    from firmware_host.qemu import QEMU

    process = subprocess.Popen([QEMU, "-M", BOARD, "-nographic", "-monitor", "none", "-icount",
                                "shift=3", "-kernel", str(elf), "-serial", "pty"],
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, start_new_session=True)
    text = b""
    deadline = time.monotonic() + 10
    while (found := re.search(rb"redirected to (/dev/pts/\d+)", text)) is None:
        assert time.monotonic() < deadline, f"QEMU printed no pty: {text!r}"
        if select.select([process.stdout], [], [], 0.5)[0]:
            text += os.read(process.stdout.fileno(), 4096)
    return process, found.group(1).decode()


class Farm:
    """Coordinator, exporter and QEMU boards as child processes, stopped by ``close``."""

    def __init__(self, root: Path, elf: Path, places: tuple[str, ...]):
        self.processes: list[subprocess.Popen] = []
        try:
            self._setup(root, elf, places)
        except BaseException:
            self.close()
            raise

    def _setup(self, root: Path, elf: Path, places: tuple[str, ...]) -> None:
        port = _free_port()
        self.env = dict(os.environ, LG_COORDINATOR=f"127.0.0.1:{port}")
        address = self.env["LG_COORDINATOR"]
        self._start([BIN / "labgrid-coordinator", "-l", address], cwd=root, log="coordinator")
        # an exporter that finds no coordinator exits: wait until it listens
        _wait_for(lambda: _listening(port), 60, "the coordinator listens",
                  [root / "coordinator.log"])
        config = []
        for place in places:
            qemu, pty = _qemu_on_pty(elf)
            self.processes.append(qemu)
            config.append(f"{place}:\n  RawSerialPort:\n    port: {pty}\n    speed: 115200\n")
        (root / "exporter.yaml").write_text("".join(config))
        self._start([BIN / "labgrid-exporter", "-c", address, "-n", "tinyconv-test",
                     "--hostname", "127.0.0.1", root / "exporter.yaml"], cwd=root, log="exporter")
        _wait_for(lambda: all(f"/{p}/" in self.client("resources").stdout for p in places),
                  60, "the exporter's resources appear",
                  [root / "coordinator.log", root / "exporter.log"])
        for place in places:
            self.client("-p", place, "create")
            self.client("-p", place, "add-match", f"tinyconv-test/{place}/*")

    def _start(self, command, cwd, log: str) -> None:
        with open(cwd / f"{log}.log", "wb") as out:
            self.processes.append(subprocess.Popen(
                [str(c) for c in command], cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True))

    def client(self, *args, user: str | None = None) -> subprocess.CompletedProcess:
        env = self.env if user is None else dict(self.env, LG_USERNAME=user)
        return subprocess.run([str(BIN / "labgrid-client"), *args], env=env, capture_output=True,
                              text=True, timeout=60)

    def holder(self, place: str) -> str:
        """Who holds ``place`` ('None' when nobody), as labgrid-client shows it."""
        shown = self.client("-p", place, "show").stdout
        return re.search(r"acquired: (\S+)", shown).group(1)

    def close(self) -> None:
        for process in reversed(self.processes):  # exporter (and its ser2net) first
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


@pytest.fixture(scope="module")
def farm(tmp_path_factory, arm_tools):
    require_tool("ser2net")
    root = tmp_path_factory.mktemp("farm")
    export_dir = export_small_cnn(root / "export")
    from firmware_host.build import build_firmware

    elf = Path(build_firmware(export_dir, BOARD))
    farm = Farm(root, elf, ("board-a", "board-b"))
    old = os.environ.get("LG_COORDINATOR")
    os.environ["LG_COORDINATOR"] = farm.env["LG_COORDINATOR"]
    try:
        yield farm, export_dir
    finally:
        if old is None:
            del os.environ["LG_COORDINATOR"]
        else:
            os.environ["LG_COORDINATOR"] = old
        farm.close()


def test_verify_across_two_places_equals_a_local_board_and_releases_them(farm):
    from firmware_host.verify import verify
    from test_verify_many import _same

    lab, export_dir = farm
    x = images(120, seed=3)
    two = verify(export_dir, x, devices=["labgrid:board-a", "labgrid:board-b"], progress=False)
    assert two.exit_status == 0 and two.images == two.device_equal_images == 120
    assert [d["target"] for d in two.devices] == [BOARD, BOARD]
    assert all(d["images"] > 0 for d in two.devices)
    assert all(d["url"].startswith("rfc2217://127.0.0.1:") for d in two.devices)
    assert lab.holder("board-a") == lab.holder("board-b") == "None"
    _same(verify(export_dir, x, device=BOARD, progress=False), two)


def test_a_place_held_by_someone_else_is_refused_in_one_line(farm, tmp_path):
    lab, export_dir = farm
    taken = lab.client("-p", "board-b", "acquire", user="someone-else")
    assert taken.returncode == 0, taken.stderr
    try:
        run = subprocess.run(
            [sys.executable, "-m", "tinyconv.cli", "verify", str(export_dir), "--input",
             str(_dataset(tmp_path)), "--device", "labgrid:board-a", "--device",
             "labgrid:board-b"], capture_output=True, text=True, timeout=120, env=lab.env)
        assert run.returncode == 2 and "Traceback" not in run.stderr
        assert len(run.stderr.strip().splitlines()) == 1
        assert "board-b" in run.stderr and "someone-else" in run.stderr
        assert lab.holder("board-a") == "None"  # the place it did get was given back
        assert lab.holder("board-b").endswith("/someone-else")
    finally:
        lab.client("-p", "board-b", "release", user="someone-else")


def test_the_place_is_released_on_errors_and_ctrl_c(farm):
    from firmware_host.devices import start_device

    lab, export_dir = farm
    for interruption in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(interruption)):
            with start_device("labgrid:board-a", export_dir) as device:
                assert device.url.startswith("rfc2217://")
                assert lab.holder("board-a") != "None"
                raise interruption
        assert lab.holder("board-a") == "None"


def test_a_ctrl_c_in_the_cli_releases_the_places(farm, tmp_path):
    lab, export_dir = farm
    run = subprocess.Popen(
        [sys.executable, "-m", "tinyconv.cli", "verify", str(export_dir), "--input",
         str(_dataset(tmp_path, 20000)), "--device", "labgrid:board-a"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=lab.env)
    _wait_for(lambda: lab.holder("board-a") != "None", 60, "the CLI acquires board-a")
    time.sleep(1.0)  # well into the run
    run.send_signal(signal.SIGINT)
    _, err = run.communicate(timeout=60)
    assert run.returncode != 0 and lab.holder("board-a") == "None", err


def test_an_unknown_place_and_no_coordinator_are_one_line_errors(farm, tmp_path):
    lab, export_dir = farm
    data = _dataset(tmp_path)
    for env, why in ((lab.env, "board-z"),
                     (dict(lab.env, LG_COORDINATOR=f"127.0.0.1:{_free_port()}"),
                      "cannot reach the labgrid coordinator")):
        run = subprocess.run([sys.executable, "-m", "tinyconv.cli", "verify", str(export_dir),
                              "--input", str(data), "--device", "labgrid:board-z"],
                             capture_output=True, text=True, timeout=120, env=env)
        assert run.returncode == 2 and why in run.stderr and "Traceback" not in run.stderr


def _dataset(tmp_path: Path, count: int = 40) -> Path:
    import numpy as np

    path = tmp_path / f"data{count}.npz"
    np.savez(path, x=images(count, seed=3))
    return path
