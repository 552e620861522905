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

#endif
