/* Decoding of the WEIGHTS section (docs/format.md, "WEIGHTS section"). Every size is
 * checked against the bytes actually present before anything is allocated. */
#include "weights.h"

#include <stdlib.h>
#include <string.h>

#include "bytes.h"

#define HEADER_SIZE 16
#define DESC_SIZE 32

enum { ENC_DENSE = 0, ENC_SPARSE = 1 };
enum { VAL_F32 = 0, VAL_F16 = 1, VAL_I8 = 2 };

static void read_values(const uint8_t* p, uint8_t dtype, size_t n, float* out) {
  if (dtype == VAL_F32) {
    memcpy(out, p, n * 4);
  } else {
    for (size_t i = 0; i < n; i++) out[i] = f16_to_f32(rd_u16(p + 2 * i));
  }
}

static spnn_status decode_dense(spnn_model* m, uint32_t w, uint8_t dtype, uint32_t rows,
                                uint32_t cols, const uint8_t* blob, uint32_t len, float** out) {
  size_t n = (size_t)rows * cols;
  size_t want = dtype == VAL_F32 ? 4 * n : dtype == VAL_F16 ? 2 * n : 4 * (size_t)rows + n;
  if (len != want)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u: dense data is %u bytes, expected %zu", w,
                     len, want);
  float* v = (float*)spnn_alloc(n * 4);
  if (!v) return spnn_fail(m, SPNN_ERROR_NOMEM, "weight %u: out of memory (%zu values)", w, n);
  if (dtype == VAL_I8) {
    const uint8_t* q = blob + 4 * (size_t)rows;
    for (uint32_t r = 0; r < rows; r++) {
      float scale = rd_f32(blob + 4 * (size_t)r);
      for (uint32_t c = 0; c < cols; c++) {
        size_t i = (size_t)r * cols + c;
        v[i] = scale * (float)(int8_t)q[i];
      }
    }
  } else {
    read_values(blob, dtype, n, v);
  }
  *out = v;
  return SPNN_OK;
}

