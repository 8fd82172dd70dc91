/* Dense 1x1 convolution in CHW: out[rows x P] = W[rows x cols] . in[cols x P] + bias.
 *
 * Register tile: GEMM_MR pixels (GEMM_MR/4 vectors) x GEMM_NR output rows of
 * accumulators. Per input channel the tile loads its pixels once and multiplies them with
 * GEMM_NR splatted weights. Packed weights: per block of GEMM_NR rows, bias[GEMM_NR] then
 * for each input channel the block's GEMM_NR weights (rows past the end are zero).
 */
#include <string.h>

#include "../kernels.h"
#include "../simd.h"
#include "tile.h"

#ifndef GEMM_MR
#define GEMM_MR 8
#endif
#ifndef GEMM_NR
#define GEMM_NR 4
#endif

size_t spnn_gemm_packed_bytes(uint32_t rows, uint32_t cols) {
  const size_t blocks = ((size_t)rows + GEMM_NR - 1) / GEMM_NR;
  return blocks * GEMM_NR * ((size_t)cols + 1) * sizeof(float);
}

void spnn_gemm_pack(uint32_t rows, uint32_t cols, const float* weights, const float* bias,
                    void* buffer) {
  float* out = (float*)buffer;
  for (uint32_t n0 = 0; n0 < rows; n0 += GEMM_NR) {
    for (uint32_t r = 0; r < GEMM_NR; r++) {
      *out++ = (n0 + r < rows && bias != NULL) ? bias[n0 + r] : 0.0f;
    }
    for (uint32_t k = 0; k < cols; k++) {
      for (uint32_t r = 0; r < GEMM_NR; r++) {
        *out++ = n0 + r < rows ? weights[(size_t)(n0 + r) * cols + k] : 0.0f;
      }
    }
  }
}

/* `width` pixels of all output rows. */
SPNN_INLINE void gemm_tile(size_t width, size_t rows, size_t cols, const float* w,
                           const float* input, size_t input_stride, float* output,
                           size_t output_stride, v128_t vmin, v128_t vmax) {
  const size_t nv = width >= 4 ? width / 4 : 1;
  for (size_t n0 = 0; n0 < rows; n0 += GEMM_NR) {
    v128_t acc[GEMM_NR][GEMM_MR / 4];
    _Pragma("clang loop unroll(full)")
    for (size_t r = 0; r < GEMM_NR; r++) {
      const v128_t vb = wasm_v128_load32_splat(w + r);
      _Pragma("clang loop unroll(full)")
      for (size_t j = 0; j < nv; j++) acc[r][j] = vb;
    }
    w += GEMM_NR;
    const float* x = input;
    for (size_t k = cols; k != 0; k--) {
      v128_t vx[GEMM_MR / 4];
      _Pragma("clang loop unroll(full)")
      for (size_t j = 0; j < nv; j++) vx[j] = tile_load(x + 4 * j, width);
      x += input_stride;
      _Pragma("clang loop unroll(full)")
      for (size_t r = 0; r < GEMM_NR; r++) {
        const v128_t vw = wasm_v128_load32_splat(w + r);
        _Pragma("clang loop unroll(full)")
        for (size_t j = 0; j < nv; j++) acc[r][j] = spnn_madd(acc[r][j], vx[j], vw);
      }
      w += GEMM_NR;
    }
    const size_t valid = rows - n0 < GEMM_NR ? rows - n0 : GEMM_NR;
    /* Constant trip counts keep the accumulators in registers (a runtime row bound would
     * make the compiler keep the array in memory and store it on every iteration). */
    _Pragma("clang loop unroll(full)")
    for (size_t r = 0; r < GEMM_NR; r++) {
      _Pragma("clang loop unroll(full)")
      for (size_t j = 0; j < nv; j++) {
        if (r < valid) tile_store(output + (n0 + r) * output_stride + 4 * j,
                   spnn_clamp(acc[r][j], vmin, vmax), width);
      }
    }
  }
}

void spnn_gemm_run(uint32_t rows, uint32_t cols, const void* packed, size_t pixel_begin,
                   size_t pixel_end, const float* input, size_t input_stride, float* output,
                   size_t output_stride, float out_min, float out_max) {
  if (rows == 0 || pixel_begin >= pixel_end) return;
  const v128_t vmin = wasm_f32x4_splat(out_min);
  const v128_t vmax = wasm_f32x4_splat(out_max);
  const float* w = (const float*)packed;
  size_t remaining = pixel_end - pixel_begin;
  input += pixel_begin;
  output += pixel_begin;
  while (remaining >= GEMM_MR) {
    gemm_tile(GEMM_MR, rows, cols, w, input, input_stride, output, output_stride, vmin, vmax);
    input += GEMM_MR;
    output += GEMM_MR;
    remaining -= GEMM_MR;
  }
  if (remaining != 0 && pixel_end - pixel_begin >= GEMM_MR) {
    /* One more full tile, ending at pixel_end: it recomputes GEMM_MR - remaining pixels of
     * this range (to the same values: every tile sums in the same order), which costs less
     * than the narrow tiles, latency-bound on their few accumulators. */
    const size_t back = GEMM_MR - remaining;
    gemm_tile(GEMM_MR, rows, cols, w, input - back, input_stride, output - back,
              output_stride, vmin, vmax);
    return;
  }
  _Pragma("clang loop unroll(full)")  /* constant widths: registers */
  for (size_t width = GEMM_MR / 2; width != 0; width /= 2) {
    if (remaining & width) {
      gemm_tile(width, rows, cols, w, input, input_stride, output, output_stride, vmin, vmax);
      input += width;
      output += width;
    }
  }
}
