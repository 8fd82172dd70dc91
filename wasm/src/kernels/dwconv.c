/* Depthwise convolution in CHW: each channel plane convolved with its own kernel.
 *
 * The specialised kernels (3x3 and 5x5, stride 1 and 2) work two output rows at a time.
 * Each input row is copied once per channel into a small ring of zero-padded rows (the
 * left and right padding become real zeros; stride 2 rows are split into their even and
 * odd columns), and rows above or below the input point at a shared zero row. The inner
 * loop is then free of branches: every tap of four output pixels is one unaligned vector
 * load from a padded row, shared by both output rows, and up to eight independent sums
 * (two rows, four groups of four pixels) keep the adds from waiting on each other.
 * Padding taps add w*0, so every pixel sums the same taps in the same order (bias, then
 * row by row, left to right), whatever the channel split. Rows wider than the ring allows
 * fall back to a direct kernel (scalar at the borders). Planes up to 128x128 (3x3) or
 * 64x64 (5x5) take the whole output plane as one row instead (dw_flat_*, below): stride 1
 * reads the rows away from the top and bottom edges in place (with relaxed SIMD two output
 * rows at a time, sharing their input rows), stride 2 splits the input into its four phases,
 * a band of rows at a time on large planes. 3x3 layers on small planes (up to 28x28) take
 * four channels at a time instead, one pixel's four channels per vector (dw4_kxk).
 * spnn_f32_dwconv_rows runs any band of output rows with the kernel the whole layer takes.
 */
#include <stdint.h>
#include <string.h>

#include "../kernels.h"
#include "../simd.h"
#include "tile.h"

size_t spnn_dwconv_packed_bytes(const spnn_dwconv_shape* s) {
  return (size_t)s->channels * (1 + (size_t)s->kernel_h * s->kernel_w) * sizeof(float);
}

void spnn_dwconv_pack(const spnn_dwconv_shape* s, const float* weights, const float* bias,
                      void* buffer) {
  const size_t taps = (size_t)s->kernel_h * s->kernel_w;
  float* out = (float*)buffer;
  for (size_t c = 0; c < s->channels; c++) {
    *out++ = bias != NULL ? bias[c] : 0.0f;
    for (size_t t = 0; t < taps; t++) *out++ = weights[c * taps + t];
  }
}

static inline float clampf(float v, float lo, float hi) {
  /* Written so that NaN passes through, like the vector pmin/pmax. */
  v = v < lo ? lo : v;
  return hi < v ? hi : v;
}

/* One output pixel, any kernel: the reference path for borders and the generic kernel. */
SPNN_INLINE float dw_pixel(const spnn_dwconv_shape* s, const float* plane, const float* w,
                           size_t oy, size_t ox) {
  float acc = w[0];
  const long iy0 = (long)(oy * s->stride_h) - (long)s->pad_top;
  const long ix0 = (long)(ox * s->stride_w) - (long)s->pad_left;
  for (size_t ky = 0; ky < s->kernel_h; ky++) {
    const long iy = iy0 + (long)(ky * s->dilation_h);
    if (iy < 0 || iy >= (long)s->in_h) continue;
    const float* row = plane + (size_t)iy * s->in_w;
    for (size_t kx = 0; kx < s->kernel_w; kx++) {
      const long ix = ix0 + (long)(kx * s->dilation_w);
      if (ix < 0 || ix >= (long)s->in_w) continue;
      acc += w[1 + ky * s->kernel_w + kx] * row[ix];
    }
  }
  return acc;
}

/* The kernels below take the channel strides of input and output (in_plane, out_plane):
 * the planes' sizes for whole planes, or the full layer's when `s` describes a band of it
 * (spnn_f32_dwconv_rows). */
static void dw_generic(const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,
                       const float* input, size_t in_plane, const void* packed, float* output,
                       size_t out_plane, float out_min, float out_max) {
  const size_t taps = (size_t)s->kernel_h * s->kernel_w;
  for (size_t c = c_begin; c < c_end; c++) {
    const float* w = (const float*)packed + c * (1 + taps);
    const float* plane = input + c * in_plane;
    float* out = output + c * out_plane;
    for (size_t oy = 0; oy < s->out_h; oy++) {
      for (size_t ox = 0; ox < s->out_w; ox++) {
        out[oy * s->out_w + ox] = clampf(dw_pixel(s, plane, w, oy, ox), out_min, out_max);
      }
    }
  }
}

void spnn_f32_dwconv_generic(const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,
                             const float* input, const void* packed, float* output,
                             float out_min, float out_max) {
  dw_generic(s, c_begin, c_end, input, (size_t)s->in_h * s->in_w, packed, output,
             (size_t)s->out_h * s->out_w, out_min, out_max);
}

/* Four pixels starting at p with stride S (S = 1 or 2); reads p[0 .. 4*S - 1]. */
SPNN_INLINE v128_t load_strided(const float* p, size_t S) {
  if (S == 1) return wasm_v128_load(p);
  return wasm_i32x4_shuffle(wasm_v128_load(p), wasm_v128_load(p + 4), 0, 2, 4, 6);
}

/* Direct kernel for rows too wide for the ring: square K x K, stride S, dilation 1. */
SPNN_INLINE void dw_kxk_direct(size_t K, size_t S, const spnn_dwconv_shape* s, size_t c_begin,
                               size_t c_end, const float* input, size_t in_plane,
                               const void* packed, float* output, size_t out_plane,
                               float out_min, float out_max) {
  const size_t in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
  const long pt = (long)s->pad_top, pl = (long)s->pad_left;
  const v128_t vmin = wasm_f32x4_splat(out_min), vmax = wasm_f32x4_splat(out_max);

  /* Output columns [ox_lo, ox_hi) are computed four at a time: the first tap is at or
   * right of column 0 and every load (4*S floats from the last tap) ends inside the row. */
  const size_t ox_lo = (size_t)((pl + (long)S - 1) / (long)S);
  size_t groups = 0;
  const long room = (long)in_w - (long)K - 4 * (long)S + 1 + pl; /* last start * S */
  if (room >= 0 && (size_t)(room / (long)S) >= ox_lo && out_w >= ox_lo + 4) {
    groups = ((size_t)(room / (long)S) - ox_lo) / 4 + 1;
    if (groups > (out_w - ox_lo) / 4) groups = (out_w - ox_lo) / 4;
  }
  const size_t ox_hi = ox_lo + 4 * groups;

  for (size_t c = c_begin; c < c_end; c++) {
    const float* w = (const float*)packed + c * (1 + K * K);
    const float* plane = input + c * in_plane;
    float* out = output + c * out_plane;
    const v128_t vbias = wasm_v128_load32_splat(w);
    for (size_t oy = 0; oy < out_h; oy++) {
      float* orow = out + oy * out_w;
      const long iy0 = (long)(oy * S) - pt;
      const size_t ky_lo = iy0 < 0 ? (size_t)(-iy0) : 0;
      size_t ky_hi = K;
      if (iy0 + (long)K > (long)in_h) ky_hi = iy0 >= (long)in_h ? 0 : (size_t)((long)in_h - iy0);
      for (size_t ox = 0; ox < ox_lo && ox < out_w; ox++) {
        orow[ox] = clampf(dw_pixel(s, plane, w, oy, ox), out_min, out_max);
      }
      for (size_t ox = ox_lo; ox < ox_hi; ox += 4) {
        v128_t acc = vbias;
        const float* base = plane + (ox * S - (size_t)pl);
        for (size_t ky = ky_lo; ky < ky_hi; ky++) {
          const float* row = base + (size_t)(iy0 + (long)ky) * in_w;
          const float* wk = w + 1 + ky * K;
          for (size_t kx = 0; kx < K; kx++) {
            acc = spnn_madd(acc, load_strided(row + kx, S), wasm_v128_load32_splat(wk + kx));
          }
        }
        wasm_v128_store(orow + ox, spnn_clamp(acc, vmin, vmax));
      }
      for (size_t ox = ox_hi; ox < out_w; ox++) {
        orow[ox] = clampf(dw_pixel(s, plane, w, oy, ox), out_min, out_max);
      }
    }
  }
}

