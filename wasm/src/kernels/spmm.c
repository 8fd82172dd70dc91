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
                                         v128_t vmax) {
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
  for (; n != 0; n--) {
    spmm_step(width, nr, acc, &input, increments++, w);
    w += nr;
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
                             residual ? residual + done : NULL, pixels, vmin, vmax) - done;
      done += mr;
    }
    _Pragma("clang loop unroll(full)")  /* constant widths: registers */
    for (size_t more = 1; more < 4; more++) {
      if (merged == more) {
        next = spmm_block_tile(mr + more, nr, mode, n, input + done, w, increments, output + done,
                               residual ? residual + done : NULL, pixels, vmin, vmax) - done;
        done += mr + more;
      }
    }
    /* length - done < mr <= 48: its binary digits are the tails */
    _Pragma("clang loop unroll(full)")  /* constant widths: registers */
    for (size_t width = 32; width != 0; width /= 2) {
      if (width < mr && ((length - done) & width)) {
        next = spmm_block_tile(width, nr, mode, n, input + done, w, increments, output + done,
                               residual ? residual + done : NULL, pixels, vmin, vmax) - done;
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

/* Pixel tiles per block size: SPMM_MR1/2/4 (kernels.h), chosen by measurement on V8
 * (bench/bench_kernels.c and whole models, docs/benchmarks.md). */
SPNN_DEFINE_SPMM(spnn_f32_spmm_1row, SPMM_MR1, 1)
SPNN_DEFINE_SPMM(spnn_f32_spmm_2rows, SPMM_MR2, 2)
SPNN_DEFINE_SPMM(spnn_f32_spmm_4rows, SPMM_MR4, 4)

/* Bytes of input (all channels of a pixel chunk) meant to stay near the core (L1/L2);
 * measured flat between 24 KiB and 256 KiB. */
#ifndef SPMM_CHUNK_BYTES
#define SPMM_CHUNK_BYTES 65536
#endif
/* A multiple of every tile width, so that only a range's last chunk has narrow tiles. */
#define SPMM_CHUNK_UNIT 96

void spnn_spmm_run_residual(const spnn_spmm_weights* w, size_t pixel_begin, size_t pixel_end,
                            const float* input, float* output, const float* residual,
                            float out_min, float out_max) {
  size_t chunk = SPMM_CHUNK_BYTES / (4 * (size_t)(w->slice_cols != 0 ? w->slice_cols : 1));
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
