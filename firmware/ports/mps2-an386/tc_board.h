/* mps2-an386 (Cortex-M4 with FPU) for ports/cmsdk: CMSDK UART0, 25 MHz system clock. */
#define TC_BOARD_NAME "mps2-an386"
#define TC_UART0 0x40004000u
#define TC_UART0_RX_IRQ 0u
#define TC_CLOCK_HZ 25000000u