/* Floats in one padded ring row (stride 2: both halves); a row of the zero row's size. */
#define DW_ROW_MAX 1024
static const float dw_zero_row[DW_ROW_MAX];

/* Eight input floats `src` that land at padded columns i .. i+7: to the even and odd
 * halves with two shuffles. */
SPNN_INLINE void dw_split8(const float* src, size_t i, float* even, float* odd) {
  const v128_t a = wasm_v128_load(src), b = wasm_v128_load(src + 4);
  const v128_t ev = wasm_i32x4_shuffle(a, b, 0, 2, 4, 6);
  const v128_t od = wasm_i32x4_shuffle(a, b, 1, 3, 5, 7);
  if (i & 1) {
    wasm_v128_store(odd + i / 2, ev);
    wasm_v128_store(even + i / 2 + 1, od);
  } else {
    wasm_v128_store(even + i / 2, ev);
    wasm_v128_store(odd + i / 2, od);
  }
}

/* Copies input row `src` (in_w floats) into `dst` as the interior of the padded row P of
 * `len` floats: P[x] = src[x - pl] inside the input; the zeros around it are already in
 * place (they never move, so the ring is cleared once per call). With S == 2 `dst` holds
 * P's even columns then its odd columns (len / 2 each), so each tap of a stride-2 output
 * is one load. */
SPNN_INLINE void dw_copy_row(size_t S, const float* src, size_t in_w, size_t pl, size_t len,
                             float* dst) {
  const size_t left = pl < len ? pl : len;
  const size_t n = pl < len ? (in_w < len - pl ? in_w : len - pl) : 0;
  size_t x = 0;
  if (S == 1) {
    for (; x + 4 <= n; x += 4) {
      wasm_v128_store(dst + left + x, wasm_v128_load(src + x));
      SPNN_NOT_A_MEMCPY();
    }
    if (x < n && n >= 4) {
      /* the last four floats of the row again: no scalar tail, no read past the row */
      wasm_v128_store(dst + left + n - 4, wasm_v128_load(src + n - 4));
    } else {
      for (; x < n; x++) dst[left + x] = src[x];
    }
    return;
  }
  /* P[i] goes to dst[(i & 1) * half + i / 2]. */
  const size_t half = len / 2;
  float* even = dst;
  float* odd = dst + half;
  for (; x + 8 <= n; x += 8) dw_split8(src + x, left + x, even, odd);
  if (x < n && n >= 8) {
    dw_split8(src + n - 8, left + n - 8, even, odd); /* the last eight again */
  } else {
    for (; x < n; x++) dst[((left + x) & 1) * half + (left + x) / 2] = src[x];
  }
}

/* The first n (1 to 3) lanes of v: a 2-lane store and/or a 1-lane store. */
SPNN_INLINE void dw_store_tail(float* p, v128_t v, size_t n) {
  if (n >= 2) wasm_v128_store64_lane(p, v, 0);
  if (n == 1) wasm_v128_store32_lane(p, v, 0);
  if (n == 3) wasm_v128_store32_lane(p + 2, v, 2);
}

/* NR (1 or 2) output rows, U groups of four pixels each at a time: NR*U independent sums
 * hide the add latency, and the two rows share their input loads. `rows` holds the
 * K + S*(NR-1) padded input rows; groups past `groups` are computed from the zero padding
 * and dropped. */
SPNN_INLINE void dw_rows(size_t K, size_t S, size_t U, size_t NR, const float* const* rows,
                         size_t half, const float* w, size_t groups, size_t tail, v128_t vmin,
                         v128_t vmax, float* orow, size_t out_w) {
  const v128_t vbias = wasm_v128_load32_splat(w);
  for (size_t g0 = 0; g0 < groups; g0 += U) {
    v128_t acc[2][4];
    for (size_t r = 0; r < NR; r++)
      for (size_t u = 0; u < U; u++) acc[r][u] = vbias;
    /* Input row i feeds kernel row i of output row 0 and kernel row i - S of output row 1;
     * each sum still runs bias, then kernel rows top down, each left to right. */
    for (size_t i = 0; i < K + S * (NR - 1); i++) {
      for (size_t kx = 0; kx < K; kx++) {
        /* P[S*ox + kx]: stride 2 reads the even (kx even) or the odd half. */
        const float* p = S == 1 ? rows[i] + 4 * g0 + kx
                                : rows[i] + (kx & 1) * half + 4 * g0 + kx / 2;
        v128_t x[4];
        for (size_t u = 0; u < U; u++) x[u] = wasm_v128_load(p + 4 * u);
        for (size_t r = 0; r < NR; r++) {
          if (i < S * r || i - S * r >= K) continue;
          const v128_t wv = wasm_v128_load32_splat(w + 1 + (i - S * r) * K + kx);
          for (size_t u = 0; u < U; u++) acc[r][u] = spnn_madd(acc[r][u], x[u], wv);
        }
      }
    }
    for (size_t r = 0; r < NR; r++) {
      for (size_t u = 0; u < U; u++) {
        const size_t g = g0 + u;
        const v128_t v = spnn_clamp(acc[r][u], vmin, vmax);
        float* o = orow + r * out_w + 4 * g;
        if (g + 1 < groups || (g + 1 == groups && tail == 4)) {
          wasm_v128_store(o, v);
        } else if (g + 1 == groups) {
          dw_store_tail(o, v, tail);
        }
      }
    }
  }
}

/* Planes up to 128x128, stride 1 or 2: the output plane is treated as one long row. Each tap
 * (ky, kx) of output pixel q reads a prepared source at q + off[tap], so four pixels are
 * one vector whatever the row width (a 7- or 14-wide row no longer leaves lanes idle or
 * pays per-row set-up):
 *   stride 1: the input plane itself (copied between zeros), off = (ky - pt) * W + kx - pl;
 *   stride 2: the input plane split into its four phases (even/odd rows x even/odd
 *     columns), each a plane of the output's width, so input (2y + a, 2x + b) sits in
 *     phase (a, b) at y * Wo + x and every tap is again one offset.
 * Taps that would wrap into the row before or after are cut by a column mask: each kernel
 * column is summed top down, masked (AND, so even a NaN read across the edge becomes +0),
 * then added; rows above and below read zeros. Every pixel sums bias, then kernel columns
 * left to right, each top down, whatever the channel split.
 *
 * Input plane pixels: 3x3 up to 128 x 128 (MobileNet's 112x112 planes); 5x5 up to 64 x 64
 * (on wider planes the row kernel's loads shared by two output rows win). */
#define DW_FLAT_MAX_PIXELS 16384
#define DW_FLAT_MAX_PIXELS_5X5 4096
#define DW_FLAT_MAX_W 128       /* output row */
#ifndef DW_FLAT_U
#define DW_FLAT_U 6 /* vectors per step: 2U + 2 vector registers, under the 16 of x86 */
#endif
#define DW_FLAT_EDGE (4 * DW_FLAT_MAX_W + 8 + 4 * DW_FLAT_U) /* zeros around a plane, mask length */

typedef struct dw_flat_plan {
  size_t wo, period;            /* output row; the masks' period, lcm(wo, 4) */
  ptrdiff_t first;              /* stride 1: tap (0, 0) from the source at pixel q */
  ptrdiff_t off[25];            /* stride 2: per tap, from the source at pixel q */
  int dx[5];                    /* per kernel column: output columns it reaches left or right */
  uint32_t mask[5][DW_FLAT_EDGE]; /* per kernel column with dx != 0: lanes inside the row */
} dw_flat_plan;

/* floor(a / 2) for small signed a */
SPNN_INLINE long dw_half_floor(long a) { return a >= 0 ? a / 2 : -((1 - a) / 2); }

/* Stride 2: where a phase's first row starts (after the zeros that taps above and left of
 * it read), and the floats of one phase (those zeros, the rows taps read, zeros after). */
