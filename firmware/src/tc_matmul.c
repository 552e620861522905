/* Internal dot-product engine for conv2d and fully_connected (see tc_matmul.h). */
#include <stddef.h>

#include "tc_asm.h"
#include "tc_matmul.h"

/* The inner loops are the whole cost of a convolution: optimize them for speed even in an -Os
 * image (-Os spills the four accumulators of the 2x2 block to the stack). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif

/* Position of element j of pixel 0 or 1 in a pair column (tc_matmul.h). */
TC_INLINE int32_t tc_pair_slot(int32_t k, int32_t pixel, int32_t j)
{
    const int32_t body = k & ~3;
    if (j < body) {
#if TC_USE_DSP
        const int32_t w = ((j & 1) << 1) | ((j >> 1) & 1); /* x0 x2 x1 x3 */
#else
        const int32_t w = j & 3;
#endif
        return 2 * (j & ~3) + 4 * pixel + w;
    }
    return j + body + pixel * (k - body);
}

void tc_pair_fill(int16_t *col, int32_t k, int32_t pixel, int32_t j, const int8_t *src,
                  int32_t n, int32_t zero_point)
{
    const int32_t body = k & ~3;
    int32_t i = 0;
    for (; i < n && ((j + i) & 3) != 0 && j + i < body; i++) {
        col[tc_pair_slot(k, pixel, j + i)] = (int16_t)(src ? src[i] - zero_point : 0);
    }
    if (src != NULL) {
#if TC_USE_DSP
        const int32_t zp2 = (int32_t)(((uint32_t)zero_point & 0xffffu) * 0x10001u);
#endif
        for (; i + 4 <= n && j + i + 4 <= body; i += 4) {
            int16_t *dst = col + 2 * (j + i) + 4 * pixel;
#if TC_USE_DSP
            const int32_t v = tc_read_s32(src + i);
            tc_write_s32(dst, __ssub16(__sxtb16(v), zp2));
            tc_write_s32(dst + 2, __ssub16(tc_sxtb16_ror8(v), zp2));
#else
            dst[0] = (int16_t)(src[i] - zero_point);
            dst[1] = (int16_t)(src[i + 1] - zero_point);
            dst[2] = (int16_t)(src[i + 2] - zero_point);
            dst[3] = (int16_t)(src[i + 3] - zero_point);
#endif
        }
    } else {
        for (; i + 4 <= n && j + i + 4 <= body; i += 4) {
            int16_t *dst = col + 2 * (j + i) + 4 * pixel;
            dst[0] = 0;
            dst[1] = 0;
            dst[2] = 0;
            dst[3] = 0;
        }
    }
    for (; i < n; i++) {
        col[tc_pair_slot(k, pixel, j + i)] = (int16_t)(src ? src[i] - zero_point : 0);
    }
}

/* Requantize, offset, clamp and store output channel `row` of one or two pixels. Out of line on
 * purpose: with the channel's constants in registers this is ~20 instructions per output;
 * inlined into the block loop, gcc spills them. */
static TC_NOINLINE void tc_store_channel(const tc_matmul_output *o, int32_t row, int32_t acc0,
                                         int32_t acc1, int8_t *out0, int8_t *out1)
{
    const tc_requant_params *rq = o->rq;
    const int32_t ch = o->first_channel + row;
    const int32_t zp = o->output_zero_point, lo = o->act_min, hi = o->act_max;
    int32_t v0, v1;
    if (o->fast != NULL && o->fast[row].fast) { /* |acc| < 2^29: doubling cannot wrap */
        const tc_requant_fast *f = o->fast + row;
        v0 = tc_requant_double_fast((int32_t)((uint32_t)acc0 << 1), f);
        out0[row] = (int8_t)(v0 < lo ? lo : (v0 > hi ? hi : v0));
        if (out1 != NULL) {
            v1 = tc_requant_double_fast((int32_t)((uint32_t)acc1 << 1), f);
            out1[row] = (int8_t)(v1 < lo ? lo : (v1 > hi ? hi : v1));
        }
        return;
    }
    if (rq->mode == TC_RQ_FIXED_DOUBLE && rq->multiplier[ch] != INT32_MIN) {
        const int32_t multiplier = rq->multiplier[ch], shift = rq->shift[ch];
        const int32_t left = shift > 0 ? shift : 0, right = shift > 0 ? 0 : -shift;
        const int32_t mask = (int32_t)(((uint32_t)1 << right) - 1u), half = mask >> 1;
        v0 = tc_requant_double_prepared(acc0, multiplier, left, right, mask, half);
        v1 = tc_requant_double_prepared(acc1, multiplier, left, right, mask, half);
    } else {
        v0 = tc_requantize(acc0, rq, ch);
        v1 = tc_requantize(acc1, rq, ch);
    }
    out0[row] = tc_clamp_s8(v0 + zp, lo, hi);
    if (out1 != NULL) {
        out1[row] = tc_clamp_s8(v1 + zp, lo, hi);
    }
}

/* The row-pair loop of tc_dot_rows around an inner loop over the groups of four of the pair
 * column: acc[4 * i .. 4 * i + 3] (row 2i x pixel A, 2i x B, 2i+1 x A, 2i+1 x B) = bias[2i],
 * bias[2i], bias[2i+1], bias[2i+1] + the groups of rows 2i and 2i+1 of w (row r at w + r * k)
 * times the column, for i < pairs. The row pairs run inside the assembly so that a pair costs
 * ~25 instructions of set-up instead of a call from C; the loop counter, k, acc, bias and the
 * column's start and end live in a 24-byte frame. The inner loop does two groups per pass
 * (entered in its middle when their count is odd). Needs pairs >= 1, k >= 4 and a 4-byte
 * aligned column; the k % 4 tail is left to the caller. The in-place loops below share the
 * frame: column_end scales k to the end of what the inner loop walks (the int16 pair column: 4
 * bytes a value pair; the raw input: 1), pass_start loads what a row pair needs besides. */
