"""Worst-case stack of an ARM firmware image, from the compiler's and the linker's output.

The Makefile compiles with ``-fstack-usage -fcallgraph-info=su``: every object has a ``.su``
(each C function's frame) and a ``.ci`` (its calls). The image's disassembly adds what the
compiler did not see: the calls and frames of the ``__asm__`` functions and of libgcc (frame =
the deepest sp reached by push / stmdb / vpush / sub sp, read instruction by instruction; any
other write to sp is an error). A call through a pointer may reach any function whose address
is taken outside the vector table (relocations of the objects); recursion, or a frame the
compiler calls dynamic, makes the bound unknown ("unbounded", with the function's name).

Worst case = the deepest chain from the reset handler, plus the exception frame, plus the
deepest chain of the other vector-table handlers. The ports leave every interrupt at its reset
priority, so interrupts do not nest; the fault handlers end the program. The exception frame is
8 words plus 4 bytes of alignment padding (CCR.STKALIGN), 26 words plus padding once the image
executes FPU instructions (the M4F's extended frame, lazily stacked but always reserved).
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from runtime.errors import TinyconvError

INDIRECT = "__indirect_call"
EXCEPTION_FRAME = 32 + 4
FPU_EXCEPTION_FRAME = 104 + 4
RESET = "tc_reset_handler"


class Unbounded(Exception):
    def __init__(self, function: str, why: str):
        super().__init__(f"{why} in {function}")
        self.function = function


@dataclass(frozen=True)
class StackBound:
    bytes: int | None  # None: unbounded
    chain: tuple[str, ...]  # deepest main chain, then "[exception]" and the handler's chain
    unbounded_in: str | None = None

    def as_dict(self) -> dict:
        if self.bytes is None:
            return {"stack": "unbounded", "stack_unbounded_in": self.unbounded_in}
        return {"stack": self.bytes, "stack_chain": list(self.chain)}

    def describe(self) -> str:
        if self.bytes is None:
            return f"stack (worst case) unbounded ({self.unbounded_in})"
        return f"stack (worst case) {self.bytes} bytes (chain: {' -> '.join(self.chain)})"


def deepest(root: str, frames: dict[str, int], calls: dict[str, set[str]]
            ) -> tuple[int, tuple[str, ...]]:
    """Bytes and chain of the deepest call chain from ``root``; Unbounded on recursion."""
    done: dict[str, tuple[int, tuple[str, ...]]] = {}
    active: list[str] = []

    def visit(name: str) -> tuple[int, tuple[str, ...]]:
        if name in done:
            return done[name]
        if name in active:
            raise Unbounded(name, "recursion")
        if name not in frames:
            raise TinyconvError(f"stack: no frame size for {name}")
        active.append(name)
        below = max((visit(c) for c in sorted(calls.get(name, ()))), default=(0, ()))
        active.pop()
        if name == INDIRECT:
            done[name] = below
        else:
            done[name] = (frames[name] + below[0], (name,) + below[1])
        return done[name]

    return visit(root)


def _tool(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise TinyconvError(f"{args[0]} failed: {done.stderr.strip()}")
    return done.stdout


def read_su(obj_dir: Path) -> dict[str, int]:
    frames: dict[str, int] = {}
    for su in sorted(obj_dir.glob("*.su")):
        for line in su.read_text().splitlines():
            where, size, kind = line.split("\t")
            name = where.rsplit(":", 1)[1]
            if kind != "static":
                raise Unbounded(name, f"a {kind} frame")
            frames[name] = max(frames.get(name, 0), int(size))  # same-named statics: the larger
    return frames


def read_ci(obj_dir: Path) -> dict[str, set[str]]:
    calls: dict[str, set[str]] = {}
    for ci in sorted(obj_dir.glob("*.ci")):
        text = ci.read_text()
        names = {m.group(1): m.group(2) for m in
                 re.finditer(r'node: \{ title: "([^"]+)" label: "([^"\\]+)', text)}
        names[INDIRECT] = INDIRECT
        for m in re.finditer(r'edge: \{ sourcename: "([^"]+)" targetname: "([^"]+)"', text):
            calls.setdefault(names[m.group(1)], set()).add(names[m.group(2)])
    return calls


def _register_count(reglist: str) -> int:
    count = 0
    for part in reglist.strip("{} ").split(","):
        part = part.strip()
        if "-" in part:
            lo, hi = (int(re.sub(r"\D", "", r)) for r in part.split("-"))
            count += hi - lo + 1
        else:
            count += 1
    return count


_SP_DOWN = {"push", "stmdb", "vpush", "vstmdb"}
_SP_UP = {"pop", "ldmia", "ldm", "vpop", "vldmia"}


def _sp_change(function: str, mnemonic: str, operands: str) -> int:
    """Bytes this instruction moves sp down (negative: up), 0 if it leaves sp alone."""
    base = mnemonic.split(".")[0]
    if re.match(r"sp,\s*\{", operands) and base.startswith(("ldm", "stm", "vldm", "vstm")):
        return 0  # no writeback: sp stays
    m = re.match(r"sp!?,\s*(\{.*\})$", operands)
    if base in ("push", "pop", "vpush", "vpop") or (m and base in _SP_DOWN | _SP_UP):
        reglist = m.group(1) if m else operands
        size = 8 if re.search(r"\bd\d", reglist) else 4
        n = _register_count(reglist) * size
        return n if base in _SP_DOWN else -n
    if not re.match(r"sp\b", operands) and not re.search(r"\[sp.*\]!|\[sp\], #", operands):
        return 0
    m = re.match(r"sp, (?:sp, )?#(\d+)$", operands)
    if m and base in ("sub", "subw"):
        return int(m.group(1))
    if m and base in ("add", "addw"):
        return -int(m.group(1))
    m = re.search(r"\[sp, #-(\d+)\]!$", operands)
    if m and base.startswith("str"):
        return int(m.group(1))
    m = re.search(r"\[sp\], #(\d+)$", operands)
    if m and base.startswith("ldr"):
        return -int(m.group(1))
    if base.startswith(("ldr", "str")) and not re.match(r"sp\b", operands):
        return 0
    if base in ("add", "sub") and re.match(r"sp, (?:sp, )?r\d+$", operands):
        raise _RegisterFrame  # Thumb-1's large frames: sp moved by a loaded constant
    raise TinyconvError(f"stack: cannot size the frame of {function}: {mnemonic} {operands}")


class _RegisterFrame(Exception):
    """sp moved by a register: the frame is only known from the compiler's .su."""


