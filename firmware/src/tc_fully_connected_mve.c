/* fully_connected on Helium: the raw int8 input times two weight rows at a time (VMLADAVA.S8,
 * 16 MACs per instruction), each row's sum (VADDVA) times the input zero point subtracted,
 * four channels requantized together. No scratch: every weight is read once, so the row sums
 * cost what a precomputed copy would. */
#include <stddef.h>

#include "tc_mve.h"

#if TC_USE_MVE

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif

/* x . w0 and x . w1 over depth values, less input_zero_point times each row's sum. */
static void tc_mve_dot2(const int8_t *x, const int8_t *w0, const int8_t *w1, int32_t depth,
                        int32_t input_zero_point, int32_t *acc)
{
    int32_t a0 = 0, a1 = 0, s0 = 0, s1 = 0;
    for (; depth >= 16; depth -= 16) {
        const int8x16_t vx = vldrbq_s8(x);
        const int8x16_t v0 = vldrbq_s8(w0);
        const int8x16_t v1 = vldrbq_s8(w1);
        a0 = vmladavaq_s8(a0, vx, v0);
        s0 = vaddvaq_s8(s0, v0);
        a1 = vmladavaq_s8(a1, vx, v1);
        s1 = vaddvaq_s8(s1, v1);
        x += 16;
        w0 += 16;
        w1 += 16;
    }
    if (depth > 0) {
        const mve_pred16_t p = vctp8q((uint32_t)depth);
        const int8x16_t vx = vldrbq_z_s8(x, p);
        const int8x16_t v0 = vldrbq_z_s8(w0, p);
        const int8x16_t v1 = vldrbq_z_s8(w1, p);
        a0 = vmladavaq_s8(a0, vx, v0);
        s0 = vaddvaq_s8(s0, v0);
        a1 = vmladavaq_s8(a1, vx, v1);
        s1 = vaddvaq_s8(s1, v1);
    }
    acc[0] = (int32_t)((uint32_t)a0 - (uint32_t)input_zero_point * (uint32_t)s0);
    acc[1] = (int32_t)((uint32_t)a1 - (uint32_t)input_zero_point * (uint32_t)s1);
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
