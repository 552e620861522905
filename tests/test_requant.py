"""Requantization against hand-computed cases from the formulas (docs/ARITHMETIC.md), and fixed
mode against float mode on random data."""
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from runtime import kernels, reference
from runtime.requant import (INT32_MAX, INT32_MIN, Requant, bounded_fixed,
                             quantize_multiplier, requantize)


def apply(rq, values):
    return [int(v) for v in rq.apply(np.array(values, np.int64))]


def test_fixed_half_multiplier_rounds_half_away_from_zero():
    # M = 2**30 is 0.5: SRDHM(a, M) = (a * 2**30 + 2**30) >> 31 = floor((a + 1) / 2)
    rq = Requant.fixed([1 << 30], [0])
    assert apply(rq, [1, 2, 3, -1, -2, -3, 0]) == [1, 1, 2, 0, -1, -1, 0]


def test_fixed_right_shift_ties_and_negatives():
    # M = 2**31 - 1 ~ 1.0, shift -2: divide by 4, rounding half away from zero
    rq = Requant.fixed([INT32_MAX], [-2])
    # h = SRDHM(a, 2**31-1) equals a for these small a; then RoundingDivideByPOT(a, 2)
    assert apply(rq, [6, 5, 7, 2, -2, -6, -5, -7]) == [2, 1, 2, 1, -1, -2, -1, -2]


def test_fixed_left_shift_wraps_to_int32_first():
    rq = Requant.fixed([1 << 30], [2])
    assert apply(rq, [3]) == [6]  # (3 << 2) * 0.5
    # 2**29 << 2 = 2**31 wraps to INT32_MIN; times 0.5 -> -2**30
    assert apply(rq, [1 << 29]) == [-(1 << 30)]


def test_fixed_saturates_int32_min_times_int32_min():
    rq = Requant.fixed([INT32_MIN], [0])
    assert apply(rq, [INT32_MIN]) == [INT32_MAX]
    assert apply(rq, [-1]) == [1]  # (-1 * -2**31 + 2**30) >> 31 = 1


def test_single_rounding():
    rq = Requant.fixed([1 << 30], [-1], rounding="single")
    # T = 32: (acc * 2**30 + 2**31) >> 32 = floor(acc / 4 + 1/2)
    assert apply(rq, [2, 6, -2, -6, 5]) == [1, 2, 0, -1, 1]


def test_float_mode_rounds_half_to_even():
    rq = Requant.float([0.5])
    assert apply(rq, [1, 3, 5, -1, -3, 7]) == [0, 2, 2, 0, -2, 4]


def test_float_scale_is_computed_in_float32_in_order():
    rq = Requant.from_scales(0.1, [0.3], 0.7, mode="float")
    expected = (np.float32(0.1) * np.float32(0.3)) / np.float32(0.7)
    assert rq.scale[0] == expected


@pytest.mark.parametrize("real, expected", [
    (0.5, (1 << 30, 0)), (0.25, (1 << 30, -1)), (1.0, (1 << 30, 1)), (3.0, (3 << 29, 2)),
    (0.0, (0, 0)), (2.0**-40, (0, 0)),
    (1 - 2.0**-33, (1 << 30, 1)),  # q * 2**31 rounds to 2**31: halve it, bump the exponent
])
def test_quantize_multiplier(real, expected):
    assert quantize_multiplier(real) == expected


def test_requantize_adds_zero_point_and_clamps():
    rq = Requant.float([1.0])
    out = requantize(np.array([[-300, -5, 0, 5, 300]]), rq, 3, act_range=(3, 100))
    assert out.tolist() == [[3, 3, 3, 8, 100]]
    assert out.dtype == np.int8


def test_fixed_within_one_lsb_of_float_and_rarely_different():
    rng = np.random.default_rng(5)
    x = rng.integers(-128, 128, (8, 12, 12, 16)).astype(np.int8)
    w = rng.integers(-127, 128, (24, 3, 3, 16)).astype(np.int8)
    w_scales = np.exp(rng.uniform(-7, -4, 24)).astype(np.float32)
    bias = rng.integers(-20000, 20000, 24).astype(np.int32)
    args = dict(input_zero_point=-7, output_zero_point=4, padding=(1, 1, 1, 1))
    outs = [kernels.conv2d(x, w, bias, Requant.from_scales(0.05, w_scales, 0.9, mode), **args)
            for mode in ("fixed", "float")]
    diff = np.abs(outs[0].astype(int) - outs[1].astype(int))
    assert diff.max() <= 1
    assert diff.mean() < 0.01
    unclamped = (outs[1] > -128) & (outs[1] < 127)
    assert unclamped.mean() > 0.5  # the comparison is not just saturated values


