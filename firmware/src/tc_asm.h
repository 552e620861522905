/* The assembler lines around a hand-written Thumb-2 function in an __asm__ block: each in its
 * own .text.NAME section, so the linker's --gc-sections drops what a model does not call, and
 * typed and sized, so the disassembly and firmware_host/stack.py see a function. NAME is a
 * string literal. */
#ifndef TC_ASM_H
#define TC_ASM_H

/* A global Thumb function label (also a code address the threaded loops jump to). */
#define TC_ASM_LABEL(name) \
    "  .global " name "\n" \
    "  .type " name ", %function\n" \
    "  .thumb_func\n" \
    name ":\n"

#define TC_ASM_BEGIN(name) \
    "  .section .text." name ",\"ax\",%progbits\n" \
    "  .syntax unified\n" \
    "  .thumb\n" \
    "  .align 2\n" \
    TC_ASM_LABEL(name)

/* Back to .text, for whatever the compiler emits after the block. */
#define TC_ASM_END(name) \
    "  .size " name ", .-" name "\n" \
    "  .text\n"

#endif
