/* mul: fixed mode is TFLite's int8 MUL, float mode onnxruntime's QLinearMul (docs/ARITHMETIC.md).
 * b is either as large as a, one value per channel (b_size == channels) or one value. */
#include "tc_kernels.h"

int tc_mul(const tc_mul_params *params, int32_t size, int32_t channels, const int8_t *a,
           const int8_t *b, int32_t b_size, int8_t *output)
{
    int32_t i;
    if (channels < 1 || (b_size != size && b_size != channels && b_size != 1)) {
        return TC_ERR_BAD_ARG;
    }
#if !TC_ENABLE_FLOAT_REQUANT
    if (params->mode == TC_RQ_FLOAT) {
        return TC_ERR_UNSUPPORTED;
    }
#endif
    for (i = 0; i < size; i++) {
        const int32_t j = b_size == size ? i : (b_size == 1 ? 0 : i % channels);
        const int32_t prod = (a[i] - params->a_zero_point) * (b[j] - params->b_zero_point);
        int32_t value;
#if TC_ENABLE_FLOAT_REQUANT
        if (params->mode == TC_RQ_FLOAT) {
            const float scaled = (float)prod * params->scales[0];
            const float shifted = scaled + (float)params->output_zero_point;
            value = tc_round_half_even(shifted);
        } else
#endif
        {
            value = tc_requant_fixed_double(prod, params->multiplier, params->shift) +
                    params->output_zero_point;
        }
        output[i] = tc_clamp_s8(value, params->act_min, params->act_max);
    }
    return TC_OK;
}
