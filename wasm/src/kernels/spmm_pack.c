/* Packing of decoded .spnn sparse weights for the SpMM kernels (runs once, at load).
 *
 * Buffer layout, per segment (blocks of `block` rows, then the remainder rows):
 *   values      per block: bias[b], then b values per stored column (16-byte aligned)
 *   counts      u32 per block
 *   increments  i32 per stored column: bytes from this column's input plane to the next
 *               stored column's (the last one wraps to the segment's first)
 */
#include <string.h>

#include "../kernels.h"

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

size_t spnn_spmm_packed_bytes(uint32_t rows, uint32_t block, uint32_t num_columns) {
  const size_t num_blocks = block == 0 ? rows : rows / block + rows % block;
  /* Values are bounded by block * num_columns (each stored column holds at most `block`
   * rows); each of the two segments adds its own padding. */
  return 2 * align16(4 * ((size_t)rows + (size_t)block * num_columns)) +
         2 * align16(4 * num_blocks) + 2 * align16(4 * (size_t)num_columns) + 16;
}

static int pack_segment(uint32_t block, uint32_t num_blocks, uint32_t first_row,
                        uint32_t cols, uint32_t pixels, const uint32_t* counts,
                        const uint32_t* columns, const float* values, const float* bias,
                        uint8_t** cursor, spnn_spmm_segment* seg) {
  size_t num_columns = 0;
  for (uint32_t k = 0; k < num_blocks; k++) num_columns += counts[k];

  float* out_values = (float*)*cursor;
  size_t v = 0, src = 0;
  for (uint32_t k = 0; k < num_blocks; k++) {
    for (uint32_t r = 0; r < block; r++) {
      out_values[v++] = bias != NULL ? bias[first_row + k * block + r] : 0.0f;
    }
    for (uint32_t c = 0; c < counts[k] * block; c++) out_values[v++] = values[src++];
  }
  *cursor += align16(4 * v);

  uint32_t* out_counts = (uint32_t*)*cursor;
  memcpy(out_counts, counts, 4 * (size_t)num_blocks);
  *cursor += align16(4 * (size_t)num_blocks);

  int32_t* out_increments = (int32_t*)*cursor;
  const int64_t plane_bytes = 4 * (int64_t)pixels;
  size_t i = 0;
  for (uint32_t k = 0; k < num_blocks; k++) {
    for (uint32_t c = 0; c < counts[k]; c++, i++) {
      if (columns[i] >= cols || (c > 0 && columns[i] <= columns[i - 1])) return -1;
      const uint32_t next = columns[i + 1 < num_columns ? i + 1 : 0];
      out_increments[i] = (int32_t)(((int64_t)next - (int64_t)columns[i]) * plane_bytes);
    }
  }
  *cursor += align16(4 * num_columns);

  seg->block = block;
  seg->num_blocks = num_blocks;
  seg->first_row = first_row;
  seg->input_offset = num_columns != 0 ? (int32_t)(columns[0] * plane_bytes) : 0;
  seg->counts = out_counts;
  seg->increments = out_increments;
  seg->values = out_values;
  return 0;
}

int spnn_spmm_pack(uint32_t rows, uint32_t cols, uint32_t block, const uint32_t* counts,
                   const uint32_t* columns, const float* values, const float* bias,
                   uint32_t pixels, void* buffer, spnn_spmm_weights* out) {
  if ((block != 1 && block != 2 && block != 4) || rows == 0 || cols == 0 || pixels == 0) {
    return -1;
  }
  if ((int64_t)cols * pixels * 4 > INT32_MAX) return -1;
  if (((uintptr_t)buffer & 15) != 0) return -1;
  memset(out, 0, sizeof(*out));
  out->rows = rows;
  out->cols = cols;
  out->pixels = pixels;

  uint8_t* cursor = (uint8_t*)buffer;
  const uint32_t main_blocks = rows / block;
  const uint32_t rest = block == 1 ? 0 : rows % block;
  size_t main_columns = 0, main_values = 0;
  for (uint32_t k = 0; k < main_blocks; k++) main_columns += counts[k];
  main_values = main_columns * block;

  if (main_blocks != 0) {
    if (pack_segment(block, main_blocks, 0, cols, pixels, counts, columns, values, bias,
                     &cursor, &out->segments[out->num_segments++]) != 0) {
      return -1;
    }
  }
  if (rest != 0) {
    if (pack_segment(1, rest, main_blocks * block, cols, pixels, counts + main_blocks,
                     columns + main_columns, values + main_values, bias, &cursor,
                     &out->segments[out->num_segments++]) != 0) {
      return -1;
    }
  }
  return 0;
}