#define TC_DOT_PROLOGUE(name, column_end, pass_start) \
    TC_ASM_BEGIN(name) \
    "  push {r4-r11, lr}\n" \
    "  ldrd r12, lr, [sp, #36]\n" \
    "  sub sp, sp, #24\n" \
    "  str lr, [sp, #0]\n" \
    "  str r1, [sp, #4]\n" \
    "  str r2, [sp, #8]\n" \
    "  str r3, [sp, #12]\n" \
    "  str r12, [sp, #20]\n" \
    "  add r1, r0, r2\n" \
    "  bic r2, r2, #3\n" \
    "  add r2, r3, r2" column_end "\n" \
    "  str r2, [sp, #16]\n" \
    "2:\n" \
    "  ldr lr, [sp, #20]\n" \
    "  ldrd r4, r6, [lr], #8\n" \
    "  str lr, [sp, #20]\n" \
    "  mov r5, r4\n" \
    "  mov r7, r6\n" \
    "  ldrd r2, r3, [sp, #12]\n" \
    pass_start \
    "  ldr r12, [sp, #8]\n" \
    "  tst r12, #4\n" \
    "  bne 3f\n" \
    "1:\n"
#define TC_DOT_ROWS_PROLOGUE(name) TC_DOT_PROLOGUE(name, ", lsl #2", "")
/* after the inner loop r0 and r1 point k & ~3 bytes into their rows; the next pair starts
 * 2k bytes after this one */
#define TC_DOT_EPILOGUE(name, next_rows) \
    "  cmp r2, r3\n" \
    "  bne 1b\n" \
    "  ldr lr, [sp, #0]\n" \
    "  stm lr!, {r4-r7}\n" \
    "  str lr, [sp, #0]\n" \
    next_rows \
    "  ldr r12, [sp, #4]\n" \
    "  subs r12, r12, #1\n" \
    "  str r12, [sp, #4]\n" \
    "  bne 2b\n" \
    "  add sp, sp, #24\n" \
    "  pop {r4-r11, pc}\n" \
    TC_ASM_END(name)
#define TC_DOT_NEXT_ROWS \
    "  ldr r12, [sp, #8]\n" \
    "  and r2, r12, #3\n" \
    "  add r0, r1, r2\n" \
    "  add r1, r0, r12\n"
#define TC_DOT_ROWS_EPILOGUE(name) TC_DOT_EPILOGUE(name, TC_DOT_NEXT_ROWS)

#if TC_USE_DSP && defined(__thumb2__)
/* Cortex-M4: 16.5 instructions per 16 MACs. One LDM brings a group of both pixels, one LDR
 * four weights of a row, SXTB16 splits them into the pair-swapped order of the column. */
void tc_dot_rows_asm(const int8_t *w, int32_t pairs, int32_t k, const int16_t *col,
                     const int32_t *bias, int32_t *acc);
#define TC_DOT_GROUP_M4 \
    "  ldm r2!, {r8-r11}\n" \
    "  ldr r12, [r0], #4\n" \
    "  sxtb16 lr, r12, ror #8\n" \
    "  sxtb16 r12, r12\n" \
    "  smlad r4, r12, r8, r4\n" \
    "  smlad r4, lr, r9, r4\n" \
    "  smlad r5, r12, r10, r5\n" \
    "  smlad r5, lr, r11, r5\n" \
    "  ldr r12, [r1], #4\n" \
    "  sxtb16 lr, r12, ror #8\n" \
    "  sxtb16 r12, r12\n" \
    "  smlad r6, r12, r8, r6\n" \
    "  smlad r6, lr, r9, r6\n" \
    "  smlad r7, r12, r10, r7\n" \
    "  smlad r7, lr, r11, r7\n"
__asm__(
    TC_DOT_ROWS_PROLOGUE("tc_dot_rows_asm")
    TC_DOT_GROUP_M4
    "3:\n"
    TC_DOT_GROUP_M4
    TC_DOT_ROWS_EPILOGUE("tc_dot_rows_asm"));
#define TC_HAVE_DOT_ROWS_ASM 1
#elif defined(__thumb2__)
/* Cortex-M3, on the natural-order pair column: 33.5 instructions per 16 MACs, one load per
 * MAC. The offset-0 loads come last in each group so that they can post-increment the
 * pointers. */
void tc_dot_rows_asm(const int8_t *w, int32_t pairs, int32_t k, const int16_t *col,
                     const int32_t *bias, int32_t *acc);
#define TC_DOT_2X2_M3_STEP(i) \
    "  ldrsh r8, [r2, #" #i "*2]\n" \
    "  ldrsh r9, [r2, #8+" #i "*2]\n" \
    "  ldrsb r10, [r0, #" #i "]\n" \
    "  mla r4, r10, r8, r4\n" \
    "  mla r5, r10, r9, r5\n" \
    "  ldrsb r10, [r1, #" #i "]\n" \
    "  mla r6, r10, r8, r6\n" \
    "  mla r7, r10, r9, r7\n"
#define TC_DOT_GROUP_M3 \
    TC_DOT_2X2_M3_STEP(1) \
    TC_DOT_2X2_M3_STEP(2) \
    TC_DOT_2X2_M3_STEP(3) \
    "  ldrsh r9, [r2, #8]\n" \
    "  ldrsh r8, [r2], #16\n" \
    "  ldrsb r10, [r0], #4\n" \
    "  mla r4, r10, r8, r4\n" \
    "  mla r5, r10, r9, r5\n" \
    "  ldrsb r10, [r1], #4\n" \
    "  mla r6, r10, r8, r6\n" \
    "  mla r7, r10, r9, r7\n"
__asm__(
    TC_DOT_ROWS_PROLOGUE("tc_dot_rows_asm")
    TC_DOT_GROUP_M3
    "3:\n"
    TC_DOT_GROUP_M3
    TC_DOT_ROWS_EPILOGUE("tc_dot_rows_asm"));
