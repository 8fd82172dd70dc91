/* Dense KxK convolution in CHW, any size, stride, dilation, padding and groups.
 *
 * Convolutions with few input channels (the first layer of an image model: 3 channels,
 * 3x3 or 5x5, stride 2) run directly: per output row, the Cin*KH input rows it reads are
 * copied once into zero-padded rows (stride 2 rows split into even and odd columns, so
 * every tap of four output pixels is one vector load), then each block of four output
 * channels sums eight pixels at a time, bias first, then taps in (ci, ky, kx) order.
 * Every output element sums the same terms in the same order whatever the pixel split.
 *
 * Everything else: per group, im2col of the requested output pixels into the scratch
 * matrix [Cin_g*KH*KW x P_out] (row (ci, ky, kx) holds that tap's input value for each
 * output pixel, zero in the padding), then the CHW GEMM with the group's packed weights. A
 * weight row [Cin_g, KH, KW] is already in that (ci, ky, kx) order.
 */
#include <string.h>

#include "../kernels.h"
#include "../simd.h"
#include "tile.h"

/* Floats of padded input rows one output row of the direct kernel may use (on the stack). */
#define DIRECT_ROWS_MAX 8192
#define DIRECT_PIXELS 8 /* output pixels per step: two vectors */

/* Padded row length (floats, a multiple of 8) of the direct kernel: holds every tap of
 * every step of a row, a step starting at any pixel below out_w and reading
 * DIRECT_PIXELS from there. */
static size_t direct_row_len(const spnn_conv_shape* s) {
  const size_t steps = (s->out_w + DIRECT_PIXELS - 1) / DIRECT_PIXELS + 1;
  return (s->stride_w * steps * DIRECT_PIXELS + s->kernel_w + 7) & ~(size_t)7;
}

static int use_direct(const spnn_conv_shape* s) {
  return s->groups == 1 && s->dilation_h == 1 && s->dilation_w == 1 &&
         s->stride_h == s->stride_w && (s->stride_w == 1 || s->stride_w == 2) &&
         s->kernel_w <= 7 && s->in_channels <= 4 && s->out_channels >= 4 &&
         (size_t)s->in_channels * s->kernel_h * direct_row_len(s) <= DIRECT_ROWS_MAX;
}

int spnn_conv_is_direct(const spnn_conv_shape* s) { return use_direct(s); }

/* Direct packing: per block of four output channels (the last padded with zeros), four
 * biases then, for each tap (ci, ky, kx), the four channels' weights. */
static size_t direct_block_floats(const spnn_conv_shape* s) {
  return 4 * (1 + (size_t)s->in_channels * s->kernel_h * s->kernel_w);
}

static size_t direct_packed_bytes(const spnn_conv_shape* s) {
  return (s->out_channels + 3) / 4 * direct_block_floats(s) * sizeof(float);
}

static void direct_pack(const spnn_conv_shape* s, const float* weights, const float* bias,
                        float* out) {
  const size_t taps = (size_t)s->in_channels * s->kernel_h * s->kernel_w;
  for (size_t c0 = 0; c0 < s->out_channels; c0 += 4) {
    for (size_t j = 0; j < 4; j++) {
      *out++ = c0 + j < s->out_channels && bias != NULL ? bias[c0 + j] : 0.0f;
    }
    for (size_t t = 0; t < taps; t++) {
      for (size_t j = 0; j < 4; j++) {
        *out++ = c0 + j < s->out_channels ? weights[(c0 + j) * taps + t] : 0.0f;
      }
    }
  }
}

/* Input row `src` (in_w floats) as the padded row P of `len` floats, P[x] = src[x - pl]
 * inside the input and 0 outside; with S == 2 the even columns of P, then the odd ones. */
SPNN_INLINE void direct_pad_row(size_t S, const float* src, size_t in_w, size_t pl,
                                size_t len, float* dst) {
  const size_t half = len / S;
  memset(dst, 0, len * sizeof(float));
  for (size_t x = 0; x < in_w && pl + x < len; x++) {
    const size_t i = pl + x;
    dst[S == 1 ? i : (i & 1) * half + i / 2] = src[x];
  }
}

/* Output pixels [ox0, ox1) of row `orow` for all channels, from `rows` (Cin*KH padded rows
 * of `len` floats). */
