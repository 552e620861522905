/* Runs the generated model (model_data.c) on one input, using the static activation arena. */
#ifndef TC_MODEL_H
#define TC_MODEL_H

#include <stdint.h>

#define TC_OK 0
#define TC_ERR_BAD_ARG 1
#define TC_ERR_UNSUPPORTED 2

/* input: TC_INPUT_SIZE int8 values (NHWC); output: TC_OUTPUT_SIZE int8 values.
 * Returns TC_OK or a TC_ERR_* code. Not reentrant: one inference at a time. */
int tc_model_run(const int8_t *input, int8_t *output);

/* tc_model_run that also records clock() ticks spent in each layer into layer_ticks
 * (TC_NUM_LAYERS entries; e.g. clock = tc_port_ticks) for per-layer profiling. */
int tc_model_run_timed(const int8_t *input, int8_t *output, uint32_t (*clock)(void),
                       uint32_t *layer_ticks);

/* The arena's storage has TC_INPUT_HEADROOM free bytes before the input tensor and
 * TC_ARENA_TAILROOM after the arena's end, so a receiver can decode a whole request frame (header,
 * input tensor, CRC) straight into place: between runs nothing in the arena is live. */
#define TC_INPUT_HEADROOM 16
#define TC_ARENA_TAILROOM 4

/* Where the input tensor lives in the arena (TC_INPUT_SIZE bytes): fill it, then call
 * tc_model_run_in_place; the output is then at tc_model_output() (TC_OUTPUT_SIZE bytes) until
 * the input is written again. No copies, no buffers outside the arena. */
int8_t *tc_model_input(void);
const int8_t *tc_model_output(void);
int tc_model_run_in_place(void);

#endif