#define TC_HAVE_DOT_ROWS_ASM 1
#else
#define TC_HAVE_DOT_ROWS_ASM 0
#endif

#if TC_USE_DSP && defined(__thumb2__)
/* Cortex-M4, weights already int16 (export's row pairs, tc_matmul.h): 10.75 instructions
 * per 16 MACs. One LDM brings a group of both pixels, one LDM the group of both rows, eight
 * SMLADs; no SXTB16 per pass. Four groups per pass, entered (through an address worked out
 * once, BX) at the group that leaves a whole number of passes; the column's end read from the
 * frame.
 * Frame: acc, pairs left, column start, column end, bias, entry address. Needs
 * pairs >= 1, k a multiple of four >= 4 and 4-byte aligned column and weights. */
void tc_dot_rows_s16_asm(const int16_t *w16, int32_t pairs, int32_t k, const int16_t *col,
                         const int32_t *bias, int32_t *acc);
#define TC_DOT_GROUP_S16 \
    "  ldm r1!, {r6-r9}\n" \
    "  ldm r0!, {r10-r12, lr}\n" \
    "  smlad r2, r10, r6, r2\n" \
    "  smlad r2, r11, r7, r2\n" \
    "  smlad r3, r10, r8, r3\n" \
    "  smlad r3, r11, r9, r3\n" \
    "  smlad r4, r12, r6, r4\n" \
    "  smlad r4, lr, r7, r4\n" \
    "  smlad r5, r12, r8, r5\n" \
    "  smlad r5, lr, r9, r5\n"
__asm__(
    TC_ASM_BEGIN("tc_dot_rows_s16_asm")
    "  push {r4-r11, lr}\n"
    "  ldrd r12, lr, [sp, #36]\n"
    "  sub sp, sp, #24\n"
    "  str lr, [sp, #0]\n"
    "  str r1, [sp, #4]\n"
    "  str r3, [sp, #8]\n"
    "  add r4, r3, r2, lsl #2\n"
    "  str r4, [sp, #12]\n"
    "  str r12, [sp, #16]\n"
    "  lsr r6, r2, #2\n"
    "  ands r6, r6, #3\n"
    "  adr.w r7, 10f\n"
    "  beq 5f\n"
    "  adr.w r7, 13f\n"
    "  cmp r6, #1\n"
    "  beq 5f\n"
    "  adr.w r7, 12f\n"
    "  cmp r6, #2\n"
    "  beq 5f\n"
    "  adr.w r7, 11f\n"
    "5:\n"
    "  orr r7, r7, #1\n"
    "  str r7, [sp, #20]\n"
    "2:\n"
    "  ldr lr, [sp, #16]\n"
    "  ldrd r2, r4, [lr], #8\n"
    "  str lr, [sp, #16]\n"
    "  mov r3, r2\n"
    "  mov r5, r4\n"
    "  ldr r1, [sp, #8]\n"
    "  ldr r6, [sp, #20]\n"
    "  bx r6\n"
    "10:\n"
    TC_DOT_GROUP_S16
    "11:\n"
    TC_DOT_GROUP_S16
    "12:\n"
    TC_DOT_GROUP_S16
    "13:\n"
    TC_DOT_GROUP_S16
    "  ldr r6, [sp, #12]\n"
    "  cmp r1, r6\n"
    "  bne 10b\n"
    "  ldr lr, [sp, #0]\n"
    "  stm lr!, {r2-r5}\n"
    "  str lr, [sp, #0]\n"
    "  ldr r12, [sp, #4]\n"
    "  subs r12, r12, #1\n"
    "  str r12, [sp, #4]\n"
    "  bne 2b\n"
    "  add sp, sp, #24\n"
    "  pop {r4-r11, pc}\n"
    TC_ASM_END("tc_dot_rows_s16_asm"));
#endif

/* The k % 4 tail of two rows times the two pixels of a pair column: acc[row * 2 + pixel]. */
static void tc_dot_pair_tail(const int8_t *w0, const int8_t *w1, const int16_t *col, int32_t k,
                             int32_t acc[4])
{
    const int32_t body = k & ~3, rest = k & 3;
    const int16_t *tail = col + 2 * body;
    int32_t i;
    for (i = 0; i < rest; i++) {
        const int32_t x = tail[i], y = tail[rest + i], a = w0[body + i], b = w1[body + i];
        acc[0] += a * x;
        acc[1] += a * y;
        acc[2] += b * x;
        acc[3] += b * y;
    }
}

#if !TC_HAVE_DOT_ROWS_ASM
/* The groups of four of two rows times the two pixels of a pair column (portable C). */
static void tc_dot_pair_2x2(const int8_t *w0, const int8_t *w1, const int16_t *col, int32_t k,
                            int32_t acc[4])
{
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3], g, i;
    for (g = 0; g < k >> 2; g++, w0 += 4, w1 += 4, col += 8) {
        for (i = 0; i < 4; i++) {
            const int32_t x = col[i], y = col[4 + i], a = w0[i], b = w1[i];
            a00 += a * x;
            a01 += a * y;
            a10 += b * x;
            a11 += b * y;
        }
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}
#endif

/* acc[2 * r + pixel] = bias[r] + row r of the first 2 * pairs rows times the pair column. */
static void tc_dot_rows(const int8_t *w, int32_t pairs, int32_t k, const int16_t *col,
                        const int32_t *bias, int32_t *acc)
{
    int32_t i;
#if TC_HAVE_DOT_ROWS_ASM
    if (pairs > 0 && k >= 4) {
        tc_dot_rows_asm(w, pairs, k, col, bias, acc);
    } else
#endif
    {
        for (i = 0; i < pairs; i++) {
            acc[4 * i] = acc[4 * i + 1] = bias[2 * i];
            acc[4 * i + 2] = acc[4 * i + 3] = bias[2 * i + 1];
        }
    }
#if !TC_HAVE_DOT_ROWS_ASM
    for (i = 0; i < pairs; i++) {
        tc_dot_pair_2x2(w + 2 * i * k, w + (2 * i + 1) * k, col, k, acc + 4 * i);
    }
#endif
    if ((k & 3) != 0) {
        for (i = 0; i < pairs; i++) {
            tc_dot_pair_tail(w + 2 * i * k, w + (2 * i + 1) * k, col, k, acc + 4 * i);
        }
    }
}

