/* Sparse 1x1 convolution in CHW: out[rows x P] = W (sparse) . in[cols x P].
 *
 * One tile template, instantiated per (pixels per tile, rows per block). The pixels are
 * taken in chunks whose input (all channels) stays in the cache; within a chunk the
 * kernel walks every block of its segment and, for each block, every pixel tile of the
 * chunk: splat the block's bias into the accumulators, then for each stored column load
 * the tile's pixels of that input channel once and multiply-add them with each of the
 * block's weights (splatted), moving the input pointer by the next precomputed byte
 * increment. Taking a block's tiles one after the other makes its column loop end after
 * the same count several times in a row, which the branch predictor learns (walking the
 * blocks of one tile instead, with their random counts, mispredicts nearly every loop
 * exit: the main cost of short rows). The increments of a segment sum to zero, so after
 * the last block the pointer is back at the first stored column.
 */
#include "../kernels.h"
#include "../simd.h"
#include "tile.h"

/* Four-row blocks take two stored columns per loop step with fused multiply-adds: the loop's
 * own instructions are a large share of a step of three pixel vectors. Measured slower, so
 * not done: one-row blocks (also with every row's count made even, so nothing is left over:
 * a step of twelve pixel loads does not wait on the loop) and the SIMD128 build's separate
 * multiplies and adds (docs/benchmarks.md). */
#ifdef SPNN_RELAXED_SIMD
#define SPMM_PAIRED_STEPS 1
#else
#define SPMM_PAIRED_STEPS 0
#endif

/* acc[r][j] += x[j] * w[r] for one stored column: loads the tile's pixels of the column's
 * input channel and moves `*input` to the next stored column. */
SPNN_INLINE void spmm_step(size_t width, size_t nr, v128_t acc[4][13], const float** input,
                           const int32_t* increment, const float* w) {
  const size_t nv = TILE_VECTORS(width);
  v128_t x[13];
  _Pragma("clang loop unroll(full)")
  for (size_t j = 0; j < nv; j++) x[j] = tile_load(*input + 4 * j, TILE_LANES(width, j));
  *input = (const float*)((uintptr_t)*input + (intptr_t)*increment);
  _Pragma("clang loop unroll(full)")
  for (size_t r = 0; r < nr; r++) {
    const v128_t vw = wasm_v128_load32_splat(w + r);
    _Pragma("clang loop unroll(full)")
    for (size_t j = 0; j < nv; j++) acc[r][j] = spnn_madd(acc[r][j], x[j], vw);
  }
}

/* One block of `nr` rows with `n` stored columns on one tile of `width` pixels; `w` points
 * at the block's bias. With a `residual` (laid out as `output`), each output is clamp(sum +
 * residual), else clamp(sum); `mode` SPMM_FROM_OUTPUT starts the sums from the output
 * instead of the bias, SPMM_PARTIAL stores them as they are (a column slice that is not
 * the last). Returns the input pointer moved past the block's columns.
 *
 * Every tile width sums a pixel's terms in the same order (one accumulator each, column
 * by column), so a pixel's result does not depend on which tile, and so which thread's
 * range, it falls in. */
