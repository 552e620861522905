/* Cortex-M start-up, tick counter, semihosting and receive ring shared by the QEMU ports. */
#include "tc_cortex_m.h"
#include "tc_port.h"

#define TC_SYST_CSR 0xE000E010u
#define TC_SYST_RVR 0xE000E014u
#define TC_SYST_CVR 0xE000E018u
#define TC_CPACR 0xE000ED88u
#define TC_SYS_WRITE0 0x04
#define TC_SYS_EXIT_EXTENDED 0x20
#define TC_ADP_STOPPED_APPLICATION_EXIT 0x20026

extern uint32_t tc_data_load[], tc_data_start[], tc_data_end[], tc_bss_start[], tc_bss_end[];
int main(int argc, char **argv);

tc_rx_ring tc_rx;
const uint32_t tc_port_rx_capacity = TC_RX_RING_SIZE;
volatile uint32_t tc_rx_paused;
static volatile uint32_t tc_tick_wraps;
static uint32_t tc_tick_mul = 1u << TC_TICK_FRACTION_BITS;

void tc_reset_handler(void)
{
    uint32_t *src = tc_data_load, *dst;
    for (dst = tc_data_start; dst < tc_data_end;) {
        *dst++ = *src++;
    }
    for (dst = tc_bss_start; dst < tc_bss_end;) {
        *dst++ = 0u;
    }
#if defined(__ARM_FP)
    TC_REG(TC_CPACR) |= 0xFu << 20; /* CP10, CP11: full access to the FPU */
    __asm__ volatile("dsb\n\tisb" ::: "memory");
#endif
    tc_semihost_exit(main(0, 0));
}

void tc_default_handler(void)
{
    tc_semihost_write("tinyconv: unexpected exception\n");
    tc_semihost_exit(3);
}

void tc_hardfault_handler(void)
{
    tc_semihost_write("tinyconv: hard fault\n");
    tc_semihost_exit(3);
}

void tc_systick_handler(void)
{
    tc_tick_wraps++;
}

void tc_ticks_init(uint32_t instructions_per_count_q24)
{
    tc_tick_mul = instructions_per_count_q24;
    TC_REG(TC_SYST_RVR) = 0x00FFFFFFu;
    TC_REG(TC_SYST_CVR) = 0u;
    TC_REG(TC_SYST_CSR) = 7u; /* enable, interrupt on wrap, processor clock */
    /* The current value reads 0 until the first reload, which would look like a full period
     * gone by: wait (boundedly, in case the clock does not run) for the reload. */
    {
        volatile uint32_t spins = 0u;
        while (TC_REG(TC_SYST_CVR) == 0u && spins < 100000u) {
            spins++;
        }
    }
}

uint32_t tc_port_ticks(void)
{
    uint32_t wraps, value;
    do { /* re-read if SysTick wrapped while we looked */
        wraps = tc_tick_wraps;
        value = TC_REG(TC_SYST_CVR);
    } while (wraps != tc_tick_wraps);
    /* a whole SysTick period (2^24 counts) is tc_tick_mul instructions */
    return wraps * tc_tick_mul +
           (uint32_t)(((uint64_t)(0x00FFFFFFu - value) * tc_tick_mul) >> TC_TICK_FRACTION_BITS);
}

static int tc_semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void tc_semihost_write(const char *text)
{
    (void)tc_semihost(TC_SYS_WRITE0, text);
}

void tc_semihost_exit(int code)
{
    uint32_t block[2];
    block[0] = TC_ADP_STOPPED_APPLICATION_EXIT;
    block[1] = (uint32_t)code;
    for (;;) {
        (void)tc_semihost(TC_SYS_EXIT_EXTENDED, block);
    }
}

/* Next byte, sleeping with WFI while the ring is empty. Interrupts are masked around the
 * empty check so an interrupt cannot slip in between the check and the WFI (a pending
 * interrupt still wakes WFI; unmasking then runs its handler). */
int tc_port_getc(void)
{
    tc_rx_ring *const r = &tc_rx;
    for (;;) {
        __asm__ volatile("cpsid i" ::: "memory");
        if (r->head != r->tail) {
            const uint8_t byte = r->data[r->tail % TC_RX_RING_SIZE];
            r->tail = r->tail + 1u;
            if (tc_rx_paused != 0u) { /* room again: let the paused interrupt drain its UART */
                const uint32_t irq = tc_rx_paused - 1u;
                tc_rx_paused = 0u;
                TC_REG(TC_NVIC_ISPR0 + 4u * (irq / 32u)) = 1u << (irq % 32u);
                TC_NVIC_ENABLE(irq);
            }
            __asm__ volatile("cpsie i" ::: "memory");
            return byte;
        }
        __asm__ volatile("wfi\n\tcpsie i" ::: "memory");
    }
}
