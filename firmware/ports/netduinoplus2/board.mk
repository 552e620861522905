# ST STM32F405: Cortex-M4 with single-precision FPU
MCU := -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16
