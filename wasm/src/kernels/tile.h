/* What the tiled kernels share: forced inlining (the tile templates must be specialised
 * per width) and the loads and stores of one tile row. */
#ifndef PYSPARSE_KERNELS_TILE_H
#define PYSPARSE_KERNELS_TILE_H

#include <stddef.h>

#include "../simd.h"

#define SPNN_INLINE static inline __attribute__((always_inline))

/* `width` pixels of a tile row: 4 or more as whole vectors, 2 and 1 in the low lanes. */
SPNN_INLINE v128_t tile_load(const float* p, size_t width) {
  if (width == 2) return wasm_v128_load64_zero(p);
  if (width == 1) return wasm_v128_load32_zero(p);
  return wasm_v128_load(p);
}

SPNN_INLINE void tile_store(float* p, v128_t v, size_t width) {
  if (width == 2) {
    wasm_v128_store64_lane(p, v, 0);
  } else if (width == 1) {
    wasm_v128_store32_lane(p, v, 0);
  } else {
    wasm_v128_store(p, v);
  }
}

#endif
