/* Depthwise conv2d with a channel multiplier: output channel m reads input channel
 * m / multiplier.
 *
 * 3x3 kernels without horizontal dilation take the channel-major path: one input channel at a
 * time, its rows are copied as int16 into a "column buffer" of three row slots, so that a
 * 3x3 window is three consecutive columns and a whole output row is one pass of a hand-written
 * loop with the nine weights in registers (tc_dw3_pairs / tc_dw3_singles). Column i holds
 * 12 bytes: the values of slots 0, 1, 2, a zero, then the int32 accumulator of the output
 * whose window starts at column i. Values are raw int8 (not x - zero point): padding columns
 * hold the zero point and the zero-point correction goes into the row's bias, so the copy is a
 * plain strided load and store. A row that lies in the padding gets zero weights instead of a
 * slot. Weights and bias are doubled so the loop yields 2 * acc, which is what the fast
 * requantization multiplies (tc_requant_double_fast). Slots are reused across output rows: a
 * stride-1 layer copies each input row once per channel.
 *
 * Per-channel constants come from export (rq->fast: the fast requantization's two flag bits,
 * the multiplier, offset and right derived from them and the layer's multiplier and shift at
 * channel start; rq->folded_bias: bias - zp * sum of the nine weights; tc_depthwise.h); a
 * row's bias adds back the zero-point term of its tap rows in the padding. A caller that
 * passes none (rq->fast,
 * rq->folded_bias NULL) gets the same derived here, once per channel and block.
 *
 * On Cortex-M a fast channel of a stride-1 layer takes the fused path: tc_dw_fused_rows walks a
 * block's rows from a row list built once per block (the copies, then tc_dw3_pairs_store: two
 * outputs per iteration, requantized and stored in the same loop). On the Cortex-M3 its columns
 * are packed (three words per column, slot s holding x[j] + x[j + 1] * 2^23, from a spare column
 * left of the first), so one SMLAL per tap serves both outputs of a pair; on the Cortex-M4 they
 * are the int16 columns above and the pair's two outputs are clamped as halfwords.
 *
 * Other shapes take a direct loop over the taps that fall inside the image. Cores without
 * these Thumb-2 loops (the Cortex-M0, the host build) read a 3x3 layer in place instead
 * (tc_depthwise_inplace.c).
 *
 * Scratch beside CMSIS-NN: none, as arm_depthwise_conv_3x3_s8. The column buffer (12 B per
 * input column of one channel's three rows: 216 B on the bench's 14x14x32 layer, 84-636 B on
 * the MLPerf Tiny models) is needed on Thumb-2 cores only, and finds room (tc_dw_columns): the
 * caller's scratch when another layer made it large enough (at no cost); else, block by block,
 * input rows no later output row reads, when no later layer reads the input (export's flag,
 * input_spare), or output rows not yet written. A block whose columns live in the output's
 * tail ends before it, and its channels' set-up runs again in the next block: about 380
 * instructions a channel, 3.54 -> 3.76 (M3) and 2.98 -> 3.19 (M4) instructions per MAC on the
 * bench layer run alone (benchmarks/bench_kernels_arm.py --depthwise-alone). When neither holds
 * it (an input read again later, no output row left unwritten), the remaining rows take the
 * direct loop. The buffer stays because it is what holds the instructions per MAC: a 3x3
 * window is three consecutive columns at immediate offsets, so the nine weights and the bias
 * stay in registers (the Cortex-M4's SMLAD pairs) and the M3 serves two outputs with one SMLAL
 * per tap. Read in place, a tap value costs an LDRSB at a register offset (rows and columns are
 * runtime strides apart) and the pair packing is redone per output; the sliding-window loops
 * worked out for that (a horizontal int16 pair per tap row, the next pair's partial sums
 * started as each value arrives) come to about 23.5 instructions per output on the M4 (counted,
 * not built) before the per-row edges, against 22 for the column loops' pair, copy and store.
 * Written in C, the in-place loop measures 11.8 on both. */
#include <stddef.h>

#include "tc_asm.h"
#include "tc_depthwise.h"

/* hot loop: optimize for speed even in an -Os image */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif

#define TC_DW_COL 6 /* int16 per column */


/* First tap index t with 0 <= start + t * step, and one past the last with start + t * step
 * < size, clipped to [0, taps]. */
static void tc_valid_taps(int32_t start, int32_t step, int32_t taps, int32_t size,
                          int32_t *first, int32_t *end)
{
    int32_t lo = 0, hi;
    if (start < 0) {
        lo = (-start + step - 1) / step;
    }
    hi = size - start <= 0 ? 0 : (size - start - 1) / step + 1;
    *first = lo;
    *end = hi < taps ? hi : taps;
}

static int tc_depthwise_direct(const tc_conv_params *params, const tc_requant_params *rq,
                               const tc_dims *in_dims, const int8_t *input,
                               const tc_filter_dims *filter, const int8_t *weights,
                               const int32_t *bias, const tc_dims *out_dims, int8_t *output)
{
    const int32_t channels = in_dims->c;
    const int32_t taps = filter->kh * filter->kw;
    const int32_t zp = params->input_zero_point;
    const int32_t multiplier = filter->m / channels;
    int32_t oy, ox, m;
    for (oy = 0; oy < out_dims->h; oy++) {
        const int32_t y0 = oy * params->stride_h - params->pad_top;
        int32_t ky0, ky1;
        tc_valid_taps(y0, params->dilation_h, filter->kh, in_dims->h, &ky0, &ky1);
        for (ox = 0; ox < out_dims->w; ox++) {
            const int32_t x0 = ox * params->stride_w - params->pad_left;
            int8_t *out = output + (oy * out_dims->w + ox) * out_dims->c;
            int32_t kx0, kx1;
            tc_valid_taps(x0, params->dilation_w, filter->kw, in_dims->w, &kx0, &kx1);
            for (m = 0; m < filter->m; m++) {
                const int8_t *w = weights + m * taps;
                /* index arithmetic, not pointers: the window corner may lie in the padding */
                const int32_t base = (y0 * in_dims->w + x0) * channels + m / multiplier;
                const int32_t xstep = params->dilation_w * channels;
                const int32_t ystep = params->dilation_h * in_dims->w * channels;
                int32_t acc = tc_dw_bias(rq, m, w, taps, bias, zp), wsum = 0, ky, kx;
                for (ky = ky0; ky < ky1; ky++) {
                    const int8_t *wr = w + ky * filter->kw;
                    const int8_t *xr = input + base + ky * ystep + kx0 * xstep;
                    for (kx = kx0; kx < kx1; kx++, xr += xstep) {
                        const int32_t wv = wr[kx];
                        acc += wv * *xr;
                        wsum += wv;
                    }
                }
                acc -= wsum * zp;
                out[m] = tc_clamp_s8(tc_requantize(acc, rq, m) + params->output_zero_point,
                                     params->act_min, params->act_max);
            }
        }
    }
    return TC_OK;
}

