/* Runs kernels on cases read from a file and writes their outputs, for tests/test_kernels.py.
 *
 *   kernel_harness CASES OUT
 *
 * Built twice from this one source: natively over SIMDe with ASan/UBSan, and by emcc as
 * wasm for Node (NODERAWFS). The Python side generates the cases and checks the outputs
 * against the numpy reference.
 *
 * Case file: "SPKH", u32 number of cases, then per case
 *   u32 kind, u32 nparams, i32 params[nparams], f32 out_min, f32 out_max,
 *   u32 nsplits, u32 bounds[nsplits + 1]   (work ranges, as threads would split it),
 *   u32 narrays, per array: u32 count, f32 or u32 data[count]
 * Output file: per case, u32 count then f32 data[count].
 *
 * Each work range runs on an output buffer filled with a sentinel; the harness fails
 * (exit 3) if a kernel writes outside its range, so thread splits are checked too.
 * Every buffer is allocated at its exact size so ASan sees any out-of-bounds access.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/kernels.h"

enum { KIND_SPMM = 1, KIND_GEMM = 2, KIND_GEMV = 3, KIND_CONV = 4, KIND_DWCONV = 5 };

#define MAX_PARAMS 32
#define MAX_ARRAYS 8
#define MAX_SPLITS 64
static const uint32_t kSentinel = 0x7FBADBADu; /* a NaN no kernel produces */

typedef struct reader { FILE* f; const char* path; } reader;

static void fail(const char* what) {
  fprintf(stderr, "kernel_harness: %s\n", what);
  exit(2);
}

static uint32_t read_u32(reader* r) {
  uint32_t v;
  if (fread(&v, 4, 1, r->f) != 1) fail("truncated case file");
  return v;
}

static void* xalloc(size_t bytes) {
  void* p = NULL;
  if (posix_memalign(&p, 16, bytes == 0 ? 16 : bytes) != 0) fail("out of memory");
  return p;
}

typedef struct array { uint32_t count; void* data; } array;

typedef struct test_case {
  uint32_t kind, nparams, nsplits, narrays;
  int32_t params[MAX_PARAMS];
  float out_min, out_max;
  uint32_t bounds[MAX_SPLITS + 1];
  array arrays[MAX_ARRAYS];
} test_case;

static void read_case(reader* r, test_case* c) {
  c->kind = read_u32(r);
  c->nparams = read_u32(r);
  if (c->nparams > MAX_PARAMS) fail("too many params");
  for (uint32_t i = 0; i < c->nparams; i++) c->params[i] = (int32_t)read_u32(r);
  uint32_t bits = read_u32(r);
  memcpy(&c->out_min, &bits, 4);
  bits = read_u32(r);
  memcpy(&c->out_max, &bits, 4);
  c->nsplits = read_u32(r);
  if (c->nsplits < 1 || c->nsplits > MAX_SPLITS) fail("bad split count");
  for (uint32_t i = 0; i <= c->nsplits; i++) c->bounds[i] = read_u32(r);
  c->narrays = read_u32(r);
  if (c->narrays > MAX_ARRAYS) fail("too many arrays");
  for (uint32_t i = 0; i < c->narrays; i++) {
    c->arrays[i].count = read_u32(r);
    c->arrays[i].data = xalloc(4 * (size_t)c->arrays[i].count);
    if (c->arrays[i].count != 0 &&
        fread(c->arrays[i].data, 4, c->arrays[i].count, r->f) != c->arrays[i].count) {
      fail("truncated array");
    }
  }
}

static const float* f32_or_null(const array* a) {
  return a->count != 0 ? (const float*)a->data : NULL;
}

/* Runs work range [begin, end) of case c into out (which holds `count` floats).
 * `unit` is how many output floats one unit of work owns and `stride` the distance
 * between an output's consecutive rows (channels), so the harness can tell which output
 * elements the range owns. */
typedef struct prepared {
  spnn_spmm_weights spmm;
  void* packed;
  float* scratch;
  spnn_conv_shape conv;
  spnn_dwconv_shape dw;
  spnn_dwconv_ukernel dw_kernel;
  int dw_rows; /* ranges are output rows of every channel (spnn_f32_dwconv_rows) */
  int dw_split; /* ... read from rows split by column parity (spnn_f32_dwconv_split_rows_at) */
  size_t split_width; /* SpMM: rows this wide written split (spnn_spmm_run_split), or 0 */
  float* split_input; /* the depthwise input with its rows split */
  size_t out_count;
} prepared;

/* Row by row of `rows` rows `width` wide: from natural column order to split (even columns,
 * then odd ones), or back. */
