/* conv2d of a one-channel input (groups 1, filter.c 1): the first layer of an image network.
 *
 * Two horizontally adjacent output pixels p and q (q = p + 1) are computed with one 64-bit
 * multiply-accumulate per tap (SMLAL on the Cortex-M): each tap's two input values are packed
 * into one word, P = x_p + x_q * 2^23, so sum(w * P) = A_p + 2^23 * A_q with A = sum(w * x).
 * While |A_p| < 2^22 the lanes separate exactly: A_p is the low 23 bits sign-extended and
 * A_q = floor(sum / 2^23) + [A_p < 0]. The weights are doubled (the fast requantization
 * multiplies 2 * acc), so the condition is 256 * sum|w| < 2^22 per output channel
 * (|x| <= 128); export writes no table for a layer that breaks it, which then takes
 * tc_conv2d's generic path.
 *
 * Export writes the layer's table to flash (export/conv_constants.py one_channel_table, in
 * words; tc_conv_params.table_1ch, NULL when export found the layer unfit):
 *   flags   1 when every channel takes the fast requantization (the assembly may run)
 *   stream  per channel: the kh * kw doubled weights (row-major), then a code address (below)
 *   pushed  8 * M: the bytes of sums the row loop has pushed when the stream ends
 *   floor   the 8 words the store loads after channel 0: 3 * M, the pair step in bytes, five
 *           zeros, a code address
 *   consts  per channel: right shift, C (twice), multiplier, offset, a code address, with
 *           C = 2 * bias * multiplier + 2^31 as two words, so that one SMLAL of A by the
 *           multiplier onto C gives the rounding high multiply of 2 * (bias + A / 2)
 *           (tc_requant_double_fast)
 * A code address is a link-time constant, so the table is a static initializer of
 * model_data.c on Thumb-2 (0 elsewhere, where no assembly runs). The row loop's state (the job)
 * is on the stack: the loop keeps its address on its own stack, 8 * M bytes above the pushed
 * sums when the stream ends.
 * The packed rows (tc_conv2d_1ch_get_buffer_size: kh rows of int32 words; which input row a
 * slot holds is kept on the stack) live in the caller's buffer when it holds them (the
 * model's scratch is its largest layer's). Else in the last bytes of the layer's own output
 * (export's arena never lets a conv's output overlap its input), which the output rows before
 * them leave alone; when the next output row would reach them they move once, slots and all,
 * to the input rows no later window reads, if nothing reads the input after this layer
 * (params->input_spare); a layer whose rows fit neither way is refused before it writes, and
 * export then asks the rows in scratch (c_codegen._one_channel makes the same test, with the
 * worst alignment).
 * A packed row holds P[j] = x[j - pad_left] + x[j - pad_left + stride_w] * 2^23 for the
 * columns j the windows of pixel p read (padding columns hold the input zero point, folded
 * into the bias), so the pair starting at output column ox reads P[ox * stride_w + kx * dil].
 * An odd last pixel is a pair whose q output is stored first at the same place, then
 * overwritten by p.
 * Export writes the table only while it stays within 4 KB of flash (c_codegen.WEIGHT_COPY_MAX)
 * and the packed rows fit the model's other layers' scratch or 4 KB; otherwise the kernel
 * refuses and tc_conv2d's generic path runs (DS-CNN's 10x4 x 64 first layer).
 * Beside CMSIS-NN: the bench's 3x3 28x28x1 -> 8 layer (and its 20x20 variant) asks no
 * scratch (arm_convolve_s8: 48 B): its 348 B of rows fit the output's tail until output row
 * 26, then input rows 0..12. Where the rows fit neither (an output smaller than them, an input
 * read again later, too few input rows passed before the move), the layer asks them: 7.25x
 * CMSIS-NN's on the bench layer, over the 2x of issue 13. The packed rows are what lets one
 * SMLAL serve two pixels (2.52 instructions per MAC against the generic path's 10). Walked in
 * vertical strips (a measurement build), the rows would fit 96 B with strips of 6 pixels, but
 * the layer then took 2.86 instructions per MAC on the M3 (+13.5 %: a fill call, a row-loop
 * call and the shared columns packed again per strip and row), 2.77 with strips of 8 and 2.60
 * with 14, so the rows keep the layer's width. The fast requantization constants and the
 * folded biases come from export (rq->fast, rq->folded_bias). */
#include <stddef.h>

#include "tc_asm.h"
#include "tc_kernels.h"
#include "tc_matmul.h"

