/* max_pool2d on Helium: 16 channels of an output pixel per vector (VMAX.S8 over the window's
 * taps inside the image, then the clamp), the last partial block predicated. */
#include <stddef.h>

#include "tc_mve.h"

#if TC_USE_MVE

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif

int tc_max_pool2d_mve(const tc_pool_params *params, const tc_dims *in_dims, const int8_t *input,
                      const tc_dims *out_dims, int8_t *output)
{
    const int32_t channels = in_dims->c, row = in_dims->w * channels;
    const int8x16_t lo = vdupq_n_s8((int8_t)params->act_min);
    const int8x16_t hi = vdupq_n_s8((int8_t)params->act_max);
    int32_t oy, ox, c, ky, kx;
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
            const int8_t *first;
            int8_t *out = output + (oy * out_dims->w + ox) * channels;
            tc_pool_window(x0, params->kernel_w, in_dims->w, &kx0, &kx1);
            first = input + ((y0 + ky0) * in_dims->w + x0 + kx0) * channels;
            for (c = 0; c < channels; c += 16) {
                const mve_pred16_t p = vctp8q((uint32_t)(channels - c));
                int8x16_t best = vdupq_n_s8(-128);
                for (ky = ky0; ky < ky1; ky++) {
                    const int8_t *x = first + (ky - ky0) * row + c;
                    for (kx = kx0; kx < kx1; kx++, x += channels) {
                        best = vmaxq_s8(best, vldrbq_z_s8(x, p));
                    }
                }
                vstrbq_p_s8(out + c, vminq_s8(vmaxq_s8(best, lo), hi), p);
            }
        }
    }
    return TC_OK;
}

#endif