SPNN_INLINE void direct_row(size_t S, const spnn_conv_shape* s, const float* rows, size_t len,
                            const float* packed, size_t ox0, size_t ox1, float* out,
                            size_t out_plane, v128_t vmin, v128_t vmax) {
  const size_t KH = s->kernel_h, KW = s->kernel_w, cin = s->in_channels;
  const size_t half = len / S, block = direct_block_floats(s);
  for (size_t c0 = 0; c0 < s->out_channels; c0 += 4) {
    const float* wb = packed + (c0 / 4) * block;
    const size_t nc = s->out_channels - c0 < 4 ? s->out_channels - c0 : 4;
    for (size_t ox = ox0; ox < ox1; ox += DIRECT_PIXELS) {
      v128_t acc[4][2];
      for (size_t j = 0; j < 4; j++) acc[j][0] = acc[j][1] = wasm_v128_load32_splat(wb + j);
      const float* w = wb + 4;
      for (size_t r = 0; r < cin * KH; r++) {
        const float* row = rows + r * len;
        for (size_t kx = 0; kx < KW; kx++, w += 4) {
          /* P[S*ox + kx]: stride 2 reads the even (kx even) or the odd half. */
          const float* p = S == 1 ? row + ox + kx : row + (kx & 1) * half + ox + kx / 2;
          const v128_t x0 = wasm_v128_load(p), x1 = wasm_v128_load(p + 4);
          for (size_t j = 0; j < 4; j++) {
            const v128_t wv = wasm_v128_load32_splat(w + j);
            acc[j][0] = spnn_madd(acc[j][0], x0, wv);
            acc[j][1] = spnn_madd(acc[j][1], x1, wv);
          }
        }
      }
      const size_t n = ox1 - ox < DIRECT_PIXELS ? ox1 - ox : DIRECT_PIXELS;
      for (size_t j = 0; j < nc; j++) {
        float* o = out + (c0 + j) * out_plane + ox;
        const v128_t v0 = spnn_clamp(acc[j][0], vmin, vmax);
        const v128_t v1 = spnn_clamp(acc[j][1], vmin, vmax);
        if (n == DIRECT_PIXELS) {
          wasm_v128_store(o, v0);
          wasm_v128_store(o + 4, v1);
        } else {
          float lanes[8] __attribute__((aligned(16)));
          wasm_v128_store(lanes, v0);
          wasm_v128_store(lanes + 4, v1);
          for (size_t i = 0; i < n; i++) o[i] = lanes[i];
        }
      }
    }
  }
}

SPNN_INLINE void direct_run(size_t S, const spnn_conv_shape* s, const float* packed,
                            size_t pixel_begin, size_t pixel_end, const float* input,
                            float* output, float out_min, float out_max) {
  const size_t out_w = s->out_w, len = direct_row_len(s);
  const size_t in_plane = (size_t)s->in_h * s->in_w, out_plane = (size_t)s->out_h * out_w;
  const v128_t vmin = wasm_f32x4_splat(out_min), vmax = wasm_f32x4_splat(out_max);
  float rows[DIRECT_ROWS_MAX] __attribute__((aligned(16)));
  for (size_t p = pixel_begin; p < pixel_end;) {
    const size_t oy = p / out_w, ox0 = p % out_w;
    const size_t ox1 = out_w - ox0 < pixel_end - p ? out_w : ox0 + (pixel_end - p);
    for (size_t ci = 0; ci < s->in_channels; ci++) {
      for (size_t ky = 0; ky < s->kernel_h; ky++) {
        float* dst = rows + (ci * s->kernel_h + ky) * len;
        const long iy = (long)(oy * S + ky) - (long)s->pad_top;
        if (iy < 0 || iy >= (long)s->in_h) {
          memset(dst, 0, len * sizeof(float));
        } else {
          direct_pad_row(S, input + ci * in_plane + (size_t)iy * s->in_w, s->in_w,
                         s->pad_left, len, dst);
        }
      }
    }
    direct_row(S, s, rows, len, packed, ox0, ox1, output + oy * out_w, out_plane, vmin, vmax);
    p += ox1 - ox0;
  }
}

static size_t taps_per_output(const spnn_conv_shape* s) {
  return (size_t)(s->in_channels / s->groups) * s->kernel_h * s->kernel_w;
}

