/* conv2d on Helium: four output pixels at a time, their windows copied as raw int8 into four
 * im2col columns of k = kh * kw * c values (padding taps hold the input zero point), then per
 * output channel one pass over its k weights: four VMLADAVA.S8 (one per column) per 16
 * weights. Export's bias has the input zero point folded in (rq->folded_bias); a direct caller
 * without it gets a VADDVA per 16 weights too (the weights' sum, times the zero point
 * subtracted). The columns take 4 * k bytes: the pair column's part of
 * tc_conv2d_get_buffer_size, which is also what CMSIS-NN's MVE arm_convolve_s8 asks for. Four
 * interior pixels of one output row are copied in one call; a 1x1 conv without padding (any
 * stride) reads its four pixels where they are: no copy and, like CMSIS-NN's
 * arm_convolve_1x1_s8, no scratch; a one-channel input goes to tc_conv2d_1ch.c first, whose
 * scalar loop executes fewer instructions at k = kh * kw. Float requantization stays scalar
 * (integer MVE only), inline with the channel's scale read once; single rounding out of line,
 * so that neither moves the vector loop's registers. */
#include <stddef.h>

#include "tc_asm.h"
#include "tc_mve.h"

#if TC_USE_MVE

/* hot loop: optimize for speed even in an -Os image */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O2")
#endif

/* n bytes from src to dst, and n copies of a byte to dst: one tail-predicated loop each
 * (WLSTP skips it for n == 0). */
void tc_mve_copy(int8_t *dst, const int8_t *src, int32_t n);
__asm__(
    TC_ASM_BEGIN("tc_mve_copy")
    "  push {lr}\n"
    "  wlstp.8 lr, r2, 2f\n"
    "1:\n"
    "  vldrb.8 q0, [r1], #16\n"
    "  vstrb.8 q0, [r0], #16\n"
    "  letp lr, 1b\n"
    "2:\n"
    "  pop {pc}\n"
    TC_ASM_END("tc_mve_copy"));

void tc_mve_fill(int8_t *dst, int32_t value, int32_t n);
__asm__(
    TC_ASM_BEGIN("tc_mve_fill")
    "  push {lr}\n"
    "  vdup.8 q0, r1\n"
    "  wlstp.8 lr, r2, 2f\n"
    "1:\n"
    "  vstrb.8 q0, [r0], #16\n"
    "  letp lr, 1b\n"
    "2:\n"
    "  pop {pc}\n"
    TC_ASM_END("tc_mve_fill"));

/* The window of output pixel (oy, ox) of one group as k int8 values. A row of the window that
 * lies inside the image with contiguous taps (no dilation along x, one group) is one copy. */
static void tc_mve_column(const tc_conv_params *p, const tc_dims *in, const int8_t *input,
                          const tc_filter_dims *f, int32_t group, int32_t oy, int32_t ox,
                          int8_t *col)
{
    const int32_t cg = f->c, zp = p->input_zero_point;
    const int32_t y0 = oy * p->stride_h - p->pad_top;
    const int32_t x0 = ox * p->stride_w - p->pad_left;
    const int32_t whole_rows = p->dilation_w == 1 && cg == in->c && x0 >= 0 &&
                               x0 + f->kw <= in->w;
    const int8_t *base = input + group * cg;
    int32_t ky, kx;
    for (ky = 0; ky < f->kh; ky++) {
        const int32_t iy = y0 + ky * p->dilation_h;
        if (iy < 0 || iy >= in->h) {
            tc_mve_fill(col, zp, f->kw * cg);
            col += f->kw * cg;
            continue;
        }
        if (whole_rows) {
            tc_mve_copy(col, base + (iy * in->w + x0) * in->c, f->kw * cg);
            col += f->kw * cg;
            continue;
        }
        for (kx = 0; kx < f->kw; kx++, col += cg) {
            const int32_t ix = x0 + kx * p->dilation_w;
            if (ix >= 0 && ix < in->w) {
                tc_mve_copy(col, base + (iy * in->w + ix) * in->c, cg);
            } else {
                tc_mve_fill(col, zp, cg);
            }
        }
    }
}

/* The four columns of four pixels of one output row whose windows lie wholly inside the image
 * (one group, no dilation along x): kh rows of run bytes each, row ky of column q from
 * src + ky * row_step + q * pixel_step, to cols + q * kh * run + ky * run. One call instead of
 * four tc_mve_column's: this is most of a conv's im2col. */
