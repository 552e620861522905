/* conv2d, grouped or not: im2col two output pixels at a time into a pair column, then
 * tc_matmul_pair; one-channel inputs go to tc_conv2d_1ch.c first.
 *
 * Scratch beside CMSIS-NN's (benchmarks/bench_scratch.py): the pair column is the size of
 * arm_convolve_s8's buffer, and the row ring export asks for is no larger than the column, so
 * a 3x3 layer needs at most 2x CMSIS-NN's (1.7x on the bench's layers). A 1x1 layer without
 * padding (one group, any stride) needs none, like CMSIS-NN's arm_convolve_1x1_s8(_fast): its
 * pair column lives in the last bytes of its own output, which no earlier pixel writes, so
 * the inputs are still sign-extended once per pixel pair and read by every output channel
 * (CMSIS-NN sign-extends them again for each channel). The few pixels whose outputs reach that
 * place use the caller's buffer when it holds a column (TC_SCRATCH_SIZE is the largest
 * layer's), else tc_matmul_pair_raw, which reads the raw inputs in place (slower per MAC on a
 * DSP core). The Cortex-M3 takes tc_matmul_pair_raw for every pixel: its LDRSB loop costs what
 * the column loop's LDRSH does, without the fill. On Thumb-2 an odd last pixel takes
 * tc_matmul_vector (one pass of the fully connected loop, not a pair's two). The per-channel
 * constants and the 1x1 int16 weights come from export in flash, not from scratch. */
#include <stddef.h>

#include "tc_asm.h"
#include "tc_kernels.h"
#include "tc_mve.h"

/* hot loop: optimize for speed even in an -Os image */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif
#include "tc_matmul.h"

/* The pair column: CMSIS-NN's arm_convolve_s8_get_buffer_size for the same filter. The
 * per-channel constants (fast requantization, bias with the input zero point folded in) come
 * from export in flash (rq->fast, rq->folded_bias), not from scratch. */
static int32_t tc_conv2d_column_size(const tc_filter_dims *filter)
{
    return (2 * filter->kh * filter->kw * filter->c * (int32_t)sizeof(int16_t) + 3) & ~3;
}

int32_t tc_conv2d_get_buffer_size(const tc_filter_dims *filter)
{
    return tc_conv2d_column_size(filter);
}

/* The column of one output pixel of one group (kh x kw taps of cg channels each) into slot
 * `pixel` of the pair column. A window wholly inside the image with contiguous taps (no
 * dilation along x, one group) is kh runs of kw * c input bytes: no per-tap bounds checks.
 * raw (only for a channel count that is a multiple of four): the column holds the inputs as
 * they are and the padding holds the zero point; the bias makes up for it. */
