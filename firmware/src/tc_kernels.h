/* The int8 kernels, one public function per file, in the style of CMSIS-NN's s8 kernels.
 *
 * Every kernel takes small parameter structs, int8 NHWC activations and OHWI weights, returns
 * TC_OK or a TC_ERR_* code (tc_model.h), and never allocates: a kernel that needs scratch memory
 * has a *_get_buffer_size() companion and receives that memory in a tc_context. The arithmetic
 * is runtime/kernels.py's, bit for bit (docs/ARITHMETIC.md). */
#ifndef TC_KERNELS_H
#define TC_KERNELS_H

#include <stdint.h>

#include "tc_model.h"
#include "tc_requant.h"

/* Scratch memory the caller owns. */
typedef struct {
    void *buf;
    int32_t size;
} tc_context;

/* A per-sample NHWC shape; a vector of K values is {1, 1, K}. */
typedef struct {
    int32_t h, w, c;
} tc_dims;

/* Filter shape: m output channels of kh x kw x c (c = input channels per group). */
typedef struct {
    int32_t m, kh, kw, c;
} tc_filter_dims;

/* A word of a table export writes to flash for a kernel: a constant or, on Thumb-2, the address
 * of code the kernel's threaded loop jumps to (model_data.h's tc_layer_word, same layout). */
typedef union {
    int32_t value;
    const unsigned char *code;
} tc_kernel_word;

typedef struct {
    int32_t input_zero_point;
    int32_t output_zero_point;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left; /* bottom/right padding follows from the output shape */
    int32_t dilation_h, dilation_w;
    int32_t groups;            /* conv2d: 1 or any divisor; depthwise: input channels */
    int32_t act_min, act_max;  /* clamp after requantization, within [-128, 127] */
    /* conv2d 1x1 on a DSP core, optional (NULL: the dot loop sign-extends the int8 weights):
     * the weights as int16 row pairs, pair-swapped (tc_matmul.h), written at export */
    const int16_t *weights_s16;
    /* conv2d 1x1 without padding, one-channel conv2d and depthwise 3x3, optional (NULL:
     * none): the input itself, when nothing reads it after this layer; pixels already read
     * may then hold the pair column (1x1), the packed rows (tc_conv2d_1ch.c) or the column
     * buffer (tc_depthwise_conv2d.c) */
    int8_t *input_spare;
    /* one-channel conv2d, optional (NULL: the generic path): the layer's table, written at
     * export (tc_conv2d_1ch.c) */
    const tc_kernel_word *table_1ch;
} tc_conv_params;

typedef struct {
    int32_t input_zero_point;
    int32_t output_zero_point;
    int32_t act_min, act_max;
} tc_fc_params;

typedef struct {
    int32_t kernel_h, kernel_w;
    int32_t stride_h, stride_w;
    int32_t pad_top, pad_left, pad_bottom, pad_right;
    int32_t count_include_pad; /* avg_pool2d: count the padding's taps in the divisor ... */
    int32_t ceil_pad_bottom, ceil_pad_right; /* ... except these last rows and columns of it,
                                                which ONNX's ceil_mode added */
    int32_t act_min, act_max;
} tc_pool_params;

/* Average pools (docs/ARITHMETIC.md). fixed: TFLite's int8 average / MEAN, i.e. the sum
 * (zero-centred and rescaled when rescale != 0) divided by the count rounding half away from
 * zero. float: onnxruntime's QLinearAveragePool / QLinearGlobalAveragePool. */
typedef struct {
    int32_t mode;              /* TC_RQ_FIXED_DOUBLE or TC_RQ_FLOAT */
    int32_t input_zero_point;
    int32_t output_zero_point;
    int32_t multiplier, shift; /* fixed: input scale / output scale */
    int32_t rescale;           /* fixed avg_pool2d: 0 when input and output quantization agree */
    const float *scales;       /* float: avg_pool2d {x_scale, y_scale, global_scale};
                                  global_avg_pool {scale}; NULL in fixed mode */
} tc_mean_params;

/* Elementwise add of two int8 tensors with their own quantization. fixed: TFLite's int8 add;
 * float: onnxruntime's QLinearAdd (two fused multiply-adds). */