void tc_mve_im2col4(int8_t *cols, const int8_t *src, int32_t run, int32_t kh, int32_t row_step,
                    int32_t pixel_step);
__asm__(
    TC_ASM_BEGIN("tc_mve_im2col4")
    "  push {r4-r10, lr}\n"
    "  ldr r4, [sp, #32]\n"
    "  ldr r5, [sp, #36]\n"
    "  mul r6, r2, r3\n"
    "1:\n"
    "  mov r7, r1\n"
    "  mov r8, r0\n"
    "  movs r9, #4\n"
    "2:\n"
    "  mov r12, r7\n"
    "  mov r10, r8\n"
    "  wlstp.8 lr, r2, 4f\n"
    "3:\n"
    "  vldrb.8 q0, [r12], #16\n"
    "  vstrb.8 q0, [r10], #16\n"
    "  letp lr, 3b\n"
    "4:\n"
    "  add r7, r7, r5\n"
    "  add r8, r8, r6\n"
    "  subs r9, r9, #1\n"
    "  bne 2b\n"
    "  add r1, r1, r4\n"
    "  add r0, r0, r2\n"
    "  subs r3, r3, #1\n"
    "  bne 1b\n"
    "  pop {r4-r10, pc}\n"
    TC_ASM_END("tc_mve_im2col4"));

/* rows rows of k weights (from w on) times the four columns cols[0..3]: out[5r .. 5r + 3] =
 * row r's four dot products, out[5r + 4] = its weights' sum (tc_mve_dot4_rows_sums), or
 * out[4r .. 4r + 3] without the sum (tc_mve_dot4_rows: the bias has the input zero point
 * folded in). Per 16 weights one load of them, four of the columns, four VMLADAVA (and one
 * VADDVA), in a tail-predicated low-overhead loop (DLSTP / LETP: the last partial block needs
 * no extra code). The accumulators must be even registers; every pointer steps 16 per block,
 * so after a row each one goes back by k rounded up to 16 (r11) and the weights forward by k.
 * The columns may lie anywhere: a 1x1 conv's are the input's pixels themselves. */
void tc_mve_dot4_rows_sums(const int8_t *w, const int8_t *const *cols, int32_t k, int32_t *out,
                           int32_t rows);
void tc_mve_dot4_rows(const int8_t *w, const int8_t *const *cols, int32_t k, int32_t *out,
                      int32_t rows);
#define TC_MVE_DOT4(name, words_lsl, sum_init, sum, store) \
    TC_ASM_BEGIN(name) \
    "  push {r4-r11, lr}\n" \
    "  ldr r4, [sp, #36]\n" \
    words_lsl \
    "  sub sp, sp, #8\n" \
    "  str r4, [sp]\n" \
    "  ldr r5, [r1, #4]\n" \
    "  ldr r7, [r1, #8]\n" \
    "  ldr r9, [r1, #12]\n" \
    "  ldr r1, [r1]\n" \
    "  add r11, r2, #15\n" \
    "  bic r11, r11, #15\n" \
    "2:\n" \
    "  movs r4, #0\n" \
    "  movs r6, #0\n" \
    "  mov r8, #0\n" \
    "  mov r10, #0\n" \
    sum_init \
    "  dlstp.8 lr, r2\n" \
    "1:\n" \
    "  vldrb.8 q0, [r0], #16\n" \
    "  vldrb.8 q1, [r1], #16\n" \
    "  vmladava.s8 r4, q0, q1\n" \
    "  vldrb.8 q2, [r5], #16\n" \
    "  vmladava.s8 r6, q0, q2\n" \
    "  vldrb.8 q3, [r7], #16\n" \
    "  vmladava.s8 r8, q0, q3\n" \
    "  vldrb.8 q1, [r9], #16\n" \
    "  vmladava.s8 r10, q0, q1\n" \
    sum \
    "  letp lr, 1b\n" \
    store \
    "  sub r1, r1, r11\n" \
    "  sub r5, r5, r11\n" \
    "  sub r7, r7, r11\n" \
    "  sub r9, r9, r11\n" \
    "  sub r0, r0, r11\n" \
    "  add r0, r0, r2\n" \
    "  ldr lr, [sp]\n" \
    "  cmp r3, lr\n" \
    "  bne 2b\n" \
    "  add sp, sp, #8\n" \
    "  pop {r4-r11, pc}\n" \
    TC_ASM_END(name)
