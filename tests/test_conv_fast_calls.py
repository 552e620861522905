"""A conv plan's repeated calls (``_fast_call``: one closure over the kept frame, made after
the first call with a shape): later calls with new data, calls alternating between shapes,
fused activation ranges and a layer whose bias is not folded into the GEMM must all equal
runtime/reference.py's loops (and onnxruntime at layer size), compared with ==."""
import numpy as np
import pytest

import onnx_ops
from runtime import kernels, reference
from runtime.requant import Requant

CASES = [  # out channels, kernel, stride, padding, groups, input channels, act range
    (16, (1, 1), (1, 1), (0, 0, 0, 0), 1, 8, (-128, 127)),  # pointwise, bias in the GEMM
    (8, (3, 3), (2, 2), (1, 1, 1, 0), 1, 3, (-20, 127)),  # tap-major columns, ReLU-like
    (12, (3, 2), (1, 1), (0, 1, 2, 1), 1, 6, (-128, 100)),
    (8, (3, 3), (1, 1), (1, 1, 1, 1), 8, 8, (-128, 127)),  # depthwise, one phase
    (12, (3, 3), (2, 2), (1, 0, 1, 2), 4, 4, (-5, 90)),  # depthwise, multiplier 3, 2 phases
]


def _case(rng, m, kernel, groups, c):
    w = rng.integers(-128, 128, (m,) + kernel + (c // groups,)).astype(np.int8)
    bias = rng.integers(-30000, 30000, m).astype(np.int32)
    scales = np.exp(rng.uniform(-8, -5, m)).astype(np.float32)
    return w, bias, Requant.from_scales(0.05, scales, 0.1, "float")


@pytest.mark.parametrize("case", range(len(CASES)))
def test_repeated_calls_match_reference(case):
    m, kernel, stride, padding, groups, c, act = CASES[case]
    rng = np.random.default_rng(100 + case)
    w, bias, rq = _case(rng, m, kernel, groups, c)
    kwargs = dict(input_zero_point=-11, output_zero_point=6, stride=stride, padding=padding,
                  groups=groups, act_range=act)
    plan = kernels.plan_conv2d(w, bias, rq, **kwargs)
    shapes = [(1, 7, 9, c), (1, 7, 9, c), (1, 7, 9, c), (3, 6, 5, c), (3, 6, 5, c),
              (1, 7, 9, c), (1, 7, 9, c)]
    for shape in shapes:
        x = rng.integers(-128, 128, shape).astype(np.int8)
        y = plan(x)
        np.testing.assert_array_equal(y, reference.conv2d(x, w, bias, rq, **kwargs))
    assert plan._scratch.fast[1] is not None, "the repeated calls never took the fast path"
    first = plan(x)
    second = plan(x[:, ::-1].copy())
    assert not np.shares_memory(first, second)  # each call returns its own array
    np.testing.assert_array_equal(first, reference.conv2d(x, w, bias, rq, **kwargs))


@pytest.mark.parametrize("bias_bits, log_scale", [(22, -11), (29, -18)])
def test_repeated_pointwise_calls_match_onnxruntime_with_large_biases(bias_bits, log_scale):
    """At DS-CNN's pointwise size: a bias the GEMM still adds exactly (fast path), and one
    beyond float32's exact range (the float64 path, which has no fast path)."""
    rng = np.random.default_rng(bias_bits)
    w = rng.integers(-128, 128, (32, 1, 1, 64)).astype(np.int8)
    bias = rng.integers(-(1 << bias_bits), 1 << bias_bits, 32).astype(np.int32)
    scales = np.exp(rng.uniform(log_scale - 1, log_scale + 1, 32)).astype(np.float32)
    plan = kernels.plan_conv2d(w, bias, Requant.from_scales(0.05, scales, 0.1, "float"),
                               input_zero_point=3, output_zero_point=-4)
    for _ in range(4):
        x = rng.integers(-128, 128, (1, 25, 5, 64)).astype(np.int8)
        expected = onnx_ops.qlinear_conv(x, 0.05, 3, w, scales, 0.1, -4, bias)
        np.testing.assert_array_equal(plan(x), expected)
    assert (plan._scratch.fast[1] is not None) == plan.acc_fits_f32 == (bias_bits == 22)
