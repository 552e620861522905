/* The model runner: walks the generated layer table (model_data.c) and calls one kernel per
 * layer on the static activation arena, at the offsets export/ planned. */
#include <stddef.h>

#include "model_data.h"
#include "tc_kernels.h"
#include "tc_model.h"

#if TC_LAYER_TABLE_VERSION != 4
#error "model_data.h has a layer table this tc_model.c does not know: re-export the model"
#endif
#if TC_REQUANT_MODE == TC_REQUANT_FLOAT && !TC_ENABLE_FLOAT_REQUANT
#error "a float-mode model needs TC_ENABLE_FLOAT_REQUANT=1"
#endif

/* The ops the model uses (bit TC_OP_x, from model_data.h): a kernel no layer needs is never
 * referenced, so the linker drops it, and with it its flash and its share of the worst-case
 * stack (firmware_host/stack.py). */
#ifndef TC_MODEL_OPS
#define TC_MODEL_OPS 0xffffffffu
#endif
#define TC_USES(op) (((TC_MODEL_OPS) >> (op)) & 1u)

/* tc_model.h: room for a request frame's header before the input and its CRC after it. */
static int8_t tc_arena_frame[TC_INPUT_HEADROOM + TC_ARENA_SIZE + TC_ARENA_TAILROOM] TC_ALIGN;
#define tc_arena (tc_arena_frame + TC_INPUT_HEADROOM)
static int16_t tc_scratch[(TC_SCRATCH_SIZE + 1) / 2] TC_ALIGN;

static void tc_copy(int8_t *dst, const int8_t *src, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; i++) {
        dst[i] = src[i];
    }
}

static tc_requant_params tc_layer_requant(const tc_layer_t *l)
{
    tc_requant_params rq;
    rq.mode = l->rq_mode == TC_LAYER_RQ_FLOAT
                  ? TC_RQ_FLOAT
                  : (l->rq_mode == TC_LAYER_RQ_FIXED_SINGLE ? TC_RQ_FIXED_SINGLE
                                                            : TC_RQ_FIXED_DOUBLE);
    rq.multiplier = l->multiplier;
    rq.shift = l->shift;
    rq.scale = l->scale;
    rq.fast = (const tc_requant_fast *)(const void *)l->fast;
    rq.folded_bias = l->folded_bias;
    return rq;
}

/* add and sub share their constants' layout (iparams[0..9], fparams). */
static tc_add_params tc_layer_add_params(const tc_layer_t *l)
{
    tc_add_params p;
    p.mode = TC_REQUANT_MODE == TC_REQUANT_FLOAT ? TC_RQ_FLOAT : TC_RQ_FIXED_DOUBLE;
    p.a_zero_point = l->iparams[0];
    p.b_zero_point = l->iparams[1];
    p.output_zero_point = l->iparams[2];
    p.left_shift = l->iparams[3];
    p.a_multiplier = l->iparams[4];
    p.a_shift = l->iparams[5];
    p.b_multiplier = l->iparams[6];
    p.b_shift = l->iparams[7];
    p.multiplier = l->iparams[8];
    p.shift = l->iparams[9];
    p.scales = l->fparams;
    p.act_min = l->act_min;
    p.act_max = l->act_max;
    return p;
}

static tc_mean_params tc_layer_mean(const tc_layer_t *l)
{
    tc_mean_params mean;
    mean.mode = TC_REQUANT_MODE == TC_REQUANT_FLOAT ? TC_RQ_FLOAT : TC_RQ_FIXED_DOUBLE;
    mean.input_zero_point = l->iparams[0];
    mean.output_zero_point = l->iparams[1];
    mean.multiplier = l->iparams[2];
    mean.shift = l->iparams[3];
    mean.rescale = l->iparams[4];
    mean.scales = l->fparams;
    return mean;
}

