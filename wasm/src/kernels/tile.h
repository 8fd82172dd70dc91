/* What the tiled kernels share: forced inlining (the tile templates must be specialised
 * per width) and the loads and stores of one tile row. */
#ifndef PYSPARSE_KERNELS_TILE_H
#define PYSPARSE_KERNELS_TILE_H

#include <stddef.h>

#include "../simd.h"

#define SPNN_INLINE static inline __attribute__((always_inline))

/* `width` pixels of a tile row: 4 or more as a whole vector, 1 to 3 in the low lanes. */
SPNN_INLINE v128_t tile_load(const float* p, size_t width) {
  if (width == 3) return wasm_v128_load32_lane(p + 2, wasm_v128_load64_zero(p), 2);
  if (width == 2) return wasm_v128_load64_zero(p);
  if (width == 1) return wasm_v128_load32_zero(p);
  return wasm_v128_load(p);
}

SPNN_INLINE void tile_store(float* p, v128_t v, size_t width) {
  if (width == 3) {
    wasm_v128_store64_lane(p, v, 0);
    wasm_v128_store32_lane(p + 2, v, 2);
  } else if (width == 2) {
    wasm_v128_store64_lane(p, v, 0);
  } else if (width == 1) {
    wasm_v128_store32_lane(p, v, 0);
  } else {
    wasm_v128_store(p, v);
  }
}

/* Vectors of a tile row of `width` pixels (the last one partial when width % 4 != 0), and
 * the pixels of its vector j. */
#define TILE_VECTORS(width) (((width) + 3) / 4)
#define TILE_LANES(width, j) ((width) - 4 * (j) < 4 ? (width) - 4 * (j) : 4)

#endif
