/* Internal: the dot-product engine shared by conv2d and fully_connected.
 *
 * Inputs arrive as an "im2col" column of int16 values (x - input_zero_point), so padding taps
 * are plain zeros and the inner loop is nothing but multiply-accumulates. Two output channels
 * times two columns are computed together, so every load feeds two MACs: this is what brings
 * the Cortex-M3 under 3 instructions per MAC. With the DSP extension (Cortex-M4) the column is
 * stored pair-swapped within each group of four (x0 x2 x1 x3) so that SXTB16 of a weight word,
 * and of the same word rotated by 8, line up with it for SMLAD, as CMSIS-NN does. */
#ifndef TC_MATMUL_H
#define TC_MATMUL_H

#include <stdint.h>

#include "tc_requant.h"

/* Where the output of a block of channels goes and how it is finished. */
typedef struct {
    const int32_t *bias;         /* may be NULL; indexed from first_channel */
    const tc_requant_params *rq; /* indexed from first_channel */
    int32_t first_channel;       /* model channel index of weight row 0 */
    int32_t output_zero_point;
    int32_t act_min, act_max;
} tc_matmul_output;

/* Build a column in natural order with tc_column_fill (x - zero_point as int16) and
 * tc_column_zero (padding), then call tc_column_finish once on the whole column of k values
 * to put it in the order tc_matmul reads. */
static inline void tc_column_fill(int16_t *col, const int8_t *src, int32_t count,
                                  int32_t zero_point)
{
    int32_t i;
    for (i = 0; i < count; i++) {
        col[i] = (int16_t)(src[i] - zero_point);
    }
}

static inline void tc_column_zero(int16_t *col, int32_t count)
{
    int32_t i;
    for (i = 0; i < count; i++) {
        col[i] = 0;
    }
}

void tc_column_finish(int16_t *col, int32_t k);

/* rows x k weights (row r at weights + r * k) times one or two columns (col1 may be NULL):
 * writes rows int8 outputs to out0 (and out1) */
void tc_matmul(const int8_t *weights, int32_t rows, int32_t k, const int16_t *col0,
               const int16_t *col1, const tc_matmul_output *o, int8_t *out0, int8_t *out1);

#endif
