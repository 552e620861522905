"""Fast kernels == slow reference loops, for random shapes, strides, dilations, pads, groups,
zero points and requantization constants, in both modes (hypothesis)."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runtime import kernels, reference
from runtime.requant import Requant

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
zero_points = st.integers(-128, 127)
scales = st.floats(1e-3, 1.0).map(np.float32)


def int8_array(draw, shape, low=-128):
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).integers(low, 128, shape).astype(np.int8)


@st.composite
def requants(draw, channels):
    per_channel = draw(st.booleans())
    count = channels if per_channel else 1
    if draw(st.sampled_from(["fixed", "float"])) == "fixed":
        multiplier = draw(st.lists(st.integers(2**30, 2**31 - 1), min_size=count, max_size=count))
        shift = draw(st.lists(st.integers(-12, 1), min_size=count, max_size=count))
        return Requant.fixed(multiplier, shift, draw(st.sampled_from(["double", "single"])))
    return Requant.float(draw(st.lists(st.floats(1e-4, 0.05), min_size=count, max_size=count)))


def act_ranges(zero_point):
    return st.sampled_from([(-128, 127), (max(-128, zero_point), 127),
                            (max(-128, zero_point), min(127, zero_point + 40))])


@st.composite
def conv_cases(draw):
    groups_kind = draw(st.sampled_from(["dense", "depthwise", "grouped"]))
    if groups_kind == "dense":
        groups, cg = 1, draw(st.integers(1, 4))
        m = draw(st.integers(1, 5))
    elif groups_kind == "depthwise":
        groups, cg = draw(st.integers(1, 4)), 1
        m = groups * draw(st.integers(1, 3))
    else:
        groups, cg = draw(st.integers(2, 3)), draw(st.integers(2, 3))
        m = groups * draw(st.integers(1, 2))
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    dilation = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(4))
    h = draw(st.integers((kh - 1) * dilation[0] + 1, 7))
    w = draw(st.integers((kw - 1) * dilation[1] + 1, 7))
    x = int8_array(draw, (draw(st.integers(1, 2)), h, w, cg * groups))
    weights = int8_array(draw, (m, kh, kw, cg), low=-127)
    bias = None if draw(st.booleans()) else \
        np.asarray(draw(st.lists(st.integers(-20000, 20000), min_size=m, max_size=m)), np.int32)
    in_zp, out_zp = draw(zero_points), draw(zero_points)
    return dict(x=x, w=weights, bias=bias, rq=draw(requants(m)), input_zero_point=in_zp,
                output_zero_point=out_zp, stride=stride, padding=padding, dilation=dilation,
                groups=groups, act_range=draw(act_ranges(out_zp)))


@SETTINGS
@given(conv_cases())
def test_conv2d_matches_reference(case):
    fast = kernels.conv2d(**case)
    slow = reference.conv2d(**case)
    assert fast.dtype == np.int8
    np.testing.assert_array_equal(fast, slow)


@SETTINGS
@given(st.data())
def test_fully_connected_matches_reference(data):
    n, k, m = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 40)), data.draw(st.integers(1, 6))
    x = int8_array(data.draw, (n, k))
    w = int8_array(data.draw, (m, k), low=-127)
    bias = np.asarray(data.draw(st.lists(st.integers(-9000, 9000), min_size=m, max_size=m)), np.int32)
    case = dict(x=x, w=w, bias=bias, rq=data.draw(requants(m)),
                input_zero_point=data.draw(zero_points), output_zero_point=data.draw(zero_points))
    np.testing.assert_array_equal(kernels.fully_connected(**case), reference.fully_connected(**case))


@st.composite
def pool_cases(draw):
    kernel = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    padding = tuple(draw(st.integers(0, k - 1)) for k in (kernel[0], kernel[1], kernel[0], kernel[1]))
    x = int8_array(draw, (draw(st.integers(1, 2)), draw(st.integers(kernel[0], 6)),
                          draw(st.integers(kernel[1], 6)), draw(st.integers(1, 3))))
    return x, kernel, stride, padding


@SETTINGS
@given(pool_cases(), zero_points)
def test_max_pool2d_matches_reference(case, zp):
    x, kernel, stride, padding = case
    act = (max(-128, zp), 127)
    np.testing.assert_array_equal(
        kernels.max_pool2d(x, kernel, stride=stride, padding=padding, act_range=act),
        reference.max_pool2d(x, kernel, stride=stride, padding=padding, act_range=act))


@SETTINGS
@given(pool_cases(), st.sampled_from(["fixed", "float"]), scales, zero_points, scales,
       zero_points, st.booleans(), st.booleans())
def test_avg_pool2d_matches_reference(case, mode, xs, xz, ys, yz, same, include_pad):
    x, kernel, stride, padding = case
    if same:
        ys, yz = xs, xz
    consts = kernels.avg_pool_constants(xs, xz, ys, yz, kernel, mode)
    args = dict(stride=stride, padding=padding, count_include_pad=include_pad)
    np.testing.assert_array_equal(kernels.avg_pool2d(x, kernel, consts, **args),
                                  reference.avg_pool2d(x, kernel, consts, **args))


@SETTINGS
@given(pool_cases(), st.sampled_from(["fixed", "float"]), scales, zero_points, scales,
       zero_points, st.booleans(), st.data())
def test_avg_pool2d_ceil_pad_matches_reference(case, mode, xs, xz, ys, yz, same, data):
    """ceil_mode's rows and columns: padding that count_include_pad does not count."""
    x, kernel, stride, padding = case
    ceil_pad = (data.draw(st.integers(0, padding[2])), data.draw(st.integers(0, padding[3])))
    if same:
        ys, yz = xs, xz
    consts = kernels.avg_pool_constants(xs, xz, ys, yz, kernel, mode)
    args = dict(stride=stride, padding=padding, count_include_pad=True, ceil_pad=ceil_pad)
    np.testing.assert_array_equal(kernels.avg_pool2d(x, kernel, consts, **args),
                                  reference.avg_pool2d(x, kernel, consts, **args))