/* hot loop: optimize for speed even in an -Os image */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif

#define TC_1CH_LANE 23
#define TC_1CH_CONSTS 8      /* words per channel */
#define TC_1CH_FLOOR 8       /* words below channel 0's constants */
#define TC_1CH_MAX_ASM_M 64  /* 8 * M bytes of stack in the row loop */
#define TC_1CH_MAX_KH 16     /* row pointers and slot tags on the stack */

/* The Cortex-M row loop's state, on the C caller's stack; the assembly reads it at fixed
 * offsets from rows, whose address it keeps on its own stack. */
typedef struct {
    const tc_kernel_word *consts_end; /* the store walks the constants down from here */
    int32_t act_max;
    int8_t *out_p, *out_q;     /* output channel M - 1 of the pair's pixels */
    int32_t act_min;
    const int32_t *rows[3];    /* the pair's window in the three packed rows */
    const tc_kernel_word *stream;
    int8_t *out_end;           /* out_p after the last pair */
    int32_t step;              /* bytes from one pair's window to the next */
} tc_1ch_job;

static int32_t tc_1ch_width(const tc_conv_params *p, const tc_filter_dims *f,
                            const tc_dims *out)
{
    return ((out->w + 1) / 2 - 1) * 2 * p->stride_w + (f->kw - 1) * p->dilation_w + 1;
}

int32_t tc_conv2d_1ch_get_buffer_size(const tc_conv_params *p, const tc_filter_dims *f,
                                      const tc_dims *out)
{
    if (p->groups != 1 || f->c != 1 || out->w < 1) {
        return 0;
    }
    return (int32_t)sizeof(int32_t) * f->kh * tc_1ch_width(p, f, out);
}

/* Packed row of input row x (NULL: a padding row): width words. Out of line: inlined into
 * the row loop it is compiled with fewer registers. */
static TC_NOINLINE void tc_1ch_fill(int32_t *row, const int8_t *x, int32_t w,
                                    const tc_conv_params *p, int32_t width)
{
    const int32_t step = p->stride_w, left = p->pad_left, zp = p->input_zero_point;
    /* columns j whose both values lie inside the image: left <= j < left + w - step */
    const int32_t lo = left < width ? left : width;
    const int32_t hi = left + w - step < width ? left + w - step : width;
    int32_t j;
    if (x == NULL) {
        const int32_t pad = zp + (int32_t)((uint32_t)zp << TC_1CH_LANE);
        for (j = 0; j < width; j++) {
            row[j] = pad;
        }
        return;
    }
    for (j = 0; j < width; j++) {
        if (j == lo && lo < hi) {
            const int8_t *src = x - left;
            for (; j < hi; j++) {
                row[j] = src[j] + (int32_t)((uint32_t)src[j + step] << TC_1CH_LANE);
            }
            if (j == width) {
                break;
            }
        }
        {
            const int32_t a = j - left, b = a + step;
            const int32_t xa = a >= 0 && a < w ? x[a] : zp;
            const int32_t xb = b >= 0 && b < w ? x[b] : zp;
            row[j] = xa + (int32_t)((uint32_t)xb << TC_1CH_LANE);
        }
    }
}

#if defined(__thumb2__)
#define TC_1CH_ASM 1
/* One output row of a 3x3 layer without horizontal dilation, from job->out_p to
 * job->out_end. The loops are threaded: a loop's last load brings the next record and, into
 * pc, where to go, so no loop counts. Per pair: the nine packed values in r4-r12; per channel
 * five LDMs of the stream (two weights each, the last with tc_1ch_next, which finishes the
 * channel and starts the next, or tc_1ch_last), nine SMLALs and a push of the 64-bit sum. The
 * store pops the sums (channel M - 1 first), separates the lanes and requantizes both with one
 * SMLAL each onto C; per channel it loads the constants of the next (below) and goes to
 * tc_1ch_store (act_max 127: SSAT clamp) or tc_1ch_store_clamp, and after channel 0 to the
 * floor's tc_1ch_pair_end. The code addresses are in export's table (model_data.c). */
void tc_1ch_rows3(const int32_t **rows);
/* the sum in r0 (low word), r1; constants in r4 (right), r5..r10 (C, C, multiplier, offset):
 * p's output to r6, q's to r8 */
