/* spnn_load: parse and validate a .spnn file (docs/format.md), decode its weights, prepare
 * every op and allocate all memory. Nothing is read before its bounds are checked and
 * nothing is allocated from a count that has not been checked against the file's bytes. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bytes.h"
#include "engine.h"
#include "weights.h"

#define HEADER_SIZE 32
#define SECTION_SIZE 16
#define MAX_SECTIONS 64
#define GRAPH_HEADER_SIZE 32
#define TENSOR_SIZE 40
#define OP_HEADER_SIZE 12
#define MAX_THREADS 64

enum { SEC_STRINGS = 1, SEC_GRAPH = 2, SEC_WEIGHTS = 3, SEC_METADATA = 4 };
static const char* const section_names[] = {"", "STRINGS", "GRAPH", "WEIGHTS", "METADATA"};

typedef struct section {
  const uint8_t* p;
  uint32_t offset, len;
} section;

/* What the op table says about each code (from opset.gen.h). */
typedef struct op_info {
  const char* name;
  int num_attrs, min_inputs, max_inputs;
  spnn_status (*prepare)(spnn_model*, spnn_op*);
  int in_place; /* may write over an input of the same size and offset */
} op_info;

#define OP(NAME, PREPARE, IN_PLACE)                                                    \
  [SPNN_OP_##NAME] = {#NAME, SPNN_OP_##NAME##_NUM_ATTRS, SPNN_OP_##NAME##_MIN_INPUTS,   \
                      SPNN_OP_##NAME##_MAX_INPUTS, PREPARE, IN_PLACE}

static const op_info op_table[SPNN_OP_MAX_CODE + 1] = {
    OP(CONV2D, spnn_prepare_conv, 0),
    OP(CONV_TRANSPOSE2D, spnn_prepare_conv_transpose, 0),
    OP(FULLY_CONNECTED, spnn_prepare_fully_connected, 0),
    OP(ADD, spnn_prepare_binary, 1),
    OP(MUL, spnn_prepare_binary, 1),
    OP(SUB, spnn_prepare_binary, 1),
    OP(DIV, spnn_prepare_binary, 1),
    OP(RELU, spnn_prepare_unary, 1),
    OP(CLIP, spnn_prepare_unary, 1),
    OP(SIGMOID, spnn_prepare_unary, 1),
    OP(TANH, spnn_prepare_unary, 1),
    OP(HARD_SWISH, spnn_prepare_unary, 1),
    OP(HARD_SIGMOID, spnn_prepare_unary, 1),
    OP(LEAKY_RELU, spnn_prepare_unary, 1),
    OP(PRELU, spnn_prepare_prelu, 1),
    OP(MAX_POOL2D, spnn_prepare_pool, 0),
    OP(AVG_POOL2D, spnn_prepare_pool, 0),
    OP(MEAN, spnn_prepare_mean, 0),
    OP(CONCAT, spnn_prepare_concat, 0),
    OP(PAD, spnn_prepare_pad, 0),
    OP(RESIZE_BILINEAR, spnn_prepare_resize, 0),
    OP(RESIZE_NEAREST, spnn_prepare_resize, 0),
    OP(DEPTH_TO_SPACE, spnn_prepare_depth_to_space, 0),
    OP(RESHAPE, spnn_prepare_reshape, 1),
    OP(TRANSPOSE, spnn_prepare_transpose, 0),
    OP(SOFTMAX, spnn_prepare_softmax, 0),
    OP(LRN, spnn_prepare_lrn, 0),
    OP(SUM, spnn_prepare_sum, 1),
    OP(ABS, spnn_prepare_unary, 1),
    OP(EXP, spnn_prepare_unary, 1),
    OP(SQRT, spnn_prepare_unary, 1),
    OP(ELU, spnn_prepare_unary, 1),
    OP(SOFTPLUS, spnn_prepare_unary, 1),
    OP(LOG_SOFTMAX, spnn_prepare_softmax, 0),
    OP(MAX, spnn_prepare_binary, 1),
    OP(MIN, spnn_prepare_binary, 1),
    OP(POW, spnn_prepare_binary, 1),
    OP(SLICE, spnn_prepare_slice, 0),
    OP(PAD_REFLECT, spnn_prepare_pad_reflect, 0),
    OP(MATMUL, spnn_prepare_matmul, 0),
};

const char* spnn_op_type_name(int code) {
  return (code >= 1 && code <= SPNN_OP_MAX_CODE && op_table[code].name) ? op_table[code].name : "?";
}

int spnn_op_in_place_ok(int code) {
  return code >= 1 && code <= SPNN_OP_MAX_CODE && op_table[code].in_place;
}

/* ---- errors and helpers ------------------------------------------------------------ */

spnn_status spnn_fail(spnn_model* model, spnn_status status, const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(model->error, sizeof model->error, fmt, ap);
  va_end(ap);
  return status;
}

int spnn_act_bounds(int32_t act, float* lo, float* hi) {
  switch (act) {
    case SPNN_ACT_NONE: *lo = -__builtin_inff(); *hi = __builtin_inff(); return 1;
    case SPNN_ACT_RELU: *lo = 0.0f; *hi = __builtin_inff(); return 1;
    case SPNN_ACT_RELU6: *lo = 0.0f; *hi = 6.0f; return 1;
    case SPNN_ACT_RELU_N1_TO_1: *lo = -1.0f; *hi = 1.0f; return 1;
    default: return 0;
  }
}

/* Below this many multiply-adds an op runs on one thread: handing it out costs more. */
#define PARALLEL_MIN_WORK 40000.0

int spnn_parallel_threads(const spnn_model* model, double work) {
  return work < PARALLEL_MIN_WORK ? 1 : model->num_threads > 1 ? model->num_threads : 1;
}

void spnn_parallel(spnn_model* model, double work, size_t n, size_t align, spnn_task_fn fn,
                   void* ctx) {
  /* without the pool (another caller's run has it) the same grid runs on this thread */
  if (!model->run_pool || spnn_parallel_threads(model, work) <= 1) {
    fn(ctx, 0, n);
    return;
  }
  spnn_threadpool_run(model->run_pool, model->num_threads, n, align, fn, ctx);
}

static void format_dims(const int32_t* dims, int ndim, char* out, size_t size) {
  size_t pos = 0;
  out[pos++] = '[';
  out[pos] = 0;
  for (int d = 0; d < ndim && pos + 14 < size; d++)
    pos += (size_t)snprintf(out + pos, size - pos, d ? ", %d" : "%d", (int)dims[d]);
  snprintf(out + pos, size - pos, "]");
}

spnn_status spnn_expect_ndim(spnn_model* m, const spnn_tensor* t, int ndim, const char* what) {
  if (t->ndim == ndim) return SPNN_OK;
  char got[96];
  format_dims(t->dims, t->ndim, got, sizeof got);
  return spnn_fail(m, SPNN_ERROR_FORMAT, "%s %s has shape %s, expected %d dimensions", what,
                   t->name, got, ndim);
}

spnn_status spnn_expect_dims(spnn_model* m, const spnn_tensor* t, int ndim, const int32_t* dims,
                             const char* what) {
  int same = t->ndim == ndim;
  for (int d = 0; same && d < ndim; d++) same = t->dims[d] == dims[d];
  if (same) return SPNN_OK;
  char got[96], want[96];
  format_dims(t->dims, t->ndim, got, sizeof got);
  format_dims(dims, ndim, want, sizeof want);
  return spnn_fail(m, SPNN_ERROR_FORMAT, "%s %s has shape %s, expected %s", what, t->name, got,
                   want);
}

spnn_status spnn_expect_constant(spnn_model* m, const spnn_tensor* t, const char* what) {
  if (t->kind == SPNN_KIND_CONSTANT) return SPNN_OK;
  return spnn_fail(m, SPNN_ERROR_UNSUPPORTED, "%s %s is computed at run time; only constant %ss "
                   "are supported", what, t->name, what);
}

/* ---- parsing ------------------------------------------------------------------------ */

static spnn_status read_string(spnn_model* m, uint32_t off, const char* what, uint32_t id,
                               const char** out) {
  /* A name starts a string (offset 0 or just after a zero byte) and has its zero byte inside
   * STRINGS: so distinct offsets name disjoint strings, and reading every name of the file
   * costs no more than the section's length. */
  if (off > m->strings_end || (off > 0 && m->strings[off - 1] != 0))
    return spnn_fail(m, SPNN_ERROR_FORMAT, "%s %u: name offset %u is not a string in STRINGS",
                     what, id, off);
  *out = m->strings + off;
  return SPNN_OK;
}

static spnn_status parse_header(spnn_model* m, const uint8_t* data, size_t size, section* secs) {
  if (size < HEADER_SIZE)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "file is %zu bytes, shorter than the 32-byte header",
                     size);
  if (memcmp(data, "SPNN", 4) != 0)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "bad magic: not a .spnn file");
  uint16_t major = rd_u16(data + 4);
  if (major != 1)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "format version %u.%u; this engine reads 1.x", major,
                     rd_u16(data + 6));
  if (rd_u32(data + 12) != 0)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "unknown header flags 0x%x", rd_u32(data + 12));
  uint32_t count = rd_u32(data + 16);
  if (count < 1 || count > MAX_SECTIONS)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "section count %u (must be 1..64)", count);
  uint64_t declared = rd_u64(data + 24);
  if (declared != size)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "file is %zu bytes but its header says %llu (truncated?)",
                     size, (unsigned long long)declared);
  size_t table_end = HEADER_SIZE + (size_t)count * SECTION_SIZE;
  if (table_end > size)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "section table runs past the end of the file");
  /* header_crc covers bytes 0..19 then the section table. */
  uint32_t crc = spnn_crc32_update(spnn_crc32(data, 20), data + HEADER_SIZE,
                                   (size_t)count * SECTION_SIZE);
  if (crc != rd_u32(data + 20))
    return spnn_fail(m, SPNN_ERROR_FORMAT, "header CRC mismatch (file corrupted)");
  memset(secs, 0, 5 * sizeof *secs);
  int seen[5] = {0};
  for (uint32_t i = 0; i < count; i++) {
    const uint8_t* e = data + HEADER_SIZE + (size_t)i * SECTION_SIZE;
    uint32_t type = rd_u32(e), off = rd_u32(e + 4), len = rd_u32(e + 8), sec_crc = rd_u32(e + 12);
    if (type < SEC_STRINGS || type > SEC_METADATA)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "section %u has unknown type %u", i, type);
    if (seen[type]++)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "section %s appears twice", section_names[type]);
    if (off % 16 || off < table_end || (uint64_t)off + len > size)
      return spnn_fail(m, SPNN_ERROR_FORMAT,
                       "section %s at %u (+%u bytes) is misaligned or outside the file",
                       section_names[type], off, len);
    if (spnn_crc32(data + off, len) != sec_crc)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "section %s CRC mismatch (file corrupted)",
                       section_names[type]);
    secs[type].p = data + off;
    secs[type].offset = off;
    secs[type].len = len;
  }
  for (int t = SEC_STRINGS; t <= SEC_METADATA; t++) {
    if (!seen[t]) return spnn_fail(m, SPNN_ERROR_FORMAT, "section %s is missing", section_names[t]);
    for (int u = t + 1; u <= SEC_METADATA; u++) {
      if (seen[u] && secs[t].offset < (uint64_t)secs[u].offset + secs[u].len &&
          secs[u].offset < (uint64_t)secs[t].offset + secs[t].len)
        return spnn_fail(m, SPNN_ERROR_FORMAT, "sections %s and %s overlap", section_names[t],
                         section_names[u]);
    }
  }
  /* The gaps between the table and the sections, and after the last one, are zero bytes. */
  size_t pos = table_end;
  int used[5] = {0};
  for (int done = 0; done < 4; done++) {
    int next = 0;
    for (int t = SEC_STRINGS; t <= SEC_METADATA; t++)
      if (!used[t] && (!next || secs[t].offset < secs[next].offset)) next = t;
    used[next] = 1;
    for (; pos < secs[next].offset; pos++)
      if (data[pos]) return spnn_fail(m, SPNN_ERROR_FORMAT, "nonzero padding before section %s",
                                      section_names[next]);
    if ((size_t)secs[next].offset + secs[next].len > pos) pos = (size_t)secs[next].offset + secs[next].len;
  }
  for (; pos < size; pos++)
    if (data[pos]) return spnn_fail(m, SPNN_ERROR_FORMAT, "nonzero bytes after the last section");
  return SPNN_OK;
}