# -- the fast path against the independent scalar oracle (runtime/reference.py) -------------------

INT32 = st.integers(INT32_MIN, INT32_MAX)
ACCS = st.one_of(INT32, st.integers(-(1 << 16), 1 << 16),
                 st.sampled_from([INT32_MIN, INT32_MIN + 1, INT32_MAX, -1, 0, 1]))
MULTIPLIERS = st.one_of(st.integers(1 << 30, INT32_MAX), INT32,
                        st.sampled_from([INT32_MIN, INT32_MIN + 1, 0, 1, 1 << 30, INT32_MAX]))
SHIFTS = st.integers(-31, 30)


@st.composite
def tie(draw):
    """(acc, multiplier, shift) whose double rounding lands exactly on .5 after the shift:
    M = 2**30 halves exactly (even a), then h = q * 2**r + 2**(r-1) is a tie for RDBPOT."""
    r = draw(st.integers(1, 29))
    q = draw(st.integers(-(1 << (29 - r)), (1 << (29 - r)) - 1))
    return 2 * (q * (1 << r) + (1 << (r - 1))), 1 << 30, -r


def oracle(accs, multipliers, shifts, rounding):
    """The scalar oracle over ``accs [N, C]`` with per-channel constants."""
    return np.array([[reference.requant_scalar(a, m, s, rounding)
                      for a, m, s in zip(row, multipliers, shifts)] for row in accs], np.int64)


@pytest.mark.parametrize("rounding", ["double", "single"])
@settings(max_examples=250, deadline=None)
@given(data=st.data())
def test_fixed_apply_equals_scalar_oracle(rounding, data):
    channels = data.draw(st.integers(1, 6))
    multipliers = data.draw(st.lists(MULTIPLIERS, min_size=channels, max_size=channels))
    shifts = data.draw(st.lists(SHIFTS, min_size=channels, max_size=channels))
    rows = data.draw(st.integers(1, 4))
    accs = [data.draw(st.lists(ACCS, min_size=channels, max_size=channels)) for _ in range(rows)]
    rq = Requant.fixed(multipliers, shifts, rounding)
    got = rq.apply(np.array(accs, np.int64))
    np.testing.assert_array_equal(got, oracle(accs, multipliers, shifts, rounding))


@settings(max_examples=200, deadline=None)
@given(cases=st.lists(tie(), min_size=1, max_size=8))
def test_fixed_apply_ties_equal_scalar_oracle(cases):
    accs, multipliers, shifts = zip(*cases)
    for signed in (np.array(accs), -np.array(accs)):
        got = Requant.fixed(multipliers, shifts).apply(signed[None])
        expected = oracle([signed.tolist()], multipliers, shifts, "double")
        np.testing.assert_array_equal(got, expected)
        # a tie really is a tie: the half way value rounds away from zero
        halves = [float(a) * m / 2.0**(31 - s) for a, m, s in zip(signed, multipliers, shifts)]
        assert all(abs(h) % 1 == 0.5 for h in halves)
        assert [int(v) for v in expected[0]] == [int(np.sign(h) * (abs(h) + 0.5)) for h in halves]


