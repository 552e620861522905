"""Requantization against hand-computed cases from the formulas (docs/ARITHMETIC.md), and fixed
mode against float mode on random data."""
import numpy as np
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from runtime import kernels, reference
from runtime.requant import (INT32_MAX, INT32_MIN, BoundedFixed, Float64Fixed, Requant,
                             bounded_fixed, quantize_multiplier, requantize)


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


def per_channel(data, strategy, channels: int) -> list:
    """One value of ``strategy`` for each of ``channels`` output channels."""
    return data.draw(st.lists(strategy, min_size=channels, max_size=channels))


def oracle(accs, multipliers, shifts, rounding):
    """The scalar oracle over ``accs [N, C]`` with per-channel constants."""
    return np.array([[reference.requant_scalar(a, m, s, rounding)
                      for a, m, s in zip(row, multipliers, shifts)] for row in accs], np.int64)


@pytest.mark.parametrize("rounding", ["double", "single"])
@settings(max_examples=250, deadline=None)
@given(data=st.data())
def test_fixed_apply_equals_scalar_oracle(rounding, data):
    channels = data.draw(st.integers(1, 6))
    multipliers = per_channel(data, MULTIPLIERS, channels)
    shifts = per_channel(data, SHIFTS, channels)
    rows = data.draw(st.integers(1, 4))
    accs = [per_channel(data, ACCS, channels) for _ in range(rows)]
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
    multipliers = per_channel(data, MULTIPLIERS, channels)
    shifts = per_channel(data, st.one_of(SHIFTS, st.integers(-14, 2)), channels)
    bounds = per_channel(data, st.one_of(st.integers(0, INT32_MAX), st.integers(0, 1 << 22)),
                         channels)
    biases = per_channel(data, st.integers(-(1 << 24), 1 << 24), channels)
    zp = data.draw(st.integers(-128, 127))
    low = data.draw(st.integers(-128, 127))
    act = (low, data.draw(st.integers(low, 127)))
    rq = Requant.fixed(multipliers, shifts, rounding)
    fast = bounded_fixed(rq, bounds, biases, zp, act)
    event("refused" if fast is None else f"proven: {type(fast).__name__}")
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
    int64_route = bounded_fixed(rq, bounds, biases, zp, act, float64=False)
    assert isinstance(int64_route, BoundedFixed)
    for route in {fast, int64_route}:
        _check_blocks(route, accs, expected)


def _check_blocks(route, accs, expected):
    """``route(accs) == expected`` in one block, then in blocks of 2 rows and a short last one,
    from float64 and from int64 accumulators."""
    few_rows = route.workspace((2,) + accs.shape[1:])
    for dtype in (np.float64, np.int64):
        np.testing.assert_array_equal(route(accs.astype(dtype)), expected)
        np.testing.assert_array_equal(route(accs.astype(dtype), few_rows), expected)


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
    assert isinstance(plan.fixed, Float64Fixed)
    # a left shift that could wrap int32 for this accumulator bound: the general path
    wide = kernels.plan_conv2d(w, None, Requant.fixed([1 << 30], [20]), input_zero_point=0,
                               output_zero_point=0)
    assert wide.fixed is None


# -- the float64 evaluation (Float64Fixed) over its proven domain --------------------------------