static spnn_status copy_text(spnn_model* m, const section* s, char** out, uint32_t* size) {
  char* p = (char*)malloc((size_t)s->len + 1);
  if (!p) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  memcpy(p, s->p, s->len);
  p[s->len] = 0;
  *out = p;
  if (size) *size = s->len + 1;
  return SPNN_OK;
}

/* ---- METADATA: UTF-8 JSON with an object at the top (docs/format.md) ------------------
 * A checker of the JSON grammar (RFC 8259) without recursion: nesting is kept as a stack of
 * bits, at most MAX_JSON_DEPTH deep; numbers are at most MAX_JSON_NUMBER characters; the
 * whole section is strict UTF-8 (no overlong forms, no surrogates). */
#define MAX_JSON_DEPTH 64
#define MAX_JSON_NUMBER 64

static size_t utf8_char(const uint8_t* p, size_t n) {
  uint8_t c = p[0];
  if (c < 0x80) return 1;
  size_t len = c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
  if (!len || len > n) return 0;
  for (size_t i = 1; i < len; i++)
    if ((p[i] & 0xC0) != 0x80) return 0;
  if (c == 0xE0 && p[1] < 0xA0) return 0; /* overlong */
  if (c == 0xED && p[1] >= 0xA0) return 0; /* surrogate */
  if (c == 0xF0 && p[1] < 0x90) return 0; /* overlong */
  if (c == 0xF4 && p[1] >= 0x90) return 0; /* above U+10FFFF */
  return len;
}

static int json_space(uint8_t c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }
static int json_digit(uint8_t c) { return c >= '0' && c <= '9'; }

