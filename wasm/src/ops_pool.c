/* Pooling and reductions: MAX_POOL2D, AVG_POOL2D (per plane, threads split planes), MEAN
 * (any axes), SOFTMAX and LOG_SOFTMAX (any axis) and LRN (across channels, threads split planes). Scalar
 * but for 2x2 stride-2 max pooling without padding (the common downsampling step), which
 * takes four outputs per vector step, and LRN with beta 0.75 (four pixels per step). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "simd.h"

#define MAX_GEOMETRY (1 << 16)

/* ---- MAX_POOL2D / AVG_POOL2D --------------------------------------------------------- */

typedef struct pool_state {
  int32_t h, w, oh, ow, kh, kw, sh, sw, pt, pl;
  int is_max, include_pad;
  const float* in;
  float* out;
  float lo, hi;
} pool_state;

/* Whether the vector 2x2 stride-2 max pooling applies (every window inside the input). */
static int is_max2x2(const pool_state* s) {
  return s->is_max && s->kh == 2 && s->kw == 2 && s->sh == 2 && s->sw == 2 && s->pt == 0 &&
         s->pl == 0 && 2 * s->oh <= s->h && 2 * s->ow <= s->w;
}

/* Outputs [0, ow & ~3) of one row of 2x2 stride-2 max pooling: the two input rows' maxima,
 * then the maxima of even and odd columns. f32x4.max returns NaN if either input is NaN,
 * as the scalar path does. */
static int32_t max2x2_row(const float* r0, const float* r1, float* out, int32_t ow,
                          v128_t vmin, v128_t vmax) {
  int32_t ox = 0;
  for (; ox + 4 <= ow; ox += 4) {
    const v128_t a = wasm_f32x4_max(wasm_v128_load(r0 + 2 * ox), wasm_v128_load(r1 + 2 * ox));
    const v128_t b =
        wasm_f32x4_max(wasm_v128_load(r0 + 2 * ox + 4), wasm_v128_load(r1 + 2 * ox + 4));
    const v128_t m = wasm_f32x4_max(wasm_i32x4_shuffle(a, b, 0, 2, 4, 6),
                                    wasm_i32x4_shuffle(a, b, 1, 3, 5, 7));
    wasm_v128_store(out + ox, spnn_clamp(m, vmin, vmax));
  }
  return ox;
}

static void pool_task(void* ctx, size_t p_begin, size_t p_end) {
  const pool_state* s = (const pool_state*)ctx;
  const int fast = is_max2x2(s);
  const v128_t vmin = wasm_f32x4_splat(s->lo), vmax = wasm_f32x4_splat(s->hi);
  for (size_t p = p_begin; p < p_end; p++) {
    const float* in = s->in + p * (size_t)s->h * s->w;
    float* out = s->out + p * (size_t)s->oh * s->ow;
    for (int32_t oy = 0; oy < s->oh; oy++) {
      int32_t y0 = oy * s->sh - s->pt, y1 = y0 + s->kh;
      int32_t cy0 = y0 < 0 ? 0 : y0, cy1 = y1 > s->h ? s->h : y1;
      int32_t ox_start = 0;
      if (fast) {
        const float* r0 = in + (size_t)y0 * s->w;
        ox_start = max2x2_row(r0, r0 + s->w, out + (size_t)oy * s->ow, s->ow, vmin, vmax);
      }
      for (int32_t ox = ox_start; ox < s->ow; ox++) {
        int32_t x0 = ox * s->sw - s->pl, x1 = x0 + s->kw;
        int32_t cx0 = x0 < 0 ? 0 : x0, cx1 = x1 > s->w ? s->w : x1;
        float v;
        if (s->is_max) {
          v = -INFINITY;
          for (int32_t y = cy0; y < cy1; y++)
            for (int32_t x = cx0; x < cx1; x++) {
              float t = in[(size_t)y * s->w + x];
              v = (t > v || t != t) ? t : v; /* NaN wins, as in numpy's max */
            }
        } else {
          float sum = 0.0f;
          for (int32_t y = cy0; y < cy1; y++)
            for (int32_t x = cx0; x < cx1; x++) sum += in[(size_t)y * s->w + x];
          int32_t count = s->include_pad ? s->kh * s->kw
                                         : (cy1 > cy0 ? cy1 - cy0 : 0) * (cx1 > cx0 ? cx1 - cx0 : 0);
          v = sum / (float)count;
        }
        v = v < s->lo ? s->lo : v;
        out[(size_t)oy * s->ow + ox] = v > s->hi ? s->hi : v;
      }
    }
  }
}