SPNN_INLINE const float* spmm_block_tile(size_t width, size_t nr, uint32_t mode, uint32_t n,
                                         const float* input, const float* w,
                                         const int32_t* increments, float* output,
                                         const float* residual, size_t pixels, v128_t vmin,
                                         v128_t vmax, size_t half) {
  const size_t nv = TILE_VECTORS(width); /* vectors per row */
  v128_t acc[4][13];
  _Pragma("clang loop unroll(full)")
  for (size_t r = 0; r < nr; r++) {
    const v128_t vb = wasm_v128_load32_splat(w + r);
    _Pragma("clang loop unroll(full)")
    for (size_t j = 0; j < nv; j++) {
      acc[r][j] = mode & SPMM_FROM_OUTPUT
                      ? tile_load(output + r * pixels + 4 * j, TILE_LANES(width, j)) : vb;
    }
  }
  w += nr;
  if (SPMM_PAIRED_STEPS && nr == 4) { /* two stored columns a step */
    for (; n >= 2; n -= 2) {
      spmm_step(width, nr, acc, &input, increments, w);
      spmm_step(width, nr, acc, &input, increments + 1, w + nr);
      increments += 2;
      w += 2 * nr;
    }
  }
  for (; n != 0; n--) {
    spmm_step(width, nr, acc, &input, increments++, w);
    w += nr;
  }
  if (mode & SPMM_SPLIT) { /* eight pixels at a time: 4 even columns here, 4 odd ones + half */
    _Pragma("clang loop unroll(full)")
    for (size_t r = 0; r < nr; r++) {
      _Pragma("clang loop unroll(full)")
      for (size_t j = 0; j + 1 < nv; j += 2) {
        const v128_t a = spnn_clamp(acc[r][j], vmin, vmax);
        const v128_t b = spnn_clamp(acc[r][j + 1], vmin, vmax);
        wasm_v128_store(output + r * pixels + 2 * j, wasm_i32x4_shuffle(a, b, 0, 2, 4, 6));
        wasm_v128_store(output + r * pixels + 2 * j + half, wasm_i32x4_shuffle(a, b, 1, 3, 5, 7));
      }
    }
    return input;
  }
  _Pragma("clang loop unroll(full)")
  for (size_t r = 0; r < nr; r++) {
    _Pragma("clang loop unroll(full)")
    for (size_t j = 0; j < nv; j++) {
      v128_t y = acc[r][j];
      const size_t lanes = TILE_LANES(width, j);
      if (!(mode & SPMM_PARTIAL)) {
        if (residual) y = wasm_f32x4_add(y, tile_load(residual + r * pixels + 4 * j, lanes));
        y = spnn_clamp(y, vmin, vmax);
      }
      tile_store(output + r * pixels + 4 * j, y, lanes);
    }
  }
  return input;
}

/* All pixels of [pixel_begin, pixel_end), block by block: for each block its full tiles of
 * `mr`, then halving tails. One-row blocks take a last 1 to 3 pixels (a 7x7 plane's 49th)
 * into their last full tile, as one more partial vector, instead of a pass of their own
 * over every column. */
SPNN_INLINE void spmm_range(size_t mr, size_t nr, uint32_t mode, size_t pixel_begin, size_t pixel_end,
                            size_t num_blocks, const float* input, const float* values,
                            const int32_t* increments, const uint32_t* counts, float* output,
                            const float* residual, size_t pixels, float out_min,
                            float out_max) {
  if (num_blocks == 0 || pixel_begin >= pixel_end) return;
  const v128_t vmin = wasm_f32x4_splat(out_min);
  const v128_t vmax = wasm_f32x4_splat(out_max);
  const size_t length = pixel_end - pixel_begin;
  const float* w = values;
  input += pixel_begin;
  output += pixel_begin;
  if (residual) residual += pixel_begin;
  do {
    const uint32_t n = *counts++;
    const float* next = input; /* the next block's first column, once a tile has run */
    size_t done = 0;
    const size_t extra = length % mr; /* pixels after the full tiles */
    const size_t merged = nr == 1 && length > mr && extra < 4 ? extra : 0;
    const size_t full = length / mr - (merged ? 1 : 0); /* the last one takes `merged` more */
    for (size_t t = 0; t < full; t++) {
      next = spmm_block_tile(mr, nr, mode, n, input + done, w, increments, output + done,
                             residual ? residual + done : NULL, pixels, vmin, vmax, 0) - done;
      done += mr;
    }
    _Pragma("clang loop unroll(full)")  /* constant widths: registers */
    for (size_t more = 1; more < 4; more++) {
      if (merged == more) {
        next = spmm_block_tile(mr + more, nr, mode, n, input + done, w, increments, output + done,
                               residual ? residual + done : NULL, pixels, vmin, vmax, 0) - done;
        done += mr + more;
      }
    }
    /* length - done < mr <= 48: its binary digits are the tails */
    _Pragma("clang loop unroll(full)")  /* constant widths: registers */
    for (size_t width = 32; width != 0; width /= 2) {
      if (width < mr && ((length - done) & width)) {
        next = spmm_block_tile(width, nr, mode, n, input + done, w, increments, output + done,
                               residual ? residual + done : NULL, pixels, vmin, vmax, 0) - done;
        done += width;
      }
    }
    input = next;
    w += nr * ((size_t)n + 1);
    increments += n;
    output += nr * pixels;
    if (residual) residual += nr * pixels;
  } while (--num_blocks != 0);
}

