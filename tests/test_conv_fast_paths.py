"""The fast convolution paths at sizes the small hypothesis cases never reach: the depthwise
einsum (channel multiplier, horizontal stride, dilation, asymmetric and negative pads), the
float64 fallback for huge biases, and the padded-input buffer a plan reuses between calls and
threads. Oracles: runtime/reference.py's loops and onnxruntime, compared with ==."""
import threading

import numpy as np
import pytest

import onnx_ops
from runtime import kernels, reference
from runtime.requant import Requant


def _requant(rng, mode, m, per_channel=True):
    w_scales = np.exp(rng.uniform(-7, -4, m if per_channel else 1)).astype(np.float32)
    return Requant.from_scales(0.05, w_scales, 0.1, mode)


def _depthwise_case(rng, c, multiplier, kernel, shape=(2, 9, 11)):
    x = rng.integers(-128, 128, shape + (c,)).astype(np.int8)
    w = rng.integers(-128, 128, (c * multiplier,) + kernel + (1,)).astype(np.int8)
    bias = rng.integers(-40000, 40000, c * multiplier).astype(np.int32)
    return x, w, bias


DEPTHWISE = [  # multiplier, kernel, stride, dilation, padding (top, left, bottom, right)
    (1, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    (2, (3, 3), (1, 1), (1, 1), (0, 2, 1, 0)),
    (3, (3, 2), (2, 2), (1, 1), (1, 0, 2, 1)),
    (1, (3, 3), (1, 2), (2, 1), (2, 1, 0, 2)),
    (2, (2, 3), (2, 3), (2, 2), (1, 2, 1, 1)),
    (1, (5, 5), (2, 1), (1, 2), (2, 4, 2, 4)),
    (2, (3, 3), (1, 2), (1, 1), (-1, 1, 0, -2)),  # negative pads crop the image
    # the phase-split buffer (column % stride planes): every tap in one plane, one tap in each
    # of three planes, planes no tap reads, a crop that shifts the phases, a stride wider
    # than the image
    (1, (3, 3), (2, 2), (2, 2), (1, 1, 1, 1)),
    (2, (3, 3), (3, 3), (2, 2), (2, 1, 1, 2)),
    (1, (2, 2), (1, 4), (1, 1), (0, 3, 0, 0)),
    (3, (3, 3), (2, 2), (1, 1), (0, -1, 1, -2)),
    (1, (1, 3), (2, 3), (1, 3), (0, 2, 0, 5)),
    (2, (3, 1), (1, 12), (1, 1), (1, 0, 1, 2)),
]


@pytest.mark.parametrize("mode", ["fixed", "float"])
@pytest.mark.parametrize("case", range(len(DEPTHWISE)))
def test_depthwise_matches_reference(mode, case):
    multiplier, kernel, stride, dilation, padding = DEPTHWISE[case]
    rng = np.random.default_rng([case, mode == "fixed"])
    c = 6
    x, w, bias = _depthwise_case(rng, c, multiplier, kernel)
    kwargs = dict(input_zero_point=int(rng.integers(-128, 128)), output_zero_point=-5,
                  stride=stride, padding=padding, dilation=dilation, groups=c,
                  act_range=(-5, 100))
    rq = _requant(rng, mode, c * multiplier, per_channel=multiplier != 3)
    fast = kernels.conv2d(x, w, bias, rq, **kwargs)
    np.testing.assert_array_equal(fast, reference.conv2d(x, w, bias, rq, **kwargs))


@pytest.mark.parametrize("multiplier, stride, dilation, padding", [
    (1, (1, 1), (1, 1), (1, 1, 1, 1)), (2, (2, 2), (1, 1), (0, 0, 1, 1)),
    (1, (2, 1), (2, 2), (3, 1, 0, 2)), (4, (1, 3), (1, 1), (1, 1, 1, 1)),
    (1, (2, 2), (2, 2), (1, 1, 1, 1)), (2, (3, 3), (1, 1), (0, 1, 2, 1))])
def test_depthwise_matches_onnxruntime_at_layer_size(multiplier, stride, dilation, padding):
    rng = np.random.default_rng(7 + multiplier)
    c = 64 // multiplier
    x, w, bias = _depthwise_case(rng, c, multiplier, (3, 3), shape=(2, 16, 16))
    w_scales = np.exp(rng.uniform(-7, -5, c * multiplier)).astype(np.float32)
    expected = onnx_ops.qlinear_conv(x, 0.05, -3, w, w_scales, 0.1, 2, bias, stride=stride,
                                     padding=padding, dilation=dilation, groups=c)
    plan = kernels.plan_conv2d(w, bias, Requant.from_scales(0.05, w_scales, 0.1, "float"),
                               input_zero_point=-3, output_zero_point=2, stride=stride,
                               padding=padding, dilation=dilation, groups=c)
    assert plan.depthwise
    for _ in range(2):  # the second call reuses the padded buffer
        np.testing.assert_array_equal(plan(x), expected)


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_depthwise_plan_reused_across_shapes_keeps_each_frame_right(mode):
    """A depthwise plan keeps one phase-split frame per thread for the last input shape: calls
    alternating between shapes (odd widths shift which plane holds each column) must each
    rebuild or reuse it correctly, in both modes, against the reference loops."""
    rng = np.random.default_rng([13, mode == "fixed"])
    x_shapes = [(1, 9, 11, 4), (2, 8, 10, 4), (1, 9, 11, 4), (1, 5, 7, 4)]
    w = rng.integers(-128, 128, (8, 3, 3, 1)).astype(np.int8)
    bias = rng.integers(-3000, 3000, 8).astype(np.int32)
    kwargs = dict(input_zero_point=9, output_zero_point=-7, stride=(2, 2),
                  padding=(1, 2, 0, 1), groups=4)
    rq = _requant(rng, mode, 8)
    plan = kernels.plan_conv2d(w, bias, rq, **kwargs)
    for shape in x_shapes * 2:
        x = rng.integers(-128, 128, shape).astype(np.int8)
        np.testing.assert_array_equal(plan(x), reference.conv2d(x, w, bias, rq, **kwargs))


@pytest.mark.parametrize("mode", ["fixed", "float"])
@pytest.mark.parametrize("groups", [1, 5])
def test_bias_too_large_for_float32_takes_the_exact_path(mode, groups):
    rng = np.random.default_rng(11)
    x = rng.integers(-128, 128, (1, 6, 7, 5)).astype(np.int8)
    w = rng.integers(-128, 128, (10, 3, 3, 5 // groups)).astype(np.int8)
    signs = np.where(np.arange(10) % 2, -1, 1)
    bias = (rng.integers(2**25, 2**29, 10) * signs).astype(np.int32)  # |acc| > 2**24
    rq = Requant.from_scales(1.0, np.full(10, 2.0**-23, np.float32), 1.0, mode)
    kwargs = dict(input_zero_point=7, output_zero_point=3, padding=(1, 1, 1, 1), groups=groups)
    plan = kernels.plan_conv2d(w, bias, rq, **kwargs)
    assert not plan.acc_fits_f32
    expected = reference.conv2d(x, w, bias, rq, **kwargs)
    assert len(np.unique(expected)) > 5  # the bias is not simply clamped away
    np.testing.assert_array_equal(plan(x), expected)


@pytest.mark.parametrize("groups, padding", [(1, (1, 2, 0, 1)), (8, (2, 1, 1, 0)),
                                             (8, (-1, 0, 1, -1))])
def test_a_plan_reused_across_shapes_and_threads_gives_each_call_its_own_result(groups, padding):
    rng = np.random.default_rng(5)
    w = rng.integers(-128, 128, (16, 3, 3, 8 // groups)).astype(np.int8)
    bias = rng.integers(-1000, 1000, 16).astype(np.int32)
    kwargs = dict(input_zero_point=-20, output_zero_point=4, padding=padding, groups=groups)
    plan = kernels.plan_conv2d(w, bias, _requant(rng, "float", 16), **kwargs)
    images = [rng.integers(-128, 128, shape).astype(np.int8)
              for shape in [(1, 7, 9, 8), (3, 7, 9, 8), (1, 7, 9, 8), (1, 5, 6, 8)] * 2]
    expected = [kernels.conv2d(x, w, bias, plan.rq, **kwargs) for x in images]  # fresh plans
    assert [plan(x).tolist() for x in images] == [e.tolist() for e in expected]

    results, errors = {}, []

    def work(worker):
        try:
            for round_ in range(30):
                index = (worker + round_) % len(images)
                results[worker, round_] = (index, plan(images[index]))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len(results) == 120
    for index, got in results.values():
        np.testing.assert_array_equal(got, expected[index])


@pytest.mark.parametrize("c, stride, dilation, padding", [
    (1, (1, 1), (1, 1), (1, 1, 1, 1)), (3, (2, 1), (1, 2), (0, 2, 1, 1)),
    (4, (1, 2), (2, 1), (2, 0, 0, 1)), (8, (1, 1), (1, 1), (1, 2, 1, 0))])
def test_dense_conv_both_im2col_layouts_match_onnxruntime(c, stride, dilation, padding):
    rng = np.random.default_rng(c)
    x = rng.integers(-128, 128, (2, 20, 40, c)).astype(np.int8)
    w = rng.integers(-127, 128, (12, 3, 3, c)).astype(np.int8)
    bias = rng.integers(-30000, 30000, 12).astype(np.int32)
    w_scales = np.exp(rng.uniform(-7, -4, 12)).astype(np.float32)
    expected = onnx_ops.qlinear_conv(x, 0.05, 9, w, w_scales, 0.1, -7, bias, stride=stride,
                                     padding=padding, dilation=dilation)
    got = kernels.conv2d(x, w, bias, Requant.from_scales(0.05, w_scales, 0.1, "float"),
                         input_zero_point=9, output_zero_point=-7, stride=stride,
                         padding=padding, dilation=dilation)
    np.testing.assert_array_equal(got, expected)