/* Returns the end of the string starting at p[i] == '"', or 0. */
static size_t json_string(const uint8_t* p, size_t n, size_t i) {
  for (i++; i < n;) {
    uint8_t c = p[i];
    if (c == '"') return i + 1;
    if (c < 0x20) return 0;
    if (c == '\\') {
      if (i + 1 >= n) return 0;
      uint8_t e = p[i + 1];
      if (e == 'u') {
        if (i + 6 > n) return 0;
        for (size_t k = i + 2; k < i + 6; k++)
          if (!json_digit(p[k]) && !((p[k] | 0x20) >= 'a' && (p[k] | 0x20) <= 'f')) return 0;
        i += 6;
      } else if (strchr("\"\\/bfnrt", e) && e) {
        i += 2;
      } else {
        return 0;
      }
    } else {
      size_t len = utf8_char(p + i, n - i);
      if (!len) return 0;
      i += len;
    }
  }
  return 0;
}

/* Returns the end of the number starting at p[i], or 0. */
static size_t json_number(const uint8_t* p, size_t n, size_t i) {
  size_t start = i;
  if (i < n && p[i] == '-') i++;
  if (i < n && p[i] == '0') i++;
  else if (i < n && json_digit(p[i])) while (i < n && json_digit(p[i])) i++;
  else return 0;
  if (i < n && p[i] == '.') {
    if (++i >= n || !json_digit(p[i])) return 0;
    while (i < n && json_digit(p[i])) i++;
  }
  if (i < n && (p[i] | 0x20) == 'e') {
    i++;
    if (i < n && (p[i] == '+' || p[i] == '-')) i++;
    if (i >= n || !json_digit(p[i])) return 0;
    while (i < n && json_digit(p[i])) i++;
  }
  return i - start <= MAX_JSON_NUMBER ? i : 0;
}

static int json_object_text(const uint8_t* p, size_t n) {
  uint64_t is_object = 0; /* bit d: the container at depth d + 1 is an object */
  int depth = 0;
  enum { VALUE, AFTER_VALUE, KEY, KEY_OR_END, VALUE_OR_END } want = VALUE;
  size_t i = 0;
  while (i < n && json_space(p[i])) i++;
  if (i >= n || p[i] != '{') return 0;
  for (;;) {
    if (want == AFTER_VALUE && depth == 0) break;
    while (i < n && json_space(p[i])) i++;
    if (i >= n) return 0;
    uint8_t c = p[i];
    if (want == KEY || want == KEY_OR_END) {
      if (c == '}' && want == KEY_OR_END) goto close;
      if (c != '"' || !(i = json_string(p, n, i))) return 0;
      while (i < n && json_space(p[i])) i++;
      if (i >= n || p[i++] != ':') return 0;
      want = VALUE;
      continue;
    }
    if (want == AFTER_VALUE) {
      int obj = (int)((is_object >> (depth - 1)) & 1);
      if (c == ',') {
        want = obj ? KEY : VALUE;
        i++;
        continue;
      }
      if (c != (obj ? '}' : ']')) return 0;
    close:
      depth--;
      i++;
      want = AFTER_VALUE;
      continue;
    }
    /* a value (or, just after '[', the end of an empty array) */
    if (c == ']' && want == VALUE_OR_END) goto close;
    if (c == '{' || c == '[') {
      if (depth == MAX_JSON_DEPTH) return 0;
      if (c == '{') is_object |= 1ull << depth;
      else is_object &= ~(1ull << depth);
      depth++;
      i++;
      want = c == '{' ? KEY_OR_END : VALUE_OR_END;
      continue;
    }
    if (c == '"') i = json_string(p, n, i);
    else if (c == '-' || json_digit(c)) i = json_number(p, n, i);
    else if (n - i >= 4 && !memcmp(p + i, "true", 4)) i += 4;
    else if (n - i >= 5 && !memcmp(p + i, "false", 5)) i += 5;
    else if (n - i >= 4 && !memcmp(p + i, "null", 4)) i += 4;
    else return 0;
    if (!i) return 0;
    want = AFTER_VALUE;
  }
  while (i < n && json_space(p[i])) i++;
  return i == n;
}

static spnn_status parse_tensors(spnn_model* m, const uint8_t* g, uint32_t arena_bytes,
                                 spnn_weight* ws, uint32_t num_weights) {
  for (uint32_t i = 0; i < m->num_tensors; i++) {
    const uint8_t* r = g + GRAPH_HEADER_SIZE + (size_t)i * TENSOR_SIZE;
    spnn_tensor* t = &m->tensors[i];
    t->kind = r[0];
    t->ndim = r[2];
    t->producer = -1;
    t->last_use = -1;
    if (t->kind > SPNN_KIND_INPUT)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "tensor %u: unknown kind %u", i, t->kind);
    if (r[1] != 0)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "tensor %u: unknown dtype %u (only float32)", i, r[1]);
    if (t->ndim > SPNN_MAX_NDIM || r[3] != 0)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "tensor %u: ndim %u (max 6) or reserved byte set", i,
                       t->ndim);
    uint64_t count = 1;
    for (int d = 0; d < SPNN_MAX_NDIM; d++) {
      uint32_t v = rd_u32(r + 4 + 4 * d);
      if (d < t->ndim ? v == 0 : v != 0)
        return spnn_fail(m, SPNN_ERROR_FORMAT, "tensor %u: dim %d is %u", i, d, v);
      if (d < t->ndim) {
        count *= v;
        if (count >= SPNN_MAX_ELEMENTS)
          return spnn_fail(m, SPNN_ERROR_FORMAT, "tensor %u: 2^28 elements or more", i);
        t->dims[d] = (int32_t)v;
      }
    }
    t->count = (uint32_t)count;
    spnn_status st = read_string(m, rd_u32(r + 28), "tensor", i, &t->name);
    if (st) return st;
    if (!t->name[0]) return spnn_fail(m, SPNN_ERROR_FORMAT, "tensor %u: empty name", i);
    t->weight = rd_u32(r + 32);
    t->offset = rd_u32(r + 36);
    if (t->kind == SPNN_KIND_CONSTANT) {
      if (t->weight >= num_weights)
        return spnn_fail(m, SPNN_ERROR_FORMAT, "tensor %u (%s): weight index %u of %u", i, t->name,
                         t->weight, num_weights);
      spnn_weight* w = &ws[t->weight];
      if (w->claimed++)
        return spnn_fail(m, SPNN_ERROR_FORMAT, "tensor %u (%s): weight %u is used twice", i,
                         t->name, t->weight);
      uint32_t rows = t->ndim ? (uint32_t)t->dims[0] : 1;
      if (t->ndim == 1) rows = 1;
      if (w->rows != rows || (uint64_t)w->rows * w->cols != t->count)
        return spnn_fail(m, SPNN_ERROR_FORMAT,
                         "tensor %u (%s): weight %u is %u x %u, the tensor has %u elements", i,
                         t->name, t->weight, w->rows, w->cols, t->count);
      if (t->offset != 0)
        return spnn_fail(m, SPNN_ERROR_FORMAT, "tensor %u (%s): constant with an arena offset", i,
                         t->name);
      t->data = w->dense;
      t->sparse = w->sparse;
      w->dense = NULL;
      w->sparse = NULL;
    } else {
      if (t->weight != SPNN_ABSENT)
        return spnn_fail(m, SPNN_ERROR_FORMAT, "tensor %u (%s): non-constant with a weight", i,
                         t->name);
      if (t->offset % 16 || (uint64_t)t->offset + 4ull * t->count > arena_bytes)
        return spnn_fail(m, SPNN_ERROR_FORMAT,
                         "tensor %u (%s): arena offset %u (+%u floats) misaligned or outside the "
                         "%u-byte arena",
                         i, t->name, t->offset, t->count, arena_bytes);
    }
  }
  for (uint32_t w = 0; w < num_weights; w++)
    if (!ws[w].claimed)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u is used by no tensor", w);
  return SPNN_OK;
}