@st.composite
def float64_channel(draw):
    """(multiplier, shift, bias, accumulators) of one channel whose accumulators include exact
    ties of both signs at both roundings: for ``h`` a tie of RoundingDivideByPOT (``h = q * 2**r
    + 2**(r-1)``, ``r = -shift``), ``acc = ceil((h * 2**31 - 2**30) / M)`` is the smallest
    accumulator whose SRDHM is ``h`` (an exact SRDHM tie when the division is exact); its
    neighbours and the negated ties come too."""
    multiplier = draw(st.one_of(st.integers(1 << 30, INT32_MAX), st.integers(1, INT32_MAX),
                                st.sampled_from([1 << 30, 3 << 29, INT32_MAX, 1])))
    shift = draw(st.one_of(st.integers(-12, 0), st.integers(1, 4)))
    r, left = max(-shift, 0), max(shift, 0)
    bias = draw(st.integers(-(1 << (16 - left)), 1 << (16 - left)))
    accs = []
    for _ in range(draw(st.integers(1, 4))):
        q = draw(st.integers(-(1 << 8), 1 << 8))
        h = q * (1 << r) + ((1 << (r - 1)) if r else 0)
        for sign in (1, -1):
            full = -((-(sign * h * (1 << 31) - (1 << 30))) // (multiplier << left))
            accs += [full - bias + d for d in (-1, 0, 1)]
    accs += draw(st.lists(st.integers(-(1 << (17 - left)), 1 << (17 - left)), max_size=4))
    return multiplier, shift, bias, [a for a in accs if abs(a + bias) << left <= INT32_MAX] or [0]


@settings(max_examples=300, deadline=None)
@given(channels=st.lists(float64_channel(), min_size=1, max_size=5), data=st.data())
def test_float64_route_equals_scalar_oracle_on_ties(channels, data):
    multipliers, shifts, biases, columns = zip(*channels)
    width = max(len(c) for c in columns)
    accs = np.array([[c[i % len(c)] if c else 0 for c in columns] for i in range(width)],
                    np.int64)
    bounds = np.abs(accs).max(axis=0)
    zp = data.draw(st.integers(-128, 127))
    low = data.draw(st.integers(-128, 127))
    act = (low, data.draw(st.integers(low, 127)))
    rq = Requant.fixed(list(multipliers), list(shifts))
    fast = bounded_fixed(rq, bounds, list(biases), zp, act)
    # inside the domain drawn here the float64 proof always holds: |acc << left| < 2**18 + 2**16
    # and |h| < 2**20, so |acc * (M << left)| < 2**50, and the lift * 2**(31 + r) < 2**52
    assert isinstance(fast, Float64Fixed)
    full = accs + np.array(biases)
    expected = np.clip(oracle(full.tolist(), multipliers, shifts, "double") + zp, *act)
    _check_blocks(fast, accs, expected)


def test_float64_route_hand_computed_ties():
    # M = 2**30 halves; shift -1 halves again with RoundingDivideByPOT: acc / 4, where
    # SRDHM rounds half up and RDBPOT half away from zero
    rq = Requant.fixed([1 << 30], [-1])
    fast = bounded_fixed(rq, [8], None, 0)
    assert isinstance(fast, Float64Fixed)
    accs = np.array([[a] for a in (-8, -7, -6, -5, -3, -2, -1, 0, 1, 2, 3, 5, 6, 7, 8)])
    # h = floor((acc + 1) / 2): -4 -3 -3 -2 -1 -1 0 0 1 1 2 3 3 4 4; then h / 2 half away
    assert fast(accs)[:, 0].tolist() == [-2, -2, -2, -1, -1, -1, 0, 0, 1, 1, 1, 2, 2, 2, 2]


def test_float64_route_falls_back_where_its_bound_fails():
    rq = Requant.fixed([INT32_MAX, INT32_MAX], [-2, -2])
    # |acc * M| just under 2**53 for one channel: float64 cannot be proven, int64 can
    bounds = [(1 << 22) - 1, 1 << 10]
    fast = bounded_fixed(rq, bounds, None, 0)
    assert isinstance(fast, BoundedFixed)
    assert isinstance(bounded_fixed(rq, [1 << 10, 1 << 10], None, 0), Float64Fixed)
    # a shift of 14 or more needs a lift of 256 * 2**(31 + 14) >= 2**53 once some t can be
    # negative: here t >= 2**30 + 2**44 - 2**16 * 2**30 (the offset covers |acc| <= 2**14)
    shift14 = Requant.fixed([1 << 30], [-14])
    assert isinstance(bounded_fixed(shift14, [1 << 16], None, 0), BoundedFixed)
    assert isinstance(bounded_fixed(shift14, [1 << 14], None, 0), Float64Fixed)
    accs = np.array([[-bounds[0], bounds[1]], [bounds[0], -bounds[1]], [12345, -77]])
    expected = np.clip(oracle(accs.tolist(), [INT32_MAX] * 2, [-2, -2], "double"), -128, 127)
    _check_blocks(fast, accs, expected)
