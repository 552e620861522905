/* tc_fully_connected called directly, natively (stdout) or as a Cortex-M image (APP= for the
 * firmware Makefile, semihosting): for each case of fc_cases.h (written by
 * tests/test_fc_kernel.py into an include directory) one line "o <outputs in hex>", then
 * "done". A case reads its weights, inputs, bias and requantization constants at offsets into
 * shared blobs, so rows and inputs start at every alignment. Case fields: depth, out_channels,
 * weight offset, input offset, bias offset (-1: no bias), TC_RQ_* mode, constants offset,
 * input zero point, output zero point, act_min, act_max. */
#include <stdint.h>

#include "fc_cases.h"
#include "tc_kernels.h"

#if defined(__arm__)
#include "tc_cortex_m.h"
#define TC_PROBE_PUT(text) tc_semihost_write(text)
#else
#include <stdio.h>
#define TC_PROBE_PUT(text) fputs(text, stdout)
#endif

int main(int argc, char **argv)
{
    static const char hex[] = "0123456789abcdef";
    static char line[2 * TC_FC_MAX_OUT + 4];
    static int8_t out[TC_FC_MAX_OUT];
    int32_t i, j;
    (void)argc;
    (void)argv;
    for (i = 0; i < TC_FC_CASES; i++) {
        const int32_t *c = tc_fc_cases[i];
        tc_fc_params p;
        tc_requant_params rq;
        char *q = line;
        p.input_zero_point = c[7];
        p.output_zero_point = c[8];
        p.act_min = c[9];
        p.act_max = c[10];
        rq.mode = c[5];
        rq.multiplier = tc_fc_multiplier + c[6];
        rq.shift = tc_fc_shift + c[6];
        rq.scale = tc_fc_scale + c[6];
        if (tc_fully_connected(0, &p, &rq, c[0], tc_fc_x + c[3], c[1], tc_fc_w + c[2],
                               c[4] < 0 ? 0 : tc_fc_bias + c[4], out) != TC_OK) {
            TC_PROBE_PUT("failed\n");
            return 1;
        }
        *q++ = 'o';
        *q++ = ' ';
        for (j = 0; j < c[1]; j++) {
            *q++ = hex[(uint8_t)out[j] >> 4];
            *q++ = hex[(uint8_t)out[j] & 15u];
        }
        *q++ = '\n';
        *q = '\0';
        TC_PROBE_PUT(line);
    }
    TC_PROBE_PUT("done\n");
    return 0;
}
