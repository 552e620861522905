"""Hostile frames at the device: the firmware's frame parser and protocol engine under libFuzzer
with AddressSanitizer and UBSan (tests/c/fuzz_protocol.c, which also checks every reply the
engine writes with its own COBS decoder and CRC-32).

First the committed corpus of crashing-shape inputs (tests/fuzz_corpus/) is replayed as a
regression test, then the fuzzer runs for a bounded time (TINYCONV_FUZZ_SECONDS, default 60)
from that corpus. Any crash, sanitizer report, leak or malformed reply fails the test, and the
failure message carries the offending input in hex, ready to be added to the corpus.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from _host_device import require_tool

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "firmware" / "src"
TESTC = ROOT / "tests" / "c"
CORPUS = ROOT / "tests" / "fuzz_corpus"
SECONDS = int(os.environ.get("TINYCONV_FUZZ_SECONDS", "60"))
SHAPES = ("empty", "zero_length_frame", "oversized_infer", "huge_length_field",
          "truncated_cobs_block", "bad_crc", "cobs_code_past_end", "wrong_version",
          "unknown_type", "shorter_than_header", "wrapped_huge_length", "all_ff_run")
ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:symbolize=1",
           UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")


def corpus_files() -> list[Path]:
    return sorted(p for p in CORPUS.iterdir() if p.is_file() and p.suffix != ".py")


@pytest.fixture(scope="session")
def fuzzer(tmp_path_factory) -> Path:
    clang = require_tool("clang")
    exe = tmp_path_factory.mktemp("fuzz") / "fuzz_protocol"
    result = subprocess.run(
        [clang, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g", "-O1",
         "-fsanitize=fuzzer,address,undefined", "-fno-sanitize-recover=all",
         f"-I{TESTC}", f"-I{SRC}", str(TESTC / "fuzz_protocol.c"), str(TESTC / "stub_model.c"),
         *(str(SRC / f) for f in ("tc_protocol.c", "tc_cobs.c", "tc_crc32.c")),
         "-o", str(exe)], capture_output=True, text=True)
    if result.returncode != 0 and "libclang_rt.fuzzer" in result.stderr \
            and os.environ.get("CI") != "true":
        pytest.skip("clang's libFuzzer runtime is not installed (libclang-rt-14-dev)")
    assert result.returncode == 0, result.stderr
    return exe


def _verdict(result: subprocess.CompletedProcess, artifacts: Path | None = None) -> None:
    found = sorted(artifacts.iterdir()) if artifacts is not None else []
    report = "\n".join(f"{p.name}: {p.read_bytes().hex()}" for p in found)
    bad = [m for m in ("Sanitizer", "runtime error", "deadly signal", "LeakSanitizer")
           if m in result.stderr]
    assert result.returncode == 0 and not bad and not found, \
        f"{bad} {report}\n{result.stderr[-4000:]}"


def test_corpus_has_every_crashing_shape():
    names = {p.name for p in corpus_files()}
    assert set(SHAPES) <= names
    assert all(p.read_bytes()[:1] in (b"", b"\x00", b"\x01") for p in corpus_files())


def test_corpus_replays_clean(fuzzer):
    files = corpus_files()
    result = subprocess.run([str(fuzzer), *map(str, files)], capture_output=True, text=True,
                            env=ENV, timeout=120)
    _verdict(result)
    assert result.stderr.count("Executed ") == len(files)


def test_bounded_fuzzing_finds_nothing(fuzzer, tmp_path):
    work = tmp_path / "corpus"
    artifacts = tmp_path / "artifacts"
    work.mkdir()
    artifacts.mkdir()
    for path in corpus_files():
        shutil.copy(path, work / path.name)
    result = subprocess.run(
        [str(fuzzer), f"-max_total_time={SECONDS}", "-timeout=10", "-rss_limit_mb=2048",
         "-max_len=4096", f"-artifact_prefix={artifacts}/", "-print_final_stats=1", str(work)],
        capture_output=True, text=True, env=ENV, timeout=SECONDS + 120)
    _verdict(result, artifacts)
    runs = [line for line in result.stderr.splitlines()
            if line.startswith("stat::number_of_executed_units:")]
    assert runs and int(runs[0].split()[-1]) > 1000, result.stderr[-2000:]
