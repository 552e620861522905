/* A self-test image for the Cortex-M boards (APP= for the Makefile, in place of src/main.c):
 * runs the inputs of selftest_inputs.h (TC_SELFTEST_COUNT inputs of TC_INPUT_SIZE bytes in
 * tc_selftest_inputs, written by the caller into a directory given as EXTRA_INCLUDE) through
 * the model, and reports over semihosting, one line per input:
 *     out <TC_OUTPUT_SIZE bytes in hex> ticks <total> <layer 0> <layer 1> ...
 * then "stack <bytes>" (the high-water mark: main paints the free stack, from the end of .bss up
 * to its sp, before anything else runs, and counts the bytes above the lowest word changed),
 * then "done" and exits with status 0 (or 10 + the error code of tc_model_run). Ticks are
 * guest instructions under QEMU -icount (see the port), so this is also the per-layer
 * instructions-per-MAC probe of benchmarks/bench_kernels_arm.py. */
#include <stdint.h>

#include "model_data.h"
#include "selftest_inputs.h"
#include "tc_cortex_m.h"
#include "tc_model.h"
#include "tc_port.h"

#define TC_STACK_PAINT 0x5AC3A53Cu

extern uint32_t tc_bss_end[];

static char tc_line[2 * TC_OUTPUT_SIZE + 12 * (TC_NUM_LAYERS + 1) + 32];

static char *tc_put_text(char *p, const char *text)
{
    while (*text) {
        *p++ = *text++;
    }
    return p;
}

static char *tc_put_u32(char *p, uint32_t v)
{
    char digits[10];
    int n = 0;
    do {
        digits[n++] = (char)('0' + v % 10u);
        v /= 10u;
    } while (v);
    while (n) {
        *p++ = digits[--n];
    }
    return p;
}

int main(int argc, char **argv)
{
    static const char hex[] = "0123456789abcdef";
    static int8_t output[TC_OUTPUT_SIZE];
    static uint32_t layer_ticks[TC_NUM_LAYERS];
    int i, j;
    uint32_t *sp, *low;
    char *end;
    (void)argc;
    (void)argv;
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (low = tc_bss_end; low < sp; low++) {
        *low = TC_STACK_PAINT;
    }
    tc_port_init();
    for (i = 0; i < TC_SELFTEST_COUNT; i++) {
        const uint32_t start = tc_port_ticks();
        const int rc = tc_model_run_timed(tc_selftest_inputs[i], output, tc_port_ticks,
                                          layer_ticks);
        const uint32_t total = tc_port_ticks() - start;
        char *p = tc_line;
        if (rc != TC_OK) {
            tc_semihost_write("tc_model_run failed\n");
            return 10 + rc;
        }
        p = tc_put_text(p, "out ");
        for (j = 0; j < TC_OUTPUT_SIZE; j++) {
            const uint8_t byte = (uint8_t)output[j];
            *p++ = hex[byte >> 4];
            *p++ = hex[byte & 15u];
        }
        p = tc_put_text(p, " ticks ");
        p = tc_put_u32(p, total);
        for (j = 0; j < TC_NUM_LAYERS; j++) {
            *p++ = ' ';
            p = tc_put_u32(p, layer_ticks[j]);
        }
        *p++ = '\n';
        *p = '\0';
        tc_semihost_write(tc_line);
    }
    for (low = tc_bss_end; *low == TC_STACK_PAINT; low++) {
    }
    end = tc_put_text(tc_line, "stack ");
    end = tc_put_u32(end, (uint32_t)tc_stack_top - (uint32_t)low);
    tc_put_text(end, "\n")[0] = '\0';
    tc_semihost_write(tc_line);
    tc_semihost_write("done\n");
    return 0;
}
