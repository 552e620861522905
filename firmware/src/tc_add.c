/* add: fixed mode is TFLite's int8 add, float mode onnxruntime's QLinearAdd. */
#include "tc_add_fixed.h"

#if TC_ENABLE_FLOAT_REQUANT
/* float32 a * b + c with a single rounding, like the FMA instruction onnxruntime's kernel uses,
 * without libm (newlib's fmaf rounds twice): the product is exact in double, the double sum is
 * made round-to-odd with its exact error (TwoSum), and a round-to-odd double rounds to float32
 * exactly as the fused operation would. */
static float tc_fma_f32(float a, float b, float c)
{
    const double p = (double)a * (double)b;
    const double cd = (double)c;
    const double s = p + cd;
    const double t = s - p;
    const double err = (p - (s - t)) + (cd - t);
    union {
        double value;
        uint64_t bits;
    } odd; /* C99 allows reading a union member other than the last one written */
    odd.value = s;
    if (err != 0.0 && (odd.bits & 1u) == 0) {
        /* one ulp towards err: magnitude up when err has s's sign, down otherwise */
        if ((err > 0.0) == (s > 0.0)) {
            odd.bits += 1u;
        } else {
            odd.bits -= 1u;
        }
    }
    return (float)odd.value;
}
#endif

int tc_add(const tc_add_params *params, int32_t size, const int8_t *a, const int8_t *b,
           int8_t *output)
{
#if TC_ENABLE_FLOAT_REQUANT
    if (params->mode == TC_RQ_FLOAT) {
        int32_t i;
        const float a_scale = params->scales[0], b_scale = params->scales[1];
        const float offset = params->scales[2];
        for (i = 0; i < size; i++) {
            const float partial = tc_fma_f32((float)b[i], b_scale, offset);
            const int32_t value = tc_round_half_even(tc_fma_f32((float)a[i], a_scale, partial));
            output[i] = tc_clamp_s8(value, params->act_min, params->act_max);
        }
        return TC_OK;
    }
#else
    if (params->mode == TC_RQ_FLOAT) {
        return TC_ERR_UNSUPPORTED;
    }
#endif
    tc_add_fixed(params, size, a, b, 1, output);
    return TC_OK;
}

void tc_add_fixed(const tc_add_params *params, int32_t size, const int8_t *a, const int8_t *b,
                  int32_t b_sign, int8_t *output)
{
    int32_t i;
    for (i = 0; i < size; i++) {
        const int32_t sa = tc_requant_fixed_double(
            (int32_t)((uint32_t)(a[i] - params->a_zero_point) << params->left_shift),
            params->a_multiplier, params->a_shift);
        const int32_t sb = tc_requant_fixed_double(
            (int32_t)((uint32_t)(b[i] - params->b_zero_point) << params->left_shift),
            params->b_multiplier, params->b_shift);
        const int32_t value =
            tc_requant_fixed_double(sa + b_sign * sb, params->multiplier, params->shift) +
            params->output_zero_point;
        output[i] = tc_clamp_s8(value, params->act_min, params->act_max);
    }
}
