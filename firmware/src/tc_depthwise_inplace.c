/* Depthwise 3x3 (no horizontal dilation) with no scratch: the NHWC input is read in place.
 *
 * Channel-major like the column kernel (tc_depthwise_conv2d.c): one output channel at a time,
 * row by row. A row's three tap rows are three input-row pointers; a tap row outside the
 * image gets zero weights (and a pointer to a row inside, never read for effect), so the
 * loops need no vertical test. Values are raw int8 and the zero-point term lives in the row's
 * bias (bias - zp * sum of the weights in the image rows: export's folded bias, bias - zp * sum
 * of all nine, plus the padding rows' part): a padding column reads as the zero point and
 * cancels. The fast requantization's flags come from export too (rq->fast). At stride 1
 * a row slides a window of three columns, one new column per output (the zero point where it
 * lies in the padding); at other strides the outputs whose window lies inside the image load
 * it whole and the others take a per-tap test.
 *
 * Scratch beside CMSIS-NN: none, as arm_depthwise_conv_3x3_s8 (and less than
 * arm_depthwise_conv_s8_opt's c * 9 int16 on the shapes that one takes). It is the path of
 * the cores without the Thumb-2 column loops (the Cortex-M0 and the host build); the
 * Cortex-M3/M4/M7/M55 keep the column kernel (which finds room for its buffer, needing no
 * scratch either), because this loop, one LDRSB per tap value and no pair packing, costs more
 * instructions per MAC there (11.8 against 3.58 and 3.04 on the bench layer). */
#include "tc_depthwise.h"

/* hot loop: optimize for speed even in an -Os image */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif

/* The layer's constants and one channel's row: tap-row pointers, weights and bias. */
typedef struct {
    int32_t in_w, cs, sw, pl, out_w, os, zp, lo, hi, ozp, m;
    int32_t first, end; /* the outputs whose window lies inside the image, once per layer */
    const tc_requant_params *rq;
    tc_requant_fast f;
    int32_t mul_hi, mul_lo; /* the multiplier's halves (tc_mulh_round_halves) */
} tc_dwi_layer;

/* The Cortex-M0 multiplies in 32 bits (tc_mulh_round_halves); other cores as
 * tc_requant_double_fast. */
#if defined(__arm__) && !defined(__thumb2__)
#define TC_DWI_HALVES 1
#else
#define TC_DWI_HALVES 0
#endif

typedef struct {
    const int8_t *row[3];
    int32_t w[3][3]; /* [tap row][kx] */
    int32_t bias;
} tc_dwi_row;

TC_INLINE int8_t tc_dwi_out(const tc_dwi_layer *l, int32_t acc)
{
    int32_t v;
    if (l->f.fast) {
        const int32_t acc2 = (int32_t)((uint32_t)acc << 1);
#if TC_DWI_HALVES
        const int32_t high = tc_mulh_round_halves(acc2, l->mul_hi, l->mul_lo);
        v = (high + l->f.offset + (high >> 31)) >> l->f.right;
#else
        v = tc_requant_double_fast(acc2, &l->f);
#endif
    } else {
        v = tc_requantize(acc, l->rq, l->m) + l->ozp;
    }
    return tc_clamp_s8(v, l->lo, l->hi);
}

/* bias + the taps' sum (|sum| <= 9 * 128 * 255) in uint32, as the row bias is formed: export
 * refuses layers whose accumulator could leave int32, and C gets no signed overflow. */
static int32_t tc_dwi_add(int32_t bias, int32_t sum)
{
    return (int32_t)((uint32_t)bias + (uint32_t)sum);
}

/* One output whose window may reach into the horizontal padding. */
static int32_t tc_dwi_edge(const tc_dwi_layer *l, const tc_dwi_row *r, int32_t ix)
{
    int32_t sum = 0, s, kx;
    for (kx = 0; kx < 3; kx++) {
        const int32_t x = ix + kx;
        for (s = 0; s < 3; s++) {
            sum += r->w[s][kx] * (x >= 0 && x < l->in_w ? r->row[s][x * l->cs] : l->zp);
        }
    }
    return tc_dwi_add(r->bias, sum);
}

/* A whole row at stride 1: the window's columns slide, one new column per output, read as the
 * zero point where it lies in the padding. */
