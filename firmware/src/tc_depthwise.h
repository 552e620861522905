/* The depthwise kernel's two 3x3 paths, shared by tc_depthwise_conv2d.c (the dispatcher and
 * the column kernel) and tc_depthwise_inplace.c (the kernel without scratch), and their
 * per-channel constants. */
#ifndef TC_DEPTHWISE_H
#define TC_DEPTHWISE_H

#include <stddef.h>

#include "tc_kernels.h"

/* A 3x3 layer without horizontal dilation, read in place: no scratch. */
int tc_depthwise_3x3_inplace(const tc_conv_params *p, const tc_requant_params *rq,
                             const tc_dims *in_dims, const int8_t *input,
                             const tc_filter_dims *filter, const int8_t *weights,
                             const int32_t *bias, const tc_dims *out_dims, int8_t *output);

/* Flags of a depthwise channel (tc_requant_fast.fast): the fast requantization holds (and the
 * multiplier is >= 0, as the Cortex-M4 store's sign term needs), and every output before the
 * clamp lies in int16 (the Cortex-M4 fused store clamps halfwords). */
#define TC_DW_FAST 1
#define TC_DW_FAST_HALVES 2

/* Channel m's bias: bias[m], or, with export's folded bias only (bias NULL), that plus the
 * zero-point term of its taps: the bias again, wrapped like int32 as export folded it. */
static inline int32_t tc_dw_bias(const tc_requant_params *rq, int32_t m, const int8_t *w,
                                 int32_t taps, const int32_t *bias, int32_t zp)
{
    uint32_t b;
    int32_t k;
    if (bias != NULL || rq->folded_bias == NULL) {
        return bias ? bias[m] : 0;
    }
    b = (uint32_t)rq->folded_bias[m];
    for (k = 0; k < taps; k++) {
        b += (uint32_t)zp * (uint32_t)(int32_t)w[k];
    }
    return (int32_t)b;
}

/* Channel m's flags from export's rq->fast: two bits a channel, sixteen channels an int32 word
 * (export/conv_constants.py depthwise_flags). */
static inline int32_t tc_dw_flags(const tc_requant_params *rq, int32_t m)
{
    const int32_t *words = (const int32_t *)(const void *)rq->fast;
    return (int32_t)(((uint32_t)words[m >> 4] >> ((m & 15) * 2)) & 3u);
}

/* Channel m's fast requantization for a caller that passes no flags, derived from the bound
 * |bias| + 255 * sum |w| over its nine weights (out of line: the kernels' loops keep their
 * inlining). */
static TC_NOINLINE tc_requant_fast tc_dw_fast_derived(const tc_requant_params *rq, int32_t m,
                                                      const int8_t *w, const int32_t *bias,
                                                      int32_t input_zp, int32_t output_zp)
{
    tc_requant_fast f;
    const int32_t b = tc_dw_bias(rq, m, w, 9, bias, input_zp);
    int64_t bound = b < 0 ? -(int64_t)b : b, high;
    int32_t k;
    for (k = 0; k < 9; k++) {
        bound += 255 * (w[k] < 0 ? -w[k] : w[k]);
    }
    f = tc_requant_fast_prepare(rq, m, bound, output_zp);
    if (f.multiplier < 0) {
        f.fast = 0;
    }
    /* |high multiply of 2 * acc| <= high, then the offset's half and the sign, the shift and
     * the zero point */
    high = ((bound * f.multiplier) >> 31) + 1;
    if (f.fast && ((high + ((int64_t)1 << (f.right - 1)) + 1) >> f.right) +
                          (output_zp < 0 ? -output_zp : output_zp) + 1 < 32768) {
        f.fast |= TC_DW_FAST_HALVES;
    }
    return f;
}

/* Channel m's fast requantization: the flags from export (rq->fast) and the rest from the
 * layer's multiplier and shift, or, for a caller that passes none, tc_dw_fast_derived. */
static inline tc_requant_fast tc_dw_fast(const tc_requant_params *rq, int32_t m,
                                         const int8_t *w, const int32_t *bias, int32_t input_zp,
                                         int32_t output_zp)
{
    tc_requant_fast f;
    if (rq->fast == NULL) {
        return tc_dw_fast_derived(rq, m, w, bias, input_zp, output_zp);
    }
    f.fast = tc_dw_flags(rq, m);
    f.multiplier = f.fast ? rq->multiplier[m] : 0;
    f.right = f.fast ? -rq->shift[m] : 1;
    f.offset = (int32_t)(((uint32_t)1 << (f.right - 1)) +
                         (uint32_t)output_zp * ((uint32_t)1 << f.right));
    return f;
}

/* Channel m's bias with the input zero point folded in, bias - zp * sum w over its nine
 * weights, wrapped like int32: export's (rq->folded_bias) or derived here. */
static inline int32_t tc_dw_folded_bias(const tc_requant_params *rq, int32_t m,
                                        const int8_t *w, const int32_t *bias, int32_t zp)
{
    uint32_t b = bias ? (uint32_t)bias[m] : 0u;
    int32_t k;
    if (rq->folded_bias != NULL) {
        return rq->folded_bias[m];
    }
    for (k = 0; k < 9; k++) {
        b -= (uint32_t)zp * (uint32_t)(int32_t)w[k];
    }
    return (int32_t)b;
}

#endif
