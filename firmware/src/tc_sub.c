/* sub: fixed mode is TFLite's int8 SUB (a - rq(b) with add's constants), float mode what
 * onnxruntime runs for a quantized Sub: DequantizeLinear, float32 Sub, QuantizeLinear. */
#include "tc_add_fixed.h"

int tc_sub(const tc_add_params *params, int32_t size, const int8_t *a, const int8_t *b,
           int8_t *output)
{
#if TC_ENABLE_FLOAT_REQUANT
    if (params->mode == TC_RQ_FLOAT) {
        int32_t i;
        const float a_scale = params->scales[0], b_scale = params->scales[1];
        const float y_scale = params->scales[2];
        const float low = (float)(-128 - params->output_zero_point);
        const float high = (float)(127 - params->output_zero_point);
        for (i = 0; i < size; i++) {
            const float fa = (float)(a[i] - params->a_zero_point) * a_scale;
            const float fb = (float)(b[i] - params->b_zero_point) * b_scale;
            const float diff = fa - fb;
            float q = diff / y_scale;
            q = q < low ? low : (q > high ? high : q);
            output[i] = tc_clamp_s8(tc_round_half_even(q) + params->output_zero_point,
                                    params->act_min, params->act_max);
        }
        return TC_OK;
    }
#else
    if (params->mode == TC_RQ_FLOAT) {
        return TC_ERR_UNSUPPORTED;
    }
#endif
    tc_add_fixed(params, size, a, b, -1, output);
    return TC_OK;
}
