/* Helium (MVE, Cortex-M55): TC_USE_MVE and the shared vector helpers of the *_mve.c kernels.
 *
 * A public kernel whose MVE version exists starts with
 *     #if TC_USE_MVE
 *         return tc_x_mve(...);
 *     #endif
 * so on the M55 the scalar body is dead code and drops out of the image. The MVE kernels read
 * int8 inputs and weights as they are (VMLADAVA.S8: 16 MACs per instruction) and make up for
 * the input zero point with the weights' sums (VADDVA), as CMSIS-NN's MVE kernels do; fixed
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

/* tc_requant_fixed_double on four lanes, each with its own multiplier and shift. VQRDMULH is
 * TFLite's SaturatingRoundingDoublingHighMul (INT32_MIN * INT32_MIN saturating included);
 * VRSHL by -right rounds half up, so a negative value is first lowered by one (saturating:
 * INT32_MIN needs no rounding), which makes it round half away from zero like
 * RoundingDivideByPOT. -right has its sign bit set exactly when there is a right shift. */
TC_INLINE int32x4_t tc_mve_requant_double(int32x4_t acc, int32x4_t multiplier, int32x4_t shift)
{
    const int32x4_t zero = vdupq_n_s32(0);
    const int32x4_t neg_right = vminq_s32(shift, zero);
    int32x4_t v = vqrdmulhq_s32(vshlq_s32(acc, vmaxq_s32(shift, zero)), multiplier);
    v = vqaddq_s32(v, vshrq_n_s32(vandq_s32(v, neg_right), 31));
    return vrshlq_s32(v, neg_right);
}

/* Requantize four accumulators of the channels whose constants are in multiplier / shift
 * (fixed double rounding; vectors as tc_mve_requant_double takes them), add the output zero
 * point and clamp. */
TC_INLINE int32x4_t tc_mve_finish(int32x4_t acc, int32x4_t multiplier, int32x4_t shift,
                                  int32_t output_zero_point, int32_t lo, int32_t hi)
{
    const int32x4_t v = vaddq_n_s32(tc_mve_requant_double(acc, multiplier, shift),
                                    output_zero_point);
    return vminq_s32(vmaxq_s32(v, vdupq_n_s32(lo)), vdupq_n_s32(hi));
}
#endif

#endif
