"""Peak memory of `tinyconv verify` for 10k vs 100k images: the input is streamed, so it should
not grow with the dataset.

    python benchmarks/bench_memory.py [--sizes 10000 100000]

Exports a small CNN (16x16 grey -> conv 3x3 x4 -> pool -> fc 10, as in the reliability tests),
builds the host device, writes each dataset as an .npz of float32 NCHW images (written in
chunks, so this script stays small too), then runs `python -m tinyconv.cli verify` on it and
reads the child's peak resident set size from wait4(). Prints images, dataset size, peak RSS,
time and images/s per run.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # this checkout, not the installed one
import _host_device as hd  # noqa: E402


def write_images_npz(path: Path, count: int, chunk: int = 5000) -> int:
    """An .npz whose member x.npy is written chunk by chunk (np.savez would need it all)."""
    shape = (count, 1, hd.SIDE, hd.SIDE)
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
              "fortran_order": False, "shape": shape}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive, \
            archive.open("x.npy", "w", force_zip64=True) as member:
        np.lib.format.write_array_header_1_0(member, header)
        for start in range(0, count, chunk):
            n = min(chunk, count - start)
            member.write(hd.images(n, seed=start).tobytes())
    return path.stat().st_size


def run_verify(export_dir: Path, data: Path, report: Path) -> tuple[int, float, int]:
    """(exit status, seconds, peak RSS in KiB) of one `tinyconv verify`."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "tinyconv.cli", "verify", str(export_dir),
                             "--input", str(data), "--device", "host", "--json", str(report)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - started, usage.ru_maxrss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_memory_") as tmp:
        tmp = Path(tmp)
        export_dir = hd.export_small_cnn(tmp / "small_cnn")
        hd.build_host_device(export_dir)
        print(f"{'images':>8} {'dataset MB':>11} {'peak RSS MB':>12} {'seconds':>8} "
              f"{'images/s':>9}  verdict")
        for count in args.sizes:
            data = tmp / f"x{count}.npz"
            size = write_images_npz(data, count)
            report = tmp / f"r{count}.json"
            code, seconds, rss_kib = run_verify(export_dir, data, report)
            result = json.loads(report.read_text()) if report.exists() else {}
            verdict = (f"{result.get('device_equal_images')}/{result.get('images')} equal"
                       if result else f"exit {code}")
            print(f"{count:>8} {size / 1e6:>11.1f} {rss_kib / 1024:>12.1f} {seconds:>8.1f} "
                  f"{count / seconds:>9.0f}  {verdict}", flush=True)
            data.unlink()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