static spnn_status decode_sparse(spnn_model* m, uint32_t w, const uint8_t* d, const uint8_t* blob,
                                 uint32_t len, spnn_sparse** out) {
  uint8_t dtype = d[1], block = d[2], width = d[3];
  uint32_t rows = rd_u32(d + 4), cols = rd_u32(d + 8), nnz = rd_u32(d + 12);
  uint32_t num_steps = rd_u32(d + 16);
  if (dtype > VAL_F16)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u: sparse values must be f32 or f16", w);
  if (block != 1 && block != 2 && block != 4)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u: sparse block %u (must be 1, 2 or 4)", w,
                     block);
  if (width != 1 && width != 2)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u: step width %u (must be 1 or 2)", w, width);
  uint32_t num_blocks = rows / block + rows % block;
  size_t vsize = dtype == VAL_F32 ? 4 : 2;
  size_t counts_bytes = 4 * (size_t)num_blocks;
  if (counts_bytes > len || (size_t)nnz * vsize > len - counts_bytes)
    return spnn_fail(m, SPNN_ERROR_FORMAT,
                     "weight %u: %u blocks and %u values do not fit its %u data bytes", w,
                     num_blocks, nnz, len);
  const uint8_t* counts_p = blob;
  const uint8_t* values_p = blob + counts_bytes;
  const uint8_t* steps_p = values_p + (size_t)nnz * vsize;
  size_t step_bytes = len - counts_bytes - (size_t)nnz * vsize;
  if (num_steps > step_bytes / width)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u: %u steps do not fit in %zu step bytes", w,
                     num_steps, step_bytes);
  /* Counts against nnz and num_steps before allocating anything sized by them. */
  uint64_t sum_counts = 0, sum_values = 0;
  for (uint32_t k = 0; k < num_blocks; k++) {
    uint32_t c = rd_u32(counts_p + 4 * (size_t)k);
    if (c > cols)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u: block %u stores %u of %u columns", w, k,
                       c, cols);
    uint32_t b = k < rows / block ? block : 1;
    sum_counts += c;
    sum_values += (uint64_t)c * b;
  }
  if (sum_counts != num_steps || sum_values != nnz)
    return spnn_fail(m, SPNN_ERROR_FORMAT,
                     "weight %u: block counts give %llu steps and %llu values, header says %u and %u",
                     w, (unsigned long long)sum_counts, (unsigned long long)sum_values, num_steps,
                     nnz);
  spnn_sparse* s = (spnn_sparse*)calloc(1, sizeof *s);
  if (!s) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  s->block = block;
  s->rows = rows;
  s->cols = cols;
  s->num_blocks = num_blocks;
  s->nnz = nnz;
  s->num_steps = num_steps;
  s->counts = (uint32_t*)spnn_alloc(counts_bytes);
  s->columns = (uint32_t*)spnn_alloc(4 * (size_t)num_steps);
  s->values = (float*)spnn_alloc(4 * (size_t)nnz);
  if (!s->counts || !s->columns || !s->values) {
    spnn_free_sparse(s);
    return spnn_fail(m, SPNN_ERROR_NOMEM, "weight %u: out of memory", w);
  }
  memcpy(s->counts, counts_p, counts_bytes);
  read_values(values_p, dtype, nnz, s->values);
  /* Steps: decode exactly num_steps of them, using exactly step_bytes bytes. */
  size_t pos = 0, j = 0;
  for (uint32_t k = 0; k < num_blocks; k++) {
    uint64_t col = 0;
    for (uint32_t i = 0; i < s->counts[k]; i++) {
      uint32_t step;
      if (width == 2) {
        if (pos + 2 > step_bytes) goto short_steps;
        step = rd_u16(steps_p + pos);
        pos += 2;
      } else {
        if (pos + 1 > step_bytes) goto short_steps;
        step = steps_p[pos++];
        if (step == 255) {
          if (pos + 2 > step_bytes) goto short_steps;
          step = rd_u16(steps_p + pos);
          pos += 2;
        }
      }
      if (i > 0 && step == 0) {
        spnn_free_sparse(s);
        return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u: block %u repeats a column", w, k);
      }
      col = i == 0 ? step : col + step;
      if (col >= cols) {
        spnn_free_sparse(s);
        return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u: block %u steps to column %llu of %u",
                         w, k, (unsigned long long)col, cols);
      }
      s->columns[j++] = (uint32_t)col;
    }
  }
  if (pos != step_bytes) {
    spnn_free_sparse(s);
    return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u: %zu bytes left after the last step", w,
                     step_bytes - pos);
  }
  *out = s;
  return SPNN_OK;
short_steps:
  spnn_free_sparse(s);
  return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u: steps run past the end of its data", w);
}

