/* A stand-in model for protocol tests (tests/c/model_data.h gives its sizes):
 * out[k] = sum(input[j] for j = k, k+10, k+20, ...) mod 256, as int8. An input whose first
 * byte is 127 makes it fail with TC_ERR_UNSUPPORTED, to exercise the MODEL error reply.
 * Like the real runner it keeps input and output in one arena with tc_model.h's room around it:
 * the input at the arena's end (so a frame's CRC lands in the tail room, where an overrun shows
 * under AddressSanitizer), the output at its start. */
#include "model_data.h"
#include "tc_model.h"

static int8_t arena[TC_INPUT_HEADROOM + TC_ARENA_SIZE + TC_ARENA_TAILROOM];
#define INPUT (arena + TC_INPUT_HEADROOM + TC_ARENA_SIZE - TC_INPUT_SIZE)
#define OUTPUT (arena + TC_INPUT_HEADROOM)

static void sums(const int8_t *input, int8_t *output)
{
    int k, j;
    for (k = 0; k < TC_OUTPUT_SIZE; k++) {
        unsigned sum = 0;
        for (j = k; j < TC_INPUT_SIZE; j += TC_OUTPUT_SIZE) {
            sum += (uint8_t)input[j];
        }
        output[k] = (int8_t)(uint8_t)(sum & 0xFFU);
    }
}

int tc_model_run(const int8_t *input, int8_t *output)
{
    if (input[0] == 127) {
        return TC_ERR_UNSUPPORTED;
    }
    sums(input, output);
    return TC_OK;
}

int8_t *tc_model_input(void)
{
    return INPUT;
}

const int8_t *tc_model_output(void)
{
    return OUTPUT;
}

int tc_model_run_in_place(void)
{
    return tc_model_run(INPUT, OUTPUT);
}
