"""The C kernels and model runner, compiled natively, against runtime.kernels: every op, both
requantization modes, odd shapes, compared with np.array_equal on random inputs."""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from _firmware_models import (CFLAGS, FIRMWARE_SRC, HARNESS, build_native_runner,
                              compile_kernel_objects, random_inputs, random_model,
                              reference_run, require_tool, run_native)
from export.c_codegen import write_c_sources
from runtime.requant import Requant

SPECS = {
    # conv: asymmetric padding, stride 2 one way, relu; grouped; depthwise with multiplier 2 and
    # dilation; depthwise multiplier 1 padded; max pool with padding; fully connected
    "convs": ((11, 9, 3), [
        dict(op="conv2d", out=5, kernel=(3, 3), padding=(1, 0, 2, 1), stride=(2, 1), relu=True),
        dict(op="conv2d", out=4, kernel=(1, 3), groups=1, padding=(0, 1, 0, 1)),
        dict(op="conv2d", out=8, kernel=(3, 2), groups=4, dilation=(2, 1), padding=(2, 0, 1, 1)),
        dict(op="conv2d", out=16, kernel=(3, 3), groups=8, dilation=(1, 2), padding=(1, 2, 1, 2)),
        dict(op="conv2d", out=16, kernel=(3, 3), groups=16, padding=(1, 1, 1, 1), stride=(2, 2),
             act_max=90),
        dict(op="max_pool2d", kernel=(2, 3), stride=(1, 2), padding=(0, 1, 1, 1)),
        dict(op="fully_connected", out=7),
    ]),
    "odd_k": ((7, 6, 5), [  # K not a multiple of 4, an odd number of output pixels and channels
        dict(op="conv2d", out=7, kernel=(3, 3), stride=(2, 2), padding=(1, 1, 0, 0)),
        dict(op="conv2d", out=3, kernel=(2, 2), per_tensor=True),
        dict(op="fully_connected", out=3, relu=True),
    ]),
    "pools_add": ((10, 9, 3), [
        dict(op="conv2d", out=6, kernel=(3, 3), padding=(1, 1, 1, 1), relu=True),
        dict(op="avg_pool2d", kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 0)),
        dict(op="avg_pool2d", kernel=(2, 2), stride=(1, 1), padding=(1, 0, 0, 1),
             count_include_pad=True),
        dict(op="avg_pool2d", kernel=(2, 2), stride=(1, 1), same_quant=True),
        dict(op="avg_pool2d", kernel=(2, 2), stride=(1, 1), padding=(1, 1, 0, 0),
             same_quant=True, count_include_pad=True),
        dict(op="conv2d", out=6, kernel=(1, 1)),
        dict(op="add", **{"with": 5}),
        dict(op="add", **{"with": 6}, relu=True),
        dict(op="global_avg_pool"),
        dict(op="fully_connected", out=4),
    ]),
    "whole_window_avg": ((5, 4, 7), [dict(op="avg_pool2d", kernel=(5, 4), stride=(1, 1))]),
    # ONNX ceil_mode: the last rows/columns of the padding are not counted (ceil_pad)
    "ceil_pools": ((8, 7, 5), [
        dict(op="avg_pool2d", kernel=(3, 3), stride=(2, 2), padding=(1, 1, 2, 2),
             count_include_pad=True, ceil_pad=(1, 2)),
        dict(op="avg_pool2d", kernel=(2, 2), stride=(2, 2), padding=(0, 0, 1, 0),
             same_quant=True, count_include_pad=True, ceil_pad=(1, 0)),
        dict(op="fully_connected", out=4),
    ]),
    # ReLU6-like ranges, each the model's output, so the stores' upper clamp (not only SSAT's
    # 127) decides a good share of the outputs
    "conv_clamp": ((7, 9, 4), [dict(op="conv2d", out=8, kernel=(3, 3), padding=(1, 1, 1, 1),
                                    relu=True, act_max=35)]),
    "depthwise_clamp": ((6, 9, 7), [dict(op="conv2d", out=7, kernel=(3, 3), groups=7,
                                         padding=(1, 1, 1, 1), relu=True, act_max=30)]),
}
CASES = [(name, mode, "double") for name in SPECS for mode in ("fixed", "float")] + \
        [("convs", "fixed", "single"), ("odd_k", "fixed", "single")]


