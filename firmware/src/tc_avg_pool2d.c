/* avg_pool2d: fixed mode is TFLite's int8 average pool, float mode onnxruntime's
 * QLinearAveragePool (which runs a whole-image window without padding as a global pool). */
#include "tc_kernels.h"

/* Taps of a window starting at start that lie before end (the end of the counted padding). */
static int32_t tc_counted(int32_t start, int32_t taps, int32_t end)
{
    return (start + taps < end ? start + taps : end) - start;
}

#if TC_ENABLE_FLOAT_REQUANT
/* onnxruntime: sum of x_scale * (x - zp) in float32, taps in row-major order (a padding tap adds
 * +0.0 and changes nothing), divided by the count, by y_scale, plus y_zp, rounded half even. */
static int32_t tc_avg_float(const tc_mean_params *mean, const tc_dims *in, const int8_t *input,
                            int32_t base, int32_t ky0, int32_t ky1, int32_t kx0, int32_t kx1,
                            int32_t count)
{
    const float x_scale = mean->scales[0], y_scale = mean->scales[1];
    const float zp = (float)mean->input_zero_point;
    float total = 0.0f, mean_value;
    int32_t ky, kx;
    for (ky = ky0; ky < ky1; ky++) {
        for (kx = kx0; kx < kx1; kx++) {
            total += x_scale * ((float)input[base + (ky * in->w + kx) * in->c] - zp);
        }
    }
    mean_value = total / (float)count;
    return tc_round_half_even(mean_value / y_scale + (float)mean->output_zero_point);
}
#endif

int tc_avg_pool2d(const tc_pool_params *params, const tc_mean_params *mean,
                  const tc_dims *in_dims, const int8_t *input, const tc_dims *out_dims,
                  int8_t *output)
{
    const int32_t channels = in_dims->c;
    const int32_t rows_end = in_dims->h + params->pad_bottom - params->ceil_pad_bottom;
    const int32_t cols_end = in_dims->w + params->pad_right - params->ceil_pad_right;
    int32_t oy, ox, c;
    if (out_dims->c != channels || params->stride_h < 1 || params->stride_w < 1) {
        return TC_ERR_BAD_ARG;
    }
#if TC_ENABLE_FLOAT_REQUANT
    if (mean->mode == TC_RQ_FLOAT && params->kernel_h == in_dims->h &&
        params->kernel_w == in_dims->w && params->pad_top == 0 && params->pad_left == 0 &&
        params->pad_bottom == 0 && params->pad_right == 0) {
        tc_mean_params global = *mean;
        global.scales = mean->scales + 2;
        return tc_global_avg_pool(&global, params->act_min, params->act_max, in_dims, input,
                                  output);
    }
#else
    if (mean->mode == TC_RQ_FLOAT) {
        return TC_ERR_UNSUPPORTED;
    }
#endif
    for (oy = 0; oy < out_dims->h; oy++) {
        const int32_t y0 = oy * params->stride_h - params->pad_top;
        int32_t ky0, ky1;
        tc_pool_window(y0, params->kernel_h, in_dims->h, &ky0, &ky1);
        for (ox = 0; ox < out_dims->w; ox++) {
            const int32_t x0 = ox * params->stride_w - params->pad_left;
            int8_t *out = output + (oy * out_dims->w + ox) * channels;
            int32_t kx0, kx1, valid, count;
            tc_pool_window(x0, params->kernel_w, in_dims->w, &kx0, &kx1);
            valid = (ky1 - ky0) * (kx1 - kx0);
            count = params->count_include_pad
                        ? tc_counted(y0, params->kernel_h, rows_end) *
                              tc_counted(x0, params->kernel_w, cols_end)
                        : valid;
            for (c = 0; c < channels; c++) {
                /* index arithmetic: the window corner may lie in the padding */
                const int32_t base = (y0 * in_dims->w + x0) * channels + c;
                int32_t value;
#if TC_ENABLE_FLOAT_REQUANT
                if (mean->mode == TC_RQ_FLOAT) {
                    value = tc_avg_float(mean, in_dims, input, base, ky0, ky1, kx0, kx1, count);
                    out[c] = tc_clamp_s8(value, params->act_min, params->act_max);
                    continue;
                }
#endif
                {
                    const int32_t zp = mean->input_zero_point;
                    int32_t acc = 0, ky, kx;
                    for (ky = ky0; ky < ky1; ky++) {
                        for (kx = kx0; kx < kx1; kx++) {
                            acc += input[base + (ky * in_dims->w + kx) * channels];
                        }
                    }
                    if (mean->rescale) {
                        acc -= valid * zp; /* padding taps contribute 0 after centring */
                        value = tc_rounding_divide(
                                    tc_requant_fixed_double(acc, mean->multiplier, mean->shift),
                                    count) +
                                mean->output_zero_point;
                    } else {
                        if (params->count_include_pad) {
                            acc += (count - valid) * zp; /* counted padding holds the zp */
                        }
                        value = tc_rounding_divide(acc, count);
                    }
                }
                out[c] = tc_clamp_s8(value, params->act_min, params->act_max);
            }
        }
    }
    return TC_OK;
}
