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
/* Twelve accumulators (8 pixels x 6 rows) where the multiply-add is fused, eight (8 x 4)
 * otherwise: the two loaded pixel vectors stay in registers for all rows, and a separate
 * multiply and add would need one register more than x86's sixteen (see SPMM_MR1). */
#ifndef GEMM_NR
#ifdef SPNN_RELAXED_SIMD
#define GEMM_NR 6
#else
#define GEMM_NR 4
#endif
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

/* `width` pixels of R rows of one packed block (bias then GEMM_NR weights per input
 * channel), the first `valid` of them stored; with a `residual` (laid out as `output`) each
 * output is clamp(sum + residual). */
SPNN_INLINE void gemm_block(size_t R, size_t width, size_t valid, size_t cols, const float* w,
                            const float* input, size_t input_stride, float* output,
                            const float* residual, size_t output_stride, v128_t vmin,
                            v128_t vmax) {
  const size_t nv = width >= 4 ? width / 4 : 1;
  v128_t acc[GEMM_NR][GEMM_MR / 4];
  _Pragma("clang loop unroll(full)")
  for (size_t r = 0; r < R; r++) {
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
    for (size_t r = 0; r < R; r++) {
      const v128_t vw = wasm_v128_load32_splat(w + r);
      _Pragma("clang loop unroll(full)")
      for (size_t j = 0; j < nv; j++) acc[r][j] = spnn_madd(acc[r][j], vx[j], vw);
    }
    w += GEMM_NR;
  }
  /* Constant trip counts keep the accumulators in registers (a runtime row bound would
   * make the compiler keep the array in memory and store it on every iteration). */
  _Pragma("clang loop unroll(full)")
  for (size_t r = 0; r < R; r++) {
    _Pragma("clang loop unroll(full)")
    for (size_t j = 0; j < nv; j++) {
      if (r < valid) {
        const size_t at = r * output_stride + 4 * j;
        v128_t y = acc[r][j];
        if (residual) y = wasm_f32x4_add(y, tile_load(residual + at, width));
        tile_store(output + at, spnn_clamp(y, vmin, vmax), width);
      }
    }
  }
}

/* `width` pixels of all output rows. The last block's rows past the end are not computed
 * where two or four rows cover the rest (a 32-row layer is 5 blocks of 6 and one of 2, not
 * 6 of 6): fewer accumulators do less work than a whole block of zero rows. */
SPNN_INLINE void gemm_tile(size_t width, size_t rows, size_t cols, const float* w,
                           const float* input, size_t input_stride, float* output,
                           const float* residual, size_t output_stride, v128_t vmin,
                           v128_t vmax) {
  const size_t block = GEMM_NR * (cols + 1);
  size_t n0 = 0;
  for (; n0 + GEMM_NR <= rows; n0 += GEMM_NR, w += block) {
    gemm_block(GEMM_NR, width, GEMM_NR, cols, w, input, input_stride, output + n0 * output_stride,
               residual ? residual + n0 * output_stride : NULL, output_stride, vmin, vmax);
  }
  const size_t rest = rows - n0;
  float* out = output + n0 * output_stride;
  const float* res = residual ? residual + n0 * output_stride : NULL;
  if (rest == 0) return;
  if (rest <= 2) {
    gemm_block(2, width, rest, cols, w, input, input_stride, out, res, output_stride, vmin, vmax);
  } else if (rest <= 4 && GEMM_NR > 4) {
    gemm_block(4, width, rest, cols, w, input, input_stride, out, res, output_stride, vmin, vmax);
  } else {
    gemm_block(GEMM_NR, width, rest, cols, w, input, input_stride, out, res, output_stride, vmin,
               vmax);
  }
}

/* Planes whose length is not a multiple of four floats (7x7: 49) leave most channels'
 * vectors unaligned: a tile's 32 bytes of a channel then often straddle two cache lines, so
 * with hundreds of channels the tile's pixels overflow L1 and every block of output rows
 * reads them again from L2. For such planes each full tile is first copied into one
 * contiguous block (GEMM_MR floats per channel, up to GEMM_PACK_COLS channels, on the
 * stack), which stays in L1 for all row blocks: 1.25-1.4x on MobileNetV2's 7x7 layers. On
 * aligned planes the copy gains nothing (0.77-1.09x per layer; likely because it takes the
 * tile's cache misses all at once, with no arithmetic to hide them behind). */