#define TC_1CH_REQUANT \
    "  pop {r0, r1}\n" \
    "  lsl r1, r1, #9\n" \
    "  add r1, r1, r0, lsr #23\n" \
    "  sbfx r0, r0, #0, #23\n" \
    "  sub r1, r1, r0, asr #31\n" \
    "  smlal r5, r6, r0, r9\n" \
    "  smlal r7, r8, r1, r9\n" \
    "  add r5, r6, r10\n" \
    "  add r6, r5, r6, asr #31\n" \
    "  asr r6, r6, r4\n" \
    "  add r7, r8, r10\n" \
    "  add r8, r7, r8, asr #31\n" \
    "  asr r8, r8, r4\n"
#define TC_1CH_STORE \
    "  strb r8, [r12], #-1\n" \
    "  strb r6, [r11], #-1\n" \
    "  ldmdb r2!, {r4-r10, pc}\n"
__asm__(
    TC_ASM_BEGIN("tc_1ch_rows3")
    "  push {r0, r4-r11, lr}\n" /* r0 = &job->rows, read back by tc_1ch_pair_end */
    "  mov r2, r0\n"
    "  ldr r5, [r2, #20]\n"
    "  b 3f\n"
    TC_ASM_LABEL("tc_1ch_pair_end") /* from the floor: r4 = 3 * M, r5 = step */
    "  ldr r2, [sp]\n"
    "  add r11, r11, r4\n"
    "  add r12, r12, r4\n"
    "  strd r11, r12, [r2, #-12]\n"
    "  ldr r0, [r2, #16]\n"
    "  cmp r11, r0\n"
    "  beq 5f\n"
    "3:\n"
    "  ldm r2, {r0, r1, r3, lr}\n"
    "  add r7, r0, r5\n"
    "  add r8, r1, r5\n"
    "  add r9, r3, r5\n"
    "  stm r2, {r7-r9}\n"
    "  mov r2, lr\n"
    "  ldm r0, {r4-r6}\n"
    "  ldm r1, {r7-r9}\n"
    "  ldm r3, {r10-r12}\n"
    "  b 4f\n"
    "5:\n"
    "  pop {r0, r4-r11, pc}\n"
    TC_ASM_LABEL("tc_1ch_next")
    "  smlal r0, r1, r3, r12\n"
    "  push {r0, r1}\n"
    "4:\n"
    "  ldm r2!, {r3, lr}\n"
    "  smull r0, r1, r3, r4\n"
    "  smlal r0, r1, lr, r5\n"
    "  ldm r2!, {r3, lr}\n"
    "  smlal r0, r1, r3, r6\n"
    "  smlal r0, r1, lr, r7\n"
    "  ldm r2!, {r3, lr}\n"
    "  smlal r0, r1, r3, r8\n"
    "  smlal r0, r1, lr, r9\n"
    "  ldm r2!, {r3, lr}\n"
    "  smlal r0, r1, r3, r10\n"
    "  smlal r0, r1, lr, r11\n"
    "  ldm r2!, {r3, pc}\n"
    TC_ASM_LABEL("tc_1ch_last")
    "  smlal r0, r1, r3, r12\n"
    "  push {r0, r1}\n"
    "  ldr r3, [r2]\n" /* 8 * M: the sums pushed above &job->rows */
    "  ldr r2, [sp, r3]\n"
    "  ldmdb r2, {r2, r3, r11, r12, lr}\n" /* consts end, act_max, out_p, out_q, act_min */
    "  ldmdb r2!, {r4-r10, pc}\n"
    TC_ASM_LABEL("tc_1ch_store")
    TC_1CH_REQUANT
    "  ssat r6, #8, r6\n"
    "  cmp r6, lr\n"
    "  it lt\n"
    "  movlt r6, lr\n"
    "  ssat r8, #8, r8\n"
    "  cmp r8, lr\n"
    "  it lt\n"
    "  movlt r8, lr\n"
    TC_1CH_STORE
    TC_ASM_LABEL("tc_1ch_store_clamp")
    TC_1CH_REQUANT
    "  cmp r6, lr\n"
    "  it lt\n"
    "  movlt r6, lr\n"
    "  cmp r6, r3\n"
    "  it gt\n"
    "  movgt r6, r3\n"
    "  cmp r8, lr\n"
    "  it lt\n"
    "  movlt r8, lr\n"
    "  cmp r8, r3\n"
    "  it gt\n"
    "  movgt r8, r3\n"
    TC_1CH_STORE
    TC_ASM_END("tc_1ch_rows3"));
typedef char tc_1ch_job_words[sizeof(tc_1ch_job) == 44 ? 1 : -1];
typedef char tc_1ch_word_size[sizeof(tc_kernel_word) == 4 ? 1 : -1];
#else
#define TC_1CH_ASM 0
#endif

