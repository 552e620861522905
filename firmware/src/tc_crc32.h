/* CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320): the same value as zlib.crc32, so the
 * host checks frames with the standard library. */
#ifndef TC_CRC32_H
#define TC_CRC32_H

#include <stddef.h>
#include <stdint.h>

/* Continue a CRC over len more bytes; start with crc = 0 (zlib's convention). */
uint32_t tc_crc32_update(uint32_t crc, const uint8_t *data, size_t len);

#endif
