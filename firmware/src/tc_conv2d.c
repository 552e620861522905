/* conv2d, grouped or not: im2col two output pixels at a time, then tc_matmul. */
#include <stddef.h>

#include "tc_kernels.h"

/* hot loop: optimize for speed even in an -Os image */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif
#include "tc_matmul.h"

int32_t tc_conv2d_get_buffer_size(const tc_filter_dims *filter)
{
    return 2 * filter->kh * filter->kw * filter->c * (int32_t)sizeof(int16_t);
}

/* The column for one output pixel of one group: kh x kw taps of cg channels each. */
static void tc_conv_column(const tc_conv_params *p, const tc_dims *in, const int8_t *input,
                           const tc_filter_dims *f, int32_t group, int32_t oy, int32_t ox,
                           int16_t *col)
{
    const int32_t cg = f->c;
    const int32_t y0 = oy * p->stride_h - p->pad_top;
    const int32_t x0 = ox * p->stride_w - p->pad_left;
    int16_t *dst = col;
    int32_t ky, kx;
    for (ky = 0; ky < f->kh; ky++) {
        const int32_t iy = y0 + ky * p->dilation_h;
        for (kx = 0; kx < f->kw; kx++, dst += cg) {
            const int32_t ix = x0 + kx * p->dilation_w;
            if (iy < 0 || iy >= in->h || ix < 0 || ix >= in->w) {
                tc_column_zero(dst, cg);
            } else {
                tc_column_fill(dst, input + (iy * in->w + ix) * in->c + group * cg, cg,
                               p->input_zero_point);
            }
        }
    }
    tc_column_finish(col, f->kh * f->kw * cg);
}

int tc_conv2d(const tc_context *ctx, const tc_conv_params *params, const tc_requant_params *rq,
              const tc_dims *in_dims, const int8_t *input, const tc_filter_dims *filter,
              const int8_t *weights, const int32_t *bias, const tc_dims *out_dims,
              int8_t *output)
{
    const int32_t groups = params->groups;
    const int32_t k = filter->kh * filter->kw * filter->c;
    int16_t *col0, *col1;
    int32_t g, m_per_group;
    if (groups < 1 || filter->c * groups != in_dims->c || filter->m % groups != 0 ||
        filter->m != out_dims->c || params->stride_h < 1 || params->stride_w < 1 ||
        params->dilation_h < 1 || params->dilation_w < 1) {
        return TC_ERR_BAD_ARG;
    }
    if (ctx == NULL || ctx->buf == NULL || ctx->size < tc_conv2d_get_buffer_size(filter)) {
        return TC_ERR_BAD_ARG;
    }
    m_per_group = filter->m / groups;
    col0 = (int16_t *)ctx->buf;
    col1 = col0 + k;
    for (g = 0; g < groups; g++) {
        const int8_t *w = weights + g * m_per_group * k;
        int8_t *pending = NULL; /* output of the pixel whose column waits in col0 */
        tc_matmul_output o;
        int32_t oy, ox;
        o.bias = bias;
        o.rq = rq;
        o.first_channel = g * m_per_group;
        o.output_zero_point = params->output_zero_point;
        o.act_min = params->act_min;
        o.act_max = params->act_max;
        for (oy = 0; oy < out_dims->h; oy++) {
            for (ox = 0; ox < out_dims->w; ox++) {
                int8_t *out = output + (oy * out_dims->w + ox) * out_dims->c + g * m_per_group;
                if (pending == NULL) {
                    tc_conv_column(params, in_dims, input, filter, g, oy, ox, col0);
                    pending = out;
                } else {
                    tc_conv_column(params, in_dims, input, filter, g, oy, ox, col1);
                    tc_matmul(w, m_per_group, k, col0, col1, &o, pending, out);
                    pending = NULL;
                }
            }
        }
        if (pending != NULL) {
            tc_matmul(w, m_per_group, k, col0, NULL, &o, pending, NULL);
        }
    }
    return TC_OK;
}