@SETTINGS
@given(st.data(), st.sampled_from(["fixed", "float"]), scales, zero_points, scales, zero_points)
def test_global_avg_pool_matches_reference(data, mode, xs, xz, ys, yz):
    x = int8_array(data.draw, (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 6)),
                               data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))))
    consts = kernels.global_avg_pool_constants(xs, xz, ys, yz, x.shape[1:3], mode)
    np.testing.assert_array_equal(kernels.global_avg_pool(x, consts),
                                  reference.global_avg_pool(x, consts))


@SETTINGS
@given(st.data(), st.sampled_from(["fixed", "float"]), scales, zero_points, scales, zero_points,
       scales, zero_points)
def test_add_matches_reference(data, mode, a_s, a_z, b_s, b_z, y_s, y_z):
    shape = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 20)))
    a, b = int8_array(data.draw, shape), int8_array(data.draw, shape)
    consts = kernels.add_constants(a_s, a_z, b_s, b_z, y_s, y_z, mode)
    act = data.draw(act_ranges(y_z))
    np.testing.assert_array_equal(kernels.add(a, b, consts, act_range=act),
                                  reference.add(a, b, consts, act_range=act))


def test_fma_f32_rounds_once():
    # 1 + 2**-24 is a float32 tie; the tiny addend breaks it upward only with a single rounding
    a = np.float32(1 + 2**-23)
    c = np.float32(-(2**-23) + 2**-48)  # a * 1 + c = 1 + 2**-48 exactly -> rounds to 1.0
    assert kernels.fma_f32(np.array([a]), np.float32(1), c)[0] == np.float32(1.0)
    b = np.float32(1 + 2**-12)
    # (1 + 2**-12)**2 = 1 + 2**-11 + 2**-24: a float32 tie plus nothing -> to even (1 + 2**-11)
    assert kernels.fma_f32(np.array([b]), b, np.float32(0))[0] == np.float32(1 + 2**-11)
    # + 2**-60 breaks the tie upward: a double-rounded float64 path would lose it
    got = kernels.fma_f32(np.array([b]), b, np.float32(2**-60))[0]
    assert got == np.nextafter(np.float32(1 + 2**-11), np.float32(2))


