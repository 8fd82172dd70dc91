/* pysparse engine: the only public C API.
 *
 * A model is loaded once from the bytes of a `.spnn` file (docs/format.md): the loader
 * validates everything, packs weights for the kernels and allocates all memory. Running
 * allocates nothing. Errors are values: every call that can fail returns a status and
 * writes a message into the model's (or the caller's) error buffer.
 *
 * Activations are float32, NCHW, batch 1. Write into the pointer spnn_input_data()
 * returns, call spnn_run(), read the pointer spnn_output_data() returns. Each input has a
 * buffer of its own that runs only read, so it holds what was written until it is written
 * again (run the same input twice, or change part of it, without writing it all again).
 */
#ifndef PYSPARSE_H
#define PYSPARSE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum spnn_status {
  SPNN_OK = 0,
  SPNN_ERROR_FORMAT = 1,      /* the bytes are not a valid .spnn file */
  SPNN_ERROR_UNSUPPORTED = 2, /* valid file, but an op or variant this engine lacks */
  SPNN_ERROR_NOMEM = 3,
  SPNN_ERROR_ARGUMENT = 4,    /* a bad argument to an API call */
} spnn_status;

typedef struct spnn_model spnn_model;

#define SPNN_ERROR_MESSAGE_SIZE 256

/* Loads a model from `size` bytes. On success *out is set and SPNN_OK returned. On
 * failure *out is NULL and `error` (if not NULL, `error_size` bytes) holds a message.
 * The bytes are not referenced after the call returns. num_threads >= 1: the most threads
 * it may run on; some layers are laid out for that count, so models loaded for different
 * counts may differ in the last bits of their outputs (never with how many of them run). */
spnn_status spnn_load(const uint8_t* data, size_t size, int num_threads, spnn_model** out,
                      char* error, size_t error_size);
void spnn_free(spnn_model* model);

/* The message of the last failed call on this model ("" if none). */
const char* spnn_error(const spnn_model* model);

int spnn_num_inputs(const spnn_model* model);
int spnn_num_outputs(const spnn_model* model);
const char* spnn_input_name(const spnn_model* model, int index);
const char* spnn_output_name(const spnn_model* model, int index);
/* Number of dimensions; the dims are written to `dims` (room for 6). -1 on a bad index. */
int spnn_input_shape(const spnn_model* model, int index, int32_t* dims);
int spnn_output_shape(const spnn_model* model, int index, int32_t* dims);
/* Where to write input `index` (NCHW float32) before spnn_run; the values stay until the
 * caller changes them. NULL on a bad index. */
float* spnn_input_data(spnn_model* model, int index);
/* Where output `index` is after spnn_run; valid until the next spnn_run. */
const float* spnn_output_data(const spnn_model* model, int index);

spnn_status spnn_run(spnn_model* model);
/* Optional, before writing the inputs: wakes the worker threads (asleep since the last
 * run) so that they are ready when spnn_run hands out its first layer. */
void spnn_wake_threads(spnn_model* model);

/* Threads used by spnn_run (1 .. the count given at load); outputs do not depend on it. */
spnn_status spnn_set_num_threads(spnn_model* model, int num_threads);
int spnn_get_num_threads(const spnn_model* model);

/* The metadata JSON of the file (NUL-terminated). */
const char* spnn_metadata(const spnn_model* model);
/* Bytes of activation memory (the arena) and of packed weights held by the model. */
size_t spnn_arena_bytes(const spnn_model* model);
size_t spnn_weight_bytes(const spnn_model* model);

/* Per-op profiling: when enabled, spnn_run records each op's time (microseconds).
 * spnn_profile_json returns a JSON array [{"name","op","kernel","us"}...] of the last run. */
void spnn_set_profiling(spnn_model* model, int enabled);
const char* spnn_profile_json(spnn_model* model);

/* Build facts: "simd128", "simd128-threads", "relaxed-simd" (the variant compiled) and
 * the engine's version string. */
const char* spnn_build_variant(void);
const char* spnn_version(void);

#ifdef __cplusplus
}
#endif
#endif /* PYSPARSE_H */
