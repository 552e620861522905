"""``tinyconv build``: compile the device firmware for an exported model.

The work is done by ``firmware/Makefile`` (so a firmware engineer can build without Python);
this module finds the tools, runs make into ``<export dir>/firmware/<target>/`` (make rebuilds
only what is stale), turns a compiler failure into a one-line TinyconvError, and reports the
ARM image's flash, RAM and worst-case stack (firmware_host/stack.py).
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

from runtime.errors import TinyconvError
from runtime.model import write_atomic
from firmware_host.stack import worst_case_stack

TARGETS = ("host", "lm3s6965evb", "mps2-an386")
FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "firmware"
_COMPILERS = {"host": "gcc", "lm3s6965evb": "arm-none-eabi-gcc", "mps2-an386": "arm-none-eabi-gcc"}
_BINARIES = {"host": "tinyconv-device"}


def firmware_dir(export_dir: str | os.PathLike, target: str) -> Path:
    return Path(export_dir).resolve() / "firmware" / target


def _need(tool: str, hint: str) -> None:
    if shutil.which(tool) is None:
        raise TinyconvError(f"{tool} is not installed ({hint})")


def _ensure_model_sources(export_dir: Path) -> None:
    """model_data.c/.h exist, or are generated from model.tcm (older exports lack them)."""
    if (export_dir / "model_data.c").is_file() and (export_dir / "model_data.h").is_file():
        return
    if not (export_dir / "model.tcm").is_file():
        raise TinyconvError(f"{export_dir} holds neither model_data.c/.h nor model.tcm; "
                            "run `tinyconv export` first")
    from export.c_codegen import write_c_sources
    from runtime.model import load

    write_c_sources(load(export_dir / "model.tcm"), export_dir)


@contextmanager
def _locked(directory: Path):
    """One build per output directory at a time (parallel tests share export dirs)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _compiler_message(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower() or "undefined reference" in ln]
    overflow = [ln.split(": ", 1)[-1] for ln in lines if "overflowed by" in ln]
    if overflow:  # the linker's reason, not its "ld returned 1" that follows
        return f"the model does not fit the board: {overflow[0]}"
    return (errors or lines or ["no message"])[0]


def build_firmware(export_dir: str | os.PathLike, target: str, *, app: str | None = None,
                   extra_include: str | os.PathLike | None = None,
                   out_dir: str | os.PathLike | None = None) -> Path:
    """Build (when missing or stale) and return the host executable or the ARM ELF.

    ``app`` replaces firmware/src/main.c and ``extra_include`` adds an include directory (the
    self-test image uses both, with its own ``out_dir``)."""
    if target not in TARGETS:
        raise TinyconvError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
    export_dir = Path(export_dir).resolve()
    if not export_dir.is_dir():
        raise TinyconvError(f"export directory {export_dir} does not exist")
    if not (FIRMWARE_DIR / "Makefile").is_file():
        raise TinyconvError(f"the firmware sources are not at {FIRMWARE_DIR}: building needs a "
                            "source checkout of tinyconv (pip install -e .), not a wheel")
    _need("make", "apt-get install make")
    _need(_COMPILERS[target], "apt-get install gcc-arm-none-eabi" if target != "host"
          else "apt-get install gcc")
    _ensure_model_sources(export_dir)
    out = Path(out_dir).resolve() if out_dir else firmware_dir(export_dir, target)
    command = ["make", "-s", "-C", str(FIRMWARE_DIR), f"TARGET={target}",
               f"MODEL_DIR={export_dir}", f"OUT={out}"]
    if app:
        command.append(f"APP={Path(app).resolve()}")
    if extra_include:
        command.append(f"EXTRA_INCLUDE={Path(extra_include).resolve()}")
    with _locked(out):
        done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise TinyconvError(f"building the {target} firmware failed: "
                            f"{_compiler_message(done.stderr + done.stdout)}")
    binary = out / _BINARIES.get(target, "firmware.elf")
    if target != "host":
        sizes = {**firmware_size(binary), **worst_case_stack(binary, out / "obj").as_dict()}
        write_atomic(out / "size.json", (json.dumps(sizes, indent=2) + "\n").encode())
        if out_dir is None:
            _record_in_report(export_dir, target, sizes)
    return binary


def _record_in_report(export_dir: Path, target: str, sizes: dict) -> None:
    """Keep the measured image size next to export's planned flash/RAM in report.json."""
    path = export_dir / "report.json"
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return  # no export report to extend (a hand-made model directory)
    report.setdefault("firmware", {})[target] = sizes
    write_atomic(path, (json.dumps(report, indent=2) + "\n").encode())


def firmware_size(elf: str | os.PathLike) -> dict[str, int]:
    """Flash (text + data initializers) and static RAM (data + bss) of an ARM image, bytes."""
    _need("arm-none-eabi-size", "apt-get install binutils-arm-none-eabi")
    done = subprocess.run(["arm-none-eabi-size", "-B", str(elf)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise TinyconvError(f"arm-none-eabi-size failed on {elf}: {done.stderr.strip()}")
    text, data, bss = (int(v) for v in done.stdout.splitlines()[1].split()[:3])
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "ram": data + bss}


def _command(args) -> int:
    binary = build_firmware(args.dir, args.target)
    print(f"{args.target}: {binary}")
    if args.target != "host":
        sizes = json.loads((binary.parent / "size.json").read_text())
        print(f"flash {sizes['flash']} bytes (code and constants), "
              f"RAM {sizes['ram']} bytes (static data, arena, buffers; stack not included)")
        if sizes["stack"] == "unbounded":
            print(f"stack (worst case) unbounded ({sizes['stack_unbounded_in']})")
        else:
            print(f"stack (worst case) {sizes['stack']} bytes "
                  f"(chain: {' -> '.join(sizes['stack_chain'])})")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build", help="compile the device firmware for an exported model",
        description="Compile the firmware (kernels, protocol, port) for the model in DIR into "
                    "DIR/firmware/TARGET/. Example: tinyconv build build/digits --target "
                    "lm3s6965evb")
    parser.add_argument("dir", help="export directory (holds model_data.c/.h or model.tcm)")
    parser.add_argument("--target", choices=TARGETS, default="host",
                        help="host (POSIX process), lm3s6965evb (Cortex-M3) or mps2-an386 "
                             "(Cortex-M4F), both run under qemu-system-arm (default: host)")
    parser.set_defaults(func=_command)
