/* The fast requantization as the Cortex-M boards run it (APP= for the firmware Makefile): for
 * each case of probe_cases.h (written by tests/test_arm_requant_probe.py into an EXTRA_INCLUDE
 * directory) it reports over semihosting, 16 cases a line:
 *     <fast> <tc_requant_double_fast(2 * acc) + zp> <byte stored unclamped> <byte clamped>
 * in hex, where the value comes from the inline SMMULR / SMULL sequence (tc_mulh_round) and the
 * two bytes from tc_store_fast_rows, the conv kernels' assembly store loop (clamp [INT32_MIN,
 * INT32_MAX]: the low byte of the value; clamp [-128, 127]). Then "done". */
#include <stdint.h>

#include "probe_cases.h"
#include "tc_cortex_m.h"
#include "tc_matmul.h"

static char *tc_put_hex(char *p, uint32_t v, int digits)
{
    static const char hex[] = "0123456789abcdef";
    int i;
    for (i = digits - 1; i >= 0; i--) {
        *p++ = hex[(v >> (4 * i)) & 15u];
    }
    *p++ = ' ';
    return p;
}

int main(int argc, char **argv)
{
    static char line[16 * 24 + 2];
    char *p = line;
    int32_t i;
    (void)argc;
    (void)argv;
    for (i = 0; i < TC_PROBE_COUNT; i++) {
        const int32_t acc = tc_probe_cases[i][0];
        tc_requant_params rq;
        tc_requant_fast f;
        int32_t accs[2], value = 0, stored = 0;
        int8_t wide[2] = {0, 0}, narrow[2] = {0, 0};
        rq.mode = TC_RQ_FIXED_DOUBLE;
        rq.multiplier = &tc_probe_cases[i][1];
        rq.shift = &tc_probe_cases[i][2];
        rq.scale = 0;
        f = tc_requant_fast_prepare(&rq, 0, acc < 0 ? -(int64_t)acc : acc, tc_probe_cases[i][3]);
        if (f.fast) {
            accs[0] = acc;
            accs[1] = acc;
            value = tc_requant_double_fast((int32_t)((uint32_t)acc << 1), &f);
            stored = tc_store_fast_rows(accs, &f, 1, INT32_MIN, INT32_MAX, &wide[1], &wide[0]);
            stored += tc_store_fast_rows(accs, &f, 1, -128, 127, &narrow[1], &narrow[0]);
            stored += wide[0] == wide[1] && narrow[0] == narrow[1];
        }
        p = tc_put_hex(p, (uint32_t)f.fast * (uint32_t)(stored == 3), 1);
        p = tc_put_hex(p, (uint32_t)value, 8);
        p = tc_put_hex(p, (uint8_t)wide[0], 2);
        p = tc_put_hex(p, (uint8_t)narrow[0], 2);
        if (i % 16 == 15 || i == TC_PROBE_COUNT - 1) {
            p[-1] = '\n';
            *p = '\0';
            tc_semihost_write(line);
            p = line;
        }
    }
    tc_semihost_write("done\n");
    return 0;
}
