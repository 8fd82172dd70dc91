/* Elementwise ops: ADD/MUL/SUB/DIV/MAX/MIN/POW (numpy broadcasting, fused clamp), SUM (n inputs of
 * one shape, fused clamp), PRELU (slope broadcast against x) and the activations. SIMD128 on contiguous rows; each element is
 * computed the same way whatever the row split, so threads never change a result.
 *
 * Broadcasting is planned at load: axes where the output is 1 are dropped, and adjacent
 * axes where each operand is either full on both or broadcast on both are merged. The
 * last merged axis is a "row" that each operand reads contiguously or as one repeated
 * value; the common cases (same shape, per-channel [1,C,1,1], scalar) become long rows.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "simd.h"

typedef struct bcast_plan {
  int ndim;                        /* merged axes, the last is the row */
  int64_t dims[SPNN_MAX_NDIM];
  int64_t stride_a[SPNN_MAX_NDIM]; /* element strides, 0 where broadcast */
  int64_t stride_b[SPNN_MAX_NDIM];
  size_t rows, row_len;
  const float* a;
  const float* b;
  float* out;
  float lo, hi;
  int code;
} bcast_plan;

/* ---- row kernels --------------------------------------------------------------------- */

#define DEFINE_ROW(NAME, VEC_EXPR, SCALAR_EXPR)                                           \
  static void NAME(const float* a, size_t sa, const float* b, size_t sb, float* o, size_t n, \
                   float lo, float hi) {                                                  \
    size_t i = 0;                                                                         \
    v128_t vlo = wasm_f32x4_splat(lo), vhi = wasm_f32x4_splat(hi);                        \
    v128_t va = wasm_f32x4_splat(a[0]), vb = wasm_f32x4_splat(b[0]);                      \
    for (; i + 4 <= n; i += 4) {                                                          \
      v128_t x = sa ? wasm_v128_load(a + i) : va;                                         \
      v128_t y = sb ? wasm_v128_load(b + i) : vb;                                         \
      v128_t r = VEC_EXPR;                                                                \
      wasm_v128_store(o + i, wasm_f32x4_min(wasm_f32x4_max(r, vlo), vhi));                \
    }                                                                                     \
    for (; i < n; i++) {                                                                  \
      float x = a[sa * i], y = b[sb * i];                                                 \
      float r = SCALAR_EXPR;                                                              \
      r = r < lo ? lo : r;                                                                \
      o[i] = r > hi ? hi : r;                                                             \
    }                                                                                     \
  }

DEFINE_ROW(row_add, wasm_f32x4_add(x, y), x + y)

void spnn_f32_add_clamped(const float* a, const float* b, float* out, size_t n, float lo, float hi) {
  row_add(a, 1, b, 1, out, n, lo, hi);
}

void spnn_f32_clamp(const float* in, float* out, size_t n, float lo, float hi) {
  const v128_t vlo = wasm_f32x4_splat(lo), vhi = wasm_f32x4_splat(hi);
  size_t i = 0;
  for (; i + 4 <= n; i += 4)
    wasm_v128_store(out + i, wasm_f32x4_min(wasm_f32x4_max(wasm_v128_load(in + i), vlo), vhi));
  for (; i < n; i++) {
    float v = in[i];
    if (v == v) v = v < lo ? lo : (v > hi ? hi : v);
    out[i] = v;
  }
}
DEFINE_ROW(row_mul, wasm_f32x4_mul(x, y), x * y)
DEFINE_ROW(row_sub, wasm_f32x4_sub(x, y), x - y)
DEFINE_ROW(row_div, wasm_f32x4_div(x, y), x / y)
/* MAX/MIN: NaN in either operand gives NaN, as f32x4.max/min do */
DEFINE_ROW(row_max, wasm_f32x4_max(x, y), (x != x || y != y) ? x + y : (x > y ? x : y))
DEFINE_ROW(row_min, wasm_f32x4_min(x, y), (x != x || y != y) ? x + y : (x < y ? x : y))