/* The column loops. wk: the nine (doubled) weights column-major, wk[kx * 3 + slot]; packed
 * for SMLAD on the Cortex-M4 as {w[0][0] | w[0][1] << 16, w[0][2], w[1][0] | ..., ...}.
 * pairs: outputs 2i and 2i + 1 start at columns 2i and 2i + 1 (stride 1); singles: output i
 * starts at byte i * step. Each stores its accumulator at byte 8 of its first column. */
#if defined(__thumb2__) && defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define TC_DW_PACKED 1
#define TC_DW_ASM 1
#define TC_DW_FUSED 1
#define TC_DW_SMLAL 0
#define TC_DW_COPY "tc_dw_copy_row"
#define TC_DW_END_AT -4 /* the end's byte offset in tc_dw3_pairs_store's block */
/* 20 instructions per 18 MACs: the window's columns are two words each, (slot 0, slot 1) and
 * (slot 2, 0), against the packed weight pairs; the middle two columns feed both outputs. */
void tc_dw3_pairs(int16_t *cols, const int32_t *wk, int32_t pairs, int32_t bias);
void tc_dw3_singles(int16_t *cols, const int32_t *wk, int32_t count, int32_t bias,
                    int32_t step);
/* Outputs 2i (r10) and 2i + 1 (r11) from the columns at r0, which moves on by two columns;
 * weights in r4-r9, bias in r3. */
#define TC_DW_M4_PAIR \
    "  ldrd r12, lr, [r0, #12]\n" \
    "  smlad r10, r6, r12, r3\n" \
    "  smlad r10, r7, lr, r10\n" \
    "  smlad r11, r4, r12, r3\n" \
    "  smlad r11, r5, lr, r11\n" \
    "  ldrd r12, lr, [r0, #24]\n" \
    "  smlad r10, r8, r12, r10\n" \
    "  smlad r10, r9, lr, r10\n" \
    "  smlad r11, r6, r12, r11\n" \
    "  smlad r11, r7, lr, r11\n" \
    "  ldrd r12, lr, [r0, #36]\n" \
    "  smlad r11, r8, r12, r11\n" \
    "  smlad r11, r9, lr, r11\n" \
    "  ldrd r12, lr, [r0], #24\n" \
    "  smlad r10, r4, r12, r10\n" \
    "  smlad r10, r5, lr, r10\n"
__asm__(
    TC_ASM_BEGIN("tc_dw3_pairs")
    "  push {r4-r11, lr}\n"
    "  ldm r1, {r4-r9}\n"
    "  add r2, r2, r2, lsl #1\n"
    "  add r2, r0, r2, lsl #3\n"
    "1:\n"
    TC_DW_M4_PAIR
    "  str r11, [r0, #-4]\n"
    "  str r10, [r0, #-16]\n"
    "  cmp r0, r2\n"
    "  bne 1b\n"
    "  pop {r4-r11, pc}\n"
    TC_ASM_END("tc_dw3_pairs")
    TC_ASM_BEGIN("tc_dw3_singles")
    "  push {r4-r11, lr}\n"
    "  ldm r1, {r4-r9}\n"
    "  ldr r1, [sp, #36]\n"
    "  mul r2, r2, r1\n"
    "  add r2, r0, r2\n"
    "1:\n"
    "  ldrd r12, lr, [r0]\n"
    "  smlad r10, r4, r12, r3\n"
    "  smlad r10, r5, lr, r10\n"
    "  ldrd r12, lr, [r0, #12]\n"
    "  smlad r10, r6, r12, r10\n"
    "  smlad r10, r7, lr, r10\n"
    "  ldrd r12, lr, [r0, #24]\n"
    "  smlad r10, r8, r12, r10\n"
    "  smlad r10, r9, lr, r10\n"
    "  str r10, [r0, #8]\n"
    "  add r0, r0, r1\n"
    "  cmp r0, r2\n"
    "  bne 1b\n"
    "  pop {r4-r11, pc}\n"
    TC_ASM_END("tc_dw3_singles"));
#elif defined(__thumb2__)
#define TC_DW_PACKED 0
#define TC_DW_ASM 1
#define TC_DW_FUSED 1
#define TC_DW_SMLAL 1 /* fused channels use packed columns */
#define TC_DW_COPY "tc_dw_copy_packed"
#define TC_DW_END_AT 68
/* Cortex-M3: 34 instructions per 18 MACs, one LDRSH per column value (12 for the two
 * windows) and the nine weights in r4-r12. No register is left for the bias: the caller adds
 * it (TC_DW_BIAS_IN_LOOP). */
void tc_dw3_pairs(int16_t *cols, const int32_t *wk, int32_t pairs, int32_t bias);
void tc_dw3_singles(int16_t *cols, const int32_t *wk, int32_t count, int32_t bias,
                    int32_t step);
#define TC_DW_M3_TAP(acc, w, off) \
    "  ldrsh r3, [r0, #" #off "]\n" \
    "  mla " #acc ", " #w ", r3, " #acc "\n"
__asm__(
    TC_ASM_BEGIN("tc_dw3_pairs")
    "  push {r4-r11, lr}\n"
    "  ldm r1, {r4-r12}\n"
    "  add r2, r2, r2, lsl #1\n"
    "  add r2, r0, r2, lsl #3\n"
    "1:\n"
    "  ldrsh r3, [r0, #12]\n"
    "  mul r1, r7, r3\n"
    "  mul lr, r4, r3\n"
    "  ldrsh r3, [r0, #14]\n"
    "  mla r1, r8, r3, r1\n"
    "  mla lr, r5, r3, lr\n"
    "  ldrsh r3, [r0, #16]\n"
    "  mla r1, r9, r3, r1\n"
    "  mla lr, r6, r3, lr\n"
    "  ldrsh r3, [r0, #24]\n"
    "  mla r1, r10, r3, r1\n"
    "  mla lr, r7, r3, lr\n"
    "  ldrsh r3, [r0, #26]\n"
    "  mla r1, r11, r3, r1\n"
    "  mla lr, r8, r3, lr\n"
    "  ldrsh r3, [r0, #28]\n"
    "  mla r1, r12, r3, r1\n"
    "  mla lr, r9, r3, lr\n"
    TC_DW_M3_TAP(lr, r10, 36)
    TC_DW_M3_TAP(lr, r11, 38)
    TC_DW_M3_TAP(lr, r12, 40)
    "  str lr, [r0, #20]\n"
    TC_DW_M3_TAP(r1, r5, 2)
    TC_DW_M3_TAP(r1, r6, 4)
    "  ldrsh r3, [r0], #24\n"
    "  mla r1, r4, r3, r1\n"
    "  str r1, [r0, #-16]\n"
    "  cmp r0, r2\n"
    "  bne 1b\n"
    "  pop {r4-r11, pc}\n"
    TC_ASM_END("tc_dw3_pairs")
    TC_ASM_BEGIN("tc_dw3_singles")
    "  push {r4-r11, lr}\n"
    "  ldm r1, {r4-r12}\n"
    "  ldr lr, [sp, #36]\n"
    "  mul r2, r2, lr\n"
    "  add r2, r0, r2\n"
    "1:\n"
    "  ldrsh r3, [r0]\n"
    "  mul r1, r4, r3\n"
    TC_DW_M3_TAP(r1, r5, 2)
    TC_DW_M3_TAP(r1, r6, 4)
    TC_DW_M3_TAP(r1, r7, 12)
    TC_DW_M3_TAP(r1, r8, 14)
    TC_DW_M3_TAP(r1, r9, 16)
    TC_DW_M3_TAP(r1, r10, 24)
    TC_DW_M3_TAP(r1, r11, 26)
    TC_DW_M3_TAP(r1, r12, 28)
    "  str r1, [r0, #8]\n"
    "  add r0, r0, lr\n"
    "  cmp r0, r2\n"
    "  bne 1b\n"
    "  pop {r4-r11, pc}\n"
    TC_ASM_END("tc_dw3_singles"));
