/* Native test driver: reads int8 inputs of TC_INPUT_SIZE bytes from stdin, one after another,
 * runs each through tc_model_run and writes the TC_OUTPUT_SIZE output bytes to stdout.
 * Exit status: 0 when every input was run, 3 on a short final input, 10 + code when the model
 * runner returns an error. */
#include <stdint.h>
#include <stdio.h>

#include "model_data.h"
#include "tc_model.h"

int main(void)
{
    static int8_t input[TC_INPUT_SIZE];
    static int8_t output[TC_OUTPUT_SIZE];
    for (;;) {
        const size_t got = fread(input, 1, sizeof input, stdin);
        int rc;
        if (got == 0) {
            return 0;
        }
        if (got != sizeof input) {
            fprintf(stderr, "short input: %lu of %lu bytes\n", (unsigned long)got,
                    (unsigned long)sizeof input);
            return 3;
        }
        rc = tc_model_run(input, output);
        if (rc != TC_OK) {
            fprintf(stderr, "tc_model_run failed with %d\n", rc);
            return 10 + rc;
        }
        if (fwrite(output, 1, sizeof output, stdout) != sizeof output) {
            return 4;
        }
    }
}
