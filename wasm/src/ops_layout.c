/* Data movement: CONCAT, PAD, PAD_REFLECT, RESIZE_BILINEAR/NEAREST, DEPTH_TO_SPACE, RESHAPE, TRANSPOSE,
 * SLICE.
 * Index tables are built at load; run time only copies and interpolates. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "simd.h"

#define MAX_PAD (1 << 16)

static spnn_status new_state(spnn_model* m, spnn_op* op, size_t size, void** out) {
  *out = calloc(1, size);
  if (!*out) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  op->state = *out;
  op->free_state = free;
  return SPNN_OK;
}

/* ---- CONCAT ------------------------------------------------------------------------- */

typedef struct concat_state {
  size_t outer, out_chunk; /* floats per outer index in the output */
  int n;
  /* followed by n (pointer, chunk) pairs */
  struct {
    const float* data;
    size_t chunk;
  } parts[];
} concat_state;

static void run_concat(spnn_model* m, spnn_op* op) {
  (void)m;
  const concat_state* s = (const concat_state*)op->state;
  float* out = spnn_out(m, op)->data;
  for (size_t o = 0; o < s->outer; o++) {
    for (int i = 0; i < s->n; i++) {
      spnn_copy_floats(out, s->parts[i].data + o * s->parts[i].chunk, s->parts[i].chunk);
      out += s->parts[i].chunk;
    }
  }
}

spnn_status spnn_prepare_concat(spnn_model* m, spnn_op* op) {
  spnn_tensor* x0 = spnn_in(m, op, 0);
  spnn_tensor* y = spnn_out(m, op);
  int32_t axis = op->attr[SPNN_CONCAT_AXIS].i;
  if (axis < -x0->ndim || axis >= x0->ndim)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "axis %d of %d-D inputs", (int)axis, x0->ndim);
  if (axis < 0) axis += x0->ndim;
  int32_t want[SPNN_MAX_NDIM];
  memcpy(want, x0->dims, sizeof want);
  int64_t total = 0;
  spnn_status st;
  for (int i = 0; i < op->num_inputs; i++) {
    spnn_tensor* t = spnn_in(m, op, i);
    int same = t->ndim == x0->ndim;
    for (int d = 0; same && d < t->ndim; d++) same = d == axis || t->dims[d] == x0->dims[d];
    if (!same)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "input %s does not match %s outside axis %d", t->name,
                       x0->name, (int)axis);
    total += t->dims[axis];
    if ((st = spnn_use_raw(m, t))) return st;
  }
  if (total >= SPNN_MAX_ELEMENTS) return spnn_fail(m, SPNN_ERROR_FORMAT, "output too large");
  want[axis] = (int32_t)total;
  if ((st = spnn_expect_dims(m, y, x0->ndim, want, "output"))) return st;
  concat_state* s;
  size_t size = sizeof *s + (size_t)op->num_inputs * sizeof s->parts[0];
  if ((st = new_state(m, op, size, (void**)&s))) return st;
  s->n = op->num_inputs;
  s->outer = 1;
  for (int d = 0; d < axis; d++) s->outer *= (size_t)x0->dims[d];
  size_t inner = 1;
  for (int d = axis + 1; d < x0->ndim; d++) inner *= (size_t)x0->dims[d];
  for (int i = 0; i < s->n; i++) {
    spnn_tensor* t = spnn_in(m, op, i);
    s->parts[i].data = t->data;
    s->parts[i].chunk = (size_t)t->dims[axis] * inner;
  }
  op->macs = (double)y->count;
  op->kernel = "copy";
  op->run = run_concat;
  return SPNN_OK;
}

/* ---- PAD (up to 4-D; constant value) --------------------------------------------- */

typedef struct pad_state {
  int32_t in[4], out[4], begin[4];
  float value;
  const float* x;
  float* y;
} pad_state;

/* Output planes [b, e) of out[0] x out[1], row by row. */
static void pad_task(void* ctx, size_t b, size_t e) {
  const pad_state* s = (const pad_state*)ctx;
  size_t row = (size_t)s->out[3];
  for (size_t plane = b; plane < e; plane++) {
    const int32_t a = (int32_t)(plane / (size_t)s->out[1]), bb = (int32_t)(plane % (size_t)s->out[1]);
    for (int32_t c = 0; c < s->out[2]; c++) {
      float* out = s->y + (((size_t)a * s->out[1] + bb) * s->out[2] + c) * row;
      int32_t ia = a - s->begin[0], ib = bb - s->begin[1], ic = c - s->begin[2];
      int inside = ia >= 0 && ia < s->in[0] && ib >= 0 && ib < s->in[1] && ic >= 0 && ic < s->in[2];
      if (!inside) {
        for (size_t i = 0; i < row; i++) out[i] = s->value;
        continue;
      }
      const float* in = s->x + (((size_t)ia * s->in[1] + ib) * s->in[2] + ic) * s->in[3];
      size_t lead = (size_t)s->begin[3];
      for (size_t i = 0; i < lead; i++) out[i] = s->value;
      spnn_copy_floats(out + lead, in, (size_t)s->in[3]);
      for (size_t i = lead + (size_t)s->in[3]; i < row; i++) out[i] = s->value;
    }
  }
}

