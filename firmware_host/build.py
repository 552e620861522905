"""``tinyconv build``: compile the device firmware for an exported model.

The work is done by ``firmware/Makefile`` (so a firmware engineer can build without Python);
this module finds the tools, runs make into ``<export dir>/firmware/<target>/`` (make rebuilds
only what is stale), turns a compiler or linker failure into a one-line TinyconvError in the
tool's own words, and reports the ARM image's flash, RAM and worst-case stack
(firmware_host/stack.py).

Before the real link, an ARM image is linked once more with the board's limits lifted
(``make probe``) and measured: flash, the arena, the kernel scratch, the other buffers and the
worst-case stack. An image that does not fit the board (firmware_host/boards.py) is refused
with those numbers (FitError), which says more than the linker's "region overflowed" and also
catches a stack that would run into the data, which the linker cannot see.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import tempfile
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from runtime.errors import TinyconvError
from runtime.model import write_atomic
from firmware_host.boards import BOARDS, TARGETS, Board
from firmware_host.stack import StackBound, worst_case_stack

FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "firmware"
_BINARIES = {"host": "tinyconv-device"}


class FitError(TinyconvError):
    """The image needs more flash or RAM than the board has."""


def firmware_dir(export_dir: str | os.PathLike, target: str) -> Path:
    return Path(export_dir).resolve() / "firmware" / target


# what make takes in a file name as it is: it splits names at spaces and gives : # $ % = ; ( )
# their own meanings; anything else (non-ASCII too, to be safe) is reached through a symlink
_MAKE_SAFE = re.compile(r"[A-Za-z0-9_./+,@~-]*")


def cache_dir() -> Path:
    """Where tinyconv keeps what it cannot keep beside the model: $TINYCONV_CACHE, else the
    user's cache (~/.cache/tinyconv), else a per-user temporary folder; the first one that
    make can name and that can be written."""
    home_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache")
    candidates = [os.environ.get("TINYCONV_CACHE"), os.path.join(home_cache, "tinyconv"),
                  os.path.join(tempfile.gettempdir(), f"tinyconv-{os.getuid()}"),
                  f"/tmp/tinyconv-{os.getuid()}"]
    for candidate in filter(None, candidates):
        path = Path(candidate).absolute()
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if _MAKE_SAFE.fullmatch(str(path)) and os.access(path, os.W_OK | os.X_OK):
            return path
    raise TinyconvError("no writable cache folder for the build: set TINYCONV_CACHE to a "
                        "writable folder whose path has no spaces")


def _make_path(path: Path) -> Path:
    """``path`` as make can take it: itself, or a stable symlink to it in the cache, so a
    user's "My models/exp" or "模型/exp" builds like any other folder."""
    text = str(path)
    if _MAKE_SAFE.fullmatch(text):
        return path
    link = cache_dir() / "paths" / hashlib.sha256(text.encode()).hexdigest()[:20]
    if not (link.is_symlink() and os.readlink(link) == text):
        link.parent.mkdir(exist_ok=True)
        fresh = link.with_name(f"{link.name}.{os.getpid()}")
        fresh.unlink(missing_ok=True)
        os.symlink(text, fresh)
        os.replace(fresh, link)
    return link


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK)


def _out_dir(export_dir: Path, target: str) -> Path:
    """DIR/firmware/TARGET, or its own folder in the cache when DIR cannot be written (a
    read-only share, another user's export): the build happens there instead."""
    out = firmware_dir(export_dir, target)
    if _writable(out):
        return out
    key = hashlib.sha256(str(export_dir).encode()).hexdigest()[:20]
    return cache_dir() / "firmware" / key / target


def _need(tool: str, hint: str) -> None:
    if shutil.which(tool) is None:
        raise TinyconvError(f"{tool} is not installed ({hint})")


