/* The Arm MPS2/MPS3 ports (QEMU): CMSDK APB UART0 received by interrupt into the shared ring
 * buffer, WFI while idle; polled transmit. A board differs only in its name, UART0 base, RX
 * IRQ and system clock, which its tc_board.h gives (its board.mk adds this directory).
 *
 * Ticks: SysTick counts the system clock, and with -icount shift=3 the guest runs one
 * instruction per 8 ns, so one count is 125 MHz / TC_CLOCK_HZ instructions. */
#include "tc_board.h"
#include "tc_cortex_m.h"
#include "tc_port.h"

#define UART_DATA (TC_UART0 + 0x000u)
#define UART_STATE (TC_UART0 + 0x004u)
#define UART_CTRL (TC_UART0 + 0x008u)
#define UART_INTCLEAR (TC_UART0 + 0x00Cu)
#define UART_BAUDDIV (TC_UART0 + 0x010u)
#define STATE_TX_FULL (1u << 0)
#define STATE_RX_FULL (1u << 1)
#define CTRL_TX_EN (1u << 0)
#define CTRL_RX_EN (1u << 1)
#define CTRL_RX_INT_EN (1u << 3)
#define INT_RX (1u << 1)
#define BAUD 115200u

const char tc_port_target_name[] = TC_BOARD_NAME;

static void tc_uart0_rx_handler(void)
{
    TC_REG(UART_INTCLEAR) = INT_RX; /* clear first, then drain: no byte is missed */
    while (TC_REG(UART_STATE) & STATE_RX_FULL) {
        tc_rx_put((uint8_t)TC_REG(UART_DATA));
    }
}

__attribute__((section(".vectors"), used))
void (*const tc_vectors[16 + TC_UART0_RX_IRQ + 1])(void) = {
    tc_stack_top, tc_reset_handler, tc_default_handler, tc_hardfault_handler,
    tc_default_handler, tc_default_handler, tc_default_handler, 0, 0, 0, 0,
    tc_default_handler, tc_default_handler, 0, tc_default_handler, tc_systick_handler,
    [16 + TC_UART0_RX_IRQ] = tc_uart0_rx_handler,
};

void tc_port_init(void)
{
    /* nearest divider (QEMU needs >= 16 and otherwise ignores the rate) */
    TC_REG(UART_BAUDDIV) = (TC_CLOCK_HZ + BAUD / 2u) / BAUD;
    TC_REG(UART_CTRL) = CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_INT_EN;
    (void)TC_REG(UART_DATA); /* QEMU: without this read early bytes stall */
    TC_NVIC_ENABLE(TC_UART0_RX_IRQ);
    tc_ticks_init(TC_TICKS_FOR_CLOCK(TC_CLOCK_HZ));
}

void tc_port_write(const uint8_t *data, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        while (TC_REG(UART_STATE) & STATE_TX_FULL) {
        }
        TC_REG(UART_DATA) = data[i];
    }
}
