/* fully_connected: tc_matmul_vector on the raw int8 inputs; no scratch (export folds the input
 * zero point into the bias, so the model's layers come with input_zero_point 0). */
#include <stddef.h>

#include "tc_kernels.h"
#include "tc_matmul.h"
#include "tc_mve.h"

int32_t tc_fully_connected_get_buffer_size(int32_t depth)
{
    (void)depth;
    return 0;
}

int tc_fully_connected(const tc_context *ctx, const tc_fc_params *params,
                       const tc_requant_params *rq, int32_t depth, const int8_t *input,
                       int32_t out_channels, const int8_t *weights, const int32_t *bias,
                       int8_t *output)
{
    tc_matmul_output o;
    (void)ctx;
#if TC_USE_MVE
    return tc_fully_connected_mve(ctx, params, rq, depth, input, out_channels, weights, bias,
                                  output);
#endif
    if (depth < 1 || out_channels < 1) {
        return TC_ERR_BAD_ARG;
    }
    o.bias = bias;
    o.rq = rq;
    o.first_channel = 0;
    o.output_zero_point = params->output_zero_point;
    o.act_min = params->act_min;
    o.act_max = params->act_max;
    o.fast = NULL; /* one output per channel: the per-channel bound would cost as much */
    tc_matmul_vector(weights, out_channels, depth, input, params->input_zero_point, &o, output);
    return TC_OK;
}