#define DW_FLAT_PHASE_MAX (DW_FLAT_MAX_PIXELS / 4 + 4 * DW_FLAT_EDGE)
SPNN_INLINE size_t dw_phase_front(const spnn_dwconv_shape* s) {
  return ((size_t)(-dw_half_floor(-(long)s->pad_top)) * s->out_w +
          (size_t)(-dw_half_floor(-(long)s->pad_left)) + 3) & ~(size_t)3;
}
SPNN_INLINE size_t dw_phase_stride(size_t K, const spnn_dwconv_shape* s) {
  const size_t rows = s->out_h + (size_t)dw_half_floor((long)K - 1 - (long)s->pad_top);
  const size_t dx_hi = (size_t)dw_half_floor((long)K - 1 - (long)s->pad_left);
  return (dw_phase_front(s) + rows * s->out_w + dx_hi + 4 + 3) & ~(size_t)3;
}

SPNN_INLINE int dw_flat_fits(size_t K, size_t S, const spnn_dwconv_shape* s) {
  const size_t max_pixels = K <= 3 ? DW_FLAT_MAX_PIXELS : DW_FLAT_MAX_PIXELS_5X5;
  if ((size_t)s->in_h * s->in_w > max_pixels || s->pad_top >= K || s->pad_left >= K) return 0;
  /* stride 1: rows of the output's width; taps reach at most K - 1 zero rows below the input */
  if (S == 1)
    return s->out_w == s->in_w && s->in_w <= DW_FLAT_MAX_W && s->out_h <= s->in_h + s->pad_top;
  /* stride 2: every input column lands in a phase column below out_w */
  return s->in_w <= 2 * s->out_w && s->out_w <= DW_FLAT_MAX_W &&
         dw_phase_stride(K, s) <= DW_FLAT_PHASE_MAX;
}

/* Column masks over one period of the lane pattern and one step more, so a step starting
 * anywhere in the period reads them without wrapping. */
SPNN_INLINE void dw_flat_masks(size_t K, dw_flat_plan* p) {
  p->period = p->wo % 4 == 0 ? p->wo : p->wo % 2 == 0 ? 2 * p->wo : 4 * p->wo;
  for (size_t kx = 0; kx < K; kx++) {
    if (p->dx[kx] == 0) continue;
    for (size_t i = 0; i < p->period + 4 * DW_FLAT_U; i++) {
      const long x = (long)(i % p->wo) + p->dx[kx];
      p->mask[kx][i] = x >= 0 && x < (long)p->wo ? 0xFFFFFFFFu : 0u;
    }
  }
}

/* Where tap (ky, kx) of pixel q reads; `src` is the source moved to q. Stride 1 computes it
 * (row steps of wo), which keeps the table out of the inner loop. */
SPNN_INLINE const float* dw_flat_tap(size_t K, size_t S, const dw_flat_plan* p,
                                     const float* src, size_t ky, size_t kx) {
  if (S == 1) return src + p->first + ky * p->wo + kx;
  return src + p->off[ky * K + kx];
}

/* U output vectors at flattened pixel q: `src` is the source moved to q, `m` = q mod period. */
SPNN_INLINE void dw_flat_step(size_t K, size_t S, size_t U, const dw_flat_plan* p, const float* src,
                              const float* w, size_t m, v128_t vmin, v128_t vmax, float* out,
                              size_t tail) {
  v128_t acc[DW_FLAT_U];
  const v128_t vbias = wasm_v128_load32_splat(w);
  for (size_t u = 0; u < U; u++) acc[u] = vbias;
  for (size_t kx = 0; kx < K; kx++) {
    if (p->dx[kx] == 0) { /* stays inside the row */
      for (size_t ky = 0; ky < K; ky++) {
        const float* x = dw_flat_tap(K, S, p, src, ky, kx);
        const v128_t wv = wasm_v128_load32_splat(w + 1 + ky * K + kx);
        for (size_t u = 0; u < U; u++) acc[u] = spnn_madd(acc[u], wasm_v128_load(x + 4 * u), wv);
      }
      continue;
    }
    v128_t t[DW_FLAT_U];
    const float* x0 = dw_flat_tap(K, S, p, src, 0, kx);
    const v128_t w0 = wasm_v128_load32_splat(w + 1 + kx);
    for (size_t u = 0; u < U; u++) t[u] = wasm_f32x4_mul(wasm_v128_load(x0 + 4 * u), w0);
    for (size_t ky = 1; ky < K; ky++) {
      const float* x = dw_flat_tap(K, S, p, src, ky, kx);
      const v128_t wv = wasm_v128_load32_splat(w + 1 + ky * K + kx);
      for (size_t u = 0; u < U; u++) t[u] = spnn_madd(t[u], wasm_v128_load(x + 4 * u), wv);
    }
    const uint32_t* mk = p->mask[kx] + m;
    for (size_t u = 0; u < U; u++)
      acc[u] = wasm_f32x4_add(acc[u], wasm_v128_and(t[u], wasm_v128_load(mk + 4 * u)));
  }
  for (size_t u = 0; u < U; u++) {
    const v128_t v = spnn_clamp(acc[u], vmin, vmax);
    if (tail == 4) wasm_v128_store(out + 4 * u, v);
    else dw_store_tail(out + 4 * u, v, tail);
  }
}

/* n output pixels of one channel, the first of them at m0 = its index mod the period. */
SPNN_INLINE void dw_flat_plane(size_t K, size_t S, const dw_flat_plan* p, const float* src,
                               const float* w, float* out, size_t n, size_t m0, v128_t vmin,
                               v128_t vmax) {
  size_t q = 0, m = m0;
  for (; q + 4 * DW_FLAT_U <= n; q += 4 * DW_FLAT_U) {
    dw_flat_step(K, S, DW_FLAT_U, p, src + q, w, m, vmin, vmax, out + q, 4);
    for (m += 4 * DW_FLAT_U; m >= p->period;) m -= p->period;
  }
  for (; q < n; q += 4) {
    dw_flat_step(K, S, 1, p, src + q, w, m, vmin, vmax, out + q, n - q < 4 ? n - q : 4);
    if ((m += 4) >= p->period) m -= p->period;
  }
}

/* Stride 1, rows a multiple of 4 wide, two at a time (dw_pair_step) with relaxed SIMD: with fused multiply-adds the
 * kernel waits on its loads, which sharing input rows cuts by a third; with separate
 * multiplies and adds it waits on the arithmetic, and the pair step's three vectors per row
 * (against six) lose. */
#ifdef SPNN_RELAXED_SIMD
#define DW_PAIR_ROWS 1
#else
#define DW_PAIR_ROWS 0
#endif

/* Stride 1, output rows r and r + 1 (rows a multiple of 4 wide), U vectors of each from
 * column x: each input row r - pt .. r - pt + K is loaded once for both output rows (K + 1
 * rows of loads for two rows of output instead of 2K). `in` is the input at row r - pt,
 * column x - pl. Each pixel sums as in dw_flat_step (bias, then kernel columns left to
 * right, each top down, masked where it crosses a row end), so the results are the same. */
