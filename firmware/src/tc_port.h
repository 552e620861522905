/* The port: the only thing a target must provide to run tinyconv (one implementation per
 * target under firmware/ports/<target>/). Kept tiny so a new board is an afternoon's work. */
#ifndef TC_PORT_H
#define TC_PORT_H

#include <stddef.h>
#include <stdint.h>

/* Bring up the link (UART, pseudo-terminal, socket) and the tick counter. */
void tc_port_init(void);

/* Next received byte (0..255); blocks (sleeping where the target can) until one arrives.
 * Returns -1 when the link is gone for good (host port: peer closed), so main() can return. */
int tc_port_getc(void);

/* Send len bytes; returns when they are queued or sent. */
void tc_port_write(const uint8_t *data, size_t len);

/* A free-running 32-bit counter for timing inferences (wraps). Under QEMU with -icount it
 * counts guest instructions; on the host port, microseconds. */
uint32_t tc_port_ticks(void);

/* Target name reported by INFO, e.g. "host", "lm3s6965evb", "mps2-an386". */
extern const char tc_port_target_name[];

/* Bytes the port holds for the engine while a request is being computed (its receive buffer):
 * INFO states it and the host never has more request bytes in flight (credit flow control). */
extern const uint32_t tc_port_rx_capacity;

#endif
