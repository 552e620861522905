# TI LM3S6965: Cortex-M3, no FPU
MCU := -mcpu=cortex-m3 -mthumb -mfloat-abi=soft