/* One row times the two pixels of a pair column: acc[pixel]. */
static void tc_dot_pair_1x2(const int8_t *w0, const int16_t *col, int32_t k, int32_t acc[2])
{
    const int32_t groups = k >> 2, rest = k & 3;
    const int16_t *tail = col + 8 * groups;
    int32_t a0 = acc[0], a1 = acc[1], g, i;
    for (g = 0; g < groups; g++, w0 += 4, col += 8) {
#if TC_USE_DSP
        const int32_t w = tc_read_s32(w0);
        const int32_t w02 = __sxtb16(w), w13 = tc_sxtb16_ror8(w);
        a0 = __smlad(w02, tc_read_s32(col), a0);
        a0 = __smlad(w13, tc_read_s32(col + 2), a0);
        a1 = __smlad(w02, tc_read_s32(col + 4), a1);
        a1 = __smlad(w13, tc_read_s32(col + 6), a1);
#else
        for (i = 0; i < 4; i++) {
            a0 += w0[i] * col[i];
            a1 += w0[i] * col[4 + i];
        }
#endif
    }
    for (i = 0; i < rest; i++) {
        a0 += w0[i] * tail[i];
        a1 += w0[i] * tail[rest + i];
    }
    acc[0] = a0;
    acc[1] = a1;
}

/* The dot loops without a column: acc as tc_dot_rows_asm's, from the raw int8 inputs of
 * pixel 0 at a and pixel 1 at b (word loads: any alignment on Thumb-2). Same frame as
 * tc_dot_rows_asm; b is the seventh argument. Two groups of four per pass (entered at the
 * second, 3:, when their count is odd), no k % 4 tail. */
#define TC_DOT_RAW_PROLOGUE(name) TC_DOT_PROLOGUE(name, "", "  ldr r11, [sp, #68]\n")
/* after the groups r0 and r1 point k & ~3 bytes into their rows (int8 weights); with int16
 * weights r0 already points at the next pair's */
#if TC_USE_DSP && defined(__thumb2__)
/* Cortex-M4, the int16 row pairs export wrote (tc_matmul_pair_s16's): per group the two
 * pixels' words, SXTB16 into the pair-swapped order the weights have, two LDRDs of weights
 * and eight SMLADs: 17 instructions per 16 MACs. k a multiple of four. */
void tc_dot_rows_raw_s16_asm(const int16_t *w16, int32_t pairs, int32_t k, const int8_t *a,
                             const int32_t *bias, int32_t *acc, const int8_t *b);
#define TC_DOT_RAW_S16_GROUP \
    "  ldr r10, [r11], #4\n" \
    "  ldr r1, [r2], #4\n" \
    "  sxtb16 r12, r1\n" \
    "  sxtb16 r1, r1, ror #8\n" \
    "  sxtb16 r9, r10\n" \
    "  sxtb16 r10, r10, ror #8\n" \
    "  ldrd r8, lr, [r0], #8\n" \
    "  smlad r4, r8, r12, r4\n" \
    "  smlad r4, lr, r1, r4\n" \
    "  smlad r5, r8, r9, r5\n" \
    "  smlad r5, lr, r10, r5\n" \
    "  ldrd r8, lr, [r0], #8\n" \
    "  smlad r6, r8, r12, r6\n" \
    "  smlad r6, lr, r1, r6\n" \
    "  smlad r7, r8, r9, r7\n" \
    "  smlad r7, lr, r10, r7\n"
__asm__(
    TC_DOT_RAW_PROLOGUE("tc_dot_rows_raw_s16_asm")
    TC_DOT_RAW_S16_GROUP
    "3:\n"
    TC_DOT_RAW_S16_GROUP
    TC_DOT_EPILOGUE("tc_dot_rows_raw_s16_asm", ""));
/* Cortex-M4, int8 weights (a layer too large for the int16 copy): the weights' SXTB16s too,
 * 21.5 instructions per 16 MACs; every register holds a pointer, a value or a sum, so the end
 * of the inputs is read from the frame. */
void tc_dot_rows_raw_asm(const int8_t *w, int32_t pairs, int32_t k, const int8_t *a,
                         const int32_t *bias, int32_t *acc, const int8_t *b);
#define TC_DOT_RAW_M4_ROW(wp, acc0, acc1) \
    "  ldr lr, [" wp "], #4\n" \
    "  sxtb16 r3, lr\n" \
    "  sxtb16 lr, lr, ror #8\n" \
    "  smlad " acc0 ", r3, r10, " acc0 "\n" \
    "  smlad " acc0 ", lr, r9, " acc0 "\n" \
    "  smlad " acc1 ", r3, r12, " acc1 "\n" \
    "  smlad " acc1 ", lr, r8, " acc1 "\n"
#define TC_DOT_RAW_M4_GROUP \
    "  ldr r8, [r11], #4\n" \
    "  ldr r9, [r2], #4\n" \
    "  sxtb16 r10, r9\n" \
    "  sxtb16 r9, r9, ror #8\n" \
    "  sxtb16 r12, r8\n" \
    "  sxtb16 r8, r8, ror #8\n" \
    TC_DOT_RAW_M4_ROW("r0", "r4", "r5") \
    TC_DOT_RAW_M4_ROW("r1", "r6", "r7")
__asm__(
    TC_DOT_RAW_PROLOGUE("tc_dot_rows_raw_asm")
    TC_DOT_RAW_M4_GROUP
    "3:\n"
    TC_DOT_RAW_M4_GROUP
    "  ldr r3, [sp, #16]\n"
    TC_DOT_EPILOGUE("tc_dot_rows_raw_asm", TC_DOT_NEXT_ROWS));
