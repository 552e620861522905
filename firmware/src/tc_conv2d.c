/* conv2d, grouped or not: im2col two output pixels at a time into a pair column, then
 * tc_matmul_pair. */
#include <stddef.h>

#include "tc_kernels.h"

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

int tc_conv2d(const tc_context *ctx, const tc_conv_params *params, const tc_requant_params *rq,
              const tc_dims *in_dims, const int8_t *input, const tc_filter_dims *filter,
              const int8_t *weights, const int32_t *bias, const tc_dims *out_dims,
              int8_t *output)
{
    const int32_t groups = params->groups;
    const int32_t k = filter->kh * filter->kw * filter->c;
    const int32_t pixels = out_dims->h * out_dims->w;
    int16_t *col;
    tc_requant_fast *fast = NULL;
    int32_t *folded_bias = NULL;
    int32_t g, m_per_group, raw;
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
    for (g = 0; g < groups; g++) {
        const int8_t *w = weights + g * m_per_group * k;
        tc_matmul_output o;
        int32_t i;
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
