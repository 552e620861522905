/* pad: H and W padded with one int8 value; the output keeps the input's quantization. */
#include "tc_kernels.h"

int tc_pad(const tc_pad_params *params, const tc_dims *in_dims, const int8_t *input,
           const tc_dims *out_dims, int8_t *output)
{
    int32_t y, x, ch;
    const int32_t c = in_dims->c;
    if (out_dims->c != c || out_dims->h != in_dims->h + params->top + params->bottom ||
        out_dims->w != in_dims->w + params->left + params->right) {
        return TC_ERR_BAD_ARG;
    }
    for (y = 0; y < out_dims->h; y++) {
        const int32_t iy = y - params->top;
        for (x = 0; x < out_dims->w; x++) {
            const int32_t ix = x - params->left;
            int8_t *dst = output + (y * out_dims->w + x) * c;
            if (iy < 0 || iy >= in_dims->h || ix < 0 || ix >= in_dims->w) {
                for (ch = 0; ch < c; ch++) {
                    dst[ch] = params->value;
                }
            } else {
                const int8_t *src = input + (iy * in_dims->w + ix) * c;
                for (ch = 0; ch < c; ch++) {
                    dst[ch] = src[ch];
                }
            }
        }
    }
    return TC_OK;
}
