# TI LM3S6965: Cortex-M3, no FPU
MCU := -mcpu=cortex-m3 -mthumb -mfloat-abi=soft
# 64 KB of RAM: a 256-byte receive ring leaves MLPerf Tiny ResNet-8 room (docs/PERFORMANCE.md)
BOARD_CPPFLAGS := -DTC_RX_RING_SIZE=256u
