/* The lm3s6965evb port (Cortex-M3, QEMU): PL011 UART0 at 0x4000C000 received by interrupt
 * (IRQ 5) into a ring buffer, WFI while idle; polled transmit.
 *
 * Ticks: SysTick counts the 12.5 MHz system clock (QEMU's reset value of RCC, 80 ns), and with
 * -icount shift=3 the guest runs one instruction per 8 ns, so one count is 10 instructions:
 * tc_port_ticks() = guest instructions, to a resolution of 10. */
#include "tc_cortex_m.h"
#include "tc_port.h"

#define UART0 0x4000C000u
#define UART_DR (UART0 + 0x000u)
#define UART_FR (UART0 + 0x018u)
#define UART_IBRD (UART0 + 0x024u)
#define UART_FBRD (UART0 + 0x028u)
#define UART_LCRH (UART0 + 0x02Cu)
#define UART_CR (UART0 + 0x030u)
#define UART_IMSC (UART0 + 0x038u)
#define UART_ICR (UART0 + 0x044u)
#define FR_RXFE (1u << 4)
#define FR_TXFF (1u << 5)
#define INT_RX (1u << 4)
#define INT_RT (1u << 6)
#define UART0_IRQ 5u
#define CLOCK_HZ 12500000u

const char tc_port_target_name[] = "lm3s6965evb";

static void tc_uart0_handler(void)
{
    TC_REG(UART_ICR) = INT_RX | INT_RT; /* clear first, then drain: no byte is missed */
    while ((TC_REG(UART_FR) & FR_RXFE) == 0u) {
        if (tc_rx_full()) {
            tc_rx_pause(UART0_IRQ); /* the rest waits in the UART until the ring has room */
            return;
        }
        tc_rx_put((uint8_t)TC_REG(UART_DR));
    }
}

__attribute__((section(".vectors"), used)) void (*const tc_vectors[16 + 6])(void) = {
    tc_stack_top, tc_reset_handler, tc_default_handler, tc_hardfault_handler,
    tc_default_handler, tc_default_handler, tc_default_handler, 0, 0, 0, 0,
    tc_default_handler, tc_default_handler, 0, tc_default_handler, tc_systick_handler,
    /* IRQ 0..5: GPIO A-E, UART0 */
    tc_default_handler, tc_default_handler, tc_default_handler, tc_default_handler,
    tc_default_handler, tc_uart0_handler,
};

void tc_port_init(void)
{
    TC_REG(UART_CR) = 0u;
    TC_REG(UART_IBRD) = 6u; /* 115200 baud at 12.5 MHz; QEMU ignores the rate */
    TC_REG(UART_FBRD) = 50u;
    TC_REG(UART_LCRH) = (3u << 5) | (1u << 4); /* 8N1, FIFOs on */
    TC_REG(UART_IMSC) = INT_RX | INT_RT;
    TC_REG(UART_CR) = (1u << 0) | (1u << 8) | (1u << 9); /* UARTEN, TXE, RXE */
    TC_NVIC_ENABLE(UART0_IRQ);
    tc_ticks_init(TC_TICKS_FOR_CLOCK(CLOCK_HZ));
}

void tc_port_write(const uint8_t *data, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        while (TC_REG(UART_FR) & FR_TXFF) {
        }
        TC_REG(UART_DR) = data[i];
    }
}