#ifndef GEMM_PACK_COLS
#define GEMM_PACK_COLS 1024
#endif

/* The full tiles of [0, length) (length >= GEMM_MR), each through the packed copy; the last
 * one overlaps its predecessor as in spnn_gemm_run_residual. */
__attribute__((noinline)) static void gemm_run_packed(size_t rows, size_t cols, const float* w,
                                                      size_t length, const float* input,
                                                      size_t input_stride, float* output,
                                                      const float* residual,
                                                      size_t output_stride, v128_t vmin,
                                                      v128_t vmax) {
  float x[GEMM_PACK_COLS * GEMM_MR] __attribute__((aligned(16)));
  for (size_t done = 0; done < length;) {
    const size_t p = length - done >= GEMM_MR ? done : length - GEMM_MR;
    const float* in = input + p;
    float* px = x;
    for (size_t k = 0; k < cols; k++, in += input_stride, px += GEMM_MR) {
      _Pragma("clang loop unroll(full)")
      for (size_t j = 0; j < GEMM_MR / 4; j++) {
        wasm_v128_store(px + 4 * j, wasm_v128_load(in + 4 * j));
      }
    }
    gemm_tile(GEMM_MR, rows, cols, w, x, GEMM_MR, output + p, residual ? residual + p : NULL,
              output_stride, vmin, vmax);
    done = p + GEMM_MR;
  }
}

void spnn_gemm_run_residual(uint32_t rows, uint32_t cols, const void* packed,
                            size_t pixel_begin, size_t pixel_end, const float* input,
                            size_t input_stride, float* output, const float* residual,
                            size_t output_stride, float out_min, float out_max) {
  if (rows == 0 || pixel_begin >= pixel_end) return;
  const v128_t vmin = wasm_f32x4_splat(out_min);
  const v128_t vmax = wasm_f32x4_splat(out_max);
  const float* w = (const float*)packed;
  size_t remaining = pixel_end - pixel_begin;
  input += pixel_begin;
  output += pixel_begin;
  if (residual) residual += pixel_begin;
  if (input_stride % 4 != 0 && rows > GEMM_NR && cols <= GEMM_PACK_COLS &&
      remaining >= GEMM_MR) {
    gemm_run_packed(rows, cols, w, remaining, input, input_stride, output, residual,
                    output_stride, vmin, vmax);
    return;
  }
  /* `done` pixels of the range are written */
  size_t done = 0;
  for (; remaining - done >= GEMM_MR; done += GEMM_MR) {
    gemm_tile(GEMM_MR, rows, cols, w, input + done, input_stride, output + done,
              residual ? residual + done : NULL, output_stride, vmin, vmax);
  }
  if (done != remaining && remaining >= GEMM_MR) {
    /* One more full tile, ending at pixel_end: it recomputes GEMM_MR - (remaining - done)
     * pixels of this range (to the same values: every tile sums in the same order, and a
     * residual is never the output itself), which costs less than the narrow tiles,
     * latency-bound on their few accumulators. */
    const size_t p = remaining - GEMM_MR;
    gemm_tile(GEMM_MR, rows, cols, w, input + p, input_stride, output + p,
              residual ? residual + p : NULL, output_stride, vmin, vmax);
    return;
  }
  _Pragma("clang loop unroll(full)")  /* constant widths: registers */
  for (size_t width = GEMM_MR / 2; width != 0; width /= 2) {
    if ((remaining - done) & width) {
      gemm_tile(width, rows, cols, w, input + done, input_stride, output + done,
                residual ? residual + done : NULL, output_stride, vmin, vmax);
      done += width;
    }
  }
}

void spnn_gemm_run(uint32_t rows, uint32_t cols, const void* packed, size_t pixel_begin,
                   size_t pixel_end, const float* input, size_t input_stride, float* output,
                   size_t output_stride, float out_min, float out_max) {
  spnn_gemm_run_residual(rows, cols, packed, pixel_begin, pixel_end, input, input_stride, output,
                         NULL, output_stride, out_min, out_max);
}
