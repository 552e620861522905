# Nordic nRF51822: Cortex-M0 (ARMv6-M), no FPU; 16 KB of RAM, so a smaller receive ring
MCU := -mcpu=cortex-m0 -mthumb -mfloat-abi=soft
BOARD_CPPFLAGS := -DTC_RX_RING_SIZE=1024u
