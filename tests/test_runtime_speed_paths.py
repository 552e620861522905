"""The paths that make small batches fast (docs/PERFORMANCE.md, "Whole models vs onnxruntime"):
add as a per-layer table, window sums in one sequential reduction, dense convolutions in a kept
frame, and the executor's compiled schedule. Oracles: onnxruntime, runtime/reference.py's
loops, and plain per-tap loops, compared with ==."""
import numpy as np
import pytest

import onnx_ops
import runtime
from runtime import kernels, reference
from runtime.kernels.elementwise import add_lookup, add_table
from runtime.kernels.pool import _sequential_window_sums
from runtime.requant import Requant
from tiny_models import tiny_model


def _scale(rng):
    return float(np.exp(rng.uniform(-6, 0)))


def test_add_table_equals_onnxruntime_qlinear_add_on_every_pair():
    rng = np.random.default_rng(30)
    codes = np.arange(256, dtype=np.uint8).view(np.int8)
    a, b = np.repeat(codes, 256)[None], np.tile(codes, 256)[None]
    for _ in range(6):
        scales = [_scale(rng) for _ in range(3)]
        zps = [int(v) for v in rng.integers(-128, 128, 3)]
        consts = kernels.add_constants(scales[0], zps[0], scales[1], zps[1], scales[2], zps[2],
                                       "float")
        expected = onnx_ops.qlinear_add(a, scales[0], zps[0], b, scales[1], zps[1],
                                        scales[2], zps[2])
        np.testing.assert_array_equal(add_lookup(a, b, add_table(consts)), expected)


@pytest.mark.parametrize("mode", ["fixed", "float"])
def test_add_lookup_equals_add(mode):
    """The lookup indexes the table the right way round (a is the row), any shape, and a
    narrowed activation range is in the table."""
    rng = np.random.default_rng(31)
    consts = kernels.add_constants(0.05, 3, 0.2, -7, 0.1, 11, mode)
    a = rng.integers(-128, 128, (2, 5, 7, 3)).astype(np.int8)
    b = rng.integers(-128, 128, (2, 5, 7, 3)).astype(np.int8)
    for act in [(-128, 127), (11, 100)]:
        table = add_table(consts, act_range=act)
        np.testing.assert_array_equal(add_lookup(a, b, table),
                                      kernels.add(a, b, consts, act_range=act))
        np.testing.assert_array_equal(add_lookup(a, b, table),
                                      reference.add(a, b, consts, act_range=act))
    assert not np.array_equal(add_lookup(a, b, table), add_lookup(b, a, table))
    with pytest.raises(ValueError, match="same shape"):
        add_lookup(a, b[:1], table)


def _per_tap(xf, kernel, stride, out_hw):
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out_hw
    total = np.zeros((xf.shape[0], oh, ow, xf.shape[3]), np.float32)
    for ky in range(kh):
        for kx in range(kw):
            total += xf[:, ky:ky + (oh - 1) * sh + 1:sh, kx:kx + (ow - 1) * sw + 1:sw]
    return total


