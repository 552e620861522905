/* The two C library functions GCC may call even in freestanding code (for a block copy or
 * clear it does not inline, e.g. an unaligned 4-byte __builtin_memcpy on the ARMv6-M Cortex-M0,
 * which has no unaligned word access). The images have no libc; --gc-sections drops these
 * where nothing calls them (no Armv7-M image does today). Byte loops: the calls are rare. */
#include <stddef.h>

void *memcpy(void *dst, const void *src, size_t n)
{
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--) {
        *d++ = *s++;
    }
    return dst;
}

void *memset(void *dst, int value, size_t n)
{
    unsigned char *d = dst;
    while (n--) {
        *d++ = (unsigned char)value;
    }
    return dst;
}
