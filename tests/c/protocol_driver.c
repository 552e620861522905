/* Drives the protocol engine (tc_protocol.c, tc_cobs.c, tc_crc32.c) with a stub model and a
 * stub port, for tests/test_protocol_c.py.
 *
 * The stub model is in stub_model.c. Stub port: ticks advance by 7 per read, so every
 * RESULT reports 7 ticks.
 *
 * As a program: feeds stdin to the engine byte by byte, replies go to stdout.
 * Built with -DTC_LIBFUZZER: a libFuzzer target feeding each input the same way. */
#include <stdio.h>
#include <string.h>

#include "model_data.h"
#include "tc_port.h"
#include "tc_protocol.h"

const char tc_port_target_name[] = "stub";
const uint32_t tc_port_rx_capacity = 2048u;
static uint32_t fake_ticks;
static FILE *reply_sink;

void tc_port_init(void) {}

int tc_port_getc(void)
{
    int c = getchar();
    return c == EOF ? -1 : c;
}

void tc_port_write(const uint8_t *data, size_t len)
{
    if (reply_sink != NULL) {
        fwrite(data, 1, len, reply_sink);
    }
}

uint32_t tc_port_ticks(void)
{
    fake_ticks += 7U;
    return fake_ticks;
}

#ifdef TC_LIBFUZZER
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t i;
    reply_sink = NULL;
    tc_protocol_init();
    for (i = 0; i < size; i++) {
        tc_protocol_feed(data[i]);
    }
    tc_protocol_feed(0);
    return 0;
}
#else
int main(void)
{
    reply_sink = stdout;
    tc_protocol_init();
    tc_protocol_serve();
    fflush(stdout);
    return 0;
}
#endif
