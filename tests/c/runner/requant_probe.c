/* Reads lines "double|single ACC MULT SHIFT" or "float ACC SCALE_BITS 0" from stdin and prints
 * tc_requant.h's result for each, one per line (tests/test_firmware_kernels.py).
 * "fast ACC MULT SHIFT ZP" prints "FAST VALUE": whether tc_requant_fast_prepare (with the bound
 * |ACC|) admits the channel, and tc_requant_double_fast(2 * ACC) when it does (which includes
 * the zero point ZP), else 0. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tc_requant.h"

int main(void)
{
    char kind[16];
    long acc, a, b;
    while (scanf("%15s %ld %ld %ld", kind, &acc, &a, &b) == 4) {
        long out;
        if (strcmp(kind, "fast") == 0) {
            const int32_t mult = (int32_t)a, shift = (int32_t)b;
            const tc_requant_params rq = {TC_RQ_FIXED_DOUBLE, &mult, &shift, NULL, NULL, NULL};
            tc_requant_fast f;
            long zp;
            if (scanf("%ld", &zp) != 1) {
                return 1;
            }
            f = tc_requant_fast_prepare(&rq, 0, acc < 0 ? -(int64_t)acc : acc, (int32_t)zp);
            printf("%d %ld\n", f.fast,
                   f.fast ? (long)tc_requant_double_fast((int32_t)(2 * acc), &f) : 0L);
            continue;
        }
        if (strcmp(kind, "float") == 0) {
            const uint32_t bits = (uint32_t)a;
            float scale;
            memcpy(&scale, &bits, sizeof scale);
            out = tc_requant_float((int32_t)acc, scale);
        } else if (strcmp(kind, "single") == 0) {
            out = tc_requant_fixed_single((int32_t)acc, (int32_t)a, (int32_t)b);
        } else {
            out = tc_requant_fixed_double((int32_t)acc, (int32_t)a, (int32_t)b);
        }
        printf("%ld\n", out);
    }
    return 0;
}