@dataclass
class _Disassembly:
    frames: dict[str, int]  # from the instructions, every function
    calls: dict[str, set[str]]
    uses_fpu: bool
    labels: dict[str, str]  # code label -> its function
    register_frames: set[str] = field(default_factory=set)  # need a .su size


def _functions(elf: Path) -> tuple[dict[str, tuple[int, int]], dict[str, str]]:
    """The image's functions (start, end) and its code labels (size-0 FUNC symbols inside a
    function, such as the asm kernels' jump targets) mapped to their function."""
    spans: dict[str, tuple[int, int]] = {}
    labels: list[tuple[str, int]] = []
    for line in _tool(["arm-none-eabi-readelf", "-sW", str(elf)]).splitlines():
        parts = line.split()
        if len(parts) == 8 and parts[3] == "FUNC":
            start, size = int(parts[1], 16) & ~1, int(parts[2])
            if size:
                spans[parts[7]] = (start, start + size)
            else:
                labels.append((parts[7], start))
    owner = {}
    for name, at in labels:
        inside = [f for f, (lo, hi) in spans.items() if lo <= at < hi]
        if inside:
            owner[name] = inside[0]
        else:  # a libgcc entry point without a size: it may run on into the next function
            spans[name] = (at, at)
    return spans, owner


def read_disassembly(elf: Path) -> _Disassembly:
    text = _tool(["arm-none-eabi-objdump", "-d", "--no-show-raw-insn", str(elf)])
    spans, owner = _functions(elf)
    frames: dict[str, int] = {}
    calls: dict[str, set[str]] = {}
    uses_fpu = False
    register_frames: set[str] = set()
    function = None
    depth = 0
    computed_jump = has_adr = False

    def close() -> None:
        if function and computed_jump and not has_adr:
            calls[function].add(INDIRECT)

    for line in text.splitlines():
        head = re.match(r"[0-9a-f]+ <([^>]+)>:$", line)
        if head and head.group(1) not in owner:
            close()
            if function and spans[function][0] == spans[function][1] and head.group(1) in spans:
                calls[function].add(head.group(1))
            function, depth, computed_jump, has_adr = head.group(1), 0, False, False
            if function not in spans:
                function = None  # constants placed in .text
                continue
            frames[function], calls[function] = 0, set()
            continue
        ins = re.match(r"\s*[0-9a-f]+:\s+([a-z][\w.]*)\s*(.*)$", line)  # no indent at 0x1...
        if not ins or function is None:
            continue
        mnemonic, operands = ins.group(1), re.split(r"[;@]", ins.group(2))[0].strip()
        if mnemonic.startswith("v"):
            uses_fpu = True
        if mnemonic.startswith("adr"):
            has_adr = True
        try:
            depth += _sp_change(function, mnemonic, operands)
        except _RegisterFrame:
            register_frames.add(function)
        frames[function] = max(frames[function], depth)
        target = re.search(r"<([^>+]+)>$", operands)
        if target and owner.get(target.group(1), target.group(1)) != function and re.match(r"bl?(\.w|\.n)?$|b[a-z]{2}(\.w)?$",
                                                                mnemonic):
            calls[function].add(target.group(1))
        elif mnemonic == "blx" and re.match(r"r\d|ip", operands):
            calls[function].add(INDIRECT)
        elif mnemonic == "bx" and operands != "lr":
            computed_jump = True  # a jump into the function itself when it takes (adr) own labels
    close()
    return _Disassembly(frames, calls, uses_fpu, owner, register_frames)