#define TC_HAVE_DOT_RAW_ASM 1
#elif defined(__thumb2__)
/* Cortex-M3: one LDRSB per input and weight, as tc_dot_rows_asm's LDRSH per column value:
 * 33.5 instructions per 16 MACs, the column loop's own cost without filling the column. */
void tc_dot_rows_raw_asm(const int8_t *w, int32_t pairs, int32_t k, const int8_t *a,
                         const int32_t *bias, int32_t *acc, const int8_t *b);
#define TC_DOT_RAW_M3_STEP(i) \
    "  ldrsb r8, [r2, #" #i "]\n" \
    "  ldrsb r9, [r11, #" #i "]\n" \
    "  ldrsb r10, [r0, #" #i "]\n" \
    "  mla r4, r10, r8, r4\n" \
    "  mla r5, r10, r9, r5\n" \
    "  ldrsb r10, [r1, #" #i "]\n" \
    "  mla r6, r10, r8, r6\n" \
    "  mla r7, r10, r9, r7\n"
#define TC_DOT_RAW_M3_GROUP \
    TC_DOT_RAW_M3_STEP(1) \
    TC_DOT_RAW_M3_STEP(2) \
    TC_DOT_RAW_M3_STEP(3) \
    "  ldrsb r9, [r11], #4\n" \
    "  ldrsb r8, [r2], #4\n" \
    "  ldrsb r10, [r0], #4\n" \
    "  mla r4, r10, r8, r4\n" \
    "  mla r5, r10, r9, r5\n" \
    "  ldrsb r10, [r1], #4\n" \
    "  mla r6, r10, r8, r6\n" \
    "  mla r7, r10, r9, r7\n"
__asm__(
    TC_DOT_RAW_PROLOGUE("tc_dot_rows_raw_asm")
    TC_DOT_RAW_M3_GROUP
    "3:\n"
    TC_DOT_RAW_M3_GROUP
    TC_DOT_EPILOGUE("tc_dot_rows_raw_asm", TC_DOT_NEXT_ROWS));
#define TC_HAVE_DOT_RAW_ASM 1
#else
#define TC_HAVE_DOT_RAW_ASM 0
#endif

/* Rows r .. rows - 1 (two at a time, an odd last one alone) times the raw int8 inputs of
 * pixels a and b from input i on, added to acc[2r + pixel] (which start at their bias). */
static void tc_dot_raw_c(const int8_t *w, int32_t r, int32_t rows, int32_t k, int32_t i0,
                         const int8_t *a, const int8_t *b, int32_t *acc)
{
    int32_t i;
    for (; r < rows; r += 2) {
        const int8_t *const u = w + r * k, *const v = r + 1 < rows ? u + k : u;
        int32_t s00 = 0, s01 = 0, s10 = 0, s11 = 0;
        i = i0;
#if TC_USE_DSP
        for (; i + 4 <= k; i += 4) {
            const int32_t xa = tc_read_s32(a + i), xb = tc_read_s32(b + i);
            const int32_t a02 = __sxtb16(xa), a13 = tc_sxtb16_ror8(xa);
            const int32_t b02 = __sxtb16(xb), b13 = tc_sxtb16_ror8(xb);
            int32_t wv = tc_read_s32(u + i), w02 = __sxtb16(wv), w13 = tc_sxtb16_ror8(wv);
            s00 = __smlad(w13, a13, __smlad(w02, a02, s00));
            s01 = __smlad(w13, b13, __smlad(w02, b02, s01));
            wv = tc_read_s32(v + i);
            w02 = __sxtb16(wv);
            w13 = tc_sxtb16_ror8(wv);
            s10 = __smlad(w13, a13, __smlad(w02, a02, s10));
            s11 = __smlad(w13, b13, __smlad(w02, b02, s11));
        }
#endif
        for (; i < k; i++) {
            const int32_t x = a[i], y = b[i];
            s00 += u[i] * x;
            s01 += u[i] * y;
            s10 += v[i] * x;
            s11 += v[i] * y;
        }
        acc[2 * r] += s00;
        acc[2 * r + 1] += s01;
        if (r + 1 < rows) {
            acc[2 * r + 2] += s10;
            acc[2 * r + 3] += s11;
        }
    }
}

/* acc[2r + pixel] = bias[r] + row r of the rows rows times the raw int8 inputs a (pixel 0)
 * and b (pixel 1): no column. w16: export's int16 row pairs, or NULL. */
static void tc_dot_rows_raw(const int8_t *w, const int16_t *w16, int32_t rows, int32_t k,
                            const int8_t *a, const int8_t *b, const int32_t *bias, int32_t *acc)
{
    int32_t r = 0;
#if TC_USE_DSP && defined(__thumb2__)
    if (w16 != NULL && rows >= 2) { /* the assembly starts its rows at their bias */
        tc_dot_rows_raw_s16_asm(w16, rows >> 1, k, a, bias, acc, b);
        r = rows & ~1;
    }
#else
    (void)w16;
#endif
#if TC_HAVE_DOT_RAW_ASM
    if (r == 0 && rows >= 2 && k >= 4) {
        tc_dot_rows_raw_asm(w, rows >> 1, k, a, bias, acc, b);
        r = rows & ~1;
        if (k & 3) {
            tc_dot_raw_c(w, 0, r, k, k & ~3, a, b, acc);
        }
    }
#endif
    if (r < rows) {
        const int32_t first = r;
        for (; r < rows; r++) {
            acc[2 * r] = acc[2 * r + 1] = bias[r];
        }
        tc_dot_raw_c(w, first, rows, k, 0, a, b, acc);
    }
}

/* tc_store_fast_rows (tc_matmul.h): tc_requant_double_fast per output, M4 SMMULR, M3 SMULL
 * plus the rounding bit; the assembly reads tc_requant_fast as four consecutive words. */
