"""``tinyconv bench``: run one of the repository's benchmarks by name.

The benchmarks are scripts under ``benchmarks/`` (each also runs on its own, and
docs/PERFORMANCE.md gives the command behind every recorded figure); this subcommand only finds
and starts them with the same Python, so a user does not need to know where they live.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from runtime.errors import TinyconvError

BENCHMARK_DIR = Path(__file__).resolve().parents[1] / "benchmarks"
BENCHMARKS = {
    "runtime": ("bench_runtime.py", "runtime/ kernels vs onnxruntime QLinearConv, one thread each"),
    "device": ("bench_device.py", "images/s over the pty and under QEMU, wire efficiency"),
    "arm-kernels": ("bench_kernels_arm.py", "instructions per MAC per layer on the QEMU boards"),
    "memory": ("bench_memory.py", "peak RSS of verify for 10k vs 100k images"),
    "models": ("bench_models.py", "MLPerf Tiny models: runtime.run vs onnxruntime, batch 1/32"),
}


def _command(args) -> int:
    script = BENCHMARK_DIR / BENCHMARKS[args.name][0]
    if not script.is_file():
        raise TinyconvError(f"{script} is missing: benchmarks ship with the source checkout, "
                            "not with an installed wheel")
    return subprocess.call([sys.executable, str(script), *args.options])


def register(subparsers) -> None:
    listing = "\n".join(f"  {name:12} {help_}" for name, (_, help_) in BENCHMARKS.items())
    parser = subparsers.add_parser(
        "bench", help="run a benchmark (runtime, models, device, arm-kernels, memory)",
        description=f"Run one of tinyconv's benchmarks.\n\n{listing}\n\n"
        "Options after the name go to the benchmark (see `tinyconv bench NAME --help`).\n\n"
        "example:\n  tinyconv bench runtime --repeat 30\n  tinyconv bench models --models dscnn\n"
        "  tinyconv bench device --targets host",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", choices=sorted(BENCHMARKS), metavar="NAME")
    parser.add_argument("options", nargs=argparse.REMAINDER, help="passed on to the benchmark")
    parser.set_defaults(func=_command)