/* A copied element costs about as much as 4 multiply-adds, for the one-thread threshold. */
#define COPY_WORK 4.0

static void run_pad(spnn_model* m, spnn_op* op) {
  const pad_state* s = (const pad_state*)op->state;
  spnn_parallel(m, op->macs * COPY_WORK, (size_t)s->out[0] * s->out[1], 1, pad_task, op->state);
}

/* The padded size of each axis of x (attributes pad{d}_begin, pad{d}_end first, in order). */
static spnn_status padded_dims(spnn_model* m, const spnn_op* op, const spnn_tensor* x, int32_t* want) {
  for (int d = 0; d < x->ndim; d++) {
    int32_t b = op->attr[2 * d].i, e = op->attr[2 * d + 1].i;
    if (b < 0 || e < 0 || b > MAX_PAD || e > MAX_PAD)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "padding %d/%d of axis %d is negative or too large",
                       (int)b, (int)e, d);
    want[d] = x->dims[d] + b + e;
  }
  return SPNN_OK;
}

spnn_status spnn_prepare_pad(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* y = spnn_out(m, op);
  if (x->ndim < 1 || x->ndim > 4)
    return spnn_fail(m, SPNN_ERROR_UNSUPPORTED, "PAD of a %d-D tensor (1 to 4 dimensions)", x->ndim);
  pad_state* s;
  spnn_status st;
  int32_t want[4];
  int lead = 4 - x->ndim; /* lower-rank tensors are padded as [1, ..., dims] */
  if ((st = padded_dims(m, op, x, want))) return st;
  if ((st = spnn_expect_dims(m, y, x->ndim, want, "output"))) return st;
  if ((st = spnn_use_raw(m, x))) return st;
  if ((st = new_state(m, op, sizeof *s, (void**)&s))) return st;
  for (int d = 0; d < 4; d++) {
    int src = d - lead;
    s->in[d] = src >= 0 ? x->dims[src] : 1;
    s->out[d] = src >= 0 ? y->dims[src] : 1;
    s->begin[d] = src >= 0 ? op->attr[2 * src].i : 0;
  }
  s->value = op->attr[SPNN_PAD_VALUE].f;
  s->x = x->data;
  s->y = y->data;
  op->macs = (double)y->count;
  op->kernel = "copy";
  op->run = run_pad;
  return SPNN_OK;
}

/* ---- RESIZE_BILINEAR / RESIZE_NEAREST (TFLite conventions) ------------------------ */

#define RESIZE_ROW_MAX 2048 /* output columns per span (bilinear_plane) */

typedef struct resize_state {
  int32_t h, w, oh, ow;
  int bilinear;
  const float* x;
  float* y;
  /* tables: y0[oh], y1[oh], fy[oh], x0[ow], x1[ow], fx[ow] (nearest uses y0 and x0) */
  int32_t *y0, *y1, *x0, *x1;
  float *fy, *fx;
  /* rows upsampled 2x along x with half-pixel centres (bilinear_row_2x): fx of the even and
   * of the odd output columns, four floats to spare each; NULL where the taps differ */
  float *fx_even, *fx_odd;
  int plane_2x; /* both axes doubled that way, and the plane fits bilinear_plane_2x */
  int clamp;    /* an activation folded in (spnn_resize_fold_clamp): each plane clamped */
  float lo, hi;
  const float* residual; /* an ADD folded in (spnn_resize_fold_add): each plane plus this */
  float add_lo, add_hi;  /* the add's clamp */
} resize_state;

static double source_scale(int32_t out, int32_t in, int align) {
  return align && out > 1 ? (double)(in - 1) / (out - 1) : (double)in / out;
}

static void bilinear_taps(int32_t out, int32_t in, int align, int half, int32_t* lo, int32_t* hi,
                          float* frac) {
  double scale = source_scale(out, in, align);
  for (int32_t i = 0; i < out; i++) {
    double src = half ? (i + 0.5) * scale - 0.5 : i * scale;
    double f = floor(src);
    int32_t l = f < 0 ? 0 : (int32_t)f;
    int32_t c = (int32_t)ceil(src);
    lo[i] = l < in ? l : in - 1;
    hi[i] = c < in - 1 ? (c < 0 ? 0 : c) : in - 1;
    frac[i] = (float)(src - l); /* measured from the clamped low tap, as TFLite does */
  }
}

static void nearest_taps(int32_t out, int32_t in, int align, int half, int32_t* idx) {
  double scale = source_scale(out, in, align);
  for (int32_t i = 0; i < out; i++) {
    double src = (i + (half ? 0.5 : 0.0)) * scale;
    double f = align ? floor(src + 0.5) : floor(src);
    int32_t v = f > in - 1 ? in - 1 : (int32_t)f;
    idx[i] = v < 0 ? 0 : v;
  }
}

/* Columns [x0, x1) of input row `iy` of a plane interpolated along x:
 * row[ox - x0] = r[x0[ox]]*(1 - fx) + r[x1[ox]]*fx. */