SPNN_INLINE void dw_pair_step(size_t K, size_t U, const dw_flat_plan* p, const float* in,
                              size_t W, const float* w, size_t x, v128_t vmin, v128_t vmax,
                              float* out) {
  v128_t a0[3], a1[3];
  const v128_t vbias = wasm_v128_load32_splat(w);
  for (size_t u = 0; u < U; u++) a0[u] = a1[u] = vbias;
  for (size_t kx = 0; kx < K; kx++) {
    const float* col = in + kx;
    const float* wk = w + 1 + kx; /* tap (ky, kx) at wk[ky * K] */
    if (p->dx[kx] == 0) { /* stays inside the row */
      for (size_t i = 0; i <= K; i++) {
        v128_t v[3];
        for (size_t u = 0; u < U; u++) v[u] = wasm_v128_load(col + i * W + 4 * u);
        if (i < K) {
          const v128_t wv = wasm_v128_load32_splat(wk + i * K);
          for (size_t u = 0; u < U; u++) a0[u] = spnn_madd(a0[u], v[u], wv);
        }
        if (i > 0) {
          const v128_t wv = wasm_v128_load32_splat(wk + (i - 1) * K);
          for (size_t u = 0; u < U; u++) a1[u] = spnn_madd(a1[u], v[u], wv);
        }
      }
      continue;
    }
    v128_t t0[3], t1[3];
    for (size_t i = 0; i <= K; i++) {
      v128_t v[3];
      for (size_t u = 0; u < U; u++) v[u] = wasm_v128_load(col + i * W + 4 * u);
      if (i < K) {
        const v128_t wv = wasm_v128_load32_splat(wk + i * K);
        for (size_t u = 0; u < U; u++)
          t0[u] = i == 0 ? wasm_f32x4_mul(v[u], wv) : spnn_madd(t0[u], v[u], wv);
      }
      if (i > 0) {
        const v128_t wv = wasm_v128_load32_splat(wk + (i - 1) * K);
        for (size_t u = 0; u < U; u++)
          t1[u] = i == 1 ? wasm_f32x4_mul(v[u], wv) : spnn_madd(t1[u], v[u], wv);
      }
    }
    const uint32_t* mk = p->mask[kx] + x; /* the period is W: the mask of column x */
    for (size_t u = 0; u < U; u++) {
      const v128_t m = wasm_v128_load(mk + 4 * u);
      a0[u] = wasm_f32x4_add(a0[u], wasm_v128_and(t0[u], m));
      a1[u] = wasm_f32x4_add(a1[u], wasm_v128_and(t1[u], m));
    }
  }
  for (size_t u = 0; u < U; u++) {
    wasm_v128_store(out + 4 * u, spnn_clamp(a0[u], vmin, vmax));
    wasm_v128_store(out + W + 4 * u, spnn_clamp(a1[u], vmin, vmax));
  }
}

/* Output rows [r_lo, r_hi) of one channel, two at a time (a last odd row alone); `src` is
 * the source moved to output pixel 0, as for dw_flat_plane. */
SPNN_INLINE void dw_pair_rows(size_t K, const dw_flat_plan* p, const float* src,
                              const float* w, float* out, size_t r_lo, size_t r_hi, v128_t vmin,
                              v128_t vmax) {
  const size_t W = p->wo;
  size_t r = r_lo;
  for (; r + 2 <= r_hi; r += 2) {
    const float* in = src + (ptrdiff_t)(r * W) + p->first;
    float* o = out + r * W;
    size_t x = 0;
    for (; x + 12 <= W; x += 12) dw_pair_step(K, 3, p, in + x, W, w, x, vmin, vmax, o + x);
    if (x + 8 <= W) dw_pair_step(K, 2, p, in + x, W, w, x, vmin, vmax, o + x), x += 8;
    if (x < W) dw_pair_step(K, 1, p, in + x, W, w, x, vmin, vmax, o + x);
  }
  if (r < r_hi) dw_flat_plane(K, 1, p, src + r * W, w, out + r * W, W, 0, vmin, vmax);
}

/* Stride 1, output rows [b0, b1) from a copy of the input rows they read (b0 - pt ..
 * b1 - pt + K - 2) between zeros: rows outside the input are zeros, as are the floats
 * before the first row and after the last that taps left of column 0 or right of the last
 * column read. The zeros are written once per call, the input rows per channel. */
typedef struct dw_band {
  float* origin;     /* input row b0 starts here */
  float* copy_to;    /* where the first copied input row goes */
  size_t copy_from;  /* its offset in the plane */
  size_t copy_count; /* floats copied per channel */
  size_t out_first, n, m0; /* first output pixel, pixels, first pixel mod the period */
} dw_band;

SPNN_INLINE void dw_band_init(size_t K, const spnn_dwconv_shape* s, const dw_flat_plan* p,
                              size_t b0, size_t b1, float* buf, dw_band* band) {
  const size_t W = s->in_w, pt = s->pad_top, pl = s->pad_left;
  const size_t front = (pt * W + pl + 3) & ~(size_t)3;
  const long first = (long)b0 - (long)pt, rows = (long)(b1 - b0 + K - 1);
  const long lo = first > 0 ? first : 0;
  const long hi = first + rows < (long)s->in_h ? first + rows : (long)s->in_h;
  band->origin = buf + front;
  band->copy_to = band->origin + (lo - (long)b0) * (long)W;
  band->copy_from = (size_t)lo * W;
  band->copy_count = hi > lo ? (size_t)(hi - lo) * W : 0;
  band->out_first = b0 * W;
  band->n = (b1 - b0) * W;
  band->m0 = b0 * W % p->period;
  /* every float a tap may read: up to row b1 - pt + K - 2, then K - 1 - pl + 3 floats */
  memset(buf, 0, (front + (b1 - b0 + K - pt) * W + K + 4) * sizeof(float));
}

SPNN_INLINE void dw_band_run(size_t K, const dw_flat_plan* p, const dw_band* band,
                             const float* plane, const float* w, float* out, v128_t vmin,
                             v128_t vmax) {
  spnn_copy_floats(band->copy_to, plane + band->copy_from, band->copy_count);
  /* a copied plane two rows at a time: 5x5 only (3x3 gained in the kernel benchmark but
   * not in whole models) */
  if (DW_PAIR_ROWS && K == 5 && p->wo % 4 == 0) {
    dw_pair_rows(K, p, band->origin, w, out + band->out_first, 0, band->n / p->wo, vmin, vmax);
  } else {
    dw_flat_plane(K, 1, p, band->origin, w, out + band->out_first, band->n, band->m0, vmin,
                  vmax);
  }
}

/* Planes (or bands of rows) from this many pixels read their middle rows in place; smaller
 * ones are copied whole (a 14x14 plane: three runs, each with its partial vectors, cost more
 * than the copy). 28x28 planes and the 16-row bands of a 56-wide block read in place
 * (docs/benchmarks.md). */
#ifndef DW_SPLIT_MIN_PIXELS
#define DW_SPLIT_MIN_PIXELS 512
#endif

/* Stride 1. Output rows [r_lo, r_hi) read only rows inside the input, with a row to spare
 * above and below for the taps that cross a row end (their lanes are masked, but read):
 * they read the input plane itself. The rows above and below them (at most K each) are
 * computed from padded copies, so most of the plane is not copied. */
SPNN_INLINE void dw_flat_s1(size_t K, const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,
                            const float* input, size_t in_plane, const void* packed,
                            float* output, size_t out_plane, float out_min, float out_max) {
  const size_t W = s->in_w, out_h = s->out_h;
  const size_t pt = s->pad_top, pl = s->pad_left;
  const v128_t vmin = wasm_f32x4_splat(out_min), vmax = wasm_f32x4_splat(out_max);
  dw_flat_plan p;
  p.wo = W;
  p.first = -(ptrdiff_t)(pt * W + pl);
  for (size_t kx = 0; kx < K; kx++) p.dx[kx] = (int)kx - (int)pl;
  dw_flat_masks(K, &p);
  size_t r_lo = pt + 1, r_hi = s->in_h + pt > K ? s->in_h + pt - K : 0;
  if (r_hi > out_h) r_hi = out_h;
  /* All rows from one copy where the plane is small (DW_SPLIT_MIN_PIXELS). */
  if (r_hi <= r_lo || W < K + 2 || (size_t)s->in_h * W < DW_SPLIT_MIN_PIXELS) r_lo = r_hi = out_h;
  float top[2 * DW_FLAT_EDGE + DW_FLAT_MAX_PIXELS + 5 * DW_FLAT_MAX_W] __attribute__((aligned(16)));
  float bottom[2 * DW_FLAT_EDGE + 2 * 5 * DW_FLAT_MAX_W] __attribute__((aligned(16)));
  dw_band above, below;
  dw_band_init(K, s, &p, 0, r_lo, top, &above);
  dw_band_init(K, s, &p, r_hi, out_h, bottom, &below);
  const size_t m_lo = r_lo * W % p.period;
  for (size_t c = c_begin; c < c_end; c++) {
    const float* plane = input + c * in_plane;
    const float* w = (const float*)packed + c * (1 + K * K);
    float* out = output + c * out_plane;
    dw_band_run(K, &p, &above, plane, w, out, vmin, vmax);
    if (r_hi > r_lo) {
      if (DW_PAIR_ROWS && W % 4 == 0) {
        dw_pair_rows(K, &p, plane, w, out, r_lo, r_hi, vmin, vmax);
      } else {
        dw_flat_plane(K, 1, &p, plane + r_lo * W, w, out + r_lo * W, (r_hi - r_lo) * W,
                      m_lo, vmin, vmax);
      }
      dw_band_run(K, &p, &below, plane, w, out, vmin, vmax);
    }
  }
}