#else
#define TC_DW_PACKED 0
#define TC_DW_ASM 0
#define TC_DW_FUSED 0
#define TC_DW_SMLAL 0
#endif

/* None: the Thumb-2 column kernel finds room for its column buffer (tc_dw_columns), and
 * elsewhere a 3x3 layer is read in place (tc_depthwise_inplace.c). */
int32_t tc_depthwise_conv2d_get_buffer_size(int32_t out_w, int32_t stride_w)
{
    (void)out_w;
    (void)stride_w;
    return 0;
}

/* the Cortex-M3 loops leave the bias out */
#define TC_DW_BIAS_IN_LOOP (!(TC_DW_ASM && !TC_DW_PACKED))

#if TC_DW_ASM /* the column kernel */

/* Copy count values of one input row of one channel (src, stride `channels`) into slot s of
 * consecutive columns. Out of line so that its loop keeps everything in registers; external
 * for tc_dw_fused_rows. */
void tc_dw_copy_row(int16_t *dst, const int8_t *src, int32_t channels, int32_t count);
TC_NOINLINE void tc_dw_copy_row(int16_t *dst, const int8_t *src, int32_t channels,
                                int32_t count)
{
    int16_t *const end = dst + count * TC_DW_COL;
    const int32_t c2 = 2 * channels, c3 = 3 * channels;
    for (; dst + 4 * TC_DW_COL <= end; dst += 4 * TC_DW_COL, src += 4 * channels) {
        const int16_t a = src[0], b = src[channels], c = src[c2], d = src[c3];
        dst[0] = a;
        dst[TC_DW_COL] = b;
        dst[2 * TC_DW_COL] = c;
        dst[3 * TC_DW_COL] = d;
    }
    for (; dst < end; dst += TC_DW_COL, src += channels) {
        dst[0] = src[0];
    }
}

/* Requantize, clamp and store the count accumulators of one output row (a fast channel).
 * On Cortex-M the loop is hand-written (tc_dw_store_row): the constants stay in registers and
 * act_max = 127 (no activation, ReLU) clamps the upper side with one SSAT. */
typedef struct {
    int32_t multiplier, offset, right, lo, hi, bias, out_stride, step;
} tc_dw_store_args;

#if defined(__thumb2__)
/* acc: the first accumulator (byte 8 of the first column); args as tc_dw_store_args, whose
 * bias the loop adds only where the column loops leave it out (Cortex-M3). The Cortex-M4 loop
 * needs multiplier >= 0. */
void tc_dw_store_row(const int16_t *acc, int32_t count, int8_t *out,
                     const tc_dw_store_args *args);
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
/* SMMLAR adds the offset to the rounded high word; the sign term is the accumulator's, which
 * gives the same result as the high word's for a multiplier >= 0 (the caller's condition): they
 * differ only when the high word is 0, and (offset - 1) >> right = offset >> right. */
#define TC_DW_M4_RQ(x, acc, mul, offset, right) \
    "  smmlar " x ", " acc ", " mul ", " offset "\n" \
    "  add " x ", " x ", " acc ", asr #31\n" \
    "  asr " x ", " x ", " right "\n"
#define TC_DW_REQUANT(ld) \
    "  ldr lr, [r0" ld "]\n" \
    TC_DW_M4_RQ("r12", "lr", "r4", "r5", "r6")
#else
/* x = requantized t (tmp: scratch), as tc_requant_double_fast */
#define TC_DW_M3_RQ(x, t, tmp, mul, offset, right) \
    "  smull " tmp ", " x ", " t ", " mul "\n" \
    "  add " x ", " x ", " tmp ", lsr #31\n" \
    "  add " x ", " x ", " x ", asr #31\n" \
    "  add " x ", " x ", " offset "\n" \
    "  asr " x ", " x ", " right "\n"
#define TC_DW_REQUANT(ld) \
    "  ldr r12, [r0" ld "]\n" \
    "  add r12, r12, r9\n" \
    TC_DW_M3_RQ("r12", "r12", "lr", "r4", "r5", "r6")
#endif
/* One output: the accumulator at [r0 + ld], the byte to [r2 + st]. */
#define TC_DW_STORE_ONE(ld, st, clamp) \
    TC_DW_REQUANT(ld) \
    clamp \
    "  strb r12, [r2" st "]\n"
/* An odd count stores one output first; then two per iteration (r1 counts down). */
#define TC_DW_STORE_LOOP(loop, clamp) \
    "  tst r1, #1\n" \
    "  beq " loop "f\n" \
    TC_DW_STORE_ONE("", "", clamp) \
    "  add r0, r0, r11\n" \
    "  add r2, r2, r10\n" \
    "  subs r1, r1, #1\n" \
    "  beq 9f\n" \
    loop ":\n" \
    TC_DW_STORE_ONE("", "", clamp) \
    TC_DW_STORE_ONE(", r11", ", r10", clamp) \
    "  add r0, r0, r11, lsl #1\n" \
    "  add r2, r2, r10, lsl #1\n" \
    "  subs r1, r1, #2\n" \
    "  bne " loop "b\n"
/* Clamp register x to [lo, hi]; with act_max = 127, SSAT does the upper side. */
#define TC_DW_CLAMP_BOTH(x, lo, hi) \
    "  cmp " x ", " lo "\n  it lt\n  movlt " x ", " lo "\n" \
    "  cmp " x ", " hi "\n  it gt\n  movgt " x ", " hi "\n"
#define TC_DW_CLAMP_SSAT(x, lo, hi) \
    "  ssat " x ", #8, " x "\n  cmp " x ", " lo "\n  it lt\n  movlt " x ", " lo "\n"
