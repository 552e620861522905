/* The depthwise kernel's two 3x3 paths, shared by tc_depthwise_conv2d.c (the dispatcher and
 * the column kernel) and tc_depthwise_inplace.c (the kernel without scratch). */
#ifndef TC_DEPTHWISE_H
#define TC_DEPTHWISE_H

#include "tc_kernels.h"

/* A 3x3 layer without horizontal dilation, read in place: no scratch. */
int tc_depthwise_3x3_inplace(const tc_conv_params *p, const tc_requant_params *rq,
                             const tc_dims *in_dims, const int8_t *input,
                             const tc_filter_dims *filter, const int8_t *weights,
                             const int32_t *bias, const tc_dims *out_dims, int8_t *output);

#endif