typedef char tc_fast_is_four_words[sizeof(tc_requant_fast) == 16 ? 1 : -1];
#if defined(__thumb2__)
#if TC_USE_DSP
#define TC_MULH_ROUND(x) "  smmulr " x ", " x ", r5\n"
#else
#define TC_MULH_ROUND(x) "  smull r4, " x ", " x ", r5\n  add " x ", " x ", r4, lsr #31\n"
#endif
#define TC_CLAMP(x) \
    "  cmp " x ", r3\n  it lt\n  movlt " x ", r3\n" \
    "  cmp " x ", r12\n  it gt\n  movgt " x ", r12\n"
/* act_max = 127 (no activation or ReLU): SSAT does the upper side */
#define TC_CLAMP_127(x) \
    "  ssat " x ", #8, " x "\n" \
    "  cmp " x ", r3\n  it lt\n  movlt " x ", r3\n"
/* One output channel of both pixels; `loop` and `stop` are local labels. */
#define TC_STORE_ROW(loop, stop, clamp) \
    loop ":\n" \
    "  ldm r1!, {r4-r7}\n" /* fast, multiplier, offset, right */ \
    "  cbz r4, " stop "f\n" \
    "  ldrd r8, r9, [r0], #8\n" \
    "  lsl r8, r8, #1\n" \
    "  lsl r9, r9, #1\n" \
    TC_MULH_ROUND("r8") \
    TC_MULH_ROUND("r9") \
    "  add r4, r8, r6\n" \
    "  add r8, r4, r8, asr #31\n" \
    "  add r4, r9, r6\n" \
    "  add r9, r4, r9, asr #31\n" \
    "  asr r8, r8, r7\n" \
    "  asr r9, r9, r7\n" \
    clamp("r8") \
    clamp("r9") \
    "  strb r9, [r10], #1\n" \
    "  strb r8, [r11], #1\n" \
    "  cmp r1, r2\n" \
    "  bne " loop "b\n" \
    "  b 9f\n" \
    stop ":\n" \
    "  sub r1, r1, #16\n"
__asm__(
    TC_ASM_BEGIN("tc_store_fast_rows")
    "  push {r4-r11, lr}\n"
    "  ldr r12, [sp, #36]\n"
    "  ldrd r10, r11, [sp, #40]\n"
    "  mov lr, r1\n"
    "  add r2, r1, r2, lsl #4\n"
    "  cmp r1, r2\n"
    "  beq 9f\n"
    "  cmp r12, #127\n"
    "  beq 5f\n"
    TC_STORE_ROW("1", "8", TC_CLAMP)
    "  b 9f\n"
    TC_STORE_ROW("5", "7", TC_CLAMP_127)
    "9:\n"
    "  sub r0, r1, lr\n"
    "  asr r0, r0, #4\n"
    "  pop {r4-r11, pc}\n"
    TC_ASM_END("tc_store_fast_rows"));
#else
int32_t tc_store_fast_rows(const int32_t *acc, const tc_requant_fast *f, int32_t n, int32_t lo,
                           int32_t hi, int8_t *first, int8_t *out0)
{
    const tc_requant_fast *const start = f, *const end = f + n;
    for (; f != end && f->fast; f++, acc += 2) {
        const int32_t v1 = tc_requant_double_fast((int32_t)((uint32_t)acc[1] << 1), f);
        const int32_t v0 = tc_requant_double_fast((int32_t)((uint32_t)acc[0] << 1), f);
        *first++ = (int8_t)(v1 < lo ? lo : (v1 > hi ? hi : v1));
        *out0++ = (int8_t)(v0 < lo ? lo : (v0 > hi ? hi : v0));
    }
    return (int32_t)(f - start);
}
#endif

/* Rows are worked TC_PAIR_CHUNK at a time: their accumulators live on the stack between the
 * dot products and the requantization. */
#define TC_PAIR_CHUNK 32

static const int32_t tc_zero_bias[TC_PAIR_CHUNK];

/* tc_matmul_pair, and with w16 != NULL (Cortex-M4 only) the row pairs' dot products from the
 * int16 weights export wrote (tc_matmul_pair_s16). */
TC_INLINE void tc_matmul_pair_any(const int8_t *weights, const int16_t *w16, int32_t rows,
                                  int32_t k, const int16_t *col, const int8_t *a,
                                  const int8_t *b, int32_t raw, const tc_matmul_output *o,
                                  int8_t *out0, int8_t *out1)
{
    const int32_t *bias = o->bias ? o->bias + o->first_channel : NULL;
    const int32_t lo = o->act_min, hi = o->act_max;
    /* pixel 1 is stored first, so that without it out0's store wins */
    int8_t *const first = out1 != NULL ? out1 : out0;
    int32_t acc[2 * TC_PAIR_CHUNK];
    int32_t r0, i;
#if !(TC_USE_DSP && defined(__thumb2__))
    (void)w16;
#endif
    for (r0 = 0; r0 < rows; r0 += TC_PAIR_CHUNK) {
        const int32_t n = rows - r0 < TC_PAIR_CHUNK ? rows - r0 : TC_PAIR_CHUNK;
        const int32_t *chunk_bias = bias != NULL ? bias + r0 : tc_zero_bias;
        if (raw) { /* a constant where this is inlined */
            tc_dot_rows_raw(weights + r0 * k, w16 != NULL ? w16 + r0 * k : NULL, n, k, a, b,
                            chunk_bias, acc);
        } else
#if TC_USE_DSP && defined(__thumb2__)
        if (w16 != NULL && n >= 2) {
            tc_dot_rows_s16_asm(w16 + r0 * k, n >> 1, k, col, chunk_bias, acc);
        } else
#endif
        {
            tc_dot_rows(weights + r0 * k, n >> 1, k, col, chunk_bias, acc);
        }
        if (!raw && (n & 1)) {
            acc[2 * n - 2] = acc[2 * n - 1] = chunk_bias[n - 1];
            tc_dot_pair_1x2(weights + (r0 + n - 1) * k, col, k, acc + 2 * (n - 1));
        }
        for (i = 0; i < n; i++) {
            if (o->fast != NULL) {
                i += tc_store_fast_rows(acc + 2 * i, o->fast + r0 + i, n - i, lo, hi,
                                        first + r0 + i, out0 + r0 + i);
                if (i == n) {
                    break;
                }
            }
            tc_store_channel(o, r0 + i, acc[2 * i], acc[2 * i + 1], out0, out1);
        }
    }
}