size_t spnn_conv_packed_bytes(const spnn_conv_shape* s) {
  if (use_direct(s)) return direct_packed_bytes(s);
  return (size_t)s->groups *
         spnn_gemm_packed_bytes(s->out_channels / s->groups, (uint32_t)taps_per_output(s));
}

void spnn_conv_pack(const spnn_conv_shape* s, const float* weights, const float* bias,
                    void* buffer) {
  if (use_direct(s)) {
    direct_pack(s, weights, bias, (float*)buffer);
    return;
  }
  const uint32_t rows = s->out_channels / s->groups, cols = (uint32_t)taps_per_output(s);
  const size_t group_bytes = spnn_gemm_packed_bytes(rows, cols);
  for (uint32_t g = 0; g < s->groups; g++) {
    spnn_gemm_pack(rows, cols, weights + (size_t)g * rows * cols,
                   bias != NULL ? bias + (size_t)g * rows : NULL,
                   (uint8_t*)buffer + g * group_bytes);
  }
}

size_t spnn_conv_scratch_bytes(const spnn_conv_shape* s) {
  if (use_direct(s)) return sizeof(float); /* the direct kernel needs none */
  return sizeof(float) * taps_per_output(s) * s->out_h * s->out_w;
}

/* Columns [pixel_begin, pixel_end) of the im2col matrix of input channels
 * [c0, c0 + Cin_g). */
static void im2col(const spnn_conv_shape* s, const float* input, size_t c0,
                   size_t pixel_begin, size_t pixel_end, float* scratch) {
  const size_t cin_g = s->in_channels / s->groups;
  const size_t out_w = s->out_w, pixels = (size_t)s->out_h * s->out_w;
  const size_t in_plane = (size_t)s->in_h * s->in_w;
  float* row = scratch;
  for (size_t ci = 0; ci < cin_g; ci++) {
    const float* plane = input + (c0 + ci) * in_plane;
    for (size_t ky = 0; ky < s->kernel_h; ky++) {
      for (size_t kx = 0; kx < s->kernel_w; kx++, row += pixels) {
        size_t p = pixel_begin;
        while (p < pixel_end) {
          const size_t oy = p / out_w, ox0 = p % out_w;
          const size_t ox_end = ox0 + (pixel_end - p) < out_w ? ox0 + (pixel_end - p) : out_w;
          const long iy = (long)(oy * s->stride_h + ky * s->dilation_h) - (long)s->pad_top;
          if (iy < 0 || iy >= (long)s->in_h) {
            memset(row + p, 0, (ox_end - ox0) * sizeof(float));
          } else {
            const float* irow = plane + (size_t)iy * s->in_w;
            for (size_t ox = ox0; ox < ox_end; ox++) {
              const long ix =
                  (long)(ox * s->stride_w + kx * s->dilation_w) - (long)s->pad_left;
              row[p + (ox - ox0)] = ix >= 0 && ix < (long)s->in_w ? irow[ix] : 0.0f;
            }
          }
          p += ox_end - ox0;
        }
      }
    }
  }
}

void spnn_conv_run(const spnn_conv_shape* s, const void* packed, size_t pixel_begin,
                   size_t pixel_end, const float* input, float* scratch, float* output,
                   float out_min, float out_max) {
  if (pixel_begin >= pixel_end) return;
  if (use_direct(s)) {
    if (s->stride_w == 1) {
      direct_run(1, s, (const float*)packed, pixel_begin, pixel_end, input, output, out_min,
                 out_max);
    } else {
      direct_run(2, s, (const float*)packed, pixel_begin, pixel_end, input, output, out_min,
                 out_max);
    }
    return;
  }
  const uint32_t rows = s->out_channels / s->groups, cols = (uint32_t)taps_per_output(s);
  const size_t group_bytes = spnn_gemm_packed_bytes(rows, cols);
  const size_t pixels = (size_t)s->out_h * s->out_w;
  for (uint32_t g = 0; g < s->groups; g++) {
    im2col(s, input, (size_t)g * (s->in_channels / s->groups), pixel_begin, pixel_end,
           scratch);
    spnn_gemm_run(rows, cols, (const uint8_t*)packed + g * group_bytes, pixel_begin,
                  pixel_end, scratch, pixels, output + (size_t)g * rows * pixels, pixels,
                  out_min, out_max);
  }
}
