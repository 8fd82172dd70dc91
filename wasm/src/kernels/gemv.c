/* Matrix-vector product for FULLY_CONNECTED: y = clamp(W . x + bias), W row-major. */
#include "../kernels.h"
#include "../simd.h"

void spnn_f32_gemv(size_t row_begin, size_t row_end, size_t cols, const float* weights,
                   const float* bias, const float* x, float* y, float out_min,
                   float out_max) {
  for (size_t m = row_begin; m < row_end; m++) {
    const float* w = weights + m * cols;
    /* Four independent vector sums hide the add latency. */
    v128_t a0 = wasm_f32x4_splat(0.0f), a1 = a0, a2 = a0, a3 = a0;
    size_t k = 0;
    for (; k + 16 <= cols; k += 16) {
      a0 = spnn_madd(a0, wasm_v128_load(w + k), wasm_v128_load(x + k));
      a1 = spnn_madd(a1, wasm_v128_load(w + k + 4), wasm_v128_load(x + k + 4));
      a2 = spnn_madd(a2, wasm_v128_load(w + k + 8), wasm_v128_load(x + k + 8));
      a3 = spnn_madd(a3, wasm_v128_load(w + k + 12), wasm_v128_load(x + k + 12));
    }
    for (; k + 4 <= cols; k += 4) {
      a0 = spnn_madd(a0, wasm_v128_load(w + k), wasm_v128_load(x + k));
    }
    const v128_t a = wasm_f32x4_add(wasm_f32x4_add(a0, a1), wasm_f32x4_add(a2, a3));
    float acc = (wasm_f32x4_extract_lane(a, 0) + wasm_f32x4_extract_lane(a, 1)) +
                (wasm_f32x4_extract_lane(a, 2) + wasm_f32x4_extract_lane(a, 3));
    for (; k < cols; k++) acc += w[k] * x[k];
    acc += bias != NULL ? bias[m] : 0.0f;
    acc = acc < out_min ? out_min : acc;
    y[m] = out_max < acc ? out_max : acc;
  }
}
