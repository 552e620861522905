/* mps3-an547 (Cortex-M55 with FPU and MVE) for ports/cmsdk: CMSDK UART0 at its secure alias
 * (the core runs in the secure state, and the peripheral protection controllers leave every
 * peripheral secure at reset), 32 MHz system clock. */
#define TC_BOARD_NAME "mps3-an547"
#define TC_UART0 0x59303000u
#define TC_UART0_RX_IRQ 33u
#define TC_CLOCK_HZ 32000000u