static void tc_conv_column(const tc_conv_params *p, const tc_dims *in, const int8_t *input,
                           const tc_filter_dims *f, int32_t group, int32_t oy, int32_t ox,
                           int16_t *col, int32_t pixel, int32_t raw)
{
    const int32_t cg = f->c, k = f->kh * f->kw * cg, zp = p->input_zero_point;
    const int32_t y0 = oy * p->stride_h - p->pad_top;
    const int32_t x0 = ox * p->stride_w - p->pad_left;
    const int8_t *base = input + group * cg;
    int32_t ky, kx, j = 0;
    if ((cg & 3) == 0) { /* every tap is whole groups of four */
        const int32_t sub = raw ? 0 : zp, pad = raw ? zp : 0;
        const int32_t inside_x = p->dilation_w == 1 && x0 >= 0 && x0 + f->kw <= in->w;
        for (ky = 0; ky < f->kh; ky++) {
            const int32_t iy = y0 + ky * p->dilation_h;
            if (inside_x && cg == in->c && iy >= 0 && iy < in->h) {
                tc_pair_fill_groups(col, pixel, j, base + (iy * in->w + x0) * in->c,
                                    f->kw * cg >> 2, sub, pad);
                j += f->kw * cg;
                continue;
            }
            for (kx = 0; kx < f->kw; kx++, j += cg) {
                const int32_t ix = x0 + kx * p->dilation_w;
                const int inside = iy >= 0 && iy < in->h && ix >= 0 && ix < in->w;
                tc_pair_fill_groups(col, pixel, j, inside ? base + (iy * in->w + ix) * in->c
                                                          : NULL, cg >> 2, sub, pad);
            }
        }
        return;
    }
    if (p->dilation_w == 1 && cg == in->c && y0 >= 0 && x0 >= 0 &&
        y0 + (f->kh - 1) * p->dilation_h < in->h && x0 + f->kw <= in->w) {
        const int32_t run = f->kw * cg;
        for (ky = 0; ky < f->kh; ky++, j += run) {
            tc_pair_fill(col, k, pixel, j, base + ((y0 + ky * p->dilation_h) * in->w + x0) * in->c,
                         run, zp);
        }
        return;
    }
    for (ky = 0; ky < f->kh; ky++) {
        const int32_t iy = y0 + ky * p->dilation_h;
        for (kx = 0; kx < f->kw; kx++, j += cg) {
            const int32_t ix = x0 + kx * p->dilation_w;
            const int inside = iy >= 0 && iy < in->h && ix >= 0 && ix < in->w;
            tc_pair_fill(col, k, pixel, j, inside ? base + (iy * in->w + ix) * in->c : NULL, cg,
                         zp);
        }
    }
}

/* The row ring (after the pair column, when the buffer holds it): the output is walked in
 * vertical strips of T columns (T even), each strip from the top row to the bottom one, and the
 * ring holds kh input rows of the strip's windows, converted to int16 once per strip in the
 * order of the pair column's groups, padded with the zero point, each with a tag saying which
 * input row it holds. The pair column of two pixels of one output row is then a copy of whole
 * groups of four from two places of the same converted rows: no conversion and no bounds
 * checks per window. Only for one group, no dilation and a channel count that is a multiple of
 * four (raw inputs). T is the widest the buffer holds; tc_conv2d_get_ring_size asks for the
 * widest whose ring is no larger than the pair column, so that column and ring together stay
 * within 2x CMSIS-NN's arm_convolve_s8 buffer (T = 2 for a 3x3 window: kh x (kw + 1)
 * columns). Each strip converts the kw - stride_w columns it shares with the next one again:
 * on the bench's 3x3 layers that costs < 1 % over a ring of whole rows, which needed
 * 3.3 KB on a 32x32x16 layer where CMSIS-NN needs 576 B. */
static int32_t tc_ring_width(const tc_conv_params *p, const tc_filter_dims *f, int32_t strip)
{
    return (strip - 1) * p->stride_w + f->kw;
}

static int32_t tc_ring_bytes(const tc_conv_params *p, const tc_filter_dims *f, int32_t strip)
{
    return f->kh * ((int32_t)sizeof(int32_t) +
                    tc_ring_width(p, f, strip) * f->c * (int32_t)sizeof(int16_t));
}

/* The widest even strip whose ring fits in bytes (at most the output's paired columns,
 * out.w & ~1); 0 when the shape takes no ring or not even two columns fit. */
static int32_t tc_ring_strip(const tc_conv_params *p, const tc_filter_dims *f,
                             const tc_dims *out, int32_t bytes)
{
    int32_t columns, strip;
    if (p->groups != 1 || p->dilation_h != 1 || p->dilation_w != 1 || (f->c & 3) != 0 ||
        out->w < 2 || bytes <= 0) {
        return 0;
    }
    columns = (bytes / f->kh - (int32_t)sizeof(int32_t)) / (f->c * (int32_t)sizeof(int16_t));
    if (columns < f->kw) {
        return 0;
    }
    strip = ((columns - f->kw) / p->stride_w + 1) & ~1;
    return strip < (out->w & ~1) ? strip : (out->w & ~1);
}

