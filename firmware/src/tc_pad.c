/* pad: H and W padded with one int8 value, the input's mirror image or its edge; the output
 * keeps the input's quantization. */
#include "tc_kernels.h"

/* The input index output index i (relative to the input's start) reads, or -1 for the value. */
static int32_t tc_pad_source(int32_t i, int32_t size, int32_t mode)
{
    if (i >= 0 && i < size) {
        return i;
    }
    if (mode == TC_PAD_EDGE) {
        return i < 0 ? 0 : size - 1;
    }
    if (mode == TC_PAD_REFLECT) {
        return i < 0 ? -i : 2 * (size - 1) - i;
    }
    return -1;
}

int tc_pad(const tc_pad_params *params, const tc_dims *in_dims, const int8_t *input,
           const tc_dims *out_dims, int8_t *output)
{
    int32_t y, x, ch;
    const int32_t c = in_dims->c;
    if (out_dims->c != c || out_dims->h != in_dims->h + params->top + params->bottom ||
        out_dims->w != in_dims->w + params->left + params->right ||
        (params->mode == TC_PAD_REFLECT &&
         (params->top >= in_dims->h || params->bottom >= in_dims->h ||
          params->left >= in_dims->w || params->right >= in_dims->w))) {
        return TC_ERR_BAD_ARG;
    }
    for (y = 0; y < out_dims->h; y++) {
        const int32_t iy = tc_pad_source(y - params->top, in_dims->h, params->mode);
        for (x = 0; x < out_dims->w; x++) {
            const int32_t ix = tc_pad_source(x - params->left, in_dims->w, params->mode);
            int8_t *dst = output + (y * out_dims->w + x) * c;
            if (iy < 0 || ix < 0) {
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
