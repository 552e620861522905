/* fully_connected: the input becomes one int16 column, then tc_matmul. */
#include <stddef.h>

#include "tc_kernels.h"
#include "tc_matmul.h"
#include "tc_mve.h"

int32_t tc_fully_connected_get_buffer_size(int32_t depth)
{
    return depth * (int32_t)sizeof(int16_t);
}

int tc_fully_connected(const tc_context *ctx, const tc_fc_params *params,
                       const tc_requant_params *rq, int32_t depth, const int8_t *input,
                       int32_t out_channels, const int8_t *weights, const int32_t *bias,
                       int8_t *output)
{
    int16_t *col;
    tc_matmul_output o;
#if TC_USE_MVE
    return tc_fully_connected_mve(ctx, params, rq, depth, input, out_channels, weights, bias,
                                  output);
#endif
    if (depth < 1 || out_channels < 1) {
        return TC_ERR_BAD_ARG;
    }
    if (ctx == NULL || ctx->buf == NULL ||
        ctx->size < tc_fully_connected_get_buffer_size(depth)) {
        return TC_ERR_BAD_ARG;
    }
    col = (int16_t *)ctx->buf;
    tc_column_fill(col, input, depth, params->input_zero_point);
    tc_column_finish(col, depth);
    o.bias = bias;
    o.rq = rq;
    o.first_channel = 0;
    o.output_zero_point = params->output_zero_point;
    o.act_min = params->act_min;
    o.act_max = params->act_max;
    o.fast = NULL; /* one output per channel: the per-channel bound would cost as much */
    tc_matmul_column(weights, out_channels, depth, col, &o, output);
    return TC_OK;
}