int32_t tc_conv2d_get_ring_size(const tc_conv_params *p, const tc_filter_dims *f,
                                const tc_dims *out)
{
    const int32_t strip = tc_ring_strip(p, f, out, tc_conv2d_column_size(f));
    return strip > 0 ? tc_ring_bytes(p, f, strip) : 0;
}

/* groups * 4 int8 values into int16 in the order of the pair column's groups */
static void tc_groups_to_s16(int16_t *dst, const int8_t *src, int32_t groups)
{
    int16_t *const end = dst + 4 * groups;
#if TC_USE_DSP
    if (groups & 1) {
        const int32_t v = tc_read_s32(src);
        tc_write_s32(dst, __sxtb16(v));
        tc_write_s32(dst + 2, tc_sxtb16_ror8(v));
        dst += 4;
        src += 4;
    }
    for (; dst != end; dst += 8, src += 8) { /* two groups a pass: strips convert short rows */
        const int32_t v = tc_read_s32(src), u = tc_read_s32(src + 4);
        tc_write_s32(dst, __sxtb16(v));
        tc_write_s32(dst + 2, tc_sxtb16_ror8(v));
        tc_write_s32(dst + 4, __sxtb16(u));
        tc_write_s32(dst + 6, tc_sxtb16_ror8(u));
    }
#else
    for (; dst != end; dst += 4, src += 4) {
        dst[0] = src[0];
        dst[1] = src[1];
        dst[2] = src[2];
        dst[3] = src[3];
    }
#endif
}

static void tc_fill_s16(int16_t *dst, int32_t n, int32_t value)
{
    int32_t i;
    for (i = 0; i < n; i++) {
        dst[i] = (int16_t)value;
    }
}

/* Input row iy, columns x_first .. x_first + width - 1, into a ring row (the zero point
 * outside the image). */
static void tc_ring_fill(int16_t *row, const tc_dims *in, const int8_t *input,
                         const tc_conv_params *p, int32_t iy, int32_t x_first, int32_t width)
{
    const int32_t c = in->c;
    int32_t left = x_first < 0 ? -x_first : 0;
    int32_t right = x_first + width > in->w ? x_first + width - in->w : 0;
    if ((left | right) == 0 && iy >= 0 && iy < in->h) { /* most rows of a strip */
        tc_groups_to_s16(row, input + (iy * in->w + x_first) * c, width * c >> 2);
        return;
    }
    if (iy < 0 || iy >= in->h || left + right >= width) {
        tc_fill_s16(row, width * c, p->input_zero_point);
        return;
    }
    tc_fill_s16(row, left * c, p->input_zero_point);
    tc_groups_to_s16(row + left * c, input + (iy * in->w + x_first + left) * c,
                     (width - left - right) * c >> 2);
    tc_fill_s16(row + (width - right) * c, right * c, p->input_zero_point);
}

/* Interleave `groups` groups of four int16 from a and b into a pair column:
 * a0..a3 b0..b3 a4..a7 b4..b7 ... (all three 4-byte aligned, groups >= 1). */
#if defined(__thumb2__)
void tc_pair_copy_groups(int16_t *dst, const int16_t *a, const int16_t *b, int32_t groups);
__asm__(
    TC_ASM_BEGIN("tc_pair_copy_groups")
    "  push {r4-r7}\n"
    "1:\n"
    "  ldm r1!, {r4, r5}\n"
    "  ldm r2!, {r6, r7}\n"
    "  stm r0!, {r4-r7}\n"
    "  subs r3, r3, #1\n"
    "  bne 1b\n"
    "  pop {r4-r7}\n"
    "  bx lr\n"
    TC_ASM_END("tc_pair_copy_groups"));
#else
static void tc_pair_copy_groups(int16_t *dst, const int16_t *a, const int16_t *b,
                                int32_t groups)
{
    int32_t g, i;
    for (g = 0; g < groups; g++, dst += 8, a += 4, b += 4) {
        for (i = 0; i < 4; i++) {
            dst[i] = a[i];
            dst[4 + i] = b[i];
        }
    }
}
#endif