static void bilinear_row(const resize_state* s, const float* in, int32_t iy, int32_t x0,
                         int32_t x1, float* row) {
  const float* r = in + (size_t)iy * s->w;
  for (int32_t ox = x0; ox < x1; ox++) {
    const float fx = s->fx[ox];
    row[ox - x0] = r[s->x0[ox]] * (1 - fx) + r[s->x1[ox]] * fx;
  }
}

/* Rows doubled along x with half-pixel centres: output column 2i reads input columns
 * i - 1 and i, column 2i + 1 columns i and i + 1 (each clamped to the row). With the row
 * copied between its edge values, both are four-wide loads, and the two results interleave
 * into eight outputs; each output is the scalar row's r[x0]*(1 - fx) + r[x1]*fx, the same
 * floats in the same order. Writes up to 7 floats past the row's 2 * w (the span has room). */
static void bilinear_row_2x(const resize_state* s, const float* in, int32_t iy, float* row) {
  const int32_t w = s->w;
  const float* r = in + (size_t)iy * w;
  float padded[RESIZE_ROW_MAX / 2 + 8] __attribute__((aligned(16)));
  padded[0] = r[0];
  spnn_copy_floats(padded + 1, r, (size_t)w);
  for (int32_t k = w + 1; k < w + 6; k++) padded[k] = r[w - 1];
  const v128_t one = wasm_f32x4_splat(1.0f);
  for (int32_t i = 0; i < w; i += 4) {
    const v128_t left = wasm_v128_load(padded + i), mid = wasm_v128_load(padded + i + 1);
    const v128_t right = wasm_v128_load(padded + i + 2);
    const v128_t fe = wasm_v128_load(s->fx_even + i), fo = wasm_v128_load(s->fx_odd + i);
    const v128_t even = wasm_f32x4_add(wasm_f32x4_mul(left, wasm_f32x4_sub(one, fe)), wasm_f32x4_mul(mid, fe));
    const v128_t odd = wasm_f32x4_add(wasm_f32x4_mul(mid, wasm_f32x4_sub(one, fo)), wasm_f32x4_mul(right, fo));
    wasm_v128_store(row + 2 * i, wasm_i32x4_shuffle(even, odd, 0, 4, 1, 5));
    wasm_v128_store(row + 2 * i + 4, wasm_i32x4_shuffle(even, odd, 2, 6, 3, 7));
  }
}

/* out[0..3] = top * g + bottom * f, g = 1 - f: two rows blended. */
static inline void blend4(const float* top, const float* bottom, v128_t g, v128_t f, float* out) {
  wasm_v128_store(out, wasm_f32x4_add(wasm_f32x4_mul(wasm_v128_load(top), g),
                                      wasm_f32x4_mul(wasm_v128_load(bottom), f)));
}

/* Output columns per span: each span of rows interpolates each input row along x once (into
 * one of two row buffers on the stack), then blends two such rows with vectors, so a pixel is
 * top*(1 - fy) + bottom*fy of its two x-interpolated values. */
static void bilinear_plane(const resize_state* s, const float* in, float* out) {
  float rows[2][RESIZE_ROW_MAX + 8] __attribute__((aligned(16)));
  for (int32_t x0 = 0; x0 < s->ow; x0 += RESIZE_ROW_MAX) {
    const int32_t x1 = s->ow - x0 > RESIZE_ROW_MAX ? x0 + RESIZE_ROW_MAX : s->ow, n = x1 - x0;
    int32_t held[2] = {-1, -1}; /* the input row in each buffer */
    for (int32_t oy = 0; oy < s->oh; oy++) {
      const float* r[2];
      const int32_t want[2] = {s->y0[oy], s->y1[oy]};
      for (int k = 0; k < 2; k++) {
        int slot = held[0] == want[k] ? 0 : held[1] == want[k] ? 1 : -1;
        if (slot < 0) { /* the buffer whose row this output row does not need */
          slot = held[0] == want[0] || held[0] == want[1] ? 1 : 0;
          if (s->fx_even) bilinear_row_2x(s, in, want[k], rows[slot]);
          else bilinear_row(s, in, want[k], x0, x1, rows[slot]);
          held[slot] = want[k];
        }
        r[k] = rows[slot];
      }
      float* o = out + (size_t)oy * s->ow + x0;
      const float fy = s->fy[oy];
      const v128_t a = wasm_f32x4_splat(1 - fy), b = wasm_f32x4_splat(fy);
      int32_t ox = 0;
      for (; ox + 4 <= n; ox += 4) blend4(r[0] + ox, r[1] + ox, a, b, o + ox);
      for (; ox < n; ox++) o[ox] = r[0][ox] * (1 - fy) + r[1][ox] * fy;
    }
  }
}

/* Planes doubled along both axes with half-pixel centres (the MediaPipe detectors'
 * upsampling): each input row doubled along x into T (bilinear_row_2x), between a copy of
 * its first row above and of its last below (the clamped taps), then output rows 2j and
 * 2j + 1 as one run of 4w floats: pixel q of that run blends T's rows j - 1 and j at offset
 * q (row 2j + 1 reads rows j and j + 1, one row of T further, as its pixels lie one row
 * further), with row 2j's weight on the first 2w floats and row 2j + 1's on the rest. The
 * same floats in the same order as bilinear_plane. */