@pytest.fixture(scope="session")
def kernel_objects(tmp_path_factory):
    root = tmp_path_factory.mktemp("kernels")
    return {mode: compile_kernel_objects(root / mode, mode == "float")
            for mode in ("fixed", "float")}


@pytest.mark.parametrize("name,mode,rounding", CASES)
def test_c_model_equals_runtime(name, mode, rounding, kernel_objects, tmp_path):
    rng = np.random.default_rng(abs(hash((name, mode, rounding))) % 2**32)
    shape, spec = SPECS[name]
    model = random_model(rng, shape, spec, mode, rounding=rounding)
    write_c_sources(model, tmp_path)
    exe = build_native_runner(tmp_path, kernel_objects[mode], mode == "float")
    x = random_inputs(rng, model, 120)
    expected = reference_run(model, x)
    assert np.unique(expected).size > 3, "outputs saturated: the case tests nothing"
    if name.endswith("_clamp"):
        at_max = np.mean(expected == model.layers[-1].params["act_max"])
        assert 0.05 <= at_max <= 0.6, f"{at_max:.0%} clamped at act_max"
    got = run_native(exe, model, x)
    assert got.dtype == np.int8
    assert np.array_equal(got, expected), f"{(got != expected).sum()} of {got.size} differ"


# -- requantization primitives -------------------------------------------------------------------

@pytest.fixture(scope="module")
def requant_probe(tmp_path_factory):
    cc = require_tool("gcc")
    exe = tmp_path_factory.mktemp("probe") / "requant_probe"
    subprocess.run([cc, *CFLAGS, "-O2", "-I", str(FIRMWARE_SRC),
                    str(HARNESS.parent / "requant_probe.c"), "-o", str(exe)], check=True)
    return exe


def _probe(exe, lines):
    out = subprocess.run([str(exe)], input="\n".join(lines) + "\n", capture_output=True,
                         text=True, check=True).stdout.split()
    return np.array([int(v) for v in out], np.int64)


def _float_bits(values):
    return np.asarray(values, np.float32).view(np.uint32)


def test_float_rounding_is_half_to_even_on_ties(requant_probe):
    # scale 0.5 and 0.25 make every odd accumulator an exact .5 (or .25/.75) tie
    acc = np.arange(-2000, 2001, dtype=np.int64)
    for scale in (0.5, 0.25, 1.5, 2.5):
        lines = [f"float {a} {b} 0" for a, b in zip(acc, _float_bits([scale] * acc.size))]
        got = _probe(requant_probe, lines)
        expected = Requant.float(np.float32(scale)).apply(acc[:, None])[:, 0]
        assert np.array_equal(got, expected)
    # by hand: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0, -1.5 -> -2, -2.5 -> -2
    got = _probe(requant_probe, [f"float {a} {_float_bits([0.5])[0]} 0"
                                 for a in (1, 3, 5, -1, -3, -5)])
    assert got.tolist() == [0, 2, 2, 0, -2, -2]


def test_float_requant_random_and_huge(requant_probe):
    rng = np.random.default_rng(7)
    acc = np.concatenate([rng.integers(-2**31, 2**31, 3000),
                          [2**31 - 1, -2**31, 0, 1, -1]]).astype(np.int64)
    scale = rng.uniform(1e-6, 0.5, acc.size).astype(np.float32)
    lines = [f"float {a} {b} 0" for a, b in zip(acc, _float_bits(scale))]
    got = _probe(requant_probe, lines)
    expected = np.array([Requant.float(s).apply(np.array([a]))[0] for a, s in zip(acc, scale)])
    # beyond +-2**22 the C clamps before rounding (the result saturates int8 anyway)
    np.testing.assert_array_equal(np.clip(got, -2**22, 2**22), np.clip(expected, -2**22, 2**22))


