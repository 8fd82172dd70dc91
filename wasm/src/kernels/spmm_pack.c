/* Packing of decoded .spnn sparse weights for the SpMM kernels (runs once, at load).
 *
 * The columns are cut into slices (see SPMM_SLICE_COLS in kernels.h); per slice, two
 * segments (blocks of `block` rows, then the remainder rows), each laid out as
 *   values      per block: bias[b] (zeros after the first slice), then b values per
 *               stored column of the slice (16-byte aligned)
 *   counts      u32 per block: its stored columns in the slice
 *   increments  i32 per stored column: bytes from this column's input plane to the next
 *               stored column's (the last one wraps to the segment's first)
 */
#include <string.h>

#include "../kernels.h"

static size_t align16(size_t n) { return (n + 15) & ~(size_t)15; }

/* Column slices of a weight with `cols` input channels. */
static uint32_t slice_count(uint32_t cols) {
  if (cols <= SPMM_SLICE_MIN_COLS) return 1;
  const uint32_t n = (cols + SPMM_SLICE_COLS - 1) / SPMM_SLICE_COLS;
  return n > SPMM_MAX_SLICES ? SPMM_MAX_SLICES : n;
}

size_t spnn_spmm_packed_bytes(uint32_t rows, uint32_t cols, uint32_t block, uint32_t num_columns) {
  const size_t num_blocks = block == 0 ? rows : rows / block + rows % block;
  const size_t segments = 2 * (size_t)slice_count(cols);
  /* Each stored column holds at most `block` values; every slice repeats the biases and
   * counts; each segment pads each of its three arrays to 16 bytes. */
  return 4 * (segments / 2 * ((size_t)rows + num_blocks) + ((size_t)block + 1) * num_columns) +
         3 * 15 * segments + 16;
}

/* The blocks [0, num_blocks) of the weight (their columns and values from `columns` and
 * `values`), restricted to the columns [c_lo, c_hi), as one segment run in `mode`. */
static int pack_segment(uint32_t block, uint32_t num_blocks, uint32_t first_row,
                        uint32_t cols, uint32_t pixels, const uint32_t* counts,
                        const uint32_t* columns, const float* values, const float* bias,
                        uint32_t c_lo, uint32_t c_hi, uint32_t mode, uint8_t** cursor,
                        spnn_spmm_segment* seg) {
  float* out_values = (float*)*cursor;
  size_t v = 0, src = 0, kept = 0;
  uint32_t* out_counts;
  for (uint32_t k = 0; k < num_blocks; k++) {
    for (uint32_t r = 0; r < block; r++) {
      out_values[v++] = bias != NULL ? bias[first_row + k * block + r] : 0.0f;
    }
    for (uint32_t c = 0; c < counts[k]; c++, src++) {
      if (columns[src] >= cols || (c > 0 && columns[src] <= columns[src - 1])) return -1;
      if (columns[src] < c_lo || columns[src] >= c_hi) continue;
      for (uint32_t r = 0; r < block; r++) out_values[v++] = values[src * block + r];
      kept++;
    }
  }
  *cursor += align16(4 * v);

  out_counts = (uint32_t*)*cursor;
  *cursor += align16(4 * (size_t)num_blocks);
  int32_t* out_increments = (int32_t*)*cursor;
  *cursor += align16(4 * kept);

  /* the kept columns in order, each pointing on to the next (the last to the first) */
  const int64_t plane_bytes = 4 * (int64_t)pixels;
  int64_t first = -1, previous = -1;
  size_t i = 0;
  src = 0;
  for (uint32_t k = 0; k < num_blocks; k++) {
    out_counts[k] = 0;
    for (uint32_t c = 0; c < counts[k]; c++, src++) {
      if (columns[src] < c_lo || columns[src] >= c_hi) continue;
      out_counts[k]++;
      if (previous >= 0) out_increments[i++] = (int32_t)(((int64_t)columns[src] - previous) * plane_bytes);
      else first = columns[src];
      previous = columns[src];
    }
  }
  if (kept != 0) out_increments[i] = (int32_t)((first - previous) * plane_bytes);

  seg->block = block;
  seg->num_blocks = num_blocks;
  seg->first_row = first_row;
  seg->input_offset = kept != 0 ? (int32_t)(first * plane_bytes) : 0;
  seg->mode = mode;
  seg->counts = out_counts;
  seg->increments = out_increments;
  seg->values = out_values;
  return 0;
}

int spnn_spmm_pack(uint32_t rows, uint32_t cols, uint32_t block, const uint32_t* counts,
                   const uint32_t* columns, const float* values, const float* bias,
                   uint32_t pixels, void* buffer, spnn_spmm_weights* out) {
  return spnn_spmm_pack_columns(rows, cols, block, counts, columns, values, bias, pixels, 0, cols,
                                buffer, out);
}

int spnn_spmm_pack_columns(uint32_t rows, uint32_t cols, uint32_t block, const uint32_t* counts,
                           const uint32_t* columns, const float* values, const float* bias,
                           uint32_t pixels, uint32_t c_begin, uint32_t c_end, void* buffer,
                           spnn_spmm_weights* out) {
  if ((block != 1 && block != 2 && block != 4) || rows == 0 || cols == 0 || pixels == 0 ||
      c_begin >= c_end || c_end > cols) {
    return -1;
  }
  if ((int64_t)cols * pixels * 4 > INT32_MAX) return -1;
  if (((uintptr_t)buffer & 15) != 0) return -1;
  memset(out, 0, sizeof(*out));
  out->rows = rows;
  out->cols = cols;
  out->pixels = pixels;
  out->slices = slice_count(c_end - c_begin);

  uint8_t* cursor = (uint8_t*)buffer;
  const uint32_t main_blocks = rows / block;
  const uint32_t rest = block == 1 ? 0 : rows % block;
  size_t main_columns = 0;
  for (uint32_t k = 0; k < main_blocks; k++) main_columns += counts[k];

  for (uint32_t j = 0; j < out->slices; j++) {
    const uint32_t c_lo = c_begin + (uint32_t)((uint64_t)(c_end - c_begin) * j / out->slices);
    const uint32_t c_hi = c_begin + (uint32_t)((uint64_t)(c_end - c_begin) * (j + 1) / out->slices);
    if (c_hi - c_lo > out->slice_cols) out->slice_cols = c_hi - c_lo;
    const uint32_t mode = (j > 0 ? SPMM_FROM_OUTPUT : 0) | (j + 1 < out->slices ? SPMM_PARTIAL : 0);
    const float* slice_bias = j == 0 ? bias : NULL;
    if (main_blocks != 0 &&
        pack_segment(block, main_blocks, 0, cols, pixels, counts, columns, values, slice_bias,
                     c_lo, c_hi, mode, &cursor, &out->segments[out->num_segments++]) != 0) {
      return -1;
    }
    if (rest != 0 &&
        pack_segment(1, rest, main_blocks * block, cols, pixels, counts + main_blocks,
                     columns + main_columns, values + main_columns * block, slice_bias, c_lo,
                     c_hi, mode, &cursor, &out->segments[out->num_segments++]) != 0) {
      return -1;
    }
  }
  return 0;
}