#define RESIZE_2X_MAX 16384 /* floats of T */

static void bilinear_plane_2x(const resize_state* s, const float* in, float* out) {
  const size_t h = (size_t)s->h, ow = (size_t)s->ow;
  float t[RESIZE_2X_MAX + 8] __attribute__((aligned(16)));
  /* rows in order: each row's spill past its end is overwritten by the next */
  for (size_t iy = 0; iy < h; iy++) bilinear_row_2x(s, in, (int32_t)iy, t + (iy + 1) * ow);
  spnn_copy_floats(t, t + ow, ow);
  spnn_copy_floats(t + (h + 1) * ow, t + h * ow, ow);
  const v128_t one = wasm_f32x4_splat(1.0f);
  const size_t even_end = ow & ~(size_t)3; /* vectors below it are all row 2j's */
  for (size_t j = 0; j < h; j++) {
    const float* top = t + j * ow;
    const float* bottom = top + ow;
    float* o = out + 2 * j * ow;
    const v128_t fe = wasm_f32x4_splat(s->fy[2 * j]), fo = wasm_f32x4_splat(s->fy[2 * j + 1]);
    const v128_t ge = wasm_f32x4_sub(one, fe), go = wasm_f32x4_sub(one, fo);
    size_t q = 0;
    for (; q < even_end; q += 4) blend4(top + q, bottom + q, ge, fe, o + q);
    if (q < ow) { /* two pixels of each row */
      const v128_t f = wasm_i32x4_shuffle(fe, fo, 0, 1, 6, 7);
      blend4(top + q, bottom + q, wasm_f32x4_sub(one, f), f, o + q);
      q += 4;
    }
    for (; q < 2 * ow; q += 4) blend4(top + q, bottom + q, go, fo, o + q);
  }
}

static void resize_task(void* ctx, size_t p_begin, size_t p_end) {
  const resize_state* s = (const resize_state*)ctx;
  for (size_t p = p_begin; p < p_end; p++) {
    const float* in = s->x + p * (size_t)s->h * s->w;
    float* out = s->y + p * (size_t)s->oh * s->ow;
    if (s->plane_2x) {
      bilinear_plane_2x(s, in, out);
    } else if (s->bilinear) {
      bilinear_plane(s, in, out);
    } else {
      for (int32_t oy = 0; oy < s->oh; oy++) {
        float* o = out + (size_t)oy * s->ow;
        const float* r = in + (size_t)s->y0[oy] * s->w;
        for (int32_t ox = 0; ox < s->ow; ox++) o[ox] = r[s->x0[ox]];
      }
    }
    /* the plane was just written: clamping it or adding to it here costs no trip to memory */
    const size_t n = (size_t)s->oh * s->ow;
    if (s->clamp) spnn_f32_clamp(out, out, n, s->lo, s->hi);
    if (s->residual) spnn_f32_add_clamped(out, s->residual + p * n, out, n, s->add_lo, s->add_hi);
  }
}

/* The state of a prepared resize op, or NULL for any other op. */
static resize_state* resize_of(const spnn_op* op) {
  if (op->code != SPNN_OP_RESIZE_BILINEAR && op->code != SPNN_OP_RESIZE_NEAREST) return NULL;
  return (resize_state*)op->state;
}

int spnn_resize_writes(const spnn_op* op, const float* data) {
  const resize_state* s = resize_of(op);
  return s && s->y == data;
}

int spnn_resize_fold_add(spnn_op* op, const float* residual, float* output, float lo, float hi) {
  resize_state* s = resize_of(op);
  if (!s || s->residual) return 0;
  s->residual = residual;
  s->add_lo = lo;
  s->add_hi = hi;
  s->y = output;
  return 1;
}

int spnn_resize_fold_clamp(spnn_op* op, float* output, float lo, float hi) {
  resize_state* s = resize_of(op);
  if (!s || s->clamp || s->residual) return 0; /* after an add folded in, it would clamp the sum */
  s->clamp = 1;
  s->lo = lo;
  s->hi = hi;
  s->y = output;
  return 1;
}

static void run_resize(spnn_model* m, spnn_op* op) {
  const spnn_tensor* y = spnn_out(m, op);
  spnn_parallel(m, op->macs, (size_t)y->dims[0] * y->dims[1], 1, resize_task, op->state);
}

static void free_resize(void* p) {
  resize_state* s = (resize_state*)p;
  spnn_dealloc(s->y0);
  free(s);
}

/* Whether an axis of `in` samples doubled to `out` has the taps of bilinear_row_2x: output
 * 2i reads inputs i - 1 and i, output 2i + 1 inputs i and i + 1, each clamped. */
static int doubles(int32_t in, int32_t out, const int32_t* lo, const int32_t* hi) {
  if (out != 2 * in) return 0;
  for (int32_t i = 0; i < in; i++) {
    const int32_t prev = i > 0 ? i - 1 : 0, next = i + 1 < in ? i + 1 : i;
    if (lo[2 * i] != prev || hi[2 * i] != i || lo[2 * i + 1] != i || hi[2 * i + 1] != next) return 0;
  }
  return 1;
}

