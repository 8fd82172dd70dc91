/* Matrix-vector product for FULLY_CONNECTED: y = clamp(W . x + bias), W row-major.
 *
 * GEMV_ROWS rows at a time share each load of x, so the loop's loads are nearly all
 * weights, which stream from memory once (a classifier's 5 MB stay in no cache) in
 * GEMV_ROWS streams at once. Every row sums in the same order whether it is one of a group
 * or alone (one vector sum over the columns, then its lanes, then the scalar tail), so its
 * result does not depend on where a thread's range of rows starts. */
#include "../kernels.h"
#include "../simd.h"
#include "tile.h"

SPNN_INLINE float finish_row(v128_t s, const float* w, const float* x, size_t k,
                             size_t cols, const float* bias, size_t m, float out_min,
                             float out_max) {
  float acc = (wasm_f32x4_extract_lane(s, 0) + wasm_f32x4_extract_lane(s, 1)) +
              (wasm_f32x4_extract_lane(s, 2) + wasm_f32x4_extract_lane(s, 3));
  for (; k < cols; k++) acc += w[k] * x[k];
  acc += bias != NULL ? bias[m] : 0.0f;
  acc = acc < out_min ? out_min : acc;
  return out_max < acc ? out_max : acc;
}

/* rows per group (docs/benchmarks.md): few enough for the registers without relaxed SIMD */
#define GEMV_ROWS 8

/* Rows [m, m + R) (R a constant, at most GEMV_ROWS): one vector sum per row over the
 * columns, each input vector loaded once for the R rows. */
SPNN_INLINE void gemv_rows(size_t R, size_t m, size_t cols, const float* weights,
                           const float* bias, const float* x, float* y, float out_min,
                           float out_max) {
  const size_t cols4 = cols / 4 * 4;
  const float* w = weights + m * cols;
  v128_t a[GEMV_ROWS];
  _Pragma("clang loop unroll(full)")
  for (size_t r = 0; r < R; r++) a[r] = wasm_f32x4_splat(0.0f);
  for (size_t k = 0; k < cols4; k += 4) {
    const v128_t xv = wasm_v128_load(x + k);
    _Pragma("clang loop unroll(full)")
    for (size_t r = 0; r < R; r++) a[r] = spnn_madd(a[r], wasm_v128_load(w + r * cols + k), xv);
  }
  _Pragma("clang loop unroll(full)")
  for (size_t r = 0; r < R; r++)
    y[m + r] = finish_row(a[r], w + r * cols, x, cols4, cols, bias, m + r, out_min, out_max);
}

void spnn_f32_gemv(size_t row_begin, size_t row_end, size_t cols, const float* weights,
                   const float* bias, const float* x, float* y, float out_min,
                   float out_max) {
  size_t m = row_begin;
  for (; m + GEMV_ROWS <= row_end; m += GEMV_ROWS)
    gemv_rows(GEMV_ROWS, m, cols, weights, bias, x, y, out_min, out_max);
  for (; m < row_end; m++) gemv_rows(1, m, cols, weights, bias, x, y, out_min, out_max);
}
