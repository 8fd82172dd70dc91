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

#endif /* SPNN_SIMD_H */