spnn_status spnn_prepare_resize(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* y = spnn_out(m, op);
  spnn_status st;
  if ((st = spnn_expect_ndim(m, x, 4, "input")) || (st = spnn_expect_ndim(m, y, 4, "output")))
    return st;
  if (y->dims[0] != x->dims[0] || y->dims[1] != x->dims[1])
    return spnn_fail(m, SPNN_ERROR_FORMAT, "output %s changes batch or channels", y->name);
  int align = op->attr[0].i, half = op->attr[1].i;
  if ((align != 0 && align != 1) || (half != 0 && half != 1))
    return spnn_fail(m, SPNN_ERROR_FORMAT, "align_corners %d / half_pixel_centers %d", align, half);
  if ((st = spnn_use_raw(m, x))) return st;
  resize_state* s = (resize_state*)calloc(1, sizeof *s);
  if (!s) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  op->state = s;
  op->free_state = free_resize;
  s->h = x->dims[2];
  s->w = x->dims[3];
  s->oh = y->dims[2];
  s->ow = y->dims[3];
  s->bilinear = op->code == SPNN_OP_RESIZE_BILINEAR;
  s->x = x->data;
  s->y = y->data;
  size_t n = (size_t)s->oh + s->ow;
  const size_t halves = (size_t)s->w + 4; /* fx_even, fx_odd */
  /* one block: y0 y1 x0 x1 (int32) then fy fx fx_even fx_odd (float) */
  uint8_t* block = (uint8_t*)spnn_alloc(n * 2 * 4 + n * 4 + 2 * halves * 4);
  if (!block) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  s->y0 = (int32_t*)block;
  s->y1 = s->y0 + s->oh;
  s->x0 = s->y1 + s->oh;
  s->x1 = s->x0 + s->ow;
  s->fy = (float*)(s->x1 + s->ow);
  s->fx = s->fy + s->oh;
  if (s->bilinear) {
    bilinear_taps(s->oh, s->h, align, half, s->y0, s->y1, s->fy);
    bilinear_taps(s->ow, s->w, align, half, s->x0, s->x1, s->fx);
    if (s->ow <= RESIZE_ROW_MAX && doubles(s->w, s->ow, s->x0, s->x1)) {
      s->fx_even = s->fx + s->ow;
      s->fx_odd = s->fx_even + halves;
      for (size_t i = 0; i < halves; i++) { /* the four to spare: zeros */
        s->fx_even[i] = i < (size_t)s->w ? s->fx[2 * i] : 0.0f;
        s->fx_odd[i] = i < (size_t)s->w ? s->fx[2 * i + 1] : 0.0f;
      }
      s->plane_2x = doubles(s->h, s->oh, s->y0, s->y1) &&
                    ((size_t)s->h + 2) * (size_t)s->ow <= RESIZE_2X_MAX;
    }
  } else {
    nearest_taps(s->oh, s->h, align, half, s->y0);
    nearest_taps(s->ow, s->w, align, half, s->x0);
  }
  op->state_bytes = n * 12 + 2 * halves * 4;
  op->macs = (double)y->count * (s->bilinear ? 6 : 1);
  op->kernel = s->bilinear ? "bilinear" : "nearest";
  op->run = run_resize;
  return SPNN_OK;
}

/* ---- DEPTH_TO_SPACE --------------------------------------------------------------- */

typedef struct d2s_state {
  int32_t n, c_out, h, w, block, crd;
  const float* x;
  float* y;
} d2s_state;

/* The input plane that gives output channel c of image n its pixels at block offset (i, j). */
static const float* d2s_source(const d2s_state* s, size_t n, size_t c, int32_t i, int32_t j) {
  const size_t b = (size_t)s->block, plane = (size_t)s->h * s->w;
  const size_t src_c = s->crd ? (c * b + (size_t)i) * b + (size_t)j : ((size_t)i * b + (size_t)j) * s->c_out + c;
  return s->x + (n * s->c_out * b * b + src_c) * plane;
}

/* Output channels [b, e) of n x c_out. With block 2, each output row interleaves two input
 * rows, four pixels of each at a time. */