static void tc_dwi_row_s1(const tc_dwi_layer *l, const tc_dwi_row *r, int8_t *out)
{
    const int32_t cs = l->cs, in_w = l->in_w, zp = l->zp;
    const int32_t w00 = r->w[0][0], w01 = r->w[0][1], w02 = r->w[0][2];
    const int32_t w10 = r->w[1][0], w11 = r->w[1][1], w12 = r->w[1][2];
    const int32_t w20 = r->w[2][0], w21 = r->w[2][1], w22 = r->w[2][2];
    const int8_t *x0 = r->row[0], *x1 = r->row[1], *x2 = r->row[2];
    int32_t x = -l->pl, o = x * cs, ox;
    /* the window's first two columns */
    int32_t a0 = zp, a1 = zp, a2 = zp, b0 = zp, b1 = zp, b2 = zp;
    if ((uint32_t)x < (uint32_t)in_w) {
        a0 = x0[o];
        a1 = x1[o];
        a2 = x2[o];
    }
    x++;
    o += cs;
    if ((uint32_t)x < (uint32_t)in_w) {
        b0 = x0[o];
        b1 = x1[o];
        b2 = x2[o];
    }
    for (ox = 0; ox < l->out_w; ox++, out += l->os) {
        int32_t c0 = zp, c1 = zp, c2 = zp, acc;
        x++;
        o += cs;
        if ((uint32_t)x < (uint32_t)in_w) {
            c0 = x0[o];
            c1 = x1[o];
            c2 = x2[o];
        }
        acc = tc_dwi_add(r->bias, w00 * a0 + w10 * a1 + w20 * a2 + w01 * b0 + w11 * b1 +
                                      w21 * b2 + w02 * c0 + w12 * c1 + w22 * c2);
        *out = tc_dwi_out(l, acc);
        a0 = b0;
        a1 = b1;
        a2 = b2;
        b0 = c0;
        b1 = c1;
        b2 = c2;
    }
}

static void tc_dwi_row_run(const tc_dwi_layer *l, const tc_dwi_row *r, int8_t *out)
{
    int32_t ox = 0;
    for (; ox < l->first; ox++) {
        out[ox * l->os] = tc_dwi_out(l, tc_dwi_edge(l, r, ox * l->sw - l->pl));
    }
    for (; ox < l->end; ox++) {
        const int32_t cs = l->cs, ix = ox * l->sw - l->pl;
        int32_t sum = 0, s;
        for (s = 0; s < 3; s++) {
            const int8_t *x = r->row[s] + ix * cs;
            sum += r->w[s][0] * x[0] + r->w[s][1] * x[cs] + r->w[s][2] * x[2 * cs];
        }
        out[ox * l->os] = tc_dwi_out(l, tc_dwi_add(r->bias, sum));
    }
    for (; ox < l->out_w; ox++) {
        out[ox * l->os] = tc_dwi_out(l, tc_dwi_edge(l, r, ox * l->sw - l->pl));
    }
}

int tc_depthwise_3x3_inplace(const tc_conv_params *p, const tc_requant_params *rq,
                             const tc_dims *in_dims, const int8_t *input,
                             const tc_filter_dims *filter, const int8_t *weights,
                             const int32_t *bias, const tc_dims *out_dims, int8_t *output)
{
    const int32_t multiplier = filter->m / in_dims->c, in_row = in_dims->w * in_dims->c;
    tc_dwi_layer l;
    int32_t m;
    l.in_w = in_dims->w;
    l.cs = in_dims->c;
    l.sw = p->stride_w;
    l.pl = p->pad_left;
    l.out_w = out_dims->w;
    l.os = out_dims->c;
    l.zp = p->input_zero_point;
    l.lo = p->act_min;
    l.hi = p->act_max;
    l.ozp = p->output_zero_point;
    l.rq = rq;
    /* interior: ix = ox * sw - pl >= 0 and ix + 2 < in_w */
    l.first = (l.pl + l.sw - 1) / l.sw;
    l.end = l.in_w - 3 + l.pl < 0 ? 0 : (l.in_w - 3 + l.pl) / l.sw + 1;
    l.first = l.first < l.out_w ? l.first : l.out_w;
    l.end = l.end < l.first ? l.first : (l.end < l.out_w ? l.end : l.out_w);
    for (m = 0; m < filter->m; m++) {
        const int8_t *w = weights + m * 9, *src = input + m / multiplier;
        const int32_t folded = tc_dw_folded_bias(rq, m, w, bias, l.zp);
        int32_t oy;
        tc_dwi_row r;
        l.m = m;
        l.f = tc_dw_fast(rq, m, w, bias, l.zp, l.ozp);
        l.f.fast &= TC_DW_FAST;
        l.mul_hi = l.f.multiplier >> 16;
        l.mul_lo = l.f.multiplier & 0xffff;
        for (oy = 0; oy < out_dims->h; oy++) {
            const int32_t y0 = oy * p->stride_h - p->pad_top;
            int32_t ky, outside = 0;
            for (ky = 0; ky < 3; ky++) {
                const int32_t y = y0 + ky * p->dilation_h;
                const int inside = y >= 0 && y < in_dims->h;
                int32_t kx;
                r.row[ky] = src + (inside ? y : 0) * in_row;
                for (kx = 0; kx < 3; kx++) {
                    r.w[ky][kx] = inside ? w[ky * 3 + kx] : 0;
                    outside += inside ? 0 : w[ky * 3 + kx];
                }
            }
            /* the tap rows in the padding take no zero-point term */
            r.bias = (int32_t)((uint32_t)folded + (uint32_t)l.zp * (uint32_t)outside);
            if (l.sw == 1) {
                tc_dwi_row_s1(&l, &r, output + oy * out_dims->w * out_dims->c + m);
            } else {
                tc_dwi_row_run(&l, &r, output + oy * out_dims->w * out_dims->c + m);
            }
        }
    }
    return TC_OK;
}