/* concat, pad, mul, resize_nearest, sub (export/c_codegen.py documents their fields). */
static int tc_run_tensor_op(const tc_layer_t *l, const tc_dims *in_dims, const int8_t *in,
                            const tc_dims *out_dims, int8_t *out)
{
    const int32_t size = l->out_h * l->out_w * l->out_c;
    if (l->op == TC_OP_CONCAT && TC_USES(TC_OP_CONCAT)) {
        /* bias: {arena offset, channels, table index or -1} per input; weights: the tables */
        int32_t i, first = 0;
        for (i = 0; i < l->iparams[0]; i++) {
            const int32_t *part = l->bias + 3 * i;
            const int8_t *table = part[2] < 0 ? NULL : l->weights + 256 * part[2];
            const int rc = tc_concat(tc_arena + part[0], table, l->out_h * l->out_w, part[1],
                                     first, l->out_c, out);
            if (rc != TC_OK) {
                return rc;
            }
            first += part[1];
        }
        return first == l->out_c ? TC_OK : TC_ERR_BAD_ARG;
    }
    if (l->op == TC_OP_PAD && TC_USES(TC_OP_PAD)) {
        tc_pad_params p;
        p.top = l->pad_top;
        p.left = l->pad_left;
        p.bottom = l->pad_bottom;
        p.right = l->pad_right;
        p.value = (int8_t)l->iparams[0];
        p.mode = l->iparams[1];
        return tc_pad(&p, in_dims, in, out_dims, out);
    }
    if (l->op == TC_OP_RESIZE_NEAREST && TC_USES(TC_OP_RESIZE_NEAREST)) {
        /* bias: the out_h row indices, then the out_w column indices */
        return tc_resize_nearest(l->bias, l->bias + l->out_h, in_dims, in, out_dims, out);
    }
    if (l->op == TC_OP_MUL && TC_USES(TC_OP_MUL)) {
        tc_mul_params p;
        p.mode = TC_REQUANT_MODE == TC_REQUANT_FLOAT ? TC_RQ_FLOAT : TC_RQ_FIXED_DOUBLE;
        p.a_zero_point = l->iparams[0];
        p.b_zero_point = l->iparams[1];
        p.output_zero_point = l->iparams[2];
        p.multiplier = l->iparams[3];
        p.shift = l->iparams[4];
        p.scales = l->fparams;
        p.act_min = l->act_min;
        p.act_max = l->act_max;
        return tc_mul(&p, size, l->out_c, in, tc_arena + l->input2_offset, l->iparams[5], out);
    }
    if (l->op == TC_OP_SUB && TC_USES(TC_OP_SUB)) {
        const tc_add_params p = tc_layer_add_params(l);
        return tc_sub(&p, size, in, tc_arena + l->input2_offset, out);
    }
    return TC_ERR_UNSUPPORTED;
}