static void d2s_task(void* ctx, size_t b_unit, size_t e_unit) {
  const d2s_state* s = (const d2s_state*)ctx;
  const int32_t b = s->block, ow = s->w * b;
  const size_t plane = (size_t)s->h * s->w;
  for (size_t unit = b_unit; unit < e_unit; unit++) {
    const size_t n = unit / (size_t)s->c_out, c = unit % (size_t)s->c_out;
    float* out = s->y + unit * plane * b * b;
    for (int32_t i = 0; i < b; i++) {
      if (b == 2) {
        const float* in0 = d2s_source(s, n, c, i, 0);
        const float* in1 = d2s_source(s, n, c, i, 1);
        for (int32_t y = 0; y < s->h; y++) {
          const float* r0 = in0 + (size_t)y * s->w;
          const float* r1 = in1 + (size_t)y * s->w;
          float* o = out + (size_t)(2 * y + i) * ow;
          int32_t x = 0;
          for (; x + 4 <= s->w; x += 4) {
            const v128_t a = wasm_v128_load(r0 + x), v = wasm_v128_load(r1 + x);
            wasm_v128_store(o + 2 * x, wasm_i32x4_shuffle(a, v, 0, 4, 1, 5));
            wasm_v128_store(o + 2 * x + 4, wasm_i32x4_shuffle(a, v, 2, 6, 3, 7));
          }
          for (; x < s->w; x++) o[2 * x] = r0[x], o[2 * x + 1] = r1[x];
        }
        continue;
      }
      for (int32_t j = 0; j < b; j++) {
        const float* in = d2s_source(s, n, c, i, j);
        for (int32_t y = 0; y < s->h; y++)
          for (int32_t x = 0; x < s->w; x++)
            out[(size_t)(y * b + i) * ow + x * b + j] = in[(size_t)y * s->w + x];
      }
    }
  }
}

static void run_d2s(spnn_model* m, spnn_op* op) {
  const d2s_state* s = (const d2s_state*)op->state;
  spnn_parallel(m, op->macs * COPY_WORK, (size_t)s->n * s->c_out, 1, d2s_task, op->state);
}

spnn_status spnn_prepare_depth_to_space(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* y = spnn_out(m, op);
  int32_t b = op->attr[SPNN_DEPTH_TO_SPACE_BLOCK].i, mode = op->attr[SPNN_DEPTH_TO_SPACE_MODE].i;
  spnn_status st;
  if ((st = spnn_expect_ndim(m, x, 4, "input"))) return st;
  if (b < 1 || b > 4096 || x->dims[1] % (b * b))
    return spnn_fail(m, SPNN_ERROR_FORMAT, "block %d does not divide %d channels into squares",
                     (int)b, x->dims[1]);
  if (mode != SPNN_D2S_DCR && mode != SPNN_D2S_CRD)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "unknown mode %d", (int)mode);
  int32_t want[4] = {x->dims[0], x->dims[1] / (b * b), x->dims[2] * b, x->dims[3] * b};
  if ((st = spnn_expect_dims(m, y, 4, want, "output"))) return st;
  if ((st = spnn_use_raw(m, x))) return st;
  d2s_state* s;
  if ((st = new_state(m, op, sizeof *s, (void**)&s))) return st;
  *s = (d2s_state){x->dims[0], want[1], x->dims[2], x->dims[3], b, mode == SPNN_D2S_CRD, x->data, y->data};
  op->macs = (double)y->count;
  op->kernel = "copy";
  op->run = run_d2s;
  return SPNN_OK;
}

/* ---- RESHAPE: the same bytes; a copy unless the plan placed both at one offset ------- */

static void run_reshape(spnn_model* m, spnn_op* op) {
  const spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* y = spnn_out(m, op);
  if (x->data != y->data) memmove(y->data, x->data, (size_t)y->count * 4);
}

spnn_status spnn_prepare_reshape(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* y = spnn_out(m, op);
  if (x->count != y->count)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "%s has %u elements, output %s has %u", x->name,
                     x->count, y->name, y->count);
  spnn_status st;
  if ((st = spnn_use_raw(m, x))) return st;
  op->macs = (double)y->count;
  op->kernel = x->data == y->data ? "alias" : "copy";
  op->run = run_reshape;
  return SPNN_OK;
}

/* ---- TRANSPOSE -------------------------------------------------------------------- */

typedef struct transpose_state {
  int ndim;
  int32_t out_dims[SPNN_MAX_NDIM];
  size_t in_stride[SPNN_MAX_NDIM]; /* input stride of each output axis */
  const float* x;
  float* y;
  size_t count;
  size_t batch, rows, cols; /* rows > 0: `batch` matrices [rows][cols] to [cols][rows] */
} transpose_state;

/* x [rows][cols] to y [cols][rows], in 4 x 4 blocks: four rows loaded, interleaved with
 * shuffles into four columns, stored as four rows of y; the edges one float at a time. */
static void transpose_2d(const float* x, float* y, size_t rows, size_t cols) {
  size_t i = 0;
  for (; i + 4 <= rows; i += 4) {
    const float* r = x + i * cols;
    size_t j = 0;
    for (; j + 4 <= cols; j += 4) {
      const v128_t r0 = wasm_v128_load(r + j), r1 = wasm_v128_load(r + cols + j);
      const v128_t r2 = wasm_v128_load(r + 2 * cols + j), r3 = wasm_v128_load(r + 3 * cols + j);
      const v128_t t0 = wasm_i32x4_shuffle(r0, r1, 0, 4, 1, 5), t1 = wasm_i32x4_shuffle(r0, r1, 2, 6, 3, 7);
      const v128_t t2 = wasm_i32x4_shuffle(r2, r3, 0, 4, 1, 5), t3 = wasm_i32x4_shuffle(r2, r3, 2, 6, 3, 7);
      float* o = y + j * rows + i;
      wasm_v128_store(o, wasm_i32x4_shuffle(t0, t2, 0, 1, 4, 5));
      wasm_v128_store(o + rows, wasm_i32x4_shuffle(t0, t2, 2, 3, 6, 7));
      wasm_v128_store(o + 2 * rows, wasm_i32x4_shuffle(t1, t3, 0, 1, 4, 5));
      wasm_v128_store(o + 3 * rows, wasm_i32x4_shuffle(t1, t3, 2, 3, 6, 7));
    }
    for (; j < cols; j++)
      for (size_t q = 0; q < 4; q++) y[j * rows + i + q] = r[q * cols + j];
  }
  for (; i < rows; i++)
    for (size_t j = 0; j < cols; j++) y[j * rows + i] = x[i * cols + j];
}

