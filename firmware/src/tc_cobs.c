#include "tc_cobs.h"

static void reset(tc_cobs_decoder *d)
{
    d->len = 0;
    d->left = 0;
    d->zero_pending = 0;
    d->started = 0;
    d->overflow = 0;
}

void tc_cobs_decoder_init(tc_cobs_decoder *d, uint8_t *buf, size_t cap)
{
    d->buf = buf;
    d->cap = cap;
    reset(d);
}

static void put(tc_cobs_decoder *d, uint8_t byte)
{
    if (d->len < d->cap) {
        d->buf[d->len++] = byte;
    } else {
        d->overflow = 1;
    }
}

tc_cobs_status tc_cobs_decode_byte(tc_cobs_decoder *d, uint8_t byte)
{
    tc_cobs_status status;
    if (byte == 0) {
        if (!d->started) {
            status = TC_COBS_EMPTY;
        } else if (d->left > 0) {
            status = TC_COBS_BROKEN;
        } else if (d->overflow) {
            status = TC_COBS_OVERFLOW;
        } else {
            status = TC_COBS_FRAME;  /* the last block's implied zero is not data */
        }
        d->started = 0;
        d->left = 0;
        d->zero_pending = 0;
        return status;
    }
    if (!d->started) {
        reset(d);
        d->started = 1;
    }
    if (d->left == 0) {  /* a code byte: first close the previous block */
        if (d->zero_pending) {
            put(d, 0);
        }
        d->left = (uint8_t)(byte - 1U);
        d->zero_pending = (uint8_t)(byte != 0xFFU);
    } else {
        put(d, byte);
        d->left--;
    }
    return TC_COBS_MORE;
}

void tc_cobs_encoder_init(tc_cobs_encoder *e, tc_cobs_sink sink)
{
    e->sink = sink;
    e->n = 0;
    e->after_full = 0;
}

static void emit_block(tc_cobs_encoder *e)
{
    e->after_full = (uint8_t)(e->n == 254U);
    e->block[0] = (uint8_t)(e->n + 1U);
    e->sink(e->block, (size_t)e->n + 1U);
    e->n = 0;
}

void tc_cobs_encode(tc_cobs_encoder *e, const uint8_t *data, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        if (data[i] == 0) {
            emit_block(e);
        } else {
            e->block[1U + e->n] = data[i];
            e->n++;
            if (e->n == 254U) {
                emit_block(e);
            }
        }
    }
}

void tc_cobs_encoder_finish(tc_cobs_encoder *e)
{
    static const uint8_t delimiter = 0;
    /* Data ending right after a full block needs no final (empty) block: the 0xFF code
     * already says "no zero follows". This is the canonical encoding of the COBS paper. */
    if (e->n > 0U || !e->after_full) {
        emit_block(e);
    }
    e->sink(&delimiter, 1);
}