typedef struct {
    int32_t mode;              /* TC_RQ_FIXED_DOUBLE or TC_RQ_FLOAT */
    int32_t a_zero_point, b_zero_point, output_zero_point, left_shift;
    int32_t a_multiplier, a_shift, b_multiplier, b_shift, multiplier, shift;
    const float *scales;       /* float: {a_scale, b_scale, offset}; NULL in fixed mode */
    int32_t act_min, act_max;
} tc_add_params;

/* conv2d, including grouped convolution (filter.c = in.c / groups). Without rq->fast and
 * rq->folded_bias every output takes the generic requantization and there is no row ring. */
int32_t tc_conv2d_get_buffer_size(const tc_filter_dims *filter);
/* What a layer needs of that: tc_conv2d_get_buffer_size, but 0 for a 1x1 conv without padding
 * (one group), which keeps its column in the output's unwritten part or needs none. */
int32_t tc_conv2d_get_column_size(const tc_conv_params *params, const tc_filter_dims *filter,
                                  const tc_dims *in_dims, const tc_dims *out_dims);
/* Optional extra bytes after tc_conv2d_get_buffer_size (0 when the shape has no use for them):
 * a ring of kh input rows converted to int16 once per layer, from which the im2col is a copy
 * (one group, no dilation, input channels a multiple of four). */
int32_t tc_conv2d_get_ring_size(const tc_conv_params *params, const tc_filter_dims *filter,
                                const tc_dims *out_dims);
/* conv2d of a one-channel input (groups 1, kh <= 16): two adjacent output pixels per 64-bit
 * multiply-accumulate (tc_conv2d_1ch.c), from the table export wrote (params->table_1ch; none
 * when a channel has 256 * sum|w| >= 2^22). The buffer size is 0 for other shapes. Returns
 * TC_ERR_UNSUPPORTED, having written no output, when the shape, the buffer or the missing
 * table do not suit it; tc_conv2d then takes its generic path. */
int32_t tc_conv2d_1ch_get_buffer_size(const tc_conv_params *params, const tc_filter_dims *filter,
                                      const tc_dims *out_dims);
int tc_conv2d_1ch(const tc_context *ctx, const tc_conv_params *params,
                  const tc_requant_params *rq, const tc_dims *in_dims, const int8_t *input,
                  const tc_filter_dims *filter, const int8_t *weights, const int32_t *bias,
                  const tc_dims *out_dims, int8_t *output);
int tc_conv2d(const tc_context *ctx, const tc_conv_params *params, const tc_requant_params *rq,
              const tc_dims *in_dims, const int8_t *input, const tc_filter_dims *filter,
              const int8_t *weights, const int32_t *bias, const tc_dims *out_dims,
              int8_t *output);

/* Depthwise conv2d: groups == in.c, filter.m = in.c * channel multiplier, filter.c == 1.
 * No scratch (tc_depthwise_conv2d_get_buffer_size is 0). 3x3 kernels without horizontal
 * dilation take the channel-major fast path: on Thumb-2 cores its column buffer lives in ctx's
 * buffer when that holds it, else in input rows already read (params->input_spare) or output
 * rows not yet written, and the rows left without room take the direct loop; the other cores
 * read their input in place. Any other shape takes the direct loop. */
int32_t tc_depthwise_conv2d_get_buffer_size(int32_t out_w, int32_t stride_w);
int tc_depthwise_conv2d(const tc_context *ctx, const tc_conv_params *params,
                        const tc_requant_params *rq,
                        const tc_dims *in_dims, const int8_t *input,
                        const tc_filter_dims *filter, const int8_t *weights,
                        const int32_t *bias, const tc_dims *out_dims, int8_t *output);

/* Fully connected: output[m] over the input read as a vector of depth values. No scratch
 * (get_buffer_size is 0; ctx is unused and may be NULL). */
int32_t tc_fully_connected_get_buffer_size(int32_t depth);
int tc_fully_connected(const tc_context *ctx, const tc_fc_params *params,
                       const tc_requant_params *rq, int32_t depth, const int8_t *input,
                       int32_t out_channels, const int8_t *weights, const int32_t *bias,
                       int8_t *output);

/* Max pool: output quantization equals the input's; taps in the padding are ignored. */
/* The taps [first, end) of a pool window starting at start (negative: in the padding) that lie
 * inside a dimension of size taps long; an empty range for a window wholly in the padding. */
