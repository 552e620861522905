/* Internal: the dot-product engine shared by conv2d and fully_connected.
 *
 * Inputs arrive as an "im2col" column of int16 values (x - input_zero_point), so padding taps
 * are plain zeros and the inner loop is nothing but multiply-accumulates.
 *
 * conv2d computes two output pixels at a time from a "pair column": the two pixels' columns of
 * k values interleaved in groups of four, [A0..A3 B0..B3 A4..A7 B4..B7 ...], then the k % 4
 * leftover values of A, then those of B (2 * k int16 in all, 4-byte aligned). Two output
 * channels times two pixels are computed together, so every load feeds two MACs, and one
 * load-multiple brings in a group of both pixels. With the DSP extension (Cortex-M4) each group
 * is stored pair-swapped (x0 x2 x1 x3), so that SXTB16 of four int8 weights, and of the same
 * word rotated by 8, line up with it for SMLAD, as CMSIS-NN does.
 *
 * fully_connected needs no column: tc_matmul_vector multiplies its raw int8 inputs. */
#ifndef TC_MATMUL_H
#define TC_MATMUL_H

#include <stdint.h>

#include "tc_requant.h"

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define TC_USE_DSP 1
#else
#define TC_USE_DSP 0
#endif

#if TC_USE_DSP
TC_INLINE int32_t tc_read_s32(const void *p)
{
    int32_t v;
    __builtin_memcpy(&v, p, sizeof v); /* one LDR: Cortex-M4 allows unaligned word loads */
    return v;
}

TC_INLINE void tc_write_s32(void *p, int32_t v)
{
    __builtin_memcpy(p, &v, sizeof v);
}

/* SXTB16 of v rotated right by 8 (bytes 1 and 3), one instruction: gcc does not fold the
 * rotation into __sxtb16 by itself. */
TC_INLINE int32_t tc_sxtb16_ror8(int32_t v)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}
#endif

/* Where the output of a block of channels goes and how it is finished. */
typedef struct {
    const int32_t *bias;         /* may be NULL; indexed from first_channel */
    const tc_requant_params *rq; /* indexed from first_channel */
    int32_t first_channel;       /* model channel index of weight row 0 */
    int32_t output_zero_point;
    int32_t act_min, act_max;
    const tc_requant_fast *fast; /* NULL, or per channel, indexed from first_channel */
} tc_matmul_output;

/* Write n values src[i] - zero_point as elements j .. j + n - 1 of pixel 0 or 1 of a pair
 * column of k values; src == NULL writes zeros (padding). */
void tc_pair_fill(int16_t *col, int32_t k, int32_t pixel, int32_t j, const int8_t *src,
                  int32_t n, int32_t zero_point);

/* Whole groups of four: groups * 4 values src[i] - zero_point (src == NULL: the value pad)
 * into pixel `pixel` of a pair column from element j on, for j and k multiples of four. The
 * conv's im2col takes this when its channel count is a multiple of four: no per-value position
 * arithmetic; with zero_point 0 (the zero point folded into the bias, pad = the zero point)
 * only sign extension is left. */
TC_INLINE void tc_pair_fill_groups(int16_t *col, int32_t pixel, int32_t j, const int8_t *src,
                                   int32_t groups, int32_t zero_point, int32_t pad)
{
    int16_t *dst = col + 2 * j + 4 * pixel;
    int16_t *const end = dst + 8 * groups;
    if (src == NULL) {
        for (; dst != end; dst += 8) {
            dst[0] = dst[1] = dst[2] = dst[3] = (int16_t)pad;
        }
        return;
    }
#if TC_USE_DSP
    if (zero_point == 0) {
        for (; dst != end; dst += 8, src += 4) {
            const int32_t v = tc_read_s32(src);
            tc_write_s32(dst, __sxtb16(v));
            tc_write_s32(dst + 2, tc_sxtb16_ror8(v));
        }
    } else {
        const int32_t zp2 = (int32_t)(((uint32_t)zero_point & 0xffffu) * 0x10001u);
        for (; dst != end; dst += 8, src += 4) {
            const int32_t v = tc_read_s32(src);
            tc_write_s32(dst, __ssub16(__sxtb16(v), zp2));
            tc_write_s32(dst + 2, __ssub16(tc_sxtb16_ror8(v), zp2));
        }
    }
#else
    for (; dst != end; dst += 8, src += 4) {
        dst[0] = (int16_t)(src[0] - zero_point);
        dst[1] = (int16_t)(src[1] - zero_point);
        dst[2] = (int16_t)(src[2] - zero_point);
        dst[3] = (int16_t)(src[3] - zero_point);
    }
#endif
}