/* One copy of the loops per mode: the kernels test it per tile and per row otherwise. */
#define SPNN_DEFINE_SPMM(NAME, MR, NR)                                                      \
  void NAME(size_t pixel_begin, size_t pixel_end, size_t num_blocks, const float* input,   \
            const float* values, const int32_t* increments, const uint32_t* counts,        \
            float* output, const float* residual, size_t pixels, float out_min,            \
            float out_max, uint32_t mode) {                                                \
    switch (mode) {                                                                        \
      case 0:                                                                              \
        spmm_range(MR, NR, 0, pixel_begin, pixel_end, num_blocks, input, values,           \
                   increments, counts, output, residual, pixels, out_min, out_max);        \
        break;                                                                             \
      case SPMM_PARTIAL:                                                                   \
        spmm_range(MR, NR, SPMM_PARTIAL, pixel_begin, pixel_end, num_blocks, input,        \
                   values, increments, counts, output, NULL, pixels, out_min, out_max);    \
        break;                                                                             \
      case SPMM_FROM_OUTPUT | SPMM_PARTIAL:                                                \
        spmm_range(MR, NR, SPMM_FROM_OUTPUT | SPMM_PARTIAL, pixel_begin, pixel_end,        \
                   num_blocks, input, values, increments, counts, output, NULL, pixels,    \
                   out_min, out_max);                                                      \
        break;                                                                             \
      default:                                                                             \
        spmm_range(MR, NR, SPMM_FROM_OUTPUT, pixel_begin, pixel_end, num_blocks, input,    \
                   values, increments, counts, output, residual, pixels, out_min,          \
                   out_max);                                                               \
        break;                                                                             \
    }                                                                                      \
  }

/* Whether a row of `row` pixels, split into tiles of `mr`, ends in tiles of 32 and 24 pixels
 * instead of its last full tile and an 8-pixel one (56 = 48 + 8): the narrow tile would pay
 * a whole tile's per-column work for two vectors. */
SPNN_INLINE int split_row_ends_32_24(size_t row, size_t mr) {
  return mr == 48 && row > mr && row % mr == 8;
}

/* The same tiles writing rows split into their even and odd columns (spnn_spmm_run_split),
 * row by row: each row's full tiles, then its tails, so that every tile lies in one row and
 * its even columns land one after the other from the row's start + half the tile's column.
 * Rows are a multiple of 8 wide, as are the tiles (spnn_spmm_splits). */
SPNN_INLINE void spmm_split_range(size_t mr, size_t nr, size_t pixel_begin, size_t pixel_end,
                                  size_t num_blocks, const float* input, const float* values,
                                  const int32_t* increments, const uint32_t* counts,
                                  float* output, size_t pixels, float out_min, float out_max,
                                  size_t row) {
  if (num_blocks == 0 || pixel_begin >= pixel_end) return;
  const v128_t vmin = wasm_f32x4_splat(out_min);
  const v128_t vmax = wasm_f32x4_splat(out_max);
  const size_t length = pixel_end - pixel_begin, half = row / 2;
  const float* w = values;
  input += pixel_begin;
  output += pixel_begin;
  do {
    const uint32_t n = *counts++;
    const float* next = input;
    for (size_t y = 0; y < length; y += row) {
      const int ends_32_24 = split_row_ends_32_24(row, mr);
      const size_t full_end = ends_32_24 ? row - mr - 8 : row;
      size_t x = 0;
      for (; x + mr <= full_end; x += mr) {
        next = spmm_block_tile(mr, nr, SPMM_SPLIT, n, input + y + x, w, increments,
                               output + y + x / 2, NULL, pixels, vmin, vmax, half) - (y + x);
      }
      if (ends_32_24) {
        next = spmm_block_tile(32, nr, SPMM_SPLIT, n, input + y + x, w, increments,
                               output + y + x / 2, NULL, pixels, vmin, vmax, half) - (y + x);
        x += 32;
        next = spmm_block_tile(24, nr, SPMM_SPLIT, n, input + y + x, w, increments,
                               output + y + x / 2, NULL, pixels, vmin, vmax, half) - (y + x);
        x += 24;
      }
      _Pragma("clang loop unroll(full)")  /* constant widths: registers */
      for (size_t width = 32; width >= 8; width /= 2) {
        if (width < mr && ((row - x) & width)) {
          next = spmm_block_tile(width, nr, SPMM_SPLIT, n, input + y + x, w, increments,
                                 output + y + x / 2, NULL, pixels, vmin, vmax, half) - (y + x);
          x += width;
        }
      }
    }
    input = next;
    w += nr * ((size_t)n + 1);
    increments += n;
    output += nr * pixels;
  } while (--num_blocks != 0);
}

