#include "tc_protocol.h"

#include <stddef.h>

#include "model_data.h"
#include "tc_cobs.h"
#include "tc_crc32.h"
#include "tc_model.h"
#include "tc_port.h"

#define RX_CAPACITY (TC_FRAME_HEADER + (size_t)(TC_INPUT_SIZE) + TC_FRAME_CRC)
#define ERROR_TEXT_MAX 48U

#if TC_FRAME_HEADER > TC_INPUT_HEADROOM || TC_FRAME_CRC > TC_ARENA_TAILROOM
#error "tc_model.h leaves too little room around the input tensor for a frame"
#endif

/* Frames decode into the model's arena, the header just before the input tensor, so an INFER's
 * payload lands where the first layer reads it and no frame-sized buffer exists. A frame that
 * then fails its checks leaves garbage there, which is harmless: only a frame that passed them
 * runs the model, and its payload overwrote all of the input first. */
static uint8_t *rx_frame;
static tc_cobs_decoder decoder;

static uint32_t frames_accepted;
static uint32_t frames_corrupt;
static uint32_t frames_oversized;

/* -- reply writer: header, payload pieces, CRC, all streamed through the COBS encoder -------- */

static tc_cobs_encoder encoder;
static uint32_t reply_crc;

static void write_to_port(const uint8_t *data, size_t len)
{
    tc_port_write(data, len);
}

static void reply_bytes(const void *data, size_t len)
{
    reply_crc = tc_crc32_update(reply_crc, (const uint8_t *)data, len);
    tc_cobs_encode(&encoder, (const uint8_t *)data, len);
}

static void put_le(uint8_t *out, uint64_t value, unsigned bytes)
{
    unsigned i;
    for (i = 0; i < bytes; i++) {
        out[i] = (uint8_t)(value >> (8U * i));
    }
}

static void reply_le(uint64_t value, unsigned bytes)
{
    uint8_t le[8];
    put_le(le, value, bytes);
    reply_bytes(le, bytes);
}

static void reply_begin(uint8_t type, uint16_t seq, uint32_t payload_len)
{
    uint8_t header[TC_FRAME_HEADER];
    header[0] = (uint8_t)TC_PROTOCOL_VERSION;
    header[1] = type;
    put_le(header + 2, seq, 2);
    put_le(header + 4, payload_len, 4);
    tc_cobs_encoder_init(&encoder, write_to_port);
    reply_crc = 0;
    reply_bytes(header, sizeof header);
}

static void reply_end(void)
{
    uint8_t le[TC_FRAME_CRC];
    put_le(le, reply_crc, 4);
    tc_cobs_encode(&encoder, le, sizeof le);
    tc_cobs_encoder_finish(&encoder);
}

static size_t text_length(const char *text, size_t max)
{
    size_t n = 0;
    while (n < max && text[n] != '\0') {
        n++;
    }
    return n;
}

static void reply_error(uint16_t seq, uint16_t code, const char *text)
{
    size_t n = text_length(text, ERROR_TEXT_MAX);
    reply_begin((uint8_t)TC_MSG_ERROR, seq, (uint32_t)(2U + n));
    reply_le(code, 2);
    reply_bytes(text, n);
    reply_end();
}

/* -- requests --------------------------------------------------------------------------- */

static void reply_info(uint16_t seq)
{
    static const uint32_t input_shape[TC_INPUT_RANK] = TC_INPUT_SHAPE_INIT;
    static const uint32_t output_shape[TC_OUTPUT_RANK] = TC_OUTPUT_SHAPE_INIT;
    static const char model_name[] = TC_MODEL_NAME;
    size_t name_len = text_length(model_name, 255U);
    size_t target_len = text_length(tc_port_target_name, 255U);
    uint32_t payload =
        (uint32_t)(48U + 4U * (TC_INPUT_RANK + TC_OUTPUT_RANK) + name_len + target_len);
    size_t i;

    reply_begin((uint8_t)TC_MSG_INFO_REPLY, seq, payload);
    reply_le(TC_PROTOCOL_VERSION, 2);
    reply_le(TC_REQUANT_MODE == TC_REQUANT_FLOAT ? 1U : 0U, 1);
    reply_le(0, 1);
    reply_le(TC_MODEL_HASH, 8);
    reply_le(TC_ARENA_SIZE, 4);
    reply_le(TC_TOTAL_MACS, 8);
    reply_le(TC_INPUT_SCALE_BITS, 4);
    reply_le((uint32_t)(int32_t)(TC_INPUT_ZERO_POINT), 4);
    reply_le(TC_OUTPUT_SCALE_BITS, 4);
    reply_le((uint32_t)(int32_t)(TC_OUTPUT_ZERO_POINT), 4);
    reply_le(TC_INPUT_RANK, 1);
    reply_le(TC_OUTPUT_RANK, 1);
    reply_le(name_len, 1);
    reply_le(target_len, 1);
    for (i = 0; i < TC_INPUT_RANK; i++) {
        reply_le(input_shape[i], 4);
    }
    for (i = 0; i < TC_OUTPUT_RANK; i++) {
        reply_le(output_shape[i], 4);
    }
    reply_bytes(model_name, name_len);
    reply_bytes(tc_port_target_name, target_len);
    reply_le(tc_port_rx_capacity, 4);
    reply_end();
}