__asm__(TC_MVE_DOT4("tc_mve_dot4_rows_sums",
                    "  add r4, r4, r4, lsl #2\n  add r4, r3, r4, lsl #2\n",
                    "  mov r12, #0\n",
                    "  vaddva.s8 r12, q0\n",
                    "  stm r3!, {r4, r6, r8, r10, r12}\n"));
__asm__(TC_MVE_DOT4("tc_mve_dot4_rows",
                    "  add r4, r3, r4, lsl #4\n",
                    "",
                    "",
                    "  stm r3!, {r4, r6, r8, r10}\n"));

#define TC_MVE_CHUNK 8 /* rows per tc_mve_dot4_rows call: 160 bytes of stack */

/* The scalar requantization (single rounding) of count channels (from ch on) of the n pixels:
 * dots d (words per channel), the channels' bias in lanes. Out of line, so that the vector
 * loop's register allocation does not move with it. */
static TC_NOINLINE void tc_mve_store_scalar(const int32_t *d, int32_t words,
                                            const int32_t *lanes, int32_t count, int32_t n,
                                            const tc_requant_params *rq, int32_t ch,
                                            const tc_conv_params *p, int8_t *o, int32_t stride)
{
    const int32_t ozp = p->output_zero_point;
    int32_t i, q;
    for (i = 0; i < count; i++, d += words) {
        int8_t *oq = o + i;
        for (q = 0; q < n; q++, oq += stride) {
            const int32_t a = (int32_t)((uint32_t)d[q] + (uint32_t)lanes[i]);
            *oq = tc_clamp_s8(tc_requantize(a, rq, ch + i) + ozp, p->act_min, p->act_max);
        }
    }
}

/* rows weight rows times the four columns; out points at pixel 0's first channel, pixel q's
 * output is q * stride further; only the first n pixels are stored (the other columns are
 * computed from whatever they hold). bias is the folded one (rq->folded_bias: no weight sums
 * needed) when folded, else the plain one, less the input zero point times the sums.
 * Requantized four channels at a time: a gather of one pixel's four dot products is a vector
 * with the channels' constants in its lanes. */
static void tc_mve_rows(const int8_t *w, int32_t rows, int32_t k, const int8_t *const *cols,
                        const tc_requant_params *rq, const int32_t *bias, int32_t folded,
                        int32_t ch, const tc_conv_params *p, int8_t *out, int32_t stride,
                        int32_t n)
{
    const int32_t words = folded ? 4 : 5; /* per row of dots: four products (and the sum) */
    const uint32x4_t gather = vmulq_n_u32(vidupq_n_u32(0, 1), (uint32_t)words);
    const int32_t zp = p->input_zero_point, ozp = p->output_zero_point;
    int32_t dots[5 * TC_MVE_CHUNK], lanes[4];
    int32_t r, q, c;
    for (r = 0; r < rows; r += TC_MVE_CHUNK) {
        const int32_t chunk = rows - r < TC_MVE_CHUNK ? rows - r : TC_MVE_CHUNK;
        if (folded) {
            tc_mve_dot4_rows(w + r * k, cols, k, dots, chunk);
        } else {
            tc_mve_dot4_rows_sums(w + r * k, cols, k, dots, chunk);
        }
        for (c = 0; c < chunk; c += 4, ch += 4) {
            const mve_pred16_t pc = vctp32q((uint32_t)(chunk - c));
            const int32_t *d = dots + words * c;
            int8_t *o = out + r + c;
            /* bias - zp * sum w, wrapping like int32 */
            int32x4_t b = folded ? vdupq_n_s32(0)
                                 : vmulq_n_s32(vldrwq_gather_shifted_offset_s32(d + 4, gather),
                                               -zp);
            if (bias != NULL) {
                b = vaddq_s32(b, vldrwq_z_s32(bias + ch, pc));
            }
            if (rq->mode == TC_RQ_FIXED_DOUBLE) {
                const tc_mve_requant rc = tc_mve_requant_load(rq, ch, pc);
                for (q = 0; q < n; q++, d++, o += stride) {
                    const int32x4_t acc = vaddq_s32(vldrwq_gather_shifted_offset_s32(d, gather),
                                                    b);
                    vstrbq_p_s32(o, tc_mve_requant_double(acc, &rc, ozp, p->act_min,
                                                          p->act_max), pc);
                }
                continue;
            }
            vstrwq_s32(lanes, b);
#if TC_ENABLE_FLOAT_REQUANT
            if (rq->mode == TC_RQ_FLOAT) { /* inline: the float builds' common case */
                int32_t i;
                for (i = 0; i < 4 && c + i < chunk; i++, d += words) {
                    const float scale = rq->scale[ch + i];
                    int8_t *oq = o + i;
                    for (q = 0; q < n; q++, oq += stride) {
                        const int32_t a = (int32_t)((uint32_t)d[q] + (uint32_t)lanes[i]);
                        *oq = tc_clamp_s8(tc_requant_float(a, scale) + ozp, p->act_min,
                                          p->act_max);
                    }
                }
                continue;
            }
#endif
            tc_mve_store_scalar(d, words, lanes, chunk - c < 4 ? chunk - c : 4, n, rq, ch, p, o,
                                stride);
        }
    }
}

