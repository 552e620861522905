/* The microbit port (nRF51822, Cortex-M0, QEMU): UART0 at 0x40002000 received by interrupt
 * (IRQ 2, RXDRDY) into a ring buffer, WFI while idle; polled transmit (TXDRDY after each byte).
 * The pins are the micro:bit's USB-serial ones (TX P0.24, RX P0.25); QEMU ignores them.
 *
 * Ticks: SysTick counts the 16 MHz core clock, and with -icount shift=3 the guest runs one
 * instruction per 8 ns, so one count is 7.8125 instructions. */
#include "tc_cortex_m.h"
#include "tc_port.h"

#define UART0 0x40002000u
#define UART_STARTRX (UART0 + 0x000u)
#define UART_STARTTX (UART0 + 0x008u)
#define UART_RXDRDY (UART0 + 0x108u)
#define UART_TXDRDY (UART0 + 0x11Cu)
#define UART_INTENSET (UART0 + 0x304u)
#define UART_ENABLE (UART0 + 0x500u)
#define UART_PSELTXD (UART0 + 0x50Cu)
#define UART_PSELRXD (UART0 + 0x514u)
#define UART_RXD (UART0 + 0x518u)
#define UART_TXD (UART0 + 0x51Cu)
#define UART_BAUDRATE (UART0 + 0x524u)
#define INT_RXDRDY (1u << 2)
#define UART0_IRQ 2u
#define CLOCK_HZ 16000000u

const char tc_port_target_name[] = "microbit";

static void tc_uart0_handler(void)
{
    /* clear the event, then read: RXD sets it again while more bytes wait */
    while (TC_REG(UART_RXDRDY)) {
        TC_REG(UART_RXDRDY) = 0u;
        tc_rx_put((uint8_t)TC_REG(UART_RXD));
    }
}

__attribute__((section(".vectors"), used)) void (*const tc_vectors[16 + 3])(void) = {
    tc_stack_top, tc_reset_handler, tc_default_handler, tc_hardfault_handler,
    0, 0, 0, 0, 0, 0, 0,
    tc_default_handler, 0, 0, tc_default_handler, tc_systick_handler,
    /* IRQ 0: POWER_CLOCK, 1: RADIO, 2: UART0 */
    tc_default_handler, tc_default_handler, tc_uart0_handler,
};

void tc_port_init(void)
{
    TC_REG(UART_PSELTXD) = 24u;
    TC_REG(UART_PSELRXD) = 25u;
    TC_REG(UART_BAUDRATE) = 0x01D7E000u; /* 115200 baud */
    TC_REG(UART_ENABLE) = 4u;
    TC_REG(UART_INTENSET) = INT_RXDRDY;
    TC_REG(UART_STARTTX) = 1u;
    TC_REG(UART_STARTRX) = 1u;
    TC_NVIC_ENABLE(UART0_IRQ);
    tc_ticks_init(TC_TICKS_FOR_CLOCK(CLOCK_HZ));
}

void tc_port_write(const uint8_t *data, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        TC_REG(UART_TXDRDY) = 0u;
        TC_REG(UART_TXD) = data[i];
        while (TC_REG(UART_TXDRDY) == 0u) {
        }
    }
}
