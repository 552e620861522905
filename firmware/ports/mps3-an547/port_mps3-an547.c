/* The mps3-an547 port (Cortex-M55 with FPU and MVE, QEMU): CMSDK APB UART0 at its secure alias
 * 0x59303000 (the core runs in the secure state, and the peripheral protection controllers
 * leave every peripheral secure at reset) received by interrupt (RX IRQ 33) into a ring buffer,
 * WFI while idle; polled transmit.
 *
 * Ticks: SysTick counts the 32 MHz system clock, and with -icount shift=3 the guest runs one
 * instruction per 8 ns, so one count is 3.90625 instructions. */
#include "tc_cortex_m.h"
#include "tc_port.h"

#define UART0 0x59303000u
#define UART_DATA (UART0 + 0x000u)
#define UART_STATE (UART0 + 0x004u)
#define UART_CTRL (UART0 + 0x008u)
#define UART_INTCLEAR (UART0 + 0x00Cu)
#define UART_BAUDDIV (UART0 + 0x010u)
#define STATE_TX_FULL (1u << 0)
#define STATE_RX_FULL (1u << 1)
#define CTRL_TX_EN (1u << 0)
#define CTRL_RX_EN (1u << 1)
#define CTRL_RX_INT_EN (1u << 3)
#define INT_RX (1u << 1)
#define UART0_RX_IRQ 33u
#define CLOCK_HZ 32000000u

const char tc_port_target_name[] = "mps3-an547";

static tc_rx_ring tc_rx;

static void tc_uart0_rx_handler(void)
{
    TC_REG(UART_INTCLEAR) = INT_RX; /* clear first, then drain: no byte is missed */
    while (TC_REG(UART_STATE) & STATE_RX_FULL) {
        tc_rx_ring_put(&tc_rx, (uint8_t)TC_REG(UART_DATA));
    }
}

__attribute__((section(".vectors"), used))
void (*const tc_vectors[16 + UART0_RX_IRQ + 1])(void) = {
    tc_stack_top, tc_reset_handler, tc_default_handler, tc_hardfault_handler,
    tc_default_handler, tc_default_handler, tc_default_handler, 0, 0, 0, 0,
    tc_default_handler, tc_default_handler, 0, tc_default_handler, tc_systick_handler,
    [16 + UART0_RX_IRQ] = tc_uart0_rx_handler,
};

void tc_port_init(void)
{
    TC_REG(UART_BAUDDIV) = 278u; /* 115200 baud at 32 MHz; QEMU needs >= 16 */
    TC_REG(UART_CTRL) = CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_INT_EN;
    (void)TC_REG(UART_DATA); /* QEMU: without this read early bytes stall */
    TC_REG(TC_NVIC_ISER0 + 4u * (UART0_RX_IRQ / 32u)) = 1u << (UART0_RX_IRQ % 32u);
    tc_ticks_init(TC_TICKS_FOR_CLOCK(CLOCK_HZ));
}

int tc_port_getc(void)
{
    return tc_rx_ring_get(&tc_rx);
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

uint32_t tc_port_ticks(void)
{
    return tc_ticks_now();
}