/* The layer as the kernel reads it: export's table and the requantization. */
typedef struct {
    int32_t taps;
    const tc_kernel_word *stream; /* taps + 1 words per channel */
    const tc_requant_fast *fast;
    const int32_t *bias;          /* input zero point folded in */
    const tc_conv_params *params;
    const tc_requant_params *rq;
    int asm_rows;                 /* every channel fast, a 3x3 window without dilation along x */
} tc_1ch_layer;

/* Output channel m of a pixel whose lane holds a = 2 * its dot product. Out of line: it holds
 * the exact requantization of every mode. */
static TC_NOINLINE int8_t tc_1ch_output(const tc_1ch_layer *l, int32_t m, int32_t a)
{
    const tc_conv_params *p = l->params;
    const int32_t v = l->fast[m].fast
                          ? tc_requant_double_fast((int32_t)((uint32_t)l->bias[m] << 1) + a,
                                                   l->fast + m)
                          : tc_requantize(l->bias[m] + a / 2, l->rq, m) + p->output_zero_point;
    return tc_clamp_s8(v, p->act_min, p->act_max);
}

/* The pair of output pixels whose windows start at column col of the packed rows: q's
 * channels to out_q first, then p's to out_p (portable C, any window). */
static void tc_1ch_pair_c(const tc_1ch_layer *l, const tc_filter_dims *f,
                          const int32_t *const *rows, int32_t col, int8_t *out_p, int8_t *out_q)
{
    const int32_t dw = l->params->dilation_w, run = f->kw * dw, kh = f->kh;
    const tc_kernel_word *w = l->stream;
    int32_t m, ky;
    for (m = 0; m < f->m; m++, w++) {
        int64_t sum = 0;
        int32_t a;
        for (ky = 0; ky < kh; ky++) {
            const int32_t *x = rows[ky] + col, *const end = x + run;
            for (; x != end; x += dw) {
                sum += (int64_t)(w++)->value * *x;
            }
        }
        a = (int32_t)((uint32_t)sum << (32 - TC_1CH_LANE)) >> (32 - TC_1CH_LANE);
        out_q[m] = tc_1ch_output(l, m, (int32_t)((sum - a) >> TC_1CH_LANE));
        out_p[m] = tc_1ch_output(l, m, a);
    }
}

/* Where the packed rows live: ring until output row move, then spare. */
typedef struct {
    int32_t *ring, *spare;
    int32_t move;
} tc_1ch_place;

/* The caller's buffer when it holds the rows; else the output's last bytes (a conv's output
 * never overlaps its input), then the input rows no window from output row move on reads, if
 * the input is spare. 0 when neither. Out of line, as tc_1ch_move: the row loop keeps the
 * place in memory, off the registers (the Cortex-M0 has few). */
static TC_NOINLINE int tc_1ch_place_rows(tc_1ch_place *w, const tc_context *ctx,
                                         const tc_conv_params *p, const tc_dims *in_dims,
                                         const tc_dims *out_dims, int8_t *output, int32_t size)
{
    const int32_t row_bytes = out_dims->w * out_dims->c;
    int8_t *const spare = p->input_spare;
    int32_t tail = out_dims->h * row_bytes - size;
    w->move = out_dims->h;
    if (ctx != NULL && ctx->buf != NULL && ctx->size >= size && ((uintptr_t)ctx->buf & 3u) == 0) {
        w->ring = (int32_t *)ctx->buf;
        return 1;
    }
    if (tail < 0 || spare == NULL) {
        return 0;
    }
    tail -= (int32_t)(((uintptr_t)output + (uint32_t)tail) & 3u);
    w->move = tail / row_bytes;
    w->ring = (int32_t *)(void *)(output + tail);
    w->spare = (int32_t *)(void *)(spare + ((4u - ((uintptr_t)spare & 3u)) & 3u));
    return w->move > 0 && (w->move * p->stride_h - p->pad_top) * in_dims->w -
                              ((int8_t *)w->spare - spare) >= size;
}

/* The output rows reach the rows: they move to the spare input, slots and all, for the rest
 * of the layer's h output rows. 1, for the row loop's condition. */
static TC_NOINLINE int tc_1ch_move(tc_1ch_place *w, int32_t size, int32_t h)
{
    int32_t i;
    for (i = 0; i < size / (int32_t)sizeof(int32_t); i++) {
        w->spare[i] = w->ring[i];
    }
    w->ring = w->spare;
    w->move = h;
    return 1;
}

