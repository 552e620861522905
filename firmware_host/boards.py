"""The Cortex-M boards tinyconv builds for and runs under qemu-system-arm (Debian 12's 7.2).

One table, so that build.py (compiler, fit check), qemu.py (machine), devices.py and the docs
agree; the Makefile's ``ports/BOARD/board.mk`` (the -mcpu flags) and ``ports/BOARD/BOARD.ld``
(the memory map) say the same, which tests/test_boards.py checks. ``flash`` and ``ram`` are
the regions the linker script gives the image (the whole part where the board has more than
one RAM: netduinoplus2's 64 KB CCM and mps3-an547's other SRAMs are not used). ``clock_hz`` is
the SysTick clock QEMU gives the core: with ``-icount shift=3`` (8 ns per instruction) the
ports turn its counts into guest instructions.
"""
from __future__ import annotations

from dataclasses import dataclass

from runtime.errors import TinyconvError


@dataclass(frozen=True)
class Board:
    name: str  # our target name and QEMU's -M machine
    core: str  # gcc -mcpu
    arch: str
    fpu: str | None  # gcc -mfpu with the hard-float ABI, None: soft float
    flash: int  # bytes
    flash_origin: int
    ram: int  # bytes
    ram_origin: int
    clock_hz: int
    uart: str
    part: str

    @property
    def has_fpu(self) -> bool:
        return self.fpu is not None

    def describe(self) -> str:
        fpu = f", FPU {self.fpu}" if self.fpu else ", no FPU"
        return (f"{self.name}: {self.part}, {self.core} ({self.arch}{fpu}), "
                f"{self.flash // 1024} KB flash, {self.ram // 1024} KB RAM, {self.uart}")


KB = 1024
BOARDS = {b.name: b for b in (
    Board("lm3s6965evb", "cortex-m3", "armv7-m", None, 256 * KB, 0x0, 64 * KB, 0x20000000,
          12_500_000, "PL011 UART0 at 0x4000C000, IRQ 5", "TI Stellaris LM3S6965"),
    Board("mps2-an386", "cortex-m4", "armv7e-m", "fpv4-sp-d16", 4096 * KB, 0x0, 4096 * KB,
          0x20000000, 25_000_000, "CMSDK UART0 at 0x40004000, RX IRQ 0", "Arm MPS2 AN386"),
    Board("netduinoplus2", "cortex-m4", "armv7e-m", "fpv4-sp-d16", 1024 * KB, 0x08000000,
          128 * KB, 0x20000000, 168_000_000, "USART1 at 0x40011000, IRQ 37",
          "ST STM32F405RG"),
    Board("mps2-an500", "cortex-m7", "armv7e-m", "fpv5-d16", 4096 * KB, 0x0, 4096 * KB,
          0x20000000, 25_000_000, "CMSDK UART0 at 0x40004000, RX IRQ 0", "Arm MPS2 AN500"),
    Board("microbit", "cortex-m0", "armv6-m", None, 256 * KB, 0x0, 16 * KB, 0x20000000,
          16_000_000, "UART0 at 0x40002000, IRQ 2", "Nordic nRF51822"),
    Board("mps3-an547", "cortex-m55", "armv8.1-m.main", "fpv5-d16+mve", 512 * KB, 0x10000000,
          512 * KB, 0x30000000, 32_000_000, "CMSDK UART0 at 0x59303000, RX IRQ 33",
          "Arm MPS3 AN547 (SSE-300): ITCM and DTCM, secure aliases"),
)}
TARGETS = ("host", *BOARDS)  # what `tinyconv build --target` accepts


def board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise TinyconvError(f"unknown board {name!r}; use one of {', '.join(BOARDS)}") from None