def _relocations(obj_dir: Path) -> tuple[set[str], list[str]]:
    """Functions whose address is taken (outside .vectors), and the vector table's entries."""
    taken: set[str] = set()
    vectors: list[str] = []
    for obj in sorted(obj_dir.glob("*.o")):
        section = ""
        for line in _tool(["arm-none-eabi-objdump", "-r", str(obj)]).splitlines():
            m = re.match(r"RELOCATION RECORDS FOR \[(.+)\]:", line)
            if m:
                section = m.group(1)
                continue
            parts = line.split()
            if len(parts) != 3 or parts[1] in ("R_ARM_THM_CALL", "R_ARM_THM_JUMP24", "TYPE"):
                continue
            symbol = re.sub(r"^\.text\.", "", parts[2].split("+")[0])
            if section == ".vectors":
                vectors.append(symbol)
            else:
                taken.add(symbol)
    return taken, vectors


def worst_case_stack(elf: str | Path, obj_dir: str | Path | None = None) -> StackBound:
    elf = Path(elf)
    obj_dir = Path(obj_dir) if obj_dir else elf.parent / "obj"
    dis = read_disassembly(elf)
    try:
        su = read_su(obj_dir)
    except Unbounded as e:
        return StackBound(None, (), str(e))
    # the .su names a clone by its kind only ("f.isra" for the image's "f.isra.0")
    by_register = {f: su.get(f, su.get(re.sub(r"\.\d+$", "", f))) for f in dis.register_frames}
    unsized = sorted(f for f, size in by_register.items() if size is None)
    if unsized:
        return StackBound(None, (), f"a frame sized by a register in {unsized[0]}")
    frames = {**dis.frames, **by_register, **su}
    calls: dict[str, set[str]] = {}
    for source in (dis.calls, read_ci(obj_dir)):
        for caller, callees in source.items():
            calls.setdefault(caller, set()).update(c for c in callees
                                                   if c in dis.frames or c == INDIRECT)
    taken, vectors = _relocations(obj_dir)
    frames[INDIRECT] = 0
    calls[INDIRECT] = {dis.labels.get(f, f) for f in taken} & dis.frames.keys()
    handlers = sorted({v for v in vectors[2:] if v in dis.frames})
    if RESET not in dis.frames or not handlers:
        raise TinyconvError(f"stack: {elf} has no {RESET} or no vector table")
    try:
        main = deepest(RESET, frames, calls)
        isr = max(deepest(h, frames, calls) for h in handlers)
    except Unbounded as e:
        return StackBound(None, (), str(e))
    exception = FPU_EXCEPTION_FRAME if dis.uses_fpu else EXCEPTION_FRAME
    return StackBound(main[0] + exception + isr[0],
                      main[1] + (f"[exception {exception}]",) + isr[1])