/* POW: powf per element (no vector form) */
static void row_pow(const float* a, size_t sa, const float* b, size_t sb, float* o, size_t n,
                    float lo, float hi) {
  for (size_t i = 0; i < n; i++) {
    float r = powf(a[sa * i], b[sb * i]);
    r = r < lo ? lo : r;
    o[i] = r > hi ? hi : r;
  }
}
/* PRELU: a is x, b the slope; no clamp (lo/hi are infinite). */
DEFINE_ROW(row_prelu,
           wasm_v128_bitselect(x, wasm_f32x4_mul(x, y), wasm_f32x4_ge(x, wasm_f32x4_splat(0.0f))),
           x >= 0.0f ? x : y * x)

typedef void (*row_fn)(const float*, size_t, const float*, size_t, float*, size_t, float, float);

static row_fn row_for(int code) {
  switch (code) {
    case SPNN_OP_ADD: return row_add;
    case SPNN_OP_MUL: return row_mul;
    case SPNN_OP_SUB: return row_sub;
    case SPNN_OP_DIV: return row_div;
    case SPNN_OP_MAX: return row_max;
    case SPNN_OP_MIN: return row_min;
    case SPNN_OP_POW: return row_pow;
    default: return row_prelu;
  }
}

static void bcast_task(void* ctx, size_t r_begin, size_t r_end) {
  const bcast_plan* p = (const bcast_plan*)ctx;
  row_fn fn = row_for(p->code);
  int last = p->ndim - 1;
  size_t sa = p->stride_a[last] != 0, sb = p->stride_b[last] != 0;
  for (size_t r = r_begin; r < r_end; r++) {
    /* row index -> offsets, innermost outer axis fastest */
    size_t rem = r;
    int64_t oa = 0, ob = 0;
    for (int d = last - 1; d >= 0; d--) {
      int64_t i = (int64_t)(rem % (size_t)p->dims[d]);
      rem /= (size_t)p->dims[d];
      oa += i * p->stride_a[d];
      ob += i * p->stride_b[d];
    }
    fn(p->a + oa, sa, p->b + ob, sb, p->out + r * p->row_len, p->row_len, p->lo, p->hi);
  }
}

/* A plan that is one row (same shapes, or a scalar operand): elements [begin, end) of it.
 * Threads get spans starting at multiples of 16, so every element falls in the same vector
 * or scalar step as in one whole-row call and the results do not depend on the split. */
static void span_task(void* ctx, size_t begin, size_t end) {
  const bcast_plan* p = (const bcast_plan*)ctx;
  size_t sa = p->stride_a[0] != 0, sb = p->stride_b[0] != 0;
  row_for(p->code)(p->a + sa * begin, sa, p->b + sb * begin, sb, p->out + begin, end - begin,
                   p->lo, p->hi);
}

static void run_bcast(spnn_model* m, spnn_op* op) {
  bcast_plan* p = (bcast_plan*)op->state;
  if (p->rows == 1) spnn_parallel(m, op->macs, p->row_len, 16, span_task, p);
  else spnn_parallel(m, op->macs, p->rows, 1, bcast_task, p);
}

/* Plans out = f(a, b) with b broadcast to out (and a too, for binary ops). */
static spnn_status plan_broadcast(spnn_model* m, spnn_op* op, const spnn_tensor* a,
                                  const spnn_tensor* b, const spnn_tensor* out, bcast_plan* p) {
  int nd = out->ndim;
  /* right-aligned dims of each operand against the output */
  int64_t da[SPNN_MAX_NDIM], db[SPNN_MAX_NDIM];
  for (int d = 0; d < nd; d++) {
    int ia = d - (nd - a->ndim), ib = d - (nd - b->ndim);
    da[d] = ia >= 0 ? a->dims[ia] : 1;
    db[d] = ib >= 0 ? b->dims[ib] : 1;
  }
  /* element strides of each operand in its own layout */
  int64_t sa[SPNN_MAX_NDIM], sb[SPNN_MAX_NDIM], acc_a = 1, acc_b = 1;
  for (int d = nd - 1; d >= 0; d--) {
    sa[d] = da[d] == 1 ? 0 : acc_a;
    sb[d] = db[d] == 1 ? 0 : acc_b;
    acc_a *= da[d];
    acc_b *= db[d];
  }
  p->ndim = 0;
  for (int d = 0; d < nd; d++) {
    int64_t n = out->dims[d];
    if (n == 1) continue;
    int k = p->ndim;
    if (k > 0 && (sa[d] == 0) == (p->stride_a[k - 1] == 0) &&
        (sb[d] == 0) == (p->stride_b[k - 1] == 0)) {
      /* merge into the previous axis: strides of the merged axis are the inner ones */
      p->dims[k - 1] *= n;
      p->stride_a[k - 1] = sa[d];
      p->stride_b[k - 1] = sb[d];
      continue;
    }
    p->dims[k] = n;
    p->stride_a[k] = sa[d];
    p->stride_b[k] = sb[d];
    p->ndim++;
  }
  if (p->ndim == 0) { /* a single element */
    p->ndim = 1;
    p->dims[0] = 1;
    p->stride_a[0] = p->stride_b[0] = 0;
  }
  p->row_len = (size_t)p->dims[p->ndim - 1];
  p->rows = out->count / p->row_len;
  (void)m;
  (void)op;
  return SPNN_OK;
}