/* The pair column of output pixels (oy, ox) and (oy, ox + 1) of the strip starting at output
 * column x0 from the ring, converting the rows it needs that it does not hold yet. */
static void tc_ring_pair_column(const tc_conv_params *p, const tc_dims *in, const int8_t *input,
                                const tc_filter_dims *f, int32_t *tags, int16_t *rows,
                                int32_t width, int32_t x0, int32_t oy, int32_t ox, int16_t *col)
{
    const int32_t c = in->c, run = f->kw * c, y0 = oy * p->stride_h - p->pad_top;
    const int32_t offset = (ox - x0) * p->stride_w * c, step = p->stride_w * c;
    int32_t ky;
    for (ky = 0; ky < f->kh; ky++) {
        const int32_t iy = y0 + ky, slot = (iy + p->pad_top) % f->kh;
        int16_t *row = rows + slot * width * c;
        if (tags[slot] != iy) {
            tc_ring_fill(row, in, input, p, iy, x0 * p->stride_w - p->pad_left, width);
            tags[slot] = iy;
        }
        tc_pair_copy_groups(col + 2 * ky * run, row + offset, row + offset + step, run >> 2);
    }
}

/* The pair column of two 1x1 windows inside the image, at a and b (raw inputs, groups groups
 * of four channels, groups >= 1): no ring, no bounds checks. */
#if TC_USE_DSP && defined(__thumb2__)
/* Cortex-M4: per group two word loads, four SXTB16 and one STM. */
void tc_pointwise_pair_column(int16_t *col, const int8_t *a, const int8_t *b, int32_t groups);
__asm__(
    TC_ASM_BEGIN("tc_pointwise_pair_column")
    "  push {r4-r7}\n"
    "1:\n"
    "  ldr r4, [r1], #4\n"
    "  ldr r6, [r2], #4\n"
    "  sxtb16 r5, r4, ror #8\n"
    "  sxtb16 r4, r4\n"
    "  sxtb16 r7, r6, ror #8\n"
    "  sxtb16 r6, r6\n"
    "  stm r0!, {r4-r7}\n"
    "  subs r3, r3, #1\n"
    "  bne 1b\n"
    "  pop {r4-r7}\n"
    "  bx lr\n"
    TC_ASM_END("tc_pointwise_pair_column"));
#else
static void tc_pointwise_pair_column(int16_t *col, const int8_t *a, const int8_t *b,
                                     int32_t groups)
{
    int16_t *const end = col + 8 * groups;
    for (; col != end; col += 8, a += 4, b += 4) {
        col[0] = a[0];
        col[1] = a[1];
        col[2] = a[2];
        col[3] = a[3];
        col[4] = b[0];
        col[5] = b[1];
        col[6] = b[2];
        col[7] = b[3];
    }
}
#endif

/* The dot products of the pair column into out0 and out1 (NULL: pixel 0 only), with the
 * int16 weights when export gave them. */
TC_INLINE void tc_conv_matmul(const int8_t *w, const int16_t *w16, int32_t rows, int32_t k,
                              const int16_t *col, const tc_matmul_output *o, int8_t *out0,
                              int8_t *out1)
{
#if TC_HAVE_MATMUL_S16
    if (w16 != NULL) {
        tc_matmul_pair_s16(w, w16, rows, k, col, o, out0, out1);
        return;
    }
#else
    (void)w16;
#endif
    tc_matmul_pair(w, rows, k, col, o, out0, out1);
}

/* One group, raw inputs, a ring of strips `strip` columns wide after the pair column: pairs
 * of one row within a strip from the ring; an odd last output column in pairs of two rows by
 * im2col. Out of line: inlined, any change of tc_conv2d_columns moved the Cortex-M0's register
 * allocation of its loops (+1 % on the 3x3 layers). */
