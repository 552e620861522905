"""``float`` mode == onnxruntime, element for element: QLinearConv (hundreds of random cases),
QLinearMatMul, QLinearAdd, QLinearAveragePool, QLinearGlobalAveragePool, MaxPool,
QuantizeLinear, DequantizeLinear. Each case is a one-node ONNX graph run on one thread."""
import numpy as np
import pytest

import onnx_ops as ort_ops
from runtime import kernels
from runtime.requant import Requant

CASES = 300


def _scale(rng, low=-6, high=0):
    return np.float32(np.exp(rng.uniform(low, high)))


@pytest.mark.parametrize("chunk", range(6))
def test_qlinear_conv(chunk):
    rng = np.random.default_rng(1000 + chunk)
    compared = 0
    for _ in range(CASES // 6):
        kh, kw = (int(v) for v in rng.integers(1, 4, 2))
        dil = tuple(int(v) for v in rng.integers(1, 3, 2))
        stride = tuple(int(v) for v in rng.integers(1, 4, 2))
        pads = tuple(int(v) for v in rng.integers(0, 3, 4))
        c = int(rng.integers(1, 7))
        kind = rng.integers(0, 3)
        groups = 1 if kind == 0 else c if kind == 1 else (c if c in (1, 5) else c // 2 if c % 2 == 0 else 3 if c == 3 else 1)
        m = groups * int(rng.integers(1, 4))
        h = int(rng.integers((kh - 1) * dil[0] + 1, 10))
        w = int(rng.integers((kw - 1) * dil[1] + 1, 10))
        x = rng.integers(-128, 128, (int(rng.integers(1, 3)), h, w, c)).astype(np.int8)
        weights = rng.integers(-127, 128, (m, kh, kw, c // groups)).astype(np.int8)
        per_channel = bool(rng.integers(0, 2))
        w_scales = np.exp(rng.uniform(-8, -3, m if per_channel else 1)).astype(np.float32)
        bias = rng.integers(-30000, 30000, m).astype(np.int32)
        xs, ys = _scale(rng), _scale(rng)
        xz, yz = (int(v) for v in rng.integers(-128, 128, 2))
        expected = ort_ops.qlinear_conv(x, xs, xz, weights, w_scales, ys, yz, bias, stride=stride,
                                        padding=pads, dilation=dil, groups=groups)
        got = kernels.conv2d(x, weights, bias, Requant.from_scales(xs, w_scales, ys, "float"),
                             input_zero_point=xz, output_zero_point=yz, stride=stride,
                             padding=pads, dilation=dil, groups=groups)
        np.testing.assert_array_equal(got, expected)
        compared += expected.size
    assert compared > 1000


def test_qlinear_matmul_is_fully_connected():
    rng = np.random.default_rng(7)
    for _ in range(40):
        n, k, m = (int(v) for v in rng.integers(1, 40, 3))
        x = rng.integers(-128, 128, (n, k)).astype(np.int8)
        w = rng.integers(-127, 128, (m, k)).astype(np.int8)
        w_scales = np.exp(rng.uniform(-8, -3, m if rng.integers(0, 2) else 1)).astype(np.float32)
        xs, ys = _scale(rng), _scale(rng)
        xz, yz = (int(v) for v in rng.integers(-128, 128, 2))
        expected = ort_ops.qlinear_matmul(x, xs, xz, w, w_scales, ys, yz)
        got = kernels.fully_connected(x, w, None, Requant.from_scales(xs, w_scales, ys, "float"),
                                      input_zero_point=xz, output_zero_point=yz)
        np.testing.assert_array_equal(got, expected)


def test_qlinear_add():
    rng = np.random.default_rng(8)
    for _ in range(200):
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 70)))
        a, b = (rng.integers(-128, 128, shape).astype(np.int8) for _ in range(2))
        scales = [_scale(rng, -5, 0) for _ in range(3)]
        zps = [int(v) for v in rng.integers(-128, 128, 3)]
        expected = ort_ops.qlinear_add(a, scales[0], zps[0], b, scales[1], zps[1], scales[2], zps[2])
        consts = kernels.add_constants(scales[0], zps[0], scales[1], zps[1], scales[2], zps[2],
                                       "float")
        np.testing.assert_array_equal(kernels.add(a, b, consts), expected)



def test_qlinear_add_on_every_pair_of_codes():
    """All 65536 (a, b) pairs: the ties the offset's own rounding decides (ResNet-8 met one)."""
    rng = np.random.default_rng(18)
    a = np.repeat(np.arange(-128, 128), 256).astype(np.int8).reshape(1, -1)
    b = np.tile(np.arange(-128, 128), 256).astype(np.int8).reshape(1, -1)
    for _ in range(40):
        scales = [_scale(rng, -6, -3) for _ in range(3)]
        zps = [int(v) for v in rng.integers(-128, 128, 3)]
        expected = ort_ops.qlinear_add(a, scales[0], zps[0], b, scales[1], zps[1], scales[2], zps[2])
        consts = kernels.add_constants(scales[0], zps[0], scales[1], zps[1], scales[2], zps[2],
                                       "float")
        np.testing.assert_array_equal(kernels.add(a, b, consts), expected)


def _pool_case(rng):
    kernel = tuple(int(v) for v in rng.integers(1, 4, 2))
    stride = tuple(int(v) for v in rng.integers(1, 3, 2))
    pads = tuple(int(rng.integers(0, k)) for k in kernel + kernel)
    x = rng.integers(-128, 128, (int(rng.integers(1, 3)), int(rng.integers(kernel[0], 9)),
                                 int(rng.integers(kernel[1], 9)), int(rng.integers(1, 5)))
                     ).astype(np.int8)
    return x, kernel, stride, pads


def test_qlinear_average_pool():
    rng = np.random.default_rng(9)
    for trial in range(200):
        x, kernel, stride, pads = _pool_case(rng)
        if trial % 10 == 0:  # whole-image window: onnxruntime's global-pool path
            kernel, pads = x.shape[1:3], (0, 0, 0, 0)
        include_pad = bool(rng.integers(0, 2))
        xs, ys = _scale(rng), _scale(rng)
        xz, yz = (int(v) for v in rng.integers(-128, 128, 2))
        expected = ort_ops.qlinear_average_pool(x, xs, xz, ys, yz, kernel, stride=stride,
                                                padding=pads, count_include_pad=include_pad)
        consts = kernels.avg_pool_constants(xs, xz, ys, yz, kernel, "float")
        got = kernels.avg_pool2d(x, kernel, consts, stride=stride, padding=pads,
                                 count_include_pad=include_pad)
        np.testing.assert_array_equal(got, expected)


def _ceil_mode_padding(shape, kernel, stride, pads):
    """ONNX ceil_mode as (total padding, ceil_pad): extra bottom/right padding for one more
    window per axis, unless that window would start in the padding (onnxruntime drops it)."""
    total, extra = list(pads), []
    for axis in range(2):
        size, k, s = shape[1 + axis], kernel[axis], stride[axis]
        before, after = pads[axis], pads[axis + 2]
        out = -(-(size + before + after - k) // s) + 1
        if (out - 1) * s >= size + before:
            out -= 1
        extra.append(max(0, (out - 1) * s + k - size - before - after))
        total[axis + 2] += extra[axis]
    return tuple(total), tuple(extra)


def test_average_pool_ceil_mode_counts_like_onnxruntime_average_pool():
    """count_include_pad with ceil_mode: the divisor counts the declared padding but not the
    ceil windows' overhang. Integer data with unit scales makes onnxruntime's float
    AveragePool an exact oracle for the divisor: both are float32 sum / count, rounded."""
    rng = np.random.default_rng(11)
    overhang = 0
    for _ in range(150):
        x, kernel, stride, pads = _pool_case(rng)
        padding, ceil_pad = _ceil_mode_padding(x.shape, kernel, stride, pads)
        overhang += any(ceil_pad)
        include_pad = bool(rng.integers(0, 2))
        expected = ort_ops.average_pool(x, kernel, stride=stride, padding=pads,
                                        count_include_pad=include_pad, ceil_mode=True)
        consts = kernels.avg_pool_constants(1.0, 0, 1.0, 0, kernel, "float")
        got = kernels.avg_pool2d(x, kernel, consts, stride=stride, padding=padding,
                                 count_include_pad=include_pad, ceil_pad=ceil_pad)
        np.testing.assert_array_equal(got, np.clip(np.rint(expected), -128, 127))
    assert overhang >= 20


def test_qlinear_average_pool_ceil_mode_without_counted_padding():
    """Without count_include_pad, QLinearAveragePool's ceil_mode is extra padding."""
    rng = np.random.default_rng(12)
    for _ in range(100):
        x, kernel, stride, pads = _pool_case(rng)
        padding, ceil_pad = _ceil_mode_padding(x.shape, kernel, stride, pads)
        xs, ys = _scale(rng), _scale(rng)
        xz, yz = (int(v) for v in rng.integers(-128, 128, 2))
        expected = ort_ops.qlinear_average_pool(x, xs, xz, ys, yz, kernel, stride=stride,
                                                padding=pads, count_include_pad=False,
                                                ceil_mode=True)
        consts = kernels.avg_pool_constants(xs, xz, ys, yz, kernel, "float")
        got = kernels.avg_pool2d(x, kernel, consts, stride=stride, padding=padding,
                                 ceil_pad=ceil_pad)
        np.testing.assert_array_equal(got, expected)


def test_qlinear_global_average_pool():
    rng = np.random.default_rng(10)
    for _ in range(100):
        x = rng.integers(-128, 128, (2, int(rng.integers(1, 12)), int(rng.integers(1, 12)),
                                     int(rng.integers(1, 20)))).astype(np.int8)
        xs, ys = _scale(rng, -4, 0), _scale(rng, -4, 0)
        xz, yz = (int(v) for v in rng.integers(-128, 128, 2))
        expected = ort_ops.qlinear_global_average_pool(x, xs, xz, ys, yz)
        consts = kernels.global_avg_pool_constants(xs, xz, ys, yz, x.shape[1:3], "float")
        np.testing.assert_array_equal(kernels.global_avg_pool(x, consts), expected)


def test_max_pool():
    rng = np.random.default_rng(11)
    for _ in range(100):
        x, kernel, stride, pads = _pool_case(rng)
        expected = ort_ops.max_pool(x, kernel, stride=stride, padding=pads)
        np.testing.assert_array_equal(kernels.max_pool2d(x, kernel, stride=stride, padding=pads),
                                      expected)


def test_quantize_and_dequantize_linear():
    rng = np.random.default_rng(12)
    for _ in range(50):
        scale, zp = _scale(rng, -6, 1), int(rng.integers(-128, 128))
        f = (rng.normal(size=500) * rng.uniform(0.01, 300)).astype(np.float32)
        f[:20] = (np.arange(-10, 10) + 0.5) * scale  # ties
        np.testing.assert_array_equal(kernels.quantize(f, scale, zp),
                                      ort_ops.quantize_linear(f, scale, zp))
        q = rng.integers(-128, 128, 300).astype(np.int8)
        np.testing.assert_array_equal(kernels.dequantize(q, scale, zp),
                                      ort_ops.dequantize_linear(q, scale, zp))