/* `mark` has a byte per tensor, zero on entry; it is left set for the listed tensors. */
static spnn_status parse_io(spnn_model* m, const uint8_t* p, uint32_t n, uint32_t* ids, int inputs,
                            uint8_t* mark) {
  for (uint32_t i = 0; i < n; i++) {
    uint32_t id = rd_u32(p + 4 * (size_t)i);
    if (id >= m->num_tensors)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "graph %s %u: tensor id %u of %u",
                       inputs ? "input" : "output", i, id, m->num_tensors);
    uint8_t kind = m->tensors[id].kind;
    if (inputs && kind != SPNN_KIND_INPUT)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "graph input %u: tensor %u is not of kind input", i, id);
    if (!inputs && kind == SPNN_KIND_CONSTANT)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "graph output %u: tensor %u is a constant", i, id);
    if (mark[id]++)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "graph %s tensor %u is listed twice",
                       inputs ? "input" : "output", id);
    ids[i] = id;
  }
  return SPNN_OK;
}

/* Tensor names are unique: the ids sorted by name (a merge sort, so that each name takes
 * part in a logarithmic number of comparisons), then neighbours compared. */
static int name_cmp(const spnn_model* m, uint32_t a, uint32_t b) {
  const char *x = m->tensors[a].name, *y = m->tensors[b].name;
  return x == y ? 0 : strcmp(x, y);
}

static spnn_status check_unique_names(spnn_model* m) {
  uint32_t n = m->num_tensors;
  uint32_t* a = (uint32_t*)malloc(2 * (size_t)n * sizeof *a + 1);
  if (!a) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  uint32_t *src = a, *dst = a + n;
  for (uint32_t i = 0; i < n; i++) src[i] = i;
  for (uint32_t width = 1; width < n; width *= 2) {
    for (uint32_t lo = 0; lo < n; lo += 2 * width) {
      uint32_t mid = lo + width < n ? lo + width : n;
      uint32_t hi = mid + width < n ? mid + width : n;
      uint32_t i = lo, j = mid, k = lo;
      while (i < mid && j < hi) dst[k++] = name_cmp(m, src[j], src[i]) < 0 ? src[j++] : src[i++];
      while (i < mid) dst[k++] = src[i++];
      while (j < hi) dst[k++] = src[j++];
    }
    uint32_t* t = src;
    src = dst;
    dst = t;
    if (width > n / 2) break; /* the next width would overflow or sort nothing more */
  }
  spnn_status st = SPNN_OK;
  for (uint32_t i = 1; i < n && !st; i++)
    if (name_cmp(m, src[i - 1], src[i]) == 0) {
      uint32_t x = src[i - 1] < src[i] ? src[i - 1] : src[i], y = src[i - 1] ^ src[i] ^ x;
      st = spnn_fail(m, SPNN_ERROR_FORMAT, "tensor %u: name %s is used by tensor %u", y,
                     m->tensors[y].name, x);
    }
  free(a);
  return st;
}

static spnn_status parse_ops(spnn_model* m, const uint8_t* g, uint32_t len, uint32_t pos) {
  /* First pass: walk the records to bound the total number of op inputs. */
  size_t total_io = 0;
  uint32_t p = pos;
  for (uint32_t k = 0; k < m->num_ops; k++) {
    if ((uint64_t)p + OP_HEADER_SIZE > len)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "op %u: record runs past the GRAPH section", k);
    const uint8_t* r = g + p;
    uint64_t size = OP_HEADER_SIZE + 4ull * (r[4] + r[5] + rd_u16(r + 2));
    if (p + size > len)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "op %u: record runs past the GRAPH section", k);
    total_io += r[4];
    p += (uint32_t)size;
  }
  if (p != len)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "GRAPH section has %u bytes after its last op", len - p);
  m->op_io = (int32_t*)calloc(total_io ? total_io : 1, sizeof(int32_t));
  if (!m->op_io) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");

  int32_t* io = m->op_io;
  p = pos;
  for (uint32_t k = 0; k < m->num_ops; k++) {
    const uint8_t* r = g + p;
    spnn_op* op = &m->ops[k];
    uint16_t code = rd_u16(r);
    uint16_t num_attrs = rd_u16(r + 2);
    uint8_t nin = r[4], nout = r[5];
    p += OP_HEADER_SIZE + 4u * (nin + nout + num_attrs);
    op->code = code;
    op->num_inputs = nin;
    op->inputs = io;
    io += nin;
    spnn_status st = read_string(m, rd_u32(r + 8), "op", k, &op->name);
    if (st) return st;
    if (code < 1 || code > SPNN_OP_MAX_CODE || !op_table[code].name)
      return spnn_fail(m, SPNN_ERROR_UNSUPPORTED, "op %u (%s): op code %u is not supported", k,
                       op->name, code);
    const op_info* info = &op_table[code];
    if (num_attrs != info->num_attrs)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "op %u (%s %s): %u attributes, the op table has %d", k,
                       info->name, op->name, num_attrs, info->num_attrs);
    if (nin < info->min_inputs || (info->max_inputs >= 0 && nin > info->max_inputs))
      return spnn_fail(m, SPNN_ERROR_FORMAT, "op %u (%s %s): %u inputs", k, info->name, op->name,
                       nin);
    if (nout != 1 || rd_u16(r + 6) != 0)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "op %u (%s %s): %u outputs (must be 1) or reserved set",
                       k, info->name, op->name, nout);
    const uint8_t* ids = r + OP_HEADER_SIZE;
    for (int i = 0; i < nin; i++) {
      uint32_t id = rd_u32(ids + 4 * i);
      if (id == SPNN_ABSENT) {
        if (info->max_inputs < 0 || i < info->min_inputs)
          return spnn_fail(m, SPNN_ERROR_FORMAT, "op %u (%s %s): required input %d is absent", k,
                           info->name, op->name, i);
        op->inputs[i] = -1;
        continue;
      }
      if (id >= m->num_tensors)
        return spnn_fail(m, SPNN_ERROR_FORMAT, "op %u (%s %s): input %d is tensor %u of %u", k,
                         info->name, op->name, i, id, m->num_tensors);
      spnn_tensor* t = &m->tensors[id];
      if (t->kind == SPNN_KIND_ACTIVATION && t->producer < 0)
        return spnn_fail(m, SPNN_ERROR_FORMAT, "op %u (%s %s): reads tensor %s before it is written",
                         k, info->name, op->name, t->name);
      if (t->kind != SPNN_KIND_CONSTANT) t->last_use = (int32_t)k;
      op->inputs[i] = (int32_t)id;
    }
    uint32_t out = rd_u32(ids + 4 * nin);
    if (out >= m->num_tensors)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "op %u (%s %s): output is tensor %u of %u", k,
                       info->name, op->name, out, m->num_tensors);
    spnn_tensor* t = &m->tensors[out];
    if (t->kind != SPNN_KIND_ACTIVATION || t->producer >= 0)
      return spnn_fail(m, SPNN_ERROR_FORMAT,
                       "op %u (%s %s): output %s is not an activation or is written twice", k,
                       info->name, op->name, t->name);
    t->producer = (int32_t)k;
    op->output = (int32_t)out;
    const uint8_t* a = ids + 4 * (nin + nout);
    for (int i = 0; i < num_attrs; i++) memcpy(&op->attr[i], a + 4 * i, 4);
  }
  return SPNN_OK;
}

