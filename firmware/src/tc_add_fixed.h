/* The fixed-mode arithmetic that add and sub share (tc_add.c): TFLite's int8 ADD, both inputs
 * rescaled to a common scale, b's term added (b_sign 1) or subtracted (b_sign -1) before the
 * output rescale. Only the float modes of add and sub differ (see tc_add.c, tc_sub.c). */
#ifndef TC_ADD_FIXED_H
#define TC_ADD_FIXED_H

#include "tc_kernels.h"

void tc_add_fixed(const tc_add_params *params, int32_t size, const int8_t *a, const int8_t *b,
                  int32_t b_sign, int8_t *output);

#endif
