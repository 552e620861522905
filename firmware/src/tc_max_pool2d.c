/* max_pool2d: taps in the padding are skipped (ONNX MaxPool), then the activation clamp. */
#include "tc_kernels.h"
#include "tc_mve.h"

int tc_max_pool2d(const tc_pool_params *params, const tc_dims *in_dims, const int8_t *input,
                  const tc_dims *out_dims, int8_t *output)
{
    const int32_t channels = in_dims->c;
    int32_t oy, ox, c, ky, kx;
#if TC_USE_MVE
    return tc_max_pool2d_mve(params, in_dims, input, out_dims, output);
#endif
    if (out_dims->c != channels || params->stride_h < 1 || params->stride_w < 1) {
        return TC_ERR_BAD_ARG;
    }
    for (oy = 0; oy < out_dims->h; oy++) {
        const int32_t y0 = oy * params->stride_h - params->pad_top;
        int32_t ky0, ky1;
        tc_pool_window(y0, params->kernel_h, in_dims->h, &ky0, &ky1);
        for (ox = 0; ox < out_dims->w; ox++) {
            const int32_t x0 = ox * params->stride_w - params->pad_left;
            int32_t kx0, kx1;
            int8_t *out = output + (oy * out_dims->w + ox) * channels;
            tc_pool_window(x0, params->kernel_w, in_dims->w, &kx0, &kx1);
            for (c = 0; c < channels; c++) {
                int32_t best = -128;
                for (ky = ky0; ky < ky1; ky++) {
                    const int8_t *x = input + ((y0 + ky) * in_dims->w + x0 + kx0) * channels + c;
                    for (kx = kx0; kx < kx1; kx++, x += channels) {
                        best = *x > best ? *x : best;
                    }
                }
                out[c] = tc_clamp_s8(best, params->act_min, params->act_max);
            }
        }
    }
    return TC_OK;
}