/* ---- the memory plan ------------------------------------------------------------------
 * A tensor is live from the op that writes it (graph inputs: from the start, all together)
 * to the last op that reads it (graph outputs: to the end); no two tensors live at the same
 * time may share a byte, and ops never work in place (docs/format.md). The check sweeps the
 * ops in order keeping the live tensors in a segment tree over the distinct arena offsets:
 * each leaf holds the live tensor that starts there, each node the one of its leaves that
 * ends furthest. A new tensor [s, e) overlaps a live one iff, among the live tensors that
 * start below e, the one ending furthest ends after s: one query, so O(n log n) in all. */
#define NO_TENSOR 0xFFFFFFFFu

typedef struct live_set {
  const spnn_model* m;
  uint32_t leaves;
  uint32_t* node;   /* [2 * leaves]: tensor ids, NO_TENSOR where empty */
  uint32_t* starts; /* [leaves]: the distinct arena offsets, increasing */
} live_set;

static uint64_t tensor_end(const spnn_model* m, uint32_t id) {
  return id == NO_TENSOR ? 0 : m->tensors[id].offset + 4ull * m->tensors[id].count;
}

static uint32_t further(const spnn_model* m, uint32_t a, uint32_t b) {
  return tensor_end(m, a) >= tensor_end(m, b) ? a : b;
}

/* Number of distinct offsets below `v`. */
static uint32_t starts_below(const live_set* ls, uint64_t v) {
  uint32_t lo = 0, hi = ls->leaves;
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (ls->starts[mid] < v) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

static void live_put(live_set* ls, uint32_t id, uint32_t value) {
  uint32_t i = starts_below(ls, ls->m->tensors[id].offset) + ls->leaves;
  ls->node[i] = value;
  for (i >>= 1; i; i >>= 1) ls->node[i] = further(ls->m, ls->node[2 * i], ls->node[2 * i + 1]);
}

/* The live tensor that `id` would overlap, or NO_TENSOR. */
static uint32_t live_overlap(const live_set* ls, uint32_t id) {
  const spnn_tensor* t = &ls->m->tensors[id];
  uint32_t best = NO_TENSOR;
  uint32_t lo = ls->leaves, hi = ls->leaves + starts_below(ls, tensor_end(ls->m, id));
  for (; lo < hi; lo >>= 1, hi >>= 1) {
    if (lo & 1) best = further(ls->m, best, ls->node[lo++]);
    if (hi & 1) best = further(ls->m, best, ls->node[--hi]);
  }
  return tensor_end(ls->m, best) > t->offset ? best : NO_TENSOR;
}

static int cmp_u32(const void* a, const void* b) {
  uint32_t x = *(const uint32_t*)a, y = *(const uint32_t*)b;
  return x < y ? -1 : x > y;
}

static spnn_status check_memory_plan(spnn_model* m) {
  uint32_t n = m->num_tensors, steps = m->num_ops + 1; /* step 0: the start; k + 1: op k */
  live_set ls = {m, 0, NULL, NULL};
  /* one block: node[2n], starts[n], dying[steps + 1] (list heads; the last one, graph
   * outputs, never dies), next[n] */
  uint32_t* block = (uint32_t*)malloc((4 * (size_t)n + steps + 1) * sizeof(uint32_t));
  if (!block) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  ls.node = block;
  ls.starts = block + 2 * (size_t)n;
  uint32_t* dying = ls.starts + n;
  uint32_t* next = dying + steps + 1;
  for (uint32_t i = 0; i < n; i++)
    if (m->tensors[i].kind != SPNN_KIND_CONSTANT) ls.starts[ls.leaves++] = m->tensors[i].offset;
  qsort(ls.starts, ls.leaves, sizeof *ls.starts, cmp_u32);
  uint32_t distinct = 0;
  for (uint32_t i = 0; i < ls.leaves; i++)
    if (i == 0 || ls.starts[i] != ls.starts[distinct - 1]) ls.starts[distinct++] = ls.starts[i];
  ls.leaves = distinct;
  for (uint32_t i = 0; i < 2 * ls.leaves; i++) ls.node[i] = NO_TENSOR;
  for (uint32_t k = 0; k <= steps; k++) dying[k] = NO_TENSOR;
  for (uint32_t i = 0; i < n; i++) {
    spnn_tensor* t = &m->tensors[i];
    if (t->kind == SPNN_KIND_CONSTANT) continue;
    int32_t last = t->last_use > t->producer ? t->last_use : t->producer; /* -1: the start */
    next[i] = dying[last + 1];
    dying[last + 1] = i;
  }
  spnn_status st = SPNN_OK;
  for (uint32_t step = 0; step < steps && !st; step++) {
    /* born now: every graph input at the start, op k's output at step k + 1 */
    uint32_t nborn = step == 0 ? m->num_inputs : 1;
    for (uint32_t j = 0; j < nborn && !st; j++) {
      uint32_t id = step == 0 ? m->inputs[j] : (uint32_t)m->ops[step - 1].output;
      uint32_t other = live_overlap(&ls, id);
      if (other != NO_TENSOR) {
        if (step == 0)
          st = spnn_fail(m, SPNN_ERROR_FORMAT, "graph inputs %s and %s overlap in the arena",
                         m->tensors[other].name, m->tensors[id].name);
        else
          st = spnn_fail(m, SPNN_ERROR_FORMAT,
                         "op %u (%s %s): output %s overwrites %s in the arena while it is live",
                         step - 1, spnn_op_type_name(m->ops[step - 1].code), m->ops[step - 1].name,
                         m->tensors[id].name, m->tensors[other].name);
      } else {
        live_put(&ls, id, id);
      }
    }
    for (uint32_t id = dying[step]; id != NO_TENSOR && !st; id = next[id]) live_put(&ls, id, NO_TENSOR);
  }
  free(block);
  return st;
}

/* The arena is what the plan needs, no more (its tensors' highest end, rounded up to 64
 * bytes), and the arena with the constants stays within the file's memory limit. */
static spnn_status check_arena(spnn_model* m, uint32_t arena_bytes) {
  uint64_t top = 0, constants = 0;
  for (uint32_t i = 0; i < m->num_tensors; i++) {
    const spnn_tensor* t = &m->tensors[i];
    if (t->kind == SPNN_KIND_CONSTANT) constants += t->count;
    else if (tensor_end(m, i) > top) top = tensor_end(m, i);
  }
  uint64_t need = (top + 63) / 64 * 64;
  if (arena_bytes > need)
    return spnn_fail(m, SPNN_ERROR_FORMAT,
                     "arena_bytes %u is more than the %llu bytes its tensors need", arena_bytes,
                     (unsigned long long)need);
  uint64_t total = arena_bytes + 4 * constants, limit = spnn_memory_limit(m->file_size);
  if (total > limit)
    return spnn_fail(m, SPNN_ERROR_FORMAT,
                     "arena and constants take %llu bytes, over the limit of %llu for a %zu-byte "
                     "file", (unsigned long long)total, (unsigned long long)limit, m->file_size);
  return SPNN_OK;
}

/* The graph inputs get buffers of their own, outside the arena: the memory plan lets later
 * tensors reuse an input's bytes once its last reader has run, but a caller's input should
 * still be there after a run (to run it again, or to write only what changed), as in any
 * runtime that reads its inputs in place. They sit in one allocation with the arena, before
 * it, each a whole number of 64-byte lines; offsets keep describing the plan, only the
 * inputs' data pointers move. */
static size_t input_floats(const spnn_tensor* t) { return (t->count + 15u) & ~(size_t)15; }

static spnn_status allocate_memory(spnn_model* m, uint32_t arena_bytes) {
  size_t inputs = 0;
  for (uint32_t j = 0; j < m->num_inputs; j++) inputs += input_floats(&m->tensors[m->inputs[j]]);
  m->memory = (uint8_t*)spnn_calloc(4 * inputs + arena_bytes);
  if (!m->memory)
    return spnn_fail(m, SPNN_ERROR_NOMEM, "cannot allocate the %u-byte arena and %zu bytes of inputs",
                     arena_bytes, 4 * inputs);
  m->arena = m->memory + 4 * inputs;
  m->arena_bytes = arena_bytes;
  for (uint32_t i = 0; i < m->num_tensors; i++) {
    spnn_tensor* t = &m->tensors[i];
    if (t->kind != SPNN_KIND_CONSTANT) t->data = (float*)(m->arena + t->offset);
  }
  float* at = (float*)m->memory;
  for (uint32_t j = 0; j < m->num_inputs; j++) {
    spnn_tensor* t = &m->tensors[m->inputs[j]];
    t->data = at;
    at += input_floats(t);
  }
  return SPNN_OK;
}

static spnn_status parse_graph(spnn_model* m, const section* s, spnn_weight* ws,
                               uint32_t num_weights) {
  const uint8_t* g = s->p;
  uint32_t len = s->len;
  if (len < GRAPH_HEADER_SIZE)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "GRAPH section is %u bytes, shorter than its header", len);
  m->num_tensors = rd_u32(g);
  m->num_ops = rd_u32(g + 4);
  m->num_inputs = rd_u32(g + 8);
  m->num_outputs = rd_u32(g + 12);
  uint32_t arena_bytes = rd_u32(g + 16);
  if (rd_u32(g + 20) || rd_u32(g + 24) || rd_u32(g + 28))
    return spnn_fail(m, SPNN_ERROR_FORMAT, "GRAPH header: reserved fields are not zero");
  uint64_t ops_at = GRAPH_HEADER_SIZE + (uint64_t)m->num_tensors * TENSOR_SIZE +
                    4ull * m->num_inputs + 4ull * m->num_outputs;
  if (ops_at > len || (uint64_t)m->num_ops * OP_HEADER_SIZE > len - ops_at)
    return spnn_fail(m, SPNN_ERROR_FORMAT,
                     "GRAPH: %u tensors, %u inputs, %u outputs and %u ops do not fit in %u bytes",
                     m->num_tensors, m->num_inputs, m->num_outputs, m->num_ops, len);
  if (m->num_inputs < 1 || m->num_outputs < 1)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "GRAPH: %u inputs and %u outputs (need at least one each)",
                     m->num_inputs, m->num_outputs);
  m->tensors = (spnn_tensor*)calloc(m->num_tensors, sizeof(spnn_tensor));
  m->ops = (spnn_op*)calloc(m->num_ops ? m->num_ops : 1, sizeof(spnn_op));
  m->inputs = (uint32_t*)calloc(m->num_inputs, sizeof(uint32_t));
  m->outputs = (uint32_t*)calloc(m->num_outputs, sizeof(uint32_t));
  if (!m->tensors || !m->ops || !m->inputs || !m->outputs)
    return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  spnn_status st = parse_tensors(m, g, arena_bytes, ws, num_weights);
  if (st) return st;
  if ((st = check_unique_names(m))) return st;
  uint8_t* mark = (uint8_t*)calloc(2 * (size_t)m->num_tensors, 1); /* inputs, outputs */
  if (!mark) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  const uint8_t* io = g + GRAPH_HEADER_SIZE + (size_t)m->num_tensors * TENSOR_SIZE;
  st = parse_io(m, io, m->num_inputs, m->inputs, 1, mark);
  if (!st)
    st = parse_io(m, io + 4 * (size_t)m->num_inputs, m->num_outputs, m->outputs, 0,
                  mark + m->num_tensors);
  for (uint32_t i = 0; i < m->num_tensors && !st; i++)
    if (m->tensors[i].kind == SPNN_KIND_INPUT && !mark[i])
      st = spnn_fail(m, SPNN_ERROR_FORMAT, "tensor %u (%s) is of kind input but not a graph input",
                     i, m->tensors[i].name);
  free(mark);
  if (st) return st;
  if ((st = parse_ops(m, g, len, (uint32_t)ops_at))) return st;
  for (uint32_t i = 0; i < m->num_tensors; i++)
    if (m->tensors[i].kind == SPNN_KIND_ACTIVATION && m->tensors[i].producer < 0)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "activation tensor %u (%s) is written by no op", i,
                       m->tensors[i].name);
  for (uint32_t j = 0; j < m->num_outputs; j++) m->tensors[m->outputs[j]].last_use = (int32_t)m->num_ops;
  if ((st = check_memory_plan(m)) || (st = check_arena(m, arena_bytes))) return st;
  return allocate_memory(m, arena_bytes);
}