static void split_rows(const float* src, float* dst, size_t rows, size_t width, int back) {
  for (size_t y = 0; y < rows; y++) {
    for (size_t x = 0; x < width; x++) {
      const size_t at = y * width + (x & 1 ? width / 2 : 0) + x / 2;
      if (back) dst[y * width + x] = src[at];
      else dst[at] = src[y * width + x];
    }
  }
}

static void prepare(const test_case* c, prepared* p) {
  const int32_t* q = c->params;
  memset(p, 0, sizeof(*p));
  switch (c->kind) {
    case KIND_SPMM: { /* rows, cols, block, pixels[, split row width] | counts, columns, values, bias, input */
      const uint32_t rows = q[0], cols = q[1], block = q[2], pixels = q[3];
      p->split_width = c->nparams > 4 ? (size_t)q[4] : 0;
      uint32_t num_columns = c->arrays[1].count;
      p->packed = xalloc(spnn_spmm_packed_bytes(rows, cols, block, num_columns));
      if (spnn_spmm_pack(rows, cols, block, (const uint32_t*)c->arrays[0].data,
                         (const uint32_t*)c->arrays[1].data, (const float*)c->arrays[2].data,
                         f32_or_null(&c->arrays[3]), pixels, p->packed, &p->spmm) != 0) {
        fail("spmm pack rejected a valid case");
      }
      /* as the engine does: rows are written split only where the kernels can (4-row blocks
       * in 12-pixel tiles cannot), in natural order otherwise */
      if (p->split_width && !spnn_spmm_splits(&p->spmm, p->split_width)) p->split_width = 0;
      p->out_count = (size_t)rows * pixels;
      break;
    }
    case KIND_GEMM: /* rows, cols, pixels | weights, bias, input */
      p->packed = xalloc(spnn_gemm_packed_bytes(q[0], q[1]));
      spnn_gemm_pack(q[0], q[1], (const float*)c->arrays[0].data, f32_or_null(&c->arrays[1]),
                     p->packed);
      p->out_count = (size_t)q[0] * q[2];
      break;
    case KIND_GEMV: /* rows, cols | weights, bias, x */
      p->out_count = (size_t)q[0];
      break;
    case KIND_CONV: { /* shape (15 fields) | weights, bias, input */
      spnn_conv_shape s = {q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7],
                           q[8], q[9], q[10], q[11], q[12], q[13], q[14]};
      p->conv = s;
      p->packed = xalloc(spnn_conv_packed_bytes(&s));
      spnn_conv_pack(&s, (const float*)c->arrays[0].data, f32_or_null(&c->arrays[1]),
                     p->packed);
      p->scratch = xalloc(spnn_conv_scratch_bytes(&s));
      p->out_count = (size_t)s.out_channels * s.out_h * s.out_w;
      break;
    }
    case KIND_DWCONV: { /* shape (13 fields), mode (0 selected, 1 generic, 2 rows, 3 split rows) | weights, bias, input */
      spnn_dwconv_shape s = {q[0], q[1], q[2], q[3], q[4],  q[5], q[6],
                             q[7], q[8], q[9], q[10], q[11], q[12]};
      p->dw = s;
      p->dw_kernel = q[13] == 1 ? spnn_f32_dwconv_generic : spnn_dwconv_select(&s);
      p->dw_rows = q[13] == 2 || q[13] == 3;
      p->dw_split = q[13] == 3;
      if (p->dw_split) {
        if (!spnn_dwconv_reads_split(&s)) fail("the depthwise kernel cannot read split rows");
        p->split_input = xalloc(4 * (size_t)s.channels * s.in_h * s.in_w);
        split_rows((const float*)c->arrays[2].data, p->split_input, (size_t)s.channels * s.in_h,
                   s.in_w, 0);
      }
      p->packed = xalloc(spnn_dwconv_packed_bytes(&s));
      spnn_dwconv_pack(&s, (const float*)c->arrays[0].data, f32_or_null(&c->arrays[1]),
                       p->packed);
      p->out_count = (size_t)s.channels * s.out_h * s.out_w;
      break;
    }
    default:
      fail("unknown kernel kind");
  }
}

