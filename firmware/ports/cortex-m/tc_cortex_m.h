/* Shared by the Cortex-M ports: start-up, the SysTick-based tick counter (tc_port_ticks),
 * semihosting, and the interrupt-fed receive ring buffer behind tc_port_getc. A board file
 * provides only the vector table, its UART driver (the receive interrupt calls tc_rx_put;
 * tc_port_init, tc_port_write) and tc_port_target_name. */
#ifndef TC_CORTEX_M_H
#define TC_CORTEX_M_H

#include <stddef.h>
#include <stdint.h>

#define TC_REG(addr) (*(volatile uint32_t *)(addr))

#define TC_NVIC_ISER0 0xE000E100u
#define TC_NVIC_ISPR0 0xE000E200u

/* Enable external interrupt irq in the NVIC (any number, not only 0..31). */
#define TC_NVIC_ENABLE(irq) (TC_REG(TC_NVIC_ISER0 + 4u * ((irq) / 32u)) = 1u << ((irq) % 32u))

/* Exception handlers every vector table lists. */
void tc_reset_handler(void);
void tc_default_handler(void);
void tc_hardfault_handler(void);
void tc_systick_handler(void);

/* The initial stack pointer, from the linker script; declared as a function so the vector
 * table can be an array of function pointers in strict ISO C. */
extern void tc_stack_top(void);

/* Start SysTick on the processor clock, free running. instructions_per_count_q24 converts its
 * counts to guest instructions (QEMU -icount shift=3 runs one instruction per 8 ns), in fixed
 * point with TC_TICK_FRACTION_BITS fraction bits: TC_TICKS_FOR_CLOCK(hz) for a clock of hz. */
#define TC_TICK_FRACTION_BITS 24
#define TC_TICKS_FOR_CLOCK(hz) \
    ((uint32_t)((125000000ull << TC_TICK_FRACTION_BITS) / (unsigned long long)(hz)))
void tc_ticks_init(uint32_t instructions_per_count_q24);

/* Semihosting (QEMU -semihosting-config enable=on,target=native). */
void tc_semihost_write(const char *text);
void tc_semihost_exit(int code);

/* Single-producer (RX interrupt), single-consumer (tc_port_getc) byte ring; there is one,
 * tc_rx, and the board's receive interrupt feeds it with tc_rx_put. Its size is the credit
 * INFO announces, so RAM is traded for pipelining: a board.mk sets it (BOARD_CPPFLAGS) where
 * RAM is short; a frame larger than the ring is still served, one request at a time. */
#ifndef TC_RX_RING_SIZE
#define TC_RX_RING_SIZE 4096u
#endif
#if TC_RX_RING_SIZE < 16u || (TC_RX_RING_SIZE & (TC_RX_RING_SIZE - 1u)) != 0u
#error "TC_RX_RING_SIZE must be a power of two of at least 16"
#endif
typedef struct {
    volatile uint32_t head; /* written by the interrupt */
    volatile uint32_t tail; /* written by the reader */
    volatile uint32_t dropped;
    uint8_t data[TC_RX_RING_SIZE];
} tc_rx_ring;

extern tc_rx_ring tc_rx;

/* Back-pressure: a receive interrupt that finds the ring full calls tc_rx_pause and returns
 * with the bytes left in its UART; tc_port_getc re-enables and pends that interrupt once it
 * has taken a byte. The UART's FIFO then fills, and a sender that honours it (QEMU does) waits
 * instead of losing bytes; real hardware overruns the FIFO instead, as the full ring would. */
#define TC_NVIC_ICER0 0xE000E180u
extern volatile uint32_t tc_rx_paused; /* 0, or the paused interrupt's number + 1 */

static inline int tc_rx_full(void)
{
    return tc_rx.head - tc_rx.tail >= TC_RX_RING_SIZE;
}

static inline void tc_rx_pause(uint32_t irq)
{
    TC_REG(TC_NVIC_ICER0 + 4u * (irq / 32u)) = 1u << (irq % 32u);
    tc_rx_paused = irq + 1u;
}

/* Inline: it runs in the receive interrupt, whose stack the worst-case bound counts. */
static inline void tc_rx_put(uint8_t byte)
{
    tc_rx_ring *const r = &tc_rx;
    const uint32_t head = r->head;
    if (head - r->tail >= TC_RX_RING_SIZE) {
        r->dropped++; /* full: the protocol's CRC and retries recover the frame */
        return;
    }
    r->data[head % TC_RX_RING_SIZE] = byte;
    r->head = head + 1u;
}

#endif