/* ---- residual adds folded into the convolution before them ----------------------------
 * ADD(conv(x), skip) with operands and output of one shape, where the add is the only reader
 * of conv(x) and skip is written before the convolution runs, becomes one pass: the
 * convolution adds skip to its sums and writes the add's output with the add's clamp, and
 * the add does nothing (its profile row says "folded"). That saves writing conv(x) and
 * reading it back. The add's output is written early (at the convolution), so its bytes must
 * not hold any tensor live from the convolution to the add (the convolution's input among
 * them); they may hold skip itself, which is then updated in place, where nothing else reads
 * skip in between. */

static int same_dims(const spnn_tensor* a, const spnn_tensor* b) {
  if (a->ndim != b->ndim) return 0;
  for (int d = 0; d < a->ndim; d++)
    if (a->dims[d] != b->dims[d]) return 0;
  return 1;
}

static int bytes_overlap(const spnn_tensor* a, const spnn_tensor* b) {
  const uint64_t a0 = a->offset, a1 = a0 + 4 * (uint64_t)a->count;
  const uint64_t b0 = b->offset, b1 = b0 + 4 * (uint64_t)b->count;
  return a0 < b1 && b0 < a1;
}

static int reads(const spnn_op* op, int32_t id) {
  for (int i = 0; i < op->num_inputs; i++)
    if (op->inputs[i] == id) return 1;
  return 0;
}

/* Whether an op after p and before k reads t. */
static int read_between(const spnn_model* m, uint32_t p, uint32_t k, const spnn_tensor* t) {
  for (uint32_t j = p + 1; j < k; j++)
    if (reads(&m->ops[j], (int32_t)(t - m->tensors))) return 1;
  return 0;
}

/* 1 if the op at p (a convolution or a resize) may write `y` (the output of the op at k)
 * in place of `t`, with `skip` as its residual (NULL: no live tensor may share y's bytes). */