static spnn_status broadcast_shape(spnn_model* m, const spnn_tensor* a, const spnn_tensor* b,
                                   const spnn_tensor* out, int b_only) {
  int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
  int32_t want[SPNN_MAX_NDIM];
  for (int d = 0; d < nd; d++) {
    int ia = d - (nd - a->ndim), ib = d - (nd - b->ndim);
    int32_t x = ia >= 0 ? a->dims[ia] : 1, y = ib >= 0 ? b->dims[ib] : 1;
    if (x != y && x != 1 && y != 1)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "shapes of %s and %s do not broadcast (axis %d: %d vs %d)",
                       a->name, b->name, d, x, y);
    if (b_only && x != y && x == 1)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "%s does not broadcast to the shape of %s", b->name,
                       a->name);
    want[d] = x > y ? x : y;
  }
  return spnn_expect_dims(m, out, nd, want, "output");
}

static spnn_status prepare_bcast(spnn_model* m, spnn_op* op, float lo, float hi) {
  spnn_tensor* a = spnn_in(m, op, 0);
  spnn_tensor* b = spnn_in(m, op, 1);
  spnn_tensor* y = spnn_out(m, op);
  spnn_status st;
  if ((st = broadcast_shape(m, a, b, y, op->code == SPNN_OP_PRELU))) return st;
  if ((st = spnn_use_raw(m, a)) || (st = spnn_use_raw(m, b))) return st;
  bcast_plan* p = (bcast_plan*)calloc(1, sizeof *p);
  if (!p) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  op->state = p;
  op->free_state = free;
  if ((st = plan_broadcast(m, op, a, b, y, p))) return st;
  p->a = a->data;
  p->b = b->data;
  p->out = y->data;
  p->lo = lo;
  p->hi = hi;
  p->code = op->code;
  op->macs = (double)y->count;
  op->kernel = op->code == SPNN_OP_POW                                   ? "rows_scalar"
               : p->stride_a[p->ndim - 1] && p->stride_b[p->ndim - 1] ? "rows_vv"
                                                                      : "rows_vs";
  if (op->code == SPNN_OP_POW) op->macs *= 20; /* transcendental */
  op->run = run_bcast;
  return SPNN_OK;
}

spnn_status spnn_prepare_binary(spnn_model* m, spnn_op* op) {
  float lo, hi;
  if (!spnn_act_bounds(op->attr[0].i, &lo, &hi))
    return spnn_fail(m, SPNN_ERROR_FORMAT, "unknown fused activation %d", (int)op->attr[0].i);
  return prepare_bcast(m, op, lo, hi);
}

spnn_status spnn_prepare_prelu(spnn_model* m, spnn_op* op) {
  return prepare_bcast(m, op, -INFINITY, INFINITY);
}

/* ---- unary activations ------------------------------------------------------------- */

typedef struct unary_state {
  const float* in;
  float* out;
  float p0, p1; /* CLIP min/max, HARD_SIGMOID alpha/beta, LEAKY_RELU alpha, ELU alpha/scale */
  int code;
} unary_state;