#define SPNN_DEFINE_SPMM_SPLIT(NAME, MR, NR)                                                \
  static void NAME(size_t pixel_begin, size_t pixel_end, size_t num_blocks,                \
                   const float* input, const float* values, const int32_t* increments,     \
                   const uint32_t* counts, float* output, size_t pixels, float out_min,    \
                   float out_max, size_t row) {                                            \
    spmm_split_range(MR, NR, pixel_begin, pixel_end, num_blocks, input, values,            \
                     increments, counts, output, pixels, out_min, out_max, row);           \
  }

/* Pixel tiles per block size: SPMM_MR1/2/4 (kernels.h), chosen by measurement on V8
 * (bench/bench_kernels.c and whole models, docs/benchmarks.md). */
SPNN_DEFINE_SPMM(spnn_f32_spmm_1row, SPMM_MR1, 1)
SPNN_DEFINE_SPMM(spnn_f32_spmm_2rows, SPMM_MR2, 2)
SPNN_DEFINE_SPMM(spnn_f32_spmm_4rows, SPMM_MR4, 4)
SPNN_DEFINE_SPMM_SPLIT(spmm_1row_split, SPMM_MR1, 1)
SPNN_DEFINE_SPMM_SPLIT(spmm_2rows_split, SPMM_MR2, 2)
SPNN_DEFINE_SPMM_SPLIT(spmm_4rows_split, SPMM_MR4, 4)
typedef void (*split_ukernel)(size_t, size_t, size_t, const float*, const float*, const int32_t*,
                              const uint32_t*, float*, size_t, float, float, size_t);

/* Bytes of input (all channels of a pixel chunk) meant to stay near the core (L1/L2);
 * measured flat between 24 KiB and 256 KiB. */
#ifndef SPMM_CHUNK_BYTES
#define SPMM_CHUNK_BYTES 65536
#endif
/* A multiple of every tile width, so that only a range's last chunk has narrow tiles. */
#define SPMM_CHUNK_UNIT 96

/* Pixels whose input (every column of the widest slice) fills SPMM_CHUNK_BYTES. */
static size_t chunk_pixels(const spnn_spmm_weights* w) {
  return SPMM_CHUNK_BYTES / (4 * (size_t)(w->slice_cols != 0 ? w->slice_cols : 1));
}

/* The pixel tile of a segment's kernel. */
static size_t segment_tile(const spnn_spmm_segment* seg) {
  return seg->block == 4 ? SPMM_MR4 : seg->block == 2 ? SPMM_MR2 : SPMM_MR1;
}

void spnn_spmm_run_residual(const spnn_spmm_weights* w, size_t pixel_begin, size_t pixel_end,
                            const float* input, float* output, const float* residual,
                            float out_min, float out_max) {
  size_t chunk = chunk_pixels(w);
  chunk = chunk < SPMM_CHUNK_UNIT ? SPMM_CHUNK_UNIT : chunk / SPMM_CHUNK_UNIT * SPMM_CHUNK_UNIT;
  for (size_t begin = pixel_begin; begin < pixel_end; begin += chunk) {
    const size_t end = pixel_end - begin > chunk ? begin + chunk : pixel_end;
    for (uint32_t s = 0; s < w->num_segments; s++) {
      const spnn_spmm_segment* seg = &w->segments[s];
      const float* in = (const float*)((uintptr_t)input + (intptr_t)seg->input_offset);
      const size_t first = (size_t)seg->first_row * w->pixels;
      spnn_spmm_ukernel kernel = seg->block == 4   ? spnn_f32_spmm_4rows
                                 : seg->block == 2 ? spnn_f32_spmm_2rows
                                                   : spnn_f32_spmm_1row;
      kernel(begin, end, seg->num_blocks, in, seg->values, seg->increments, seg->counts,
             output + first, residual ? residual + first : NULL, w->pixels, out_min, out_max,
             seg->mode);
    }
  }
}

void spnn_spmm_run(const spnn_spmm_weights* w, size_t pixel_begin, size_t pixel_end,
                   const float* input, float* output, float out_min, float out_max) {
  spnn_spmm_run_residual(w, pixel_begin, pixel_end, input, output, NULL, out_min, out_max);
}

