/* conv2d, grouped or not: im2col two output pixels at a time into a pair column, then
 * tc_matmul_pair; one-channel inputs go to tc_conv2d_1ch.c first. */
#include <stddef.h>

#include "tc_asm.h"
#include "tc_kernels.h"
#include "tc_mve.h"

/* hot loop: optimize for speed even in an -Os image */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif
#include "tc_matmul.h"

/* The pair column, then (optional: without them every output takes the generic requantization
 * and the column holds x - zero point) per output channel the constants of the fast
 * requantization and the bias with the input zero point folded in. */
static int32_t tc_conv2d_column_size(const tc_filter_dims *filter)
{
    return (2 * filter->kh * filter->kw * filter->c * (int32_t)sizeof(int16_t) + 3) & ~3;
}

int32_t tc_conv2d_get_buffer_size(const tc_filter_dims *filter)
{
    return tc_conv2d_column_size(filter) +
           filter->m * (int32_t)(sizeof(tc_requant_fast) + sizeof(int32_t));
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

/* The row ring (after the pair column and the requantization constants, when the buffer holds
 * it): kh input rows converted to int16 once per layer, in the order of the pair column's
 * groups, padded on the left and right with the zero point and as wide as the windows of an
 * output row reach, each with a tag saying which input row it holds. The pair column of two
 * pixels of one output row is then a copy of whole groups of four from two places of the same
 * converted rows: no conversion and no bounds checks per window. Only for one group, no
 * dilation and a channel count that is a multiple of four (raw inputs). */
static int32_t tc_conv2d_ring_width(const tc_conv_params *p, const tc_filter_dims *f,
                                    const tc_dims *out)
{
    return (out->w - 1) * p->stride_w + f->kw;
}

int32_t tc_conv2d_get_ring_size(const tc_conv_params *p, const tc_filter_dims *f,
                                const tc_dims *out)
{
    if (p->groups != 1 || p->dilation_h != 1 || p->dilation_w != 1 || (f->c & 3) != 0 ||
        out->w < 1) {
        return 0;
    }
    return f->kh * ((int32_t)sizeof(int32_t) +
                    tc_conv2d_ring_width(p, f, out) * f->c * (int32_t)sizeof(int16_t));
}

/* A 1x1 conv on the ring (Cortex-M4): after the ring, the row pairs' weights as int16
 * (tc_weights_to_s16_pairs), when the buffer holds them too. Only for 1x1 windows, where the
 * dot loop is most of the cost. This copy grows with the weights, so export asks for it only
 * up to 4 KB (c_codegen.WEIGHT_COPY_MAX: a 32->32 layer, 2 KB, yes; MobileNet's 256->256,
 * 128 KB, no); without it tc_matmul_pair sign-extends the weights (SXTB16) as it reads them. */
int32_t tc_conv2d_get_pointwise_size(const tc_conv_params *p, const tc_filter_dims *f,
                                     const tc_dims *out)
{
    if (f->kh != 1 || f->kw != 1 || tc_conv2d_get_ring_size(p, f, out) == 0) {
        return 0;
    }
    return (f->m & ~1) * f->c * (int32_t)sizeof(int16_t);
}

/* groups * 4 int8 values into int16 in the order of the pair column's groups */
static void tc_groups_to_s16(int16_t *dst, const int8_t *src, int32_t groups)
{
    int16_t *const end = dst + 4 * groups;
#if TC_USE_DSP
    for (; dst != end; dst += 4, src += 4) {
        const int32_t v = tc_read_s32(src);
        tc_write_s32(dst, __sxtb16(v));
        tc_write_s32(dst + 2, tc_sxtb16_ror8(v));
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
                         const tc_conv_params *p, int32_t iy, int32_t width)
{
    const int32_t c = in->c, x_first = -p->pad_left;
    int32_t left = x_first < 0 ? -x_first : 0;
    int32_t right = x_first + width > in->w ? x_first + width - in->w : 0;
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

/* The pair column of output pixels (oy, ox) and (oy, ox + 1) from the ring, converting the
 * rows it needs that it does not hold yet. */
static void tc_ring_pair_column(const tc_conv_params *p, const tc_dims *in, const int8_t *input,
                                const tc_filter_dims *f, int32_t *tags, int16_t *rows,
                                int32_t width, int32_t oy, int32_t ox, int16_t *col)
{
    const int32_t c = in->c, run = f->kw * c, y0 = oy * p->stride_h - p->pad_top;
    const int32_t offset = ox * p->stride_w * c, step = p->stride_w * c;
    int32_t ky;
    for (ky = 0; ky < f->kh; ky++) {
        const int32_t iy = y0 + ky, slot = (iy + p->pad_top) % f->kh;
        int16_t *row = rows + slot * width * c;
        if (tags[slot] != iy) {
            tc_ring_fill(row, in, input, p, iy, width);
            tags[slot] = iy;
        }
        tc_pair_copy_groups(col + 2 * ky * run, row + offset, row + offset + step, run >> 2);
    }
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
    int16_t *col;
    tc_requant_fast *fast = NULL;
    int32_t *folded_bias = NULL;
    int32_t *tags = NULL;
    int16_t *rows = NULL;
#if TC_HAVE_MATMUL_S16
    int16_t *w16 = NULL;
#endif
    int32_t g, i, m_per_group, raw, width = 0;
    if (groups < 1 || filter->c * groups != in_dims->c || filter->m % groups != 0 ||
        filter->m != out_dims->c || params->stride_h < 1 || params->stride_w < 1 ||
        params->dilation_h < 1 || params->dilation_w < 1) {
        return TC_ERR_BAD_ARG;
    }
    /* the pair column is read with word loads: 4-byte alignment */
    if (ctx == NULL || ctx->buf == NULL || ctx->size < tc_conv2d_column_size(filter) ||
        ((uintptr_t)ctx->buf & 3u) != 0) {
        return TC_ERR_BAD_ARG;
    }
    m_per_group = filter->m / groups;
    col = (int16_t *)ctx->buf;
    if (ctx->size >= tc_conv2d_get_buffer_size(filter)) {
        fast = (tc_requant_fast *)(void *)((char *)ctx->buf + tc_conv2d_column_size(filter));
        folded_bias = (int32_t *)(void *)(fast + filter->m);
    }
    raw = folded_bias != NULL && (filter->c & 3) == 0;
    if (raw && tc_conv2d_get_ring_size(params, filter, out_dims) > 0 &&
        ctx->size >= tc_conv2d_get_buffer_size(filter) +
                         tc_conv2d_get_ring_size(params, filter, out_dims)) {
        tags = folded_bias + filter->m;
        rows = (int16_t *)(void *)(tags + filter->kh);
        width = tc_conv2d_ring_width(params, filter, out_dims);
        for (i = 0; i < filter->kh; i++) {
            tags[i] = INT32_MIN;
        }
#if TC_HAVE_MATMUL_S16
        if (tc_conv2d_get_pointwise_size(params, filter, out_dims) > 0 &&
            ctx->size >= tc_conv2d_get_buffer_size(filter) +
                             tc_conv2d_get_ring_size(params, filter, out_dims) +
                             tc_conv2d_get_pointwise_size(params, filter, out_dims)) {
            w16 = rows + filter->kh * width * filter->c;
            tc_weights_to_s16_pairs(weights, filter->m, k, w16);
        }
#endif
    }
    for (g = 0; g < groups; g++) {
        const int8_t *w = weights + g * m_per_group * k;
        tc_matmul_output o;
        o.bias = bias;
        o.rq = rq;
        o.first_channel = g * m_per_group;
        o.output_zero_point = params->output_zero_point;
        o.act_min = params->act_min;
        o.act_max = params->act_max;
        o.fast = NULL;
        if (fast != NULL) {
            tc_matmul_prepare_fast(w, m_per_group, k, &o, params->input_zero_point, fast,
                                   folded_bias);
            o.fast = fast;
        }
        if (raw) {
            o.bias = folded_bias;
        }
        for (i = 0; i < pixels; i += 2) {
            const int32_t oy = i / out_dims->w, ox = i % out_dims->w;
            int8_t *out0 = output + i * out_dims->c + g * m_per_group;
            if (rows != NULL && ox + 1 < out_dims->w) {
                tc_ring_pair_column(params, in_dims, input, filter, tags, rows, width, oy, ox,
                                    col);
#if TC_HAVE_MATMUL_S16
                if (w16 != NULL) {
                    tc_matmul_pair_s16(w, w16, m_per_group, k, col, &o, out0,
                                       out0 + out_dims->c);
                    continue;
                }
#endif
                tc_matmul_pair(w, m_per_group, k, col, &o, out0, out0 + out_dims->c);
                continue;
            }
            tc_conv_column(params, in_dims, input, filter, g, oy, ox, col, 0, raw);
            if (i + 1 < pixels) {
                const int32_t oy1 = ox + 1 < out_dims->w ? oy : oy + 1;
                const int32_t ox1 = ox + 1 < out_dims->w ? ox + 1 : 0;
                tc_conv_column(params, in_dims, input, filter, g, oy1, ox1, col, 1, raw);
                tc_matmul_pair(w, m_per_group, k, col, &o, out0, out0 + out_dims->c);
            } else {
                tc_matmul_pair(w, m_per_group, k, col, &o, out0, NULL);
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