static TC_NOINLINE void tc_conv2d_strips(const tc_conv_params *params, const tc_dims *in_dims,
                             const int8_t *input, const tc_filter_dims *filter,
                             const int8_t *weights, const int16_t *w16, const tc_matmul_output *o,
                             const tc_dims *out_dims, int8_t *output, int16_t *col,
                             int32_t strip)
{
    const int32_t m = filter->m, k = filter->kh * filter->kw * filter->c;
    const int32_t ow = out_dims->w, oh = out_dims->h, paired = ow & ~1;
    int32_t *const tags = (int32_t *)(void *)((char *)col + tc_conv2d_column_size(filter));
    int16_t *const rows = (int16_t *)(void *)(tags + filter->kh);
    int32_t x0, oy, ox, i;
    for (x0 = 0; x0 < paired; x0 += strip) {
        const int32_t end = x0 + strip < paired ? x0 + strip : paired;
        const int32_t width = tc_ring_width(params, filter, end - x0);
        for (i = 0; i < filter->kh; i++) {
            tags[i] = INT32_MIN;
        }
        for (oy = 0; oy < oh; oy++) {
            int8_t *const out_row = output + oy * ow * m;
            for (ox = x0; ox < end; ox += 2) {
                tc_ring_pair_column(params, in_dims, input, filter, tags, rows, width, x0, oy,
                                    ox, col);
                tc_conv_matmul(weights, w16, m, k, col, o, out_row + ox * m,
                               out_row + (ox + 1) * m);
            }
        }
    }
    for (oy = 0; ow & 1 && oy < oh; oy += 2) {
        int8_t *const out0 = output + (oy * ow + ow - 1) * m;
        tc_conv_column(params, in_dims, input, filter, 0, oy, ow - 1, col, 0, 1);
        if (oy + 1 < oh) {
            tc_conv_column(params, in_dims, input, filter, 0, oy + 1, ow - 1, col, 1, 1);
        }
        tc_conv_matmul(weights, w16, m, k, col, o, out0, oy + 1 < oh ? out0 + ow * m : NULL);
    }
}

/* A 1x1 conv without padding (one group, any stride): pixels i and i + 1 in raster order, no
 * scratch. The pair column lives in the last bytes of the output (4-byte aligned), which no
 * pixel before them writes: every pair whose outputs end before it uses it. The last few
 * pixels take the caller's buffer when it happens to hold the column (TC_SCRATCH_SIZE is the
 * largest layer's), else, when no later layer reads the input (params->input_spare), the input
 * pixels already read once they make room, else tc_matmul_pair_raw on the raw inputs
 * (tc_matmul_vector for a direct caller's zero point without a folded bias). The Cortex-M3
 * takes tc_matmul_pair_raw for every pair (TC_PAIR_RAW_FAST). */
