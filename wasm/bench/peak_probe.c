/* SIMD128 peak probe for the kernel benchmark, compiled with the kernels' flags (so the
 * relaxed build measures FMA).
 *
 * It returns every sample, not the best one: on a shared (virtualised) machine the
 * throughput of the vector units itself varies over time (here ~35 GFLOP/s most of the
 * time, ~45 in quiet windows), so the kernels' medians are to be read against the
 * probe's median and their best against its best. */
#include "../src/simd.h"

int spnn_bench_peak_samples(double (*now_ms)(void), double (*wait_ms)(void),
                            double target_ms, double* samples, int num_samples);

static volatile float probe_sink;

/* Independent chains of multiplies and adds (or FMAs), in registers; `iters` steps. */
static double probe(long iters, v128_t* state) {
  v128_t m0 = state[0], m1 = m0, m2 = m0, m3 = m0, m4 = m0, m5 = m0;
  v128_t a0 = state[1], a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0;
  const v128_t vm = wasm_f32x4_splat(probe_sink + 1.0000001f);
  const v128_t va = wasm_f32x4_splat(probe_sink + 1e-7f);
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
  state[0] = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(m0, m1), wasm_f32x4_add(m2, m3)),
                            wasm_f32x4_add(m4, m5));
  state[1] = wasm_f32x4_add(wasm_f32x4_add(wasm_f32x4_add(a0, a1), wasm_f32x4_add(a2, a3)),
                            wasm_f32x4_add(a4, a5));
#if defined(SPNN_RELAXED_SIMD)
  return 12.0 * 8.0 * (double)iters; /* 12 FMAs of 4 lanes, 2 flops each */
#else
  return 12.0 * 4.0 * (double)iters; /* 12 ops of 4 lanes */
#endif
}

/* `num_samples` GFLOP/s samples of about target_ms each, skipping preempted ones (where
 * wait_ms, the thread's run-queue time, grows by more than 1% of the sample). */
int spnn_bench_peak_samples(double (*now_ms)(void), double (*wait_ms)(void),
                            double target_ms, double* samples, int num_samples) {
  v128_t state[2] = {wasm_f32x4_splat(1.0f), wasm_f32x4_splat(0.0f)};
  long iters = 1 << 12;
  for (;;) { /* calibrate */
    const double t0 = now_ms();
    probe(iters, state);
    const double ms = now_ms() - t0;
    if (ms >= target_ms / 2 || iters >= (1L << 30)) {
      if (ms > 0) iters = (long)(iters * target_ms / ms) + 1;
      break;
    }
    iters *= 2;
  }
  int n = 0;
  for (int attempt = 0; attempt < 4 * num_samples && n < num_samples; attempt++) {
    const double w0 = wait_ms();
    const double t0 = now_ms();
    const double flops = probe(iters, state);
    const double ms = now_ms() - t0;
    const double waited = wait_ms() - w0;
    if (w0 >= 0 && waited > 0.01 * ms) continue;
    samples[n++] = flops / (ms * 1e6);
  }
  probe_sink = wasm_f32x4_extract_lane(wasm_f32x4_add(state[0], state[1]), 0) * 0.0f;
  return n;
}
