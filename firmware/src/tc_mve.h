/* Helium (MVE, Cortex-M55): TC_USE_MVE and the shared vector helpers of the *_mve.c kernels.
 *
 * A public kernel whose MVE version exists starts with
 *     #if TC_USE_MVE
 *         return tc_x_mve(...);
 *     #endif
 * so on the M55 the scalar body is dead code and drops out of the image. The MVE kernels read
 * int8 inputs and weights as they are (VMLADAVA.S8: 16 MACs per instruction); the input zero
 * point is in export's folded bias, or for a direct caller without one made up for with the
 * weights' sums (VADDVA), as CMSIS-NN's MVE kernels do; fixed
 * (double rounding) requantization runs on four lanes at once, float and single rounding
 * stay scalar. */
#ifndef TC_MVE_H
#define TC_MVE_H

#include <stdint.h>

#include "tc_kernels.h"

#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1)
#define TC_USE_MVE 1
#else
#define TC_USE_MVE 0
#endif

#if TC_USE_MVE
#include <arm_mve.h>

int tc_conv2d_mve(const tc_context *ctx, const tc_conv_params *params,
                  const tc_requant_params *rq, const tc_dims *in_dims, const int8_t *input,
                  const tc_filter_dims *filter, const int8_t *weights, const int32_t *bias,
                  const tc_dims *out_dims, int8_t *output);

int tc_fully_connected_mve(const tc_context *ctx, const tc_fc_params *params,
                           const tc_requant_params *rq, int32_t depth, const int8_t *input,
                           int32_t out_channels, const int8_t *weights, const int32_t *bias,
                           int8_t *output);

int tc_max_pool2d_mve(const tc_pool_params *params, const tc_dims *in_dims, const int8_t *input,
                      const tc_dims *out_dims, int8_t *output);

/* One group of four channels' fixed double-rounding constants, the shift split in two. */
typedef struct {
    int32x4_t multiplier;
    int32x4_t left;      /* max(shift, 0) */
    int32x4_t neg_right; /* min(shift, 0) */
} tc_mve_requant;

/* The constants of channels ch .. ch + 3 (lanes outside p read as 0). */
TC_INLINE tc_mve_requant tc_mve_requant_load(const tc_requant_params *rq, int32_t ch,
                                             mve_pred16_t p)
{
    tc_mve_requant c;
    const int32x4_t shift = vldrwq_z_s32(rq->shift + ch, p);
    c.multiplier = vldrwq_z_s32(rq->multiplier + ch, p);
    c.left = vmaxq_s32(shift, vdupq_n_s32(0));
    c.neg_right = vminq_s32(shift, vdupq_n_s32(0));
    return c;
}

/* tc_requant_fixed_double on four lanes, plus the output zero point, clamped to [lo, hi].
 * VQRDMULH is TFLite's SaturatingRoundingDoublingHighMul (INT32_MIN * INT32_MIN saturating
 * included); VRSHL by -right rounds half up, so a negative value is first lowered by one
 * (saturating: INT32_MIN needs no rounding), which makes it round half away from zero like
 * RoundingDivideByPOT. neg_right has its sign bit set exactly when there is a right shift. */
TC_INLINE int32x4_t tc_mve_requant_double(int32x4_t acc, const tc_mve_requant *c,
                                          int32_t output_zero_point, int32_t lo, int32_t hi)
{
    int32x4_t v = vqrdmulhq_s32(vshlq_s32(acc, c->left), c->multiplier);
    v = vqaddq_s32(v, vshrq_n_s32(vandq_s32(v, c->neg_right), 31));
    v = vaddq_n_s32(vrshlq_s32(v, c->neg_right), output_zero_point);
    return vminq_s32(vmaxq_s32(v, vdupq_n_s32(lo)), vdupq_n_s32(hi));
}
#endif

#endif
