/* softmax over the channels of each row. fixed: TensorFlow Lite Micro's reference int8 softmax
 * (gemmlowp fixed point: Q5.26 differences, exp_on_negative_values, a Q12.19 sum, a
 * Newton-Raphson reciprocal); float: onnxruntime's QLinearSoftmax (a float32 table of
 * exponentials, a sequential float32 sum, e * 256 / sum rounded half to even).
 * runtime/kernels/softmax.py and docs/ARITHMETIC.md give the same steps. */
#include "tc_kernels.h"

/* gemmlowp's SaturatingRoundingDoublingHighMul: round(a * b / 2^31), halves away from zero. */
static int32_t tc_sm_mulh(int32_t a, int32_t b)
{
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    return (int32_t)(((int64_t)a * b + ((int64_t)1 << 30)) >> 31);
}

/* gemmlowp's RoundingDivideByPOT, exponent in [0, 31]. */
static int32_t tc_sm_rdbp(int32_t x, int32_t exponent)
{
    const int32_t mask = (int32_t)(((uint32_t)1 << exponent) - 1u);
    const int32_t threshold = (mask >> 1) + (x < 0);
    return (x >> exponent) + ((x & mask) > threshold);
}

/* x * 2^bits saturated to int32 (SaturatingRoundingMultiplyByPOT with bits > 0). */
static int32_t tc_sm_shl_sat(int32_t x, int32_t bits)
{
    const int64_t v = (int64_t)x * ((int64_t)1 << bits);
    return v > INT32_MAX ? INT32_MAX : (v < INT32_MIN ? INT32_MIN : (int32_t)v);
}

/* exp(a) for a Q0.31 value in [-1/4, 0): Taylor series around -1/8. */
static int32_t tc_sm_exp_quarter(int32_t a)
{
    const int32_t x = a + (1 << 28);
    const int32_t x2 = tc_sm_mulh(x, x);
    const int32_t x3 = tc_sm_mulh(x2, x);
    const int32_t x4 = tc_sm_mulh(x2, x2);
    const int32_t poly =
        tc_sm_rdbp(tc_sm_mulh(tc_sm_rdbp(x4, 2) + x3, 715827883) + x2, 1);
    return 1895147668 + tc_sm_mulh(1895147668, x + poly);
}

/* exp(a) for a Q5.26 value in (-32, 0], as Q0.31: exp of a mod 1/4, times exp(-2^k) for each
 * set bit k of the rest. */
static int32_t tc_sm_exp_on_negative(int32_t a)
{
    static const int32_t factors[7] = {1672461947, 1302514674, 790015084, 290630308,
                                       39332535, 720401, 242};
    const int32_t quarter = 1 << 24;
    const int32_t reduced = (a & (quarter - 1)) - quarter;
    const int32_t remainder = reduced - a;
    int32_t result, k;
    if (a == 0) {
        return INT32_MAX;
    }
    result = tc_sm_exp_quarter(tc_sm_shl_sat(reduced, 5));
    for (k = 0; k < 7; k++) {
        if (remainder & (1 << (24 + k))) {
            result = tc_sm_mulh(result, factors[k]);
        }
    }
    return result;
}

/* TFLite's GetReciprocal of a Q12.19 sum >= 1: returns 1 / (sum / 2^bits_over_unit) in Q0.31. */
static int32_t tc_sm_reciprocal(int32_t sum, int32_t *bits_over_unit)
{
    int32_t headroom = 0, half, x, i;
    uint32_t u = (uint32_t)sum;
    while ((u & 0x80000000u) == 0u) {
        u <<= 1;
        headroom++;
    }
    *bits_over_unit = 12 - headroom;
    /* (sum << headroom) - 1.0 in Q0.31, then RoundingHalfSum with 1.0 */
    half = (int32_t)(((int64_t)(u - 0x80000000u) + INT32_MAX + 1) >> 1);
    x = 1515870810 + tc_sm_mulh(half, -1010580540); /* 48/17 - 32/17 * half, Q2.29 */
    for (i = 0; i < 3; i++) {
        x = x + tc_sm_shl_sat(tc_sm_mulh(x, (1 << 29) - tc_sm_mulh(half, x)), 2);
    }
    return tc_sm_shl_sat(x, 1);
}

static void tc_softmax_fixed(const tc_softmax_params *p, int32_t depth, const int8_t *in,
                             int8_t *out)
{
    int32_t c, top = -128, sum = 0, scale, bits_over_unit;
    for (c = 0; c < depth; c++) {
        top = in[c] > top ? in[c] : top;
    }
    for (c = 0; c < depth; c++) {
        const int32_t diff = in[c] - top;
        if (diff >= p->diff_min) {
            const int32_t scaled = tc_sm_mulh(
                (int32_t)((uint32_t)diff << p->input_left_shift), p->input_multiplier);
            sum += tc_sm_rdbp(tc_sm_exp_on_negative(scaled), 12);
        }
    }
    scale = tc_sm_reciprocal(sum, &bits_over_unit);
    for (c = 0; c < depth; c++) {
        const int32_t diff = in[c] - top;
        int32_t value = -128;
        if (diff >= p->diff_min) {
            const int32_t scaled = tc_sm_mulh(
                (int32_t)((uint32_t)diff << p->input_left_shift), p->input_multiplier);
            value = tc_sm_rdbp(tc_sm_mulh(scale, tc_sm_exp_on_negative(scaled)),
                               bits_over_unit + 31 - 8) - 128;
        }
        out[c] = tc_clamp_s8(value, -128, 127);
    }
}

#if TC_ENABLE_FLOAT_REQUANT
static void tc_softmax_float(const float *table, int32_t depth, const int8_t *in, int8_t *out)
{
    int32_t c, top = -128;
    float sum = 0.0f;
    for (c = 0; c < depth; c++) {
        top = in[c] > top ? in[c] : top;
    }
    for (c = 0; c < depth; c++) {
        sum += table[top - in[c]];
    }
    for (c = 0; c < depth; c++) {
        volatile float scaled = table[top - in[c]] * 256.0f; /* float32 steps, as runtime/ */
        volatile float quotient = scaled / sum;
        out[c] = tc_clamp_s8(tc_round_half_even(quotient) - 128, -128, 127);
    }
}
#endif

int tc_softmax(const tc_softmax_params *params, int32_t rows, int32_t depth, const int8_t *input,
               int8_t *output)
{
    int32_t r;
    if (depth < 2) {
        return TC_ERR_BAD_ARG;
    }
#if TC_ENABLE_FLOAT_REQUANT
    if (params->mode == TC_RQ_FLOAT) {
        for (r = 0; r < rows; r++) {
            tc_softmax_float(params->exp_table, depth, input + r * depth, output + r * depth);
        }
        return TC_OK;
    }
#else
    if (params->mode == TC_RQ_FLOAT) {
        return TC_ERR_UNSUPPORTED;
    }
#endif
    for (r = 0; r < rows; r++) {
        tc_softmax_fixed(params, depth, input + r * depth, output + r * depth);
    }
    return TC_OK;
}