def _ensure_model_sources(export_dir: Path) -> Path:
    """The folder holding model_data.c/.h: the export's own, or, when they are missing (older
    exports lack them), one where they are generated from model.tcm (the cache when the export
    cannot be written)."""
    if (export_dir / "model_data.c").is_file() and (export_dir / "model_data.h").is_file():
        return export_dir
    if not (export_dir / "model.tcm").is_file():
        raise TinyconvError(f"{export_dir} holds neither model_data.c/.h nor model.tcm; "
                            "run `tinyconv export` first")
    from export.c_codegen import write_c_sources
    from runtime.model import load

    model = load(export_dir / "model.tcm")
    target = export_dir if os.access(export_dir, os.W_OK) else (
        cache_dir() / "model" / hashlib.sha256(str(export_dir).encode()).hexdigest()[:20])
    target.mkdir(parents=True, exist_ok=True)
    write_c_sources(model, target)
    return target


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
    """The first line that says what went wrong: the compiler's or the linker's own words
    (``region `RAM' overflowed by 48 bytes``), never collect2's "ld returned 1"."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    own = [ln for ln in lines if not ln.startswith("collect2")]
    for wanted in (lambda ln: "overflowed by" in ln,
                   lambda ln: "error" in ln.lower() or "undefined reference" in ln,
                   lambda ln: "/ld: " in ln or ln.startswith("ld: ")):
        found = [ln for ln in own if wanted(ln)]
        if found:
            return found[0]
    return (lines or ["no message"])[0]


def _make(command: list[str], target: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise TinyconvError(f"building the {target} firmware failed: "
                            f"{_compiler_message(done.stderr + done.stdout)}")


@dataclass(frozen=True)
class Needs:
    """What one image needs, measured on its unconstrained (probe) link, bytes."""
    flash: int  # code, constants, data initializers
    static_ram: int  # data + bss, with the alignment gaps
    arena: int
    scratch: int
    stack: StackBound

    @property
    def buffers(self) -> int:  # everything static that is neither arena nor scratch
        return self.static_ram - self.arena - self.scratch

    @property
    def ram(self) -> int:
        return self.static_ram + (self.stack.bytes or 0)

    def refusal(self, board: Board) -> str | None:
        """The one-line reason the image does not fit ``board``, or None when it does."""
        over = [f"{what} over by {need - have:,} B" for what, need, have in
                (("flash", self.flash, board.flash), ("RAM", self.ram, board.ram))
                if need > have]
        if not over:
            return None
        stack = "unbounded" if self.stack.bytes is None else f"{self.stack.bytes:,}"
        return (f"model needs {self.flash:,} B flash, {self.ram:,} B RAM (arena "
                f"{self.arena:,}, scratch {self.scratch:,}, buffers {self.buffers:,}, stack "
                f"{stack}); {board.name} has {board.flash:,} / {board.ram:,}: does not fit, "
                + ", ".join(over))


def _symbols(elf: Path) -> dict[str, tuple[int, int]]:
    """name -> (address, size) from the ELF's symbol table."""
    done = subprocess.run(["arm-none-eabi-nm", "-S", str(elf)], capture_output=True, text=True)
    symbols = {}
    for line in done.stdout.splitlines():
        fields = line.split()
        if len(fields) == 4:
            symbols[fields[3]] = (int(fields[0], 16), int(fields[1], 16))
        elif len(fields) == 3:
            symbols[fields[2]] = (int(fields[0], 16), 0)
    return symbols


def _frame_room() -> int:
    """The bytes tc_model.c's arena storage has around the plan for a request frame's header
    and CRC (tc_model.h): the protocol's, so counted among the buffers, not the arena."""
    header = (FIRMWARE_DIR / "src" / "tc_model.h").read_text()
    return sum(int(re.search(rf"#define {name} (\d+)", header).group(1))
               for name in ("TC_INPUT_HEADROOM", "TC_ARENA_TAILROOM"))


def measure(probe: Path, obj_dir: Path, board: Board) -> Needs:
    """Flash and static RAM as the linker places them (alignment gaps included: what its
    region check counts), from the probe image's section-end symbols."""
    symbols = _symbols(probe)
    at = {name: symbols[name][0] for name in ("tc_data_load", "tc_data_start", "tc_data_end",
                                               "tc_bss_end")}
    flash = at["tc_data_load"] + at["tc_data_end"] - at["tc_data_start"] - board.flash_origin
    arena = (symbols["tc_arena_frame"][1] - _frame_room() if "tc_arena_frame" in symbols
             else symbols.get("tc_arena", (0, 0))[1])
    return Needs(flash, at["tc_bss_end"] - board.ram_origin, arena,
                 symbols.get("tc_scratch", (0, 0))[1],
                 worst_case_stack(probe, obj_dir))


