# Arm MPS2 AN386: Cortex-M4 with single-precision FPU
MCU := -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16
# UART: the CMSDK driver shared by the MPS boards (ports/cmsdk), set up by tc_board.h here
PORT_DIRS += ports/cmsdk
# 4 MB of RAM: a 16 KB receive ring keeps several 3 KB requests queued while one computes
BOARD_CPPFLAGS := -DTC_RX_RING_SIZE=16384u