static void run_pool(spnn_model* m, spnn_op* op) {
  const spnn_tensor* y = spnn_out(m, op);
  spnn_parallel(m, op->macs, (size_t)y->dims[0] * y->dims[1], 1, pool_task, op->state);
}

spnn_status spnn_prepare_pool(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* y = spnn_out(m, op);
  const spnn_attr* a = op->attr;
  spnn_status st;
  if ((st = spnn_expect_ndim(m, x, 4, "input"))) return st;
  static const char* const names[] = {"kernel_h", "kernel_w", "stride_h", "stride_w",
                                      "pad_top", "pad_left", "pad_bottom", "pad_right"};
  for (int i = 0; i < 8; i++)
    if (a[i].i < (i < 4 ? 1 : 0) || a[i].i > MAX_GEOMETRY)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "attribute %s = %d is out of range", names[i], (int)a[i].i);
  int is_max = op->code == SPNN_OP_MAX_POOL2D;
  int32_t act = is_max ? a[SPNN_MAX_POOL2D_ACT].i : a[SPNN_AVG_POOL2D_ACT].i;
  float lo, hi;
  if (!spnn_act_bounds(act, &lo, &hi))
    return spnn_fail(m, SPNN_ERROR_FORMAT, "unknown fused activation %d", (int)act);
  int64_t ph = (int64_t)x->dims[2] + a[4].i + a[6].i - a[0].i;
  int64_t pw = (int64_t)x->dims[3] + a[5].i + a[7].i - a[1].i;
  if (ph < 0 || pw < 0)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "the %dx%d window does not fit the padded input",
                     (int)a[0].i, (int)a[1].i);
  int32_t want[4] = {x->dims[0], x->dims[1], (int32_t)(ph / a[2].i + 1), (int32_t)(pw / a[3].i + 1)};
  if ((st = spnn_expect_dims(m, y, 4, want, "output"))) return st;
  if ((st = spnn_use_raw(m, x))) return st;
  pool_state* s = (pool_state*)calloc(1, sizeof *s);
  if (!s) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  op->state = s;
  op->free_state = free;
  *s = (pool_state){x->dims[2], x->dims[3], want[2], want[3], a[0].i, a[1].i, a[2].i, a[3].i,
                    a[4].i, a[5].i, is_max, is_max ? 0 : a[SPNN_AVG_POOL2D_COUNT_INCLUDE_PAD].i != 0,
                    x->data, y->data, lo, hi};
  op->macs = (double)y->count * a[0].i * a[1].i;
  op->kernel = is_max2x2(s) ? "maxpool_2x2s2" : "pool_scalar";
  op->run = run_pool;
  return SPNN_OK;
}

/* ---- MEAN -------------------------------------------------------------------------- */

typedef struct mean_state {
  int ndim;
  int32_t dims[SPNN_MAX_NDIM];
  uint32_t mask;
  size_t suffix; /* when the reduced axes are exactly a suffix: elements per output */
  const float* in;
  float* out;
  double* acc;   /* general case: one accumulator per output element */
  size_t out_count;
} mean_state;

static void free_mean(void* p) {
  mean_state* s = (mean_state*)p;
  spnn_dealloc(s->acc);
  free(s);
}

static void mean_suffix_task(void* ctx, size_t b, size_t e) {
  const mean_state* s = (const mean_state*)ctx;
  for (size_t o = b; o < e; o++) {
    const float* in = s->in + o * s->suffix;
    double sum = 0;
    for (size_t i = 0; i < s->suffix; i++) sum += in[i];
    s->out[o] = (float)(sum / (double)s->suffix);
  }
}

static void run_mean(spnn_model* m, spnn_op* op) {
  mean_state* s = (mean_state*)op->state;
  if (s->suffix) {
    spnn_parallel(m, op->macs, s->out_count, 1, mean_suffix_task, s);
    return;
  }
  memset(s->acc, 0, s->out_count * sizeof(double));
  int32_t idx[SPNN_MAX_NDIM] = {0};
  size_t total = spnn_in(m, op, 0)->count, reduced = total / s->out_count;
  for (size_t i = 0; i < total; i++) {
    size_t o = 0;
    for (int d = 0; d < s->ndim; d++)
      if (!(s->mask >> d & 1)) o = o * (size_t)s->dims[d] + (size_t)idx[d];
    s->acc[o] += s->in[i];
    for (int d = s->ndim - 1; d >= 0 && ++idx[d] == s->dims[d]; d--) idx[d] = 0;
  }
  for (size_t o = 0; o < s->out_count; o++) s->out[o] = (float)(s->acc[o] / (double)reduced);
}