def test_large_reduction_is_split_and_exact():
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (2, 3, 3, 300)).astype(np.int8)
    w = np.full((2, 3, 3, 300), 127, np.int8)  # 128 * 127 * 2700 >> 2**24: must chunk
    w[1] = -127
    rq = Requant.fixed([1 << 30, 1 << 30], [-20, -20])
    plan = kernels.plan_conv2d(w, None, rq, input_zero_point=-128, output_zero_point=0)
    assert plan.chunks > 1
    np.testing.assert_array_equal(plan(x), reference.conv2d(
        x, w, None, rq, input_zero_point=-128, output_zero_point=0))


@pytest.mark.parametrize("call, message", [
    (lambda: kernels.conv2d(np.zeros((1, 3, 3, 2), np.int16), np.zeros((1, 1, 1, 2), np.int8),
                            None, Requant.float(0.1), input_zero_point=0, output_zero_point=0),
     "x must be int8"),
    (lambda: kernels.conv2d(np.zeros((1, 3, 3, 2), np.int8), np.zeros((1, 1, 1, 3), np.int8),
                            None, Requant.float(0.1), input_zero_point=0, output_zero_point=0),
     "x has 2 channels"),
    (lambda: kernels.conv2d(np.zeros((1, 3, 3, 2), np.int8), np.zeros((2, 1, 1, 2), np.int8),
                            np.zeros(3, np.int32), Requant.float(0.1), input_zero_point=0,
                            output_zero_point=0), "bias must be int32"),
    (lambda: kernels.conv2d(np.zeros((1, 3, 3, 2), np.int8), np.zeros((2, 1, 1, 2), np.int8),
                            None, Requant.float([0.1, 0.2, 0.3]), input_zero_point=0,
                            output_zero_point=0), "rq has 3 channels"),
    (lambda: kernels.conv2d(np.zeros((1, 200, 200, 64), np.int8),
                            np.full((1, 200, 200, 64), 127, np.int8), None, Requant.float(0.1),
                            input_zero_point=0, output_zero_point=0), "w: accumulator could overflow"),
    (lambda: kernels.conv2d(np.zeros((1, 3, 3, 2), np.int8), np.zeros((1, 5, 5, 2), np.int8),
                            None, Requant.float(0.1), input_zero_point=0, output_zero_point=0),
     "does not fit"),
    (lambda: kernels.add(np.zeros(3, np.int8), np.zeros(4, np.int8),
                         kernels.add_constants(1, 0, 1, 0, 1, 0, "fixed")), "same shape"),
    (lambda: kernels.fully_connected(np.zeros((2, 5), np.int8), np.zeros((3, 4), np.int8), None,
                                     Requant.float(0.1), input_zero_point=0, output_zero_point=0),
     "x has 5 features"),
    (lambda: kernels.global_avg_pool(np.zeros((1, 2, 2, 1), np.int8),
                                     kernels.global_avg_pool_constants(1, 0, 1, 0, (3, 3), "float")),
     "consts were made for 9"),
    (lambda: kernels.add_constants(1, 0, 1, 0, 1, 0, "other"), "mode must be"),
    (lambda: kernels.conv2d(np.zeros((1, 3, 3, 2), np.int8), np.zeros((1, 1, 1, 2), np.int8),
                            None, Requant.float(0.1), input_zero_point=300, output_zero_point=0),
     "input_zero_point"),
])
def test_bad_arguments_raise_value_error_naming_them(call, message):
    with pytest.raises(ValueError, match=message):
        call()
