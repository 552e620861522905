/* Self-test image (APP= for the firmware Makefile, Cortex-M55 only): tc_mve_requant_double,
 * four lanes with their own accumulator, multiplier and shift, against the scalar
 * tc_requant_fixed_double on edge and pseudo-random values. Prints "checked N differ D" over
 * semihosting, and the first few differences. */
#include <stdint.h>

#include "tc_cortex_m.h"
#include "tc_mve.h"
#include "tc_port.h"

#define VECTORS 60000

static uint32_t tc_state = 0x2545F491u;

static uint32_t tc_next(void)
{
    tc_state ^= tc_state << 13;
    tc_state ^= tc_state >> 17;
    tc_state ^= tc_state << 5;
    return tc_state;
}

static const int32_t tc_edge_multipliers[] = {0, 1, 1 << 30, INT32_MAX, INT32_MIN, 1518500250,
                                              (1 << 30) + 1, INT32_MAX - 1};

/* an accumulator: an edge value, or random bits of a random width, or for a right shift a
 * value whose product lands near an exact half */
static int32_t tc_pick_acc(void)
{
    static const int32_t edges[] = {INT32_MIN, INT32_MIN + 1, -2, -1, 0, 1, 2, INT32_MAX,
                                    INT32_MAX - 1, 1 << 29, -(1 << 29), 3, -3};
    const uint32_t r = tc_next();
    if (r % 4u == 0u) {
        return edges[(r >> 8) % (sizeof edges / sizeof edges[0])];
    }
    return (int32_t)tc_next() >> ((r >> 8) % 32u);
}

static int32_t tc_pick_multiplier(void)
{
    const uint32_t r = tc_next();
    if (r % 2u == 0u) {
        return tc_edge_multipliers[(r >> 8) % (sizeof tc_edge_multipliers /
                                               sizeof tc_edge_multipliers[0])];
    }
    return (int32_t)(tc_next() | 0x40000000u) & INT32_MAX; /* a Q31 multiplier >= 2^30 */
}

static char *tc_put(char *p, const char *text)
{
    while (*text) {
        *p++ = *text++;
    }
    return p;
}

static char *tc_put_i32(char *p, int32_t value)
{
    char digits[10];
    uint32_t v = value < 0 ? 0u - (uint32_t)value : (uint32_t)value;
    int n = 0;
    if (value < 0) {
        *p++ = '-';
    }
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
    static char line[160];
    int32_t acc[4], multiplier[4], shift[4], got[4];
    int32_t checked = 0, differ = 0;
    int i, j;
    tc_requant_params rq;
    char *p;
    (void)argc;
    (void)argv;
    tc_port_init();
    rq.mode = TC_RQ_FIXED_DOUBLE;
    rq.multiplier = multiplier;
    rq.shift = shift;
    rq.scale = 0;
    for (i = 0; i < VECTORS; i++) {
        tc_mve_requant c;
        for (j = 0; j < 4; j++) {
            acc[j] = tc_pick_acc();
            multiplier[j] = tc_pick_multiplier();
            shift[j] = (int32_t)(tc_next() % 62u) - 31; /* [-31, 30] */
        }
        c = tc_mve_requant_load(&rq, 0, vctp32q(4u));
        vstrwq_s32(got, tc_mve_requant_double(vldrwq_s32(acc), &c, 0, INT32_MIN, INT32_MAX));
        for (j = 0; j < 4; j++) {
            const int32_t want = tc_requant_fixed_double(acc[j], multiplier[j], shift[j]);
            checked++;
            if (got[j] != want && differ++ < 5) {
                p = tc_put(line, "acc ");
                p = tc_put_i32(p, acc[j]);
                p = tc_put(p, " multiplier ");
                p = tc_put_i32(p, multiplier[j]);
                p = tc_put(p, " shift ");
                p = tc_put_i32(p, shift[j]);
                p = tc_put(p, " got ");
                p = tc_put_i32(p, got[j]);
                p = tc_put(p, " want ");
                p = tc_put_i32(p, want);
                p = tc_put(p, "\n");
                *p = 0;
                tc_semihost_write(line);
            }
        }
    }
    p = tc_put(line, "checked ");
    p = tc_put_i32(p, checked);
    p = tc_put(p, " differ ");
    p = tc_put_i32(p, differ);
    p = tc_put(p, "\n");
    *p = 0;
    tc_semihost_write(line);
    return 0;
}
