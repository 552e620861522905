"""The int32 accumulators before requantization (what ConvInteger / MatMulInteger output):
kernels.conv2d_accumulate / fully_connected_accumulate == the slow loops of runtime/reference.py,
for the same random cases the requantized kernels are tested on, plus accumulators too large for
float32 (the float64 path)."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from test_kernels import SETTINGS, conv_cases, int8_array, zero_points

from runtime import kernels, reference

CONV_ARGS = ("x", "w", "bias", "input_zero_point", "stride", "padding", "dilation", "groups")


@SETTINGS
@given(conv_cases())
def test_conv2d_accumulate_matches_reference(case):
    args = {k: case[k] for k in CONV_ARGS}
    fast = kernels.conv2d_accumulate(**args)
    assert fast.dtype == np.int32
    np.testing.assert_array_equal(fast, reference.conv2d_accumulate(**args))


@SETTINGS
@given(st.data())
def test_fully_connected_accumulate_matches_reference(data):
    n, k, m = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 40)),
               data.draw(st.integers(1, 6)))
    x = int8_array(data.draw, (n, k))
    w = int8_array(data.draw, (m, k))
    bias = None if data.draw(st.booleans()) else np.asarray(
        data.draw(st.lists(st.integers(-2**24, 2**24), min_size=m, max_size=m)), np.int32)
    zp = data.draw(zero_points)
    fast = kernels.fully_connected_accumulate(x, w, bias, input_zero_point=zp)
    assert fast.dtype == np.int32 and fast.shape == (n, m)
    np.testing.assert_array_equal(
        fast, reference.fully_connected_accumulate(x, w, bias, input_zero_point=zp))


def test_accumulators_beyond_float32_are_exact():
    """Large K with extreme weights and a bias near 2**30: partial sums beyond 2**24 go through
    the split float64 reduction and must still be exact integers."""
    rng = np.random.default_rng(7)
    x = rng.integers(-128, 128, (2, 3, 3, 300)).astype(np.int8)
    w = np.where(rng.random((3, 3, 3, 300)) < 0.5, -128, 127).astype(np.int8)
    bias = np.array([2**30, -2**30, 12345], np.int32)
    args = dict(input_zero_point=127, padding=(1, 1, 1, 1))
    fast = kernels.conv2d_accumulate(x, w, bias, **args)
    assert np.abs(fast.astype(np.int64)).max() > 2**24
    np.testing.assert_array_equal(fast, reference.conv2d_accumulate(x, w, bias, **args))


def test_plan_without_requant_only_accumulates():
    w = np.ones((1, 1, 1, 1), np.int8)
    plan = kernels.plan_conv2d(w, None, None, input_zero_point=0, output_zero_point=0)
    x = np.full((1, 1, 1, 1), 5, np.int8)
    assert plan.accumulate(x).tolist() == [[[[5]]]]
    with pytest.raises(ValueError, match="rq is None"):
        plan(x)