static int fold_is_safe(const spnn_model* m, uint32_t p, uint32_t k, const spnn_tensor* t,
                        const spnn_tensor* skip, const spnn_tensor* y) {
  for (uint32_t i = 0; i < m->num_tensors; i++) {
    const spnn_tensor* v = &m->tensors[i];
    if (v == t || v == y || v->kind == SPNN_KIND_CONSTANT || !bytes_overlap(v, y)) continue;
    const int32_t last = v->last_use > v->producer ? v->last_use : v->producer;
    if (v->producer >= (int32_t)k || last < (int32_t)p) continue; /* not live in [p, k) */
    if (v != skip || v->offset != y->offset) return 0;
    for (uint32_t j = p + 1; j < k; j++)
      if (reads(&m->ops[j], (int32_t)(v - m->tensors))) return 0; /* would see it updated */
  }
  return 1;
}

static void noop_run(spnn_model* m, spnn_op* op) {
  (void)m;
  (void)op;
}

/* RELU or CLIP(lo, hi) whose input only it reads, written by a resize (a 1x1 layer moved
 * before its resize leaves its activation after it): the resize clamps each plane it writes
 * and writes the activation's output, and the activation does nothing ("folded"). As with a
 * folded add, the output is written early, so its bytes must not hold any tensor live from
 * the resize to the activation (the resize's input among them). */
static void fold_resize_activations(spnn_model* m) {
  for (uint32_t k = 0; k < m->num_ops; k++) {
    spnn_op* act = &m->ops[k];
    float lo = 0.0f, hi = INFINITY;
    if (act->code == SPNN_OP_CLIP) {
      lo = act->attr[0].f;
      hi = act->attr[1].f;
    } else if (act->code != SPNN_OP_RELU) {
      continue;
    }
    const spnn_tensor* t = spnn_in(m, act, 0);
    spnn_tensor* y = spnn_out(m, act);
    if (!t || t->kind != SPNN_KIND_ACTIVATION || t->last_use != (int32_t)k || t->producer < 0) continue;
    if (!(lo <= hi) || !same_dims(t, y)) continue;
    const uint32_t p = (uint32_t)t->producer;
    if (read_between(m, p, k, t) || !fold_is_safe(m, p, k, t, NULL, y)) continue;
    if (spnn_resize_fold_clamp(&m->ops[p], y->data, lo, hi)) {
      act->run = noop_run;
      act->kernel = "folded";
    }
  }
}

/* ADD(t, skip) folded into the op that writes t: a 1x1 convolution (above), or a resize,
 * itself or through an activation folded into it. A resize writes a plane before it adds
 * skip's, so its output must not share bytes with skip at all. */
static void fold_residual_adds(spnn_model* m) {
  for (uint32_t k = 0; k < m->num_ops; k++) {
    spnn_op* add = &m->ops[k];
    if (add->code != SPNN_OP_ADD || add->num_inputs != 2) continue;
    spnn_tensor* y = spnn_out(m, add);
    float lo, hi;
    if (!spnn_act_bounds(add->attr[0].i, &lo, &hi)) continue;
    for (int side = 0; side < 2; side++) {
      const spnn_tensor* t = spnn_in(m, add, side);
      const spnn_tensor* skip = spnn_in(m, add, 1 - side);
      if (!t || !skip || t == skip || !same_dims(t, y) || !same_dims(skip, y)) continue;
      if (t->kind != SPNN_KIND_ACTIVATION || t->last_use != (int32_t)k || t->producer < 0) continue;
      uint32_t p = (uint32_t)t->producer;
      const spnn_op* w = &m->ops[p];
      if (w->run == noop_run && (w->code == SPNN_OP_RELU || w->code == SPNN_OP_CLIP)) {
        const spnn_tensor* u = spnn_in(m, w, 0); /* folded into the resize that writes u */
        if (!u || u->producer < 0) continue;
        p = (uint32_t)u->producer;
      }
      const int resize = spnn_resize_writes(&m->ops[p], t->data);
      if (skip->kind == SPNN_KIND_ACTIVATION && skip->producer >= (int32_t)p) continue;
      if (read_between(m, p, k, t) || !skip->data) continue;
      if (resize ? bytes_overlap(y, skip) || !fold_is_safe(m, p, k, t, NULL, y) ||
                       !spnn_resize_fold_add(&m->ops[p], skip->data, y->data, lo, hi)
                 : !fold_is_safe(m, p, k, t, skip, y) ||
                       !spnn_conv_fold_add(&m->ops[p], skip->data, y->data, lo, hi))
        continue;
      add->run = noop_run;
      add->kernel = "folded";
      break;
    }
  }
}

/* A 1x1 layer whose output only the next op, a depthwise layer, reads: the two run band by
 * band, with the 1x1 layer after them where it alone reads the depthwise output
 * (spnn_conv_fuse_block). The depthwise output is written while the 1x1 layer still reads
 * its input, so the two must not share bytes. */
static void fuse_blocks(spnn_model* m) {
  for (uint32_t k = 0; k + 1 < m->num_ops; k++) {
    spnn_op *op = &m->ops[k], *dw = &m->ops[k + 1];
    if (op->code != SPNN_OP_CONV2D || dw->code != SPNN_OP_CONV2D || op->run == noop_run) continue;
    const spnn_tensor* t = spnn_out(m, op);
    const spnn_tensor* x = spnn_in(m, op, 0);
    const spnn_tensor* y = spnn_out(m, dw);
    if (t->kind != SPNN_KIND_ACTIVATION || t->last_use != (int32_t)(k + 1)) continue;
    if (spnn_in(m, dw, 0) != t || !x || bytes_overlap(y, x) || bytes_overlap(y, t)) continue;
    spnn_op* pw = k + 2 < m->num_ops ? &m->ops[k + 2] : NULL;
    if (pw && (pw->run == noop_run || spnn_in(m, pw, 0) != y || y->kind != SPNN_KIND_ACTIVATION ||
               y->last_use != (int32_t)(k + 2)))
      pw = NULL;
    const int fused = spnn_conv_fuse_block(op, dw, pw, m->max_threads);
    for (int j = 1; j <= fused; j++) {
      m->ops[k + j].run = noop_run;
      m->ops[k + j].kernel = "fused";
    }
    k += (uint32_t)fused;
  }
}

/* Whether ops k, k + 1 and k + 2 may run as a channel chain (spnn_conv_chain): each reads
 * only the one before's output, which nothing else reads, and op k + 1's output does not
 * share bytes with op k's input. */
static int chain_fits(spnn_model* m, uint32_t k) {
  const spnn_op *op = &m->ops[k], *dw = &m->ops[k + 1], *pw = &m->ops[k + 2];
  if (dw->code != SPNN_OP_CONV2D || pw->code != SPNN_OP_CONV2D || dw->run == noop_run ||
      pw->run == noop_run)
    return 0;
  const spnn_tensor *x = spnn_in(m, op, 0), *t = spnn_out(m, op), *y = spnn_out(m, dw);
  return t->kind == SPNN_KIND_ACTIVATION && t->last_use == (int32_t)(k + 1) &&
         spnn_in(m, dw, 0) == t && y->kind == SPNN_KIND_ACTIVATION &&
         y->last_use == (int32_t)(k + 2) && spnn_in(m, pw, 0) == y && !bytes_overlap(y, x);
}