__asm__(
    TC_ASM_BEGIN("tc_dw_store_row")
    "  push {r4-r11, lr}\n"
    "  ldm r3, {r4-r11}\n"
    "  cmp r1, #0\n"
    "  ble 9f\n"
    "  cmp r8, #127\n"
    "  beq 5f\n"
    TC_DW_STORE_LOOP("1", TC_DW_CLAMP_BOTH("r12", "r7", "r8"))
    "  b 9f\n"
    "5:\n"
    TC_DW_STORE_LOOP("6", TC_DW_CLAMP_SSAT("r12", "r7", "r8"))
    "9:\n"
    "  pop {r4-r11, pc}\n"
    TC_ASM_END("tc_dw_store_row"));
/* The pair loops with the store fused (stride 1, a fast channel): outputs from the columns at
 * cols up to the end in the row's store constants (tc_dw_row_weights). */
void tc_dw3_pairs_store(int16_t *cols, const int32_t *block, int8_t *out, int32_t ssat);
#if TC_DW_PACKED
/* block: the row's bias and weights, loaded into r3-r9 for each pair, preceded by the store's
 * constants (act_min and act_max in both halfwords), loaded into the same registers for the
 * store. The pair's two outputs are clamped as the halfwords of one register (the caller's
 * condition: they fit): SSAT16 or SSUB16 + SEL for act_max, SSUB16 + SEL for act_min. */
#define TC_DW_FUSED_LOOP(loop, clamp) \
    loop ":\n" \
    "  ldm r1, {r3-r9}\n" \
    TC_DW_M4_PAIR \
    "  ldmdb r1, {r3-r9}\n" \
    TC_DW_M4_RQ("r12", "r10", "r3", "r4", "r5") \
    TC_DW_M4_RQ("lr", "r11", "r3", "r4", "r5") \
    "  pkhbt r12, r12, lr, lsl #16\n" \
    clamp \
    "  ssub16 lr, r12, r6\n" \
    "  sel r12, r12, r6\n" \
    "  strb r12, [r2]\n" \
    "  lsr lr, r12, #16\n" \
    "  strb lr, [r2, r8]\n" \
    "  add r2, r2, r8, lsl #1\n" \
    "  cmp r0, r9\n" \
    "  bne " loop "b\n"
#define TC_DW_CLAMP16_SSAT "  ssat16 r12, #8, r12\n"
#define TC_DW_CLAMP16_HI "  ssub16 lr, r7, r12\n  sel r12, r12, r7\n"
__asm__(
    TC_ASM_BEGIN("tc_dw3_pairs_store")
    "  push {r4-r11, lr}\n"
    "  cmp r3, #0\n"
    "  bne 5f\n"
    TC_DW_FUSED_LOOP("1", TC_DW_CLAMP16_HI)
    "  pop {r4-r11, pc}\n"
    TC_DW_FUSED_LOOP("5", TC_DW_CLAMP16_SSAT)
    "  pop {r4-r11, pc}\n"
    TC_ASM_END("tc_dw3_pairs_store"));
#else
/* Cortex-M3: one SMLAL per tap for both outputs of a pair. Column j holds, per slot, the word
 * x[j] + x[j + 1] * 2^23; the 64-bit accumulator starts at 2^21 + bias2 * 2^23 (bias2: the
 * doubled row bias), so with A and B the doubled-weight sums of outputs j and j + 1 it ends at
 * (2^21 + A) + (bias2 + B) * 2^23, where |A|, |B| <= 9 * 256 * 128 < 2^19 keeps the low field in
 * [0, 2^22): bits 23.. are 2 * acc of output j + 1, bits 0..22 minus 2^21 plus bias2 that of
 * output j. block: the accumulator's start, the weights by column (w[kx][slot]), then
 * multiplier, act_max, right, act_min, bias2 - 2^21, output stride, end, 2^31, offset. */
/* r12 = requantized t as TC_DW_M3_RQ, the rounding and the offset in SMLAL's start (block
 * word 18, 19); the accumulator's sign serves for the high word's as on the Cortex-M4. */
#define TC_DW_M3_RQ_START(t) \
    "  ldrd r3, r12, [r1, #72]\n" \
    "  smlal r3, r12, " t ", r4\n" \
    "  add r12, r12, " t ", asr #31\n" \
    "  asr r12, r12, r6\n"
#define TC_DW_FUSED_LOOP(loop, clamp) \
    loop ":\n" \
    "  ldmia r1!, {r2, r3, r7, r8, r9}\n" \
    "  ldmia r0!, {r4, r5, r6}\n" \
    "  smlal r2, r3, r4, r7\n" \
    "  smlal r2, r3, r5, r8\n" \
    "  smlal r2, r3, r6, r9\n" \
    "  ldmia r1!, {r7, r8, r9}\n" \
    "  ldmia r0!, {r4, r5, r6}\n" \
    "  smlal r2, r3, r4, r7\n" \
    "  smlal r2, r3, r5, r8\n" \
    "  smlal r2, r3, r6, r9\n" \
    "  ldmia r1!, {r7, r8, r9}\n" \
    "  ldmia r0, {r4, r5, r6}\n" \
    "  smlal r2, r3, r4, r7\n" \
    "  smlal r2, r3, r5, r8\n" \
    "  smlal r2, r3, r6, r9\n" \
    "  ldmia r1, {r4-r9}\n" \
    "  sub r1, r1, #44\n" \
    "  lsl lr, r3, #9\n" \
    "  orr lr, lr, r2, lsr #23\n" \
    "  ubfx r2, r2, #0, #23\n" \
    "  add r2, r2, r8\n" \
    TC_DW_M3_RQ_START("r2") \
    clamp("r12", "r7", "r5") \
    "  strb r12, [r10]\n" \
    TC_DW_M3_RQ_START("lr") \
    clamp("r12", "r7", "r5") \
    "  strb r12, [r10, r9]\n" \
    "  add r10, r10, r9, lsl #1\n" \
    "  cmp r0, r11\n" \
    "  bne " loop "b\n"
__asm__(
    TC_ASM_BEGIN("tc_dw3_pairs_store")
    "  push {r4-r11, lr}\n"
    "  mov r10, r2\n"
    "  ldr r11, [r1, #68]\n"
    "  cmp r3, #0\n"
    "  bne 5f\n"
    TC_DW_FUSED_LOOP("1", TC_DW_CLAMP_BOTH)
    "  pop {r4-r11, pc}\n"
    TC_DW_FUSED_LOOP("5", TC_DW_CLAMP_SSAT)
    "  pop {r4-r11, pc}\n"
    TC_ASM_END("tc_dw3_pairs_store"));
#endif
#endif

/* Requantize, clamp and store one output row through the exact generic requantization (any
 * scheme). */
static void tc_dw_store_exact(const int16_t *cols, int32_t step, int32_t count, int32_t bias,
                              const tc_requant_params *rq, int32_t m, const tc_conv_params *p,
                              int8_t *out, int32_t out_stride)
{
    int32_t i;
    for (i = 0; i < count; i++, cols += step, out += out_stride) {
        int32_t acc;
        __builtin_memcpy(&acc, cols + 4, sizeof acc);
        acc = (int32_t)((uint32_t)acc + (uint32_t)(TC_DW_BIAS_IN_LOOP ? 0 : bias));
        *out = tc_clamp_s8(tc_requantize(acc, rq, m) + p->output_zero_point, p->act_min,
                           p->act_max);
    }
}