int tc_conv2d_mve(const tc_context *ctx, const tc_conv_params *params,
                  const tc_requant_params *rq, const tc_dims *in_dims, const int8_t *input,
                  const tc_filter_dims *filter, const int8_t *weights, const int32_t *bias,
                  const tc_dims *out_dims, int8_t *output)
{
    const int32_t groups = params->groups;
    const int32_t k = filter->kh * filter->kw * filter->c;
    const int32_t pixels = out_dims->h * out_dims->w, ow = out_dims->w;
    const int32_t folded = rq->folded_bias != NULL;
    const int32_t *const b = folded ? rq->folded_bias : bias;
    const int8_t *c[4], *x = input;
    const int32_t step = params->stride_w * in_dims->c;
    const int32_t row_step = params->stride_h * in_dims->w * in_dims->c - (ow - 1) * step;
    int8_t *cols;
    int32_t g, i, q, m_per_group, direct, rows_inside, dx = 0;
    if (groups < 1 || filter->c * groups != in_dims->c || filter->m % groups != 0 ||
        filter->m != out_dims->c || params->stride_h < 1 || params->stride_w < 1 ||
        params->dilation_h < 1 || params->dilation_w < 1) {
        return TC_ERR_BAD_ARG;
    }
    /* one input channel: the scalar kernel's two-pixel SMLAL loop executes fewer instructions */
    if (tc_conv2d_1ch(ctx, params, rq, in_dims, input, filter, weights, bias, out_dims,
                      output) == TC_OK) {
        return TC_OK;
    }
    /* a 1x1 conv without padding: the input's pixels are the columns, no copy, no scratch */
    direct = tc_conv2d_get_column_size(params, filter, in_dims, out_dims) == 0;
    if (!direct && (ctx == NULL || ctx->buf == NULL || ctx->size < 4 * k)) {
        return TC_ERR_BAD_ARG;
    }
    m_per_group = filter->m / groups;
    cols = direct ? NULL : (int8_t *)ctx->buf;
    rows_inside = groups == 1 && params->dilation_w == 1;
    for (g = 0; g < groups; g++) {
        for (i = 0; i < pixels; i += 4) {
            const int32_t n = pixels - i < 4 ? pixels - i : 4;
            const int32_t oy = i / ow, ox = i % ow;
            const int32_t y0 = oy * params->stride_h - params->pad_top;
            const int32_t x0 = ox * params->stride_w - params->pad_left;
            if (direct) { /* pixels past the last repeat it: computed, not stored */
                for (q = 0; q < 4; q++) {
                    c[q] = x;
                    if (q + 1 < n) {
                        x += ++dx < ow ? step : row_step;
                        dx = dx < ow ? dx : 0;
                    }
                }
                x += ++dx < ow ? step : row_step;
                dx = dx < ow ? dx : 0;
            } else if (rows_inside && n == 4 && ox + 3 < ow && y0 >= 0 &&
                       y0 + (filter->kh - 1) * params->dilation_h < in_dims->h && x0 >= 0 &&
                       x0 + 3 * params->stride_w + filter->kw <= in_dims->w) {
                tc_mve_im2col4(cols, input + (y0 * in_dims->w + x0) * in_dims->c,
                               filter->kw * in_dims->c, filter->kh,
                               params->dilation_h * in_dims->w * in_dims->c,
                               params->stride_w * in_dims->c);
            } else {
                for (q = 0; q < n; q++) {
                    tc_mve_column(params, in_dims, input, filter, g, (i + q) / ow,
                                  (i + q) % ow, cols + q * k);
                }
            }
            for (q = 0; !direct && q < 4; q++) {
                c[q] = cols + q * k;
            }
            tc_mve_rows(weights + g * m_per_group * k, m_per_group, k, c, rq, b, folded,
                        g * m_per_group, params, output + i * out_dims->c + g * m_per_group,
                        out_dims->c, n);
        }
    }
    return TC_OK;
}

#endif