/* Eight input floats to four of the even and four of the odd columns. */
SPNN_INLINE void dw_split_phases(const float* src, float* even, float* odd) {
  const v128_t a = wasm_v128_load(src), b = wasm_v128_load(src + 4);
  wasm_v128_store(even, wasm_i32x4_shuffle(a, b, 0, 2, 4, 6));
  wasm_v128_store(odd, wasm_i32x4_shuffle(a, b, 1, 3, 5, 7));
}

SPNN_INLINE void dw_flat_s2(size_t K, const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,
                            const float* input, size_t in_plane, const void* packed,
                            float* output, size_t out_plane, float out_min, float out_max) {
  const size_t H = s->in_h, W = s->in_w, Ho = s->out_h, Wo = s->out_w;
  const long pt = (long)s->pad_top, pl = (long)s->pad_left;
  const v128_t vmin = wasm_f32x4_splat(out_min), vmax = wasm_f32x4_splat(out_max);
  /* Tap (ky, kx) reads input row 2 * oy + ky - pt = 2 * (oy + my) + a and column
   * 2 * ox + kx - pl = 2 * (ox + dx) + b: phase (a, b), my rows and dx columns away. */
  const size_t rows = Ho + (size_t)dw_half_floor((long)K - 1 - pt); /* phase rows read */
  const size_t front = dw_phase_front(s), stride = dw_phase_stride(K, s);
  dw_flat_plan p;
  p.wo = Wo;
  for (size_t ky = 0; ky < K; ky++) {
    for (size_t kx = 0; kx < K; kx++) {
      const long r = (long)ky - pt, c = (long)kx - pl;
      const long my = dw_half_floor(r), dx = dw_half_floor(c);
      const size_t phase = (size_t)(r - 2 * my) * 2 + (size_t)(c - 2 * dx);
      p.off[ky * K + kx] = (ptrdiff_t)(phase * stride) + my * (ptrdiff_t)Wo + dx;
      if (ky == 0) p.dx[kx] = (int)dx;
    }
  }
  dw_flat_masks(K, &p);
  /* Four phases, each: zeros, `rows` rows of Wo, zeros. Only the places an input pixel
   * lands in are rewritten per channel; the rest stays zero. */
  float buf[4 * DW_FLAT_PHASE_MAX] __attribute__((aligned(16)));
  memset(buf, 0, 4 * stride * sizeof(float));
  const size_t in_rows = H < 2 * rows ? H : 2 * rows;
  for (size_t c = c_begin; c < c_end; c++) {
    const float* plane = input + c * in_plane;
    for (size_t iy = 0; iy < in_rows; iy++) {
      const float* src = plane + iy * W;
      float* even = buf + (iy & 1) * 2 * stride + front + (iy / 2) * Wo;
      float* odd = even + stride;
      size_t x = 0;
      for (; x + 8 <= W; x += 8) dw_split_phases(src + x, even + x / 2, odd + x / 2);
      if (x < W && W >= 8) {
        /* the last eight (from an even column) again, then at most one odd-width column */
        x = (W - 8) & ~(size_t)1;
        dw_split_phases(src + x, even + x / 2, odd + x / 2);
        x += 8;
      }
      for (; x < W; x++) (x & 1 ? odd : even)[x / 2] = src[x];
    }
    dw_flat_plane(K, 2, &p, buf + front, (const float*)packed + c * (1 + K * K),
                  output + c * out_plane, Ho * Wo, 0, vmin, vmax);
  }
}

/* ---- Small planes, four channels at a time ---------------------------------------------
 * On planes of a few hundred pixels (MobileNet's 14x14 and 7x7) the kernels above spend
 * much of their time at row ends (masks, partial vectors, a copy per channel). Here four
 * channels are transposed into one zero-padded grid of vectors, one vector per pixel with
 * the four channels in its lanes, so that every tap of every pixel, at the borders too, is
 * one aligned load and one multiply-add with the four channels' weight for that tap, and
 * stride 2 needs no phases. Each output row is transposed back, four pixels at a time.
 * Every pixel sums bias, then kernel columns left to right, each top down into a sum of its
 * own, whatever the channel split (a last group of fewer than four channels fills its
 * other lanes with zeros). */
#define DW4_MAX_W 32       /* input and output rows */
#define DW4_MAX_GRID 1200  /* vectors in the padded grid */
/* Input planes up to this many pixels (28x28; larger ones run as fast in the kernels
 * above). Stride 1 with separate multiplies and adds (SIMD128) only up to 128 pixels (7x7):
 * from 14x14 the kernels above are as fast there (docs/benchmarks.md). */
#ifndef DW4_MAX_PIXELS
#define DW4_MAX_PIXELS 1024
#endif
#ifndef DW4_MAX_PIXELS_S1
#ifdef SPNN_RELAXED_SIMD
#define DW4_MAX_PIXELS_S1 DW4_MAX_PIXELS
#else
#define DW4_MAX_PIXELS_S1 128
#endif
#endif

/* The padded grid: input (iy, ix) at row iy + pad_top, column ix + pad_left. */
SPNN_INLINE size_t dw4_grid_w(size_t S, const spnn_dwconv_shape* s) {
  const size_t reach = (s->out_w - 1) * S + 3, cover = (size_t)s->in_w + s->pad_left;
  return reach > cover ? reach : cover;
}
SPNN_INLINE size_t dw4_grid_h(size_t S, const spnn_dwconv_shape* s) {
  const size_t reach = (s->out_h - 1) * S + 3, cover = (size_t)s->in_h + s->pad_top;
  return reach > cover ? reach : cover;
}

/* Whether a 3x3 layer of stride S is small enough for the four-channel kernel: its rows,
 * plane, padding before and padded grid. */
static int dw4_fits(size_t S, const spnn_dwconv_shape* s) {
  if (s->in_w < 4 || s->out_w < 4 || s->in_w > DW4_MAX_W || s->out_w > DW4_MAX_W ||
      (size_t)s->in_h * s->in_w > (S == 1 ? DW4_MAX_PIXELS_S1 : DW4_MAX_PIXELS) ||
      s->pad_top > 2 || s->pad_left > 2)
    return 0;
  return dw4_grid_w(S, s) * dw4_grid_h(S, s) <= DW4_MAX_GRID;
}

/* Whether a layer takes the four-channel kernel: 3x3, stride 1 or 2, dilation 1, a small
 * plane, and not a stride-2 layer that may read split rows instead (whose kernel gives the
 * bits of the whole-plane one). */
static int dw4_takes(const spnn_dwconv_shape* s) {
  const size_t S = s->stride_h;
  return s->kernel_h == 3 && s->kernel_w == 3 && s->stride_w == S && (S == 1 || S == 2) &&
         s->dilation_h == 1 && s->dilation_w == 1 && dw4_fits(S, s) &&
         !spnn_dwconv_reads_split(s);
}

/* In place: rows a, b, c, d (four lanes each) become the columns. */
SPNN_INLINE void dw4_transpose(v128_t* a, v128_t* b, v128_t* c, v128_t* d) {
  const v128_t ab_lo = wasm_i32x4_shuffle(*a, *b, 0, 4, 1, 5);
  const v128_t ab_hi = wasm_i32x4_shuffle(*a, *b, 2, 6, 3, 7);
  const v128_t cd_lo = wasm_i32x4_shuffle(*c, *d, 0, 4, 1, 5);
  const v128_t cd_hi = wasm_i32x4_shuffle(*c, *d, 2, 6, 3, 7);
  *a = wasm_i32x4_shuffle(ab_lo, cd_lo, 0, 1, 4, 5);
  *b = wasm_i32x4_shuffle(ab_lo, cd_lo, 2, 3, 6, 7);
  *c = wasm_i32x4_shuffle(ab_hi, cd_hi, 0, 1, 4, 5);
  *d = wasm_i32x4_shuffle(ab_hi, cd_hi, 2, 3, 6, 7);
}

