/* lookup: an int8 -> int8 elementwise op computed on the host as a 256-entry table
 * (export/tables.py), so the device only indexes, in either requantization mode. */
#include <stddef.h>

#include "tc_kernels.h"

int tc_lookup(const int8_t *table, int32_t tables, int32_t channels, int32_t size,
              int32_t act_min, int32_t act_max, const int8_t *input, int8_t *output)
{
    int32_t i;
    if (table == NULL || input == NULL || output == NULL || channels < 1 || size < 0 ||
        (tables != 1 && tables != channels)) {
        return TC_ERR_BAD_ARG;
    }
    if (tables == 1) {
        const int8_t *centre = table + 128;
        for (i = 0; i < size; i++) {
            output[i] = centre[input[i]];
        }
    } else {
        int32_t c = 0;
        const int8_t *row = table + 128;
        for (i = 0; i < size; i++) {
            output[i] = row[input[i]];
            row += 256;
            if (++c == channels) {
                c = 0;
                row = table + 128;
            }
        }
    }
    if (act_min > -128 || act_max < 127) {
        for (i = 0; i < size; i++) {
            const int32_t v = output[i];
            output[i] = (int8_t)(v < act_min ? act_min : (v > act_max ? act_max : v));
        }
    }
    return TC_OK;
}