spnn_status spnn_prepare_mean(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* y = spnn_out(m, op);
  uint32_t mask = (uint32_t)op->attr[SPNN_MEAN_AXES_MASK].i;
  int keep = op->attr[SPNN_MEAN_KEEPDIMS].i;
  if (mask == 0 || mask >> x->ndim)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "axes_mask 0x%x does not name axes of a %d-D input", mask,
                     x->ndim);
  if (keep != 0 && keep != 1)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "keepdims %d (must be 0 or 1)", keep);
  int32_t want[SPNN_MAX_NDIM];
  int nd = 0;
  for (int d = 0; d < x->ndim; d++) {
    if (!(mask >> d & 1)) want[nd++] = x->dims[d];
    else if (keep) want[nd++] = 1;
  }
  spnn_status st;
  if ((st = spnn_expect_dims(m, y, nd, want, "output"))) return st;
  if ((st = spnn_use_raw(m, x))) return st;
  mean_state* s = (mean_state*)calloc(1, sizeof *s);
  if (!s) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  op->state = s;
  op->free_state = free_mean;
  s->ndim = x->ndim;
  memcpy(s->dims, x->dims, sizeof s->dims);
  s->mask = mask;
  s->in = x->data;
  s->out = y->data;
  s->out_count = y->count;
  /* reduced axes form a suffix (ignoring size-1 axes)? then each output is a contiguous run */
  int suffix = 1, seen_reduced = 0;
  for (int d = 0; d < x->ndim; d++) {
    if (x->dims[d] == 1) continue;
    if (mask >> d & 1) seen_reduced = 1;
    else if (seen_reduced) suffix = 0;
  }
  if (suffix) {
    s->suffix = x->count / y->count;
    op->kernel = "mean_rows";
  } else {
    if (!(s->acc = (double*)spnn_alloc(y->count * sizeof(double))))
      return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
    op->state_bytes = y->count * sizeof(double);
    op->kernel = "mean_general";
  }
  op->macs = (double)x->count;
  op->run = run_mean;
  return SPNN_OK;
}

/* ---- SOFTMAX ----------------------------------------------------------------------- */

typedef struct softmax_state {
  size_t outer, n, inner;
  float beta;
  int log; /* LOG_SOFTMAX: (x - max) - log(sum of exp) */
  const float* in;
  float* out;
} softmax_state;

static void softmax_task(void* ctx, size_t b, size_t e) {
  const softmax_state* s = (const softmax_state*)ctx;
  for (size_t r = b; r < e; r++) { /* r = outer * inner index */
    size_t o = r / s->inner, i = r % s->inner;
    const float* in = s->in + o * s->n * s->inner + i;
    float* out = s->out + o * s->n * s->inner + i;
    float mx = -INFINITY;
    for (size_t k = 0; k < s->n; k++) {
      float v = s->beta * in[k * s->inner];
      mx = v > mx ? v : mx;
    }
    float sum = 0.0f;
    for (size_t k = 0; k < s->n; k++) {
      float v = expf(s->beta * in[k * s->inner] - mx);
      out[k * s->inner] = v;
      sum += v;
    }
    if (s->log) {
      float l = logf(sum);
      for (size_t k = 0; k < s->n; k++) out[k * s->inner] = (s->beta * in[k * s->inner] - mx) - l;
    } else {
      for (size_t k = 0; k < s->n; k++) out[k * s->inner] /= sum;
    }
  }
}

static void run_softmax(spnn_model* m, spnn_op* op) {
  softmax_state* s = (softmax_state*)op->state;
  spnn_parallel(m, op->macs, s->outer * s->inner, 1, softmax_task, s);
}

spnn_status spnn_prepare_softmax(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* y = spnn_out(m, op);
  int32_t axis = op->attr[SPNN_SOFTMAX_AXIS].i;
  spnn_status st;
  if (x->ndim < 1 || axis < -x->ndim || axis >= x->ndim)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "axis %d of a %d-D input", (int)axis, x->ndim);
  if (axis < 0) axis += x->ndim;
  if ((st = spnn_expect_dims(m, y, x->ndim, x->dims, "output"))) return st;
  if ((st = spnn_use_raw(m, x))) return st;
  softmax_state* s = (softmax_state*)calloc(1, sizeof *s);
  if (!s) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  op->state = s;
  op->free_state = free;
  s->outer = s->inner = 1;
  for (int d = 0; d < axis; d++) s->outer *= (size_t)x->dims[d];
  for (int d = axis + 1; d < x->ndim; d++) s->inner *= (size_t)x->dims[d];
  s->n = (size_t)x->dims[axis];
  s->log = op->code == SPNN_OP_LOG_SOFTMAX;
  s->beta = s->log ? 1.0f : op->attr[SPNN_SOFTMAX_BETA].f;
  s->in = x->data;
  s->out = y->data;
  op->macs = 20.0 * x->count;
  op->kernel = s->log ? "log_softmax_scalar" : "softmax_scalar";
  op->run = run_softmax;
  return SPNN_OK;
}

