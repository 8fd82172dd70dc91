/* Running a loaded model, and the rest of the public API (pysparse.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"

#ifdef __EMSCRIPTEN__
#include <emscripten.h>
static double now_us(void) { return emscripten_get_now() * 1000.0; }
#else
#include <time.h>
static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}
#endif

#ifndef SPNN_VERSION
#define SPNN_VERSION "0.1.0"
#endif

const char* spnn_version(void) { return SPNN_VERSION; }

const char* spnn_build_variant(void) {
#if defined(SPNN_RELAXED_SIMD) && defined(SPNN_THREADS)
  return "relaxed-simd-threads";
#elif defined(SPNN_RELAXED_SIMD)
  return "relaxed-simd";
#elif defined(SPNN_THREADS)
  return "simd128-threads";
#else
  return "simd128";
#endif
}

void spnn_free(spnn_model* m) {
  if (!m) return;
  spnn_threadpool_unshare(m->pool);
  if (m->ops) {
    for (uint32_t k = 0; k < m->num_ops; k++)
      if (m->ops[k].state && m->ops[k].free_state) m->ops[k].free_state(m->ops[k].state);
  }
  if (m->tensors) {
    for (uint32_t i = 0; i < m->num_tensors; i++) {
      if (m->tensors[i].kind == SPNN_KIND_CONSTANT) {
        spnn_dealloc(m->tensors[i].data);
        spnn_free_sparse(m->tensors[i].sparse);
      }
    }
  }
  free(m->tensors);
  free(m->ops);
  free(m->op_io);
  free(m->inputs);
  free(m->outputs);
  spnn_dealloc(m->memory);
  spnn_dealloc(m->scratch);
  free(m->strings);
  free(m->metadata);
  free(m->profile_json);
  free(m);
}

const char* spnn_error(const spnn_model* m) { return m ? m->error : "no model"; }

int spnn_num_inputs(const spnn_model* m) { return m ? (int)m->num_inputs : 0; }
int spnn_num_outputs(const spnn_model* m) { return m ? (int)m->num_outputs : 0; }

static const spnn_tensor* io_tensor(const spnn_model* m, int index, int input) {
  if (!m || index < 0) return NULL;
  if (input) return (uint32_t)index < m->num_inputs ? &m->tensors[m->inputs[index]] : NULL;
  return (uint32_t)index < m->num_outputs ? &m->tensors[m->outputs[index]] : NULL;
}

const char* spnn_input_name(const spnn_model* m, int i) {
  const spnn_tensor* t = io_tensor(m, i, 1);
  return t ? t->name : NULL;
}
const char* spnn_output_name(const spnn_model* m, int i) {
  const spnn_tensor* t = io_tensor(m, i, 0);
  return t ? t->name : NULL;
}

static int shape_of(const spnn_tensor* t, int32_t* dims) {
  if (!t) return -1;
  if (dims)
    for (int d = 0; d < t->ndim; d++) dims[d] = t->dims[d];
  return t->ndim;
}
int spnn_input_shape(const spnn_model* m, int i, int32_t* dims) { return shape_of(io_tensor(m, i, 1), dims); }
int spnn_output_shape(const spnn_model* m, int i, int32_t* dims) { return shape_of(io_tensor(m, i, 0), dims); }

float* spnn_input_data(spnn_model* m, int i) {
  const spnn_tensor* t = io_tensor(m, i, 1);
  return t ? t->data : NULL;
}
const float* spnn_output_data(const spnn_model* m, int i) {
  const spnn_tensor* t = io_tensor(m, i, 0);
  return t ? t->data : NULL;
}

spnn_status spnn_run(spnn_model* m) {
  if (!m) return SPNN_ERROR_ARGUMENT;
  m->error[0] = 0;
  m->run_pool = m->num_threads > 1 && spnn_threadpool_claim(m->pool) ? m->pool : NULL;
  if (m->profiling) {
    for (uint32_t k = 0; k < m->num_ops; k++) {
      double t0 = now_us();
      m->ops[k].run(m, &m->ops[k]);
      m->ops[k].us = now_us() - t0;
    }
  } else {
    for (uint32_t k = 0; k < m->num_ops; k++) m->ops[k].run(m, &m->ops[k]);
  }
  if (m->run_pool) {
    spnn_threadpool_rest(m->run_pool);
    spnn_threadpool_unclaim(m->run_pool);
    m->run_pool = NULL;
  }
  return SPNN_OK;
}

void spnn_wake_threads(spnn_model* m) {
  if (m && m->num_threads > 1 && spnn_threadpool_claim(m->pool)) {
    spnn_threadpool_wake(m->pool);
    spnn_threadpool_unclaim(m->pool);
  }
}

spnn_status spnn_set_num_threads(spnn_model* m, int n) {
  if (!m) return SPNN_ERROR_ARGUMENT;
  if (n < 1 || n > m->max_threads)
    return spnn_fail(m, SPNN_ERROR_ARGUMENT, "num_threads %d: this model was loaded for 1..%d", n,
                     m->max_threads);
  m->num_threads = n;
  return SPNN_OK;
}
int spnn_get_num_threads(const spnn_model* m) { return m ? m->num_threads : 0; }

const char* spnn_metadata(const spnn_model* m) { return m ? m->metadata : ""; }
size_t spnn_arena_bytes(const spnn_model* m) { return m ? m->arena_bytes : 0; }
size_t spnn_weight_bytes(const spnn_model* m) {
  if (!m) return 0;
  size_t total = m->constant_bytes;
  for (uint32_t k = 0; k < m->num_ops; k++) total += m->ops[k].state_bytes;
  return total;
}

void spnn_set_profiling(spnn_model* m, int enabled) {
  if (!m) return;
  m->profiling = enabled != 0;
  for (uint32_t k = 0; k < m->num_ops; k++) m->ops[k].us = 0;
}

/* Appends a JSON string literal (names come from the file: escape everything needed). */
static size_t put_json_string(char* out, size_t pos, const char* s) {
  out[pos++] = '"';
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (c == '"' || c == '\\') {
      out[pos++] = '\\';
      out[pos++] = (char)c;
    } else if (c < 0x20) {
      pos += (size_t)sprintf(out + pos, "\\u%04x", c);
    } else {
      out[pos++] = (char)c;
    }
  }
  out[pos++] = '"';
  return pos;
}

const char* spnn_profile_json(spnn_model* m) {
  if (!m) return "[]";
  size_t cap = 8;
  for (uint32_t k = 0; k < m->num_ops; k++)
    cap += 6 * (strlen(m->ops[k].name) + strlen(m->ops[k].kernel)) + 160;
  char* out = (char*)malloc(cap);
  if (!out) return "[]";
  size_t pos = 0;
  out[pos++] = '[';
  for (uint32_t k = 0; k < m->num_ops; k++) {
    const spnn_op* op = &m->ops[k];
    if (k) out[pos++] = ',';
    pos += (size_t)sprintf(out + pos, "{\"name\":");
    pos = put_json_string(out, pos, op->name);
    pos += (size_t)sprintf(out + pos, ",\"op\":\"%s\",\"kernel\":", spnn_op_type_name(op->code));
    pos = put_json_string(out, pos, op->kernel);
    pos += (size_t)sprintf(out + pos, ",\"us\":%.3f,\"macs\":%.0f}", op->us, op->macs);
  }
  out[pos++] = ']';
  out[pos] = 0;
  free(m->profile_json);
  m->profile_json = out;
  return out;
}
