"""Faults on the wire: `tinyconv verify` against the real host device through
firmware_host.faults.FaultRelay, a seeded relay that flips bits, drops, duplicates and stalls
bytes and power-cycles the device in the middle of the run.

What must hold whatever the cable does: no corrupted result is accepted (every accepted output
equals runtime/'s), every image ends verified or reported failed after bounded retries, none is
skipped or counted twice, the run ends in bounded time, and the JSON report accounts for every
retry (each INFER frame sent is exactly one attempt of exactly one image).
"""
from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from firmware_host.faults import FaultPlan, FaultRelay, _Direction, FaultCounts
from tinyconv.cli import main

import _host_device as hd

HANDSHAKE = (3, 2)  # up: the flushing 0x00, RESET, INFO; down: their two replies
RETRIES = 5


@pytest.fixture(scope="module")
def device_build(tmp_path_factory):
    return hd.built_small_cnn(tmp_path_factory.mktemp("faults"))


def dataset(tmp_path, count: int, seed: int = 5):
    return hd.save_images(tmp_path / "images.npz", hd.images(count, seed))


def run_verify(export_dir, data, url, tmp_path, *extra):
    report = tmp_path / "report.json"
    code = main(["verify", str(export_dir), "--input", str(data), "--device", url,
                 "--json", str(report), *extra])
    return code, (json.loads(report.read_text()) if report.exists() else None)


def check_accounting(report: dict, images: int, retries: int) -> None:
    """Every image once; every INFER frame one attempt of one image; nothing accepted wrong.
    In an aborted run the images the device had not answered (in order) at the end are the
    report's ``unfinished`` records, and their attempts count too."""
    link = report["link"]
    unfinished = report["unfinished"]
    assert report["inputs"] == images
    if report["aborted"] is None:
        assert report["images"] == images and unfinished == []
    else:  # what the link had taken but not handed back in order: at most the window (4)
        assert 1 <= len(unfinished) <= 4 and report["images"] + len(unfinished) <= images
        assert [u["index"] for u in unfinished] == list(
            range(report["images"], report["images"] + len(unfinished)))
        # 0 attempts: taken from the input, but the device died before its frame went out
        assert all(0 <= u["attempts"] <= retries + 1 for u in unfinished), unfinished
    assert report["device_equal_images"] + report["failed_images"] == report["images"]
    for record in report["mismatches"]:
        assert record["problems"] == ["no valid reply"], record  # never a corrupted result
        assert record["device"] is None
    retried = report["retried"]
    indices = [r["index"] for r in retried]
    assert len(set(indices)) == len(indices) and all(0 <= i < report["images"] for i in indices)
    for r in retried:
        assert 1 <= r["attempts"] <= retries + 1, r
        assert len(r["failures"]) == r["attempts"] - (1 if r["ok"] else 0), r
        if not r["ok"]:
            assert r["attempts"] == retries + 1, r  # gave up only after every retry
    assert sum(not r["ok"] for r in retried) == report["failed_images"]
    # RESET, INFO, then one INFER per attempt (an image without a record took exactly one).
    # Faults start after the handshake, so a retry the link counted is an image's, or (on a
    # loaded machine, whose reply can miss the short timeout) a resent RESET or INFO: the
    # frames sent beyond those say how many.
    attempts = report["images"] - len(retried) + sum(r["attempts"] for r in retried + unfinished)
    handshake_retries = link["frames_sent"] - 2 - attempts
    assert handshake_retries >= 0
    assert link["retries"] == handshake_retries + sum(max(r["attempts"] - 1, 0)
                                                      for r in retried + unfinished)


def test_bit_flips_hit_the_configured_rate_and_are_single_bit():
    counts = FaultCounts()
    direction = _Direction(FaultPlan(seed=3, bit_error_rate=1e-3), 7, counts, 0)
    data = np.random.default_rng(0).integers(0, 256, 200_000, dtype=np.uint8).tobytes()
    damaged = direction.damage(data)
    assert len(damaged) == len(data)
    diff = np.frombuffer(data, np.uint8) ^ np.frombuffer(damaged, np.uint8)
    changed = diff[diff != 0]
    assert len(changed) == counts.flipped
    assert all(bin(int(v)).count("1") == 1 for v in changed)
    assert 140 <= counts.flipped <= 260  # 200 expected; a 5-sigma band
    # Same seed, same damage: a failing run can be replayed.
    again = _Direction(FaultPlan(seed=3, bit_error_rate=1e-3), 7, FaultCounts(), 0)
    assert again.damage(data) == damaged


def test_drops_duplicates_and_clean_handshake():
    counts = FaultCounts()
    plan = FaultPlan(seed=1, drop_rate=0.01, duplicate_rate=0.01)
    direction = _Direction(plan, 1, counts, clean_frames=2)
    head = b"\x05abcd\x00\x02x\x00"
    body = bytes(range(1, 256)) * 40
    out = direction.damage(head + body)
    assert out[:len(head)] == head  # two frames passed untouched
    assert len(out) - len(head) == len(body) - counts.dropped + counts.duplicated
    assert counts.dropped > 50 and counts.duplicated > 50


