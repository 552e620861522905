/* The device side of the wire protocol (docs/PROTOCOL.md): frames in through tc_protocol_feed,
 * replies out through tc_port_write. A frame is decoded into the model's arena (its payload onto
 * the input tensor) and a RESULT is sent from it: the only buffer of its own is the encoder's
 * 255-byte block. Anything longer than one INFER frame is refused, never stored. */
#ifndef TC_PROTOCOL_H
#define TC_PROTOCOL_H

#include <stdint.h>

#define TC_PROTOCOL_VERSION 1U

#define TC_MSG_INFO 0x01U
#define TC_MSG_INFER 0x02U
#define TC_MSG_RESET 0x03U
#define TC_MSG_INFO_REPLY 0x81U
#define TC_MSG_RESULT 0x82U
#define TC_MSG_RESET_REPLY 0x83U
#define TC_MSG_ERROR 0xFFU

#define TC_PERR_CORRUPT 1U
#define TC_PERR_TOO_LONG 2U
#define TC_PERR_BAD_VERSION 3U
#define TC_PERR_BAD_TYPE 4U
#define TC_PERR_BAD_LENGTH 5U
#define TC_PERR_MODEL 6U

#define TC_FRAME_HEADER 8U
#define TC_FRAME_CRC 4U

/* Forget any half-received frame and zero the counters. */
void tc_protocol_init(void);

/* Consume one received byte; a byte that completes a frame gets its reply written before this
 * returns (an INFER runs the model here). */
void tc_protocol_feed(uint8_t byte);

/* Feed tc_port_getc() into the engine until it returns -1 (link gone). */
void tc_protocol_serve(void);

#endif