static void run_range(const test_case* c, prepared* p, size_t begin, size_t end, float* out) {
  const int32_t* q = c->params;
  const float lo = c->out_min, hi = c->out_max;
  switch (c->kind) {
    case KIND_SPMM:
      if (p->split_width)
        spnn_spmm_run_split(&p->spmm, begin, end, (const float*)c->arrays[4].data, out,
                            p->split_width, lo, hi);
      else
        spnn_spmm_run(&p->spmm, begin, end, (const float*)c->arrays[4].data, out, lo, hi);
      break;
    case KIND_GEMM:
      spnn_gemm_run(q[0], q[1], p->packed, begin, end, (const float*)c->arrays[2].data, q[2],
                    out, q[2], lo, hi);
      break;
    case KIND_GEMV:
      spnn_f32_gemv(begin, end, q[1], (const float*)c->arrays[0].data,
                    f32_or_null(&c->arrays[1]), (const float*)c->arrays[2].data, out, lo, hi);
      break;
    case KIND_CONV:
      spnn_conv_run(&p->conv, p->packed, begin, end, (const float*)c->arrays[2].data,
                    p->scratch, out, lo, hi);
      break;
    case KIND_DWCONV:
      if (p->dw_split) {
        size_t top, bottom;
        spnn_dwconv_input_rows(&p->dw, begin, end, &top, &bottom);
        spnn_f32_dwconv_split_rows_at(&p->dw, 0, p->dw.channels, begin, end,
                                      p->split_input + top * p->dw.in_w,
                                      (size_t)p->dw.in_h * p->dw.in_w, p->packed, out, lo, hi);
      } else if (p->dw_rows) {
        spnn_f32_dwconv_rows(&p->dw, 0, p->dw.channels, begin, end,
                             (const float*)c->arrays[2].data, p->packed, out, lo, hi);
      } else {
        p->dw_kernel(&p->dw, begin, end, (const float*)c->arrays[2].data, p->packed, out, lo, hi);
      }
      break;
  }
}

/* Does output element i belong to work range [begin, end)? */
static int owned(const test_case* c, const prepared* p, size_t i, size_t begin, size_t end) {
  const int32_t* q = c->params;
  size_t plane;
  switch (c->kind) {
    case KIND_SPMM: plane = (size_t)q[3]; break;
    case KIND_GEMM: plane = (size_t)q[2]; break;
    case KIND_CONV: plane = (size_t)p->conv.out_h * p->conv.out_w; break;
    case KIND_GEMV: return i >= begin && i < end;
    default: { /* channel ranges, or row ranges */
      if (p->dw_rows) {
        const size_t row = i % ((size_t)p->dw.out_h * p->dw.out_w) / p->dw.out_w;
        return row >= begin && row < end;
      }
      const size_t ch = i / ((size_t)p->dw.out_h * p->dw.out_w);
      return ch >= begin && ch < end;
    }
  }
  return i % plane >= begin && i % plane < end;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    fprintf(stderr, "usage: kernel_harness CASES OUT\n");
    return 2;
  }
  reader r = {fopen(argv[1], "rb"), argv[1]};
  if (r.f == NULL) fail("cannot open the case file");
  char magic[4];
  if (fread(magic, 1, 4, r.f) != 4 || memcmp(magic, "SPKH", 4) != 0) fail("bad magic");
  const uint32_t num_cases = read_u32(&r);
  FILE* out_file = fopen(argv[2], "wb");
  if (out_file == NULL) fail("cannot open the output file");

  for (uint32_t n = 0; n < num_cases; n++) {
    test_case c;
    prepared p;
    read_case(&r, &c);
    prepare(&c, &p);
    float* result = xalloc(4 * p.out_count);
    float* scratch_out = xalloc(4 * p.out_count);
    /* Ranges in reverse order, each on a sentinel-filled buffer. */
    for (uint32_t s = c.nsplits; s-- > 0;) {
      const size_t begin = c.bounds[s], end = c.bounds[s + 1];
      for (size_t i = 0; i < p.out_count; i++) memcpy(&scratch_out[i], &kSentinel, 4);
      run_range(&c, &p, begin, end, scratch_out);
      for (size_t i = 0; i < p.out_count; i++) {
        uint32_t bits;
        memcpy(&bits, &scratch_out[i], 4);
        if (owned(&c, &p, i, begin, end)) {
          result[i] = scratch_out[i];
        } else if (bits != kSentinel) {
          fprintf(stderr, "kernel_harness: case %u: range [%zu, %zu) wrote element %zu\n", n,
                  begin, end, i);
          return 3;
        }
      }
    }
    if (p.split_width) { /* back to natural order for the reference */
      split_rows(result, scratch_out, p.out_count / p.split_width, p.split_width, 1);
      memcpy(result, scratch_out, 4 * p.out_count);
    }
    const uint32_t count = (uint32_t)p.out_count;
    fwrite(&count, 4, 1, out_file);
    fwrite(result, 4, p.out_count, out_file);
    free(result);
    free(scratch_out);
    free(p.packed);
    free(p.scratch);
    free(p.split_input);
    for (uint32_t i = 0; i < c.narrays; i++) free(c.arrays[i].data);
  }
  fclose(r.f);
  if (fclose(out_file) != 0) fail("cannot write the output file");
  return 0;
}