static void run_transpose(spnn_model* m, spnn_op* op) {
  (void)m;
  const transpose_state* s = (const transpose_state*)op->state;
  if (s->rows) {
    const size_t n = s->rows * s->cols;
    for (size_t b = 0; b < s->batch; b++) transpose_2d(s->x + b * n, s->y + b * n, s->rows, s->cols);
    return;
  }
  int32_t idx[SPNN_MAX_NDIM] = {0};
  size_t src = 0;
  for (size_t i = 0; i < s->count; i++) {
    s->y[i] = s->x[src];
    for (int d = s->ndim - 1; d >= 0; d--) {
      src += s->in_stride[d];
      if (++idx[d] < s->out_dims[d]) break;
      src -= s->in_stride[d] * (size_t)s->out_dims[d];
      idx[d] = 0;
    }
  }
}

/* Whether the permutation is a batch of 2-D transposes (NCHW to NHWC, say): output axes of
 * size 1 dropped and neighbours that are neighbours in the input too merged, it must read
 * (batch, cols, rows) with input strides (rows * cols, 1, cols). */
static void transpose_as_2d(transpose_state* s) {
  size_t dims[SPNN_MAX_NDIM], strides[SPNN_MAX_NDIM];
  int n = 0;
  for (int d = 0; d < s->ndim; d++) {
    if (s->out_dims[d] == 1) continue;
    if (n > 0 && strides[n - 1] == s->in_stride[d] * (size_t)s->out_dims[d]) {
      dims[n - 1] *= (size_t)s->out_dims[d];
      strides[n - 1] = s->in_stride[d];
      continue;
    }
    dims[n] = (size_t)s->out_dims[d];
    strides[n++] = s->in_stride[d];
  }
  size_t batch = 1;
  if (n == 3 && strides[0] == dims[1] * dims[2]) {
    batch = dims[0];
    dims[0] = dims[1];
    dims[1] = dims[2];
    strides[0] = strides[1];
    strides[1] = strides[2];
    n = 2;
  }
  if (n != 2 || strides[0] != 1 || strides[1] != dims[0]) return;
  s->batch = batch;
  s->rows = dims[1];
  s->cols = dims[0];
}

spnn_status spnn_prepare_transpose(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* y = spnn_out(m, op);
  int seen[SPNN_MAX_NDIM] = {0};
  int32_t want[SPNN_MAX_NDIM];
  size_t stride[SPNN_MAX_NDIM], acc = 1;
  for (int d = x->ndim - 1; d >= 0; d--) {
    stride[d] = acc;
    acc *= (size_t)x->dims[d];
  }
  transpose_state* s;
  spnn_status st;
  for (int d = 0; d < x->ndim; d++) {
    int32_t p = op->attr[d].i;
    if (p < 0 || p >= x->ndim || seen[p]++)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "perm is not a permutation of %d axes", x->ndim);
    want[d] = x->dims[p];
  }
  if ((st = spnn_expect_dims(m, y, x->ndim, want, "output"))) return st;
  if ((st = spnn_use_raw(m, x))) return st;
  if ((st = new_state(m, op, sizeof *s, (void**)&s))) return st;
  s->ndim = x->ndim;
  for (int d = 0; d < x->ndim; d++) {
    s->out_dims[d] = want[d];
    s->in_stride[d] = stride[op->attr[d].i];
  }
  s->x = x->data;
  s->y = y->data;
  s->count = y->count;
  transpose_as_2d(s);
  op->macs = (double)y->count;
  op->kernel = s->rows ? "transpose_2d" : "transpose_scalar";
  op->run = run_transpose;
  return SPNN_OK;
}

/* ---- SLICE (one axis, step >= 1) ------------------------------------------------------ */

typedef struct slice_state {
  size_t outer, inner, dim, count; /* count: output length along the axis */
  size_t begin, step;
  const float* in;
  float* out;
} slice_state;

static void run_slice(spnn_model* m, spnn_op* op) {
  (void)m;
  const slice_state* s = (const slice_state*)op->state;
  float* out = s->out;
  for (size_t o = 0; o < s->outer; o++) {
    const float* in = s->in + (o * s->dim + s->begin) * s->inner;
    for (size_t j = 0; j < s->count; j++, out += s->inner)
      spnn_copy_floats(out, in + j * s->step * s->inner, s->inner);
  }
}