/* One output channel of a 3x3 layer: its weights (doubled for a fast channel) by tap row, a
 * fourth row of zeros for slots no tap row uses (set once per layer), the tap rows' sums and
 * their total, and the bias with the zero-point term of all nine taps (folded). */
typedef struct {
    int32_t w[4][3];
    int32_t row_sum[4];
    int32_t total; /* the three rows' sum */
    int32_t bias;
    int32_t halves; /* every output before the clamp lies in int16 (the Cortex-M4 fused store) */
    tc_requant_fast f;
} tc_dw_channel;

static void tc_dw_channel_init(tc_dw_channel *ch, const int8_t *w, const int32_t *bias,
                               const tc_requant_params *rq, int32_t m, int32_t input_zp,
                               int32_t output_zp)
{
    int32_t twice, ky;
    ch->f = tc_dw_fast(rq, m, w, bias, input_zp, output_zp);
    ch->halves = (ch->f.fast & TC_DW_FAST_HALVES) != 0;
    ch->f.fast &= TC_DW_FAST;
    twice = ch->f.fast ? 2 : 1; /* a fast channel works on 2 * acc: |acc| < 2^29 cannot wrap */
    ch->bias = tc_dw_folded_bias(rq, m, w, bias, input_zp);
    for (ky = 0; ky < 3; ky++, w += 3) {
        ch->w[ky][0] = twice * w[0];
        ch->w[ky][1] = twice * w[1];
        ch->w[ky][2] = twice * w[2];
        ch->row_sum[ky] = w[0] + w[1] + w[2];
    }
    ch->total = ch->row_sum[0] + ch->row_sum[1] + ch->row_sum[2];
}

/* The output rows of a layer are planned in blocks, once for all channels: which input rows
 * each output row copies into which slot, and which arrangement of tap rows in the slots it
 * uses. A channel then builds its row weights once per arrangement (a handful: the interior
 * rows cycle through three, the padding rows add a few), not once per output row. A block ends
 * when it holds TC_DW_BLOCK_ROWS rows or a row needs an arrangement beyond the
 * TC_DW_ARRANGEMENTS it has; each block starts with empty slots. */
#define TC_DW_BLOCK_ROWS 16
#define TC_DW_ARRANGEMENTS 8

typedef struct {
    int32_t copy_off[3];  /* input rows (offsets y * row size) to copy before this row ... */
    uint8_t copy_slot[3]; /* ... into these slots */
    uint8_t copies;
    uint8_t arrangement; /* index into the block's keys */
} tc_dw_row_plan;

typedef struct {
    int32_t rows;
    int32_t keys; /* arrangements used */
    uint8_t key[TC_DW_ARRANGEMENTS]; /* tap row of slot s (3: none) in bits 2s, 2s + 1 */
    tc_dw_row_plan row[TC_DW_BLOCK_ROWS];
} tc_dw_block;

/* Out of line: inlined, gcc keeps its zeros in a VFP register on the Cortex-M4. */
static TC_NOINLINE void tc_dw_plan_block(const tc_conv_params *p, int32_t in_h,
                                         int32_t in_row, int32_t copy, int32_t group,
                                         int32_t oy0, int32_t out_h, tc_dw_block *b)
{
    int32_t slot_row[3] = {-1, -1, -1}, oy;
    b->rows = 0;
    b->keys = 0;
    for (oy = oy0; oy < out_h && b->rows < TC_DW_BLOCK_ROWS; oy++) {
        const int32_t y0 = oy * p->stride_h - p->pad_top;
        tc_dw_row_plan *r = &b->row[b->rows];
        int32_t key = 0x3f, slot[3], ky, k;
        for (ky = 0; ky < 3; ky++) {
            const int32_t y = y0 + ky * p->dilation_h;
            slot[ky] = y >= 0 && y < in_h ? (y / group) % 3 : -1;
            if (slot[ky] >= 0) {
                key = (key & ~(3 << (2 * slot[ky]))) | (ky << (2 * slot[ky]));
            }
        }
        for (k = 0; k < b->keys && b->key[k] != key; k++) {
        }
        if (k == TC_DW_ARRANGEMENTS) {
            break;
        }
        if (k == b->keys) {
            b->key[b->keys++] = (uint8_t)key;
        }
        r->arrangement = (uint8_t)k;
        r->copies = 0;
        for (ky = 0; ky < 3; ky++) {
            const int32_t y = y0 + ky * p->dilation_h, s = slot[ky];
            if (s >= 0) {
                if (slot_row[s] != y && copy > 0) {
                    r->copy_off[r->copies] = y * in_row;
                    r->copy_slot[r->copies++] = (uint8_t)s;
                }
                slot_row[s] = y;
            }
        }
        b->rows++;
    }
}

/* The row weights of one arrangement: the doubled weights of the tap row in each slot
 * (column-major, packed for SMLAD on the Cortex-M4) and the row's bias, which takes the
 * zero-point term: acc = bias + sum w * (x - zp) over the tap rows in the image, x copied raw. */
typedef struct {
#if TC_DW_SMLAL
    int32_t start[2]; /* tc_dw3_pairs_store's block: start, weights, store constants */
    int32_t w[9];
    int32_t store[9];
    int32_t bias;
#define TC_DW_BLOCK(rw) ((rw)->start)
#define TC_DW_BLOCK_AT offsetof(tc_dw_row_weights, start)
#define TC_DW_END 6
#elif TC_DW_FUSED
    /* tc_dw3_pairs_store's block: multiplier, offset, right, act_min, act_max, output stride,
     * end of the pair columns, then bias and weights */
    int32_t store[7];
    int32_t bias;
    int32_t w[9];
#define TC_DW_BLOCK(rw) (&(rw)->bias)
#define TC_DW_BLOCK_AT offsetof(tc_dw_row_weights, bias)
#define TC_DW_END 6
#else
    int32_t w[9];
    int32_t bias;
#endif
} tc_dw_row_weights;

static void tc_dw_arrange(const tc_dw_channel *ch, int32_t key, int32_t zp,
                          tc_dw_row_weights *rw)
{
    const int32_t k0 = key & 3, k1 = (key >> 2) & 3, k2 = (key >> 4) & 3;
    int32_t i;
    for (i = 0; i < 3; i++) {
#if TC_DW_PACKED
        rw->w[2 * i] = (int32_t)(((uint32_t)ch->w[k0][i] & 0xffffu) |
                                 ((uint32_t)ch->w[k1][i] << 16));
        rw->w[2 * i + 1] = ch->w[k2][i];
#else
        rw->w[3 * i] = ch->w[k0][i];
        rw->w[3 * i + 1] = ch->w[k1][i];
        rw->w[3 * i + 2] = ch->w[k2][i];
#endif
    }
    /* the folded bias, less the zero-point term of the tap rows in the padding */
    rw->bias = (int32_t)((uint32_t)(ch->f.fast ? 2 : 1) *
                         ((uint32_t)ch->bias + (uint32_t)zp * (uint32_t)(ch->total -
                          ch->row_sum[k0] - ch->row_sum[k1] - ch->row_sum[k2])));
}