static TC_NOINLINE void tc_conv2d_pointwise(const tc_context *ctx, const tc_conv_params *params,
                                            const tc_requant_params *rq,
                                            const tc_dims *in_dims, const int8_t *input,
                                            const tc_filter_dims *filter,
                                            const int8_t *weights, const int32_t *bias,
                                            const tc_dims *out_dims, int8_t *output)
{
    const int32_t k = filter->c, m = filter->m, ow = out_dims->w, column =
        tc_conv2d_column_size(filter);
    const int32_t pixels = out_dims->h * ow, raw = (k & 3) == 0 && rq->folded_bias != NULL;
    const int32_t zp = rq->folded_bias != NULL ? 0 : params->input_zero_point;
    const int32_t step = params->stride_w * k;
    const int32_t row_step = params->stride_h * in_dims->w * k - (ow - 1) * step;
    const int16_t *const w16 = raw ? params->weights_s16 : NULL;
    int32_t tail = pixels * m - column, i, ox = 0;
#if defined(__thumb2__) /* an odd last pixel alone after the pairs, when no zero point */
    const int32_t paired = zp == 0 ? pixels & ~1 : pixels;
#else /* Cortex-M0, host: pairs only (the M0's 1x1 layer was 0.007 % slower) */
    const int32_t paired = pixels;
#endif
    const int8_t *x = input;
    int16_t *col;
    int8_t *spare = NULL;
    tc_matmul_output out;
    const tc_matmul_output *const o = &out;
    out.bias = rq->folded_bias != NULL ? rq->folded_bias : bias;
    out.rq = rq;
    out.first_channel = 0;
    out.output_zero_point = params->output_zero_point;
    out.act_min = params->act_min;
    out.act_max = params->act_max;
    out.fast = rq->fast;
    tail -= (int32_t)((uintptr_t)(output + tail) & 3u);
    col = tail >= 0 ? (int16_t *)(void *)(output + tail) : NULL;
    for (i = 0; i < paired; i += 2) {
        const int8_t *const a = x, *b = x;
        int8_t *const out0 = output + i * m, *out1 = NULL;
        x += ++ox < ow ? step : row_step;
        ox = ox < ow ? ox : 0;
        if (i + 1 < paired) {
            b = x;
            out1 = out0 + m;
            x += ++ox < ow ? step : row_step;
            ox = ox < ow ? ox : 0;
        }
        if (tail < (i + 2) * m) { /* the pair's outputs reach the column's place */
            tail = INT32_MAX;
            col = ctx != NULL && ctx->buf != NULL && ctx->size >= column &&
                  ((uintptr_t)ctx->buf & 3u) == 0 ? (int16_t *)ctx->buf : NULL;
            spare = col == NULL ? params->input_spare : NULL;
            spare = spare != NULL ? spare + ((4u - ((uintptr_t)spare & 3u)) & 3u) : NULL;
        }
        if (spare != NULL && a - spare >= column) { /* input pixels no one reads again */
            col = (int16_t *)(void *)spare;
            spare = NULL;
        }
        if ((TC_PAIR_RAW_FAST || col == NULL) && zp == 0) {
            tc_matmul_pair_raw(weights, w16, m, k, a, b, o, out0, out1);
            continue;
        }
        if (col == NULL) { /* a direct caller's zero point, no folded bias */
            tc_matmul_vector(weights, m, k, a, zp, o, out0);
            if (out1 != NULL) {
                tc_matmul_vector(weights, m, k, b, zp, o, out1);
            }
            continue;
        }
        if (raw) {
            tc_pointwise_pair_column(col, a, b, k >> 2);
        } else {
            tc_pair_fill(col, k, 0, 0, a, k, zp);
            tc_pair_fill(col, k, 1, 0, b, k, zp);
        }
        tc_conv_matmul(weights, w16, m, k, col, o, out0, out1);
    }
#if defined(__thumb2__)
    if (i < out_dims->h * ow) { /* an odd last pixel: one pass, not a pair's two */
        tc_matmul_vector(weights, m, k, x, 0, o, output + i * m);
    }
#endif
}

int32_t tc_conv2d_get_column_size(const tc_conv_params *params, const tc_filter_dims *filter,
                                  const tc_dims *in_dims, const tc_dims *out_dims)
{
    /* every 1x1 window inside the image: no padding before, none reached after */
    const int pointwise = params->groups == 1 && filter->kh == 1 && filter->kw == 1 &&
                          params->pad_top == 0 && params->pad_left == 0 &&
                          (out_dims->h - 1) * params->stride_h < in_dims->h &&
                          (out_dims->w - 1) * params->stride_w < in_dims->w;
    return pointwise ? 0 : tc_conv2d_column_size(filter);
}

