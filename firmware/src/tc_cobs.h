/* COBS (Consistent Overhead Byte Stuffing), streaming in both directions so the device needs
 * no buffer for encoded bytes: the decoder writes decoded bytes straight into the frame buffer,
 * the encoder emits one block (at most 255 bytes) at a time. */
#ifndef TC_COBS_H
#define TC_COBS_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    TC_COBS_MORE = 0,   /* byte consumed, frame not finished */
    TC_COBS_FRAME,      /* a 0x00 ended a well-formed frame: buf[0 .. len-1] */
    TC_COBS_EMPTY,      /* a 0x00 with nothing before it (resynchronisation): ignore */
    TC_COBS_OVERFLOW,   /* frame ended but decoded to more than cap bytes (buf: the first cap) */
    TC_COBS_BROKEN      /* frame ended inside a COBS block: truncated or corrupt */
} tc_cobs_status;

typedef struct {
    uint8_t *buf;
    size_t cap;
    size_t len;
    uint8_t left;          /* data bytes still expected in the current block */
    uint8_t zero_pending;  /* the current block ends with an implied 0x00 */
    uint8_t started;       /* a non-delimiter byte arrived since the last 0x00 */
    uint8_t overflow;
} tc_cobs_decoder;

void tc_cobs_decoder_init(tc_cobs_decoder *d, uint8_t *buf, size_t cap);
/* Feed one received byte. After anything but TC_COBS_MORE the decoder starts a new frame. */
tc_cobs_status tc_cobs_decode_byte(tc_cobs_decoder *d, uint8_t byte);

typedef void (*tc_cobs_sink)(const uint8_t *data, size_t len);

typedef struct {
    tc_cobs_sink sink;
    uint8_t block[255];    /* block[0] is the code byte, block[1 .. n] the data */
    uint8_t n;
    uint8_t after_full;    /* the last block emitted was a full 0xFF block */
} tc_cobs_encoder;

void tc_cobs_encoder_init(tc_cobs_encoder *e, tc_cobs_sink sink);
void tc_cobs_encode(tc_cobs_encoder *e, const uint8_t *data, size_t len);
/* Flush the last block and the 0x00 delimiter. */
void tc_cobs_encoder_finish(tc_cobs_encoder *e);

#endif
