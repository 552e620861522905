"""Fixed-mode global_avg_pool is TFLite Micro's int8 MEAN (the count folded into the
multiplier): runtime/'s fast kernel against the slow loop in runtime/reference.py and against a
hand-worked case, and the C kernel, compiled natively by gcc and for the Cortex-M3
(lm3s6965evb, under QEMU), against runtime/. TFLM itself is the oracle in
tests/test_tflite_writer.py (test_global_average_pool_is_tflm_mean)."""
from __future__ import annotations

import numpy as np
import pytest
from _firmware_models import (build_native_runner, compile_kernel_objects, reference_run,
                              run_native)
from _selftest import build_and_run, write_selftest_inputs

from export.c_codegen import write_c_sources
from export.plan import plan_arena
from runtime import kernels, reference
from runtime.model import Layer, QuantModel, TensorSpec

FULL = {"act_min": -128, "act_max": 127}
CASES = {  # (H, W, C), (x_scale, x_zp), (y_scale, y_zp)
    "1x1": ((1, 1, 3), (0.04, -7), (0.02, 5)),
    "4x4": ((4, 4, 3), (0.04, -7), (0.02, 5)),
    "7x7x300": ((7, 7, 300), (0.05, 3), (0.01, -20)),
    "8x8-same": ((8, 8, 64), (0.02, -128), (0.02, -128)),
    "5x3-ratio33": ((5, 3, 17), (0.1, 0), (0.003, 10)),
    "6x6-ratio1/8": ((6, 6, 8), (0.01, 2), (0.08, -1)),
    "relu-clamp": ((3, 5, 9), (0.03, 11), (0.02, -128)),
}


def _model(name: str) -> QuantModel:
    shape, xq, yq = CASES[name]
    tensors = {"x": TensorSpec("x", shape, float(np.float32(xq[0])), xq[1]),
               "y": TensorSpec("y", (1, 1, shape[2]), float(np.float32(yq[0])), yq[1])}
    params = {"act_min": -100, "act_max": 60} if name == "relu-clamp" else FULL
    arrays = kernels.global_avg_pool_constants(*xq, *yq, shape[:2], "fixed")
    model = QuantModel("gap", "fixed", tensors,
                       [Layer("global_avg_pool", "gap", ["x"], "y", dict(params), arrays)],
                       "x", "y")
    model.validate()
    plan_arena(model)
    return model


def _inputs(shape, count: int, seed: int = 3) -> np.ndarray:
    """Per image and channel a level plus small noise: sums on and next to rounding ties
    (uniform noise would average towards the zero point)."""
    rng = np.random.default_rng(seed)
    level = rng.integers(-128, 128, (count, 1, 1, shape[2]))
    noise = rng.integers(-2, 3, (count, *shape)) * rng.integers(0, 40, (count, 1, 1, 1))
    return np.clip(level + noise, -128, 127).astype(np.int8)


@pytest.mark.parametrize("name", CASES)
def test_fast_kernel_equals_the_slow_loop(name):
    model = _model(name)
    layer = model.layers[0]
    x = _inputs(CASES[name][0], 40)
    act = (layer.params["act_min"], layer.params["act_max"])
    got = kernels.global_avg_pool(x, layer.arrays, act_range=act)
    np.testing.assert_array_equal(got, reference.global_avg_pool(x, layer.arrays, act_range=act))
    assert np.unique(got).size > 3


def test_the_count_is_folded_into_the_multiplier_by_hand():
    """x_scale == y_scale, 3 positions: multiplier 2**30 (0.5 at shift 1) widened by r = 1 bit
    and divided by 3 gives 715827882 at shift 0, i.e. sum * 0.33333333302; a sum of 3 * 5 + 1
    = 16 is 5.33 -> 5, a sum of 3 * 5 + 2 = 17 is 5.67 -> 6, -16 -> -5, -17 -> -6."""
    consts = kernels.global_avg_pool_constants(0.1, 0, 0.1, 0, (1, 3), "fixed")
    assert (int(consts["multiplier"][0]), int(consts["shift"][0])) == (715827882, 0)
    x = np.array([[5, 5, 6], [5, 6, 6], [-5, -5, -6], [-5, -6, -6]], np.int8)
    got = kernels.global_avg_pool(x.reshape(4, 1, 3, 1), consts)
    assert got.reshape(-1).tolist() == [5, 6, -5, -6]


@pytest.fixture(scope="module")
def native_objects(tmp_path_factory):
    return compile_kernel_objects(tmp_path_factory.mktemp("gap_objects"), False)


@pytest.mark.parametrize("name", CASES)
def test_c_kernel_on_host_gcc_equals_runtime(name, native_objects, tmp_path):
    model = _model(name)
    write_c_sources(model, tmp_path)
    exe = build_native_runner(tmp_path, native_objects, False)
    x = _inputs(CASES[name][0], 60, seed=5)
    expected = reference_run(model, x)
    assert np.unique(expected).size > 3
    np.testing.assert_array_equal(run_native(exe, model, x), expected)


@pytest.mark.parametrize("name", ["7x7x300", "5x3-ratio33"])
def test_c_kernel_on_cortex_m3_equals_runtime(name, arm_tools, tmp_path):
    model = _model(name)
    write_c_sources(model, tmp_path)
    x = _inputs(CASES[name][0], 4, seed=9)
    write_selftest_inputs(tmp_path / "selftest", x)
    _, _, got = build_and_run(model, "lm3s6965evb", tmp_path)
    np.testing.assert_array_equal(got, reference_run(model, x).reshape(len(x), -1))