/* rows x k weights (row r at weights + r * k) times the pair column: writes rows int8 outputs
 * to out0 (pixel 0) and out1 (pixel 1; NULL when only pixel 0 is wanted). */
void tc_matmul_pair(const int8_t *weights, int32_t rows, int32_t k, const int16_t *col,
                    const tc_matmul_output *o, int8_t *out0, int8_t *out1);

/* tc_matmul_pair without a column: the k raw int8 inputs of pixel 0 at a and of pixel 1 at b
 * (any alignment; the input zero point folded into the bias); w16 as tc_matmul_pair_s16's, or
 * NULL. On the Cortex-M3 as fast as a column (LDRSB where the column loop has LDRSH), so a
 * 1x1 conv takes it for every pixel (TC_PAIR_RAW_FAST); elsewhere slower than a column, and
 * taken by a 1x1 conv's last pixels when there is no room for one. */
void tc_matmul_pair_raw(const int8_t *weights, const int16_t *w16, int32_t rows, int32_t k,
                        const int8_t *a, const int8_t *b, const tc_matmul_output *o,
                        int8_t *out0, int8_t *out1);
#if !TC_USE_DSP && defined(__thumb2__)
#define TC_PAIR_RAW_FAST 1
#else
#define TC_PAIR_RAW_FAST 0
#endif

#if TC_USE_DSP && defined(__thumb2__)
#define TC_HAVE_MATMUL_S16 1
/* tc_matmul_pair with the row pairs read from w16, the first rows & ~1 rows of the weights as
 * int16, per row pair and group of four: row 2i's four, row 2i + 1's four, each pair-swapped
 * like the column ((rows & ~1) * k int16, 4-byte aligned; export writes them,
 * export/conv_constants.py): no SXTB16 in the dot loop. An odd last row is still read from
 * weights; k a multiple of four. */
void tc_matmul_pair_s16(const int8_t *weights, const int16_t *w16, int32_t rows, int32_t k,
                        const int16_t *col, const tc_matmul_output *o, int8_t *out0,
                        int8_t *out1);
#else
#define TC_HAVE_MATMUL_S16 0
#endif

/* Requantize (tc_requant_double_fast), clamp to [lo, hi] and store rows 0, 1, ... of acc, two
 * pixels a row (acc[2r] to out0[r], acc[2r + 1] to first[r], first's store made first so that
 * first == out0 keeps pixel 0) while f[r].fast; returns how many rows were stored, <= n.
 * Assembly on Cortex-M: the per-output cost of every conv with fast channels. */
int32_t tc_store_fast_rows(const int32_t *acc, const tc_requant_fast *f, int32_t n, int32_t lo,
                           int32_t hi, int8_t *first, int8_t *out0);

/* rows x k int8 weights (row r at weights + r * k, any alignment) times k int8 inputs x (any
 * alignment): the accumulator of row r starts at bias - input_zero_point * sum of row r (the
 * row sums are only computed when input_zero_point != 0; export folds it into the bias). No
 * scratch. Writes rows int8 outputs to out. */
void tc_matmul_vector(const int8_t *weights, int32_t rows, int32_t k, const int8_t *x,
                      int32_t input_zero_point, const tc_matmul_output *o, int8_t *out);

#endif