#if TC_DW_FUSED
/* The store constants of tc_dw3_pairs_store's block that are the same for every channel: once
 * per layer. */
static void tc_dw_fused_layer(tc_dw_row_weights *rw, const tc_dw_store_args *a, int32_t end)
{
    rw->store[3] = a->lo;
    rw->store[5] = a->out_stride;
    rw->store[TC_DW_END] = end;
#if TC_DW_SMLAL
    rw->store[1] = a->hi;
    rw->store[7] = (int32_t)0x80000000u; /* SMLAL's start: the rounding half and the offset */
#else
    rw->store[3] = (int32_t)(((uint32_t)a->lo & 0xffffu) | ((uint32_t)a->lo << 16));
    rw->store[4] = (int32_t)(((uint32_t)a->hi & 0xffffu) | ((uint32_t)a->hi << 16));
#endif
}

/* The channel's store constants of tc_dw3_pairs_store's block. */
static void tc_dw_fused_block(tc_dw_row_weights *rw, const tc_dw_store_args *a)
{
    rw->store[0] = a->multiplier;
    rw->store[2] = a->right;
#if TC_DW_SMLAL
    {
        const int64_t start = (int64_t)rw->bias * ((int64_t)1 << 23) + ((int64_t)1 << 21);
        rw->start[0] = (int32_t)(uint32_t)(uint64_t)start;
        rw->start[1] = (int32_t)(uint32_t)((uint64_t)start >> 32);
    }
    rw->store[4] = rw->bias - ((int32_t)1 << 21);
    rw->store[8] = a->offset;
#else
    rw->store[1] = a->offset;
#endif
}
#endif

/* Fill the column buffer with the input zero point in every slot: int16 columns, or on the
 * Cortex-M3 packed ones (x[j] + x[j + 1] * 2^23 per slot, three words per column). */
static void tc_dw_fill(int16_t *cols, int32_t ncols, int32_t zp, int packed)
{
    int32_t i;
    for (i = 0; i < ncols * TC_DW_COL; i++) {
        const int32_t slot = i % TC_DW_COL;
        cols[i] = (int16_t)(slot < 3 ? zp : 0);
    }
#if TC_DW_SMLAL
    for (i = 0; packed && i < ncols * 3; i++) {
        ((int32_t *)(void *)cols)[i] = zp + (int32_t)((uint32_t)zp << 23);
    }
#else
    (void)packed;
#endif
}

#if TC_DW_SMLAL
/* Packed copy into one slot: the words v[k] + v[k + 1] * 2^23 of v = zp, the count values of
 * src (stride channels), zp; dst: the slot in the column left of src's first. Four columns per
 * iteration (17 instructions), then one at a time. */
void tc_dw_copy_packed(int32_t *dst, const int8_t *src, int32_t channels, int32_t count,
                       int32_t zp);
__asm__(
    TC_ASM_BEGIN("tc_dw_copy_packed")
    "  push {r4-r8, lr}\n"
    "  ldr r5, [sp, #24]\n"
    "  mov r4, r5\n"
    "  add r3, r3, r3, lsl #1\n"
    "  add r3, r0, r3, lsl #2\n"
    "  sub r12, r3, #48\n"
    "  cmp r0, r12\n"
    "  bhi 2f\n"
    "1:\n"
    "  ldrsb r6, [r1]\n"
    "  ldrsb r7, [r1, r2]\n"
    "  add r1, r1, r2, lsl #1\n"
    "  ldrsb r8, [r1]\n"
    "  ldrsb lr, [r1, r2]\n"
    "  add r1, r1, r2, lsl #1\n"
    "  add r4, r4, r6, lsl #23\n"
    "  str r4, [r0], #12\n"
    "  add r6, r6, r7, lsl #23\n"
    "  str r6, [r0], #12\n"
    "  add r7, r7, r8, lsl #23\n"
    "  str r7, [r0], #12\n"
    "  add r8, r8, lr, lsl #23\n"
    "  str r8, [r0], #12\n"
    "  mov r4, lr\n"
    "  cmp r0, r12\n"
    "  bls 1b\n"
    "2:\n"
    "  cmp r0, r3\n"
    "  bhs 4f\n"
    "3:\n"
    "  ldrsb r6, [r1]\n"
    "  add r1, r1, r2\n"
    "  add r4, r4, r6, lsl #23\n"
    "  str r4, [r0], #12\n"
    "  mov r4, r6\n"
    "  cmp r0, r3\n"
    "  blo 3b\n"
    "4:\n"
    "  add r4, r4, r5, lsl #23\n"
    "  str r4, [r0]\n"
    "  pop {r4-r8, pc}\n"
    TC_ASM_END("tc_dw_copy_packed"));
#endif

#if TC_DW_FUSED
/* What tc_dw_fused_rows needs besides a block's row list (words at the byte offsets the loop
 * reads): the channel's input, the columns, the copy's stride, count and zero point, the clamp
 * choice, the output row's size, and for an odd width the end of its last pair (0 for an even
 * width), the end of the others, the first column and the output offset of the last pair. */
typedef struct {
    const int8_t *src;                        /* 0 */
    int16_t *cols;                            /* 4 */
    int32_t channels, count, zp, ssat;        /* 8, 12, 16, 20 */
    int32_t out_row, odd_end, even_end;       /* 24, 28, 32 */
    int16_t *odd_cols;                        /* 36 */
    int32_t odd_out;                          /* 40 */
} tc_dw_fused_job;

/* A block's rows of one fast channel, from its row list: per row the number of copies, each
 * copy's slot (in the column left of the input row on the Cortex-M3, packed, or in the column
 * of its first value, int16) and input row offset, then the row's tc_dw3_pairs_store block.
 * Each row: the copies, the pair loop with the store fused, for an odd width the last two
 * outputs again (output out_w - 2 is rewritten), out moved on by a row. */
void tc_dw_fused_rows(const int32_t *list, const int32_t *end, const tc_dw_fused_job *job,
                      int8_t *out);
#define TC_DW_STR_(x) #x
#define TC_DW_STR(x) TC_DW_STR_(x)
/* the offsets the loop uses, checked at compile time */
typedef char tc_dw_fused_job_check[offsetof(tc_dw_fused_job, odd_out) == 40 &&
                                   offsetof(tc_dw_fused_job, ssat) == 20 ? 1 : -1];
