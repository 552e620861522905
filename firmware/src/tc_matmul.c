/* Internal dot-product engine for conv2d and fully_connected (see tc_matmul.h). */
#include "tc_matmul.h"

/* The inner loops are the whole cost of a convolution: optimize them for speed even in an -Os
 * image (-Os spills the four accumulators of the 2x2 block to the stack). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define TC_USE_DSP 1
#else
#define TC_USE_DSP 0
#endif

void tc_column_finish(int16_t *col, int32_t k)
{
#if TC_USE_DSP
    int32_t i;
    for (i = 0; i + 4 <= k; i += 4) { /* x0 x1 x2 x3 -> x0 x2 x1 x3 */
        const int16_t t = col[i + 1];
        col[i + 1] = col[i + 2];
        col[i + 2] = t;
    }
#else
    (void)col;
    (void)k;
#endif
}

static inline int8_t tc_finish(int32_t acc, const tc_matmul_output *o, int32_t row)
{
    const int32_t ch = o->first_channel + row;
    return tc_clamp_s8(tc_requantize(acc, o->rq, ch) + o->output_zero_point, o->act_min,
                       o->act_max);
}

#if TC_USE_DSP
static inline int32_t tc_read_s32(const void *p)
{
    int32_t v;
    __builtin_memcpy(&v, p, sizeof v); /* one LDR: Cortex-M4 allows unaligned word loads */
    return v;
}

static inline int32_t tc_ror8(int32_t v)
{
    return (int32_t)(((uint32_t)v >> 8) | ((uint32_t)v << 24));
}
#endif

/* Two rows times two columns: acc[row][col]. */
static void tc_dot_2x2(const int8_t *w0, const int8_t *w1, const int16_t *c0, const int16_t *c1,
                       int32_t k, int32_t acc[4])
{
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    int32_t i = 0;
#if TC_USE_DSP
    for (; i + 4 <= k; i += 4) {
        const int32_t wa = tc_read_s32(w0 + i), wb = tc_read_s32(w1 + i);
        const int32_t wa02 = __sxtb16(wa), wa13 = __sxtb16(tc_ror8(wa));
        const int32_t wb02 = __sxtb16(wb), wb13 = __sxtb16(tc_ror8(wb));
        const int32_t x02 = tc_read_s32(c0 + i), x13 = tc_read_s32(c0 + i + 2);
        const int32_t y02 = tc_read_s32(c1 + i), y13 = tc_read_s32(c1 + i + 2);
        a00 = __smlad(wa02, x02, a00);
        a00 = __smlad(wa13, x13, a00);
        a01 = __smlad(wa02, y02, a01);
        a01 = __smlad(wa13, y13, a01);
        a10 = __smlad(wb02, x02, a10);
        a10 = __smlad(wb13, x13, a10);
        a11 = __smlad(wb02, y02, a11);
        a11 = __smlad(wb13, y13, a11);
    }
#endif
    for (; i < k; i++) {
        const int32_t x = c0[i], y = c1[i], a = w0[i], b = w1[i];
        a00 += a * x;
        a01 += a * y;
        a10 += b * x;
        a11 += b * y;
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

/* Two rows times one column: acc[row]. */
static void tc_dot_2x1(const int8_t *w0, const int8_t *w1, const int16_t *c0, int32_t k,
                       int32_t acc[2])
{
    int32_t a0 = acc[0], a1 = acc[1];
    int32_t i = 0;
#if TC_USE_DSP
    for (; i + 4 <= k; i += 4) {
        const int32_t wa = tc_read_s32(w0 + i), wb = tc_read_s32(w1 + i);
        const int32_t x02 = tc_read_s32(c0 + i), x13 = tc_read_s32(c0 + i + 2);
        a0 = __smlad(__sxtb16(wa), x02, a0);
        a0 = __smlad(__sxtb16(tc_ror8(wa)), x13, a0);
        a1 = __smlad(__sxtb16(wb), x02, a1);
        a1 = __smlad(__sxtb16(tc_ror8(wb)), x13, a1);
    }
#endif
    for (; i < k; i++) {
        const int32_t x = c0[i];
        a0 += w0[i] * x;
        a1 += w1[i] * x;
    }
    acc[0] = a0;
    acc[1] = a1;
}

/* One row times one column. */
static int32_t tc_dot_1x1(const int8_t *w0, const int16_t *c0, int32_t k, int32_t acc)
{
    int32_t i = 0;
#if TC_USE_DSP
    for (; i + 4 <= k; i += 4) {
        const int32_t wa = tc_read_s32(w0 + i);
        acc = __smlad(__sxtb16(wa), tc_read_s32(c0 + i), acc);
        acc = __smlad(__sxtb16(tc_ror8(wa)), tc_read_s32(c0 + i + 2), acc);
    }
#endif
    for (; i < k; i++) {
        acc += w0[i] * c0[i];
    }
    return acc;
}

void tc_matmul(const int8_t *weights, int32_t rows, int32_t k, const int16_t *col0,
               const int16_t *col1, const tc_matmul_output *o, int8_t *out0, int8_t *out1)
{
    const int32_t *bias = o->bias ? o->bias + o->first_channel : 0;
    int32_t r = 0;
    for (; r + 2 <= rows; r += 2) {
        const int8_t *w0 = weights + r * k;
        const int32_t b0 = bias ? bias[r] : 0, b1 = bias ? bias[r + 1] : 0;
        if (col1) {
            int32_t acc[4];
            acc[0] = b0;
            acc[1] = b0;
            acc[2] = b1;
            acc[3] = b1;
            tc_dot_2x2(w0, w0 + k, col0, col1, k, acc);
            out0[r] = tc_finish(acc[0], o, r);
            out1[r] = tc_finish(acc[1], o, r);
            out0[r + 1] = tc_finish(acc[2], o, r + 1);
            out1[r + 1] = tc_finish(acc[3], o, r + 1);
        } else {
            int32_t acc[2];
            acc[0] = b0;
            acc[1] = b1;
            tc_dot_2x1(w0, w0 + k, col0, k, acc);
            out0[r] = tc_finish(acc[0], o, r);
            out0[r + 1] = tc_finish(acc[1], o, r + 1);
        }
    }
    if (r < rows) {
        const int8_t *w0 = weights + r * k;
        const int32_t b0 = bias ? bias[r] : 0;
        out0[r] = tc_finish(tc_dot_1x1(w0, col0, k, b0), o, r);
        if (col1) {
            out1[r] = tc_finish(tc_dot_1x1(w0, col1, k, b0), o, r);
        }
    }
}