static void reply_result(uint16_t seq)
{
    static const char digits[] = "0123456789";
    char text[] = "model error 0";
    uint32_t start = tc_port_ticks();
    int rc = tc_model_run_in_place();
    uint32_t ticks = tc_port_ticks() - start;

    if (rc != TC_OK) {
        text[sizeof text - 2U] = digits[(rc >= 0 && rc <= 9) ? rc : 0];
        reply_error(seq, (uint16_t)TC_PERR_MODEL, text);
        return;
    }
    reply_begin((uint8_t)TC_MSG_RESULT, seq, (uint32_t)(4U + TC_OUTPUT_SIZE));
    reply_le(ticks, 4);
    reply_bytes(tc_model_output(), TC_OUTPUT_SIZE);
    reply_end();
}

static void reply_reset(uint16_t seq)
{
    reply_begin((uint8_t)TC_MSG_RESET_REPLY, seq, 12U);
    reply_le(frames_accepted, 4);
    reply_le(frames_corrupt, 4);
    reply_le(frames_oversized, 4);
    reply_end();
    frames_accepted = 0;
    frames_corrupt = 0;
    frames_oversized = 0;
}

static uint32_t get_le(const uint8_t *p, unsigned bytes)
{
    uint32_t value = 0;
    while (bytes-- > 0U) {
        value = (value << 8) | p[bytes];
    }
    return value;
}

static void handle_frame(const uint8_t *frame, size_t len)
{
    uint16_t seq;
    uint32_t payload_len;

    if (len < TC_FRAME_HEADER + TC_FRAME_CRC) {
        frames_corrupt++;
        return;  /* too short to hold even a sequence number worth trusting */
    }
    seq = (uint16_t)get_le(frame + 2, 2);
    if (tc_crc32_update(0, frame, len - TC_FRAME_CRC) != get_le(frame + len - TC_FRAME_CRC, 4)) {
        frames_corrupt++;
        reply_error(seq, (uint16_t)TC_PERR_CORRUPT, "crc mismatch");
        return;
    }
    frames_accepted++;
    if (frame[0] != TC_PROTOCOL_VERSION) {
        reply_error(seq, (uint16_t)TC_PERR_BAD_VERSION, "unsupported protocol version");
        return;
    }
    payload_len = get_le(frame + 4, 4);
    if (payload_len != len - TC_FRAME_HEADER - TC_FRAME_CRC) {
        reply_error(seq, (uint16_t)TC_PERR_BAD_LENGTH, "length field disagrees with frame");
        return;
    }
    switch (frame[1]) {
    case TC_MSG_INFO:
        if (payload_len != 0U) {
            reply_error(seq, (uint16_t)TC_PERR_BAD_LENGTH, "INFO takes no payload");
        } else {
            reply_info(seq);
        }
        break;
    case TC_MSG_INFER:
        if (payload_len != (uint32_t)TC_INPUT_SIZE) {
            reply_error(seq, (uint16_t)TC_PERR_BAD_LENGTH, "INFER payload is not one input tensor");
        } else {
            reply_result(seq);  /* the payload already sits in the input tensor */
        }
        break;
    case TC_MSG_RESET:
        if (payload_len != 0U) {
            reply_error(seq, (uint16_t)TC_PERR_BAD_LENGTH, "RESET takes no payload");
        } else {
            reply_reset(seq);
        }
        break;
    default:
        reply_error(seq, (uint16_t)TC_PERR_BAD_TYPE, "unknown request type");
        break;
    }
}

void tc_protocol_init(void)
{
    rx_frame = (uint8_t *)tc_model_input() - TC_FRAME_HEADER;
    tc_cobs_decoder_init(&decoder, rx_frame, RX_CAPACITY);
    frames_accepted = 0;
    frames_corrupt = 0;
    frames_oversized = 0;
}

void tc_protocol_feed(uint8_t byte)
{
    switch (tc_cobs_decode_byte(&decoder, byte)) {
    case TC_COBS_FRAME:
        handle_frame(rx_frame, decoder.len);
        break;
    case TC_COBS_OVERFLOW:
        frames_oversized++;
        reply_error((uint16_t)get_le(rx_frame + 2, 2), (uint16_t)TC_PERR_TOO_LONG,
                    "frame longer than the receive buffer");
        break;
    case TC_COBS_BROKEN:
        frames_corrupt++;
        break;
    case TC_COBS_MORE:
    case TC_COBS_EMPTY:
    default:
        break;
    }
}

void tc_protocol_serve(void)
{
    int c;
    while ((c = tc_port_getc()) >= 0) {
        tc_protocol_feed((uint8_t)c);
    }
}