def build_firmware(export_dir: str | os.PathLike, target: str, *, app: str | None = None,
                   extra_include: str | os.PathLike | None = None,
                   out_dir: str | os.PathLike | None = None, probe_only: bool = False) -> Path:
    """Build (when missing or stale) and return the host executable or the ARM ELF.

    ``app`` replaces firmware/src/main.c and ``extra_include`` adds an include directory (the
    self-test image uses both, with its own ``out_dir``). ``probe_only``: stop after the fit
    check (FitError when the image does not fit) and return the probe image."""
    if target not in TARGETS:
        raise TinyconvError(f"unknown target {target!r}; use one of {', '.join(TARGETS)}")
    export_dir = Path(export_dir).resolve()
    if not export_dir.is_dir():
        raise TinyconvError(f"export directory {export_dir} does not exist")
    if not (FIRMWARE_DIR / "Makefile").is_file():
        raise TinyconvError(f"the firmware sources are not at {FIRMWARE_DIR}: building needs a "
                            "source checkout of tinyconv (pip install -e .), not a wheel")
    _need("make", "apt-get install make")
    _need("gcc" if target == "host" else "arm-none-eabi-gcc",
          "apt-get install gcc" if target == "host" else "apt-get install gcc-arm-none-eabi")
    model_dir = _ensure_model_sources(export_dir)
    out = Path(out_dir).resolve() if out_dir else _out_dir(export_dir, target)
    binary = out / _BINARIES.get(target, "firmware.elf")
    with _locked(out):
        command = ["make", "-s", "-C", str(_make_path(FIRMWARE_DIR)), f"TARGET={target}",
                   f"MODEL_DIR={_make_path(model_dir)}", f"OUT={_make_path(out)}"]
        if app:
            command.append(f"APP={_make_path(Path(app).resolve())}")
        if extra_include:
            command.append(f"EXTRA_INCLUDE={_make_path(Path(extra_include).resolve())}")
        if target != "host":
            _make(command + ["probe"], target)
            needs = measure(out / "probe.elf", out / "obj", BOARDS[target])
            refusal = needs.refusal(BOARDS[target])
            if refusal:
                raise FitError(refusal)
            if probe_only:
                return out / "probe.elf"
        _make(command, target)
    if target != "host":
        sizes = {**firmware_size(binary), **needs.stack.as_dict()}
        write_atomic(out / "size.json", (json.dumps(sizes, indent=2) + "\n").encode())
        if out_dir is None:
            _record_in_report(export_dir, target, sizes)
    return binary


def _record_in_report(export_dir: Path, target: str, sizes: dict) -> None:
    """Keep the measured image size next to export's planned flash/RAM in report.json: only
    in the report export wrote for this model (its hash), not in a report.json of the user's
    beside a model.tcm in a hand-made directory."""
    from runtime.model import load

    path = export_dir / "report.json"
    try:
        report = json.loads(path.read_text())
        ours = isinstance(report, dict) and report.get("hash") == load(export_dir).hash
    except (OSError, ValueError, TinyconvError):
        return  # no export report to extend (a hand-made model directory)
    if not ours:
        return
    report.setdefault("firmware", {})[target] = sizes
    try:
        write_atomic(path, (json.dumps(report, indent=2) + "\n").encode())
    except OSError:
        pass  # a read-only export: the sizes stay in the build's own size.json


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
                        help="host (POSIX process) or a board run under qemu-system-arm: "
                             + "; ".join(f"{b.name} ({b.core}, {b.flash // 1024} KB flash, "
                                         f"{b.ram // 1024} KB RAM)" for b in BOARDS.values())
                             + " (default: host)")
    parser.set_defaults(func=_command)