typedef char tc_dw_end_check[(int)(offsetof(tc_dw_row_weights, store) + 4 * TC_DW_END) -
                             (int)TC_DW_BLOCK_AT ==
                             TC_DW_END_AT ? 1 : -1];
__asm__(
    TC_ASM_BEGIN("tc_dw_fused_rows")
    "  push {r4-r11, lr}\n"
    "  sub sp, sp, #4\n"
    "  mov r4, r0\n"
    "  mov r5, r1\n"
    "  mov r6, r2\n"
    "  mov r7, r3\n"
    "  ldrd r8, r10, [r6]\n"
    "  ldr r0, [r6, #16]\n"
    "  str r0, [sp]\n" /* the packed copy's fifth argument */
    "1:\n"
    "  ldr r11, [r4], #4\n"
    "  cmp r11, #0\n"
    "  beq 3f\n"
    "2:\n"
    "  ldmia r4!, {r0, r1}\n"
    "  add r1, r1, r8\n"
    "  ldrd r2, r3, [r6, #8]\n"
    "  bl " TC_DW_COPY "\n"
    "  subs r11, r11, #1\n"
    "  bne 2b\n"
    "3:\n"
    "  ldr r9, [r4], #4\n"
    "  mov r0, r10\n"
    "  mov r1, r9\n"
    "  mov r2, r7\n"
    "  ldr r3, [r6, #20]\n"
    "  bl tc_dw3_pairs_store\n"
    "  ldr r3, [r6, #28]\n"
    "  cbnz r3, 5f\n"
    "4:\n"
    "  ldr r3, [r6, #24]\n"
    "  add r7, r7, r3\n"
    "  cmp r4, r5\n"
    "  bne 1b\n"
    "  add sp, sp, #4\n"
    "  pop {r4-r11, pc}\n"
    "5:\n"
    "  str r3, [r9, #" TC_DW_STR(TC_DW_END_AT) "]\n"
    "  ldr r0, [r6, #36]\n"
    "  mov r1, r9\n"
    "  ldr r2, [r6, #40]\n"
    "  add r2, r2, r7\n"
    "  ldr r3, [r6, #20]\n"
    "  bl tc_dw3_pairs_store\n"
    "  ldr r3, [r6, #32]\n"
    "  str r3, [r9, #" TC_DW_STR(TC_DW_END_AT) "]\n"
    "  b 4b\n"
    TC_ASM_END("tc_dw_fused_rows"));

/* The block's row list for tc_dw_fused_rows (at most TC_DW_LIST words); returns its end. */
#define TC_DW_LIST (TC_DW_BLOCK_ROWS * 8)
static int32_t *tc_dw_fused_list(const tc_dw_block *b, tc_dw_row_weights *rows, int16_t *first,
                                 int32_t *list)
{
    int32_t r, k;
    for (r = 0; r < b->rows; r++) {
        const tc_dw_row_plan *plan = &b->row[r];
        *list++ = plan->copies;
        for (k = 0; k < plan->copies; k++) {
#if TC_DW_SMLAL
            *list++ = (int32_t)(uintptr_t)((int32_t *)(void *)first - 3 + plan->copy_slot[k]);
#else
            *list++ = (int32_t)(uintptr_t)(first + plan->copy_slot[k]);
#endif
            *list++ = plan->copy_off[k];
        }
        *list++ = (int32_t)(uintptr_t)TC_DW_BLOCK(&rows[plan->arrangement]);
    }
    return list;
}
#endif

/* The column buffer: TC_DW_COL int16 per column, a spare column left of the first (the
 * Cortex-M3's packed copy) and the columns of out_w + 1 outputs. */
static int32_t tc_dw_column_bytes(int32_t out_w, int32_t stride_w)
{
    return TC_DW_COL * (int32_t)sizeof(int16_t) * ((out_w + 1) * stride_w + 3);
}

/* The first 4-byte aligned address in [from, to) that starts `bytes` bytes, or NULL. */
static int16_t *tc_dw_room(int8_t *from, int8_t *to, int32_t bytes)
{
    int8_t *const at = from + ((4u - ((uintptr_t)from & 3u)) & 3u);
    return to - at >= bytes ? (int16_t *)(void *)at : NULL;
}

/* Where the column buffer lives for the output rows from oy0 on, and up to which row (*end):
 * the caller's scratch; else input rows that no output row from oy0 on reads, when no later
 * layer reads the input (p->input_spare); else the output rows past *end, not yet written.
 * NULL when none holds it. */
static TC_NOINLINE int16_t *tc_dw_columns(const tc_context *ctx, const tc_conv_params *p,
                                          const tc_dims *in_dims, const tc_dims *out_dims,
                                          int8_t *output, int32_t oy0, int32_t *end)
{
    const int32_t bytes = tc_dw_column_bytes(out_dims->w, p->stride_w);
    const int32_t out_row = out_dims->w * out_dims->c;
    const int32_t first = oy0 * p->stride_h - p->pad_top; /* the first input row still read */
    const int32_t read = first < in_dims->h ? first : in_dims->h;
    int16_t *cols = NULL;
    int32_t rows;
    *end = out_dims->h;
    if (ctx != NULL && ctx->buf != NULL && ((uintptr_t)ctx->buf & 3u) == 0 &&
        ctx->size >= bytes) {
        return (int16_t *)ctx->buf;
    }
    if (p->input_spare != NULL && read > 0) {
        cols = tc_dw_room(p->input_spare, p->input_spare + read * in_dims->w * in_dims->c,
                          bytes);
    }
    for (rows = 1; cols == NULL && rows < out_dims->h - oy0; rows++) {
        *end = out_dims->h - rows;
        cols = tc_dw_room(output + *end * out_row, output + out_dims->h * out_row, bytes);
    }
    return cols;
}

/* The output rows from oy0 on through the direct loop: for a layer whose input is read again
 * later, the rows that no unwritten output row is left to hold the columns for. */
static TC_NOINLINE int tc_dw_rows_direct(const tc_conv_params *p,
                                         const tc_requant_params *rq, const tc_dims *in_dims,
                                         const int8_t *input, const tc_filter_dims *filter,
                                         const int8_t *weights, const int32_t *bias,
                                         const tc_dims *out_dims, int8_t *output, int32_t oy0)
{
    const int32_t y = oy0 * p->stride_h - p->pad_top; /* the rows' first tap row */
    const int32_t first = y < in_dims->h ? y : in_dims->h; /* below the image: none read */
    tc_conv_params q = *p;
    tc_dims in = *in_dims, out = *out_dims;
    if (first > 0) {
        input += first * in_dims->w * in_dims->c;
        in.h = in_dims->h - first;
    }
    q.pad_top = first > 0 ? 0 : -first;
    out.h -= oy0;
    return tc_depthwise_direct(&q, rq, &in, input, filter, weights, bias, &out,
                               output + oy0 * out_dims->w * out_dims->c);
}

