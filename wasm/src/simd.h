/* WebAssembly SIMD128 for the kernels, on every build.
 *
 * Under Emscripten / clang targeting wasm32 this is <wasm_simd128.h>. Natively (the
 * sanitizer and fuzz builds on x86) SIMDe emulates the same intrinsics under the same
 * names, so the identical kernel source runs under ASan/UBSan.
 *
 * spnn_madd(acc, a, b) is acc + a*b: with SPNN_RELAXED_SIMD it is relaxed-SIMD's fused
 * f32x4.relaxed_madd (clang >= 16; the result may be fused or not, both are accepted by
 * the tests), otherwise a separate mul and add.
 */
#ifndef SPNN_SIMD_H
#define SPNN_SIMD_H

#include <stddef.h>

#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
#define SPNN_SIMD_NATIVE_WASM 1
#else
#define SIMDE_WASM_SIMD128_ENABLE_NATIVE_ALIASES
#include <simde/wasm/simd128.h>
#if defined(SPNN_RELAXED_SIMD)
#include <simde/wasm/relaxed-simd.h>
#endif
#endif

#if defined(SPNN_RELAXED_SIMD)
#if defined(__wasm_simd128__)
#if !defined(__wasm_relaxed_simd__)
#error "SPNN_RELAXED_SIMD needs -mrelaxed-simd (clang >= 16)"
#endif
#define spnn_madd(acc, a, b) ((v128_t)__builtin_wasm_relaxed_madd_f32x4((a), (b), (acc)))
#else
#define spnn_madd(acc, a, b) simde_wasm_f32x4_fma((acc), (a), (b))
#endif
#define SPNN_KERNELS_VARIANT "relaxed-simd"
#else
#define spnn_madd(acc, a, b) wasm_f32x4_add((acc), wasm_f32x4_mul((a), (b)))
#define SPNN_KERNELS_VARIANT "simd128"
#endif

/* Clamp that keeps NaN (pmin/pmax return their first operand when a comparison fails)
 * and costs one instruction each on x86. */
#define spnn_clamp(v, vmin, vmax) wasm_f32x4_pmin(wasm_f32x4_pmax((v), (vmin)), (vmax))

/* Copies n floats (the ranges do not overlap). Emscripten's memcpy without bulk memory
 * hands every copy of 512 bytes or more to JavaScript, a call out of the module each time;
 * ops that copy a plane or a row per channel copy in vectors here instead. Clang would turn
 * a plain copy loop back into a memcpy call: SPNN_NOT_A_MEMCPY() in its body keeps it a loop. */
#if defined(__wasm__)
#define SPNN_NOT_A_MEMCPY() __asm__ volatile("" ::: "memory")
static inline void spnn_copy_floats(float* dst, const float* src, size_t n) {
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const v128_t a = wasm_v128_load(src + i), b = wasm_v128_load(src + i + 4);
    wasm_v128_store(dst + i, a);
    wasm_v128_store(dst + i + 4, b);
    SPNN_NOT_A_MEMCPY();
  }
  for (; i < n; i++) dst[i] = src[i];
}
#else
#include <string.h>
#define SPNN_NOT_A_MEMCPY() ((void)0)
static inline void spnn_copy_floats(float* dst, const float* src, size_t n) {
  memcpy(dst, src, n * sizeof(float));
}
#endif

#endif /* SPNN_SIMD_H */
