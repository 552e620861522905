/* Depthwise conv2d with a channel multiplier: output channel m reads input channel
 * m / multiplier. Each output is a short dot product over the taps that fall inside the image
 * (the window is clipped once per pixel, so the inner loop has no bounds checks). */
#include "tc_kernels.h"

/* hot loop: optimize for speed even in an -Os image */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif

/* First tap index t with 0 <= start + t * step, and one past the last with start + t * step
 * < size, clipped to [0, taps]. */
static void tc_valid_taps(int32_t start, int32_t step, int32_t taps, int32_t size,
                          int32_t *first, int32_t *end)
{
    int32_t lo = 0, hi;
    if (start < 0) {
        lo = (-start + step - 1) / step;
    }
    hi = size - start <= 0 ? 0 : (size - start - 1) / step + 1;
    *first = lo;
    *end = hi < taps ? hi : taps;
}

int tc_depthwise_conv2d(const tc_conv_params *params, const tc_requant_params *rq,
                        const tc_dims *in_dims, const int8_t *input,
                        const tc_filter_dims *filter, const int8_t *weights,
                        const int32_t *bias, const tc_dims *out_dims, int8_t *output)
{
    const int32_t channels = in_dims->c;
    const int32_t taps = filter->kh * filter->kw;
    const int32_t zp = params->input_zero_point;
    int32_t multiplier, oy, ox, m;
    if (channels < 1 || filter->c != 1 || filter->m % channels != 0 ||
        filter->m != out_dims->c || params->stride_h < 1 || params->stride_w < 1 ||
        params->dilation_h < 1 || params->dilation_w < 1) {
        return TC_ERR_BAD_ARG;
    }
    multiplier = filter->m / channels;
    for (oy = 0; oy < out_dims->h; oy++) {
        const int32_t y0 = oy * params->stride_h - params->pad_top;
        int32_t ky0, ky1;
        tc_valid_taps(y0, params->dilation_h, filter->kh, in_dims->h, &ky0, &ky1);
        for (ox = 0; ox < out_dims->w; ox++) {
            const int32_t x0 = ox * params->stride_w - params->pad_left;
            int8_t *out = output + (oy * out_dims->w + ox) * out_dims->c;
            int32_t kx0, kx1;
            tc_valid_taps(x0, params->dilation_w, filter->kw, in_dims->w, &kx0, &kx1);
            for (m = 0; m < filter->m; m++) {
                const int8_t *w = weights + m * taps;
                /* index arithmetic, not pointers: the window corner may lie in the padding */
                const int32_t base = (y0 * in_dims->w + x0) * channels + m / multiplier;
                const int32_t xstep = params->dilation_w * channels;
                const int32_t ystep = params->dilation_h * in_dims->w * channels;
                int32_t acc = bias ? bias[m] : 0, wsum = 0, ky, kx;
                for (ky = ky0; ky < ky1; ky++) {
                    const int8_t *wr = w + ky * filter->kw;
                    const int8_t *xr = input + base + ky * ystep + kx0 * xstep;
                    for (kx = kx0; kx < kx1; kx++, xr += xstep) {
                        const int32_t wv = wr[kx];
                        acc += wv * *xr;
                        wsum += wv;
                    }
                }
                acc -= wsum * zp;
                out[m] = tc_clamp_s8(tc_requantize(acc, rq, m) + params->output_zero_point,
                                     params->act_min, params->act_max);
            }
        }
    }
    return TC_OK;
}