/* The pair-column path, for every shape. */
static TC_NOINLINE int tc_conv2d_columns(const tc_context *ctx, const tc_conv_params *params,
                                         const tc_requant_params *rq, const tc_dims *in_dims,
                                         const int8_t *input, const tc_filter_dims *filter,
                                         const int8_t *weights, const int32_t *bias,
                                         const tc_dims *out_dims, int8_t *output)
{
    const int32_t groups = params->groups;
    const int32_t k = filter->kh * filter->kw * filter->c;
    const int32_t pixels = out_dims->h * out_dims->w;
    const int16_t *w16 = NULL;
    int16_t *col;
    int32_t g, i, m_per_group, raw, strip;
    if (groups < 1 || filter->c * groups != in_dims->c || filter->m % groups != 0 ||
        filter->m != out_dims->c || params->stride_h < 1 || params->stride_w < 1 ||
        params->dilation_h < 1 || params->dilation_w < 1) {
        return TC_ERR_BAD_ARG;
    }
    if (tc_conv2d_get_column_size(params, filter, in_dims, out_dims) == 0) {
        tc_conv2d_pointwise(ctx, params, rq, in_dims, input, filter, weights, bias, out_dims,
                            output);
        return TC_OK;
    }
    /* the pair column is read with word loads: 4-byte alignment */
    if (ctx == NULL || ctx->buf == NULL || ctx->size < tc_conv2d_column_size(filter) ||
        ((uintptr_t)ctx->buf & 3u) != 0) {
        return TC_ERR_BAD_ARG;
    }
    m_per_group = filter->m / groups;
    col = (int16_t *)ctx->buf;
    raw = rq->folded_bias != NULL && (filter->c & 3) == 0;
    strip = raw ? tc_ring_strip(params, filter, out_dims,
                                ctx->size - tc_conv2d_column_size(filter))
                : 0;
    if (raw && groups == 1 && filter->kh == 1 && filter->kw == 1) {
        w16 = params->weights_s16;
    }
    for (g = 0; g < groups; g++) {
        const int8_t *w = weights + g * m_per_group * k;
        tc_matmul_output o;
        o.bias = raw ? rq->folded_bias : bias;
        o.rq = rq;
        o.first_channel = g * m_per_group;
        o.output_zero_point = params->output_zero_point;
        o.act_min = params->act_min;
        o.act_max = params->act_max;
        o.fast = rq->fast != NULL ? rq->fast + o.first_channel : NULL;
        if (strip > 0) { /* one group */
            tc_conv2d_strips(params, in_dims, input, filter, w, w16, &o, out_dims, output, col,
                             strip);
            continue;
        }
        for (i = 0; i < pixels; i += 2) {
            const int32_t oy = i / out_dims->w, ox = i % out_dims->w;
            int8_t *out0 = output + i * out_dims->c + g * m_per_group;
            tc_conv_column(params, in_dims, input, filter, g, oy, ox, col, 0, raw);
            if (i + 1 < pixels) {
                const int32_t oy1 = ox + 1 < out_dims->w ? oy : oy + 1;
                const int32_t ox1 = ox + 1 < out_dims->w ? ox + 1 : 0;
                tc_conv_column(params, in_dims, input, filter, g, oy1, ox1, col, 1, raw);
                tc_conv_matmul(w, w16, m_per_group, k, col, &o, out0, out0 + out_dims->c);
            } else {
                tc_conv_matmul(w, w16, m_per_group, k, col, &o, out0, NULL);
            }
        }
    }
    return TC_OK;
}

int tc_conv2d(const tc_context *ctx, const tc_conv_params *params, const tc_requant_params *rq,
              const tc_dims *in_dims, const int8_t *input, const tc_filter_dims *filter,
              const int8_t *weights, const int32_t *bias, const tc_dims *out_dims,
              int8_t *output)
{
#if TC_USE_MVE
    return tc_conv2d_mve(ctx, params, rq, in_dims, input, filter, weights, bias, out_dims, output);
#endif
    if (tc_conv2d_1ch(ctx, params, rq, in_dims, input, filter, weights, bias, out_dims,
                      output) == TC_OK) {
        return TC_OK;
    }
    return tc_conv2d_columns(ctx, params, rq, in_dims, input, filter, weights, bias, out_dims,
                             output);
}