void tc_matmul_pair(const int8_t *weights, int32_t rows, int32_t k, const int16_t *col,
                    const tc_matmul_output *o, int8_t *out0, int8_t *out1)
{
    tc_matmul_pair_any(weights, NULL, rows, k, col, NULL, NULL, 0, o, out0, out1);
}

void tc_matmul_pair_raw(const int8_t *weights, const int16_t *w16, int32_t rows, int32_t k,
                        const int8_t *a, const int8_t *b, const tc_matmul_output *o,
                        int8_t *out0, int8_t *out1)
{
    tc_matmul_pair_any(weights, w16, rows, k, NULL, a, b, 1, o, out0, out1);
}

#if TC_USE_DSP && defined(__thumb2__)
void tc_matmul_pair_s16(const int8_t *weights, const int16_t *w16, int32_t rows, int32_t k,
                        const int16_t *col, const tc_matmul_output *o, int8_t *out0,
                        int8_t *out1)
{
    tc_matmul_pair_any(weights, w16, rows, k, col, NULL, NULL, 0, o, out0, out1);
}
#endif

/* fully_connected: rows x k int8 weights times k raw int8 inputs, no scratch. Four rows per
 * pass share each input load; two- and one-row passes take the rows % 4 left over. On Thumb-2
 * an assembly loop takes the first k & ~7 inputs of a pass; C the rest (and everything on the
 * Cortex-M0 and the host). The loops only post-increment the input and row pointers, so the
 * rows and the input may start at any byte. */
#if defined(__thumb2__)
/* acc[0 .. R - 1] += rows 0 .. R - 1 of w (row r at w + r * k) times x[0 .. n - 1], n a
 * positive multiple of 8; R = 4, 2, 1. acc has four words (all are loaded and stored back). */
void tc_fc_rows4_asm(const int8_t *x, const int8_t *w, int32_t k, int32_t n, int32_t *acc);
void tc_fc_rows2_asm(const int8_t *x, const int8_t *w, int32_t k, int32_t n, int32_t *acc);
void tc_fc_rows1_asm(const int8_t *x, const int8_t *w, int32_t k, int32_t n, int32_t *acc);
/* Registers: r0 x, r1-r4 the rows, r5-r8 the sums, lr the end of x; acc is re-read from the
 * caller's frame at the end. TC_FC_TEST_N's flags outlive the ADDs, LDR and LDM up to
 * TC_FC_ENTER. */
#define TC_FC_PROLOGUE(name) \
    TC_ASM_BEGIN(name) \
    "  push {r4-r11, lr}\n" \
    TC_FC_TEST_N \
    "  add lr, r0, r3\n" \
    "  add r3, r1, r2, lsl #1\n" \
    "  add r4, r3, r2\n" \
    "  add r2, r1, r2\n" \
    "  ldr r12, [sp, #36]\n" \
    "  ldm r12, {r5-r8}\n" \
    TC_FC_ENTER \
    "1:\n"
#define TC_FC_EPILOGUE(name) \
    "  cmp r0, lr\n" \
    "  bne 1b\n" \
    "  ldr r12, [sp, #36]\n" \
    "  stm r12, {r5-r8}\n" \
    "  pop {r4-r11, pc}\n" \
    TC_ASM_END(name)
#if TC_USE_DSP
/* Cortex-M4: per four inputs one LDR and two SXTB16 of the inputs, then per row one LDR, two
 * SXTB16 and two SMLADs (x0 x2 and x1 x3 against w0 w2 and w1 w3): 94 instructions per 64
 * MACs with four rows. Four groups a pass, entered at the third when n % 16 == 8. */
#define TC_FC_TEST_N "  tst r3, #8\n"
#define TC_FC_ENTER "  bne 2f\n"
#define TC_FC_X "  ldr r9, [r0], #4\n  sxtb16 r10, r9, ror #8\n  sxtb16 r9, r9\n"
#define TC_FC_ROW(wp, acc) \
    "  ldr r11, [" wp "], #4\n" \
    "  sxtb16 r12, r11, ror #8\n" \
    "  sxtb16 r11, r11\n" \
    "  smlad " acc ", r11, r9, " acc "\n" \
    "  smlad " acc ", r12, r10, " acc "\n"
#define TC_FC_GROUP4 TC_FC_X TC_FC_ROW("r1", "r5") TC_FC_ROW("r2", "r6") \
    TC_FC_ROW("r3", "r7") TC_FC_ROW("r4", "r8")
#define TC_FC_GROUP2 TC_FC_X TC_FC_ROW("r1", "r5") TC_FC_ROW("r2", "r6")
#define TC_FC_GROUP1 TC_FC_X TC_FC_ROW("r1", "r5")
#define TC_FC_BODY(group) group group "2:\n" group group
#else
/* Cortex-M3: per input one LDRSB, then per row LDRSB and MLA: 74 instructions per 32 MACs
 * with four rows. Eight inputs a pass, at offsets 1..7, then offset 0 post-incrementing every
 * pointer. */
#define TC_FC_X_AT(i) "  ldrsb r9, [r0, #" #i "]\n"
#define TC_FC_ROW_AT(i, wp, t, acc) \
    "  ldrsb " t ", [" wp ", #" #i "]\n  mla " acc ", " t ", r9, " acc "\n"
