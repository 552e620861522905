/* concat along channels, one input per call (as CMSIS-NN's concatenation kernels do): its
 * channels land at channel `first` of every output pixel, copied, or mapped through its
 * 256-entry table where its quantization differs from the output's (docs/ARITHMETIC.md). */
#include <stddef.h>

#include "tc_kernels.h"

int tc_concat(const int8_t *input, const int8_t *table, int32_t pixels, int32_t in_c,
              int32_t first, int32_t out_c, int8_t *output)
{
    int32_t p, ch;
    if (in_c < 1 || first < 0 || first + in_c > out_c) {
        return TC_ERR_BAD_ARG;
    }
    for (p = 0; p < pixels; p++) {
        int8_t *dst = output + p * out_c + first;
        const int8_t *src = input + p * in_c;
        if (table == NULL) {
            for (ch = 0; ch < in_c; ch++) {
                dst[ch] = src[ch];
            }
        } else {
            for (ch = 0; ch < in_c; ch++) {
                dst[ch] = table[src[ch] + 128];
            }
        }
    }
    return TC_OK;
}