/* Columns from where four pixels start, so that a row of n >= 4 is covered by groups of
 * four: every fourth column, then the last four (which may overlap the group before). */
SPNN_INLINE size_t dw4_group_at(size_t x, size_t n) { return x + 4 <= n ? x : n - 4; }

SPNN_INLINE void dw4_kxk(size_t S, const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,
                         const float* input, size_t in_plane, const void* packed, float* output,
                         size_t out_plane, float out_min, float out_max) {
  const size_t W = s->in_w, Wo = s->out_w, Ho = s->out_h;
  const size_t GW = dw4_grid_w(S, s), GH = dw4_grid_h(S, s);
  const size_t pt = s->pad_top, pl = s->pad_left;
  const v128_t vmin = wasm_f32x4_splat(out_min), vmax = wasm_f32x4_splat(out_max);
  v128_t grid[DW4_MAX_GRID];
  v128_t row[DW4_MAX_W];
  static const float zeros[DW4_MAX_W];
  for (size_t i = 0; i < GW * GH; i++) grid[i] = wasm_f32x4_splat(0.0f); /* the borders */
  for (size_t c0 = c_begin; c0 < c_end; c0 += 4) {
    const size_t n = c_end - c0 < 4 ? c_end - c0 : 4; /* channels in this group */
    /* the four channels' bias and taps, one vector each */
    float wt[10][4];
    for (size_t j = 0; j < 4; j++) {
      const float* w = (const float*)packed + (c0 + (j < n ? j : 0)) * 10;
      for (size_t t = 0; t < 10; t++) wt[t][j] = j < n ? w[t] : 0.0f;
    }
    v128_t wv[10];
    for (size_t t = 0; t < 10; t++) wv[t] = wasm_v128_load(wt[t]);
    /* the input, transposed into the grid */
    const float* planes[4];
    for (size_t j = 0; j < 4; j++) planes[j] = j < n ? input + (c0 + j) * in_plane : NULL;
    for (size_t iy = 0; iy < s->in_h; iy++) {
      const float* src[4];
      for (size_t j = 0; j < 4; j++) src[j] = planes[j] ? planes[j] + iy * W : zeros;
      v128_t* g = grid + (iy + pt) * GW + pl;
      for (size_t x0 = 0; x0 < W; x0 += 4) {
        const size_t x = dw4_group_at(x0, W);
        v128_t a = wasm_v128_load(src[0] + x), b = wasm_v128_load(src[1] + x);
        v128_t c = wasm_v128_load(src[2] + x), d = wasm_v128_load(src[3] + x);
        dw4_transpose(&a, &b, &c, &d);
        g[x] = a, g[x + 1] = b, g[x + 2] = c, g[x + 3] = d;
      }
    }
    for (size_t oy = 0; oy < Ho; oy++) {
      const v128_t* top = grid + oy * S * GW;
      if (S == 1) {
        /* Column c of the grid is tap column 0 of pixel c, 1 of pixel c - 1 and 2 of pixel
         * c - 2: its three vectors are loaded once, for the three pixels' sums. */
        v128_t a1 = wv[0], a2 = wv[0]; /* pixels c - 1 and c - 2 */
        for (size_t c = 0; c < Wo + 2; c++) {
          const v128_t x0 = top[c], x1 = top[GW + c], x2 = top[2 * GW + c];
          v128_t t2 = wasm_f32x4_mul(x0, wv[3]);
          t2 = spnn_madd(t2, x1, wv[6]);
          t2 = spnn_madd(t2, x2, wv[9]);
          if (c >= 2) row[c - 2] = spnn_clamp(wasm_f32x4_add(a2, t2), vmin, vmax);
          v128_t t1 = wasm_f32x4_mul(x0, wv[2]);
          t1 = spnn_madd(t1, x1, wv[5]);
          t1 = spnn_madd(t1, x2, wv[8]);
          a2 = wasm_f32x4_add(a1, t1);
          v128_t t0 = wasm_f32x4_mul(x0, wv[1]);
          t0 = spnn_madd(t0, x1, wv[4]);
          t0 = spnn_madd(t0, x2, wv[7]);
          a1 = wasm_f32x4_add(wv[0], t0);
        }
      } else {
        for (size_t ox = 0; ox < Wo; ox++) {
          const v128_t* x = top + ox * S;
          v128_t acc = wv[0];
          for (size_t kx = 0; kx < 3; kx++) {
            v128_t t = wasm_f32x4_mul(x[kx], wv[1 + kx]);
            t = spnn_madd(t, x[GW + kx], wv[4 + kx]);
            t = spnn_madd(t, x[2 * GW + kx], wv[7 + kx]);
            acc = wasm_f32x4_add(acc, t);
          }
          row[ox] = spnn_clamp(acc, vmin, vmax);
        }
      }
      /* back to one row per channel */
      for (size_t x0 = 0; x0 < Wo; x0 += 4) {
        const size_t x = dw4_group_at(x0, Wo);
        v128_t a = row[x], b = row[x + 1], c = row[x + 2], d = row[x + 3];
        dw4_transpose(&a, &b, &c, &d);
        float* o = output + c0 * out_plane + oy * Wo + x;
        wasm_v128_store(o, a);
        if (n > 1) wasm_v128_store(o + out_plane, b);
        if (n > 2) wasm_v128_store(o + 2 * out_plane, c);
        if (n > 3) wasm_v128_store(o + 3 * out_plane, d);
      }
    }
  }
}

/* Specialised kernel: square K x K, stride S in both directions, dilation 1. */
SPNN_INLINE void dw_kxk(size_t K, size_t S, int flat, const spnn_dwconv_shape* s,
                        size_t c_begin, size_t c_end, const float* input, size_t in_plane,
                        const void* packed, float* output, size_t out_plane, float out_min,
                        float out_max) {
  if (flat) {
    if (S == 1) {
      dw_flat_s1(K, s, c_begin, c_end, input, in_plane, packed, output, out_plane, out_min,
                 out_max);
    } else {
      dw_flat_s2(K, s, c_begin, c_end, input, in_plane, packed, output, out_plane, out_min,
                 out_max);
    }
    return;
  }
  const size_t in_h = s->in_h, in_w = s->in_w, out_h = s->out_h, out_w = s->out_w;
  const size_t groups = (out_w + 3) / 4;
  const size_t U = groups > 2 ? 4 : 2; /* groups per step */
  /* Padded row length: the last step's last tap reads P[4*S*ceil(groups/U)*U + K - 2]. */
  const size_t len = (4 * S * ((groups + U - 1) / U * U) + K + 7) & ~(size_t)7;
  if (len > DW_ROW_MAX) {
    dw_kxk_direct(K, S, s, c_begin, c_end, input, in_plane, packed, output, out_plane, out_min,
                  out_max);
    return;
  }
  const long pt = (long)s->pad_top;
  const size_t pl = s->pad_left, half = len / S, tail = out_w - 4 * (groups - 1);
  const size_t R = K + S; /* ring slots: the input rows of two output rows */
  const v128_t vmin = wasm_f32x4_splat(out_min), vmax = wasm_f32x4_splat(out_max);
  float ring[7 * DW_ROW_MAX] __attribute__((aligned(16)));
  memset(ring, 0, R * len * sizeof(float));
  /* Input row iy lives in slot (iy + pt) % R: a step's rows start at slot `first`, which
   * moves by 2*S (mod R) per step, so no division per row. */
  const size_t advance = 2 * S % R;

  for (size_t c = c_begin; c < c_end; c++) {
    const float* w = (const float*)packed + c * (1 + K * K);
    const float* plane = input + c * in_plane;
    float* out = output + c * out_plane;
    long ring_row[7] = {-1, -1, -1, -1, -1, -1, -1}; /* input row held by each ring slot */
    size_t first = 0;
    for (size_t oy = 0; oy < out_h; oy += 2) {
      const size_t NR = oy + 1 < out_h ? 2 : 1;
      const float* rows[7];
      for (size_t i = 0; i < K + S * (NR - 1); i++) {
        const long iy = (long)(oy * S) - pt + (long)i;
        if (iy < 0 || iy >= (long)in_h) {
          rows[i] = dw_zero_row;
          continue;
        }
        const size_t slot = first + i < R ? first + i : first + i - R;
        float* r = ring + slot * len;
        if (ring_row[slot] != iy) {
          dw_copy_row(S, plane + (size_t)iy * in_w, in_w, pl, len, r);
          ring_row[slot] = iy;
        }
        rows[i] = r;
      }
      first = first + advance < R ? first + advance : first + advance - R;
      float* orow = out + oy * out_w;
      if (NR == 2) {
        if (U == 4) {
          dw_rows(K, S, 4, 2, rows, half, w, groups, tail, vmin, vmax, orow, out_w);
        } else {
          dw_rows(K, S, 2, 2, rows, half, w, groups, tail, vmin, vmax, orow, out_w);
        }
      } else {
        if (U == 4) {
          dw_rows(K, S, 4, 1, rows, half, w, groups, tail, vmin, vmax, orow, out_w);
        } else {
          dw_rows(K, S, 2, 1, rows, half, w, groups, tail, vmin, vmax, orow, out_w);
        }
      }
    }
  }
}