/* ---- LRN (ONNX): across channels, per plane ---------------------------------------- */

typedef struct lrn_state {
  size_t channels, plane; /* C, H*W */
  int32_t before, after;  /* the window of channel c: c - before .. c + after */
  float scale, bias, beta; /* scale = alpha / size */
  int beta_3_4;            /* beta == 0.75: t^beta = sqrt(t) * sqrt(sqrt(t)), in vectors */
  const float* in;
  float* out;
} lrn_state;

static void lrn_task(void* ctx, size_t p_begin, size_t p_end) {
  const lrn_state* s = (const lrn_state*)ctx;
  const v128_t vscale = wasm_f32x4_splat(s->scale), vbias = wasm_f32x4_splat(s->bias);
  for (size_t p = p_begin; p < p_end; p++) { /* p = n * C + c */
    size_t c = p % s->channels;
    size_t c0 = c < (size_t)s->before ? 0 : c - (size_t)s->before;
    size_t c1 = c + (size_t)s->after + 1 > s->channels ? s->channels : c + (size_t)s->after + 1;
    const float* x = s->in + p * s->plane;
    const float* first = s->in + (p - c + c0) * s->plane; /* channel c0 of the same image */
    float* y = s->out + p * s->plane;
    size_t i = 0;
    if (s->beta_3_4) {
      for (; i + 4 <= s->plane; i += 4) {
        v128_t sum = wasm_f32x4_splat(0.0f);
        for (size_t k = 0; k < c1 - c0; k++) {
          v128_t v = wasm_v128_load(first + k * s->plane + i);
          sum = wasm_f32x4_add(sum, wasm_f32x4_mul(v, v));
        }
        v128_t t = wasm_f32x4_add(vbias, wasm_f32x4_mul(vscale, sum));
        v128_t r = wasm_f32x4_sqrt(t);
        v128_t d = wasm_f32x4_mul(r, wasm_f32x4_sqrt(r));
        wasm_v128_store(y + i, wasm_f32x4_div(wasm_v128_load(x + i), d));
      }
    }
    for (; i < s->plane; i++) {
      float sum = 0.0f;
      for (size_t k = 0; k < c1 - c0; k++) {
        float v = first[k * s->plane + i];
        sum += v * v;
      }
      float t = s->bias + s->scale * sum;
      float d = s->beta_3_4 ? sqrtf(t) * sqrtf(sqrtf(t)) : powf(t, s->beta);
      y[i] = x[i] / d;
    }
  }
}

static void run_lrn(spnn_model* m, spnn_op* op) {
  lrn_state* s = (lrn_state*)op->state;
  spnn_parallel(m, op->macs, spnn_out(m, op)->count / s->plane, 1, lrn_task, s);
}

spnn_status spnn_prepare_lrn(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* y = spnn_out(m, op);
  int32_t size = op->attr[SPNN_LRN_SIZE].i;
  spnn_status st;
  if ((st = spnn_expect_ndim(m, x, 4, "input"))) return st;
  if (size < 1 || size > MAX_GEOMETRY)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "LRN size %d (must be 1..%d)", (int)size, MAX_GEOMETRY);
  if ((st = spnn_expect_dims(m, y, 4, x->dims, "output"))) return st;
  if ((st = spnn_use_raw(m, x))) return st;
  lrn_state* s = (lrn_state*)calloc(1, sizeof *s);
  if (!s) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  op->state = s;
  op->free_state = free;
  s->channels = (size_t)x->dims[1];
  s->plane = (size_t)x->dims[2] * (size_t)x->dims[3];
  s->before = (size - 1) / 2;
  s->after = size / 2;
  s->scale = op->attr[SPNN_LRN_ALPHA].f / (float)size;
  s->bias = op->attr[SPNN_LRN_BIAS].f;
  s->beta = op->attr[SPNN_LRN_BETA].f;
  s->beta_3_4 = s->beta == 0.75f;
  s->in = x->data;
  s->out = y->data;
  if (s->plane == 0 || s->channels == 0) return spnn_fail(m, SPNN_ERROR_FORMAT, "empty LRN input");
  size_t window = (size_t)size < s->channels ? (size_t)size : s->channels;
  op->macs = (double)x->count * (double)(window + (s->beta_3_4 ? 4 : 20));
  op->kernel = s->beta_3_4 ? "lrn_simd128" : "lrn_scalar";
  op->run = run_lrn;
  return SPNN_OK;
}
