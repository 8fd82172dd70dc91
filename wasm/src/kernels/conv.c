/* Dense KxK convolution in CHW, any size, stride, dilation, padding and groups.
 *
 * Per group: im2col of the requested output pixels into the scratch matrix
 * [Cin_g*KH*KW x P_out] (row (ci, ky, kx) holds that tap's input value for each output
 * pixel, zero in the padding), then the CHW GEMM with the group's packed weights. A
 * weight row [Cin_g, KH, KW] is already in that (ci, ky, kx) order.
 */
#include <string.h>

#include "../kernels.h"
#include "../simd.h"

static size_t taps_per_output(const spnn_conv_shape* s) {
  return (size_t)(s->in_channels / s->groups) * s->kernel_h * s->kernel_w;
}

size_t spnn_conv_packed_bytes(const spnn_conv_shape* s) {
  return (size_t)s->groups *
         spnn_gemm_packed_bytes(s->out_channels / s->groups, (uint32_t)taps_per_output(s));
}

void spnn_conv_pack(const spnn_conv_shape* s, const float* weights, const float* bias,
                    void* buffer) {
  const uint32_t rows = s->out_channels / s->groups, cols = (uint32_t)taps_per_output(s);
  const size_t group_bytes = spnn_gemm_packed_bytes(rows, cols);
  for (uint32_t g = 0; g < s->groups; g++) {
    spnn_gemm_pack(rows, cols, weights + (size_t)g * rows * cols,
                   bias != NULL ? bias + (size_t)g * rows : NULL,
                   (uint8_t*)buffer + g * group_bytes);
  }
}

size_t spnn_conv_scratch_bytes(const spnn_conv_shape* s) {
  return sizeof(float) * taps_per_output(s) * s->out_h * s->out_w;
}

/* dst[ox] for ox in [ox0, ox_end): input row `irow` at column ox*stride + kx*dilation -
 * pad_left, 0 outside the row. Columns inside the row are copied four at a time (stride
 * 1: one load; stride 2: the even lanes of two loads). */
static void im2col_row(const spnn_conv_shape* s, const float* irow, size_t kx, size_t ox0,
                       size_t ox_end, float* dst) {
  const long sw = (long)s->stride_w, off = (long)(kx * s->dilation_w) - (long)s->pad_left;
  const long in_w = (long)s->in_w;
  size_t ox = ox0;
  for (; ox < ox_end && (long)ox * sw + off < 0; ox++) dst[ox] = 0.0f;
  if (sw == 1) {
    for (; ox + 4 <= ox_end && (long)ox + off + 4 <= in_w; ox += 4)
      wasm_v128_store(dst + ox, wasm_v128_load(irow + (long)ox + off));
  } else if (sw == 2) {
    for (; ox + 4 <= ox_end && 2 * (long)ox + off + 8 <= in_w; ox += 4) {
      const float* p = irow + 2 * (long)ox + off;
      wasm_v128_store(dst + ox, wasm_i32x4_shuffle(wasm_v128_load(p), wasm_v128_load(p + 4), 0,
                                                   2, 4, 6));
    }
  }
  for (; ox < ox_end; ox++) {
    const long ix = (long)ox * sw + off;
    dst[ox] = ix >= 0 && ix < in_w ? irow[ix] : 0.0f;
  }
}

/* Columns [pixel_begin, pixel_end) of the im2col matrix of input channels
 * [c0, c0 + Cin_g), pixel p of row r at scratch[r * stride + p]. */
static void im2col(const spnn_conv_shape* s, const float* input, size_t c0,
                   size_t pixel_begin, size_t pixel_end, float* scratch, size_t stride) {
  const size_t cin_g = s->in_channels / s->groups;
  const size_t out_w = s->out_w;
  const size_t in_plane = (size_t)s->in_h * s->in_w;
  float* row = scratch;
  for (size_t ci = 0; ci < cin_g; ci++) {
    const float* plane = input + (c0 + ci) * in_plane;
    for (size_t ky = 0; ky < s->kernel_h; ky++) {
      for (size_t kx = 0; kx < s->kernel_w; kx++, row += stride) {
        size_t p = pixel_begin;
        while (p < pixel_end) {
          const size_t oy = p / out_w, ox0 = p % out_w;
          const size_t ox_end = ox0 + (pixel_end - p) < out_w ? ox0 + (pixel_end - p) : out_w;
          const long iy = (long)(oy * s->stride_h + ky * s->dilation_h) - (long)s->pad_top;
          if (iy < 0 || iy >= (long)s->in_h) {
            memset(row + p, 0, (ox_end - ox0) * sizeof(float));
          } else {
            im2col_row(s, plane + (size_t)iy * s->in_w, kx, ox0, ox_end, row + p - ox0);
          }
          p += ox_end - ox0;
        }
      }
    }
  }
}

/* Output pixels per im2col + GEMM pass: the pass's columns of the scratch matrix (a first
 * convolution's 27 rows x 256 pixels: 27 KiB) are still in L1 when the GEMM reads them,
 * where a whole 112x112 plane's matrix (1.4 MB) would come back from L3. A multiple of the
 * GEMM's 8-pixel tile, so every pixel's sum is the same whatever the range. The pass's
 * matrix is one contiguous block, rows the pass's width apart, at the pass's own place in
 * the scratch (pixels [b, e) at floats [b taps, e taps)): threads' passes never share
 * bytes, and its rows do not sit a whole plane apart, where they fell into the same few
 * sets of L1. */
#ifndef CONV_PASS_PIXELS
#define CONV_PASS_PIXELS 256
#endif

void spnn_conv_run(const spnn_conv_shape* s, const void* packed, size_t pixel_begin,
                   size_t pixel_end, const float* input, float* scratch, float* output,
                   float out_min, float out_max) {
  const uint32_t rows = s->out_channels / s->groups, cols = (uint32_t)taps_per_output(s);
  const size_t group_bytes = spnn_gemm_packed_bytes(rows, cols);
  const size_t pixels = (size_t)s->out_h * s->out_w;
  for (size_t b = pixel_begin; b < pixel_end; b += CONV_PASS_PIXELS) {
    const size_t e = pixel_end - b > CONV_PASS_PIXELS ? b + CONV_PASS_PIXELS : pixel_end;
    /* pixel p of row r at pass[r * (e - b) + p - b] */
    float* pass = scratch + b * cols;
    float* at_p = (float*)((uintptr_t)pass - b * sizeof(float));
    for (uint32_t g = 0; g < s->groups; g++) {
      im2col(s, input, (size_t)g * (s->in_channels / s->groups), b, e, at_p, e - b);
      spnn_gemm_run(rows, cols, (const uint8_t*)packed + g * group_bytes, b, e, at_p, e - b,
                    output + (size_t)g * rows * pixels, pixels, out_min, out_max);
    }
  }
}