@pytest.mark.parametrize("rounding", ["double", "single"])
def test_fixed_requant_matches_runtime(requant_probe, rounding):
    rng = np.random.default_rng(11)
    n = 3000
    acc = rng.integers(-2**24, 2**24, n)
    mult = rng.integers(2**30, 2**31, n)
    shift = rng.integers(-31, 11 if rounding == "double" else 31, n)
    # hand-picked: INT32_MIN saturation, ties at every shift, left shifts
    extra = [(-2**31, -2**31, 0), (-2**31, 2**31 - 1, 0), (2**31 - 1, 2**31 - 1, -1),
             (3, 2**30, -1), (-3, 2**30, -1), (5, 2**30, -2), (-5, 2**30, -2), (6, 2**30, 1)]
    if rounding == "single":
        extra = [e for e in extra if e[1] != -2**31]
    acc = np.concatenate([acc, [e[0] for e in extra]])
    mult = np.concatenate([mult, [e[1] for e in extra]])
    shift = np.concatenate([shift, [e[2] for e in extra]])
    lines = [f"{rounding} {a} {m} {s}" for a, m, s in zip(acc, mult, shift)]
    got = _probe(requant_probe, lines)
    expected = np.array([Requant.fixed(m, s, rounding).apply(np.array([a]))[0]
                         for a, m, s in zip(acc, mult, shift)])
    # single rounding can exceed int32 for large left shifts; the C saturates (int8 clamps)
    assert np.array_equal(got, np.clip(expected, -2**31, 2**31 - 1))
    if rounding == "double":  # by hand: 3 * 0.5 / 2 = 0.75 -> 1; -3 -> -1; 5 * 0.5 / 4 -> 1
        assert got[-8:].tolist() == [2**31 - 1, -(2**31 - 1), 2**30 - 1, 1, -1, 1, -1, 6]


def test_fast_double_rounding_equals_the_exact_scheme_on_edges(requant_probe):
    """tc_requant_double_fast (one rounding high multiply of 2 * acc, rounding offset with the
    output zero point folded in, sign correction, shift) against runtime/requant.py's double
    rounding, on every shift it admits: exact ties of both signs and their neighbours, the
    accumulator limit, extreme multipliers (INT32_MIN, INT32_MAX, negative), zero points."""
    limit = 2**29 - 1
    mults = [2**30, 2**30 + 1, 2**31 - 1, 1518500250, -2**31, -(2**31 - 1), -2**30, 3, 0]
    cases = []
    for right in range(1, 22):
        ties = [j * 2**right + 2**(right - 1) for j in (0, 1, 2, 5, 1000)]
        accs = {0, 1, -1, limit, -limit, limit - 1, -limit + 1}
        for t in ties:  # with multiplier 2^30 (0.5) these are ties of the second rounding
            for d in (-2, -1, 0, 1, 2):
                for v in (2 * t + d, t + d):
                    if abs(v) <= limit:
                        accs.update((v, -v))
        for m in mults:
            for acc in sorted(accs):
                cases.append((acc, m, -right, (acc + right) % 256 - 128))
    rng = np.random.default_rng(5)
    for _ in range(3000):
        cases.append((int(rng.integers(-limit, limit + 1)), int(rng.integers(-2**31, 2**31)),
                      int(rng.integers(-21, 0)), int(rng.integers(-128, 128))))
    lines = [f"fast {a} {m} {s} {z}" for a, m, s, z in cases]
    got = _probe(requant_probe, lines).reshape(-1, 2)
    assert got[:, 0].all(), "a case inside the proven range was refused"
    expected = np.array([Requant.fixed(m, s).apply(np.array([a]))[0] + z
                         for a, m, s, z in cases])
    assert np.array_equal(got[:, 1], expected)
    # by hand: 3 * 0.5 / 2 = 0.75 -> 1, -3 -> -1; 2 * 0.5 / 2 = 0.5 -> 1, -0.5 -> -1 (away from 0)
    hand = _probe(requant_probe, ["fast 3 1073741824 -1 0", "fast -3 1073741824 -1 0",
                                  "fast 2 1073741824 -1 0", "fast -2 1073741824 -1 0",
                                  "fast 2 1073741824 -1 -7"]).reshape(-1, 2)
    assert hand[:, 1].tolist() == [1, -1, 1, -1, -6]


def test_fast_double_rounding_refuses_what_the_proof_does_not_cover(requant_probe):
    refused = ["fast 536870912 1073741824 -3 0",  # |acc| = 2^29
               "fast -536870912 1073741824 -3 0",
               "fast 100 1073741824 0 0",  # no right shift
               "fast 100 1073741824 5 0",  # left shift
               "fast 100 1073741824 -22 0"]  # shift beyond the zero-point fold
    got = _probe(requant_probe, refused).reshape(-1, 2)
    assert got[:, 0].tolist() == [0] * len(refused)
