/* libFuzzer target: the firmware's frame parser and protocol engine (tc_protocol.c, tc_cobs.c,
 * tc_crc32.c) with the stub model of tests/c/stub_model.c, built natively with
 * -fsanitize=fuzzer,address,undefined by tests/test_fuzz.py.
 *
 * The first input byte picks how the rest reaches the engine:
 *   even  raw bytes, fed as they are (COBS, delimiters and CRCs are the fuzzer's problem);
 *   odd   chunks of [flags, length, body...] that the harness wraps as the host would: a correct
 *         CRC-32 appended (flags bit 0), COBS-encoded (bit 1), a 0x00 delimiter (bit 2). This
 *         lets the fuzzer past the CRC into version, type and length handling.
 *
 * Besides the sanitizers, every reply the device writes is checked here with an independent
 * COBS decoder and bitwise CRC-32: a well-formed frame of a reply type, its length field and
 * payload size as docs/PROTOCOL.md says, at most one reply per frame received. Any violation
 * aborts, which libFuzzer reports as a crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model_data.h"
#include "tc_cobs.h"
#include "tc_port.h"
#include "tc_protocol.h"

#define REPLY_MAX 1024U
#define WRAP_MAX (TC_FRAME_HEADER + TC_INPUT_SIZE + 2U * TC_FRAME_CRC + 64U)

const char tc_port_target_name[] = "stub";
const uint32_t tc_port_rx_capacity = 2048u;

static uint8_t reply[REPLY_MAX];
static size_t reply_len;
static size_t replies;
static size_t delimiters_fed;

void tc_port_init(void) {}

int tc_port_getc(void)
{
    return -1;
}

uint32_t tc_port_ticks(void)
{
    static uint32_t t;
    return t += 3U;
}

static uint32_t crc32_bitwise(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFFU;
    size_t i;
    int k;
    for (i = 0; i < n; i++) {
        crc ^= p[i];
        for (k = 0; k < 8; k++) {
            crc = (crc >> 1) ^ (0xEDB88320U & (0U - (crc & 1U)));
        }
    }
    return ~crc;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Decode one COBS frame (no delimiter) into out; -1 when it is not valid COBS. */
static long cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    size_t i = 0, len = 0;
    while (i < n) {
        size_t code = in[i], j;
        if (code == 0 || i + code > n) {
            return -1;
        }
        for (j = 1; j < code; j++) {
            if (in[i + j] == 0 || len == cap) {
                return -1;
            }
            out[len++] = in[i + j];
        }
        i += code;
        if (code != 0xFF && i < n) {
            if (len == cap) {
                return -1;
            }
            out[len++] = 0;
        }
    }
    return (long)len;
}

static void check_reply(const uint8_t *encoded, size_t n)
{
    static uint8_t frame[REPLY_MAX];
    long len = cobs_decode(encoded, n, frame, sizeof frame);
    uint32_t payload;
    if (len < (long)(TC_FRAME_HEADER + TC_FRAME_CRC)) {
        abort();  /* not COBS, or shorter than a header and CRC */
    }
    if (crc32_bitwise(frame, (size_t)len - TC_FRAME_CRC) != le32(frame + len - TC_FRAME_CRC)) {
        abort();
    }
    payload = le32(frame + 4);
    if (frame[0] != TC_PROTOCOL_VERSION || payload != (uint32_t)len - 12U) {
        abort();
    }
    switch (frame[1]) {
    case TC_MSG_RESULT:
        if (payload != 4U + TC_OUTPUT_SIZE) abort();
        break;
    case TC_MSG_RESET_REPLY:
        if (payload != 12U) abort();
        break;
    case TC_MSG_INFO_REPLY:
        /* fixed fields, shapes, "stub" twice, the receive capacity */
        if (payload != 44U + 4U * (TC_INPUT_RANK + TC_OUTPUT_RANK) + 4U + 4U + 4U) abort();
        break;
    case TC_MSG_ERROR:
        if (payload < 3U || payload > 50U) abort();  /* a code and 1..48 bytes of text */
        if (frame[TC_FRAME_HEADER] == 0U || frame[TC_FRAME_HEADER] > TC_PERR_MODEL) abort();
        break;
    default:
        abort();
    }
}

void tc_port_write(const uint8_t *data, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        if (data[i] == 0) {
            check_reply(reply, reply_len);
            reply_len = 0;
            replies++;
            if (replies > delimiters_fed) {
                abort();  /* a reply nobody asked for */
            }
        } else {
            if (reply_len == REPLY_MAX) {
                abort();  /* a reply longer than any reply can be */
            }
            reply[reply_len++] = data[i];
        }
    }
}

static void feed(const uint8_t *data, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        delimiters_fed += data[i] == 0;
        tc_protocol_feed(data[i]);
    }
}

static uint8_t wrap_buf[WRAP_MAX];
static size_t wrap_len;

static void collect(const uint8_t *data, size_t len)
{
    if (wrap_len + len <= sizeof wrap_buf) {
        memcpy(wrap_buf + wrap_len, data, len);
        wrap_len += len;
    }
}

/* One chunk as the host would send it (flags say which layers to apply). */
static void feed_wrapped(uint8_t flags, const uint8_t *body, size_t n)
{
    static uint8_t frame[TC_FRAME_HEADER + TC_INPUT_SIZE + 64U];
    uint32_t crc;
    tc_cobs_encoder enc;
    if (n > sizeof frame - TC_FRAME_CRC) {
        n = sizeof frame - TC_FRAME_CRC;
    }
    memcpy(frame, body, n);
    if (flags & 1U) {
        crc = crc32_bitwise(frame, n);
        frame[n++] = (uint8_t)crc;
        frame[n++] = (uint8_t)(crc >> 8);
        frame[n++] = (uint8_t)(crc >> 16);
        frame[n++] = (uint8_t)(crc >> 24);
    }
    if (flags & 2U) {
        wrap_len = 0;
        tc_cobs_encoder_init(&enc, collect);
        tc_cobs_encode(&enc, frame, n);
        tc_cobs_encoder_finish(&enc);  /* ends with the delimiter: drop it, flags bit 2 decides */
        feed(wrap_buf, wrap_len - 1U);
    } else {
        feed(frame, n);
    }
    if (flags & 4U) {
        feed((const uint8_t *)"", 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    reply_len = 0;
    replies = 0;
    delimiters_fed = 0;
    tc_protocol_init();
    if (size > 0 && (data[0] & 1U) != 0U) {
        size_t i = 1;
        while (i + 2 <= size) {
            uint8_t flags = data[i];
            /* lengths up to 255 * 2: enough for one INFER frame (8 + 320 + 4 bytes) and more */
            size_t n = (size_t)data[i + 1] * 2U;
            i += 2;
            if (n > size - i) {
                n = size - i;
            }
            feed_wrapped(flags, data + i, n);
            i += n;
        }
    } else if (size > 0) {
        feed(data + 1, size - 1);
    }
    feed((const uint8_t *)"", 1);  /* a final delimiter flushes whatever is half-received */
    if (reply_len != 0) {
        abort();  /* the device stopped in the middle of a reply */
    }
    return 0;
}
