/* SIMD128 peak probe for the kernel benchmark, compiled with the kernels' flags (so the
 * relaxed build measures FMA). */
#include "../src/simd.h"

double spnn_bench_peak_gflops(double (*now_ms)(void), double target_ms);

/* SIMD128 peak: independent chains of multiplies and adds (or FMAs), in registers. */
static volatile float probe_sink;
double spnn_bench_peak_gflops(double (*now_ms)(void), double target_ms) {
  v128_t m0 = wasm_f32x4_splat(1.0f), m1 = m0, m2 = m0, m3 = m0, m4 = m0, m5 = m0;
  v128_t a0 = wasm_f32x4_splat(0.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
  const v128_t vm = wasm_f32x4_splat(probe_sink + 1.0000001f);
  const v128_t va = wasm_f32x4_splat(probe_sink + 1e-7f);
  long iters = 1 << 16;
  double best = 0.0;
  for (int round = 0; round < 12; round++) {
    const double t0 = now_ms();
    for (long i = 0; i < iters; i++) {
#if defined(SPNN_RELAXED_SIMD)
      m0 = spnn_madd(va, m0, vm); m1 = spnn_madd(va, m1, vm); m2 = spnn_madd(va, m2, vm);
      m3 = spnn_madd(va, m3, vm); m4 = spnn_madd(va, m4, vm); m5 = spnn_madd(va, m5, vm);
      a0 = spnn_madd(va, a0, vm); a1 = spnn_madd(va, a1, vm); a2 = spnn_madd(va, a2, vm);
      a3 = spnn_madd(va, a3, vm); a4 = spnn_madd(va, a4, vm); a5 = spnn_madd(va, a5, vm);
#else
      m0 = wasm_f32x4_mul(m0, vm); m1 = wasm_f32x4_mul(m1, vm); m2 = wasm_f32x4_mul(m2, vm);
      m3 = wasm_f32x4_mul(m3, vm); m4 = wasm_f32x4_mul(m4, vm); m5 = wasm_f32x4_mul(m5, vm);
      a0 = wasm_f32x4_add(a0, va); a1 = wasm_f32x4_add(a1, va); a2 = wasm_f32x4_add(a2, va);
      a3 = wasm_f32x4_add(a3, va); a4 = wasm_f32x4_add(a4, va); a5 = wasm_f32x4_add(a5, va);
#endif
    }
    const double ms = now_ms() - t0;
    if (ms < target_ms && round < 11) {
      iters *= 2;
      continue;
    }
#if defined(SPNN_RELAXED_SIMD)
    const double flops = 12.0 * 8.0 * iters; /* 12 FMAs of 4 lanes, 2 flops each */
#else
    const double flops = 12.0 * 4.0 * iters; /* 12 ops of 4 lanes */
#endif
    const double g = flops / (ms * 1e6);
    if (g > best) best = g;
  }
  v128_t s = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(m0, m1), wasm_f32x4_add(m2, m3)),
                            wasm_f32x4_add(wasm_f32x4_add(m4, m5), a0));
  s = wasm_f32x4_add(s, wasm_f32x4_add(wasm_f32x4_add(a1, a2), wasm_f32x4_add(a3, a4)));
  s = wasm_f32x4_add(s, a5);
  probe_sink = wasm_f32x4_extract_lane(s, 0) * 0.0f;
  return best;
}