def test_scalar_oracle_hand_computed():
    # SRDHM: (a * M + 2**30) >> 31; gemmlowp's sign-dependent nudge gives the same
    assert reference.saturating_rounding_doubling_high_mul(-(1 << 30), 1 << 30) == -(1 << 29)
    assert reference.saturating_rounding_doubling_high_mul(-1, 1 << 30) == 0  # -0.5 -> 0 (half up)
    assert reference.saturating_rounding_doubling_high_mul(-3, 1 << 30) == -1  # -1.5 -> -1
    assert reference.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX
    # RoundingDivideByPOT: half away from zero
    assert [reference.rounding_divide_by_pot(x, 1) for x in (3, -3, 1, -1, 2)] == [2, -2, 1, -1, 1]
    assert reference.rounding_divide_by_pot(-5, 0) == -5
    # shift 30 wraps 3 << 30 to -2**30; times M = 2**30 (0.5): -2**29
    assert reference.requant_scalar(3, 1 << 30, 30) == -(1 << 29)
    # single rounding, T = 31 - (-31) = 62: (acc * M + 2**61) >> 62
    assert reference.requant_scalar(INT32_MIN, INT32_MIN, -31, "single") == 1
    assert reference.requant_scalar(-(1 << 30), 1 << 30, -31, "single") == 0
    assert reference.requant_scalar(5, 1 << 30, 30, "single") == 5 << 29  # T = 1: exact


# -- the bounded fast path (conv / fc plans) against the same oracle ------------------------------

@pytest.mark.parametrize("rounding", ["double", "single"])
@settings(max_examples=250, deadline=None)
@given(data=st.data())
def test_bounded_fixed_equals_scalar_oracle(rounding, data):
    channels = data.draw(st.integers(1, 5))
    multipliers = data.draw(st.lists(MULTIPLIERS, min_size=channels, max_size=channels))
    shifts = data.draw(st.lists(st.one_of(SHIFTS, st.integers(-14, 2)),
                                min_size=channels, max_size=channels))
    bounds = data.draw(st.lists(st.one_of(st.integers(0, INT32_MAX), st.integers(0, 1 << 22)),
                                min_size=channels, max_size=channels))
    biases = data.draw(st.lists(st.integers(-(1 << 24), 1 << 24), min_size=channels,
                                max_size=channels))
    zp = data.draw(st.integers(-128, 127))
    low = data.draw(st.integers(-128, 127))
    act = (low, data.draw(st.integers(low, 127)))
    rq = Requant.fixed(multipliers, shifts, rounding)
    fast = bounded_fixed(rq, bounds, biases, zp, act)
    event("refused" if fast is None else "proven")
    if fast is None:  # the proof failed; then some channel really is out of its range
        assert any(_outside_proof(m, s, b, bias, rounding)
                   for m, s, b, bias in zip(multipliers, shifts, bounds, biases))
        return
    rows = data.draw(st.integers(1, 7))
    accs = np.array([[data.draw(st.one_of(st.integers(-b, b), st.sampled_from([-b, b])))
                      for b in bounds] for _ in range(rows)], np.int64)
    full = accs + np.array(biases)
    event("int32" if np.abs(full).max() <= INT32_MAX else "not an int32 accumulator")
    if np.abs(full).max() > INT32_MAX:
        return
    expected = np.clip(oracle(full.tolist(), multipliers, shifts, rounding) + zp, *act)
    few_rows = tuple(np.empty((2, channels), t) for t in (np.int64, np.int32, np.bool_))
    for dtype in (np.float64, np.int64):  # one block, then blocks of 2 rows and a short last one
        np.testing.assert_array_equal(fast(accs.astype(dtype)), expected)
        np.testing.assert_array_equal(fast(accs.astype(dtype), few_rows), expected)


def _outside_proof(multiplier, shift, bound, bias, rounding):
    """bounded_fixed may refuse only a channel whose left shift could wrap, or whose product
    or rounding terms come near 2**62 (checked loosely here: within a factor 2**6)."""
    if rounding == "double" and (bound + abs(bias)) << max(shift, 0) > INT32_MAX:
        return True
    product = (bound + abs(bias)) * abs(multiplier) << max(shift, 0)
    return product >= 1 << 56 or max(-shift, 0) >= 20


def test_bounded_fixed_is_used_by_conv_plans():
    w = np.full((4, 3, 3, 2), 100, np.int8)
    rq = Requant.from_scales(0.05, np.full(4, 0.01, np.float32), 0.2)
    plan = kernels.plan_conv2d(w, None, rq, input_zero_point=0, output_zero_point=0)
    assert plan.fixed is not None
    # a left shift that could wrap int32 for this accumulator bound: the general path
    wide = kernels.plan_conv2d(w, None, Requant.fixed([1 << 30], [20]), input_zero_point=0,
                               output_zero_point=0)
    assert wide.fixed is None