int tc_conv2d_1ch(const tc_context *ctx, const tc_conv_params *params,
                  const tc_requant_params *rq, const tc_dims *in_dims, const int8_t *input,
                  const tc_filter_dims *filter, const int8_t *weights, const int32_t *bias,
                  const tc_dims *out_dims, int8_t *output)
{
    const int32_t size = tc_conv2d_1ch_get_buffer_size(params, filter, out_dims);
    const int32_t kh = filter->kh, m = filter->m, ow = out_dims->w;
    const int32_t width = size > 0 ? tc_1ch_width(params, filter, out_dims) : 0;
    const tc_kernel_word *const table = params->table_1ch;
    const int32_t *rows[TC_1CH_MAX_KH];
    int32_t tags[TC_1CH_MAX_KH];
    tc_1ch_layer l;
#if TC_1CH_ASM
    tc_1ch_job job;
#endif
    tc_1ch_place place;
    int32_t oy, ox, ky;
    (void)weights; /* doubled in the table */
    (void)bias;    /* folded into rq->folded_bias at export */
    if (size == 0 || table == NULL || rq->fast == NULL || rq->folded_bias == NULL ||
        in_dims->c != 1 || m != out_dims->c || kh > TC_1CH_MAX_KH ||
        params->stride_h < 1 || params->stride_w < 1 || params->dilation_h < 1 ||
        params->dilation_w < 1 ||
        !tc_1ch_place_rows(&place, ctx, params, in_dims, out_dims, output, size)) {
        return TC_ERR_UNSUPPORTED;
    }
    l.taps = kh * filter->kw;
    l.stream = table + 1;
    l.fast = rq->fast;
    l.bias = rq->folded_bias;
    l.params = params;
    l.rq = rq;
    l.asm_rows = TC_1CH_ASM && table[0].value && kh == 3 && filter->kw == 3 &&
                 params->dilation_w == 1 && m <= TC_1CH_MAX_ASM_M;
#if TC_1CH_ASM
    if (l.asm_rows) {
        job.consts_end = l.stream + m * (l.taps + 1 + TC_1CH_CONSTS) + 1 + TC_1CH_FLOOR;
        job.act_min = params->act_min;
        job.act_max = params->act_max;
        job.step = 2 * params->stride_w * (int32_t)sizeof(int32_t);
        job.stream = l.stream;
    }
#endif
    for (ky = 0; ky < kh; ky++) {
        tags[ky] = INT32_MIN;
    }
    /* the rows move (once) when the output reaches place.move: no test per row on the way */
    for (oy = 0;
         oy < place.move || (oy < out_dims->h && tc_1ch_move(&place, size, out_dims->h)); oy++) {
        const int32_t y0 = oy * params->stride_h - params->pad_top, dh = params->dilation_h;
        int8_t *out = output + oy * ow * m;
        /* input row iy in slot (iy + pad_top) % kh: the kh rows of a window without vertical
         * dilation have kh different residues; with it, a row per window slot */
        int32_t slot = dh == 1 ? (oy * params->stride_h) % kh : 0;
        for (ky = 0; ky < kh; ky++, slot = slot + 1 == kh ? 0 : slot + 1) {
            const int32_t iy = y0 + ky * dh;
            int32_t *row = place.ring + slot * width;
            if (tags[slot] != iy) {
                tc_1ch_fill(row, iy >= 0 && iy < in_dims->h ? input + iy * in_dims->w : NULL,
                            in_dims->w, params, width);
                tags[slot] = iy;
            }
            rows[ky] = row;
        }
#if TC_1CH_ASM
        if (l.asm_rows) {
            job.rows[0] = rows[0];
            job.rows[1] = rows[1];
            job.rows[2] = rows[2];
            job.out_p = out + m - 1;
            job.out_q = job.out_p + m;
            job.out_end = job.out_p + (ow & ~1) * m;
            if (ow > 1) {
                tc_1ch_rows3(job.rows);
            }
            if (ow & 1) {
                job.out_q = job.out_p;
                job.out_end = job.out_p + 2 * m;
                tc_1ch_rows3(job.rows);
            }
            continue;
        }
#endif
        for (ox = 0; ox < ow; ox += 2) {
            int8_t *out_p = out + ox * m;
            tc_1ch_pair_c(&l, filter, rows, ox * params->stride_w, out_p,
                          ox + 1 < ow ? out_p + m : out_p);
        }
    }
    return TC_OK;
}