/* Tiles per row of spmm_split_range: full ones, then the tails. */
static size_t split_tiles(size_t row, size_t mr) {
  size_t tiles = row / mr;
  for (size_t width = 32; width >= 8; width /= 2)
    if (width < mr && (row % mr & width)) tiles++;
  return tiles;
}

int spnn_spmm_splits(const spnn_spmm_weights* w, size_t row_width) {
  if (row_width == 0 || row_width % 8 != 0 || w->pixels % row_width != 0) return 0;
  for (uint32_t s = 0; s < w->num_segments; s++) {
    const spnn_spmm_segment* seg = &w->segments[s];
    /* tiles of whole groups of eight */
    if (seg->mode != 0 || segment_tile(seg) % 8 != 0) return 0;
  }
  return 1;
}

int spnn_spmm_split_pays(const spnn_spmm_weights* w, size_t row_width) {
  for (uint32_t s = 0; s < w->num_segments; s++) {
    const size_t mr = segment_tile(&w->segments[s]);
    if (split_row_ends_32_24(row_width, mr)) continue; /* 32 + 24: measured to pay */
    if (4 * row_width < 3 * mr * split_tiles(row_width, mr)) return 0;
  }
  return 1;
}

void spnn_spmm_run_split(const spnn_spmm_weights* w, size_t pixel_begin, size_t pixel_end,
                         const float* input, float* output, size_t row_width, float out_min,
                         float out_max) {
  const size_t rows = chunk_pixels(w) / row_width; /* chunks of whole rows */
  const size_t chunk = (rows != 0 ? rows : 1) * row_width;
  for (size_t begin = pixel_begin; begin < pixel_end; begin += chunk) {
    const size_t end = pixel_end - begin > chunk ? begin + chunk : pixel_end;
    for (uint32_t s = 0; s < w->num_segments; s++) {
      const spnn_spmm_segment* seg = &w->segments[s];
      const float* in = (const float*)((uintptr_t)input + (intptr_t)seg->input_offset);
      const split_ukernel kernel = seg->block == 4   ? spmm_4rows_split
                                   : seg->block == 2 ? spmm_2rows_split
                                                     : spmm_1row_split;
      kernel(begin, end, seg->num_blocks, in, seg->values, seg->increments, seg->counts,
             output + (size_t)seg->first_row * w->pixels, w->pixels, out_min, out_max, row_width);
    }
  }
}

/* One row's pixels [begin, end): whole vectors, then a 1 to 3 pixel tail. */
SPNN_INLINE void add_parts_row(size_t parts, const float* s, size_t plane, size_t begin, size_t end,
                               const float* res, float* o, v128_t vmin, v128_t vmax) {
  size_t p = begin;
  for (; p + 4 <= end; p += 4) {
    v128_t y = wasm_v128_load(s + p);
    for (size_t j = 1; j < parts; j++) y = wasm_f32x4_add(y, wasm_v128_load(s + j * plane + p));
    if (res) y = wasm_f32x4_add(y, wasm_v128_load(res + p));
    wasm_v128_store(o + p, spnn_clamp(y, vmin, vmax));
  }
  if (p < end) {
    const size_t lanes = end - p;
    v128_t y = tile_load(s + p, lanes);
    for (size_t j = 1; j < parts; j++) y = wasm_f32x4_add(y, tile_load(s + j * plane + p, lanes));
    if (res) y = wasm_f32x4_add(y, tile_load(res + p, lanes));
    tile_store(o + p, spnn_clamp(y, vmin, vmax), lanes);
  }
}

void spnn_f32_add_parts(size_t parts, const float* sums, size_t rows, size_t pixels, size_t begin,
                        size_t end, const float* residual, float* out, float out_min, float out_max) {
  const v128_t vmin = wasm_f32x4_splat(out_min);
  const v128_t vmax = wasm_f32x4_splat(out_max);
  const size_t plane = rows * pixels;
  for (size_t r = 0; r < rows; r++) {
    const size_t at = r * pixels;
    /* two parts, the common case, with and without a residual: loops the compiler unrolls */
    if (parts == 2 && residual)
      add_parts_row(2, sums + at, plane, begin, end, residual + at, out + at, vmin, vmax);
    else if (parts == 2)
      add_parts_row(2, sums + at, plane, begin, end, NULL, out + at, vmin, vmax);
    else
      add_parts_row(parts, sums + at, plane, begin, end, residual ? residual + at : NULL, out + at,
                    vmin, vmax);
  }
}