def test_window_sums_are_sequential():
    """Row-major tap order in float32, whatever the layout numpy could merge (one channel,
    one output, windows that tile the image exactly): summed pairwise, many would differ."""
    rng = np.random.default_rng(32)
    pairwise_differs = 0
    for _ in range(200):
        n, c = int(rng.integers(1, 4)), int(rng.choice([1, 2, 3, 64]))
        kh, kw = int(rng.integers(1, 26)), int(rng.integers(1, 6))
        sh, sw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        h, w = kh + int(rng.integers(0, 5)), kw + int(rng.integers(0, 5))
        xf = (rng.standard_normal((n, h, w, c)) * np.exp(rng.uniform(-8, 8, (n, h, w, c)))
              ).astype(np.float32)
        out_hw = ((h - kh) // sh + 1, (w - kw) // sw + 1)
        expected = _per_tap(xf, (kh, kw), (sh, sw), out_hw)
        np.testing.assert_array_equal(
            _sequential_window_sums(xf, (kh, kw), (sh, sw), out_hw), expected)
        pairwise_differs += not np.array_equal(xf[:, :kh, :kw].sum(axis=(1, 2)),
                                               expected[:, 0, 0])
    assert pairwise_differs > 20


def test_large_average_pool_windows_equal_onnxruntime():
    """DS-CNN's 24x5 window over a 25x5 map, and other windows of many taps."""
    rng = np.random.default_rng(33)
    for shape, kernel, stride, pads in [((2, 25, 5, 64), (24, 5), (24, 5), (0, 0, 0, 0)),
                                        ((1, 25, 5, 1), (24, 5), (1, 1), (0, 0, 0, 0)),
                                        ((3, 12, 9, 5), (7, 6), (2, 3), (1, 2, 0, 1)),
                                        ((1, 16, 16, 2), (16, 15), (1, 1), (0, 0, 0, 0))]:
        for include_pad in (False, True):
            x = rng.integers(-128, 128, shape).astype(np.int8)
            xs, ys = _scale(rng), _scale(rng)
            xz, yz = (int(v) for v in rng.integers(-128, 128, 2))
            expected = onnx_ops.qlinear_average_pool(x, xs, xz, ys, yz, kernel, stride=stride,
                                                     padding=pads,
                                                     count_include_pad=include_pad)
            consts = kernels.avg_pool_constants(xs, xz, ys, yz, kernel, "float")
            got = kernels.avg_pool2d(x, kernel, consts, stride=stride, padding=pads,
                                     count_include_pad=include_pad)
            np.testing.assert_array_equal(got, expected)


DENSE = [  # kernel, stride, dilation, padding, input channels
    ((1, 1), (1, 1), (1, 1), (0, 0, 0, 0), 16),
    ((1, 1), (1, 1), (1, 1), (1, 0, 2, 1), 8),  # 1x1 with padding: border outputs
    ((3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 2),  # few channels: tap-major columns
    ((3, 3), (2, 2), (1, 1), (0, 1, 1, 0), 16),
    ((10, 4), (2, 2), (1, 1), (5, 1, 5, 1), 1),  # DS-CNN's first layer
    ((3, 2), (1, 2), (2, 1), (-1, 1, 0, -2), 5),  # negative pads crop
]


@pytest.mark.parametrize("mode", ["fixed", "float"])
@pytest.mark.parametrize("case", range(len(DENSE)))
def test_dense_frame_reused_across_calls_and_shapes(mode, case):
    kernel, stride, dilation, padding, c = DENSE[case]
    rng = np.random.default_rng([34, case])
    m = 12
    w = rng.integers(-128, 128, (m,) + kernel + (c,)).astype(np.int8)
    bias = rng.integers(-30000, 30000, m).astype(np.int32)
    w_scales = np.exp(rng.uniform(-7, -4, m)).astype(np.float32)
    rq = Requant.from_scales(0.05, w_scales, 0.1, mode)
    kwargs = dict(input_zero_point=-9, output_zero_point=4, stride=stride, padding=padding,
                  dilation=dilation, act_range=(-100, 120))
    plan = kernels.plan_conv2d(w, bias, rq, **kwargs)
    for shape in [(1, 13, 14), (1, 13, 14), (3, 16, 12), (1, 13, 14)]:
        x = rng.integers(-128, 128, shape + (c,)).astype(np.int8)
        expected = reference.conv2d(x, w, bias, rq, **kwargs)
        np.testing.assert_array_equal(plan(x), expected)
        np.testing.assert_array_equal(plan.accumulate(x),
                                      reference.conv2d_accumulate(x, w, bias, **{
                                          k: v for k, v in kwargs.items()
                                          if k not in ("output_zero_point", "act_range")}))


def test_replaced_add_constants_are_replanned():
    """The add table is prepared work like a conv plan: replacing the layer's constants (or
    the act range) makes a new one."""
    model = tiny_model("float")
    x = np.random.default_rng(35).integers(-128, 128, (2, 8, 8, 2)).astype(np.int8)
    layer = next(layer for layer in model.layers if layer.op == "add")
    before = runtime.run(model, x, collect=True)[1][layer.output]
    layer.arrays["offset"] = layer.arrays["offset"] + np.float32(9)
    after = runtime.run(model, x, collect=True)[1]
    a, b = (after[name] for name in layer.inputs)
    act = (layer.params["act_min"], layer.params["act_max"])
    np.testing.assert_array_equal(after[layer.output],
                                  reference.add(a, b, layer.arrays, act_range=act))
    assert not np.array_equal(after[layer.output], before)