#ifndef DW_BAND_BYTES
#define DW_BAND_BYTES (16 * 1024)
#endif
/* Output rows per band of a stride-2 layer run band by band (at least 4). */
static size_t dw_band_rows(const spnn_dwconv_shape* s) {
  const size_t band = DW_BAND_BYTES / sizeof(float) / (2 * (size_t)s->in_w);
  return band < 4 ? 4 : band;
}
/* Stride 2 over planes whose four phases would not stay in L1 (112x112 inputs) runs a band
 * of output rows at a time, every channel per band (spnn_f32_dwconv_rows): each channel's
 * phases, written and read back at once, then stay in L1. (Stride 1 copies a plane with one
 * memcpy; cutting it into bands, each with K - 1 rows more, was slower.) */
#define SPNN_DEFINE_DWCONV(K, S)                                                           \
  void spnn_f32_dwconv_##K##x##K##s##S(const spnn_dwconv_shape* s, size_t c_begin,         \
                                       size_t c_end, const float* input,                   \
                                       const void* packed, float* output, float out_min,   \
                                       float out_max) {                                    \
    const int flat = dw_flat_fits(K, S, s);                                                \
    if (!flat || S == 1 || dw_band_rows(s) >= s->out_h) {                                  \
      dw_kxk(K, S, flat, s, c_begin, c_end, input, (size_t)s->in_h * s->in_w, packed,     \
             output, (size_t)s->out_h * s->out_w, out_min, out_max);                       \
      return;                                                                              \
    }                                                                                      \
    spnn_f32_dwconv_rows(s, c_begin, c_end, 0, s->out_h, input, packed, output, out_min,   \
                         out_max);                                                         \
  }

SPNN_DEFINE_DWCONV(3, 1)
SPNN_DEFINE_DWCONV(3, 2)
SPNN_DEFINE_DWCONV(5, 1)
SPNN_DEFINE_DWCONV(5, 2)

/* The four-channel kernel, for the layers dw4_takes. */
#define SPNN_DEFINE_DWCONV4(S)                                                             \
  void spnn_f32_dwconv4_3x3s##S(const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,  \
                                const float* input, const void* packed, float* output,     \
                                float out_min, float out_max) {                            \
    dw4_kxk(S, s, c_begin, c_end, input, (size_t)s->in_h * s->in_w, packed, output,        \
            (size_t)s->out_h * s->out_w, out_min, out_max);                                \
  }
SPNN_DEFINE_DWCONV4(1)
SPNN_DEFINE_DWCONV4(2)

spnn_dwconv_ukernel spnn_dwconv_select(const spnn_dwconv_shape* s) {
  if (dw4_takes(s)) return s->stride_h == 1 ? spnn_f32_dwconv4_3x3s1 : spnn_f32_dwconv4_3x3s2;
  const int square = s->kernel_h == s->kernel_w && s->stride_h == s->stride_w &&
                     s->dilation_h == 1 && s->dilation_w == 1;
  if (square && s->kernel_h == 3 && s->stride_h == 1) return spnn_f32_dwconv_3x3s1;
  if (square && s->kernel_h == 3 && s->stride_h == 2) return spnn_f32_dwconv_3x3s2;
  if (square && s->kernel_h == 5 && s->stride_h == 1) return spnn_f32_dwconv_5x5s1;
  if (square && s->kernel_h == 5 && s->stride_h == 2) return spnn_f32_dwconv_5x5s2;
  return spnn_f32_dwconv_generic;
}

/* Square 3x3 or 5x5, equal strides 1 or 2, dilation 1: the specialised kernels' shapes. */
static int dw_special(const spnn_dwconv_shape* s) {
  return s->kernel_h == s->kernel_w && s->stride_h == s->stride_w && s->dilation_h == 1 &&
         s->dilation_w == 1 && (s->kernel_h == 3 || s->kernel_h == 5) &&
         (s->stride_h == 1 || s->stride_h == 2);
}

void spnn_dwconv_input_rows(const spnn_dwconv_shape* s, size_t row_begin, size_t row_end,
                            size_t* top, size_t* bottom) {
  const long first = (long)(row_begin * s->stride_h) - (long)s->pad_top;
  const long last = (long)((row_end - 1) * s->stride_h) - (long)s->pad_top +
                    (long)((s->kernel_h - 1) * s->dilation_h);
  *top = first > 0 ? (size_t)first : 0;
  *bottom = last + 1 < (long)s->in_h ? (size_t)(last + 1) : s->in_h;
  if (*bottom < *top) *bottom = *top;
}

/* One function per kernel shape, as the whole-plane kernels are: inlined together into one
 * caller, the four made a function Node 20's V8 ran 1.3x slower (docs/benchmarks.md). */
#define SPNN_DEFINE_DW_BAND(K, S)                                                          \
  static __attribute__((noinline)) void dw_band_##K##x##K##s##S(                          \
      int flat, const spnn_dwconv_shape* s, size_t c_begin, size_t c_end, const float* in, \
      size_t in_plane, const void* packed, float* out, size_t out_plane, float out_min,    \
      float out_max) {                                                                     \
    dw_kxk(K, S, flat, s, c_begin, c_end, in, in_plane, packed, out, out_plane, out_min,   \
           out_max);                                                                       \
  }
SPNN_DEFINE_DW_BAND(3, 1)
SPNN_DEFINE_DW_BAND(3, 2)
SPNN_DEFINE_DW_BAND(5, 1)
SPNN_DEFINE_DW_BAND(5, 2)

/* A band of output rows is the whole output of a shorter layer: the input rows the band's
 * taps reach (`in` points at the first, channels `in_plane` apart), with what is left of the
 * top padding; the bottom padding follows from the band's height. The kernel (whole-plane or
 * row) is the one the full layer takes, so a layer run band by band computes every pixel as
 * the same kernel would over whole planes. */
static void dw_rows_band(const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,
                         size_t row_begin, size_t row_end, const float* in, size_t in_plane,
                         const void* packed, float* output, float out_min, float out_max) {
  size_t top, bottom;
  spnn_dwconv_input_rows(s, row_begin, row_end, &top, &bottom);
  spnn_dwconv_shape band = *s;
  band.in_h = (uint32_t)(bottom - top);
  band.out_h = (uint32_t)(row_end - row_begin);
  band.pad_top = (uint32_t)((long)top - ((long)(row_begin * s->stride_h) - (long)s->pad_top));
  float* out = output + row_begin * s->out_w;
  const size_t out_plane = (size_t)s->out_h * s->out_w;
  if (!dw_special(s)) {
    dw_generic(&band, c_begin, c_end, in, in_plane, packed, out, out_plane, out_min, out_max);
    return;
  }
  const size_t K = s->kernel_h;
  /* the full layer's choice; a band of a layer that fits fits too */
  if (dw4_takes(s)) {
    dw4_kxk(s->stride_h, &band, c_begin, c_end, in, in_plane, packed, out, out_plane, out_min,
            out_max);
    return;
  }
  const int flat = dw_flat_fits(K, s->stride_h, s);
  if (K == 3 && s->stride_h == 1) {
    dw_band_3x3s1(flat, &band, c_begin, c_end, in, in_plane, packed, out, out_plane, out_min, out_max);
  } else if (K == 3) {
    dw_band_3x3s2(flat, &band, c_begin, c_end, in, in_plane, packed, out, out_plane, out_min, out_max);
  } else if (s->stride_h == 1) {
    dw_band_5x5s1(flat, &band, c_begin, c_end, in, in_plane, packed, out, out_plane, out_min, out_max);
  } else {
    dw_band_5x5s2(flat, &band, c_begin, c_end, in, in_plane, packed, out, out_plane, out_min, out_max);
  }
}