spnn_status spnn_prepare_slice(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* y = spnn_out(m, op);
  int32_t axis = op->attr[SPNN_SLICE_AXIS].i, begin = op->attr[SPNN_SLICE_BEGIN].i;
  int32_t end = op->attr[SPNN_SLICE_END].i, step = op->attr[SPNN_SLICE_STEP].i;
  if (axis < 0 || axis >= x->ndim)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "axis %d of a %d-D input", (int)axis, x->ndim);
  if (!(0 <= begin && begin < end && end <= x->dims[axis] && step >= 1))
    return spnn_fail(m, SPNN_ERROR_FORMAT, "slice %d:%d:%d of an axis of %d", (int)begin, (int)end,
                     (int)step, (int)x->dims[axis]);
  int32_t want[SPNN_MAX_NDIM];
  memcpy(want, x->dims, sizeof want);
  want[axis] = (int32_t)(((int64_t)end - begin + step - 1) / step);
  spnn_status st;
  if ((st = spnn_expect_dims(m, y, x->ndim, want, "output"))) return st;
  if ((st = spnn_use_raw(m, x))) return st;
  slice_state* s;
  if ((st = new_state(m, op, sizeof *s, (void**)&s))) return st;
  s->outer = s->inner = 1;
  for (int d = 0; d < axis; d++) s->outer *= (size_t)x->dims[d];
  for (int d = axis + 1; d < x->ndim; d++) s->inner *= (size_t)x->dims[d];
  s->dim = (size_t)x->dims[axis];
  s->count = (size_t)want[axis];
  s->begin = (size_t)begin;
  s->step = (size_t)step;
  s->in = x->data;
  s->out = y->data;
  op->macs = (double)y->count;
  op->kernel = "copy";
  op->run = run_slice;
  return SPNN_OK;
}

/* ---- PAD_REFLECT (4-D; mirrored or edge-repeated borders) ----------------------------- */

typedef struct pad_reflect_state {
  int32_t in[4], out[4];
  int32_t* map[4]; /* per axis: output index -> input index */
  const float* x;
  float* y;
} pad_reflect_state;

static void free_pad_reflect(void* p) {
  pad_reflect_state* s = (pad_reflect_state*)p;
  for (int d = 0; d < 4; d++) free(s->map[d]);
  free(s);
}

static void run_pad_reflect(spnn_model* m, spnn_op* op) {
  (void)m;
  const pad_reflect_state* s = (const pad_reflect_state*)op->state;
  float* out = s->y;
  for (int32_t a = 0; a < s->out[0]; a++)
    for (int32_t b = 0; b < s->out[1]; b++) {
      size_t plane = (size_t)s->map[0][a] * s->in[1] + (size_t)s->map[1][b];
      for (int32_t c = 0; c < s->out[2]; c++) {
        const float* row = s->x + (plane * s->in[2] + (size_t)s->map[2][c]) * s->in[3];
        for (int32_t d = 0; d < s->out[3]; d++) *out++ = row[s->map[3][d]];
      }
    }
}

spnn_status spnn_prepare_pad_reflect(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* y = spnn_out(m, op);
  int edge = op->attr[SPNN_PAD_REFLECT_EDGE].i;
  spnn_status st;
  if ((st = spnn_expect_ndim(m, x, 4, "input"))) return st;
  if (edge != 0 && edge != 1) return spnn_fail(m, SPNN_ERROR_FORMAT, "edge %d (must be 0 or 1)", edge);
  int32_t want[4];
  if ((st = padded_dims(m, op, x, want))) return st;
  for (int d = 0; d < 4 && !edge; d++) {
    int32_t b = op->attr[2 * d].i, e = op->attr[2 * d + 1].i, n = x->dims[d];
    if (b > n - 1 || e > n - 1)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "reflect padding %d/%d of axis %d of size %d", (int)b,
                       (int)e, d, (int)n);
  }
  if ((st = spnn_expect_dims(m, y, 4, want, "output"))) return st;
  if ((st = spnn_use_raw(m, x))) return st;
  pad_reflect_state* s = (pad_reflect_state*)calloc(1, sizeof *s);
  if (!s) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  op->state = s;
  op->free_state = free_pad_reflect;
  for (int d = 0; d < 4; d++) {
    int32_t n = x->dims[d], b = op->attr[2 * d].i;
    s->in[d] = n;
    s->out[d] = want[d];
    if (!(s->map[d] = (int32_t*)malloc((size_t)want[d] * sizeof(int32_t))))
      return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
    for (int32_t i = 0; i < want[d]; i++) {
      int32_t j = i - b; /* reflect: one bounce is enough, every pad is below n */
      if (edge) j = j < 0 ? 0 : (j >= n ? n - 1 : j);
      else j = j < 0 ? -j : (j >= n ? 2 * (n - 1) - j : j);
      s->map[d][i] = j;
    }
  }
  s->x = x->data;
  s->y = y->data;
  op->state_bytes = (size_t)(want[0] + want[1] + want[2] + want[3]) * sizeof(int32_t);
  op->macs = (double)y->count;
  op->kernel = "gather";
  op->run = run_pad_reflect;
  return SPNN_OK;
}