/* Around a depthwise layer that splits its channels between threads, the 1x1 layers keep
 * each thread on the channels it holds: the one before it splits its output channels the
 * same way (spnn_conv_split_outputs), the one after it its input channels
 * (spnn_conv_split_inputs; these share one scratch buffer); where the three follow one
 * another, each thread runs its parts of all three in one job (spnn_conv_chain). */
static spnn_status split_channels(spnn_model* m) {
  size_t floats = 0;
  for (uint32_t k = 0; k < m->num_ops; k++) {
    spnn_op* op = &m->ops[k];
    const spnn_tensor* x = spnn_in(m, op, 0);
    if (op->code != SPNN_OP_CONV2D || op->run == noop_run || !x) continue;
    const spnn_tensor* y = spnn_out(m, op);
    if (k + 2 < m->num_ops && chain_fits(m, k) &&
        op->macs + m->ops[k + 1].macs + m->ops[k + 2].macs >= PARALLEL_MIN_WORK) {
      const size_t need = spnn_conv_chain(m, op, &m->ops[k + 1], &m->ops[k + 2]);
      if (need) {
        m->ops[k + 1].run = noop_run;
        m->ops[k + 1].kernel = "fused";
        if (need > floats) floats = need;
        k += 2;
        continue;
      }
    }
    if (op->macs < PARALLEL_MIN_WORK) continue; /* runs on one thread anyway */
    if (k + 1 < m->num_ops && y->last_use == (int32_t)(k + 1) && spnn_in(m, &m->ops[k + 1], 0) == y &&
        spnn_conv_split_outputs(m, op, &m->ops[k + 1]))
      continue;
    if (x->producer < 0 || m->ops[x->producer].run == noop_run) continue; /* fused: row bands */
    const size_t need = spnn_conv_split_inputs(m, op, &m->ops[x->producer]);
    if (need > floats) floats = need;
    if (need && x->producer == (int32_t)k - 1) spnn_conv_chain_dw(&m->ops[k - 1], op);
  }
  if (floats && !(m->scratch = (float*)spnn_alloc(floats * sizeof(float))))
    return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  return SPNN_OK;
}

static spnn_status prepare_ops(spnn_model* m) {
  for (uint32_t k = 0; k < m->num_ops; k++) {
    spnn_op* op = &m->ops[k];
    op->kernel = "";
    spnn_status st = op_table[op->code].prepare(m, op);
    if (st) {
      /* Prefix the op so every message names where the problem is. */
      char msg[SPNN_ERROR_MESSAGE_SIZE];
      snprintf(msg, sizeof msg, "%s", m->error);
      spnn_fail(m, st, "op %u (%s %s): %s", k, spnn_op_type_name(op->code), op->name, msg);
      return st;
    }
    m->total_macs += op->macs;
  }
  fold_resize_activations(m); /* first: an add may fold through a folded activation */
  fold_residual_adds(m);
  fuse_blocks(m);
  spnn_status st = split_channels(m);
  if (st) return st;
  /* Constants every consumer packed for itself are not kept. */
  for (uint32_t i = 0; i < m->num_tensors; i++) {
    spnn_tensor* t = &m->tensors[i];
    if (t->kind != SPNN_KIND_CONSTANT) continue;
    spnn_free_sparse(t->sparse);
    t->sparse = NULL;
    if (t->raw_uses == 0) {
      spnn_dealloc(t->data);
      t->data = NULL;
    } else {
      m->constant_bytes += 4 * (size_t)t->count;
    }
  }
  return SPNN_OK;
}

static spnn_status load(spnn_model* m, const uint8_t* data, size_t size) {
  section secs[5];
  m->file_size = size;
  spnn_status st = parse_header(m, data, size, secs);
  if (st) return st;
  if (secs[SEC_STRINGS].len < 1 || secs[SEC_STRINGS].p[0] != 0)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "STRINGS section must start with a zero byte");
  for (size_t i = 0, len; i < secs[SEC_STRINGS].len; i += len)
    if (!(len = utf8_char(secs[SEC_STRINGS].p + i, secs[SEC_STRINGS].len - i)))
      return spnn_fail(m, SPNN_ERROR_FORMAT, "STRINGS section: byte %zu is not UTF-8", i);
  if ((st = copy_text(m, &secs[SEC_STRINGS], &m->strings, &m->strings_size))) return st;
  m->strings_end = secs[SEC_STRINGS].len - 1;
  while (m->strings[m->strings_end] != 0) m->strings_end--; /* stops at 0 at the latest */
  if (!json_object_text(secs[SEC_METADATA].p, secs[SEC_METADATA].len))
    return spnn_fail(m, SPNN_ERROR_FORMAT, "METADATA section is not a UTF-8 JSON object");
  if ((st = copy_text(m, &secs[SEC_METADATA], &m->metadata, NULL))) return st;
  spnn_weight* ws = NULL;
  uint32_t num_weights = 0;
  if ((st = spnn_decode_weights(m, secs[SEC_WEIGHTS].p, secs[SEC_WEIGHTS].len, &ws, &num_weights)))
    return st;
  st = parse_graph(m, &secs[SEC_GRAPH], ws, num_weights);
  for (uint32_t w = 0; w < num_weights; w++) { /* those no tensor took */
    spnn_dealloc(ws[w].dense);
    spnn_free_sparse(ws[w].sparse);
  }
  free(ws);
  if (st) return st;
  return prepare_ops(m);
}

spnn_status spnn_load(const uint8_t* data, size_t size, int num_threads, spnn_model** out,
                      char* error, size_t error_size) {
  if (error && error_size) error[0] = 0;
  if (out) *out = NULL;
  if (!out || (!data && size) || num_threads < 1 || num_threads > MAX_THREADS) {
    if (error && error_size)
      snprintf(error, error_size, "spnn_load: bad argument (need data, out and 1..%d threads)",
               MAX_THREADS);
    return SPNN_ERROR_ARGUMENT;
  }
  spnn_model* m = (spnn_model*)calloc(1, sizeof *m);
  if (!m) {
    if (error && error_size) snprintf(error, error_size, "out of memory");
    return SPNN_ERROR_NOMEM;
  }
  m->max_threads = num_threads; /* some layers are laid out for it */
#ifndef SPNN_THREADS
  m->max_threads = 1;
#endif
  /* What the engine takes for this file's buffers: twice what the format lets the file ask
   * for, room for the weights' packed copies and the kernels' tables. */
  spnn_budget_begin(2 * spnn_memory_limit(size));
  spnn_status st = data ? load(m, data, size)
                        : spnn_fail(m, SPNN_ERROR_FORMAT, "file is 0 bytes, shorter than the header");
  spnn_budget_end();
  if (st == SPNN_OK) {
    m->max_threads = num_threads;
    m->num_threads = 1;
#ifdef SPNN_THREADS
    if (num_threads > 1) {
      m->pool = spnn_threadpool_share(num_threads);
      if (!m->pool) st = spnn_fail(m, SPNN_ERROR_NOMEM, "cannot start %d threads", num_threads);
      else m->num_threads = num_threads;
    }
#else
    m->max_threads = 1; /* single-thread build */
#endif
  }
  if (st != SPNN_OK) {
    if (error && error_size) snprintf(error, error_size, "%s", m->error);
    spnn_free(m);
    return st;
  }
  m->error[0] = 0;
  *out = m;
  return SPNN_OK;
}