def test_500_images_over_a_bad_cable(device_build, tmp_path):
    export_dir, exe = device_build
    data = dataset(tmp_path, 500)
    plan = FaultPlan(seed=2024, bit_error_rate=1e-3, drop_rate=2e-4, duplicate_rate=2e-4,
                     stall_rate=1e-5, stall_seconds=0.5, reset_at=(40_000, 110_000),
                     clean_frames=HANDSHAKE)
    started = time.monotonic()
    with hd.HostDevice(exe) as device, \
            FaultRelay(device.url, plan, restart=device.restart) as relay:
        code, report = run_verify(export_dir, data, relay.url, tmp_path, "--timeout", "0.25",
                                  "--retries", str(RETRIES))
        counts = relay.counts
        assert relay.error is None
        assert device.starts == 3  # two resets
    elapsed = time.monotonic() - started
    assert report is not None
    check_accounting(report, 500, RETRIES)
    assert code == (0 if report["failed_images"] == 0 else 1)
    assert counts.resets == 2 and counts.flipped >= 100 and counts.dropped >= 10 \
        and counts.duplicated >= 10 and counts.stalls >= 1, counts
    link = report["link"]
    assert link["retries"] >= 50 and link["timeouts"] >= 2 and link["device_errors"] >= 20
    assert report["failed_images"] <= 25  # at ~35 % loss per attempt, 0.35**6 of 500 fail
    assert elapsed < 120


def test_images_that_never_get_through_are_reported_failed(device_build, tmp_path):
    export_dir, exe = device_build
    data = dataset(tmp_path, 120, seed=6)
    plan = FaultPlan(seed=7, bit_error_rate=4e-3, clean_frames=HANDSHAKE)
    with hd.HostDevice(exe) as device, FaultRelay(device.url, plan) as relay:
        code, report = run_verify(export_dir, data, relay.url, tmp_path, "--timeout", "0.25",
                                  "--retries", "1")
        assert relay.error is None
    assert code == 1
    check_accounting(report, 120, 1)
    assert report["failed_images"] >= 5 and report["device_equal_images"] >= 30
    assert report["mismatch_count"] == report["failed_images"]


def test_a_silent_device_fails_each_image_when_the_silence_limit_allows(device_build, tmp_path):
    """With a silence limit longer than the whole run (by default a silent device ends the run
    with exit 2, tests/test_link_silence.py), each image still fails after its bounded retries."""
    export_dir, exe = device_build
    images, retries, timeout = 6, 1, 0.2
    data = dataset(tmp_path, images, seed=8)
    # After the handshake every byte to the device is held for an hour.
    plan = FaultPlan(seed=1, stall_rate=1.0, stall_seconds=3600, clean_frames=HANDSHAKE)
    started = time.monotonic()
    with hd.HostDevice(exe) as device, FaultRelay(device.url, plan) as relay:
        code, report = run_verify(export_dir, data, relay.url, tmp_path, "--timeout",
                                  str(timeout), "--retries", str(retries), "--silence", "60")
    elapsed = time.monotonic() - started
    assert code == 1
    check_accounting(report, images, retries)
    assert report["failed_images"] == images
    assert report["link"]["timeouts"] == images * (retries + 1)
    assert all(r["failures"] == [f"no reply within {timeout:g} s"] * (retries + 1)
               for r in report["retried"])
    # One timeout per attempt, one after another: the bound the link promises.
    assert elapsed < images * (retries + 1) * timeout + 10


def test_a_device_that_dies_ends_the_run_with_exit_2_and_an_aborted_report(device_build,
                                                                            tmp_path, capsys):
    export_dir, exe = device_build
    images = 500
    data = dataset(tmp_path, images, seed=9)
    with hd.HostDevice(exe) as device, FaultRelay(device.url) as relay:
        def kill_midway():
            hd.wait_until(lambda: relay.counts.bytes_up > 30_000, 30)
            device.stop()
        killer = threading.Thread(target=kill_midway)
        killer.start()
        started = time.monotonic()
        code, report = run_verify(export_dir, data, relay.url, tmp_path, "--timeout", "0.5",
                                  "--quiet")
        elapsed = time.monotonic() - started
        killer.join()
    out, err = capsys.readouterr()
    assert code == 2
    (line,) = err.strip().splitlines()
    assert line.startswith("tinyconv verify: error: ") and "Traceback" not in err
    # The report is complete and says why it ends early: the images verified before the death
    # (about 30 kB of 273-byte frames: 100 or so), each equal, and the requests left unanswered.
    assert report["aborted"] == line.removeprefix("tinyconv verify: error: ")
    assert report["exit_status"] == 2
    assert 50 <= report["images"] < images
    assert report["device_equal_images"] == report["images"]
    check_accounting(report, images, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images.npz", "report.json"]
    assert elapsed < 30
