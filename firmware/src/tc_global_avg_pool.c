/* global_avg_pool: fixed mode is TFLite Micro's int8 MEAN over H and W (the division by the
 * count is folded into the multiplier at export), float mode onnxruntime's
 * QLinearGlobalAveragePool. */
#include "tc_kernels.h"

int tc_global_avg_pool(const tc_mean_params *mean, int32_t act_min, int32_t act_max,
                       const tc_dims *in_dims, const int8_t *input, int8_t *output)
{
    const int32_t channels = in_dims->c;
    const int32_t count = in_dims->h * in_dims->w;
    int32_t c, i;
#if !TC_ENABLE_FLOAT_REQUANT
    if (mean->mode == TC_RQ_FLOAT) {
        return TC_ERR_UNSUPPORTED;
    }
#endif
    for (c = 0; c < channels; c++) {
        int32_t acc = 0, value;
        for (i = 0; i < count; i++) {
            acc += input[i * channels + c];
        }
        acc -= mean->input_zero_point * count;
#if TC_ENABLE_FLOAT_REQUANT
        if (mean->mode == TC_RQ_FLOAT) {
            value = tc_round_half_even((float)acc * mean->scales[0]) + mean->output_zero_point;
        } else
#endif
        {
            value = tc_requant_fixed_double(acc, mean->multiplier, mean->shift) +
                    mean->output_zero_point;
        }
        output[c] = tc_clamp_s8(value, act_min, act_max);
    }
    return TC_OK;
}
