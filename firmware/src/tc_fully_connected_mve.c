/* fully_connected on Helium: the raw int8 input times two weight rows at a time (VMLADAVA.S8,
 * 16 MACs per instruction), four channels requantized together. No scratch. Export folds the
 * input zero point into the bias; a direct caller with another zero point gets each row's sum
 * (VADDVA) times it subtracted, at the cost of a second pass over the weights. */
#include <stddef.h>

#include "tc_mve.h"

#if TC_USE_MVE

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif

/* The sum of a row of depth weights: only for a caller whose input zero point is not 0 (export
 * folds it into the bias, so a model's layers never need it). */
static int32_t tc_mve_row_sum(const int8_t *w, int32_t depth)
{
    int32_t sum = 0;
    for (; depth > 0; depth -= 16, w += 16) {
        sum = vaddvaq_s8(sum, vldrbq_z_s8(w, vctp8q((uint32_t)depth)));
    }
    return sum;
}

/* x . w0 and x . w1 over depth values, less input_zero_point times each row's sum. */
static void tc_mve_dot2(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t depth,
                        int32_t input_zero_point, int32_t *acc)
{
    const int8_t *const row0 = w0, *const row1 = w1;
    const int32_t n = depth;
    int32_t a0 = 0, a1 = 0;
    for (; depth >= 16; depth -= 16) {
        const int8x16_t vx = vldrbq_s8(x);
        a0 = vmladavaq_s8(a0, vx, vldrbq_s8(w0));
        a1 = vmladavaq_s8(a1, vx, vldrbq_s8(w1));
        x += 16;
        w0 += 16;
        w1 += 16;
    }
    if (depth > 0) {
        const mve_pred16_t p = vctp8q((uint32_t)depth);
        const int8x16_t vx = vldrbq_z_s8(x, p);
        a0 = vmladavaq_s8(a0, vx, vldrbq_z_s8(w0, p));
        a1 = vmladavaq_s8(a1, vx, vldrbq_z_s8(w1, p));
    }
    if (input_zero_point != 0) {
        const uint32_t zp = (uint32_t)input_zero_point;
        a0 = (int32_t)((uint32_t)a0 - zp * (uint32_t)tc_mve_row_sum(row0, n));
        a1 = (int32_t)((uint32_t)a1 - zp * (uint32_t)tc_mve_row_sum(row1, n));
    }
    acc[0] = a0;
    acc[1] = a1;
}

int tc_fully_connected_mve(const tc_context *ctx, const tc_fc_params *params,
                           const tc_requant_params *rq, int32_t depth, const int8_t *input,
                           int32_t out_channels, const int8_t *weights, const int32_t *bias,
                           int8_t *output)
{
    const int32_t zp = params->input_zero_point, ozp = params->output_zero_point;
    int32_t acc[4] = {0, 0, 0, 0};
    int32_t r, q;
    (void)ctx; /* no scratch */
    if (depth < 1 || out_channels < 1) {
        return TC_ERR_BAD_ARG;
    }
    for (r = 0; r < out_channels; r += 4) {
        const int32_t n = out_channels - r < 4 ? out_channels - r : 4;
        const mve_pred16_t p = vctp32q((uint32_t)n);
        int32x4_t v;
        for (q = 0; q < n; q += 2) {
            const int8_t *w0 = weights + (r + q) * depth;
            tc_mve_dot2(input, w0, q + 1 < n ? w0 + depth : w0, depth, zp, acc + q);
        }
        v = vldrwq_s32(acc);
        if (bias != NULL) {
            v = vaddq_s32(v, vldrwq_z_s32(bias + r, p));
        }
        if (rq->mode == TC_RQ_FIXED_DOUBLE) {
            const tc_mve_requant c = tc_mve_requant_load(rq, r, p);
            v = tc_mve_requant_double(v, &c, ozp, params->act_min, params->act_max);
            vstrbq_p_s32(output + r, v, p);
            continue;
        }
        vstrwq_s32(acc, v);
        for (q = 0; q < n; q++) {
            output[r + q] = tc_clamp_s8(tc_requantize(acc[q], rq, r + q) + ozp,
                                        params->act_min, params->act_max);
        }
    }
    return TC_OK;
}

#endif