/* Stride-2 flat layers over large planes go band by band (DW_BAND_BYTES), as the whole-layer
 * kernel does, so a thread's share of rows keeps each band's phases in L1 too. */
void spnn_f32_dwconv_rows_at(const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,
                             size_t row_begin, size_t row_end, const float* input_rows,
                             size_t in_plane, const void* packed, float* output, float out_min,
                             float out_max) {
  if (row_begin >= row_end || c_begin >= c_end) return;
  size_t step = row_end - row_begin, first, bottom;
  if (dw_special(s) && s->stride_h == 2 && dw_flat_fits(s->kernel_h, 2, s)) step = dw_band_rows(s);
  spnn_dwconv_input_rows(s, row_begin, row_end, &first, &bottom);
  for (size_t r = row_begin; r < row_end; r += step) {
    const size_t end = r + step < row_end ? r + step : row_end;
    size_t top;
    spnn_dwconv_input_rows(s, r, end, &top, &bottom);
    dw_rows_band(s, c_begin, c_end, r, end, input_rows + (top - first) * s->in_w, in_plane, packed,
                 output, out_min, out_max);
  }
}

void spnn_f32_dwconv_rows(const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,
                          size_t row_begin, size_t row_end, const float* input,
                          const void* packed, float* output, float out_min, float out_max) {
  if (row_begin >= row_end) return;
  size_t top, bottom;
  spnn_dwconv_input_rows(s, row_begin, row_end, &top, &bottom);
  spnn_f32_dwconv_rows_at(s, c_begin, c_end, row_begin, row_end, input + top * s->in_w,
                          (size_t)s->in_h * s->in_w, packed, output, out_min, out_max);
}

/* ---- Stride 2 on rows split by column parity ------------------------------------------
 * The layer before wrote each input row as its even columns, then its odd ones
 * (spnn_spmm_run_split), so every tap of four neighbouring output pixels is one load from
 * the row itself: input column 2 x + kx - pl is in half (kx - pl) mod 2 of the row, at
 * x + floor((kx - pl) / 2). No phase copy. Rows above and below the input read a row of
 * zeros, the column that crosses the row's edge is masked, and every pixel sums bias, then
 * kernel columns left to right, each top down, as dw_flat_step does: the bits are the
 * phase-copy kernel's. */
int spnn_dwconv_reads_split(const spnn_dwconv_shape* s) {
  return s->kernel_h == 3 && s->kernel_w == 3 && s->stride_h == 2 && s->stride_w == 2 &&
         s->dilation_h == 1 && s->dilation_w == 1 && s->in_w % 8 == 0 &&
         2 * (size_t)s->out_w == s->in_w && s->pad_top <= 1 && s->pad_left <= 1 &&
         dw_flat_fits(3, 2, s);
}

/* U output vectors of one row from output column x: `rows` the three input rows, `off` per
 * kernel column where its taps start in a row. dw_flat_step's sums in dw_flat_step's order;
 * not dw_flat_step itself, whose taps come from a table of nine offsets (with zero rows
 * copied in at the plane's edges): that ran the 112x112 block 9% slower in Chromium. */
SPNN_INLINE void dw_split_step(size_t U, const dw_flat_plan* p, const float* const rows[3],
                               const ptrdiff_t off[3], const float* w, size_t x, v128_t vmin,
                               v128_t vmax, float* out) {
  v128_t acc[DW_FLAT_U];
  const v128_t vbias = wasm_v128_load32_splat(w);
  for (size_t u = 0; u < U; u++) acc[u] = vbias;
  for (size_t kx = 0; kx < 3; kx++) {
    if (p->dx[kx] == 0) {
      for (size_t ky = 0; ky < 3; ky++) {
        const float* src = rows[ky] + off[kx] + x;
        const v128_t wv = wasm_v128_load32_splat(w + 1 + ky * 3 + kx);
        for (size_t u = 0; u < U; u++) acc[u] = spnn_madd(acc[u], wasm_v128_load(src + 4 * u), wv);
      }
      continue;
    }
    v128_t t[DW_FLAT_U];
    const float* src0 = rows[0] + off[kx] + x;
    const v128_t w0 = wasm_v128_load32_splat(w + 1 + kx);
    for (size_t u = 0; u < U; u++) t[u] = wasm_f32x4_mul(wasm_v128_load(src0 + 4 * u), w0);
    for (size_t ky = 1; ky < 3; ky++) {
      const float* src = rows[ky] + off[kx] + x;
      const v128_t wv = wasm_v128_load32_splat(w + 1 + ky * 3 + kx);
      for (size_t u = 0; u < U; u++) t[u] = spnn_madd(t[u], wasm_v128_load(src + 4 * u), wv);
    }
    const uint32_t* mk = p->mask[kx] + x;
    for (size_t u = 0; u < U; u++)
      acc[u] = wasm_f32x4_add(acc[u], wasm_v128_and(t[u], wasm_v128_load(mk + 4 * u)));
  }
  for (size_t u = 0; u < U; u++) wasm_v128_store(out + 4 * u, spnn_clamp(acc[u], vmin, vmax));
}

void spnn_f32_dwconv_split_rows_at(const spnn_dwconv_shape* s, size_t c_begin, size_t c_end,
                                   size_t row_begin, size_t row_end, const float* input_rows,
                                   size_t in_plane, const void* packed, float* output,
                                   float out_min, float out_max) {
  if (row_begin >= row_end || c_begin >= c_end) return;
  const size_t H = s->in_h, W = s->in_w, Wo = s->out_w, out_plane = (size_t)s->out_h * Wo;
  const long pt = (long)s->pad_top, pl = (long)s->pad_left;
  const v128_t vmin = wasm_f32x4_splat(out_min), vmax = wasm_f32x4_splat(out_max);
  size_t top, bottom;
  spnn_dwconv_input_rows(s, row_begin, row_end, &top, &bottom);
  dw_flat_plan p;
  p.wo = Wo;
  ptrdiff_t off[3];
  for (size_t kx = 0; kx < 3; kx++) {
    const long c = (long)kx - pl, dx = dw_half_floor(c);
    p.dx[kx] = (int)dx;
    off[kx] = (ptrdiff_t)((c - 2 * dx) * (long)(W / 2) + dx);
  }
  dw_flat_masks(3, &p);
  for (size_t c = c_begin; c < c_end; c++) {
    const float* plane = input_rows + c * in_plane - top * W; /* row y at plane + y W */
    const float* w = (const float*)packed + c * 10;
    float* out = output + c * out_plane;
    for (size_t oy = row_begin; oy < row_end; oy++) {
      const float* rows[3];
      for (size_t ky = 0; ky < 3; ky++) {
        const long iy = 2 * (long)oy + (long)ky - pt;
        rows[ky] = iy >= 0 && iy < (long)H ? plane + (size_t)iy * W : dw_zero_row;
      }
      float* o = out + oy * Wo;
      size_t x = 0;
      for (; x + 4 * DW_FLAT_U <= Wo; x += 4 * DW_FLAT_U)
        dw_split_step(DW_FLAT_U, &p, rows, off, w, x, vmin, vmax, o + x);
      for (; x < Wo; x += 4) dw_split_step(1, &p, rows, off, w, x, vmin, vmax, o + x);
    }
  }
}
