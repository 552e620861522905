/* A stand-in model for protocol tests (tests/c/model_data.h gives its sizes):
 * out[k] = sum(input[j] for j = k, k+10, k+20, ...) mod 256, as int8. An input whose first
 * byte is 127 makes it fail with TC_ERR_UNSUPPORTED, to exercise the MODEL error reply. */
#include "model_data.h"
#include "tc_model.h"

int tc_model_run(const int8_t *input, int8_t *output)
{
    int k, j;
    if (input[0] == 127) {
        return TC_ERR_UNSUPPORTED;
    }
    for (k = 0; k < TC_OUTPUT_SIZE; k++) {
        unsigned sum = 0;
        for (j = k; j < TC_INPUT_SIZE; j += TC_OUTPUT_SIZE) {
            sum += (uint8_t)input[j];
        }
        output[k] = (int8_t)(uint8_t)(sum & 0xFFU);
    }
    return TC_OK;
}