static int tc_run_layer(const tc_layer_t *l)
{
    const int8_t *in = tc_arena + l->input_offset;
    int8_t *out = tc_arena + l->output_offset;
    tc_dims in_dims, out_dims;
    in_dims.h = l->in_h;
    in_dims.w = l->in_w;
    in_dims.c = l->in_c;
    out_dims.h = l->out_h;
    out_dims.w = l->out_w;
    out_dims.c = l->out_c;
    switch (l->op) {
    case TC_OP_CONV2D:
    case TC_OP_DEPTHWISE_CONV2D: {
        const tc_requant_params rq = tc_layer_requant(l);
        tc_conv_params p;
        tc_filter_dims f;
        p.input_zero_point = l->input_zero_point;
        p.output_zero_point = l->output_zero_point;
        p.stride_h = l->stride_h;
        p.stride_w = l->stride_w;
        p.pad_top = l->pad_top;
        p.pad_left = l->pad_left;
        p.dilation_h = l->dilation_h;
        p.dilation_w = l->dilation_w;
        p.groups = l->groups;
        p.act_min = l->act_min;
        p.act_max = l->act_max;
        p.weights_s16 = l->weights_s16;
        p.input_spare = l->iparams[0] ? tc_arena + l->input_offset : NULL; /* 1x1, 1ch, depthwise */
        p.table_1ch = (const tc_kernel_word *)(const void *)l->table_1ch;
        f.m = l->out_c;
        f.kh = l->kernel_h;
        f.kw = l->kernel_w;
        f.c = l->in_c / l->groups;
        tc_context ctx;
        ctx.buf = tc_scratch;
        ctx.size = (int32_t)sizeof tc_scratch;
        if (l->iparams[2] > 0) { /* an arena gap no live tensor uses (export/plan.py) */
            ctx.buf = tc_arena + l->iparams[1];
            ctx.size = l->iparams[2];
        }
        if (l->op == TC_OP_DEPTHWISE_CONV2D) {
            return TC_USES(TC_OP_DEPTHWISE_CONV2D)
                       ? tc_depthwise_conv2d(&ctx, &p, &rq, &in_dims, in, &f, l->weights,
                                             l->bias, &out_dims, out)
                       : TC_ERR_UNSUPPORTED;
        }
        return TC_USES(TC_OP_CONV2D) ? tc_conv2d(&ctx, &p, &rq, &in_dims, in, &f, l->weights,
                                                 l->bias, &out_dims, out)
                                     : TC_ERR_UNSUPPORTED;
    }
    case TC_OP_FULLY_CONNECTED: {
        const tc_requant_params rq = tc_layer_requant(l);
        tc_fc_params p;
        tc_context ctx;
        p.input_zero_point = l->input_zero_point;
        p.output_zero_point = l->output_zero_point;
        p.act_min = l->act_min;
        p.act_max = l->act_max;
        ctx.buf = tc_scratch;
        ctx.size = (int32_t)sizeof tc_scratch;
        return TC_USES(TC_OP_FULLY_CONNECTED)
                   ? tc_fully_connected(&ctx, &p, &rq, l->in_h * l->in_w * l->in_c, in,
                                        l->out_c, l->weights, l->bias, out)
                   : TC_ERR_UNSUPPORTED;
    }
    case TC_OP_MAX_POOL2D:
    case TC_OP_AVG_POOL2D: {
        tc_pool_params p;
        p.kernel_h = l->kernel_h;
        p.kernel_w = l->kernel_w;
        p.stride_h = l->stride_h;
        p.stride_w = l->stride_w;
        p.pad_top = l->pad_top;
        p.pad_left = l->pad_left;
        p.pad_bottom = l->pad_bottom;
        p.pad_right = l->pad_right;
        p.count_include_pad = l->count_include_pad;
        p.ceil_pad_bottom = l->ceil_pad_bottom;
        p.ceil_pad_right = l->ceil_pad_right;
        p.act_min = l->act_min;
        p.act_max = l->act_max;
        if (l->op == TC_OP_MAX_POOL2D) {
            return TC_USES(TC_OP_MAX_POOL2D) ? tc_max_pool2d(&p, &in_dims, in, &out_dims, out)
                                             : TC_ERR_UNSUPPORTED;
        } else {
            const tc_mean_params mean = tc_layer_mean(l);
            return TC_USES(TC_OP_AVG_POOL2D)
                       ? tc_avg_pool2d(&p, &mean, &in_dims, in, &out_dims, out)
                       : TC_ERR_UNSUPPORTED;
        }
    }
    case TC_OP_GLOBAL_AVG_POOL: {
        const tc_mean_params mean = tc_layer_mean(l);
        return TC_USES(TC_OP_GLOBAL_AVG_POOL)
                   ? tc_global_avg_pool(&mean, l->act_min, l->act_max, &in_dims, in, out)
                   : TC_ERR_UNSUPPORTED;
    }
    case TC_OP_ADD: {
        const tc_add_params p = tc_layer_add_params(l);
        return TC_USES(TC_OP_ADD) ? tc_add(&p, l->in_h * l->in_w * l->in_c, in,
                                           tc_arena + l->input2_offset, out)
                                  : TC_ERR_UNSUPPORTED;
    }
    case TC_OP_LOOKUP:
        /* weights: the int8 table(s), iparams[0] of them */
        return TC_USES(TC_OP_LOOKUP)
                   ? tc_lookup(l->weights, l->iparams[0], l->in_c, l->in_h * l->in_w * l->in_c,
                               l->act_min, l->act_max, in, out)
                   : TC_ERR_UNSUPPORTED;
    case TC_OP_SOFTMAX: {
        tc_softmax_params p;
        p.mode = TC_REQUANT_MODE == TC_REQUANT_FLOAT ? TC_RQ_FLOAT : TC_RQ_FIXED_DOUBLE;
        p.input_multiplier = l->iparams[0];
        p.input_left_shift = l->iparams[1];
        p.diff_min = l->iparams[2];
        p.exp_table = l->fparams;
        return TC_USES(TC_OP_SOFTMAX)
                   ? tc_softmax(&p, l->in_h * l->in_w, l->in_c, in, out)
                   : TC_ERR_UNSUPPORTED;
    }
    case TC_OP_CONCAT:
    case TC_OP_PAD:
    case TC_OP_MUL:
    case TC_OP_RESIZE_NEAREST:
    case TC_OP_SUB:
        return tc_run_tensor_op(l, &in_dims, in, &out_dims, out);
    default:
        return TC_ERR_UNSUPPORTED;
    }
}

static int tc_run_layers(uint32_t (*clock)(void), uint32_t *layer_ticks)
{
    int32_t i;
    for (i = 0; i < TC_NUM_LAYERS; i++) {
        const uint32_t start = clock ? clock() : 0u;
        const int rc = tc_run_layer(&tc_layers[i]);
        if (clock && layer_ticks) {
            layer_ticks[i] = clock() - start;
        }
        if (rc != TC_OK) {
            return rc;
        }
    }
    return TC_OK;
}

int tc_model_run_timed(const int8_t *input, int8_t *output, uint32_t (*clock)(void),
                       uint32_t *layer_ticks)
{
    int rc;
    if (input == NULL || output == NULL) {
        return TC_ERR_BAD_ARG;
    }
    tc_copy(tc_arena + TC_INPUT_OFFSET, input, TC_INPUT_SIZE);
    rc = tc_run_layers(clock, layer_ticks);
    if (rc != TC_OK) {
        return rc;
    }
    tc_copy(output, tc_arena + TC_OUTPUT_OFFSET, TC_OUTPUT_SIZE);
    return TC_OK;
}

int tc_model_run(const int8_t *input, int8_t *output)
{
    return tc_model_run_timed(input, output, NULL, NULL);
}

int8_t *tc_model_input(void)
{
    return tc_arena + TC_INPUT_OFFSET;
}

const int8_t *tc_model_output(void)
{
    return tc_arena + TC_OUTPUT_OFFSET;
}

int tc_model_run_in_place(void)
{
    return tc_run_layers(NULL, NULL);
}
