/* CRC-32 (reflected polynomial 0xEDB88320, as zlib's crc32), table-driven. */
#include <stdint.h>
#include <stddef.h>

uint32_t spnn_crc32(const uint8_t* data, size_t size);
uint32_t spnn_crc32_update(uint32_t crc, const uint8_t* data, size_t size);

static uint32_t table[256];
static int table_ready;

static void make_table(void) {
  for (uint32_t i = 0; i < 256; i++) {
    uint32_t c = i;
    for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    table[i] = c;
  }
  table_ready = 1;
}

/* Continues `crc` (a finished CRC of earlier bytes, 0 to start) over more bytes. */
uint32_t spnn_crc32_update(uint32_t crc, const uint8_t* data, size_t size) {
  /* The table is the same whoever builds it, so a race here is benign. */
  if (!table_ready) make_table();
  uint32_t c = crc ^ 0xFFFFFFFFu;
  for (size_t i = 0; i < size; i++) c = table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

uint32_t spnn_crc32(const uint8_t* data, size_t size) { return spnn_crc32_update(0, data, size); }
