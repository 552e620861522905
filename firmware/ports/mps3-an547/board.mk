# Arm MPS3 AN547: Cortex-M55 (ARMv8.1-M) with FPU and MVE (Helium)
MCU := -mcpu=cortex-m55 -mthumb -mfloat-abi=hard
# UART: the CMSDK driver shared by the MPS boards (ports/cmsdk), set up by tc_board.h here
PORT_DIRS += ports/cmsdk