static inline void tc_pool_window(int32_t start, int32_t taps, int32_t size, int32_t *first,
                                  int32_t *end)
{
    *first = start < 0 ? -start : 0;
    *end = size - start < taps ? size - start : taps;
    if (*end < *first) {
        *end = *first;
    }
}

int tc_max_pool2d(const tc_pool_params *params, const tc_dims *in_dims, const int8_t *input,
                  const tc_dims *out_dims, int8_t *output);

int tc_avg_pool2d(const tc_pool_params *params, const tc_mean_params *mean,
                  const tc_dims *in_dims, const int8_t *input, const tc_dims *out_dims,
                  int8_t *output);

/* Mean over H and W: output is 1 x 1 x C. */
int tc_global_avg_pool(const tc_mean_params *mean, int32_t act_min, int32_t act_max,
                       const tc_dims *in_dims, const int8_t *input, int8_t *output);

int tc_add(const tc_add_params *params, int32_t size, const int8_t *a, const int8_t *b,
           int8_t *output);

/* output[i] = clamp(table[input[i] + 128]) over size values whose channel (the last axis,
 * channels long) picks a 256-entry row when tables == channels; tables == 1: one table. */
int tc_lookup(const int8_t *table, int32_t tables, int32_t channels, int32_t size,
              int32_t act_min, int32_t act_max, const int8_t *input, int8_t *output);
/* Softmax over the depth channels of each of rows rows; output scale 1/256, zero point -128.
 * fixed: TFLite Micro's reference int8 softmax; float: onnxruntime's QLinearSoftmax. */
typedef struct {
    int32_t mode;              /* TC_RQ_FIXED_DOUBLE or TC_RQ_FLOAT */
    int32_t input_multiplier, input_left_shift, diff_min; /* fixed */
    const float *exp_table;    /* float: 256 entries, indexed by row max - x; NULL if fixed */
} tc_softmax_params;

int tc_softmax(const tc_softmax_params *params, int32_t rows, int32_t depth, const int8_t *input,
               int8_t *output);

/* Tensor ops (tc_concat.c, tc_pad.c, tc_resize.c, tc_mul.c, tc_sub.c). */

/* One input of a channel concat: its in_c channels go to channels [first, first + in_c) of each
 * of the pixels output pixels, through table (256 output codes indexed by input code + 128)
 * when its quantization differs from the output's, else copied (table NULL). */
int tc_concat(const int8_t *input, const int8_t *table, int32_t pixels, int32_t in_c,
              int32_t first, int32_t out_c, int8_t *output);

#define TC_PAD_CONSTANT 0
#define TC_PAD_REFLECT 1 /* mirror without repeating the edge; pads smaller than the input */
#define TC_PAD_EDGE 2

typedef struct {
    int32_t top, left, bottom, right;
    int32_t mode; /* TC_PAD_* */
    int8_t value; /* constant mode: the value in the input's (and output's) quantization */
} tc_pad_params;

int tc_pad(const tc_pad_params *params, const tc_dims *in_dims, const int8_t *input,
           const tc_dims *out_dims, int8_t *output);

int tc_resize_nearest(const int32_t *rows, const int32_t *cols, const tc_dims *in_dims,
                      const int8_t *input, const tc_dims *out_dims, int8_t *output);

/* Elementwise product. fixed: TFLite's int8 MUL; float: onnxruntime's QLinearMul. */
typedef struct {
    int32_t mode;              /* TC_RQ_FIXED_DOUBLE or TC_RQ_FLOAT */
    int32_t a_zero_point, b_zero_point, output_zero_point;
    int32_t multiplier, shift; /* fixed: a_scale * b_scale / y_scale */
    const float *scales;       /* float: {the same ratio in float32}; NULL in fixed mode */
    int32_t act_min, act_max;
} tc_mul_params;

int tc_mul(const tc_mul_params *params, int32_t size, int32_t channels, const int8_t *a,
           const int8_t *b, int32_t b_size, int8_t *output);

/* a - b with add's parameters. fixed: TFLite's int8 SUB; float: dequantize, subtract,
 * quantize, with scales {a_scale, b_scale, y_scale} and the zero points. */
int tc_sub(const tc_add_params *params, int32_t size, const int8_t *a, const int8_t *b,
           int8_t *output);

#endif
