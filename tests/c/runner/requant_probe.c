/* Reads lines "double|single ACC MULT SHIFT" or "float ACC SCALE_BITS 0" from stdin and prints
 * tc_requant.h's result for each, one per line (tests/test_firmware_kernels.py). */
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