#define TC_FC_ROW_LAST(wp, t, acc) \
    "  ldrsb " t ", [" wp "], #8\n  mla " acc ", " t ", r9, " acc "\n"
#define TC_FC_STEP4(i) TC_FC_X_AT(i) TC_FC_ROW_AT(i, "r1", "r10", "r5") \
    TC_FC_ROW_AT(i, "r2", "r11", "r6") TC_FC_ROW_AT(i, "r3", "r10", "r7") \
    TC_FC_ROW_AT(i, "r4", "r11", "r8")
#define TC_FC_STEP2(i) TC_FC_X_AT(i) TC_FC_ROW_AT(i, "r1", "r10", "r5") \
    TC_FC_ROW_AT(i, "r2", "r11", "r6")
#define TC_FC_STEP1(i) TC_FC_X_AT(i) TC_FC_ROW_AT(i, "r1", "r10", "r5")
#define TC_FC_LAST4 "  ldrsb r9, [r0], #8\n" TC_FC_ROW_LAST("r1", "r10", "r5") \
    TC_FC_ROW_LAST("r2", "r11", "r6") TC_FC_ROW_LAST("r3", "r10", "r7") \
    TC_FC_ROW_LAST("r4", "r11", "r8")
#define TC_FC_LAST2 "  ldrsb r9, [r0], #8\n" TC_FC_ROW_LAST("r1", "r10", "r5") \
    TC_FC_ROW_LAST("r2", "r11", "r6")
#define TC_FC_LAST1 "  ldrsb r9, [r0], #8\n" TC_FC_ROW_LAST("r1", "r10", "r5")
#define TC_FC_STEPS(step, last) \
    step(1) step(2) step(3) step(4) step(5) step(6) step(7) last
#define TC_FC_GROUP4 TC_FC_STEPS(TC_FC_STEP4, TC_FC_LAST4)
#define TC_FC_GROUP2 TC_FC_STEPS(TC_FC_STEP2, TC_FC_LAST2)
#define TC_FC_GROUP1 TC_FC_STEPS(TC_FC_STEP1, TC_FC_LAST1)
#define TC_FC_BODY(group) group
#define TC_FC_TEST_N
#define TC_FC_ENTER
#endif
__asm__(
    TC_FC_PROLOGUE("tc_fc_rows4_asm")
    TC_FC_BODY(TC_FC_GROUP4)
    TC_FC_EPILOGUE("tc_fc_rows4_asm"));
__asm__(
    TC_FC_PROLOGUE("tc_fc_rows2_asm")
    TC_FC_BODY(TC_FC_GROUP2)
    TC_FC_EPILOGUE("tc_fc_rows2_asm"));
__asm__(
    TC_FC_PROLOGUE("tc_fc_rows1_asm")
    TC_FC_BODY(TC_FC_GROUP1)
    TC_FC_EPILOGUE("tc_fc_rows1_asm"));
#endif

/* acc[0 .. rows - 1] += rows 0 .. rows - 1 of w (stride k) times x[i .. k - 1]; rows is a
 * constant 4, 2 or 1 where this is inlined. */
TC_INLINE void tc_fc_dot_c(const int8_t *x, const int8_t *w, int32_t k, int32_t i,
                           int32_t rows, int32_t *acc)
{
    int32_t a0 = acc[0], a1 = 0, a2 = 0, a3 = 0;
    const int8_t *w0 = w, *w1 = w + k, *w2 = w + 2 * k, *w3 = w + 3 * k;
    for (; i < k; i++) {
        const int32_t v = x[i];
        a0 += w0[i] * v;
        if (rows >= 2) {
            a1 += w1[i] * v;
        }
        if (rows == 4) {
            a2 += w2[i] * v;
            a3 += w3[i] * v;
        }
    }
    acc[0] = a0;
    if (rows >= 2) {
        acc[1] += a1;
    }
    if (rows == 4) {
        acc[2] += a2;
        acc[3] += a3;
    }
}

static void tc_fc_dot(const int8_t *x, const int8_t *w, int32_t k, int32_t rows, int32_t *acc)
{
    int32_t i = 0;
#if defined(__thumb2__)
    i = k & ~7;
    if (i > 0) {
        if (rows == 4) {
            tc_fc_rows4_asm(x, w, k, i, acc);
        } else if (rows == 2) {
            tc_fc_rows2_asm(x, w, k, i, acc);
        } else {
            tc_fc_rows1_asm(x, w, k, i, acc);
        }
    }
    if (i == k) {
        return;
    }
#endif
    if (rows == 4) {
        tc_fc_dot_c(x, w, k, i, 4, acc);
    } else if (rows == 2) {
        tc_fc_dot_c(x, w, k, i, 2, acc);
    } else {
        tc_fc_dot_c(x, w, k, i, 1, acc);
    }
}

void tc_matmul_vector(const int8_t *weights, int32_t rows, int32_t k, const int8_t *x,
                      int32_t input_zero_point, const tc_matmul_output *o, int8_t *out)
{
    const int32_t *bias = o->bias ? o->bias + o->first_channel : NULL;
    int32_t r, j, i;
    for (r = 0; r < rows; r += j) {
        const int32_t n = rows - r >= 4 ? 4 : (rows - r >= 2 ? 2 : 1);
        const int8_t *w = weights + r * k;
        int32_t acc[4];
        for (j = 0; j < n; j++) {
            uint32_t sum = 0;
            if (input_zero_point != 0) { /* bias - zp * sum w, wrapping like int32 */
                for (i = 0; i < k; i++) {
                    sum += (uint32_t)(int32_t)w[j * k + i];
                }
            }
            acc[j] = (int32_t)((uint32_t)(bias ? bias[r + j] : 0) -
                               (uint32_t)input_zero_point * sum);
        }
        tc_fc_dot(x, w, k, n, acc);
        for (j = 0; j < n; j++) {
            tc_store_channel(o, r + j, acc[j], 0, out, NULL);
        }
    }
}