static float sigmoidf(float x) {
  /* exp of -|x| never overflows */
  float e = expf(-fabsf(x));
  return x >= 0 ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

static void unary_task(void* ctx, size_t b, size_t e) {
  const unary_state* s = (const unary_state*)ctx;
  const float* in = s->in;
  float* out = s->out;
  size_t i = b;
  v128_t zero = wasm_f32x4_splat(0.0f);
  switch (s->code) {
    case SPNN_OP_RELU:
      for (; i + 4 <= e; i += 4) wasm_v128_store(out + i, wasm_f32x4_max(wasm_v128_load(in + i), zero));
      for (; i < e; i++) out[i] = in[i] > 0.0f ? in[i] : (in[i] != in[i] ? in[i] : 0.0f);
      break;
    case SPNN_OP_CLIP:
      spnn_f32_clamp(in + b, out + b, e - b, s->p0, s->p1);
      break;
    case SPNN_OP_HARD_SWISH: {
      v128_t three = wasm_f32x4_splat(3.0f), six = wasm_f32x4_splat(6.0f);
      for (; i + 4 <= e; i += 4) {
        v128_t x = wasm_v128_load(in + i);
        v128_t c = wasm_f32x4_min(wasm_f32x4_max(wasm_f32x4_add(x, three), zero), six);
        wasm_v128_store(out + i, wasm_f32x4_div(wasm_f32x4_mul(x, c), six));
      }
      for (; i < e; i++) {
        float x = in[i], c = x + 3.0f;
        c = c < 0.0f ? 0.0f : (c > 6.0f ? 6.0f : c);
        out[i] = x * c / 6.0f;
      }
      break;
    }
    case SPNN_OP_HARD_SIGMOID: {
      v128_t alpha = wasm_f32x4_splat(s->p0), beta = wasm_f32x4_splat(s->p1);
      v128_t one = wasm_f32x4_splat(1.0f);
      for (; i + 4 <= e; i += 4) {
        v128_t v = wasm_f32x4_add(wasm_f32x4_mul(alpha, wasm_v128_load(in + i)), beta);
        wasm_v128_store(out + i, wasm_f32x4_min(wasm_f32x4_max(v, zero), one));
      }
      for (; i < e; i++) {
        float v = s->p0 * in[i] + s->p1;
        if (v == v) v = v < 0.0f ? 0.0f : (v > 1.0f ? 1.0f : v);
        out[i] = v;
      }
      break;
    }
    case SPNN_OP_LEAKY_RELU: {
      v128_t alpha = wasm_f32x4_splat(s->p0);
      for (; i + 4 <= e; i += 4) {
        v128_t x = wasm_v128_load(in + i);
        wasm_v128_store(out + i, wasm_v128_bitselect(x, wasm_f32x4_mul(alpha, x), wasm_f32x4_ge(x, zero)));
      }
      for (; i < e; i++) out[i] = in[i] >= 0.0f ? in[i] : s->p0 * in[i];
      break;
    }
    case SPNN_OP_SIGMOID:
      for (; i < e; i++) out[i] = sigmoidf(in[i]);
      break;
    case SPNN_OP_ABS:
      for (; i + 4 <= e; i += 4) wasm_v128_store(out + i, wasm_f32x4_abs(wasm_v128_load(in + i)));
      for (; i < e; i++) out[i] = fabsf(in[i]);
      break;
    case SPNN_OP_SQRT:
      for (; i + 4 <= e; i += 4) wasm_v128_store(out + i, wasm_f32x4_sqrt(wasm_v128_load(in + i)));
      for (; i < e; i++) out[i] = sqrtf(in[i]);
      break;
    case SPNN_OP_EXP:
      for (; i < e; i++) out[i] = expf(in[i]);
      break;
    case SPNN_OP_ELU: /* p0 alpha, p1 scale */
      for (; i < e; i++) out[i] = s->p1 * (in[i] > 0.0f ? in[i] : s->p0 * expm1f(in[i]));
      break;
    case SPNN_OP_SOFTPLUS: /* log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|)), never overflows */
      for (; i < e; i++) {
        float x = in[i];
        out[i] = (x > 0.0f ? x : 0.0f) + log1pf(expf(-fabsf(x)));
      }
      break;
    default: /* TANH */
      for (; i < e; i++) out[i] = tanhf(in[i]);
      break;
  }
}

static void run_unary(spnn_model* m, spnn_op* op) {
  unary_state* s = (unary_state*)op->state;
  spnn_parallel(m, op->macs, spnn_out(m, op)->count, 16, unary_task, s);
}

spnn_status spnn_prepare_unary(spnn_model* m, spnn_op* op) {
  spnn_tensor* x = spnn_in(m, op, 0);
  spnn_tensor* y = spnn_out(m, op);
  spnn_status st;
  if ((st = spnn_expect_dims(m, y, x->ndim, x->dims, "output"))) return st;
  if ((st = spnn_use_raw(m, x))) return st;
  unary_state* s = (unary_state*)calloc(1, sizeof *s);
  if (!s) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  op->state = s;
  op->free_state = free;
  s->in = x->data;
  s->out = y->data;
  s->code = op->code;
  s->p0 = op->attr[0].f;
  s->p1 = op->attr[1].f;
  if (op->code == SPNN_OP_CLIP && !(s->p0 <= s->p1))
    return spnn_fail(m, SPNN_ERROR_FORMAT, "CLIP min %g is not <= max %g", s->p0, s->p1);
  /* transcendental ops cost more per element; weigh them for the threading threshold */
  int scalar = op->code == SPNN_OP_SIGMOID || op->code == SPNN_OP_TANH || op->code == SPNN_OP_EXP ||
               op->code == SPNN_OP_ELU || op->code == SPNN_OP_SOFTPLUS;
  op->macs = (double)y->count * (scalar ? 20 : 1);
  op->kernel = scalar ? "scalar" : "simd128";
  op->run = run_unary;
  return SPNN_OK;
}

/* ---- SUM: n inputs of the output's shape ------------------------------------------ */

typedef struct sum_state {
  float* out;
  float lo, hi;
  int n;
  const float* in[]; /* n input pointers */
} sum_state;

/* Elements [b, e): inputs added in order, then the clamp; one formula per element whatever
 * the split (vector steps start at multiples of 4 from b, and spans start at multiples of 16). */
static void sum_task(void* ctx, size_t b, size_t e) {
  const sum_state* s = (const sum_state*)ctx;
  const v128_t vlo = wasm_f32x4_splat(s->lo), vhi = wasm_f32x4_splat(s->hi);
  size_t i = b;
  for (; i + 4 <= e; i += 4) {
    v128_t acc = wasm_v128_load(s->in[0] + i);
    for (int k = 1; k < s->n; k++) acc = wasm_f32x4_add(acc, wasm_v128_load(s->in[k] + i));
    wasm_v128_store(s->out + i, wasm_f32x4_min(wasm_f32x4_max(acc, vlo), vhi));
  }
  for (; i < e; i++) {
    float acc = s->in[0][i];
    for (int k = 1; k < s->n; k++) acc += s->in[k][i];
    acc = acc < s->lo ? s->lo : acc;
    s->out[i] = acc > s->hi ? s->hi : acc;
  }
}

static void run_sum(spnn_model* m, spnn_op* op) {
  spnn_parallel(m, op->macs, spnn_out(m, op)->count, 16, sum_task, op->state);
}

spnn_status spnn_prepare_sum(spnn_model* m, spnn_op* op) {
  spnn_tensor* y = spnn_out(m, op);
  float lo, hi;
  if (!spnn_act_bounds(op->attr[SPNN_SUM_ACT].i, &lo, &hi))
    return spnn_fail(m, SPNN_ERROR_FORMAT, "unknown fused activation %d", (int)op->attr[SPNN_SUM_ACT].i);
  spnn_status st;
  for (int k = 0; k < op->num_inputs; k++) {
    spnn_tensor* x = spnn_in(m, op, k);
    if ((st = spnn_expect_dims(m, x, y->ndim, y->dims, "input"))) return st;
    if ((st = spnn_use_raw(m, x))) return st;
  }
  sum_state* s = (sum_state*)calloc(1, sizeof *s + (size_t)op->num_inputs * sizeof s->in[0]);
  if (!s) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  op->state = s;
  op->free_state = free;
  s->n = op->num_inputs;
  for (int k = 0; k < s->n; k++) s->in[k] = spnn_in(m, op, k)->data;
  s->out = y->data;
  s->lo = lo;
  s->hi = hi;
  op->macs = (double)y->count * s->n;
  op->kernel = "sum_simd128";
  op->run = run_sum;
  return SPNN_OK;
}