spnn_status spnn_decode_weights(spnn_model* m, const uint8_t* sec, uint32_t len,
                                spnn_weight** out, uint32_t* num_out) {
  *out = NULL;
  *num_out = 0;
  if (len < HEADER_SIZE)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "WEIGHTS section is %u bytes, shorter than its header",
                     len);
  uint32_t n = rd_u32(sec);
  if (rd_u32(sec + 4) || rd_u32(sec + 8) || rd_u32(sec + 12))
    return spnn_fail(m, SPNN_ERROR_FORMAT, "WEIGHTS header: reserved fields are not zero");
  uint64_t desc_end = HEADER_SIZE + (uint64_t)n * DESC_SIZE;
  if (desc_end > len)
    return spnn_fail(m, SPNN_ERROR_FORMAT, "WEIGHTS: %u descriptors do not fit in %u bytes", n,
                     len);
  /* Check every descriptor before decoding any, so the totals bound the allocations. */
  uint64_t total = 0;
  for (uint32_t w = 0; w < n; w++) {
    const uint8_t* d = sec + HEADER_SIZE + (size_t)w * DESC_SIZE;
    uint8_t enc = d[0], dtype = d[1], block = d[2], width = d[3];
    uint32_t rows = rd_u32(d + 4), cols = rd_u32(d + 8), nnz = rd_u32(d + 12);
    uint32_t steps = rd_u32(d + 16), off = rd_u32(d + 20), dlen = rd_u32(d + 24);
    if (rd_u32(d + 28))
      return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u: reserved field is not zero", w);
    if (enc > ENC_SPARSE)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u: unknown encoding %u", w, enc);
    if (dtype > VAL_I8)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u: unknown value dtype %u", w, dtype);
    if (rows == 0 || cols == 0 || (uint64_t)rows * cols >= SPNN_MAX_ELEMENTS)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "weight %u: bad size %u x %u", w, rows, cols);
    if (enc == ENC_DENSE && (block || width || steps || nnz != rows * cols))
      return spnn_fail(m, SPNN_ERROR_FORMAT,
                       "weight %u: dense descriptor with block/step fields or nnz != rows*cols", w);
    if (off % 16 || off < desc_end || (uint64_t)off + dlen > len)
      return spnn_fail(m, SPNN_ERROR_FORMAT,
                       "weight %u: data at %u (+%u bytes) is misaligned or outside the section", w,
                       off, dlen);
    total += (uint64_t)rows * cols;
    if (total >= SPNN_MAX_ELEMENTS)
      return spnn_fail(m, SPNN_ERROR_FORMAT, "WEIGHTS: more than 2^28 weight elements in all");
  }
  spnn_weight* ws = (spnn_weight*)calloc(n ? n : 1, sizeof *ws);
  if (!ws) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory");
  for (uint32_t w = 0; w < n; w++) {
    const uint8_t* d = sec + HEADER_SIZE + (size_t)w * DESC_SIZE;
    uint32_t off = rd_u32(d + 20), dlen = rd_u32(d + 24);
    ws[w].rows = rd_u32(d + 4);
    ws[w].cols = rd_u32(d + 8);
    spnn_status st = d[0] == ENC_DENSE
                         ? decode_dense(m, w, d[1], ws[w].rows, ws[w].cols, sec + off, dlen, &ws[w].dense)
                         : decode_sparse(m, w, d, sec + off, dlen, &ws[w].sparse);
    if (st != SPNN_OK) {
      for (uint32_t k = 0; k < w; k++) {
        spnn_dealloc(ws[k].dense);
        spnn_free_sparse(ws[k].sparse);
      }
      free(ws);
      return st;
    }
  }
  *out = ws;
  *num_out = n;
  return SPNN_OK;
}

spnn_status spnn_densify(spnn_model* m, spnn_tensor* t) {
  if (t->data || !t->sparse) return SPNN_OK;
  const spnn_sparse* s = t->sparse;
  float* d = (float*)spnn_calloc(4 * (size_t)s->rows * s->cols);
  if (!d) return spnn_fail(m, SPNN_ERROR_NOMEM, "out of memory expanding %s", t->name);
  size_t j = 0, v = 0;
  uint32_t row = 0;
  for (uint32_t k = 0; k < s->num_blocks; k++) {
    uint32_t b = k < s->rows / s->block ? s->block : 1;
    for (uint32_t i = 0; i < s->counts[k]; i++, j++)
      for (uint32_t r = 0; r < b; r++) d[(size_t)(row + r) * s->cols + s->columns[j]] = s->values[v++];
    row += b;
  }
  t->data = d;
  return SPNN_OK;
}

spnn_status spnn_use_raw(spnn_model* m, spnn_tensor* t) {
  if (!t || t->kind != SPNN_KIND_CONSTANT) return SPNN_OK;
  spnn_status st = spnn_densify(m, t);
  if (st == SPNN_OK) t->raw_uses++;
  return st;
}
