/* Sparse 1x1 convolution in CHW: out[rows x P] = W (sparse) . in[cols x P].
 *
 * One tile template, instantiated per (pixels per tile, rows per block). For each pixel
 * tile the kernel walks every block of its segment: splat the block's bias into the
 * accumulators, then for each stored column load the tile's pixels of that input channel
 * once and multiply-add them with each of the block's weights (splatted), moving the input
 * pointer by the next precomputed byte increment. The increments of a segment sum to
 * zero, so after the last block the pointer is back at the first stored column and only
 * has to step to the next tile.
 */
#include <stdbool.h>

#include "../kernels.h"
#include "../simd.h"
#include "tile.h"

/* One pixel tile of `width` pixels through all `num_blocks` blocks of `nr` rows. */
SPNN_INLINE void spmm_tile(size_t width, size_t nr, size_t num_blocks, const float* input,
                           const float* w, const int32_t* increments, const uint32_t* counts,
                           float* output, size_t pixels, v128_t vmin, v128_t vmax) {
  const size_t nv = width >= 4 ? width / 4 : 1; /* vectors per row */
  do {
    uint32_t n = *counts++;
    v128_t acc[4][8];
    _Pragma("clang loop unroll(full)")
    for (size_t r = 0; r < nr; r++) {
      const v128_t vb = wasm_v128_load32_splat(w + r);
      _Pragma("clang loop unroll(full)")
      for (size_t j = 0; j < nv; j++) acc[r][j] = vb;
    }
    w += nr;
    while (n != 0) {
      v128_t x[8];
      _Pragma("clang loop unroll(full)")
      for (size_t j = 0; j < nv; j++) x[j] = tile_load(input + 4 * j, width);
      input = (const float*)((uintptr_t)input + (intptr_t)*increments++);
      _Pragma("clang loop unroll(full)")
      for (size_t r = 0; r < nr; r++) {
        const v128_t vw = wasm_v128_load32_splat(w + r);
        _Pragma("clang loop unroll(full)")
        for (size_t j = 0; j < nv; j++) acc[r][j] = spnn_madd(acc[r][j], x[j], vw);
      }
      w += nr;
      n--;
    }
    _Pragma("clang loop unroll(full)")
    for (size_t r = 0; r < nr; r++) {
      _Pragma("clang loop unroll(full)")
      for (size_t j = 0; j < nv; j++) {
        tile_store(output + r * pixels + 4 * j, spnn_clamp(acc[r][j], vmin, vmax), width);
      }
    }
    output += nr * pixels;
  } while (--num_blocks != 0);
}

/* All pixels of [pixel_begin, pixel_end): full tiles of `mr`, then halving tails. */
SPNN_INLINE void spmm_range(size_t mr, size_t nr, size_t pixel_begin, size_t pixel_end,
                            size_t num_blocks, const float* input, const float* values,
                            const int32_t* increments, const uint32_t* counts, float* output,
                            size_t pixels, float out_min, float out_max) {
  if (num_blocks == 0 || pixel_begin >= pixel_end) return;
  const v128_t vmin = wasm_f32x4_splat(out_min);
  const v128_t vmax = wasm_f32x4_splat(out_max);
  size_t remaining = pixel_end - pixel_begin;
  input += pixel_begin;
  output += pixel_begin;
  while (remaining >= mr) {
    spmm_tile(mr, nr, num_blocks, input, values, increments, counts, output, pixels, vmin,
              vmax);
    input += mr;
    output += mr;
    remaining -= mr;
  }
  /* remaining < mr <= 32: its binary digits are the tails */
  _Pragma("clang loop unroll(full)")  /* constant widths: registers */
  for (size_t width = 16; width != 0; width /= 2) {
    if (width < mr && (remaining & width)) {
      spmm_tile(width, nr, num_blocks, input, values, increments, counts, output, pixels,
                vmin, vmax);
      input += width;
      output += width;
    }
  }
}

#define SPNN_DEFINE_SPMM(NAME, MR, NR)                                                       \
  void NAME(size_t pixel_begin, size_t pixel_end, size_t num_blocks,  \
                                 const float* input, const float* values,                   \
                                 const int32_t* increments, const uint32_t* counts,         \
                                 float* output, size_t pixels, float out_min,               \
                                 float out_max) {                                           \
    spmm_range(MR, NR, pixel_begin, pixel_end, num_blocks, input, values, increments,       \
               counts, output, pixels, out_min, out_max);                                   \
  }

/* Pixel tiles per block size, chosen by measurement (bench/bench_kernels.c) on V8:
 * accumulators + loaded pixels + weight + one temporary must fit in 15 registers. */
#ifndef SPMM_MR1
#define SPMM_MR1 24
#endif
#ifndef SPMM_MR2
#define SPMM_MR2 16
#endif
#ifndef SPMM_MR4
#define SPMM_MR4 8
#endif
SPNN_DEFINE_SPMM(spnn_f32_spmm_24x1, SPMM_MR1, 1)
SPNN_DEFINE_SPMM(spnn_f32_spmm_16x2, SPMM_MR2, 2)
SPNN_DEFINE_SPMM(spnn_f32_spmm_8x4, SPMM_MR4, 4)

void spnn_spmm_run(const spnn_spmm_weights* w, size_t pixel_begin, size_t pixel_end,
                   const float* input, float* output, float out_min, float out_max) {
  for (uint32_t s = 0; s < w->num_segments; s++) {
    const spnn_spmm_segment* seg = &w->segments[s];
    const float* in = (const float*)((uintptr_t)input + (intptr_t)seg->input_offset);
    float* out = output + (size_t)seg->first_row * w->pixels;
    spnn_spmm_ukernel kernel = seg->block == 4   ? spnn_f32_spmm_8x4
                               : seg->block == 2 ? spnn_f32_spmm_16x2
                                                 : spnn_f32_spmm_24x1;
    kernel(pixel_begin, pixel_end, seg->num_blocks, in, seg->values, seg->increments,
           seg->counts, out, w->pixels, out_min, out_max);
  }
}
