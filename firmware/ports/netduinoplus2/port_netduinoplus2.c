/* The netduinoplus2 port (STM32F405, Cortex-M4 with FPU, QEMU): USART1 at 0x40011000 (the one
 * QEMU connects to its first -serial) received by interrupt (IRQ 37, RXNE) into a ring buffer,
 * WFI while idle; polled transmit. QEMU's USART model needs neither clocks nor GPIO set up; on
 * a real part RCC must clock USART1 and its pins before this runs.
 *
 * Ticks: SysTick counts the 168 MHz system clock QEMU gives the SoC, and with -icount shift=3
 * the guest runs one instruction per 8 ns, so one count is 125/168 of an instruction. */
#include "tc_cortex_m.h"
#include "tc_port.h"

#define USART1 0x40011000u
#define USART_SR (USART1 + 0x00u)
#define USART_DR (USART1 + 0x04u)
#define USART_BRR (USART1 + 0x08u)
#define USART_CR1 (USART1 + 0x0Cu)
#define SR_RXNE (1u << 5)
#define SR_TXE (1u << 7)
#define CR1_RE (1u << 2)
#define CR1_TE (1u << 3)
#define CR1_RXNEIE (1u << 5)
#define CR1_UE (1u << 13)
#define USART1_IRQ 37u
#define CLOCK_HZ 168000000u

const char tc_port_target_name[] = "netduinoplus2";

static void tc_usart1_handler(void)
{
    while (TC_REG(USART_SR) & SR_RXNE) { /* reading DR clears RXNE */
        tc_rx_put((uint8_t)TC_REG(USART_DR));
    }
}

/* 16 core exceptions, then IRQ 0..37: only USART1 (37) is enabled */
__attribute__((section(".vectors"), used))
void (*const tc_vectors[16 + USART1_IRQ + 1])(void) = {
    tc_stack_top, tc_reset_handler, tc_default_handler, tc_hardfault_handler,
    tc_default_handler, tc_default_handler, tc_default_handler, 0, 0, 0, 0,
    tc_default_handler, tc_default_handler, 0, tc_default_handler, tc_systick_handler,
    [16 + USART1_IRQ] = tc_usart1_handler,
};

void tc_port_init(void)
{
    TC_REG(USART_BRR) = 0x2D9u; /* 115200 baud at an 84 MHz APB2; QEMU ignores the rate */
    TC_REG(USART_CR1) = CR1_UE | CR1_TE | CR1_RE | CR1_RXNEIE;
    TC_NVIC_ENABLE(USART1_IRQ);
    tc_ticks_init(TC_TICKS_FOR_CLOCK(CLOCK_HZ));
}

void tc_port_write(const uint8_t *data, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++) {
        while ((TC_REG(USART_SR) & SR_TXE) == 0u) {
        }
        TC_REG(USART_DR) = data[i];
    }
}