static int tc_depthwise_3x3(const tc_context *ctx, const tc_conv_params *p,
                            const tc_requant_params *rq, const tc_dims *in_dims,
                            const int8_t *input, const tc_filter_dims *filter,
                            const int8_t *weights, const int32_t *bias,
                            const tc_dims *out_dims, int8_t *output)
{
    const int32_t channels = in_dims->c, multiplier = filter->m / channels;
    const int32_t sw = p->stride_w, zp = p->input_zero_point, dh = p->dilation_h;
    const int32_t ncols = (out_dims->w + 1) * sw + 2;
    const int32_t step = sw * TC_DW_COL; /* int16 per output */
    const int32_t copy = in_dims->w < ncols - p->pad_left ? in_dims->w : ncols - p->pad_left;
    const int32_t in_row = in_dims->w * channels, out_row = out_dims->w * out_dims->c;
    const int32_t out_w = out_dims->w, pairs = (out_w + 1) / 2;
    int16_t *place = NULL, *cols = NULL, *first_col = NULL; /* the columns: set per block */
#if TC_DW_FUSED
    tc_dw_fused_job job;
    int32_t list[TC_DW_LIST], *list_end = list;
#endif
    int32_t group = 1, oy0, i, layout = -1, end = 0;
    tc_dw_row_weights rows[TC_DW_ARRANGEMENTS];
    tc_dw_store_args args;
    tc_dw_channel ch;
    tc_dw_block block;
    /* slot of input row y: (y / group) % 3, distinct for the three tap rows of any output row
     * (group: the largest power of 3 dividing the dilation) */
    while ((dh / group) % 3 == 0) {
        group *= 3;
    }
#if TC_DW_FUSED
    job.channels = channels;
    job.count = copy;
    job.zp = zp;
    job.ssat = p->act_max == 127;
    job.out_row = out_row;
    job.odd_out = (out_w - 2) * out_dims->c;
#endif
    args.lo = p->act_min;
    args.hi = p->act_max;
    args.out_stride = out_dims->c;
    args.step = step * (int32_t)sizeof(int16_t);
    ch.row_sum[3] = 0;
    for (i = 0; i < 3; i++) {
        ch.w[3][i] = 0;
    }
    for (oy0 = 0; oy0 < out_dims->h; oy0 += block.rows) {
        int32_t c;
        /* in the output's tail, the columns move on as soon as the spare input holds them */
        int16_t *const buf = end == out_dims->h ? place
                                                : tc_dw_columns(ctx, p, in_dims, out_dims,
                                                                output, oy0, &end);
        if (buf == NULL) {
            return tc_dw_rows_direct(p, rq, in_dims, input, filter, weights, bias, out_dims,
                                     output, oy0);
        }
        if (buf != place) {
            place = buf;
            /* after a spare column: the packed copy starts one column left of the input row */
            cols = buf + TC_DW_COL;
            first_col = cols + p->pad_left * TC_DW_COL;
            layout = -1;
#if TC_DW_FUSED
            job.cols = cols;
            job.odd_end = out_w & 1 ? (int32_t)(uintptr_t)(cols + out_w * TC_DW_COL) : 0;
            job.even_end = (int32_t)(uintptr_t)(cols + (out_w & ~1) * TC_DW_COL);
            job.odd_cols = cols + (out_w - 2) * TC_DW_COL;
            for (i = 0; i < TC_DW_ARRANGEMENTS; i++) {
                tc_dw_fused_layer(&rows[i], &args, job.even_end);
            }
#endif
        }
        tc_dw_plan_block(p, in_dims->h, in_row, copy, group, oy0, end, &block);
#if TC_DW_FUSED
        list_end = tc_dw_fused_list(&block, rows, first_col, list);
#endif
        for (c = 0; c < channels * multiplier; c++) {
            const int8_t *src = input + c / multiplier;
            int8_t *out = output + oy0 * out_row + c;
            int32_t r, fused;
            tc_dw_channel_init(&ch, weights + c * 9, bias, rq, c, zp, p->output_zero_point);
            fused = TC_DW_FUSED && sw == 1 && out_w > 1 && ch.f.fast &&
                    (TC_DW_SMLAL || ch.halves);
            if (layout != (TC_DW_SMLAL && fused)) {
                layout = TC_DW_SMLAL && fused;
                tc_dw_fill(cols, ncols, zp, layout);
            }
            args.multiplier = ch.f.multiplier;
            args.offset = ch.f.offset;
            args.right = ch.f.right;
            for (i = 0; i < block.keys; i++) {
                tc_dw_arrange(&ch, block.key[i], zp, &rows[i]);
#if TC_DW_FUSED
                tc_dw_fused_block(&rows[i], &args);
#endif
            }
#if TC_DW_FUSED
            if (fused) {
                job.src = src;
                tc_dw_fused_rows(list, list_end, &job, out);
                continue;
            }
#endif
            for (r = 0; r < block.rows; r++, out += out_row) {
                const tc_dw_row_plan *plan = &block.row[r];
                tc_dw_row_weights *rw = &rows[plan->arrangement];
                int32_t k;
                for (k = 0; k < plan->copies; k++) {
                    const int8_t *row = src + plan->copy_off[k];
                    tc_dw_copy_row(first_col + plan->copy_slot[k], row, channels, copy);
                }
                if (sw == 1) {
                    tc_dw3_pairs(cols, rw->w, pairs, rw->bias);
                } else {
                    tc_dw3_singles(cols, rw->w, out_w, rw->bias, args.step);
                }
                if (ch.f.fast) {
                    args.bias = rw->bias;
                    tc_dw_store_row(cols + 4, out_w, out, &args);
                } else {
                    tc_dw_store_exact(cols, step, out_dims->w, rw->bias, rq, c, p, out,
                                      out_dims->c);
                }
            }
        }
    }
    return TC_OK;
}

#endif

int tc_depthwise_conv2d(const tc_context *ctx, const tc_conv_params *params,
                        const tc_requant_params *rq, const tc_dims *in_dims,
                        const int8_t *input, const tc_filter_dims *filter,
                        const int8_t *weights, const int32_t *bias, const tc_dims *out_dims,
                        int8_t *output)
{
    const int32_t channels = in_dims->c;
    if (channels < 1 || filter->c != 1 || filter->m % channels != 0 ||
        filter->m != out_dims->c || params->stride_h < 1 || params->stride_w < 1 ||
        params->dilation_h < 1 || params->dilation_w < 1) {
        return TC_ERR_BAD_ARG;
    }
    if (filter->kh == 3 && filter->kw == 3 && params->dilation_w == 1 && out_dims->w > 0) {
#if TC_DW_ASM
        return tc_depthwise_3x3(ctx, params, rq, in_dims, input, filter, weights, bias,
                                out_dims, output);
#else
        (void)ctx;
        return tc_depthwise_3x3_inplace(params, rq, in_dims, input, filter, weights, bias,
                                        out_dims, output);
#endif
    }
    return tc_depthwise_direct(params, rq, in_dims, input, filter, weights, bias, out_dims,
                               output);
}
