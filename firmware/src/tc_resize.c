/* resize_nearest: output pixel (y, x) copies input pixel (rows[y], cols[x]); the coordinate
 * rule of the ONNX Resize was evaluated into rows and cols at export. */
#include "tc_kernels.h"

int tc_resize_nearest(const int32_t *rows, const int32_t *cols, const tc_dims *in_dims,
                      const int8_t *input, const tc_dims *out_dims, int8_t *output)
{
    int32_t y, x, ch;
    const int32_t c = in_dims->c;
    if (out_dims->c != c) {
        return TC_ERR_BAD_ARG;
    }
    for (y = 0; y < out_dims->h; y++) {
        if (rows[y] < 0 || rows[y] >= in_dims->h) {
            return TC_ERR_BAD_ARG;
        }
        for (x = 0; x < out_dims->w; x++) {
            const int8_t *src;
            int8_t *dst = output + (y * out_dims->w + x) * c;
            if (cols[x] < 0 || cols[x] >= in_dims->w) {
                return TC_ERR_BAD_ARG;
            }
            src = input + (rows[y] * in_dims->w + cols[x]) * c;
            for (ch = 0; ch < c; ch++) {
                dst[ch] = src[ch];
            }
        }
    }
    return TC_OK;
}
